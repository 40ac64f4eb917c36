"""Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020) and DDIM sampling (Song et al. 2021).

Time-index convention: the paper's t runs 1..T and so does the code. Every schedule tensor has
T + 1 entries, and entry 0 describes the data itself (beta_0 = 0, alpha_bar_0 = 1), so that
``schedule.alpha_bar[t]`` is the paper's alpha_bar_t for every t. The functions below take t as an
integer tensor (B,), one timestep in 1..T per example, and refuse anything else.

Models are called as ``model(x_t, t)`` and predict the noise epsilon (the paper's epsilon_theta).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal

import torch

from genmodels.data import GaussianMixture
from genmodels.distributions import mean_flat, normal_kl, normal_log_prob, sum_flat
from genmodels.unet import load_unet, recorded_parameterization

__all__ = [
    "NoiseSchedule",
    "ancestral_sample",
    "ddim_sample",
    "EpsilonFromV",
    "ddim_timesteps",
    "diffused_mixture",
    "discretized_gaussian_log_likelihood",
    "dpm_solver_2m_sample",
    "extract",
    "gaussian_data_eps",
    "load_ddpm",
    "logsnr_timesteps",
    "loss_simple",
    "mixture_reverse_conditional",
    "min_snr_weight",
    "p_mean_variance",
    "predict_eps_from_v",
    "predict_x0",
    "predict_x0_from_v",
    "prior_term",
    "q_posterior",
    "q_sample",
    "snr",
    "trailing_timesteps",
    "v_target",
    "vlb_terms",
]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def extract(values: torch.Tensor, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """values[t] for a batch of timesteps t (B,), shaped (B, 1, ..., 1) to broadcast against ``shape``."""
    return values.to(t.device)[t].reshape(len(t), *([1] * (len(shape) - 1)))


class NoiseSchedule:
    """The variances beta_1..beta_T of the forward process and every quantity derived from them.

    Computed in float64 and stored as float32 (``alpha_bar`` is called ``alphas_cumprod`` in other
    libraries).
    """

    def __init__(
        self,
        T: int = 1000,
        kind: Literal["linear", "cosine"] = "linear",
        beta_1: float | None = None,
        beta_T: float | None = None,
    ):
        _check_whole("T", T, 2, "the number of noising steps (Ho et al. use T = 1000)")
        if kind == "cosine" and (beta_1, beta_T) != (None, None):
            raise ValueError(f"the cosine schedule has no beta_1 or beta_T to set (got {beta_1}, {beta_T}): "
                             "its betas follow from alpha_bar_t = f(t) / f(0); leave them out, or use "
                             "kind='linear'")
        if kind == "linear":  # Ho et al. (2020), Sec. 4: beta_1 = 1e-4, beta_T = 0.02 unless given
            beta_1, beta_T = 1e-4 if beta_1 is None else beta_1, 0.02 if beta_T is None else beta_T
            for name, beta in (("beta_1", beta_1), ("beta_T", beta_T)):
                if not 0 < beta < 1:  # so that alpha_bar_t is positive and falls with t
                    raise ValueError(f"{name} = {beta} lies outside (0, 1): every step must keep some "
                                     "signal and add some noise; Ho et al. use beta_1 = 1e-4, beta_T = 0.02")
            betas = torch.linspace(beta_1, beta_T, T, dtype=torch.float64)
        elif kind == "cosine":  # Nichol & Dhariwal (2021), Eq. 17, with s = 0.008
            s = 0.008
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"unknown schedule {kind!r}: choose 'linear' or 'cosine'")
        self.T, self.kind = T, kind
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # index 0: the data, t = 0
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])

        # the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
        self.beta = betas.float()
        self.alpha = alphas.float()
        self.alpha_bar = alpha_bar.float()
        self.alpha_bar_prev = alpha_bar_prev.float()
        # calculations for q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
        self.sqrt_alpha_bar = alpha_bar.sqrt().float()
        self.sqrt_one_minus_alpha_bar = (1 - alpha_bar).sqrt().float()
        # calculations for the posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde, beta_tilde I), Eqs. 6-7
        beta_tilde = betas * (1 - alpha_bar_prev) / (1 - alpha_bar).clamp(min=1e-20)
        self.beta_tilde = beta_tilde.float()
        # beta_tilde_1 = 0 (x_0 is known given x_1 and x_0): its log uses beta_tilde_2, as Ho et al.'s code
        clipped = beta_tilde.clone()
        clipped[:2] = beta_tilde[2]
        self.log_beta_tilde_clipped = torch.log(clipped).float()
        self.posterior_mean_coef_x0 = (
            betas * alpha_bar_prev.sqrt() / (1 - alpha_bar).clamp(min=1e-20)
        ).float()
        self.posterior_mean_coef_xt = (
            (1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar).clamp(min=1e-20)
        ).float()

    def sample_t(
        self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """t ~ Uniform({1, ..., T}), one per example: (B,) long."""
        return torch.randint(1, self.T + 1, (batch,), device=device, generator=generator)


def _check_timesteps(schedule: NoiseSchedule, t: torch.Tensor, x: torch.Tensor) -> None:
    """Raise unless t is an integer tensor (B,) holding one timestep in 1..T per example of x (B, ...)."""
    if not isinstance(t, torch.Tensor) or t.shape != (len(x),):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t must be a tensor of shape (B,) = ({len(x)},), one timestep per example, got "
                         f"{got}; for one timestep for all, pass torch.full(({len(x)},), t)")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"t must hold integer timesteps, got dtype {t.dtype}: pass t.long() if its "
                         "values are whole numbers")
    if ((t < 1) | (t > schedule.T)).any():  # t = -1 would index alpha_bar_T, t = 0 the data itself
        raise ValueError(f"t must lie in 1..T = 1..{schedule.T}, got values from {t.min().item()} to "
                         f"{t.max().item()}; draw it with schedule.sample_t")


def _predict(model: EpsModel, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """model(x, t), refusing an output not shaped like x: one of shape (B, 1, 1, 1) or (1, ...)
    would broadcast through every formula below and give numbers without an error."""
    return _shaped_like(x, model(x, t), "the model", "x_t",
                        "its prediction (of the noise, or of v) for every element of x_t")


def _shaped_like(x: torch.Tensor, out: torch.Tensor, who: str, of: str, what: str) -> torch.Tensor:
    """``out``, after refusing one that is not a tensor shaped like ``x`` (``who`` returned it for the
    input called ``of``; ``what`` it must return)."""
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{who} returned {got} for {of} of shape {tuple(x.shape)}: it must return {what}, "
                         f"shape {tuple(x.shape)}")
    return out


def _device_of(model: EpsModel, device: torch.device | str | None) -> torch.device | str:
    """Where a sampler draws its noise: ``device`` if given, else where the model's weights are (a
    network on a GPU samples there without being told), else the CPU."""
    if device is not None:
        return device
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return parameter.device if parameter is not None else "cpu"


def _check_whole(name: str, value: int, least: int, meaning: str) -> None:
    """Refuse a count that is not a whole number (a float, a bool) or is below ``least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be a whole number, at least {least}, got {value!r}: {meaning}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, a draw from q(x_t | x_0) (Eq. 4)."""
    _check_timesteps(schedule, t, x0)
    if not x0.dtype.is_floating_point:
        raise ValueError(f"x0 has dtype {x0.dtype}: diffusion works on float images in [-1, 1]; for "
                         "uint8 pixels pass x.float() / 127.5 - 1")
    if noise is None:
        noise = torch.randn_like(x0)
    return (
        extract(schedule.sqrt_alpha_bar, t, x0.shape) * x0
        + extract(schedule.sqrt_one_minus_alpha_bar, t, x0.shape) * noise
    )


def q_posterior(
    schedule: NoiseSchedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and (clipped) log-variance of q(x_{t-1} | x_t, x_0) (Eqs. 6-7), for t >= 1."""
    _check_timesteps(schedule, t, xt)
    mean = (
        extract(schedule.posterior_mean_coef_x0, t, xt.shape) * x0
        + extract(schedule.posterior_mean_coef_xt, t, xt.shape) * xt
    )
    return (
        mean,
        extract(schedule.beta_tilde, t, xt.shape),
        extract(schedule.log_beta_tilde_clipped, t, xt.shape),
    )


