"""What bfloat16 costs in sample quality: the published DDPM sampled as the evaluation samples it, in
float32 and under bf16 autocast, from the same seeds.

Run: python benchmarks/bf16_quality.py [--n 1000] [--seeds 0 1 2] [--calls 20]
bf16 autocast was kept as a lever for its speed, with the training loss as the check that it does no
harm (benchmarks/unet_levers.py); the evaluation also samples under it. Here each seed's images are
drawn twice with the evaluation's sampler (SDE-DPM-Solver++(2M) on trailing timesteps, chunks of 100):
once in float32 and once under bf16 autocast (kept on any CPU, as genmodels.unet.UNet's
bf16_where_emulated allows, so that the question is bf16's arithmetic, not this processor's). Both draw
the same starting noise and the same noise at every step, so the pairs differ only by bf16's rounding
and what the steps make of it. Each set is scored by the book's FID (classifier features against the
10,000 test images) and its legible share; each pair by whether the classifier gives both images the
same digit and by their mean absolute difference in pixel intensity (on [0, 1]). Results (with
hardware, commit and the checkpoint's hash) are merged into results/benchmarks.json under
"bf16_quality". Takes about 20 minutes on two cores at the defaults (float32 sampling is the slow half
on a processor with bfloat16 instructions); run it with the allocator setting `make results` uses
(genmodels.pipeline.KEEP_FREED_MEMORY) for the evaluation's times per 1,000. Not a test.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from evaluation_draw import CHUNK, SAMPLER, sample  # beside this script
from timing import at_least_one, store_section  # benchmarks/timing.py, beside this script

from genmodels.data import load_mnist
from genmodels.diffusion import load_ddpm
from genmodels.features import feature_statistics, legible_share, load_classifier
from genmodels.metrics import frechet_distance
from genmodels.pipeline import KEEP_FREED_MEMORY
from genmodels.train import file_sha256, hardware, native_bf16
from genmodels.unet import UNet

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def digits(classifier, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([classifier(batch).argmax(-1) for batch in images.split(500)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=at_least_one, default=1000, help="images per seed and precision")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--calls", type=at_least_one, default=20)
    args = parser.parse_args()
    checkpoint = ROOT / "checkpoints" / "ddpm.pt"
    model, schedule, _ = load_ddpm(checkpoint)
    for module in model.modules():
        if isinstance(module, UNet):
            module.bf16_where_emulated = True  # bf16 itself, on any CPU
    classifier, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    reference = feature_statistics(classifier, load_mnist(train=False).data)
    print(f"{hardware('cpu')}; N = {args.n:,} per seed and precision, seeds {args.seeds}, "
          f"{args.calls} calls", flush=True)

    rows = []
    for seed in args.seeds:
        row = dict(seed=seed)
        images = {}
        for name, bf16 in (("float32", False), ("bf16", True)):
            images[name], seconds = sample(model, schedule, args.n, args.calls, seed, bf16=bf16)
            statistics = feature_statistics(classifier, images[name])
            row[f"fid_{name}"] = frechet_distance(reference.mean, reference.covariance, statistics.mean,
                                                  statistics.covariance)
            row[f"legible_{name}"] = legible_share(classifier, images[name])
            row[f"seconds_per_1k_{name}"] = 1000 * seconds / args.n
        row["same_digit"] = (digits(classifier, images["float32"])
                             == digits(classifier, images["bf16"])).float().mean().item()
        row["mean_abs_difference"] = (images["float32"] - images["bf16"]).abs().mean().item()
        rows.append(row)
        print(f"  seed {seed}: FID {row['fid_float32']:.3f} in float32, {row['fid_bf16']:.3f} in bf16; "
              f"legible {row['legible_float32']:.1%} and {row['legible_bf16']:.1%}; the same digit in "
              f"{row['same_digit']:.1%} of pairs, mean |difference| {row['mean_abs_difference']:.4f}; "
              f"{row['seconds_per_1k_float32']:.0f} and {row['seconds_per_1k_bf16']:.0f} s per 1,000",
              flush=True)

    store_section(
        "bf16_quality", checkpoint_sha256=file_sha256(checkpoint), n=args.n, seeds=args.seeds,
        calls=args.calls, sampler=SAMPLER, chunk=CHUNK,
        reference="the 10,000 test images", native_bf16=native_bf16("cpu"), rows=rows,
        allocator={name: os.environ.get(name, "glibc default") for name in KEEP_FREED_MEMORY},
    )


if __name__ == "__main__":
    main()
