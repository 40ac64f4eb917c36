"""The published DDPM's stochastic samplers at few network calls: DDIM with eta = 1 against
SDE-DPM-Solver++(2M), which adds a second-order correction at no extra call, on three spacings of
its timesteps (the evaluation table samples with the winner: SDE-DPM-Solver++(2M), trailing).

Run: python benchmarks/stochastic_samplers.py [--n 1000] [--seeds 0 1 2] [--calls 20 ...] [--only NAME ...]
Each sampler draws N images per seed from checkpoints/ddpm.pt under bf16 autocast, as the evaluation
notebook does, from the same seeds; each set is scored by the book's FID (classifier features against
the 10,000 test images) and by the share the classifier calls a digit with confidence above 0.9
("legible"). SDE-DPM-Solver++(2M) runs on DDIM's spacing (evenly spaced from T to 1), the trailing
one (T, T - T/n, ..., T/n), and the quadratic one of Song et al.'s DDIM experiments
(T (1 - i/n)^2 for i = 0, ..., n - 1), which crowds the steps at low noise. FID at N = 1,000 is
biased upwards and noisy, so compare samplers seed by seed: the seeds are shared. Prints and writes
the section "stochastic_samplers" of results/benchmarks.json, with hardware, commit and the
checkpoint's hash. Not a test. Run it with the allocator setting `make results` uses
(genmodels.pipeline.KEEP_FREED_MEMORY, see benchmarks/allocator.py), or the times per 1,000 are
those of glibc's defaults; the file records which.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from timing import at_least_one, autocast_computed, store_section  # benchmarks/timing.py, beside this script

from genmodels.data import load_mnist
from genmodels.diffusion import (
    ddim_sample,
    ddim_timesteps,
    dpm_solver_2m_sample,
    load_ddpm,
    trailing_timesteps,
)
from genmodels.features import feature_statistics, legible_share, load_classifier
from genmodels.metrics import frechet_distance
from genmodels.pipeline import KEEP_FREED_MEMORY
from genmodels.train import file_sha256, hardware

ROOT = Path(__file__).resolve().parents[1]


def quadratic_timesteps(T: int, steps: int) -> list[int]:
    """T (1 - i / steps)^2 for i = 0, ..., steps - 1, rounded: dense near t = 0."""
    return [round(T * (1 - i / steps) ** 2) for i in range(steps)]


SAMPLERS = {
    "DDIM, eta = 1": lambda model, schedule, shape, calls, generator: ddim_sample(
        model, schedule, shape, steps=calls, eta=1.0, generator=generator),
    "SDE-DPM-Solver++(2M), DDIM's timesteps": lambda model, schedule, shape, calls, generator: (
        dpm_solver_2m_sample(model, schedule, shape, timesteps=ddim_timesteps(schedule.T, calls),
                             stochastic=True, generator=generator)),
    "SDE-DPM-Solver++(2M), trailing timesteps": lambda model, schedule, shape, calls, generator: (
        dpm_solver_2m_sample(model, schedule, shape, timesteps=trailing_timesteps(schedule.T, calls),
                             stochastic=True, generator=generator)),
    "SDE-DPM-Solver++(2M), quadratic timesteps": lambda model, schedule, shape, calls, generator: (
        dpm_solver_2m_sample(model, schedule, shape, timesteps=quadratic_timesteps(schedule.T, calls),
                             stochastic=True, generator=generator)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=at_least_one, default=1000, help="images per sampler and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--calls", type=at_least_one, nargs="+", default=[20])
    parser.add_argument("--only", nargs="+", choices=sorted(SAMPLERS), metavar="NAME")
    args = parser.parse_args()
    checkpoint = ROOT / "checkpoints" / "ddpm.pt"
    model, schedule, _ = load_ddpm(checkpoint)
    classifier, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    reference = feature_statistics(classifier, load_mnist(train=False).data)
    print(f"{hardware('cpu')}; N = {args.n:,} per sampler and seed, seeds {args.seeds}", flush=True)

    rows = []
    for calls in args.calls:
        for name, sampler in SAMPLERS.items():
            if args.only and name not in args.only:
                continue
            for seed in args.seeds:
                generator, chunks = torch.Generator().manual_seed(seed), []
                started = time.perf_counter()
                for start in range(0, args.n, 500):
                    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
                        x = sampler(model, schedule, (min(500, args.n - start), 1, 28, 28), calls, generator)
                    chunks.append(((x.float() + 1) / 2).clamp(0, 1))  # [-1, 1] -> [0, 1], as the evaluation
                seconds = time.perf_counter() - started
                images = torch.cat(chunks)
                statistics = feature_statistics(classifier, images)
                fid = frechet_distance(reference.mean, reference.covariance, statistics.mean,
                                       statistics.covariance)
                legible = legible_share(classifier, images)
                rows.append(dict(sampler=name, calls=calls, seed=seed, fid=fid, legible=legible,
                                 seconds_per_1k=1000 * seconds / args.n))
                print(f"  {name:42s} {calls:3d} calls, seed {seed}: FID {fid:.3f}, legible {legible:.1%}, "
                      f"{1000 * seconds / args.n:.0f} s per 1,000", flush=True)

    store_section(
        "stochastic_samplers", checkpoint_sha256=file_sha256(checkpoint), n=args.n, seeds=args.seeds,
        reference="the 10,000 test images", autocast=autocast_computed(), rows=rows,
        allocator={name: os.environ.get(name, "glibc default") for name in KEEP_FREED_MEMORY},
    )


if __name__ == "__main__":
    main()
