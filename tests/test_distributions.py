"""Closed-form Gaussian and Bernoulli formulas against torch.distributions and Monte Carlo."""

import pytest
import torch
from torch import distributions as D

from genmodels.distributions import bernoulli_log_prob, mean_flat, normal_kl, normal_log_prob, sum_flat

generator = torch.Generator().manual_seed(0)


def random_gaussians(n=1000):
    mean1, mean2 = torch.randn(2, n, dtype=torch.float64, generator=generator) * 2
    logvar1, logvar2 = torch.randn(2, n, dtype=torch.float64, generator=generator)
    return mean1, logvar1, mean2, logvar2


def test_normal_kl_equals_torch_distributions():
    mean1, logvar1, mean2, logvar2 = random_gaussians()
    expected = D.kl_divergence(D.Normal(mean1, (0.5 * logvar1).exp()), D.Normal(mean2, (0.5 * logvar2).exp()))
    torch.testing.assert_close(normal_kl(mean1, logvar1, mean2, logvar2), expected)


def test_normal_kl_equals_a_monte_carlo_estimate_within_its_standard_error():
    mean1, logvar1, mean2, logvar2 = (torch.tensor(v, dtype=torch.float64) for v in (0.3, -0.4, -0.5, 0.6))
    x = mean1 + (0.5 * logvar1).exp() * torch.randn(400_000, dtype=torch.float64, generator=generator)
    log_ratio = normal_log_prob(x, mean1, logvar1) - normal_log_prob(x, mean2, logvar2)
    estimate, standard_error = log_ratio.mean(), log_ratio.std() / len(x) ** 0.5
    assert abs(normal_kl(mean1, logvar1, mean2, logvar2) - estimate) < 4 * standard_error


def test_normal_kl_is_zero_only_for_equal_gaussians_and_broadcasts():
    mean, logvar = torch.randn(5, 3), torch.randn(5, 3)
    assert normal_kl(mean, logvar, mean, logvar).abs().max() < 1e-6
    kl = normal_kl(mean, logvar, torch.zeros(3), torch.zeros(3))
    assert kl.shape == (5, 3) and (kl > 0).all()


def test_normal_log_prob_equals_torch_distributions():
    x = torch.randn(1000, dtype=torch.float64, generator=generator) * 3
    mean, logvar = torch.randn(2, 1000, dtype=torch.float64, generator=generator)
    expected = D.Normal(mean, (0.5 * logvar).exp()).log_prob(x)
    torch.testing.assert_close(normal_log_prob(x, mean, logvar), expected)


def test_bernoulli_log_prob_is_minus_bce_and_the_bernoulli_log_likelihood():
    logits = torch.randn(1000, dtype=torch.float64, generator=generator) * 4
    x = torch.bernoulli(torch.full((1000,), 0.4, dtype=torch.float64), generator=generator)
    expected = D.Bernoulli(logits=logits).log_prob(x)
    torch.testing.assert_close(bernoulli_log_prob(x, logits), expected)
    p = torch.sigmoid(logits)
    bce = torch.nn.functional.binary_cross_entropy(p, x, reduction="none")
    torch.testing.assert_close(bernoulli_log_prob(x, logits), -bce)
    # Finite where the probability saturates in floating point.
    saturated = bernoulli_log_prob(torch.tensor([0.0, 1.0]), torch.tensor([200.0, -200.0]))
    assert torch.isfinite(saturated).all() and saturated.tolist() == pytest.approx([-200.0, -200.0])


def test_sum_flat_and_mean_flat_reduce_all_but_the_batch_dimension():
    x = torch.arange(24.0).reshape(2, 3, 4)
    assert sum_flat(x).tolist() == [sum(range(12)), sum(range(12, 24))]
    assert mean_flat(x).tolist() == [5.5, 17.5]
