"""Sample-quality metrics computed in a feature space: the Fréchet distance (FID), the kernel
inception distance (KID), and precision and recall (Kynkäänniemi et al. 2019).

All statistics are float64. Real and generated images reach a feature network through one path,
:func:`to_uint8`, so that both are quantized exactly as stored images are.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "FeatureStatistics",
    "fid_bias",
    "frechet_distance",
    "kernel_inception_distance",
    "precision_recall",
    "to_uint8",
]


def _check_features(name: str, features: np.ndarray | torch.Tensor) -> np.ndarray:
    features = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                          dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a (samples, dimensions) array, got shape {features.shape}")
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features)).any(axis=1).sum())
        raise ValueError(f"{name} has {bad} rows with NaN or infinite features: the feature network "
                         "or the samples are broken; fix them rather than drop rows")
    return features


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images as stored: uint8 in 0..255. Floats must lie in [0, 1] and are rounded, x -> round(255 x)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a tensor or numpy array, got {type(images).__name__}")
    if images.numel() == 0:
        raise ValueError(f"no images: got an empty batch of shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not torch.is_floating_point(images):
        raise ValueError(f"images must be uint8 or floating point in [0, 1], got {images.dtype}")
    if torch.isnan(images).any() or images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"float images must lie in [0, 1] without NaN, got [{images.min():.6g}, {images.max():.6g}]; "
            "map model outputs to [0, 1] first"
        )
    return (images * 255).round().to(torch.uint8)


class FeatureStatistics:
    """Running mean and covariance of feature vectors, merged batch by batch in float64.

    Batches are combined with Chan et al.'s parallel update of the mean and the sum of squared
    deviations, so no feature is kept and no large sums cancel.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self._mean = np.zeros(dim)
        self._scatter = np.zeros((dim, dim))  # sum of (f - mean)(f - mean)^T

    def update(self, features: np.ndarray | torch.Tensor) -> FeatureStatistics:
        """Add a batch of features (n, dim); returns self."""
        batch = _check_features("features", features)
        if batch.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-dimensional features, got {batch.shape[1]}")
        n_b = batch.shape[0]
        if n_b == 0:
            return self
        mean_b = batch.mean(axis=0)
        centred = batch - mean_b
        scatter_b = centred.T @ centred
        delta = mean_b - self._mean
        n = self.n + n_b
        self._scatter += scatter_b + np.outer(delta, delta) * (self.n * n_b / n)
        self._mean += delta * (n_b / n)
        self.n = n
        return self

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """The unbiased sample covariance (divides by n - 1)."""
        if self.n <= self.dim:
            raise ValueError(
                f"{self.n} samples cannot give a full-rank covariance of {self.dim} features: "
                f"use more than {self.dim} samples (FID is reported at N = 10,000)"
            )
        return self._scatter / (self.n - 1)


