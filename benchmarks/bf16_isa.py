"""Whether bf16 autocast pays for the DDPM's U-Net on CPUs without bfloat16 instructions: the same
training step and sampling call in float32 and under bf16 autocast, with oneDNN held to the
instruction sets of other processors.

Run: python benchmarks/bf16_isa.py [--repeats 5] [--rows NAME ...] [--section bf16_isa]
Each row runs in a fresh process. "this processor" runs as it is; the others set ONEDNN_MAX_CPU_ISA
and MKL_ENABLE_INSTRUCTIONS (and, for AVX2, ATEN_CPU_CAPABILITY=avx2 for PyTorch's own kernels) so
that the convolutions and matrix products use only what an AVX-512 processor without BF16 or an AVX2
processor (many laptops) has. The clock, caches and cores stay this machine's: the ratio of bf16 to
float32 in a row is what transfers, not its images per second. Training: one step of Algorithm 1
(forward, backward, Adam) of the cpu profile's U-Net (24 channels) on its minibatch of 64; sampling:
one network call (no gradients, t = 500) of a U-Net of the published network's shape (64 channels,
two blocks per level; random weights, which cost the same) on the evaluation's chunk of 100 images.
Each is timed in float32, in bf16 (autocast, kept where the U-Net would refuse it) and as the
notebooks ask for it (autocast, which the U-Net turns into float32 where genmodels.train.native_bf16
answers False; each row records that answer and oneDNN's own), as the median of --repeats calls after
two warm-up calls. Results (with hardware, commit and torch version) are merged into
results/benchmarks.json under "bf16_isa". On a processor that really lacks bfloat16 instructions
(an AVX2 one), `--rows "this processor" --section bf16_isa_<name>` checks the held rows against it
(oneDNN cannot be held above what the processor has, so the other rows would only repeat it there).
Run it on an idle machine. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import warnings

import torch
from timing import at_least_one, store_section, timed_median  # benchmarks/timing.py, beside this script

from genmodels.diffusion import NoiseSchedule, loss_simple
from genmodels.train import hardware, native_bf16
from genmodels.unet import UNet, UNetConfig

ROWS = {  # name: environment
    "this processor": {},
    "AVX-512 without BF16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}
TRAIN = dict(config=UNetConfig(channels=24, blocks_per_level=1), batch=64)  # the cpu profile's
SAMPLE = dict(config=UNetConfig(channels=64, blocks_per_level=2), batch=100)  # the published one's


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def training_rate(bf16: bool, repeats: int, keep: bool = True) -> float:
    """Images per second; ``keep``: bf16 even where the U-Net would compute float32 instead."""
    torch.manual_seed(0)
    model = UNet(TRAIN["config"])
    model.bf16_where_emulated = keep
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    schedule = NoiseSchedule()
    x0 = torch.randn(TRAIN["batch"], 1, 28, 28)

    def step():
        with autocast(bf16):
            loss = loss_simple(model, schedule, x0).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return TRAIN["batch"] / timed_median(step, repeats)


def sampling_rate(bf16: bool, repeats: int, keep: bool = True) -> float:
    torch.manual_seed(0)
    model = UNet(SAMPLE["config"]).eval()
    model.bf16_where_emulated = keep
    x, t = torch.randn(SAMPLE["batch"], 1, 28, 28), torch.full((SAMPLE["batch"],), 500)

    @torch.inference_mode()
    def step():
        with autocast(bf16):
            model(x, t)

    return SAMPLE["batch"] / timed_median(step, repeats)


def worker(repeats: int) -> None:
    """One row, in this process, as JSON on the last line of stdout."""
    row = {"native_bf16": native_bf16("cpu"),
           "onednn_bf16_kernels": torch.ops.mkldnn._is_mkldnn_bf16_supported(),  # emulated or not
           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for name, rate in (("train", training_rate), ("sample", sampling_rate)):
        fp32, bf16 = rate(False, repeats), rate(True, repeats)
        row[f"{name}_float32_images_per_s"] = round(fp32, 1)
        row[f"{name}_bf16_images_per_s"] = round(bf16, 1)
        row[f"{name}_bf16_speedup"] = round(bf16 / fp32, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the U-Net's note that it computes float32
            asked = rate(True, repeats, keep=False)  # as the notebooks ask for it
        row[f"{name}_autocast_asked_images_per_s"] = round(asked, 1)
    print(json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least_one, default=5)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="NAME",
                        help=f"which rows to run (default: all of {', '.join(map(repr, ROWS))})")
    parser.add_argument("--section", default="bf16_isa", help="the record's name in benchmarks.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.repeats)
        return
    print(f"{hardware('cpu')}, torch {torch.__version__}")
    rows = {}
    for name, env in ((name, ROWS[name]) for name in args.rows):
        environment = {k: v for k, v in os.environ.items()
                       if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                                    "MKL_ENABLE_INSTRUCTIONS")}
        done = subprocess.run([sys.executable, __file__, "--worker", "--repeats", str(args.repeats)],
                              env={**environment, **env}, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the row {name!r} failed:\n{done.stderr}")
        rows[name] = {"environment": env, **json.loads(done.stdout.strip().splitlines()[-1])}
        row = rows[name]
        print(f"  {name} (native_bf16: {row['native_bf16']})", flush=True)
        for part in ("train", "sample"):
            print(f"    {part:6s} images/s: float32 {row[f'{part}_float32_images_per_s']:7.1f}, "
                  f"bf16 {row[f'{part}_bf16_images_per_s']:7.1f} (x{row[f'{part}_bf16_speedup']:.2f}), "
                  f"autocast as the notebooks ask {row[f'{part}_autocast_asked_images_per_s']:7.1f}")
    shapes = {part: {"channels": s["config"].channels, "blocks_per_level": s["config"].blocks_per_level,
                     "batch": s["batch"]} for part, s in (("train", TRAIN), ("sample", SAMPLE))}
    store_section(args.section, repeats=args.repeats, threads=torch.get_num_threads(), **shapes, rows=rows)


if __name__ == "__main__":
    main()
