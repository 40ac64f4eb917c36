"""Which speed levers pay for the DDPM's U-Net on this machine: an A/B of each against plain float32.

Run: python benchmarks/unet_levers.py [--channels 16] [--repeats 5] [--no-compile]
(16 channels: the cpu profile's width when the stored results were measured; the profile now uses 24.)
Measures images per second of a training step (forward + backward + Adam, batch 128) and of a
sampling forward pass (no gradients, batch 128), for: bf16 autocast, channels_last memory layout,
torch.compile, one thread instead of all, and other training batch sizes. A numerical lever (bf16
autocast or channels_last) that is at least 1.3 times faster is then checked for harm (torch.compile
is not): 150 training steps from the same initial weights, on the
same batches, noise and timesteps, with and without it; the mean loss of the last 50 steps is
compared. Results (with hardware, commit and torch version) are merged into results/benchmarks.json
under "unet_levers". Run it on an idle machine. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from timing import at_least_one, store_section, timed  # benchmarks/timing.py, beside this script

from genmodels.data import load_mnist
from genmodels.diffusion import NoiseSchedule, loss_simple
from genmodels.train import hardware
from genmodels.unet import UNet, UNetConfig

schedule = NoiseSchedule()



def make(channels: int, channels_last: bool, compiled: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = UNet(UNetConfig(channels=channels))
    model.bf16_where_emulated = True  # the bf16 lever itself, on any CPU
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = torch.compile(model, dynamic=False) if compiled else model
    return model, network


def training_rate(channels, batch, repeats, bf16=False, channels_last=False, compiled=False) -> float:
    model, network = make(channels, channels_last, compiled)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.randn(batch, 1, 28, 28)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_simple(network, schedule, x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return batch / timed(step, repeats)


def sampling_rate(channels, batch, repeats, bf16=False, channels_last=False, compiled=False) -> float:
    model, network = make(channels, channels_last, compiled)
    model.eval()
    x, t = torch.randn(batch, 1, 28, 28), schedule.sample_t(batch)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            network(x, t)

    return batch / timed(step, repeats)


def loss_after_training(channels, steps=150, batch=128, bf16=False, channels_last=False) -> float:
    """Mean loss of the last 50 of ``steps`` training steps on MNIST, identical data and noise."""
    model, network = make(channels, channels_last, compiled=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    data = load_mnist(train=True).data[: steps * batch].float().div(127.5).sub(1)[:, None]
    generator = torch.Generator().manual_seed(1)
    losses = []
    for x0 in data.split(batch):
        t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        if channels_last:
            x0, noise = (a.contiguous(memory_format=torch.channels_last) for a in (x0, noise))
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_simple(network, schedule, x0, t, noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses[-50:]) / 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=at_least_one, default=16)
    parser.add_argument("--repeats", type=at_least_one, default=5)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    c, r = args.channels, args.repeats
    print(f"{hardware('cpu')}, torch {torch.__version__}, U-Net channels {c}")

    rows = {}

    def record(name, train, sample):
        rows[name] = {"train_images_per_s": round(train, 1), "sample_images_per_s": round(sample, 1)}
        base = rows.get("float32 (baseline)", rows[name])
        print(f"  {name:28s} train {train:7.1f} images/s ({train / base['train_images_per_s']:4.2f}x)   "
              f"sample {sample:7.1f} images/s ({sample / base['sample_images_per_s']:4.2f}x)", flush=True)

    record("float32 (baseline)", training_rate(c, 128, r), sampling_rate(c, 128, r))
    record("bf16 autocast", training_rate(c, 128, r, bf16=True), sampling_rate(c, 128, r, bf16=True))
    record("channels_last", training_rate(c, 128, r, channels_last=True),
           sampling_rate(c, 128, r, channels_last=True))
    if not args.no_compile:
        started = time.perf_counter()
        train = training_rate(c, 128, r, compiled=True)
        sample = sampling_rate(c, 128, r, compiled=True)
        record("torch.compile", train, sample)
        rows["torch.compile"]["compile_and_measure_seconds"] = round(time.perf_counter() - started, 1)
    torch.set_num_threads(1)
    record("1 thread", training_rate(c, 128, r), sampling_rate(c, 128, r))
    torch.set_num_threads(threads)
    for batch in (64, 256):
        record(f"batch {batch}", training_rate(c, batch, r), sampling_rate(c, batch, r))

    baseline = rows["float32 (baseline)"]
    harm = {}
    for name, options in (("bf16 autocast", {"bf16": True}), ("channels_last", {"channels_last": True})):
        speedup = max(rows[name]["train_images_per_s"] / baseline["train_images_per_s"],
                      rows[name]["sample_images_per_s"] / baseline["sample_images_per_s"])
        rows[name]["speedup"] = round(speedup, 2)
        if speedup >= 1.3:
            harm[name] = loss_after_training(c, **options)
    if harm:
        harm["float32 (baseline)"] = loss_after_training(c)
        for name, loss in harm.items():
            rows[name]["loss_last_50_of_150_steps"] = round(loss, 5)
            print(f"  loss check {name:28s} {loss:.5f}")

    store_section("unet_levers", threads=threads, channels=c, batch=128,
                  threshold="a lever is kept only at >= 1.3x and with no harm to the loss", rows=rows)


if __name__ == "__main__":
    main()