def predict_x0(schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): Eq. 4 solved for x_0."""
    _check_timesteps(schedule, t, xt)
    return (xt - extract(schedule.sqrt_one_minus_alpha_bar, t, xt.shape) * eps) / extract(
        schedule.sqrt_alpha_bar, t, xt.shape
    )


def p_mean_variance(
    model: EpsModel,
    schedule: NoiseSchedule,
    xt: torch.Tensor,
    t: torch.Tensor,
    variance: Literal["beta", "beta_tilde"] = "beta",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and log-variance of p_theta(x_{t-1} | x_t), with the mean from eps (Eq. 11):

    mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t),
    and sigma_t^2 = beta_t (Ho et al.'s choice for sampling) or beta_tilde_t.
    """
    _check_timesteps(schedule, t, xt)
    _check_choice("variance", variance, ("beta", "beta_tilde"))
    eps = _predict(model, xt, t)
    mean = (
        xt
        - extract(schedule.beta, t, xt.shape) / extract(schedule.sqrt_one_minus_alpha_bar, t, xt.shape) * eps
    ) / extract(schedule.alpha, t, xt.shape).sqrt()
    if variance == "beta":
        var = extract(schedule.beta, t, xt.shape)
        return mean, var, torch.log(var)
    return (
        mean,
        extract(schedule.beta_tilde, t, xt.shape),
        extract(schedule.log_beta_tilde_clipped, t, xt.shape),
    )


