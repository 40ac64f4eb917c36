"""DDPM's forward process, posterior and samplers against closed forms and brute force, no training."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from genmodels.data import GaussianMixture
from genmodels.diffusion import (
    NoiseSchedule,
    ancestral_sample,
    ddim_sample,
    ddim_timesteps,
    diffused_mixture,
    discretized_gaussian_log_likelihood,
    extract,
    gaussian_data_eps,
    loss_simple,
    mixture_reverse_conditional,
    p_mean_variance,
    predict_x0,
    prior_term,
    q_posterior,
    q_sample,
    vlb_terms,
)
from genmodels.distributions import normal_log_prob

schedule = NoiseSchedule(T=1000)


def test_schedule_conventions_and_endpoints():
    assert len(schedule.beta) == schedule.T + 1 and schedule.beta[0] == 0 and schedule.alpha_bar[0] == 1
    assert schedule.beta[1].item() == pytest.approx(1e-4) and schedule.beta[-1].item() == pytest.approx(0.02)
    expected = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(schedule.alpha_bar[1:].double(), expected, rtol=1e-6, atol=0)
    assert schedule.alpha_bar[-1] < 1e-4  # x_T is almost pure noise
    cosine = NoiseSchedule(T=1000, kind="cosine")
    assert cosine.alpha_bar[-1] < 1e-4 and (cosine.beta[1:] > 0).all()
    with pytest.raises(ValueError, match="'linear' or 'cosine'"):
        NoiseSchedule(kind="quadratic")
    t = schedule.sample_t(10_000, generator=torch.Generator().manual_seed(0))
    assert t.min() == 1 and t.max() == 1000


def test_extract_broadcasts_over_any_rank():
    t = torch.tensor([1, 500, 1000])
    assert extract(schedule.alpha_bar, t, (3, 1, 28, 28)).shape == (3, 1, 1, 1)
    assert extract(schedule.alpha_bar, t, (3, 2)).shape == (3, 1)
    torch.testing.assert_close(extract(schedule.beta, t, (3, 5))[:, 0], schedule.beta[t])


@pytest.mark.parametrize("step", [1, 10, 250, 1000])
def test_q_sample_moments(step):
    x0 = torch.tensor([1.0, -0.5, 0.0])
    n = 200_000
    t = torch.full((n,), step)
    noise = torch.randn(n, 3, generator=torch.Generator().manual_seed(step))
    xt = q_sample(schedule, x0.expand(n, 3), t, noise)
    ab = schedule.alpha_bar[step].double().item()
    # tolerances relative to the spread (1 - ab, as small as 1e-4 at t = 1): 5 standard errors
    spread = math.sqrt(1 - ab)
    torch.testing.assert_close(xt.mean(0).double(), math.sqrt(ab) * x0.double(),
                               atol=5 * spread / math.sqrt(n), rtol=0)
    torch.testing.assert_close(xt.var(0).double(), torch.full((3,), 1 - ab, dtype=torch.float64),
                               atol=0, rtol=5 * math.sqrt(2 / n))


def test_iterating_the_one_step_chain_matches_the_closed_form():
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps, t times, has the law of q(x_t | x_0)."""
    generator = torch.Generator().manual_seed(1)
    x0 = torch.tensor([2.0, -1.0]).expand(100_000, 2)
    x = x0.clone()
    for step in range(1, 301):
        x = (1 - schedule.beta[step]).sqrt() * x + schedule.beta[step].sqrt() * torch.randn(
            x.shape, generator=generator)
        if step in (50, 300):
            direct = q_sample(schedule, x0, torch.full((len(x0),), step))
            torch.testing.assert_close(x.mean(0), direct.mean(0), atol=0.015, rtol=0)
            torch.testing.assert_close(x.std(0), direct.std(0), atol=0.015, rtol=0)
            # and their quantiles agree (equality in distribution, not just moments)
            q = torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])
            torch.testing.assert_close(x[:, 0].quantile(q), direct[:, 0].quantile(q), atol=0.03, rtol=0)


