"""Langevin samplers and score matching against closed forms: the discretized chain's stationary
covariance (a discrete Lyapunov equation), Metropolis correction, mode counts, Vincent's identity."""

import math
from itertools import pairwise

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import chisquare
from torch import distributions as D

from genmodels.data import GaussianMixture, eight_gaussians
from genmodels.diffusion import NoiseSchedule, gaussian_data_eps
from genmodels.langevin import (
    annealed_langevin_sample,
    dsm_loss,
    langevin_sample,
    mala_sample,
    score_from_eps,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The chains are many small steps on (N, 2) tensors, where intra-op threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The target of tests 1-3: N(0, Sigma), correlated, eigenvalues about 1.51 and 0.29.
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
PRECISION = torch.linalg.inv(SIGMA)


def gaussian_score(x: torch.Tensor) -> torch.Tensor:
    """grad log N(x; 0, Sigma) = -Sigma^{-1} x, for x (N, 2)."""
    return -x @ PRECISION


def gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, Sigma) up to its normalizing constant, which MALA never needs."""
    return -0.5 * torch.einsum("ni,ij,nj->n", x, PRECISION, x)


def ula_stationary_covariance(eta: float) -> np.ndarray:
    """C = A C A^T + 2 eta I, A = I - eta Sigma^{-1}: where x_{k+1} = A x_k + sqrt(2 eta) xi settles."""
    A = np.eye(2) - eta * PRECISION.numpy()
    return scipy.linalg.solve_discrete_lyapunov(A, 2 * eta * np.eye(2))


def covariance_standard_error(covariance: np.ndarray, n: int) -> np.ndarray:
    """Standard error of each sample covariance entry, n Gaussian draws: sqrt((C_ij^2 + C_ii C_jj) / n)."""
    return np.sqrt((covariance**2 + np.outer(covariance.diagonal(), covariance.diagonal())) / n)


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_unadjusted_langevin_settles_to_the_discretization_s_covariance_not_sigma(eta):
    n = 80_000
    generator = torch.Generator().manual_seed(0)
    x0 = 2 * torch.randn(n, 2, dtype=torch.float64, generator=generator)  # far from both C and Sigma
    x = langevin_sample(gaussian_score, x0, step_size=eta, n_steps=300, generator=generator)
    expected = ula_stationary_covariance(eta)
    standard_error = covariance_standard_error(expected, n)
    empirical = torch.cov(x.T).numpy()
    assert (np.abs(empirical - expected) < 4 * standard_error).all(), (empirical, expected)
    # and the test can tell C from Sigma: the discretization bias is many standard errors wide
    assert np.abs(expected - SIGMA.numpy()).max() > 8 * standard_error.max()


def test_the_discretization_bias_vanishes_linearly_with_the_step():
    etas = [0.3, 0.1, 0.03, 0.01, 0.001]
    bias = [np.linalg.norm(ula_stationary_covariance(eta) - SIGMA.numpy()) for eta in etas]
    assert all(later < earlier for earlier, later in pairwise(bias))
    assert bias[-2] / etas[-2] == pytest.approx(bias[-1] / etas[-1], rel=0.02)  # ||C - Sigma|| = O(eta)


def test_annealed_langevin_takes_song_and_ermon_s_step_at_the_last_level():
    """At sigma_L the step is alpha_L = epsilon, i.e. eta = epsilon / 2: the chain settles to
    C(eta = epsilon / 2) for the target N(0, Sigma + sigma_L^2 I), visibly not to C(eta = epsilon)."""
    n, epsilon, sigmas = 40_000, 0.3, [0.2, 0.1]
    eye = torch.eye(2, dtype=torch.float64)
    precisions = [torch.linalg.inv(SIGMA + sigma**2 * eye) for sigma in sigmas]
    x0 = 2 * torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    x = annealed_langevin_sample(lambda x, i: -x @ precisions[i], x0, sigmas, epsilon, steps_per_level=150,
                                 generator=torch.Generator().manual_seed(9))

    def stationary(eta):
        A = np.eye(2) - eta * precisions[-1].numpy()
        return scipy.linalg.solve_discrete_lyapunov(A, 2 * eta * np.eye(2))

    expected = stationary(epsilon / 2)
    standard_error = covariance_standard_error(expected, n)
    assert (np.abs(torch.cov(x.T).numpy() - expected) < 4 * standard_error).all()
    assert np.abs(stationary(epsilon) - expected).max() > 15 * standard_error.max()


def test_mala_reaches_sigma_where_unadjusted_langevin_is_biased():
    n, eta = 40_000, 0.3
    generator = torch.Generator().manual_seed(1)
    x0 = 2 * torch.randn(n, 2, dtype=torch.float64, generator=generator)
    x, acceptance = mala_sample(gaussian_log_prob, gaussian_score, x0, eta, n_steps=300, generator=generator)
    standard_error = covariance_standard_error(SIGMA.numpy(), n)
    empirical = torch.cov(x.T).numpy()
    assert (np.abs(empirical - SIGMA.numpy()) < 4 * standard_error).all(), empirical
    assert np.abs(ula_stationary_covariance(eta) - SIGMA.numpy()).max() > 20 * standard_error.max()
    assert 0 < acceptance < 1


def test_mala_accepts_less_as_the_step_grows():
    generator = torch.Generator().manual_seed(2)
    x0 = torch.randn(4000, 2, dtype=torch.float64, generator=generator) @ torch.linalg.cholesky(SIGMA).T
    rates = [mala_sample(gaussian_log_prob, gaussian_score, x0, eta, n_steps=50, generator=generator)[1]
             for eta in (0.03, 0.3, 1.0)]
    assert 0 < rates[2] < rates[1] < rates[0] < 1, rates


def test_langevin_with_the_wrong_sign_runs_away_at_the_predicted_rate():
    """x_{k+1} = (I + eta Sigma^{-1}) x_k + sqrt(2 eta) xi grows by its spectral radius 1 + eta lambda_max."""
    eta = 0.1
    x0 = torch.zeros(1000, 2, dtype=torch.float64)  # even from the mode itself
    x, trajectory = langevin_sample(lambda x: -gaussian_score(x), x0, eta, n_steps=200, trajectory_every=100,
                                    generator=torch.Generator().manual_seed(4))
    assert len(trajectory) == 3 and trajectory[0].equal(x0) and trajectory[-1].equal(x)  # x_0, x_100, x_200
    distance_100, distance_200 = (x.norm(dim=1).mean().item() for x in trajectory[1:])
    assert distance_200 > 1e10 * distance_100 > 1e20
    spectral_radius = 1 + eta * torch.linalg.eigvalsh(PRECISION).max().item()
    assert math.log(distance_200 / distance_100) / 100 == pytest.approx(math.log(spectral_radius), rel=1e-3)


# --------------------------------------------------------------------------------------------
# Many modes: annealing


def mode_counts(mixture: GaussianMixture, x: torch.Tensor) -> np.ndarray:
    """How many particles sit nearest each mean: (K,)."""
    return torch.bincount(torch.cdist(x, mixture.means).argmin(1), minlength=len(mixture.means)).numpy()


def test_single_level_langevin_stays_in_its_mode_and_annealing_recovers_equal_weights():
    mixture = eight_gaussians()  # radius 2, std 0.2: the neighbouring modes are 1.5 apart
    n = 2000
    x0 = mixture.means[0].expand(n, 2).clone()  # every particle starts in one mode
    generator = torch.Generator().manual_seed(5)
    stuck = langevin_sample(mixture.score, x0, step_size=0.005, n_steps=200, generator=generator)
    assert chisquare(mode_counts(mixture, stuck)).pvalue < 1e-6
    assert mode_counts(mixture, stuck)[0] > 0.9 * n

    sigmas = np.geomspace(3.0, 0.05, 10).tolist()
    noised = [mixture.noised(sigma) for sigma in sigmas]
    x = annealed_langevin_sample(lambda x, i: noised[i].score(x), x0, sigmas, step_size=0.002,
                                 steps_per_level=50, generator=generator)
    assert chisquare(mode_counts(mixture, x)).pvalue > 1e-3
    # and each mode has the data's spread std^2 = 0.04, not that of a noised level
    offsets = x - mixture.means[torch.cdist(x, mixture.means).argmin(1)]
    assert offsets.var(0).mean().item() == pytest.approx(0.2**2, rel=0.15)


# --------------------------------------------------------------------------------------------
# Denoising score matching


def test_dsm_is_minimized_by_the_noised_score_and_differs_from_explicit_score_matching_by_a_constant():
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)
    covariance = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
    sigma, n = 0.5, 200_000
    generator = torch.Generator().manual_seed(6)
    cholesky = torch.linalg.cholesky(covariance)
    x = mean + torch.randn(n, 2, dtype=torch.float64, generator=generator) @ cholesky.T  # x ~ N(m, S)
    noise = torch.randn(n, 2, dtype=torch.float64, generator=generator)  # the same z for every score
    noised_precision = torch.linalg.inv(covariance + sigma**2 * torch.eye(2, dtype=torch.float64))

    def noised_score(y):  # grad log N(y; m, S + sigma^2 I)
        return -(y - mean) @ noised_precision

    candidates = {
        "exact": noised_score,
        "scaled by 0.9": lambda y: 0.9 * noised_score(y),
        "scaled by 1.1": lambda y: 1.1 * noised_score(y),
        "shifted": lambda y: noised_score(y) + torch.tensor([0.1, -0.05], dtype=torch.float64),
        "tanh": lambda y: torch.tanh(-y),
    }
    dsm = {name: dsm_loss(score, x, sigma, noise=noise) for name, score in candidates.items()}
    assert dsm["exact"].shape == (n,)
    for name in candidates:
        if name != "exact":
            excess = dsm[name] - dsm["exact"]  # per example, with common noise: a small standard error
            assert excess.mean() > 5 * excess.std() / math.sqrt(n), name

    # Vincent (2011): DSM - sigma^2 / 2 E||s(x~) - grad log q_sigma(x~)||^2 does not depend on s, and
    # equals D / 2 - sigma^2 / 2 tr((S + sigma^2 I)^{-1}), the DSM loss of the exact noised score
    x_tilde = x + sigma * noise
    gap = {name: dsm[name] - sigma**2 / 2 * ((score(x_tilde) - noised_score(x_tilde)) ** 2).sum(1)
           for name, score in candidates.items()}
    constant = 2 / 2 - sigma**2 / 2 * torch.trace(noised_precision).item()
    for name in candidates:
        standard_error = gap[name].std().item() / math.sqrt(n)
        assert gap[name].mean().item() == pytest.approx(constant, abs=4 * standard_error), name
        if name != "exact":
            difference = gap[name] - gap["exact"]  # with common noise: a much smaller standard error
            assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(n), name


# --------------------------------------------------------------------------------------------
# From a noise predictor to a score


@pytest.mark.parametrize("step", [1, 50, 500, 1000])
def test_score_from_eps_is_the_score_of_the_noised_gaussian(step):
    schedule = NoiseSchedule(T=1000)
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)
    covariance = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
    score = score_from_eps(gaussian_data_eps(schedule, mean, covariance), schedule)
    ab = schedule.alpha_bar.double()[step]
    eye = torch.eye(2, dtype=torch.float64)
    q_t = D.MultivariateNormal(ab.sqrt() * mean, ab * covariance + (1 - ab) * eye)
    xt = 2 * torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
    xt.requires_grad_(True)
    (expected,) = torch.autograd.grad(q_t.log_prob(xt).sum(), xt)
    # alpha_bar is stored in float32: its rounding, relative to 1 - alpha_bar_t (1e-4 at t = 1), bounds
    # how far the eps-predictor's sqrt(1 - alpha_bar_t) and the schedule's (rounded once) can differ
    rtol = max(1e-6, torch.finfo(torch.float32).eps / (1 - ab).item())
    torch.testing.assert_close(score(xt.detach(), torch.full((64,), step)), expected, rtol=rtol, atol=1e-8)


# --------------------------------------------------------------------------------------------
# The noised mixture


def test_noised_mixture_is_the_convolution_with_a_gaussian():
    mixture, std = eight_gaussians(), 0.5
    noised = mixture.noised(std)
    widened = D.MixtureSameFamily(
        D.Categorical(probs=mixture.weights),
        D.MultivariateNormal(mixture.means, covariance_matrix=mixture.covariances + std**2 * torch.eye(2)),
    )
    points = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.2, 1.5], [-3.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(noised.log_prob(points), widened.log_prob(points), rtol=1e-12, atol=1e-12)
    # p_std(x) = E_{y ~ p} N(x; y, std^2 I), by Monte Carlo over draws of the mixture itself
    y = mixture.sample(200_000, generator=torch.Generator().manual_seed(7))
    kernel = D.MultivariateNormal(y, covariance_matrix=std**2 * torch.eye(2, dtype=torch.float64))
    densities = kernel.log_prob(points[:, None, :]).exp()  # (4, n)
    standard_error = densities.std(1) / math.sqrt(len(y))
    assert ((densities.mean(1) - noised.log_prob(points).exp()).abs() < 5 * standard_error).all()


# --------------------------------------------------------------------------------------------
# Bad inputs


def test_bad_inputs_are_refused_with_what_to_do():
    x0 = torch.zeros(5, 2, dtype=torch.float64)
    for bad in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="step_size must be positive"):
            langevin_sample(gaussian_score, x0, bad, 10)
        with pytest.raises(ValueError, match="step_size must be positive"):
            mala_sample(gaussian_log_prob, gaussian_score, x0, bad, 10)
        with pytest.raises(ValueError, match="step_size must be positive"):
            annealed_langevin_sample(lambda x, i: gaussian_score(x), x0, [1.0, 0.1], bad, 10)
    with pytest.raises(ValueError, match="n_steps must be a whole number, at least 1"):
        langevin_sample(gaussian_score, x0, 0.1, 0)
    with pytest.raises(ValueError, match="n_steps must be a whole number, at least 1"):
        mala_sample(gaussian_log_prob, gaussian_score, x0, 0.1, 0)
    with pytest.raises(ValueError, match="steps_per_level must be a whole number, at least 1"):
        annealed_langevin_sample(lambda x, i: gaussian_score(x), x0, [1.0, 0.1], 0.1, 0)
    for sigmas, message in (([], "sigmas is empty"), ([1.0, 0.0], "must all be positive"),
                            ([0.1, 1.0], "strictly decreasing"), ([1.0, 1.0, 0.5], "strictly decreasing")):
        with pytest.raises(ValueError, match=message):
            annealed_langevin_sample(lambda x, i: gaussian_score(x), x0, sigmas, 0.1, 10)

    def wrong_shape(x):
        return x.sum(1)

    def nan_score(x):
        return torch.full_like(x, float("nan"))

    with pytest.raises(ValueError, match=r"score returned \(5,\) .* shape \(5, 2\)"):
        langevin_sample(wrong_shape, x0, 0.1, 10)
    with pytest.raises(ValueError, match="score returned NaN"):
        langevin_sample(nan_score, x0, 0.1, 10)
    with pytest.raises(ValueError, match=r"score returned \(5,\)"):
        mala_sample(gaussian_log_prob, wrong_shape, x0, 0.1, 10)
    with pytest.raises(ValueError, match=r"log_prob returned \(5, 2\) .* shape \(5,\)"):
        mala_sample(gaussian_score, gaussian_score, x0, 0.1, 10)  # a score passed as log_prob
    with pytest.raises(ValueError, match="score_at_level returned NaN"):
        annealed_langevin_sample(lambda x, i: nan_score(x), x0, [1.0, 0.1], 0.1, 10)
    with pytest.raises(ValueError, match=r"score_at_level returned \(5,\)"):
        annealed_langevin_sample(lambda x, i: wrong_shape(x), x0, [1.0, 0.1], 0.1, 10)
    with pytest.raises(ValueError, match="sigma must be positive"):
        dsm_loss(gaussian_score, x0, 0.0)
    schedule = NoiseSchedule(T=10)
    score = score_from_eps(gaussian_data_eps(schedule, torch.zeros(2), torch.eye(2)), schedule)
    with pytest.raises(ValueError, match=r"t must lie in 1..T"):
        score(x0, torch.zeros(5, dtype=torch.long))  # t = 0 is the data, whose 1 - alpha_bar is 0
