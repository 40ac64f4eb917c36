"""Where DDPM's time goes on this machine: U-Net forward and training-step throughput.

Run: python benchmarks/unet_throughput.py [channels ...]
Prints images per second for a forward pass (what sampling costs per step) and for a training step
(forward + backward + Adam), per U-Net width, with the hardware it ran on. Not a test.
"""

import sys
import time

import torch

from genmodels.diffusion import NoiseSchedule, loss_simple
from genmodels.train import hardware, pick_device
from genmodels.unet import UNet, UNetConfig


def images_per_second(step, batch: int, repeats: int = 5) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - started)


def measure(channels: int, device: torch.device, schedule: NoiseSchedule, batch: int = 128) -> str:
    model = UNet(UNetConfig(channels=channels)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = torch.randn(batch, 1, 28, 28, device=device)
    t = schedule.sample_t(batch, device=device)

    @torch.no_grad()
    def forward():
        model.eval()
        model(x, t)

    def train_step():
        model.train()
        loss = loss_simple(model, schedule, x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    params = sum(p.numel() for p in model.parameters())
    return (f"channels {channels:3d} ({params / 1e6:.2f} M parameters): "
            f"forward {images_per_second(forward, batch):8.0f} images/s, "
            f"training {images_per_second(train_step, batch):8.0f} images/s")


def main(widths: list[int]) -> None:
    device = pick_device()
    schedule = NoiseSchedule()
    print(f"{hardware(device)}, torch {torch.__version__}")
    for channels in widths:
        print(measure(channels, device, schedule))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [16, 32, 64])
