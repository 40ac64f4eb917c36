"""Where DDPM's time goes on this machine: U-Net forward and training-step throughput.

Run: python benchmarks/unet_throughput.py [--batches N ...] [--compile] [--profile] [channels ...]
(defaults: batches 32 128 512 on a CPU, 128 512 2048 on CUDA; channels 16 32 64)
Prints images per second for a forward pass (what sampling costs per step) at several batch sizes,
and for a training step (forward + backward + Adam), per U-Net width, with the hardware it ran on;
from the forward rate, the seconds per 1,000 samples of Algorithm 2 (1000 network calls each) and
of DDIM at 50 steps. --compile adds the same forward under torch.compile; --profile prints the
operators that take the time in one forward pass. Not a test.
"""

import argparse
import time

import torch
from timing import at_least_one  # benchmarks/timing.py, beside this script
from torch.profiler import ProfilerActivity, profile

from genmodels.diffusion import NoiseSchedule, loss_simple
from genmodels.train import hardware, pick_device
from genmodels.unet import UNet, UNetConfig


def images_per_second(step, batch: int, device: torch.device, repeats: int = 5) -> float:
    step()  # warm-up (and compilation, under torch.compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - started)


def forward_rate(model, batch: int, device: torch.device, schedule: NoiseSchedule) -> float:
    x = torch.randn(batch, 1, 28, 28, device=device)
    t = schedule.sample_t(batch, device=device)

    @torch.inference_mode()
    def forward():
        model(x, t)

    return images_per_second(forward, batch, device)


def measure(channels: int, device: torch.device, schedule: NoiseSchedule, batches: list[int],
            compile_: bool, show_profile: bool) -> None:
    model = UNet(UNetConfig(channels=channels)).to(device)
    params = sum(p.numel() for p in model.parameters())
    print(f"channels {channels} ({params / 1e6:.2f} M parameters)")
    model.eval()
    variants = [("eager", model)]
    if compile_:
        variants.append(("torch.compile", torch.compile(model, dynamic=False)))
    for name, network in variants:
        for batch in batches:
            rate = forward_rate(network, batch, device, schedule)
            print(f"  forward, {name:13s} batch {batch:5d}: {rate:8.0f} images/s -> per 1,000 samples "
                  f"Algorithm 2 {1000 * 1000 / rate:8.1f} s, DDIM-50 {50 * 1000 / rate:7.1f} s")

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.randn(128, 1, 28, 28, device=device)

    def train_step():
        loss = loss_simple(model, schedule, x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    rate = images_per_second(train_step, 128, device)
    print(f"  training step, batch 128: {rate:8.0f} images/s -> {60_000 / rate / 60:.1f} minutes per epoch")

    if show_profile:
        model.eval()
        x, t = torch.randn(128, 1, 28, 28, device=device), schedule.sample_t(128, device=device)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x, t)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("channels", nargs="*", type=at_least_one, default=[16, 32, 64])
    parser.add_argument("--batches", nargs="+", type=at_least_one, default=None)
    parser.add_argument("--compile", action="store_true", help="also time the forward under torch.compile")
    parser.add_argument("--profile", action="store_true", help="print the operators that take the time")
    args = parser.parse_args()
    device = pick_device()
    batches = args.batches or ([128, 512, 2048] if device.type == "cuda" else [32, 128, 512])
    print(f"{hardware(device)}, torch {torch.__version__}")
    for channels in args.channels:
        measure(channels, device, NoiseSchedule(), batches, args.compile, args.profile)


if __name__ == "__main__":
    main()