def _check_covariance(name: str, sigma: np.ndarray) -> np.ndarray:
    """sigma, symmetrized, once checked to be a covariance: symmetric and positive semi-definite
    (to rounding: 1e-6 of its largest entry)."""
    tolerance = 1e-6 * np.abs(sigma).max()
    asymmetry = np.abs(sigma - sigma.T).max()
    if asymmetry > tolerance:
        raise ValueError(f"{name} is not symmetric: the largest entry of |{name} - {name}^T| is "
                         f"{asymmetry:.3g}; a covariance is symmetric: pass FeatureStatistics.covariance "
                         "or np.cov's")
    sigma = (sigma + sigma.T) / 2
    try:  # sigma + tol I has a Cholesky factor when every eigenvalue of sigma exceeds -tol: the quick test
        np.linalg.cholesky(sigma + tolerance * np.eye(len(sigma)))
    except np.linalg.LinAlgError:
        smallest = np.linalg.eigvalsh(sigma)[0]  # the exact test, for a zero or borderline sigma
        if smallest < -tolerance:
            raise ValueError(f"{name} is not positive semi-definite: its smallest eigenvalue is "
                             f"{smallest:.3g}, and a covariance has none below 0: pass "
                             "FeatureStatistics.covariance or np.cov's") from None
    return sigma


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(Sigma1 + Sigma2 - 2 (Sigma1^1/2 Sigma2 Sigma1^1/2)^1/2), in float64.

    The squared 2-Wasserstein distance between N(mu1, Sigma1) and N(mu2, Sigma2). The trace of the
    matrix square root is taken through the symmetric matrix Sigma1^1/2 Sigma2 Sigma1^1/2, whose
    eigenvalues are those of Sigma1 Sigma2, so no complex square roots arise.
    """
    if any(isinstance(value, FeatureStatistics) for value in (mu1, sigma1, mu2, sigma2)):
        raise ValueError("frechet_distance takes means and covariances: pass a.mean, a.covariance, "
                         "b.mean, b.covariance of two FeatureStatistics a and b")
    mu1, mu2 = (np.asarray(m, dtype=np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.asarray(s, dtype=np.float64) for s in (sigma1, sigma2))
    if mu1.ndim != 1:
        raise ValueError(f"mu1 must be a mean vector (d,), got shape {mu1.shape}")
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "feature statistics do not match: means of shapes "
            f"{mu1.shape} and {mu2.shape}, covariances of shapes {sigma1.shape} and {sigma2.shape}; "
            "both sets must come from the same feature network"
        )
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    sigma1, sigma2 = _check_covariance("sigma1", sigma1), _check_covariance("sigma2", sigma2)
    root1 = _symmetric_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_bias(sigma: np.ndarray, n: int, m: int | None = None) -> float:
    """The FID expected between two independent samples of ``n`` and ``m`` points (``m`` = ``n`` if
    not given) from one Gaussian of covariance ``sigma``, to first order in 1/n and 1/m: the
    estimate's bias where the true FID is 0,

        E[FID] ~ (5/2 tr Sigma + sum_ij l_i l_j / (l_i + l_j)) * (1/n + 1/m) / 2,

    with l_i the eigenvalues of Sigma (a pair with l_i + l_j = 0 adds 0). The two sample means give
    tr Sigma (1/n + 1/m); the rest is the scatter of the two sample covariances, seen through the
    second-order expansion of the trace term (the evaluation page derives it, exercise
    ex-evaluation-fid-bias). For Sigma = I_d and m = n it is d (d + 5) / (2 n).
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1] or sigma.shape[0] == 0:
        raise ValueError(f"sigma must be a (d, d) covariance, got shape {sigma.shape}")
    if not np.isfinite(sigma).all():
        raise ValueError("sigma contains NaN or infinite values")
    m = n if m is None else m
    for name, size in (("n", n), ("m", m)):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 2:
            raise ValueError(f"{name} must be a whole number of samples, at least 2 (a sample covariance "
                             f"needs two), got {size!r}")
    eigenvalues = np.clip(np.linalg.eigvalsh(_check_covariance("sigma", sigma)), 0, None)
    l_i, l_j = eigenvalues[:, None], eigenvalues[None, :]
    sums = l_i + l_j
    pairs = np.divide(l_i * l_j, sums, out=np.zeros_like(sums), where=sums > 0)
    return float((2.5 * eigenvalues.sum() + pairs.sum()) * (1 / n + 1 / m) / 2)


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3 (Bińkowski et al. 2018)."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def kernel_inception_distance(
    real: np.ndarray, generated: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: the unbiased MMD^2 between feature sets, averaged over random subsets: (mean, std).

    The std is the spread of the estimate over the subsets. Where both sets hold no more than
    ``subset_size`` samples every subset is the whole of both, so there is no spread to measure and
    the std is NaN (pass a smaller ``subset_size`` to measure one), unless ``subsets`` is 1: one
    estimate, std 0. Where only one set is that small, its subsets are all the same and the std
    understates the estimate's uncertainty."""
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}: KID averages MMD^2 over that many "
                         "random subsets (100 is usual)")
    if subset_size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}: the unbiased MMD^2 needs pairs "
                         "of samples (1000 is usual)")
    real, generated = _check_features("real", real), _check_features("generated", generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, generated {generated.shape[1]}")
    size = min(subset_size, len(real), len(generated))
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    if subsets > 1 and size == len(real) == len(generated):  # every subset: the same whole sets
        return _polynomial_mmd2(real, generated), math.nan
    rng = np.random.default_rng(seed)
    values = [
        _polynomial_mmd2(real[rng.choice(len(real), size, replace=False)],
                         generated[rng.choice(len(generated), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point: (n,)."""
    radii = []
    for start in range(0, len(features), chunk):
        distances = torch.cdist(features[start:start + chunk], features)  # (chunk, n), 0 at itself
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # k + 1: the point itself comes first
    return torch.cat(radii)


def _inside_any_ball(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    inside = torch.zeros(len(queries), dtype=torch.bool)
    for start in range(0, len(queries), 1024):
        distances = torch.cdist(queries[start:start + 1024], centres)
        inside[start:start + 1024] = (distances <= radii[None, :]).any(dim=1)
    return inside


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour balls.

    Precision: the fraction of generated samples inside the union of balls around real samples,
    each ball reaching to its k-th nearest real neighbour (fidelity). Recall: the same with the
    roles swapped (coverage).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}: each ball reaches to the k-th nearest neighbour "
                         "(Kynkäänniemi et al. use k = 3)")
    real, generated = _check_features("real", real), _check_features("generated", generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, generated {generated.shape[1]}")
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision and recall with k = {k} need more than {k} samples in each set")
    real_t, generated_t = torch.from_numpy(real), torch.from_numpy(generated)
    precision = _inside_any_ball(generated_t, real_t, _kth_neighbour_radii(real_t, k)).double().mean()
    recall = _inside_any_ball(real_t, generated_t, _kth_neighbour_radii(generated_t, k)).double().mean()
    return float(precision), float(recall)
