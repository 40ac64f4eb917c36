"""The ELBO and the IWAE bound on a model with an exact likelihood, and the Bernoulli VAE's terms
against torch.distributions."""

import math

import pytest
import torch
from torch import distributions as D

from genmodels.distributions import normal_log_prob
from genmodels.latent import LinearGaussian
from genmodels.train import CheckpointError, save_checkpoint
from genmodels.vae import (
    VAE,
    ELBOTerms,
    VAEConfig,
    binarize,
    elbo_terms,
    importance_weighted_bound,
    iwae_bound,
    kl_to_prior,
    load_vae,
    reparameterize,
)

# --------------------------------------------------------------------------------------------
# An exact model: 1-D latent, 3-D data, so that Bayes' rule can be done by brute force on a grid.


@pytest.fixture(scope="module")
def model():
    weight = torch.tensor([[1.5], [-0.7], [0.4]], dtype=torch.float64)
    return LinearGaussian(weight, torch.tensor([0.2, -0.1, 0.5], dtype=torch.float64), log_sigma=-0.3)


@pytest.fixture(scope="module")
def x():
    return torch.tensor([[1.0, -0.5, 0.3], [-2.0, 1.0, 0.9]], dtype=torch.float64)


def grid_bayes(model, x):
    """log p(x) by quadrature of p(x, z) over z, and the posterior's mean and variance."""
    z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    dz = z[1] - z[0]
    log_joint = model.log_joint(x[:, None, :], z[None, :, None])  # (B, G)
    log_marginal = torch.logsumexp(log_joint, dim=1) + torch.log(dz)
    posterior = (log_joint - log_marginal[:, None]).exp() * dz  # (B, G), rows sum to 1
    mean = (posterior * z).sum(1)
    variance = (posterior * (z - mean[:, None]) ** 2).sum(1)
    return log_marginal, mean, variance


def test_log_marginal_equals_torch_distributions_and_quadrature(model, x):
    noise = math.exp(2 * model.log_sigma) * torch.eye(3, dtype=torch.float64)
    covariance = model.weight @ model.weight.T + noise
    expected = D.MultivariateNormal(model.bias, covariance_matrix=covariance).log_prob(x)
    torch.testing.assert_close(model.log_marginal(x), expected)
    by_quadrature, _, _ = grid_bayes(model, x)
    torch.testing.assert_close(model.log_marginal(x), by_quadrature, rtol=0, atol=1e-8)


def test_posterior_equals_brute_force_bayes(model, x):
    means, covariance = model.posterior(x)
    _, grid_mean, grid_variance = grid_bayes(model, x)
    torch.testing.assert_close(means[:, 0], grid_mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(covariance[0, 0].expand(2), grid_variance, rtol=0, atol=1e-8)


def test_linear_gaussian_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"W \(D, J\) and b \(D,\)"):
        LinearGaussian(torch.zeros(3, 1), torch.zeros(2), 0.0)
    assert (LinearGaussian(torch.zeros(3, 2), torch.zeros(3), 0.0).data_dim,
            LinearGaussian(torch.zeros(3, 2), torch.zeros(3), 0.0).latent_dim) == (3, 2)


def log_weights(model, x, q_mean, q_logvar, k, generator):
    """log p(x, z_k) - log q(z_k) for z_k ~ q = N(q_mean, e^q_logvar): (k, B)."""
    eps = torch.randn(k, *q_mean.shape, dtype=torch.float64, generator=generator)
    z = q_mean + (0.5 * q_logvar).exp() * eps
    return model.log_joint(x, z) - normal_log_prob(z, q_mean, q_logvar).sum(-1)


def test_elbo_is_log_p_minus_the_kl_gap(model, x):
    """ELBO(q) = log p(x) - KL(q(z|x) || p(z|x)) < log p(x) for a q that is not the posterior."""
    generator = torch.Generator().manual_seed(0)
    posterior_mean, posterior_cov = model.posterior(x)
    q_mean, q_logvar = posterior_mean + 0.8, torch.full_like(posterior_mean, math.log(0.3))
    weights = log_weights(model, x, q_mean, q_logvar, 400_000, generator)
    elbo, standard_error = weights.mean(0), weights.std(0) / weights.shape[0] ** 0.5
    gap = D.kl_divergence(
        D.Normal(q_mean[:, 0], (0.5 * q_logvar[:, 0]).exp()),
        D.Normal(posterior_mean[:, 0], posterior_cov[0, 0].sqrt()),
    )
    assert (gap > 0.1).all()
    assert ((elbo - (model.log_marginal(x) - gap)).abs() < 4 * standard_error).all()
    assert (elbo < model.log_marginal(x)).all()


