"""Fast samplers and other parameterizations, checked against diffusers' schedulers (an independent
implementation, test-only) driven by the exact noise predictor of Gaussian data, and against
closed-form Bayes."""


import numpy as np
import pytest
import torch

from genmodels.diffusion import (
    NoiseSchedule,
    ddim_sample,
    dpm_solver_2m_sample,
    gaussian_data_eps,
    logsnr_timesteps,
    min_snr_weight,
    predict_eps_from_v,
    predict_x0,
    predict_x0_from_v,
    snr,
    trailing_timesteps,
    v_target,
)

try:
    import diffusers
except ImportError:  # only the tests that drive a diffusers scheduler need it
    diffusers = None
needs_diffusers = pytest.mark.skipif(diffusers is None,
                                     reason="diffusers (a test-only dependency) is not installed")

schedule = NoiseSchedule(T=1000)
MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COVARIANCE = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
exact_eps = gaussian_data_eps(schedule, MEAN, COVARIANCE)


def diffusers_scheduler(cls, **kwargs):
    """A diffusers scheduler on this schedule's betas (their timestep k is the book's t = k + 1)."""
    return cls(num_train_timesteps=schedule.T, trained_betas=schedule.beta[1:].double().numpy(), **kwargs)


@needs_diffusers
@pytest.mark.parametrize("steps", [5, 10, 20, 50])
def test_dpm_solver_2m_follows_diffusers_step_for_step(steps):
    reference = diffusers_scheduler(diffusers.DPMSolverMultistepScheduler, algorithm_type="dpmsolver++",
                                    solver_order=2, prediction_type="epsilon", timestep_spacing="linspace",
                                    final_sigmas_type="zero", lower_order_final=True)
    reference.set_timesteps(steps)
    timesteps = [int(k) + 1 for k in reference.timesteps]
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    x = x_T.clone()
    for k in reference.timesteps:
        t = torch.full((len(x),), int(k) + 1)
        x = reference.step(exact_eps(x, t), k, x).prev_sample
    ours = dpm_solver_2m_sample(exact_eps, schedule, (512, 2), timesteps=timesteps,
                                generator=torch.Generator().manual_seed(0))
    assert len(timesteps) == steps
    torch.testing.assert_close(ours, x.to(ours.dtype), atol=2e-4, rtol=2e-4)


@needs_diffusers
@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
@pytest.mark.parametrize("steps", [5, 20])
def test_sde_dpm_solver_2m_follows_diffusers_step_for_step(steps, spacing):
    """The stochastic variant against diffusers' "sde-dpmsolver++", both fed the same noise."""
    reference = diffusers_scheduler(diffusers.DPMSolverMultistepScheduler, algorithm_type="sde-dpmsolver++",
                                    solver_order=2, prediction_type="epsilon", timestep_spacing=spacing,
                                    final_sigmas_type="zero", lower_order_final=True)
    reference.set_timesteps(steps)
    timesteps = [int(k) + 1 for k in reference.timesteps]
    if spacing == "trailing":
        assert timesteps == trailing_timesteps(schedule.T, steps)
    draws = torch.Generator().manual_seed(0)  # x_T, then one draw per step but the last (sigma = 0)
    x = torch.randn(512, 2, generator=draws)
    noises = [torch.randn(512, 2, generator=draws) for _ in range(steps - 1)] + [torch.zeros(512, 2)]
    for k, noise in zip(reference.timesteps, noises, strict=True):
        t = torch.full((len(x),), int(k) + 1)
        x = reference.step(exact_eps(x, t), k, x, variance_noise=noise).prev_sample
    ours = dpm_solver_2m_sample(exact_eps, schedule, (512, 2), timesteps=timesteps, stochastic=True,
                                generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, x.to(ours.dtype), atol=2e-4, rtol=2e-4)


def test_the_first_stochastic_step_is_ddim_with_eta_1():
    """Without a previous data prediction the SDE step samples q(x_s | x_t, x0_t): DDIM, eta = 1."""
    first = dpm_solver_2m_sample(exact_eps, schedule, (64, 2), timesteps=[1000, 1], stochastic=True,
                                 generator=torch.Generator().manual_seed(2))
    ddim = ddim_sample(exact_eps, schedule, (64, 2), steps=2, eta=1.0,
                       generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, ddim)


