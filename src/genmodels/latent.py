"""A latent variable model whose every quantity is exact: the linear-Gaussian model.

    p(z) = N(z; 0, I_J),    p(x | z) = N(x; W z + b, s^2 I_D)

(probabilistic PCA, Tipping & Bishop 1999). Its marginal p(x) = N(x; b, W W^T + s^2 I) and its
posterior p(z | x) are Gaussian in closed form, so the ELBO's gap and the IWAE bound's approach to
log p(x) can be checked exactly, which no neural VAE allows.
"""

from __future__ import annotations

import math

import torch

from genmodels.distributions import LOG_2PI, normal_log_prob

__all__ = ["LinearGaussian"]


class LinearGaussian:
    """``weight`` W (D, J), ``bias`` b (D,), ``log_sigma`` log s (scalar); float64 throughout."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, log_sigma: float):
        self.weight = torch.as_tensor(weight, dtype=torch.float64)
        self.bias = torch.as_tensor(bias, dtype=torch.float64)
        self.log_sigma = float(log_sigma)
        if self.weight.ndim != 2 or self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"need W (D, J) and b (D,), got {tuple(self.weight.shape)} and "
                             f"{tuple(self.bias.shape)}")

    @property
    def data_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.weight.shape[1]

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(z) + log p(x | z) for x (..., D), z (..., J): (...)."""
        log_prior = normal_log_prob(z, torch.zeros_like(z), torch.zeros_like(z)).sum(-1)
        mean = z @ self.weight.T + self.bias
        logvar = torch.full_like(mean, 2 * self.log_sigma)
        return log_prior + normal_log_prob(x, mean, logvar).sum(-1)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(x; b, C) with C = W W^T + s^2 I, for x (B, D): (B,)."""
        covariance = self.weight @ self.weight.T + math.exp(2 * self.log_sigma) * torch.eye(
            self.data_dim, dtype=torch.float64
        )
        cholesky = torch.linalg.cholesky(covariance)
        whitened = torch.linalg.solve_triangular(cholesky, (x - self.bias).T, upper=False)  # (D, B)
        log_det = 2 * torch.log(torch.diagonal(cholesky)).sum()
        return -0.5 * (whitened.pow(2).sum(0) + log_det + self.data_dim * LOG_2PI)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z | x) = N(M^{-1} W^T (x - b), s^2 M^{-1}) with M = W^T W + s^2 I: means (B, J), cov (J, J)."""
        s2 = math.exp(2 * self.log_sigma)
        m = self.weight.T @ self.weight + s2 * torch.eye(self.latent_dim, dtype=torch.float64)
        m_inverse = torch.linalg.inv(m)
        means = (x - self.bias) @ self.weight @ m_inverse.T
        return means, s2 * m_inverse
