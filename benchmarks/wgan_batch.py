"""The WGAN's minibatch where its steps are launch-bound: at the generator iterations a GPU affords,
which batch m trains the better generator?

On the NVIDIA H200 the WGAN notebook's steps are bound by kernel launches, not arithmetic: one
iteration of WGAN-GP (five critic steps and one generator step, 64 channels) took 32.1 ms with
Algorithm 1's batch of m = 64 and 32.4 ms with m = 256 (results/gpu-h200/README.md), so its two
minutes buy about 3,500 iterations at either batch, where the cpu profile's 13 minutes on two cores
bought 11,400. This script trains the notebook's loop (Algorithm 1 with its optimizers: RMSProp and
clipping, or Adam and the gradient penalty) for the same number of generator iterations at each batch,
on MNIST, and scores the generator every few hundred iterations as the evaluation notebook scores it
(FID of the classifier's features of N samples against the 10,000 test images; the share legible
with the digit reference, as benchmarks/legibility.py checks it). Iterations, not
seconds, are the x-axis, so the answer does not depend on the machine that measures it: on the CPU a
larger batch costs proportionally more, on a launch-bound GPU almost nothing.

Run: python benchmarks/wgan_batch.py [--variant gp] [--channels 16] [--batches 64 256]
                                     [--iterations 3500] [--score-every 500] [--n 10000] [--seed 0]
About 15 minutes at m = 64 and 45 at m = 256 on two AVX2 cores (gp, 16 channels; the record's
train_seconds, plus a minute of scoring each). Results (with
hardware and commit) are merged into results/benchmarks.json under "wgan_batch_<variant>".
Not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from timing import at_least_one, store_section  # benchmarks/timing.py, beside this script
from training_throughput import wgan_parts  # beside this script

from genmodels.data import load_mnist
from genmodels.features import feature_statistics, fit_digit_reference, legible_share, load_classifier
from genmodels.metrics import frechet_distance, to_uint8
from genmodels.train import hardware, seed_everything
from genmodels.wgan import DCGANConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("gp", "clip"), default="gp")
    parser.add_argument("--channels", type=at_least_one, default=16, help="the cpu profile's gp_channels")
    parser.add_argument("--batches", type=at_least_one, nargs="+", default=[64, 256])
    parser.add_argument("--iterations", type=at_least_one, default=3500, help="generator iterations")
    parser.add_argument("--score-every", type=at_least_one, default=500)
    parser.add_argument("--n", type=at_least_one, default=10_000, help="samples per score")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = load_mnist(train=True), load_mnist(train=False)
    train_pixels = train.data.float().div(255).reshape(-1, 784)
    classifier, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    reference = feature_statistics(classifier, test.data)
    digits = fit_digit_reference(classifier, train.data, train.targets, test.data)  # legible: near a digit
    print(f"{hardware('cpu')}; WGAN-{args.variant}, {args.channels} channels, batches {args.batches}, "
          f"{args.iterations:,} iterations, N = {args.n:,}", flush=True)

    def score(generator) -> tuple[float, float]:
        generator.eval()  # batch normalization with its running statistics, as the evaluation
        with torch.no_grad():
            images = to_uint8(generator.sample(args.n, generator=torch.Generator().manual_seed(args.seed))
                              .reshape(-1, 1, 28, 28))
        generator.train()
        statistics = feature_statistics(classifier, images)
        fid = frechet_distance(reference.mean, reference.covariance, statistics.mean, statistics.covariance)
        return fid, legible_share(classifier, images, reference=digits)

    curves = {}
    for m in args.batches:
        seed_everything(args.seed)

        def real(m=m):  # m real samples, drawn afresh for every critic step as the notebook draws them
            return train_pixels[torch.randint(len(train_pixels), (m,))]

        step, generator, _ = wgan_parts(args.variant, DCGANConfig(channels=args.channels), m, real=real)
        rows, seconds = [], 0.0
        for iteration in range(1, args.iterations + 1):
            started = time.perf_counter()
            step()
            seconds += time.perf_counter() - started
            if iteration % args.score_every == 0 or iteration == args.iterations:
                fid, legible = score(generator)
                rows.append(dict(iteration=iteration, fid=fid, legible=legible,
                                 train_seconds=round(seconds, 1)))
                print(f"  m = {m}: iteration {iteration:,}, FID {fid:.2f}, legible {legible:.1%}, "
                      f"{seconds:.0f} s of training", flush=True)
        curves[str(m)] = rows

    store_section(
        f"wgan_batch_{args.variant}", variant=args.variant, channels=args.channels, n_critic=5,
        iterations=args.iterations, n=args.n, seed=args.seed, reference="the 10,000 test images",
        curves=curves,
    )


if __name__ == "__main__":
    main()