def loss_simple(
    model: EpsModel,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    prediction: Literal["eps", "v"] = "eps",
) -> torch.Tensor:
    """Algorithm 1, line 5: ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2,
    averaged over pixels, per example (B,). With ``prediction="v"`` the network predicts
    v = alpha_t eps - sigma_t x_0 instead (:func:`v_target`) and the loss is ||v - v_theta||^2, which
    is the epsilon loss of the same network (:class:`EpsilonFromV`) divided by alpha_bar_t."""
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
    if t is None:
        t = schedule.sample_t(len(x0), device=x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    target = noise if prediction == "eps" else v_target(schedule, x0, t, noise)
    return mean_flat((target - _predict(model, q_sample(schedule, x0, t, noise), t).float()) ** 2)


@torch.no_grad()
def ancestral_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    trajectory_every: int = 0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Algorithm 2: x_T ~ N(0, I); for t = T..1: x_{t-1} = mu_theta(x_t, t) + sigma_t z, z = 0 at t = 1.

    Returns x_0 and, if ``trajectory_every`` > 0, the states x_t every that many steps.
    """
    _check_whole("trajectory_every", trajectory_every, 0, "0 records no trajectory, k every k-th state")
    device = _device_of(model, device)
    x = torch.randn(shape, generator=generator, device=device)
    trajectory = [x.cpu()] if trajectory_every else []
    for step in range(schedule.T, 0, -1):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        mean, _, log_variance = p_mean_variance(model, schedule, x, t)
        z = (
            torch.randn(shape, generator=generator, device=device)
            if step > 1
            else torch.zeros(shape, device=device)
        )
        x = mean + (0.5 * log_variance).exp() * z
        if trajectory_every and (step - 1) % trajectory_every == 0:
            trajectory.append(x.cpu())
    return x, trajectory


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` evenly spaced timesteps from T down to 1 (T and 1 included when steps >= 2; one step
    starts where sampling starts, at T, and jumps to x_0)."""
    _check_whole("steps", steps, 1, f"DDIM takes between 1 and T = {T} steps")
    if steps > T:
        raise ValueError(f"DDIM needs between 1 and T = {T} steps, got {steps}")
    if steps == 1:
        return [T]
    return sorted({round(v) for v in torch.linspace(1, T, steps, dtype=torch.float64).tolist()}, reverse=True)


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12) on a subsequence of ``steps`` timesteps; eta = 0 is deterministic:

    x_s = sqrt(alpha_bar_s) x0_pred + sqrt(1 - alpha_bar_s - sigma^2) eps_theta + sigma z.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: the forward posterior's noise, "
                         f"Algorithm 2 with sigma_t^2 = beta_tilde_t), got {eta}")
    device = _device_of(model, device)
    x = torch.randn(shape, generator=generator, device=device)
    times = ddim_timesteps(schedule.T, steps)
    for current, following in zip(times, [*times[1:], 0], strict=True):
        t = torch.full((shape[0],), current, device=device, dtype=torch.long)
        eps = _predict(model, x, t)
        x0 = predict_x0(schedule, x, t, eps)
        ab_t, ab_s = schedule.alpha_bar[current].item(), schedule.alpha_bar[following].item()
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
        if sigma > 0 and following > 0:
            x = x + sigma * torch.randn(shape, generator=generator, device=device)
    return x


