"""Memory from the kernel: how much of a CPU step of the DDPM's U-Net is spent faulting in fresh pages,
and which allocator settings give that time back.

Run: python benchmarks/allocator.py [--repeats 8] [--processes 3]
A forward pass at a few hundred images allocates activations of tens of megabytes. By default glibc
hands blocks that large back to the kernel when they are freed (munmap, or trimming the top of the
heap), so the next step maps them again and the kernel zeroes and faults them in, 4 KiB at a time:
system time, not arithmetic. Two settings change only where memory comes from, never a number the
network computes:

- ``THP_MEM_ALLOC_ENABLE=1``: PyTorch's CPU allocator asks for transparent huge pages (2 MiB) for
  large blocks, so one fault maps 512 times as much;
- ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` (glibc's tunables): blocks below 32 MiB
  come from the heap, and freed memory stays there for the next step instead of going back
  (``genmodels.pipeline.KEEP_FREED_MEMORY``, which ``make results`` sets for every notebook).

Each setting is read when a process starts, so every arm runs each workload in a fresh Python
process: one sampling call of the published network (checkpoints/ddpm.pt, 64 channels) on a chunk
of 500 images, as the evaluation notebook samples, and on a chunk of 100, whose blocks are five
times smaller and mostly below glibc's 32 MiB; one sampling call of the cpu profile's U-Net (24
channels) on its chunk of 250; one training step (forward, backward, Adam) of the cpu profile's
U-Net on its minibatch of 64; all under bf16 autocast, as the notebooks run. Each process reports
the median time per call over ``--repeats`` calls after two warm-up calls, and the minor page
faults and system CPU seconds per call; a workload's arms take turns in ``--processes`` fresh
processes each, because two processes with the same setting can differ by a fifth, and the median
process is reported with the range. An arm earns its place at 1.3 times glibc's defaults or more.
Results (hardware, commit, torch) go to results/benchmarks.json under "allocator".
Run it on an idle machine. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from timing import at_least_one, autocast_computed, store_section  # benchmarks/timing.py, beside this script

from genmodels.diffusion import NoiseSchedule, load_ddpm, loss_simple
from genmodels.pipeline import KEEP_FREED_MEMORY
from genmodels.train import hardware
from genmodels.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
KEEP_FREED = KEEP_FREED_MEMORY  # what `make results` sets for every notebook
HUGE_PAGES = {"THP_MEM_ALLOC_ENABLE": "1"}
ARMS = {
    "glibc defaults": {},
    "huge pages (THP_MEM_ALLOC_ENABLE)": HUGE_PAGES,
    "freed memory kept (MALLOC_*_THRESHOLD_)": KEEP_FREED,
    "both": {**HUGE_PAGES, **KEEP_FREED},
}
WORKLOADS = {
    "sample, published U-Net (64 channels), 500 images": "sample-published",
    "sample, published U-Net (64 channels), 100 images": "sample-published-100",
    "sample, cpu profile U-Net (24 channels), 250 images": "sample-cpu",
    "train, cpu profile U-Net (24 channels), 64 images": "train-cpu",
}


def step_for(workload: str):
    """One call of the workload, and the number of images it handles."""
    schedule = NoiseSchedule(T=1000, kind="cosine")
    torch.manual_seed(0)
    if workload.startswith("sample-published"):
        model, schedule, _ = load_ddpm(ROOT / "checkpoints" / "ddpm.pt")
        batch = 100 if workload.endswith("-100") else 500
    else:
        model = UNet(UNetConfig(channels=24, blocks_per_level=1))
        batch = 250 if workload == "sample-cpu" else 64
    x, t = torch.randn(batch, 1, 28, 28), schedule.sample_t(batch)
    if workload.startswith("sample"):
        model.eval()

        @torch.inference_mode()
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(x, t)

        return step, batch
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_simple(model, schedule, x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, batch


def measure(workload: str, repeats: int) -> dict:
    """In this process: seconds per call (median), faults and system time per call."""
    step, batch = step_for(workload)
    step()
    step()
    before, seconds = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    median = statistics.median(seconds)
    return {"images_per_s": round(batch / median, 1), "seconds_per_call": round(median, 4),
            "minor_faults_per_call": round((after.ru_minflt - before.ru_minflt) / repeats),
            "system_seconds_per_call": round((after.ru_stime - before.ru_stime) / repeats, 4),
            "user_seconds_per_call": round((after.ru_utime - before.ru_utime) / repeats, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least_one, default=8, help="timed calls per process")
    parser.add_argument("--processes", type=at_least_one, default=3,
                        help="fresh processes per workload and arm")
    parser.add_argument("--child", choices=sorted(WORKLOADS.values()), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.repeats)))
        return
    print(f"{hardware('cpu')}, torch {torch.__version__}; median of {args.repeats} calls in each of "
          f"{args.processes} processes", flush=True)
    inherited = sorted(set(os.environ) & {name for arm in ARMS.values() for name in arm})
    if inherited:
        raise SystemExit(f"unset {', '.join(inherited)} first: the baseline arm must run with glibc's "
                         "and PyTorch's defaults")
    rows = {}
    for workload, child in WORKLOADS.items():
        runs = {arm: [] for arm in ARMS}
        for _ in range(args.processes):  # the arms take turns, so that a slow spell hits them all
            for arm, settings in ARMS.items():
                command = [sys.executable, __file__, "--child", child, "--repeats", str(args.repeats)]
                done = subprocess.run(command, env={**os.environ, **settings}, capture_output=True,
                                      text=True, check=True)
                runs[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
        rows[workload] = {}
        for arm, measured in runs.items():
            # the median process by rate, whole (its faults and times are its own, not other
            # processes' medians); the spread between processes beside it
            row = dict(sorted(measured, key=lambda run: run["images_per_s"])[(len(measured) - 1) // 2])
            rates = [run["images_per_s"] for run in measured]
            row["images_per_s_range"] = [min(rates), max(rates)]
            baseline = rows[workload].get("glibc defaults", row)
            row["speedup"] = round(row["images_per_s"] / baseline["images_per_s"], 2)
            rows[workload][arm] = row
            print(f"  {workload:52s} {arm:40s} {row['images_per_s']:7.1f} images/s ({row['speedup']:.2f}x; "
                  f"processes {min(rates):.0f} to {max(rates):.0f}), {row['minor_faults_per_call']:>9,.0f} "
                  f"faults and {row['system_seconds_per_call']:.2f} s system time per call", flush=True)

    store_section(
        "allocator", threads=torch.get_num_threads(), repeats=args.repeats, processes=args.processes,
        autocast=autocast_computed(), settings={"huge pages": HUGE_PAGES, "freed memory kept": KEEP_FREED},
        arms=list(ARMS), workloads=list(WORKLOADS),  # in this order (the file's keys are sorted)
        threshold="an arm earns its place at >= 1.3x", rows=rows,
    )


if __name__ == "__main__":
    main()