@pytest.mark.parametrize("step", [2, 20, 500, 1000])
def test_posterior_equals_bayes_rule_on_a_grid(step):
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0)."""
    x0, xt = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.3], dtype=torch.float64)
    grid = torch.linspace(-6, 6, 400_001, dtype=torch.float64)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)  # Ho et al.'s schedule, in float64
    beta, ab_prev = betas[step - 1], torch.prod(1 - betas[: step - 1])
    log_forward = normal_log_prob(xt, (1 - beta).sqrt() * grid, beta.log())
    log_marginal = normal_log_prob(grid, ab_prev.sqrt() * x0, (1 - ab_prev).log())
    weights = torch.softmax(log_forward + log_marginal, 0)
    grid_mean = (weights * grid).sum()
    grid_var = (weights * (grid - grid_mean) ** 2).sum()
    t = torch.tensor([step])
    mean, variance, log_variance = q_posterior(schedule, x0.float()[None], xt.float()[None], t)
    assert mean.item() == pytest.approx(grid_mean.item(), abs=1e-5)
    assert variance.item() == pytest.approx(grid_var.item(), rel=1e-4)
    assert log_variance.item() == pytest.approx(math.log(grid_var.item()), abs=1e-4)  # t >= 2: unclipped


class KnowsTheData:
    """An epsilon-predictor that knows x_0: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""

    def __init__(self, x0):
        self.x0 = x0

    def __call__(self, xt, t):
        return (xt - extract(schedule.sqrt_alpha_bar, t, xt.shape) * self.x0) / extract(
            schedule.sqrt_one_minus_alpha_bar, t, xt.shape)


def test_eps_form_of_the_mean_equals_the_posterior_mean_and_x0_is_recovered():
    x0 = torch.randn(16, 1, 4, 4)
    t = torch.randint(2, 1001, (16,))
    xt = q_sample(schedule, x0, t)
    model = KnowsTheData(x0)
    mean, variance, log_variance = p_mean_variance(model, schedule, xt, t)
    posterior_mean, _, _ = q_posterior(schedule, x0, xt, t)
    torch.testing.assert_close(mean, posterior_mean, atol=2e-4, rtol=1e-3)  # Eq. 11 = Eq. 7
    torch.testing.assert_close(variance, extract(schedule.beta, t, xt.shape))
    torch.testing.assert_close(predict_x0(schedule, xt, t, model(xt, t)), x0, atol=1e-3, rtol=1e-3)
    assert loss_simple(model, schedule, x0).max() < 1e-8  # the perfect predictor has zero loss


def test_loss_simple_of_a_predictor_that_says_zero_is_one():
    generator = torch.Generator().manual_seed(6)
    x0, noise = torch.randn(4096, 8, generator=generator), torch.randn(4096, 8, generator=generator)
    t = schedule.sample_t(4096, generator=generator)
    loss = loss_simple(lambda xt, t: torch.zeros_like(xt), schedule, x0, t=t, noise=noise)
    # E ||eps||^2 / D = 1; the mean of 4096 x 8 squared normals has standard deviation sqrt(2 / 32768)
    assert loss.mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(2 / 32768))


@pytest.fixture(scope="module")
def gaussian_data():
    mean = torch.tensor([1.0, -0.5])
    covariance = torch.tensor([[0.5, 0.3], [0.3, 0.4]])
    return mean, covariance, gaussian_data_eps(schedule, mean, covariance)


def check_moments(samples, mean, covariance, tolerance):
    torch.testing.assert_close(samples.mean(0), mean, atol=tolerance, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), covariance, atol=tolerance, rtol=0)


def test_ancestral_sampling_with_the_exact_predictor_recovers_the_data(gaussian_data):
    mean, covariance, model = gaussian_data
    samples, trajectory = ancestral_sample(model, schedule, (6000, 2), trajectory_every=250,
                                           generator=torch.Generator().manual_seed(2))
    check_moments(samples, mean, covariance, tolerance=0.04)
    assert len(trajectory) == 5  # x_T, then every 250 steps down to x_0


@pytest.mark.parametrize("steps", [50, 1000])
def test_ddim_with_the_exact_predictor_recovers_the_data(gaussian_data, steps):
    mean, covariance, model = gaussian_data
    samples = ddim_sample(model, schedule, (6000, 2), steps=steps, generator=torch.Generator().manual_seed(3))
    check_moments(samples, mean, covariance, tolerance=0.05)


