"""Langevin dynamics and score matching: sampling with nothing but the score grad_x log p(x).

Step-size convention: ``step_size`` is the book's eta in the Langevin step

    x_{k+1} = x_k + eta grad_x log p(x_k) + sqrt(2 eta) xi_k,    xi_k ~ N(0, I),

except in ``annealed_langevin_sample``, which follows Song & Ermon (2019), Algorithm 1: there
``step_size`` is their epsilon, and a step at level i is x + alpha_i / 2 s + sqrt(alpha_i) z, that is
eta = alpha_i / 2. Particles are a batch (N, D); every chain runs independently of the others.

Score functions are called as ``score(x)`` (or ``score_at_level(x, i)``) and are checked once, on
their first call: a wrong shape or a NaN there raises ValueError. Their outputs are detached, so a
learned score keeps no graph across steps, while a score computed by autograd still works.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch

from genmodels.diffusion import EpsModel, NoiseSchedule, _check_timesteps, _check_whole, _shaped_like, extract
from genmodels.distributions import sum_flat

__all__ = [
    "annealed_langevin_sample",
    "dsm_loss",
    "langevin_sample",
    "mala_sample",
    "score_from_eps",
]

Score = Callable[[torch.Tensor], torch.Tensor]


def _check_positive(value: float, name: str, hint: str) -> None:
    if not 0 < value < math.inf:  # also refuses NaN
        raise ValueError(f"{name} must be positive, got {value}: {hint}")


def _checked_output(value: torch.Tensor, shape: tuple[int, ...], name: str, what: str) -> torch.Tensor:
    """``value``, after refusing a wrong shape, a NaN or an infinity: the check on a function's first
    call."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} returned {got} at the starting particles x0; it must return {what}, "
                         f"a tensor of shape {shape}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} returned NaN or infinite values at the starting particles x0: make {name} "
                         "finite there, "
                         "or start the particles where the density is positive")
    return value


def _langevin_step(
    x: torch.Tensor, score_x: torch.Tensor, eta: float, generator: torch.Generator | None
) -> torch.Tensor:
    """x + eta s(x) + sqrt(2 eta) xi, xi ~ N(0, I): one step of the discretized Langevin SDE, (N, D)."""
    xi = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + eta * score_x + math.sqrt(2 * eta) * xi