def logsnr_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """``steps`` distinct timesteps from T down to 1 whose log-SNR lambda_t = log(alpha_t / sigma_t) is
    evenly spaced (Lu et al. 2022's recommended spacing), each rounded to the nearest integer t.

    Where lambda falls by more than a grid step within one timestep, neighbouring targets round to the
    same t: the cosine schedule's last step, whose beta is clipped at 0.999, spans nearly a quarter of
    its whole lambda range, so that 20 targets round to only 17 timesteps. Each such target takes the next
    free timestep below instead, so that a sampler given ``steps`` makes ``steps`` network calls; its
    first steps are then uneven in lambda, the rest evenly spaced as before."""
    if not 2 <= steps <= schedule.T:
        raise ValueError(f"steps must lie in 2..T = 2..{schedule.T}, got {steps}")
    alpha_bar = schedule.alpha_bar.double()[1:]  # t = 1..T
    lambdas = 0.5 * torch.log(alpha_bar / (1 - alpha_bar))  # decreasing in t
    targets = torch.linspace(lambdas[-1].item(), lambdas[0].item(), steps, dtype=torch.float64)
    nearest = (lambdas[None, :] - targets[:, None]).abs().argmin(dim=1) + 1  # T first, 1 last
    times: list[int] = []
    for i, t in enumerate(nearest.tolist()):
        below = steps - 1 - i  # timesteps still to place under this one, each at least 1
        times.append(max(min(t, times[-1] - 1) if times else t, below + 1))
    return times


