"""The epsilon-network of a DDPM: a small U-Net for 28 x 28 images, conditioned on the timestep.

Ho et al. (2020) use a PixelCNN++-style U-Net with residual blocks, group normalization, a sinusoidal
embedding of t (as the Transformer's positions) added inside every block, and self-attention at
low resolution. This one keeps that structure at MNIST's size: resolutions 28 -> 14 -> 7 and back,
with skip connections between matching resolutions.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.train import load_model, native_bf16

__all__ = ["UNet", "UNetConfig", "load_unet", "timestep_embedding"]


@dataclass
class UNetConfig:
    channels: int = 32  # width at 28 x 28; doubled at 14 x 14 and 7 x 7
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution: 28, 14, 7
    blocks_per_level: int = 1  # residual blocks per resolution on the way down
    attention_at_lowest: bool = True  # self-attention at 7 x 7
    groups: int = 8  # group normalization groups
    dropout: float = 0.1


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps: (B,) -> (B, dim), [cos(t w_k), sin(t w_k)] with
    frequencies w_k = max_period^(-k / (dim / 2)) (Vaswani et al. 2017, Sec. 3.5)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, embedding_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(embedding_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(F.silu(embedding))[:, :, None, None]  # the timestep enters every block
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.attention = nn.MultiheadAttention(channels, num_heads=1, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return x + attended.transpose(1, 2).reshape(b, c, h, w)


def _check_config(config: UNetConfig) -> None:
    """Refuse a config the network cannot be built from or run with, naming the field to change:
    otherwise the mistake surfaces in forward as a shape error from deep inside torch."""
    c, mults, g = config.channels, tuple(config.channel_mults), config.groups
    problems = []
    if c < 2 or c % 2:
        problems.append(f"channels = {c} must be even and at least 2 (the time embedding is "
                        "[cos, sin] of channels / 2 frequencies)")
    if not 1 <= len(mults) <= 3 or any(m < 1 for m in mults):
        problems.append(f"channel_mults = {mults} needs one positive entry per resolution, at most three "
                        "(28, 14 and 7 pixels: 7 cannot be halved again)")
    widths = [c * m for m in mults if m >= 1]
    if g < 1 or any(w % g for w in [c, *widths]):
        problems.append(f"groups = {g} must divide every width ({', '.join(map(str, [c, *widths]))}): "
                        "group normalization splits the channels into equal groups")
    if config.blocks_per_level < 1:
        problems.append(f"blocks_per_level = {config.blocks_per_level} must be at least 1")
    if not 0 <= config.dropout < 1:
        problems.append(f"dropout = {config.dropout} must lie in [0, 1)")
    if problems:
        raise ValueError("UNetConfig: " + "; ".join(problems))


@torch.compiler.assume_constant_result  # a compiled forward reads it once, without a graph break
def _native_bf16(device: str) -> bool:
    return native_bf16(device)


def _stacklevel_outside_the_libraries() -> int:
    """warnings.warn's stacklevel that names the first caller outside torch and genmodels: the line of
    the notebook or script that called the network (and so is warned once)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("torch", "genmodels"):
        frame, level = frame.f_back, level + 1
    return level


