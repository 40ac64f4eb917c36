"""Sampling the published DDPM as the evaluation notebook samples it, for the benchmark scripts that
measure what its row would score under other settings (benchmarks/bf16_quality.py,
benchmarks/sampler_noise.py)."""

from __future__ import annotations

import contextlib
import time

import torch

from genmodels.diffusion import dpm_solver_2m_sample, trailing_timesteps

CHUNK = 100  # the evaluation notebook's
SAMPLER = "SDE-DPM-Solver++(2M), trailing timesteps"  # the evaluation notebook's


def sample(model, schedule, n: int, calls: int, seed: int, *, eta: float | None = None, bf16: bool = True,
           device: torch.device | None = None) -> tuple[torch.Tensor, float]:
    """n images on [0, 1] drawn as the evaluation draws them (SDE-DPM-Solver++(2M) on trailing
    timesteps, chunks of 100, one generator seeded with ``seed``, bf16 autocast unless ``bf16`` is
    False), with the sampler's noise ``eta`` (None: the evaluation's, 1), and the seconds they took."""
    device = device if device is not None else torch.device("cpu")
    generator, chunks = torch.Generator(device=device).manual_seed(seed), []
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        precision = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with precision, torch.no_grad():
            x = dpm_solver_2m_sample(model, schedule, (min(CHUNK, n - start), 1, 28, 28),
                                     timesteps=trailing_timesteps(schedule.T, calls), stochastic=True,
                                     eta=eta, generator=generator, device=device)
        chunks.append(((x.float().cpu() + 1) / 2).clamp(0, 1))  # [-1, 1] -> [0, 1], as the evaluation
    return torch.cat(chunks), time.perf_counter() - started