def test_sde_dpm_solver_2m_samples_the_data_distribution_closer_than_ddim_with_eta_1():
    """Brute force: 20 stochastic steps from the exact predictor, against N(MEAN, COVARIANCE).
    (Measured, largest covariance error over 100,000 samples: 0.036 for SDE-DPM-Solver++(2M) on
    trailing timesteps, 0.167 for DDIM with eta = 1 on its evenly spaced ones, 0.46 for the SDE
    solver on those: their last step, from t = 54 to t = 1, is long in log-SNR and its r extreme.)"""
    def error(x: torch.Tensor) -> tuple[float, float]:
        x = x.double()
        return (x.mean(0) - MEAN).abs().max().item(), (torch.cov(x.T) - COVARIANCE).abs().max().item()

    sde_mean, sde_cov = error(dpm_solver_2m_sample(
        exact_eps, schedule, (100_000, 2), timesteps=trailing_timesteps(schedule.T, 20), stochastic=True,
        generator=torch.Generator().manual_seed(3)))
    ddim_mean, ddim_cov = error(ddim_sample(exact_eps, schedule, (100_000, 2), steps=20, eta=1.0,
                                            generator=torch.Generator().manual_seed(3)))
    assert sde_mean < 0.01 and ddim_mean < 0.01  # Monte Carlo error of the mean: about 0.002
    assert sde_cov < 0.05 and sde_cov < ddim_cov / 3, (sde_cov, ddim_cov)


def test_trailing_timesteps_end_a_whole_stride_above_zero():
    assert trailing_timesteps(1000, 4) == [1000, 750, 500, 250]
    assert trailing_timesteps(1000, 1000) == list(range(1000, 0, -1))
    with pytest.raises(ValueError, match="steps must lie in 1..T"):
        trailing_timesteps(1000, 0)


def test_dpm_solver_2m_converges_faster_than_ddim_along_the_same_paths():
    """Both solve the probability-flow ODE from the same x_T; 1000 DDIM steps are the reference path.
    (Measured: mean error 0.020 at 10 steps and 0.009 at 20, against DDIM's 0.120 and 0.059.)"""
    def draw(sampler, steps):
        return sampler(exact_eps, schedule, (1000, 2), steps=steps,
                       generator=torch.Generator().manual_seed(0)).double()

    reference = draw(ddim_sample, 1000)
    error = {(name, n): (draw(sampler, n) - reference).abs().mean().item()
             for name, sampler in (("2M", dpm_solver_2m_sample), ("DDIM", ddim_sample)) for n in (10, 20)}
    for n in (10, 20):
        assert error["2M", n] < error["DDIM", n] / 4, error
    assert error["2M", 20] < error["2M", 10] / 2 and error["DDIM", 20] > error["DDIM", 10] / 2.5, error
    torch.testing.assert_close(reference.mean(0), MEAN, atol=0.03, rtol=0)  # the reference is the data