class UNet(nn.Module):
    """eps_theta(x_t, t): images (B, 1, 28, 28) and timesteps (B,) -> predicted noise (B, 1, 28, 28).

    Under bf16 autocast on a device where bfloat16 is not native (an AVX2 laptop, an AVX-512 CPU
    without BF16, a T4: :func:`genmodels.train.native_bf16`), the network computes in float32 instead,
    with a warning for each line that calls it: on such CPUs bf16 kernels are many times slower than
    float32 (``benchmarks/bf16_isa.py``), and the book asks for bf16 only for speed. Set
    ``bf16_where_emulated = True`` on a network to keep bf16 there (to measure it).
    """

    bf16_where_emulated: bool = False

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config = config or UNetConfig()
        _check_config(config)
        c, g, p = config.channels, config.groups, config.dropout
        embedding_dim = 4 * c
        self.embed = nn.Sequential(
            nn.Linear(c, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        widths = [c * m for m in config.channel_mults]

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_widths, width = [c], c
        for level, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(ResidualBlock(width, w, embedding_dim, g, p))
                width = w
                skip_widths.append(width)
            self.down.append(blocks)
            last = level == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(width, width, 3, stride=2, padding=1))
            if not last:
                skip_widths.append(width)

        self.middle1 = ResidualBlock(width, width, embedding_dim, g, p)
        self.attention = SelfAttention(width, g) if config.attention_at_lowest else nn.Identity()
        self.middle2 = ResidualBlock(width, width, embedding_dim, g, p)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level + 1):
                blocks.append(ResidualBlock(width + skip_widths.pop(), w, embedding_dim, g, p))
                width = w
            self.up.append(blocks)
            self.upsample.append(nn.Upsample(scale_factor=2, mode="nearest") if level > 0 else nn.Identity())
        self.head = nn.Sequential(nn.GroupNorm(g, width), nn.SiLU(), nn.Conv2d(width, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.Tensor) or t.dtype == torch.bool:
            got = f"dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"t must be a tensor of integer timesteps, one per image, got {got}: for one "
                             "timestep for all, pass torch.full((len(x),), t)")
        if x.shape[1:] != (1, 28, 28) or t.shape != (x.shape[0],):
            raise ValueError(f"expected x of shape (B, 1, 28, 28) and t of shape (B,), got {tuple(x.shape)} "
                             f"and {tuple(t.shape)}")
        if len(x) == 0:
            raise ValueError("empty batch: x has shape (0, 1, 28, 28); pass at least one image")
        device = x.device.type
        weights = self.stem.weight.dtype
        compiling = getattr(torch.compiler, "is_compiling", lambda: False)()  # no graph break for a check
        if (torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16
                and not self.bf16_where_emulated and not _native_bf16(str(x.device))):
            if not compiling:
                warnings.warn(f"bf16 autocast on {device}, where bfloat16 is not native (genmodels.train."
                              "native_bf16): the U-Net computes in float32, which is faster there than "
                              "emulated bf16 (benchmarks/bf16_isa.py)", RuntimeWarning,
                              stacklevel=_stacklevel_outside_the_libraries())
            with torch.autocast(device, enabled=False):
                return self.forward(x.to(weights) if x.is_floating_point() else x, t)
        if x.dtype != weights and not torch.is_autocast_enabled(device):
            uint8 = x.dtype == torch.uint8
            fix = "x.float().div(127.5).sub(1), which maps 0..255 to [-1, 1]" if uint8 else f"x.to({weights})"
            raise ValueError(f"x has dtype {x.dtype}, the U-Net's weights {weights}: convert it with {fix}")
        invalid = (t < 0) | (t != t.round())  # the schedule's own range, 1..T, is checked by its callers
        if not compiling and invalid.any():
            raise ValueError(f"t must hold non-negative integer timesteps (1..T of the noise schedule), got "
                             f"{t[invalid][:3].tolist()}; draw them with NoiseSchedule.sample_t")
        embedding = self.embed(timestep_embedding(t, self.config.channels))
        h = self.stem(x)
        skips = [h]
        for blocks, downsample in zip(self.down, self.downsample, strict=True):
            for block in blocks:
                h = block(h, embedding)
                skips.append(h)
            if not isinstance(downsample, nn.Identity):
                h = downsample(h)
                skips.append(h)
        h = self.middle2(self.attention(self.middle1(h, embedding)), embedding)
        for blocks, upsample in zip(self.up, self.upsample, strict=True):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            h = upsample(h)
        return self.head(h)


def recorded_parameterization(checkpoint: dict) -> tuple[str, dict]:
    """What a diffusion checkpoint's network predicts and on which noise schedule, as its record says:
    (prediction, noise_schedule); a record without them is Ho et al.'s, ("eps", linear with T = 1000)."""
    record = (checkpoint.get("extra") or {}).get("record") or {}
    return record.get("prediction", "eps"), record.get("noise_schedule", {"kind": "linear", "T": 1000})


def load_unet(
    path, map_location: str | torch.device | None = "cpu", raw: bool = False
) -> tuple[UNet, dict]:
    """A U-Net built from the config stored in a checkpoint, with its weights, in eval mode on
    ``map_location``: (model, checkpoint).

    The samplers take an epsilon-network on the noise schedule they are given. A checkpoint whose
    record says its network predicts something else (v), or was trained on another schedule than Ho
    et al.'s, is refused unless ``raw``: load it with :func:`genmodels.diffusion.load_ddpm`, which
    returns it as an epsilon-network with its own schedule."""
    model, checkpoint = load_model(path, UNet, UNetConfig, map_location)
    prediction, schedule = recorded_parameterization(checkpoint)
    if not raw and (prediction != "eps" or (schedule.get("kind"), schedule.get("T")) != ("linear", 1000)):
        raise ValueError(
            f"{path}: its network predicts {prediction!r} on the noise schedule {schedule}, not the noise "
            "eps on Ho et al.'s linear schedule that a sampler given NoiseSchedule() would assume (its "
            "samples would be far outside [-1, 1], without an error): load it with "
            "genmodels.diffusion.load_ddpm, which returns it as an epsilon-network with its schedule, or "
            "pass raw=True for the bare network")
    return model, checkpoint