def test_ddim_with_eta_one_on_every_step_is_ancestral_sampling_from_the_posterior():
    """Song et al.: eta = 1 without skipping samples q(x_{t-1} | x_t, x0_hat), variance beta_tilde_t."""
    short = NoiseSchedule(T=20)
    model = gaussian_data_eps(short, torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.3], [0.3, 0.4]]))
    ddim = ddim_sample(model, short, (64, 2), steps=short.T, eta=1.0,
                       generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)  # the same draws, in the same order
    x = torch.randn((64, 2), generator=generator)
    for step in range(short.T, 0, -1):
        t = torch.full((64,), step)
        mean, variance, _ = q_posterior(short, predict_x0(short, x, t, model(x, t)), x, t)
        x = mean + (variance.sqrt() * torch.randn((64, 2), generator=generator) if step > 1 else 0)
    torch.testing.assert_close(ddim, x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_on_skipped_steps_draws_from_the_jump_posterior_scaled_by_eta(eta):
    """Five of 20 steps. From t to s < t the forward chain gives Cov(x_s, x_t | x0) =
    sqrt(ab_t / ab_s) (1 - ab_s), so Gaussian conditioning yields q(x_s | x_t, x0)'s variance
    (1 - ab_s) - Cov^2 / (1 - ab_t); DDIM's sigma is eta times its square root, and the weight on
    eps keeps q(x_s | x0)'s variance (Song et al. 2021, Eq. 12). At eta = 1 that weight is the
    conditional mean's, Cov / sqrt(1 - ab_t). Replayed draw for draw."""
    short = NoiseSchedule(T=20)
    model = gaussian_data_eps(short, torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.3], [0.3, 0.4]]))
    ddim = ddim_sample(model, short, (64, 2), steps=5, eta=eta, generator=torch.Generator().manual_seed(4))
    times = [20, 15, 10, 6, 1]
    assert ddim_timesteps(short.T, 5) == times
    generator = torch.Generator().manual_seed(4)
    x = torch.randn((64, 2), generator=generator)
    for t, s in zip(times, [*times[1:], 0], strict=True):
        ab_t, ab_s = short.alpha_bar[t].item(), short.alpha_bar[s].item()
        steps = torch.full((64,), t)
        eps = model(x, steps)
        x0 = predict_x0(short, x, steps, eps)
        covariance = math.sqrt(ab_t / ab_s) * (1 - ab_s)
        sigma = eta * math.sqrt((1 - ab_s) - covariance**2 / (1 - ab_t))
        weight = math.sqrt(1 - ab_s - sigma**2)
        if eta == 1:
            assert weight == pytest.approx(covariance / math.sqrt(1 - ab_t), rel=1e-9, abs=1e-12)
        x = math.sqrt(ab_s) * x0 + weight * eps
        if s > 0:
            x = x + sigma * torch.randn((64, 2), generator=generator)
    torch.testing.assert_close(ddim, x, atol=1e-5, rtol=1e-5)


def test_ddim_with_eta_zero_is_deterministic_and_with_eta_one_is_not(gaussian_data):
    _, _, model = gaussian_data

    def sample(eta: float) -> torch.Tensor:  # every call starts from the same x_T
        generator = torch.Generator().manual_seed(5)
        return ddim_sample(model, schedule, (8, 2), steps=20, eta=eta, generator=generator)

    torch.testing.assert_close(sample(0.0), sample(0.0))
    assert not torch.allclose(sample(0.0), sample(1.0))  # eta = 1 draws fresh noise on the way
    for bad in (-0.5, 1.5):
        with pytest.raises(ValueError, match="eta must lie in"):
            sample(bad)


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 1000) == list(range(1000, 0, -1))
    steps = ddim_timesteps(1000, 50)
    assert len(steps) == 50 and steps[0] == 1000 and steps[-1] == 1
    assert ddim_timesteps(1000, 1) == [1000]  # one step starts where sampling starts
    with pytest.raises(ValueError, match="between 1 and T"):
        ddim_timesteps(1000, 0)


def test_one_ddim_step_jumps_from_x_T_to_the_posterior_mean_of_x0(gaussian_data):
    """With the exact predictor one step returns E[x0 | x_T], whose law is Gaussian by Bayes' rule:
    mean m, covariance a S (a S + (1 - a) I)^-1 S with a = alpha_bar_T."""
    mean, covariance, model = gaussian_data
    samples = ddim_sample(model, schedule, (6000, 2), steps=1, generator=torch.Generator().manual_seed(3))
    a = schedule.alpha_bar[-1].double()
    S = covariance.double()
    shrunk = a * S @ torch.linalg.inv(a * S + (1 - a) * torch.eye(2, dtype=torch.float64)) @ S
    torch.testing.assert_close(samples.mean(0), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T).double(), shrunk, atol=0, rtol=0.1)