def test_elbo_is_tight_when_q_is_the_posterior(model, x):
    """With q = p(z|x) every importance weight equals p(x): the bound holds with equality."""
    posterior_mean, posterior_cov = model.posterior(x)
    logvar = torch.log(posterior_cov[0, 0]).expand_as(posterior_mean)
    weights = log_weights(model, x, posterior_mean, logvar, 1000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(weights, model.log_marginal(x).expand_as(weights), rtol=0, atol=1e-10)
    torch.testing.assert_close(importance_weighted_bound(weights), model.log_marginal(x), rtol=0, atol=1e-10)


def test_iwae_bound_rises_with_k_towards_log_p(model, x):
    generator = torch.Generator().manual_seed(2)
    posterior_mean, _ = model.posterior(x)
    q_mean, q_logvar = posterior_mean + 0.5, torch.full_like(posterior_mean, math.log(0.5))
    repeats = 2000
    bounds = []
    for k in (1, 4, 16, 64, 256):
        weights = log_weights(model, x, q_mean.expand(repeats, *q_mean.shape),
                              q_logvar.expand(repeats, *q_logvar.shape), k, generator)  # (k, R, B)
        per_repeat = importance_weighted_bound(weights)  # (R, B)
        bounds.append((per_repeat.mean(0), per_repeat.std(0) / repeats**0.5))
    log_p = model.log_marginal(x)
    means = [bound for bound, _ in bounds]
    for smaller, larger in zip(means, means[1:], strict=False):
        assert (larger > smaller).all()
    for bound, standard_error in bounds:
        assert (bound < log_p + 3 * standard_error).all()
    assert ((log_p - bounds[-1][0]).abs() < 0.01).all()
    assert ((log_p - bounds[0][0]) > 0.2).all()


def test_importance_weighted_bound_is_a_log_mean_exp():
    log_w = torch.tensor([[0.0, -1000.0], [math.log(3.0), -1001.0]], dtype=torch.float64)
    expected = torch.tensor([math.log(2.0), -1000 + math.log((1 + math.exp(-1)) / 2)], dtype=torch.float64)
    torch.testing.assert_close(importance_weighted_bound(log_w), expected)


# --------------------------------------------------------------------------------------------
# The Bernoulli VAE


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(hidden_dims=(64,), latent_dim=4))


@pytest.fixture
def images():
    return binarize(torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(3)) ** 3)


def test_kl_to_prior_equals_torch_distributions():
    mu, log_sigma = torch.randn(2, 16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    q = D.Independent(D.Normal(mu, log_sigma.exp()), 1)
    prior = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(kl_to_prior(mu, log_sigma), D.kl_divergence(q, prior))


def test_kl_to_prior_equals_a_monte_carlo_estimate_within_its_standard_error():
    """E_q[log q(z) - log p(z)] over draws of z ~ q, independent of the closed form."""
    generator = torch.Generator().manual_seed(5)
    mu = torch.tensor([[0.8, -1.2, 0.1]], dtype=torch.float64)
    log_sigma = torch.tensor([[-0.5, 0.3, -1.0]], dtype=torch.float64)
    z = mu + log_sigma.exp() * torch.randn(200_000, 3, dtype=torch.float64, generator=generator)
    log_ratio = (normal_log_prob(z, mu, 2 * log_sigma) - normal_log_prob(z, 0 * z, 0 * z)).sum(-1)
    estimate, standard_error = log_ratio.mean(), log_ratio.std() / len(z) ** 0.5
    assert abs(kl_to_prior(mu, log_sigma).item() - estimate) < 4 * standard_error


def test_reparameterize_draws_from_q_and_passes_gradients():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    log_sigma = torch.tensor([0.0, math.log(0.5)], requires_grad=True)
    eps = torch.tensor([0.5, 2.0])
    z = reparameterize(mu, log_sigma, eps)
    torch.testing.assert_close(z, torch.tensor([1.5, -1.0]))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(2))
    torch.testing.assert_close(log_sigma.grad, torch.tensor([0.5, 1.0]))  # d/dlog_sigma = sigma * eps
    torch.manual_seed(5)
    draws = reparameterize(torch.full((200_000,), 3.0), torch.full((200_000,), math.log(2.0)))
    assert draws.mean().item() == pytest.approx(3.0, abs=0.02)
    assert draws.std().item() == pytest.approx(2.0, abs=0.02)


def test_elbo_terms_equal_torch_distributions(vae, images):
    eps = torch.randn(8, 4, generator=torch.Generator().manual_seed(6))
    terms = elbo_terms(vae, images, eps=eps)
    assert isinstance(terms, ELBOTerms) and terms.reconstruction.shape == terms.kl.shape == (8,)
    x = images.reshape(8, 784)
    mu, log_sigma = vae.encoder(x)
    q = D.Independent(D.Normal(mu, log_sigma.exp()), 1)
    prior = D.Independent(D.Normal(torch.zeros(4), torch.ones(4)), 1)
    likelihood = D.Independent(D.Bernoulli(logits=vae.decoder(mu + log_sigma.exp() * eps)), 1)
    torch.testing.assert_close(terms.reconstruction, likelihood.log_prob(x))
    torch.testing.assert_close(terms.kl, D.kl_divergence(q, prior))
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)
    # The lecture's loss: KL plus binary cross-entropy (summed over pixels).
    bce = torch.nn.functional.binary_cross_entropy(
        torch.sigmoid(vae.decoder(mu + log_sigma.exp() * eps)), x, reduction="none").sum(1)
    torch.testing.assert_close(-terms.elbo, terms.kl + bce, rtol=1e-4, atol=1e-3)


