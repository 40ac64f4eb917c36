"""Closed-form densities and divergences that every chapter reuses, elementwise and broadcasting.

Gaussians are parameterized by mean and log-variance (``logvar`` = log sigma^2), as in the papers;
sums over data dimensions are left to the caller (:func:`sum_flat`), so each formula reads as on
the page.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["bernoulli_log_prob", "mean_flat", "normal_kl", "normal_log_prob", "sum_flat"]

LOG_2PI = math.log(2 * math.pi)


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats (broadcasting)."""
    # 0.5 * (log s2^2 - log s1^2 + (s1^2 + (m1 - m2)^2) / s2^2 - 1)
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mean1 - mean2) ** 2) * (-logvar2).exp() - 1.0)


def normal_log_prob(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, e^logvar) per element, in nats (broadcasting)."""
    # -0.5 * (log 2 pi + log s^2 + (x - m)^2 / s^2)
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * (-logvar).exp())


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; p = sigmoid(logits)) = x log p + (1 - x) log(1 - p) per element.

    Equal to minus the binary cross-entropy, computed from logits so that it stays finite when p
    is 0 or 1 in floating point. It is a log-likelihood only for x in {0, 1}.
    """
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def sum_flat(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first (the batch): (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first (the batch): (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)