def test_variational_bound_with_the_exact_predictor_is_close_to_the_true_nll(gaussian_data):
    """For Gaussian data the NLL is known; the bound (sum of all T terms plus L_T) sits just above it."""
    mean, covariance, model = gaussian_data
    generator = torch.Generator().manual_seed(4)
    x0 = mean + torch.randn(1000, 2, generator=generator) @ torch.linalg.cholesky(covariance).T
    true_nll = -torch.distributions.MultivariateNormal(mean, covariance).log_prob(x0)
    torch.manual_seed(5)
    bound = prior_term(schedule, x0)
    for step in range(1, schedule.T + 1):
        bound = bound + vlb_terms(model, schedule, x0, torch.full((len(x0),), step), decoder="gaussian")
    gap = bound - true_nll  # per example; its mean is >= 0 and small
    standard_error = gap.std().item() / len(gap) ** 0.5
    assert -4 * standard_error < gap.mean().item() < 0.03 + 4 * standard_error
    assert prior_term(schedule, x0).mean() < 1e-3


def test_discretized_likelihood_is_a_distribution_over_the_256_levels():
    levels = torch.linspace(-1, 1, 256)
    for mean, log_scale in [(0.0, -2.0), (0.9, -4.0), (-1.2, 0.0)]:
        p = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale)).exp()
        assert p.sum().item() == pytest.approx(1.0, abs=1e-4)
    sharp = discretized_gaussian_log_likelihood(torch.tensor([0.2]), torch.tensor(0.2), torch.tensor(-8.0))
    assert sharp.item() == pytest.approx(0.0, abs=1e-6)  # all mass in the right bin


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_the_bound_at_t_1_is_the_discretized_decoder_against_scipy(variance):
    """L_0 = -sum_d log [Phi((x + 1/255 - mu) / sigma) - Phi((x - 1/255 - mu) / sigma)], the edge
    levels' bins open to infinity (Ho et al. Eq. 13), from scipy's normal CDF in float64. The
    predictor says eps = 0, so mu = x_1 / sqrt(alpha_1); sigma^2 is beta_1, or beta_tilde_2 where
    beta_tilde_1 = 0 is clipped (beta_tilde_2 = beta_2 (1 - alpha_bar_1) / (1 - alpha_bar_2))."""
    x0 = torch.randint(0, 256, (4, 1, 5, 5), generator=torch.Generator().manual_seed(7)) / 127.5 - 1
    x0[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # both edge levels appear
    torch.manual_seed(8)
    got = vlb_terms(lambda xt, t: torch.zeros_like(xt), schedule, x0, torch.ones(4, dtype=torch.long),
                    variance=variance)
    torch.manual_seed(8)
    noise = torch.randn_like(x0).double()  # the draw vlb_terms makes for x_1
    betas = np.linspace(1e-4, 0.02, 1000)
    x, x1 = x0.double().numpy(), (math.sqrt(1 - betas[0]) * x0.double() + math.sqrt(betas[0]) * noise).numpy()
    mu = x1 / math.sqrt(1 - betas[0])
    var = betas[0] if variance == "beta" else betas[1] * betas[0] / (1 - (1 - betas[0]) * (1 - betas[1]))
    sigma = math.sqrt(var)
    upper = np.where(x > 0.999, 1.0, stats.norm.cdf((x + 1 / 255 - mu) / sigma))
    lower = np.where(x < -0.999, 0.0, stats.norm.cdf((x - 1 / 255 - mu) / sigma))
    expected = -np.log(upper - lower).reshape(4, -1).sum(1)
    assert 10 < expected.min()  # sigma is about the bins' width: each pixel costs about a nat
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("step", [1, 50, 500, 1000])
def test_the_optimal_noise_predictor_is_the_scaled_score_of_the_noised_data(gaussian_data, step):
    """eps*(x_t, t) = -sqrt(1 - alpha_bar_t) grad log q_t(x_t), with q_t = N(sqrt(ab) m, ab S + (1 - ab) I)
    differentiated by autograd through torch.distributions, not through the closed form."""
    mean, covariance, model = gaussian_data
    ab = schedule.alpha_bar.double()[step]
    q_t = torch.distributions.MultivariateNormal(ab.sqrt() * mean.double(),
                                                 ab * covariance.double() + (1 - ab) * torch.eye(2))
    xt = torch.randn(64, 2, generator=torch.Generator().manual_seed(step), dtype=torch.float64) * 2
    xt.requires_grad_(True)
    (score,) = torch.autograd.grad(q_t.log_prob(xt).sum(), xt)
    eps = model(xt.detach(), torch.full((64,), step))
    torch.testing.assert_close(eps, -(1 - ab).sqrt() * score, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_prior_term_is_the_gaussian_kl_to_the_prior_even_when_alpha_bar_T_is_tiny(kind):
    """Against torch.distributions in float64; with the cosine schedule 1 - alpha_bar_T is 1 in float32,
    and a float32 formula would return exactly 0."""
    schedule = NoiseSchedule(T=1000, kind=kind)
    x0 = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    alpha_bar = schedule.alpha_bar[schedule.T].double()
    q = torch.distributions.Normal(alpha_bar.sqrt() * x0.double(), (1 - alpha_bar).sqrt().expand(x0.shape))
    prior = torch.distributions.Normal(torch.zeros_like(x0.double()), torch.ones_like(x0.double()))
    expected = torch.distributions.kl_divergence(q, prior).sum(dim=(1, 2, 3))
    got = prior_term(schedule, x0)
    assert got.shape == (3,) and (got > 0).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=0)


def _bimodal() -> GaussianMixture:
    return GaussianMixture(torch.tensor([[-1.0], [0.5]]), torch.tensor([[[0.04]], [[0.09]]]),
                           torch.tensor([0.3, 0.7]))


def test_diffused_mixture_is_the_law_of_q_sample_of_its_data():
    """Kolmogorov-Smirnov of 20,000 forward samples against the mixture CDF written with scipy."""
    schedule, data = NoiseSchedule(), _bimodal()
    for t in (1, 50, 300, 1000):
        generator = torch.Generator().manual_seed(t)
        x0 = data.sample(20_000, generator=generator).float()
        xt = q_sample(schedule, x0, torch.full((20_000,), t), torch.randn(x0.shape, generator=generator))
        mixture = diffused_mixture(schedule, t, data)
        w, m, sd = (mixture.weights.numpy(), mixture.means[:, 0].numpy(),
                    mixture.covariances[:, 0, 0].sqrt().numpy())
        cdf = lambda x, w=w, m=m, sd=sd: (w * stats.norm.cdf((np.asarray(x)[:, None] - m) / sd)).sum(1)  # noqa: E731
        assert stats.kstest(xt[:, 0].double().numpy(), cdf).pvalue > 1e-3, t
    assert diffused_mixture(schedule, 0, data) is data


def test_mixture_reverse_conditional_matches_brute_force_bayes_on_a_grid():
    """q(x_s | x_t) by numerical integration: q_s(x_s) = integral of N(x_s; sqrt(ab_s) x_0, 1 - ab_s)
    q(x_0) dx_0 on a grid, times N(x_t; sqrt(ab_t / ab_s) x_s, 1 - ab_t / ab_s), normalized."""
    schedule, data = NoiseSchedule(), _bimodal()
    ab = schedule.alpha_bar.double()
    grid = torch.linspace(-4, 4, 8001, dtype=torch.float64)
    dx = grid[1] - grid[0]
    q0 = data.log_prob(grid[:, None]).exp()
    for s, t, x_t in ((199, 200, 0.1), (100, 400, -0.3), (0, 200, 0.1)):
        if s == 0:
            q_s = q0
        else:
            noise = torch.distributions.Normal(ab[s].sqrt() * grid[None, :], (1 - ab[s]).sqrt())
            q_s = (noise.log_prob(grid[:, None]).exp() * q0[None, :]).sum(1) * dx
        jump = torch.distributions.Normal((ab[t] / ab[s]).sqrt() * grid, (1 - ab[t] / ab[s]).sqrt())
        posterior = jump.log_prob(torch.tensor(x_t, dtype=torch.float64)).exp() * q_s
        posterior = posterior / (posterior.sum() * dx)
        exact = mixture_reverse_conditional(schedule, s, t, torch.tensor([x_t]), data)
        density = exact.log_prob(grid[:, None]).exp()
        assert (density - posterior).abs().max() < 1e-3 * density.max(), (s, t)
    one_step = mixture_reverse_conditional(schedule, 199, 200, torch.tensor([0.1]), data)
    assert one_step.weights.max() < 0.99  # both components still matter, yet ...
    spread = one_step.means[:, 0].max() - one_step.means[:, 0].min()
    assert spread < one_step.covariances[:, 0, 0].sqrt().min()  # ... their means nearly coincide
    to_images = mixture_reverse_conditional(schedule, 0, 200, torch.tensor([0.1]), data)
    assert to_images.means[:, 0].max() - to_images.means[:, 0].min() > 1.0  # two separate peaks
    with pytest.raises(ValueError, match="0 <= s < t"):
        mixture_reverse_conditional(schedule, 5, 5, torch.tensor([0.0]), data)
    with pytest.raises(ValueError, match="one point of the data's 1 dimensions"):
        mixture_reverse_conditional(schedule, 0, 5, torch.tensor([0.0, 1.0]), data)
