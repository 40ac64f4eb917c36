"""What the benchmark scripts share: timing a step after warm-up, and storing what was measured in
results/benchmarks.json with where and when it was measured."""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from genmodels.train import git_commit, hardware, modified_code, native_bf16, write_json

ROOT = Path(__file__).resolve().parents[1]


def at_least_one(text: str) -> int:
    """argparse type of a count (repeats, processes, images, steps): a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def autocast_computed(device: torch.device | str = "cpu") -> str:
    """What the U-Net computes in under the notebooks' bf16 autocast on ``device`` (this CPU by default),
    for a record: bfloat16 where it has bfloat16 instructions, float32 elsewhere (see
    genmodels.unet.UNet)."""
    return "bfloat16" if native_bf16(device) else "float32 (bf16 autocast asked; no bf16 instructions)"


def _seconds_per_call(step, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``step``, after two warm-up calls (which also compile,
    under torch.compile)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}: a time per call needs a timed call")
    step()
    step()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return seconds


def timed(step, repeats: int) -> float:
    """Mean seconds per call of ``step``, after two warm-up calls."""
    return statistics.fmean(_seconds_per_call(step, repeats))


def timed_median(step, repeats: int) -> float:
    """Seconds of the median call of ``step`` among ``repeats``, after two warm-up calls: on a shared
    machine, one slow call moves a mean but not a median."""
    return statistics.median(_seconds_per_call(step, repeats))


def store_section(name: str, **fields) -> Path:
    """Write ``fields`` as the section ``name`` of results/benchmarks.json, with the hardware, torch
    version, commit (and the code files changed since it) and time of the measurement; the file's other
    sections are kept."""
    path = ROOT / "results" / "benchmarks.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[name] = {"hardware": hardware("cpu"), "torch": torch.__version__, "commit": git_commit(),
                    "modified_code": modified_code(),
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
    write_json(path, stored)
    print(f"written to {path.relative_to(ROOT)} (section {name})")
    return path