def test_the_first_step_is_ddim():
    """Without a previous data prediction, the step is first order: DDIM with eta = 0."""
    first = dpm_solver_2m_sample(exact_eps, schedule, (64, 2), timesteps=[1000, 1],
                                 generator=torch.Generator().manual_seed(2))
    ddim = ddim_sample(exact_eps, schedule, (64, 2), steps=2, eta=0.0,
                       generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(first, ddim)


def test_logsnr_timesteps_are_evenly_spaced_in_log_snr():
    times = logsnr_timesteps(schedule, 10)
    assert times[0] == schedule.T and times[-1] == 1 and len(times) == 10
    alpha_bar = schedule.alpha_bar.double()[times]
    gaps = np.diff(0.5 * np.log((alpha_bar / (1 - alpha_bar)).numpy()))
    assert np.all(gaps > 0) and gaps.max() / gaps.min() < 1.5  # rounding t to integers moves them a little
    with pytest.raises(ValueError, match="steps must lie in 2..T"):
        logsnr_timesteps(schedule, 1)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_logsnr_timesteps_are_as_many_as_asked_even_where_lambda_falls_steeply(kind):
    noise = NoiseSchedule(T=1000, kind=kind)
    lambdas = log_snr(noise)  # lambdas[t], t = 0..T
    if kind == "cosine":  # beta clipped at 0.999: the last timestep spans a fifth of lambda's range
        assert lambdas[999] - lambdas[1000] > 0.2 * (lambdas[1] - lambdas[1000])
    for steps in (2, 3, 5, 10, 17, 20, 25, 50, 100, 999, 1000):
        times = logsnr_timesteps(noise, steps)
        assert len(times) == steps and times[0] == noise.T and times[-1] == 1
        assert all(a > b for a, b in zip(times, times[1:], strict=False)), times
        nearest = nearest_of(noise, steps)  # away from the collisions, each t is the nearest its target
        if len(set(nearest)) == steps:
            assert times == nearest
        elif kind == "cosine" and steps <= 20:  # the collisions are all at t = 999 and 1000
            assert [t for t, n in zip(times, nearest, strict=True) if t != n] == \
                   list(range(999, 999 - sum(t != n for t, n in zip(times, nearest, strict=True)), -1))
            assert all(t == n for t, n in zip(times, nearest, strict=True) if n < 990)
    if kind == "cosine":  # 17 distinct nearest timesteps for 20 targets, the first five at 996..1000
        assert len(set(nearest_of(noise, 20))) == 17
        assert logsnr_timesteps(noise, 20)[:5] == [1000, 999, 998, 997, 996]


def log_snr(noise: NoiseSchedule) -> np.ndarray:
    """lambda_t = log(alpha_t / sigma_t) for t = 0..T, in float64 (lambda_0 = inf: x_0 has no noise)."""
    alpha_bar = noise.alpha_bar.double().numpy()
    with np.errstate(divide="ignore"):
        return 0.5 * np.log(alpha_bar / (1 - alpha_bar))


def nearest_of(noise: NoiseSchedule, steps: int) -> list[int]:
    """For each of ``steps`` targets evenly spaced in lambda from lambda_T to lambda_1, the nearest t."""
    lambdas = log_snr(noise)[1:]
    targets = np.linspace(lambdas[-1], lambdas[0], steps)
    return [int(np.abs(lambdas - target).argmin()) + 1 for target in targets]


@pytest.mark.parametrize("bad", [[], [500, 1000], [1001, 10], [10, 0], [20, 20, 10]])
def test_dpm_solver_refuses_timesteps_that_do_not_decrease_within_1_to_T(bad):
    with pytest.raises(ValueError, match="decrease strictly within 1..T"):
        dpm_solver_2m_sample(exact_eps, schedule, (2, 2), timesteps=bad)


def posterior_mean_x0(xt: torch.Tensor, t: int) -> torch.Tensor:
    """E[x_0 | x_t] for Gaussian data by Bayes' rule: mean + alpha Sigma C^{-1} (x_t - alpha mean)."""
    alpha_bar = schedule.alpha_bar.double()[t]
    alpha = alpha_bar.sqrt()
    c = alpha_bar * COVARIANCE + (1 - alpha_bar) * torch.eye(2, dtype=torch.float64)
    return MEAN + (alpha * COVARIANCE @ torch.linalg.solve(c, (xt.double() - alpha * MEAN).T)).T


@pytest.mark.parametrize("step", [1, 10, 300, 999])
def test_v_prediction_converts_to_the_bayes_optimal_x0_and_eps(step):
    xt = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
    t = torch.full((256,), step)
    eps = exact_eps(xt, t)
    x0 = posterior_mean_x0(xt, step)  # independent of genmodels' predict_x0
    alpha, sigma = schedule.alpha_bar.double()[step].sqrt(), (1 - schedule.alpha_bar.double()[step]).sqrt()
    v = alpha * eps - sigma * x0  # the optimal v-predictor, E[v | x_t]
    torch.testing.assert_close(predict_x0_from_v(schedule, xt, t, v), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predict_eps_from_v(schedule, xt, t, v), eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predict_x0(schedule, xt, t, eps), x0, atol=1e-4, rtol=1e-4)


@needs_diffusers
def test_v_target_matches_diffusers_get_velocity():
    reference = diffusers_scheduler(diffusers.DDPMScheduler)
    x0 = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t = torch.randint(1, schedule.T + 1, (32,), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(v_target(schedule, x0, t, noise), reference.get_velocity(x0, noise, t - 1),
                               atol=1e-5, rtol=1e-5)


@needs_diffusers
def test_snr_and_min_snr_weight_match_diffusers_training_utils():
    from diffusers.training_utils import compute_snr

    reference = diffusers_scheduler(diffusers.DDPMScheduler)
    t = torch.tensor([1, 2, 10, 100, 500, 1000])
    expected = compute_snr(reference, t - 1)
    # diffusers keeps alpha_bar in float32, so 1 - alpha_bar_t at small t is good to about 3e-4
    torch.testing.assert_close(snr(schedule, t), expected.float(), rtol=1e-3, atol=0)
    weight = min_snr_weight(schedule, t, gamma=5.0)
    torch.testing.assert_close(weight, torch.minimum(expected, torch.full_like(expected, 5.0)) / expected,
                               rtol=1e-3, atol=0)
    assert weight[0] < 1e-3 and weight[-1] == 1.0  # small t: capped; large t: unweighted
    with pytest.raises(ValueError, match="gamma must be positive"):
        min_snr_weight(schedule, t, gamma=0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weight_caps_the_weight_in_x0_space(prediction):
    """Measured on the errors themselves: an x0 error dx0 at fixed x_t is an eps error -alpha/sigma dx0
    and a v error -dx0/sigma; after weighting, the x0-space weight is min(SNR_t, 5)."""
    t = torch.arange(1, schedule.T + 1)
    xt, dx0 = torch.randn(schedule.T, 4, dtype=torch.float64), torch.randn(schedule.T, 4, dtype=torch.float64)
    alpha_bar = schedule.alpha_bar.double()[t][:, None]
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    x0 = torch.randn(schedule.T, 4, dtype=torch.float64)
    if prediction == "eps":  # eps = (x_t - alpha x0) / sigma
        error = ((xt - alpha * x0) / sigma - (xt - alpha * (x0 + dx0)) / sigma).pow(2).sum(1)
    else:  # v = (alpha x_t - x0) / sigma
        error = ((alpha * xt - x0) / sigma - (alpha * xt - (x0 + dx0)) / sigma).pow(2).sum(1)
    x0_weight = min_snr_weight(schedule, t, prediction=prediction).double() * error / dx0.pow(2).sum(1)
    expected = snr(schedule, t).double().clamp(max=5.0)
    torch.testing.assert_close(x0_weight, expected, rtol=1e-4, atol=1e-6)


def test_clipping_x0_keeps_samples_in_the_image_range():
    far = gaussian_data_eps(schedule, torch.tensor([3.0, -3.0], dtype=torch.float64), COVARIANCE)
    clipped = dpm_solver_2m_sample(far, schedule, (256, 2), steps=10, clip_x0=True,
                                   generator=torch.Generator().manual_seed(0))
    assert clipped.abs().max() <= 1.0
    free = dpm_solver_2m_sample(far, schedule, (256, 2), steps=10, generator=torch.Generator().manual_seed(0))
    assert free.abs().max() > 2.0


def test_a_v_network_is_an_eps_network_once_converted_and_its_loss_is_the_eps_loss_over_alpha_bar():
    """The optimal v-predictor (built from the exact eps and Bayes' x0) wrapped in EpsilonFromV is the
    exact eps-predictor; for any v-network, ||v - v_theta||^2 = ||eps - eps_theta||^2 / alpha_bar_t."""
    from genmodels.diffusion import EpsilonFromV, loss_simple

    step = 300
    xt = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    alpha_bar = schedule.alpha_bar.double()[step]

    def optimal_v(x, t):
        return alpha_bar.sqrt() * exact_eps(x, t) - (1 - alpha_bar).sqrt() * posterior_mean_x0(x, step)

    t = torch.full((64,), step)
    torch.testing.assert_close(EpsilonFromV(optimal_v, schedule)(xt, t).double(), exact_eps(xt, t),
                               atol=1e-5, rtol=1e-5)

    network = torch.nn.Linear(2, 2).double()  # an untrained network: the identity holds for any
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.randint(1, schedule.T + 1, (64,), generator=torch.Generator().manual_seed(3))

    def v_network(x, t):
        return network(x)

    with torch.no_grad():
        v_loss = loss_simple(v_network, schedule, x0, t, noise, prediction="v")
        eps_loss = loss_simple(EpsilonFromV(v_network, schedule), schedule, x0, t, noise)
    torch.testing.assert_close(v_loss, eps_loss / schedule.alpha_bar.double()[t], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="prediction must be 'eps' or 'v'"):
        loss_simple(v_network, schedule, x0, t, noise, prediction="x0")


@pytest.mark.parametrize("stochastic", [False, True])
def test_dpm_solver_2m_keeps_no_autograd_graph(stochastic):
    """Sampling a trained network must not record a graph through every step (memory grows with the
    number of steps): the samples come back detached even when the network has parameters."""
    network = torch.nn.Linear(2, 2)
    x = dpm_solver_2m_sample(lambda x, t: network(x), schedule, (8, 2), steps=5, stochastic=stochastic,
                             generator=torch.Generator().manual_seed(0))
    assert not x.requires_grad and x.grad_fn is None


def test_eta_1_is_the_sde_solver_and_eta_0_its_ode_to_the_bit():
    timesteps = trailing_timesteps(schedule.T, 10)

    def run(**kwargs):
        return dpm_solver_2m_sample(exact_eps, schedule, (256, 2), timesteps=timesteps,
                                    generator=torch.Generator().manual_seed(5), **kwargs)

    assert torch.equal(run(stochastic=True, eta=1.0), run(stochastic=True))
    assert torch.equal(run(stochastic=True, eta=0.0), run())  # the noise it draws is multiplied by 0


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_every_eta_keeps_the_forward_marginals_when_the_data_is_one_point(eta):
    """Data that is one point c: the exact predictor's x0 is c everywhere, and every step must take
    x_t ~ q(x_t | c) = N(alpha_t c, sigma_t^2) to q(x_s | c), whatever eta: checked at each network
    call against the forward process itself (the cosine schedule's x_T is N(0, 1) to within 1e-4)."""
    cosine = NoiseSchedule(T=1000, kind="cosine")
    c = torch.tensor([1.5, -0.8], dtype=torch.float64)
    alpha = cosine.alpha_bar.double().sqrt()
    sigma = (1 - cosine.alpha_bar.double()).sqrt()
    seen = []

    def point_eps(x, t):
        seen.append((int(t[0]), x.clone()))
        return (x - alpha[t][:, None] * c) / sigma[t][:, None]

    dpm_solver_2m_sample(point_eps, cosine, (200_000, 2), timesteps=trailing_timesteps(cosine.T, 10),
                         stochastic=True, eta=eta, generator=torch.Generator().manual_seed(6))
    assert alpha[cosine.T] < 1e-4
    for t, x in seen[1:]:
        x = x.double()
        torch.testing.assert_close(x.mean(0), alpha[t] * c, atol=0.01, rtol=0)  # Monte Carlo: about 0.002
        torch.testing.assert_close(x.var(0), torch.full((2,), sigma[t].item() ** 2, dtype=torch.float64),
                                   atol=0.01, rtol=0.02)


def test_with_the_exact_predictor_more_noise_costs_accuracy():
    """Brute force, as for eta = 1 above: 20 steps from the exact predictor of Gaussian data. Every eta
    samples the data distribution, but with no network error to wash out the fresh noise only adds
    error per step: the covariance error grows with eta (measured, 100,000 samples: 0.016, 0.023,
    0.036, 0.048, 0.058 and 0.073 for eta = 0, 0.5, 1, 1.5, 2 and 3)."""
    errors = []
    for eta in (0.5, 1.0, 2.0):
        x = dpm_solver_2m_sample(exact_eps, schedule, (100_000, 2), stochastic=True, eta=eta,
                                 timesteps=trailing_timesteps(schedule.T, 20),
                                 generator=torch.Generator().manual_seed(3)).double()
        assert (x.mean(0) - MEAN).abs().max() < 0.01
        errors.append((torch.cov(x.T) - COVARIANCE).abs().max().item())
    assert errors == sorted(errors) and errors[-1] < 0.07, errors


@pytest.mark.parametrize(("kwargs", "says"), [
    (dict(eta=0.5), "pass stochastic=True with it"),
    (dict(stochastic=True, eta=-0.1), "finite number >= 0"),
    (dict(stochastic=True, eta=float("nan")), "finite number >= 0"),
])
def test_dpm_solver_refuses_an_eta_it_cannot_use(kwargs, says):
    with pytest.raises(ValueError, match=says):
        dpm_solver_2m_sample(exact_eps, schedule, (4, 2), steps=5, **kwargs)