def trailing_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` timesteps T, T - T/steps, ..., T/steps (rounded): evenly spaced like
    :func:`ddim_timesteps`, but ending a whole stride above 0 rather than at t = 1, so that every
    step, the last included, covers the same stretch of time (the "trailing" spacing of Lin et al.
    2024, Table 2)."""
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in 1..T = 1..{T}, got {steps}")
    return [round(T - i * T / steps) for i in range(steps)]


@torch.no_grad()
def dpm_solver_2m_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    steps: int | None = None,
    timesteps: list[int] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clip_x0: bool = False,
    stochastic: bool = False,
    eta: float | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): the probability-flow ODE solved in log-SNR time
    lambda = log(alpha / sigma), with the data prediction x0_theta, to second order, one network
    call per step. From t to s with h = lambda_s - lambda_t:

    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D,  D = (1 + 1/(2r)) x0_t - (1/(2r)) x0_prev,

    r = h_prev / h; the first step uses D = x0_t (this is DDIM, eta = 0) and the last one, to the data
    (sigma = 0), lands on x0_t. ``timesteps`` (decreasing, in 1..T) default to ``steps`` of them
    evenly spaced in lambda (:func:`logsnr_timesteps`) where the schedule allows it, so that r = 1 and
    no step extrapolates far.
    ``clip_x0`` clips each data prediction to [-1, 1], the range of the images (Lu et al.'s
    thresholding in its simplest form): at large t an epsilon-network's x0 is its error amplified by
    sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t).

    ``stochastic`` solves the reverse SDE instead (SDE-DPM-Solver++(2M), in Lu et al. 2022's data
    prediction): with the same D,

    x_s = (sigma_s / sigma_t) e^{-h} x_t + alpha_s (1 - e^{-2h}) D + sigma_s sqrt(1 - e^{-2h}) z.

    Its first-order step (D = x0_t) is the posterior q(x_s | x_t, x0 = x0_t) sampled, which is DDIM
    with eta = 1: the second-order term corrects Algorithm 2's jump with the previous prediction, at
    no extra network call.

    ``eta`` (stochastic only; 1 when not given) sets the fresh noise: for small steps, eta times the
    posterior's variance (sigma_s^2 (1 - e^{-2 eta h}) against its sigma_s^2 (1 - e^{-2h})):

    x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1 + eta) h}) D
          + sigma_s sqrt(1 - e^{-2 eta h}) z,

    which takes q(x_t | x0) to q(x_s | x0) for every eta >= 0 when D = x0 (0: the ODE step above, with
    a draw of noise it multiplies by zero; above 1: more noise than Algorithm 2 puts back, so more of
    the network's earlier errors are washed out, at a larger error per step).
    """
    if eta is not None and not stochastic:
        raise ValueError(f"eta sets the noise of the stochastic solver, got eta={eta} without "
                         "stochastic=True: pass stochastic=True with it (eta = 0 is the ODE, which "
                         "stochastic=False solves without drawing noise)")
    if eta is None:
        eta = 1.0
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0 (1: the reverse SDE, 0: the ODE), got {eta}")
    if steps is not None and timesteps is not None:
        raise ValueError(f"pass steps or timesteps, not both (got steps={steps} and timesteps={timesteps}): "
                         "timesteps sets the steps itself")
    if timesteps is None:
        times = logsnr_timesteps(schedule, 20 if steps is None else steps)
    else:  # a list, or a tensor or array of integers
        times = timesteps.tolist() if hasattr(timesteps, "tolist") else list(timesteps)
    if (not times or any(not isinstance(t, numbers.Integral) or not 1 <= t <= schedule.T for t in times)
            or sorted(set(times), reverse=True) != times):
        raise ValueError(f"timesteps must decrease strictly within 1..T = 1..{schedule.T}, got {times}")
    alpha_bar = schedule.alpha_bar.double()
    device = _device_of(model, device)
    x = torch.randn(shape, generator=generator, device=device)
    previous_x0, previous_h = None, None
    for current, following in zip(times, [*times[1:], 0], strict=True):
        t = torch.full((shape[0],), current, device=device, dtype=torch.long)
        x0 = predict_x0(schedule, x, t, _predict(model, x, t))
        if clip_x0:
            x0 = x0.clamp(-1, 1)
        if following == 0:  # sigma_s = 0: e^{-h} = 0 and x_s = alpha_s D = x0 (first order at the end)
            return x0
        alpha_t, sigma_t = alpha_bar[current].sqrt().item(), (1 - alpha_bar[current]).sqrt().item()
        alpha_s, sigma_s = alpha_bar[following].sqrt().item(), (1 - alpha_bar[following]).sqrt().item()
        h = math.log(alpha_s / sigma_s) - math.log(alpha_t / sigma_t)
        if previous_x0 is None:
            d = x0
        else:
            r = previous_h / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
        if stochastic:
            noise = torch.randn(shape, generator=generator, device=device)
            x = (sigma_s / sigma_t) * math.exp(-eta * h) * x - alpha_s * math.expm1(-(1 + eta) * h) * d \
                + sigma_s * math.sqrt(-math.expm1(-2 * eta * h)) * noise
        else:
            x = (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d
        previous_x0, previous_h = x0, h
    return x


# --------------------------------------------------------------------------------------------
# Other parameterizations and loss weights (Salimans & Ho 2022; Hang et al. 2023). With
# alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t), x_t = alpha_t x_0 + sigma_t eps.


def snr(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """The signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of x_t, per timestep (B,)."""
    _check_timesteps(schedule, t, t)  # t itself stands for the batch it must match
    alpha_bar = schedule.alpha_bar.double()[t.cpu()]  # float64 on the CPU (Apple's MPS has none)
    return (alpha_bar / (1 - alpha_bar)).float().to(t.device)


def min_snr_weight(
    schedule: NoiseSchedule, t: torch.Tensor, gamma: float = 5.0, prediction: Literal["eps", "v"] = "eps"
) -> torch.Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023), (B,): it caps the weight each t gets in x0-space at
    gamma. ||eps - eps_theta||^2 = SNR_t ||x0 - x0_theta||^2 and ||v - v_theta||^2 = (SNR_t + 1)
    ||x0 - x0_theta||^2, so the weight is min(SNR_t, gamma) / SNR_t for epsilon-prediction and
    min(SNR_t, gamma) / (SNR_t + 1) for v-prediction.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive (Hang et al. use 5), got {gamma}")
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}")
    ratio = snr(schedule, t)
    return ratio.clamp(max=gamma) / (ratio if prediction == "eps" else ratio + 1)


def v_target(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = alpha_t eps - sigma_t x_0, the velocity a v-prediction network regresses on."""
    _check_timesteps(schedule, t, x0)
    return extract(schedule.sqrt_alpha_bar, t, x0.shape) * noise - extract(
        schedule.sqrt_one_minus_alpha_bar, t, x0.shape) * x0


def predict_x0_from_v(
    schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """x_0 = alpha_t x_t - sigma_t v (since alpha_t^2 + sigma_t^2 = 1)."""
    _check_timesteps(schedule, t, xt)
    return extract(schedule.sqrt_alpha_bar, t, xt.shape) * xt - extract(
        schedule.sqrt_one_minus_alpha_bar, t, xt.shape) * v


def predict_eps_from_v(
    schedule: NoiseSchedule, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """eps = sigma_t x_t + alpha_t v."""
    _check_timesteps(schedule, t, xt)
    return extract(schedule.sqrt_one_minus_alpha_bar, t, xt.shape) * xt + extract(
        schedule.sqrt_alpha_bar, t, xt.shape) * v


class EpsilonFromV(torch.nn.Module):
    """The epsilon-network that a v-network defines, eps_theta = sigma_t x_t + alpha_t v_theta, so that
    every sampler and bound written for epsilon-prediction takes a v-prediction network unchanged."""

    def __init__(self, network: torch.nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.network, self.schedule = network, schedule

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return predict_eps_from_v(self.schedule, xt, t, self.network(xt, t).float())


def load_ddpm(
    path, map_location: str | torch.device | None = "cpu"
) -> tuple[torch.nn.Module, NoiseSchedule, dict]:
    """A published diffusion model as (epsilon-network, its noise schedule, checkpoint). The record
    says what the network predicts (``prediction``: "eps" or "v", a v-network is wrapped in
    :class:`EpsilonFromV`) and its schedule (``noise_schedule``); a record without them is Ho et
    al.'s: epsilon-prediction on the linear schedule with T = 1000."""
    network, checkpoint = load_unet(path, map_location=map_location, raw=True)
    prediction, noise_schedule = recorded_parameterization(checkpoint)
    if prediction not in ("eps", "v"):
        raise ValueError(f"{path}: its record says the network predicts {prediction!r}; this version of "
                         "genmodels knows 'eps' and 'v' (upgrade genmodels)")
    schedule = NoiseSchedule(T=int(noise_schedule["T"]), kind=noise_schedule["kind"])
    model = network if prediction == "eps" else EpsilonFromV(network, schedule).eval()
    return model, schedule, checkpoint


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """log p(x) per element for data on 256 levels scaled to [-1, 1], under N(mean, e^{2 log_scale})
    integrated over each level's bin of width 2/255 (the edge bins extend to infinity); Ho et al. Eq. 13."""
    normal = torch.distributions.Normal(mean, log_scale.exp())
    upper = torch.where(x > 0.999, torch.ones_like(x), normal.cdf(x + 1 / 255))
    lower = torch.where(x < -0.999, torch.zeros_like(x), normal.cdf(x - 1 / 255))
    return torch.log((upper - lower).clamp(min=1e-12))


def vlb_terms(
    model: EpsModel,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    t: torch.Tensor,
    decoder: Literal["discretized", "gaussian"] = "discretized",
    variance: Literal["beta", "beta_tilde"] = "beta",
) -> torch.Tensor:
    """One term of the variational bound per example, in nats (B,), for the given t:

    t = 1: L_0 = -log p_theta(x_0 | x_1);
    t >= 2: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t));
    summing over t = 1..T and adding :func:`prior_term` L_T gives the bound on -log p(x_0) (Eq. 5).
    """
    _check_choice("decoder", decoder, ("discretized", "gaussian"))  # variance: p_mean_variance checks it
    if decoder == "discretized":
        low, high = torch.aminmax(x0)
        if low < -1 - 1e-6 or high > 1 + 1e-6:
            raise ValueError(f"the discretized decoder takes images on 256 levels in [-1, 1], got values in "
                             f"[{low.item():.3g}, {high.item():.3g}]: map pixels in [0, 1] with x * 2 - 1, "
                             "and uint8 pixels with x / 127.5 - 1")
    xt = q_sample(schedule, x0, t)
    true_mean, _, true_log_variance = q_posterior(schedule, x0, xt, t)
    mean, _, log_variance = p_mean_variance(model, schedule, xt, t, variance=variance)
    kl = sum_flat(normal_kl(true_mean, true_log_variance, mean, log_variance))
    if decoder == "discretized":
        nll_0 = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance)
    else:
        nll_0 = -normal_log_prob(x0, mean, log_variance)
    return torch.where(t == 1, sum_flat(nll_0), kl)


def prior_term(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) per example, in nats (B,):
    (1/2) [alpha_bar_T ||x_0||^2 - D (alpha_bar_T + log(1 - alpha_bar_T))], the Gaussian KL of
    :func:`normal_kl` summed over the D pixels. Computed in float64: with the cosine schedule
    1 - alpha_bar_T rounds to 1 in float32, which would make the term exactly 0."""
    if not x0.dtype.is_floating_point:
        raise ValueError(f"x0 has dtype {x0.dtype}: pass images as floats in [-1, 1] (uint8 pixels: "
                         "x.float() / 127.5 - 1); the KL is returned in x0's dtype")
    alpha_bar = schedule.alpha_bar[schedule.T].double()
    x = x0.detach().cpu().double().reshape(len(x0), -1)  # on the CPU: Apple's MPS has no float64
    kl = 0.5 * (alpha_bar * x.pow(2).sum(1) - x.shape[1] * (alpha_bar + torch.log1p(-alpha_bar)))
    return kl.to(device=x0.device, dtype=x0.dtype)


def gaussian_data_eps(schedule: NoiseSchedule, mean: torch.Tensor, covariance: torch.Tensor) -> EpsModel:
    """The optimal epsilon-predictor when the data is N(mean, covariance): E[eps | x_t].

    eps and x_t are jointly Gaussian with Cov(eps, x_t) = sqrt(1 - alpha_bar_t) I, so
    E[eps | x_t] = sqrt(1 - alpha_bar_t) C_t^{-1} (x_t - sqrt(alpha_bar_t) mean),
    C_t = alpha_bar_t covariance + (1 - alpha_bar_t) I. For data (B, D).
    """
    mean = mean.double()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())  # Sigma = U diag(lambda) U^T

    def model(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = schedule.alpha_bar.double()[t][:, None]  # (B, 1)
        centred = (xt.double() - ab.sqrt() * mean) @ eigenvectors  # in the eigenbasis of Sigma
        # C_t^{-1} is diagonal there: 1 / (alpha_bar_t lambda + 1 - alpha_bar_t)
        eps = (1 - ab).sqrt() * centred / (ab * eigenvalues + 1 - ab)
        return (eps @ eigenvectors.T).to(xt.dtype)

    return model


def _jump(schedule: NoiseSchedule, s: int, t: int) -> tuple[float, float]:
    """q(x_t | x_s) = N(a x_s, b I) for 0 <= s < t: a = sqrt(alpha_bar_t / alpha_bar_s), b = 1 - a^2."""
    if not 0 <= s < t <= schedule.T:
        raise ValueError(f"need 0 <= s < t <= T = {schedule.T}, got s = {s}, t = {t}")
    ratio = schedule.alpha_bar[t].double().item() / schedule.alpha_bar[s].double().item()
    return math.sqrt(ratio), 1.0 - ratio


def diffused_mixture(schedule: NoiseSchedule, t: int, data: GaussianMixture) -> GaussianMixture:
    """The marginal q_t(x_t) = E_{x_0 ~ q}[q(x_t | x_0)] of data distributed as a Gaussian mixture.

    Adding independent Gaussian noise to a Gaussian keeps it Gaussian, so each component
    N(mu_k, S_k) becomes N(sqrt(alpha_bar_t) mu_k, alpha_bar_t S_k + (1 - alpha_bar_t) I), with the
    same weight: the densities a DDPM's reverse process must pass through, exactly.
    """
    if t == 0:
        return data
    a, b = _jump(schedule, 0, t)
    eye = torch.eye(data.dim, dtype=torch.float64)
    return GaussianMixture(a * data.means, a**2 * data.covariances + b * eye, data.weights)


def mixture_reverse_conditional(
    schedule: NoiseSchedule, s: int, t: int, x_t: torch.Tensor, data: GaussianMixture
) -> GaussianMixture:
    """The true reverse conditional q(x_s | x_t), 0 <= s < t, of Gaussian-mixture data.

    Bayes' rule, q(x_s | x_t) = q(x_t | x_s) q_s(x_s) / q_t(x_t), with a mixture q_s and a Gaussian
    jump q(x_t | x_s) = N(a x_s, b I) gives a mixture again: each component's Gaussian posterior
    (precision S_k^-1 + a^2 / b I), weighted by w_k N(x_t; a mu_k, a^2 S_k + b I), how well that
    component explains x_t. For s = t - 1 (one small step) it is nearly one Gaussian, what the
    reverse process assumes; for s = 0 it is the posterior over images, as many-peaked as the data.
    """
    a, b = _jump(schedule, s, t)
    prior = diffused_mixture(schedule, s, data)
    x_t = torch.as_tensor(x_t, dtype=torch.float64)
    if x_t.numel() != prior.dim:
        raise ValueError(f"x_t must be one point of the data's {prior.dim} dimensions, "
                         f"got shape {tuple(x_t.shape)}")
    x_t = x_t.reshape(prior.dim)
    eye = torch.eye(prior.dim, dtype=torch.float64)
    precision = torch.linalg.inv(prior.covariances) + (a**2 / b) * eye  # (K, D, D)
    covariance = torch.linalg.inv(precision)
    information = torch.linalg.solve(prior.covariances, prior.means) + (a / b) * x_t  # (K, D)
    means = torch.einsum("kij,kj->ki", covariance, information)
    # component k explains x_t with w_k N(x_t; a mu_k, a^2 S_k + b I): its component of q_t
    weights = diffused_mixture(schedule, t, data)._component_log_probs(x_t[None])[0].softmax(0)
    return GaussianMixture(means, covariance, weights)