def test_iwae_bound_with_one_sample_is_the_elbo_and_rises_with_k(vae, images):
    torch.manual_seed(7)
    repeats = 300
    elbo = torch.stack([elbo_terms(vae, images).elbo.detach() for _ in range(repeats)]).mean(0)
    k1 = torch.stack([iwae_bound(vae, images, k=1) for _ in range(repeats)]).mean(0)
    k100 = iwae_bound(vae, images, k=100, chunk=30)
    assert (elbo - k1).abs().max() < 1.5  # the same expectation; both average 300 draws
    assert (k100 > k1).all()


def test_iwae_bound_equals_torch_distributions_draw_for_draw(images):
    """Each log-weight log p(x | z) + log p(z) - log q(z | x) rebuilt from torch.distributions with
    the same draws, chunked as iwae_bound draws them (30, 30, 30, then 10 of k = 100). The encoder's
    log sigma is moved to about -1, where sigma and sigma^2 differ."""
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden_dims=(64,), latent_dim=4))
    with torch.no_grad():
        model.encoder.net[-1].bias[4:] -= 1.0  # the log sigma half of the last layer
    x = images.reshape(8, 784)
    mu, log_sigma = model.encoder(x)
    assert -1.5 < log_sigma.mean().item() < -0.5
    torch.manual_seed(11)
    bound = iwae_bound(model, images, k=100, chunk=30)
    torch.manual_seed(11)
    eps = torch.cat([torch.randn(n, 8, 4) for n in (30, 30, 30, 10)])  # (k, B, J)
    with torch.no_grad():
        z = mu + log_sigma.exp() * eps
        q = D.Independent(D.Normal(mu, log_sigma.exp()), 1)
        prior = D.Independent(D.Normal(torch.zeros(4), torch.ones(4)), 1)
        likelihood = D.Independent(D.Bernoulli(logits=model.decoder(z)), 1)
        log_w = likelihood.log_prob(x) + prior.log_prob(z) - q.log_prob(z)  # (k, B)
    expected = torch.logsumexp(log_w, dim=0) - math.log(100)
    torch.testing.assert_close(bound, expected, rtol=0, atol=1e-4)


def test_vae_rejects_bad_images(vae):
    with pytest.raises(ValueError, match=r"784 pixels.*got \(8, 1, 32, 32\)"):
        elbo_terms(vae, torch.zeros(8, 1, 32, 32))
    with pytest.raises(ValueError, match="binarize it first"):
        elbo_terms(vae, torch.full((8, 784), 0.5))
    with pytest.raises(ValueError, match=r"scale pixels to \[0, 1\]"):
        iwae_bound(vae, torch.full((8, 784), 255.0), k=2)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        binarize(torch.full((2, 784), 2.0))


def test_binarize_is_a_bernoulli_draw_with_the_pixel_as_mean():
    x = torch.linspace(0, 1, 11).expand(20_000, 11)
    b = binarize(x, generator=torch.Generator().manual_seed(8))
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(b.mean(0), torch.linspace(0, 1, 11), atol=0.015, rtol=0)


def test_sample_and_decode(vae):
    probabilities, draws = vae.sample(6, generator=torch.Generator().manual_seed(9))
    assert probabilities.shape == draws.shape == (6, 1, 28, 28)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    # z ~ N(0, I) from the same stream, then p = sigmoid(logits) and x ~ Bernoulli(p) pixel by pixel
    generator = torch.Generator().manual_seed(9)
    z = torch.randn(6, 4, generator=generator)
    with torch.no_grad():
        expected = torch.sigmoid(vae.decoder(z)).reshape(6, 1, 28, 28)
    torch.testing.assert_close(probabilities, expected)
    torch.testing.assert_close(vae.decode(z), expected)
    assert torch.equal(draws, torch.bernoulli(expected, generator=generator))  # the stream goes on
    with pytest.raises(ValueError, match=r"4-dimensional latent space: z must have shape \(n, 4\)"):
        vae.decode(torch.zeros(3, 2))


def test_load_vae_rebuilds_the_model_from_its_checkpoint(vae, images, tmp_path):
    path = save_checkpoint(tmp_path / "vae.pt", vae, config=vae.config)
    loaded, checkpoint = load_vae(path)
    assert loaded.config == vae.config and not loaded.training
    eps = torch.randn(8, 4)
    torch.testing.assert_close(elbo_terms(loaded, images, eps).elbo, elbo_terms(vae, images, eps).elbo)
    with pytest.raises(CheckpointError, match=r"'latent_dim': 4"):
        from genmodels.train import load_checkpoint

        load_checkpoint(path, VAE(VAEConfig(hidden_dims=(64,), latent_dim=2)))
