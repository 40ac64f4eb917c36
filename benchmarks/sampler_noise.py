"""How much fresh noise at 20 network calls: the published DDPM sampled with SDE-DPM-Solver++(2M) on
trailing timesteps for several values of its noise knob eta (1 is the reverse SDE, which the
evaluation samples; 0 the probability-flow ODE; above 1 more noise than Algorithm 2 puts back).

Run: python benchmarks/sampler_noise.py [--n 1000] [--seeds 0 1 2] [--etas 0.5 1 1.5 2 2.5 3] [--calls 20]
                                       [--device cpu] [--section sampler_noise]
Each eta draws N images per seed from checkpoints/ddpm.pt as the evaluation draws them (chunks of
100, bf16 autocast where the processor has bfloat16 instructions), from the same seeds; each set is
scored by the book's FID (classifier features against the 10,000 test images) and its legible share.
The seeds are shared, so compare the values of eta seed by seed. Results (with hardware, commit and
the checkpoint's hash) are merged into results/benchmarks.json under "sampler_noise". About six
minutes per value of eta on two cores at the defaults; run it with the allocator setting
`make results` uses (genmodels.pipeline.KEEP_FREED_MEMORY) for the evaluation's times per 1,000.
On a GPU (--device cuda) the table's N of 10,000 per seed takes seconds per value of eta; the record
then names that device. --section names the record, so that a run at other sizes or seeds (a value
of eta confirmed on seeds the evaluation table does not use) keeps the sweep's. Not a test.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from evaluation_draw import CHUNK, SAMPLER, sample  # beside this script
from timing import at_least_one, autocast_computed, store_section  # benchmarks/timing.py, beside this script

from genmodels.data import load_mnist
from genmodels.diffusion import load_ddpm
from genmodels.features import feature_statistics, legible_share, load_classifier
from genmodels.metrics import frechet_distance
from genmodels.pipeline import KEEP_FREED_MEMORY
from genmodels.train import file_sha256, hardware

ROOT = Path(__file__).resolve().parents[1]


def noise_level(text: str) -> float:
    """argparse type of eta: a finite number, at least 0."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"eta must be a finite number >= 0, got {text}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=at_least_one, default=1000, help="images per value of eta and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--etas", type=noise_level, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    parser.add_argument("--calls", type=at_least_one, default=20)
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu or cuda")
    parser.add_argument("--section", default="sampler_noise", help="the record's name in benchmarks.json")
    args = parser.parse_args()
    checkpoint = ROOT / "checkpoints" / "ddpm.pt"
    model, schedule, _ = load_ddpm(checkpoint, map_location=args.device)
    classifier, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    reference = feature_statistics(classifier, load_mnist(train=False).data)
    print(f"{hardware(args.device)}; N = {args.n:,} per eta and seed, seeds {args.seeds}, {args.calls} calls",
          flush=True)

    rows = []
    for eta in args.etas:
        for seed in args.seeds:
            images, seconds = sample(model, schedule, args.n, args.calls, seed, eta=eta, device=args.device)
            statistics = feature_statistics(classifier, images)
            fid = frechet_distance(reference.mean, reference.covariance, statistics.mean,
                                   statistics.covariance)
            legible = legible_share(classifier, images)
            rows.append(dict(eta=eta, seed=seed, fid=fid, legible=legible,
                             seconds_per_1k=1000 * seconds / args.n))
            print(f"  eta = {eta:4.2f}, seed {seed}: FID {fid:.3f}, legible {legible:.1%}, "
                  f"{1000 * seconds / args.n:.0f} s per 1,000", flush=True)

    store_section(
        args.section, checkpoint_sha256=file_sha256(checkpoint), n=args.n, seeds=args.seeds,
        calls=args.calls, sampler=SAMPLER, chunk=CHUNK,
        reference="the 10,000 test images", rows=rows, hardware=hardware(args.device),
        autocast=autocast_computed(args.device),
        allocator={name: os.environ.get(name, "glibc default") for name in KEEP_FREED_MEMORY},
    )


if __name__ == "__main__":
    main()