def langevin_sample(
    score: Score,
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    trajectory_every: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Unadjusted Langevin from x0 (N, D): x_K (N, D), or (x_K, [x_0, x_k every trajectory_every steps])."""
    _check_positive(step_size, "step_size", "it is eta in x + eta score(x) + sqrt(2 eta) xi; try 1e-2")
    _check_whole("n_steps", n_steps, 1, "the chain needs at least one step")
    _check_whole("trajectory_every", trajectory_every, 0, "0 records no trajectory, k every k-th state")
    x = x0
    trajectory = [x0.clone()] if trajectory_every else []
    for k in range(1, n_steps + 1):
        score_x = score(x)
        if k == 1:
            _checked_output(score_x, tuple(x0.shape), "score", "grad_x log p(x), one gradient per particle")
        x = _langevin_step(x, score_x.detach(), step_size, generator)
        if trajectory_every and k % trajectory_every == 0:
            trajectory.append(x.clone())
    if not torch.isfinite(x).all():
        lost = int((~torch.isfinite(x)).reshape(len(x), -1).any(1).sum())  # particles, whatever their shape
        warnings.warn(f"the chain diverged: {lost} of {len(x)} "
                      f"particles are NaN or infinite after {n_steps} steps of size {step_size}. On a "
                      "Gaussian the chain is stable only while step_size < 2 / (the largest eigenvalue "
                      "of the precision): take a smaller step", RuntimeWarning, stacklevel=2)
    return (x, trajectory) if trajectory_every else x


def _log_proposal(y: torch.Tensor, x: torch.Tensor, score_x: torch.Tensor, eta: float) -> torch.Tensor:
    """log q(y | x) up to a constant, q(y | x) = N(y; x + eta s(x), 2 eta I): (N,)."""
    return -sum_flat((y - x - eta * score_x) ** 2) / (4 * eta)


def mala_sample(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    score: Score,
    x0: torch.Tensor,
    step_size: float,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, float]:
    """Metropolis-adjusted Langevin from x0 (N, D): x_K (N, D) and the fraction of proposals accepted."""
    _check_positive(step_size, "step_size", "it is eta in the proposal x + eta score(x) + sqrt(2 eta) xi")
    _check_whole("n_steps", n_steps, 1, "the chain needs at least one step")
    n = len(x0)
    x = x0
    log_p_x = _checked_output(log_prob(x), (n,), "log_prob", "log p(x), one number per particle").detach()
    score_x = _checked_output(score(x), tuple(x0.shape), "score",
                              "grad_x log p(x), one gradient per particle").detach()
    accepted = 0
    for _ in range(n_steps):
        y = _langevin_step(x, score_x, step_size, generator)  # the proposal y ~ q(y | x)
        log_p_y, score_y = log_prob(y).detach(), score(y).detach()
        # log of p(y) q(x | y) / (p(x) q(y | x)); accept with probability min(1, that ratio)
        log_ratio = (log_p_y + _log_proposal(x, y, score_y, step_size)
                     - log_p_x - _log_proposal(y, x, score_x, step_size))
        u = torch.rand(n, generator=generator, dtype=log_ratio.dtype, device=log_ratio.device)
        accept = torch.log(u) < log_ratio  # (N,); a NaN ratio rejects
        keep = accept.reshape(n, *([1] * (x.ndim - 1)))
        x, score_x = torch.where(keep, y, x), torch.where(keep, score_y, score_x)
        log_p_x = torch.where(accept, log_p_y, log_p_x)
        accepted += int(accept.sum())
    return x, accepted / (n * n_steps)


def _checked_sigmas(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    """The noise levels as floats, refusing an empty, non-positive or not strictly decreasing ladder."""
    if isinstance(sigmas, (int, float)) or (isinstance(sigmas, torch.Tensor) and sigmas.ndim == 0):
        raise ValueError(f"sigmas must be a sequence of noise levels, got the single number {float(sigmas)}: "
                         "pass sigma_1 > ... > sigma_L, or [sigma] for plain Langevin at one level")
    sigmas = [float(sigma) for sigma in sigmas]
    if not sigmas:
        raise ValueError("sigmas is empty: pass the noise levels sigma_1 > ... > sigma_L > 0, e.g. a "
                         "geometric sequence from about the data's diameter down to its finest scale")
    if min(sigmas) <= 0:
        raise ValueError(f"sigmas must all be positive, got {sigmas}: every level adds N(0, sigma^2 I)")
    if any(later >= earlier for earlier, later in pairwise(sigmas)):
        raise ValueError(f"sigmas must be strictly decreasing, got {sigmas}: sort them from the "
                         "largest noise level to the smallest, without repeats")
    return sigmas


def annealed_langevin_sample(
    score_at_level: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    sigmas: Sequence[float] | torch.Tensor,
    step_size: float,
    steps_per_level: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Song & Ermon (2019), Algorithm 1: Langevin at each sigma_i in turn, from x0 (N, D); returns (N, D).

    ``score_at_level(x, i)`` is the score of the data convolved with N(0, sigma_i^2 I), i = 0..L-1.
    """
    sigmas = _checked_sigmas(sigmas)
    _check_positive(step_size, "step_size", "it is Song & Ermon's epsilon, the step size at the "
                    "smallest sigma; they use 2e-5 for images")
    _check_whole("steps_per_level", steps_per_level, 1, "the chain needs at least one step")
    x = x0
    for i, sigma in enumerate(sigmas):
        alpha = step_size * sigma**2 / sigmas[-1] ** 2  # alpha_i = epsilon sigma_i^2 / sigma_L^2
        for k in range(steps_per_level):
            score_x = score_at_level(x, i)
            if i == 0 and k == 0:
                _checked_output(score_x, tuple(x0.shape), "score_at_level",
                                "the score of the noised data, one gradient per particle")
            # x + alpha_i / 2 s + sqrt(alpha_i) z
            x = _langevin_step(x, score_x.detach(), alpha / 2, generator)
    return x


def dsm_loss(
    score_model: Score, x: torch.Tensor, sigma: float, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Denoising score matching at one noise level, weighted by sigma^2 (Song & Ermon): (B, ...) -> (B,)."""
    _check_positive(sigma, "sigma", "denoising score matching needs noise; use a small sigma, not zero")
    if noise is None:
        noise = torch.randn_like(x)
    x_tilde = x + sigma * noise  # a draw from q_sigma(x~ | x) = N(x, sigma^2 I)
    # Vincent (2011): grad log q_sigma(x~ | x) = -(x~ - x) / sigma^2 = -z / sigma is the regression target
    # sigma^2 / 2 || s(x~) + z / sigma ||^2
    score = _shaped_like(x, score_model(x_tilde), "score_model", "x", "one gradient per element of x")
    return sigma**2 / 2 * sum_flat((score + noise / sigma) ** 2)


def score_from_eps(
    eps_model: EpsModel, schedule: NoiseSchedule
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """score(x_t, t) = -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t), for x_t (B, ...) and t (B,) in 1..T."""

    def score(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _check_timesteps(schedule, t, xt)
        # eps* = -sqrt(1 - alpha_bar_t) grad log q_t(x_t), the book's ddpm-score equation
        return -eps_model(xt, t) / extract(schedule.sqrt_one_minus_alpha_bar, t, xt.shape)

    return score
