"""The variational autoencoder for Bernoulli data (Kingma & Welling 2014), as the lecture draws it:

    p(z) = N(z; 0, I)                         prior
    (p_1, ..., p_D) = Decoder_theta(z)        p_theta(x | z) = prod_d Bernoulli(x_d; p_d)
    (mu, log sigma) = Encoder_phi(x)          q_phi(z | x) = N(z; mu, diag(sigma^2))

and the objective, per example, ELBO = E_q[log p_theta(x | z)] - KL(q_phi(z | x) || p(z)).
Images are (B, 1, 28, 28) or (B, 784) with binary pixels; the decoder returns logits.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from genmodels.distributions import bernoulli_log_prob, normal_kl, normal_log_prob, sum_flat
from genmodels.train import load_model

__all__ = [
    "ELBOTerms",
    "VAE",
    "VAEConfig",
    "binarize",
    "elbo_terms",
    "importance_weighted_bound",
    "iwae_bound",
    "kl_to_prior",
    "load_vae",
    "reparameterize",
]


@dataclass
class VAEConfig:
    data_dim: int = 784  # D: pixels of a 28 x 28 image
    hidden_dims: tuple[int, ...] = (512, 256)  # encoder widths; the decoder mirrors them
    latent_dim: int = 32  # size of z (2 gives a latent space that can be drawn)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.GELU()]
    return nn.Sequential(*layers[:-1])  # no activation after the last layer


class Encoder(nn.Module):
    """x (B, D) -> (mu, log sigma), each (B, latent_dim): the parameters of q_phi(z | x)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.net = _mlp([config.data_dim, *config.hidden_dims, 2 * config.latent_dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.net(x).chunk(2, dim=-1)
        return mu, log_sigma


class Decoder(nn.Module):
    """z (..., latent_dim) -> logits (..., D); pixel probabilities are p = sigmoid(logits)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.net = _mlp([config.latent_dim, *reversed(config.hidden_dims), config.data_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VAE(nn.Module):
    """Encoder and decoder together, with the config they were built from."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """Check that x is a non-empty batch of binary images of the right size and of the weights' dtype;
        return it as (B, D)."""
        d = self.config.data_dim
        if x.ndim < 2 or math.prod(x.shape[1:]) != d:
            raise ValueError(
                f"expected a batch of images with {d} pixels, shape (B, 1, 28, 28) or (B, {d}); "
                f"got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"empty batch: x has shape {tuple(x.shape)}; pass at least one image")
        self._check_dtype("x", x)
        x = x.reshape(x.shape[0], d)  # (B, 1, 28, 28) -> (B, D)
        if not ((x == 0) | (x == 1)).all():
            low, high = x.min().item(), x.max().item()
            hint = ("binarize it first with genmodels.vae.binarize (the Bernoulli likelihood, and so "
                    "BCE, is a likelihood only for binary pixels)")
            if low < 0 or high > 1:
                hint = "scale pixels to [0, 1] (uint8 / 255), then " + hint
            raise ValueError(
                f"the Bernoulli VAE needs pixels in {{0, 1}}, got values in [{low:.3g}, {high:.3g}]: {hint}"
            )
        return x

    def _check_dtype(self, name: str, x: torch.Tensor) -> None:
        weights = next(self.parameters()).dtype
        if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
            fix = (f"{name}.float() for binary pixels, binarize({name}.float() / 255) for pixels 0..255"
                   if x.dtype == torch.uint8 else f"{name}.to({weights})")
            raise ValueError(f"{name} has dtype {x.dtype}, the VAE's weights {weights}: convert with {fix}")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities p = sigmoid(Decoder(z)) as images: (n, J) -> (n, 1, 28, 28)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"this VAE has a {self.config.latent_dim}-dimensional latent space: z must have shape "
                f"(n, {self.config.latent_dim}), got {tuple(z.shape)}"
            )
        self._check_dtype("z", z)
        side = math.isqrt(self.config.data_dim)
        return torch.sigmoid(self.decoder(z)).reshape(-1, 1, side, side)  # (n, D) -> (n, 1, H, W)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ p(z), then the decoder's pixel probabilities and a Bernoulli draw: two (n, 1, 28, 28)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        probabilities = self.decode(z)
        return probabilities, torch.bernoulli(probabilities, generator=generator)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: each pixel x_d in [0, 1] becomes a draw b_d ~ Bernoulli(x_d)."""
    if x.numel() == 0:
        raise ValueError(f"no images: got an empty batch of shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"binarize needs float pixel values in [0, 1], got dtype {x.dtype}: for uint8 "
                         "pixels pass x.float() / 255")
    if x.isnan().any() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"binarize needs pixel values in [0, 1] without NaN, got [{x.min():.3g}, "
                         f"{x.max():.3g}]{' and NaN' if x.isnan().any() else ''}")
    return torch.bernoulli(x, generator=generator)


def reparameterize(
    mu: torch.Tensor, log_sigma: torch.Tensor, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a draw from q(z | x) that is differentiable in phi."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + log_sigma.exp() * eps


def kl_to_prior(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per example, in nats: (B, J) -> (B,)."""
    # -0.5 * sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)
    zero = torch.zeros_like(mu)
    return sum_flat(normal_kl(mu, 2 * log_sigma, zero, zero))


class ELBOTerms(NamedTuple):
    """The two terms of the ELBO per example, in nats: ELBO = reconstruction - kl."""

    reconstruction: torch.Tensor  # (B,) a one-sample estimate of E_q[log p_theta(x | z)]
    kl: torch.Tensor  # (B,) KL(q_phi(z | x) || p(z)), in closed form

    @property
    def elbo(self) -> torch.Tensor:
        return self.reconstruction - self.kl


def elbo_terms(model: VAE, x: torch.Tensor, eps: torch.Tensor | None = None) -> ELBOTerms:
    """Encode, reparameterize, decode: the reconstruction log-likelihood and the KL per example.

    The loss of the lecture is ``-(reconstruction - kl)``, i.e. KL plus binary cross-entropy.
    """
    x = model.flatten(x)
    mu, log_sigma = model.encoder(x)
    z = reparameterize(mu, log_sigma, eps)
    logits = model.decoder(z)
    return ELBOTerms(sum_flat(bernoulli_log_prob(x, logits)), kl_to_prior(mu, log_sigma))


def importance_weighted_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k w_k from log w_k = log p(x, z_k) - log q(z_k | x): (K, B) -> (B,).

    With K = 1 this is the ELBO's one-sample estimate; its expectation rises with K to log p(x)
    (Burda et al. 2016, Theorem 1).
    """
    if log_weights.ndim == 0 or log_weights.shape[0] == 0:
        raise ValueError(f"log_weights must have shape (K, B) with K >= 1 samples per example first, got "
                         f"{tuple(log_weights.shape)}")
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


@torch.no_grad()
def iwae_bound(model: VAE, x: torch.Tensor, k: int, chunk: int = 500) -> torch.Tensor:
    """The importance-weighted lower bound on log p(x) with k samples of q(z | x), per example (B,).

    The k samples are drawn ``chunk`` at a time, so memory stays at chunk x B decoder outputs.
    """
    for name, value in (("k", k), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a whole number, at least 1, got {value!r}: k counts the "
                             "samples of q(z | x) (k = 1 gives the ELBO), chunk how many are drawn at a time")
    x = model.flatten(x)
    mu, log_sigma = model.encoder(x)
    log_weights = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = torch.randn(n, *mu.shape, device=mu.device, dtype=mu.dtype)
        z = reparameterize(mu, log_sigma, eps)  # (n, B, J)
        log_likelihood = bernoulli_log_prob(x.expand(n, *x.shape), model.decoder(z)).sum(-1)
        log_prior = normal_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)
        log_q = normal_log_prob(z, mu, 2 * log_sigma).sum(-1)
        log_weights.append(log_likelihood + log_prior - log_q)  # (n, B)
    return importance_weighted_bound(torch.cat(log_weights))


def load_vae(path, map_location: str | torch.device | None = "cpu") -> tuple[VAE, dict]:
    """A VAE built from the config stored in a checkpoint, with its weights, in eval mode on
    ``map_location``: (model, checkpoint)."""
    return load_model(path, VAE, VAEConfig, map_location)
