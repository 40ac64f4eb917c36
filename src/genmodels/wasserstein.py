"""Distances between distributions, computed exactly on small problems.

* the Wasserstein-1 distance in one dimension, from the cumulative distribution functions;
* optimal transport between two discrete distributions, as the linear program of Kantorovich (as an
  assignment problem between equally weighted samples of one size);
* the Kantorovich-Rubinstein dual of W1, as a linear program over 1-Lipschitz functions;
* the f-divergences the WGAN chapter compares with W (KL, Jensen-Shannon, total variation,
  Hellinger) for discrete distributions on a common support.

Discrete distributions are given as weights ``a`` (n,), summing to one, on points ``x`` (n, d).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial.distance import cdist

__all__ = [
    "gan_value",
    "hellinger_distance",
    "js_divergence",
    "kantorovich_dual",
    "kl_divergence",
    "optimal_discriminator",
    "optimal_transport",
    "parallel_lines",
    "total_variation",
    "w1_1d",
]


def _weights(a: np.ndarray, n: int, name: str) -> np.ndarray:
    a = np.full(n, 1.0 / n) if a is None else np.asarray(a, dtype=np.float64)
    if a.shape != (n,) or (a < 0).any() or not np.isclose(a.sum(), 1.0):
        raise ValueError(f"{name} must be {n} non-negative weights summing to 1")
    return a


def _points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def w1_1d(x: np.ndarray, y: np.ndarray, a: np.ndarray | None = None, b: np.ndarray | None = None) -> float:
    """W1 between two distributions on the real line: the integral of |F(t) - G(t)| dt.

    ``x`` (n,) with weights ``a`` and ``y`` (m,) with weights ``b`` (uniform if None).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = _weights(a, len(x), "a"), _weights(b, len(y), "b")
    points = np.concatenate([x, y])
    mass = np.concatenate([a, -b])  # F - G jumps by +a_i at x_i and by -b_j at y_j
    order = np.argsort(points, kind="stable")
    cdf_gap = np.cumsum(mass[order])[:-1]  # F(t) - G(t) between consecutive support points
    return float(np.sum(np.abs(cdf_gap) * np.diff(points[order])))


def optimal_transport(
    x: np.ndarray, y: np.ndarray, a: np.ndarray | None = None, b: np.ndarray | None = None, p: int = 1
) -> tuple[float, np.ndarray]:
    """Kantorovich's problem: min_gamma sum_ij gamma_ij |x_i - y_j|^p over couplings of a and b.

    Returns (the minimal cost, the optimal plan gamma (n, m)); the cost is W_p^p. Solved exactly as
    a linear program (HiGHS), so keep n * m to a few hundred thousand. Between two samples of the
    same size n with equal weights 1/n, the couplings are the doubly stochastic matrices divided by
    n, whose vertices are the permutations (Birkhoff-von Neumann); a linear program attains its
    optimum at a vertex, so the assignment problem solves this case exactly, in milliseconds where
    the linear program takes seconds.
    """
    x, y = _points(x), _points(y)
    a, b = _weights(a, len(x), "a"), _weights(b, len(y), "b")
    n, m = len(x), len(y)
    cost = cdist(x, y) ** p
    if n == m and np.all(a == a[0]) and np.all(b == b[0]):
        rows, columns = linear_sum_assignment(cost)
        plan = np.zeros((n, m))
        plan[rows, columns] = 1.0 / n
        return float(cost[rows, columns].mean()), plan
    # Equality constraints on gamma (flattened row by row): row sums are a, column sums are b.
    rows = sparse.kron(sparse.eye(n), np.ones((1, m)))
    columns = sparse.kron(np.ones((1, n)), sparse.eye(m))
    result = linprog(cost.ravel(), A_eq=sparse.vstack([rows, columns]).tocsr(), b_eq=np.concatenate([a, b]),
                     bounds=(0, None), method="highs")
    if not result.success:
        raise RuntimeError(f"the transport linear program failed: {result.message}")
    return float(result.fun), result.x.reshape(n, m)


def kantorovich_dual(
    x: np.ndarray, y: np.ndarray, a: np.ndarray | None = None, b: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """W1 by Kantorovich-Rubinstein duality: max_f sum_i a_i f(x_i) - sum_j b_j f(y_j) over f with
    |f(u) - f(v)| <= |u - v| for all support points u, v.

    Returns (the maximal value, f on the support points: x first, then y). A linear program
    with one variable per support point and two constraints per pair.
    """
    x, y = _points(x), _points(y)
    a, b = _weights(a, len(x), "a"), _weights(b, len(y), "b")
    support = np.vstack([x, y])
    k = len(support)
    distance = cdist(support, support)
    i, j = np.triu_indices(k, 1)
    difference = np.zeros((len(i), k))
    difference[np.arange(len(i)), i] = 1
    difference[np.arange(len(i)), j] = -1
    # f(u) - f(v) <= d(u, v) and f(v) - f(u) <= d(u, v)
    constraints = np.vstack([difference, -difference])
    bounds = np.concatenate([distance[i, j], distance[i, j]])
    objective = np.concatenate([a, -b])
    # f is defined up to a constant: pin f at the first point to 0.
    variable_bounds = [(0, 0)] + [(None, None)] * (k - 1)
    result = linprog(-objective, A_ub=constraints, b_ub=bounds, bounds=variable_bounds, method="highs")
    if not result.success:
        raise RuntimeError(f"the dual linear program failed: {result.message}")
    return float(-result.fun), result.x


def _discrete_pair(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q must be probability vectors on one support, got {p.shape} and {q.shape}")
    for name, v in (("p", p), ("q", q)):
        if (v < 0).any() or not np.isclose(v.sum(), 1.0):
            raise ValueError(f"{name} must be non-negative and sum to 1")
    return p, q


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) = sum p log(p / q) in nats; infinite where p puts mass on q's zeros."""
    p, q = _discrete_pair(p, q)
    where = p > 0
    if (q[where] == 0).any():
        return float("inf")
    return float(np.sum(p[where] * np.log(p[where] / q[where])))


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2; at most log 2."""
    p, q = _discrete_pair(p, q)
    m = (p + q) / 2
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def optimal_discriminator(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The original GAN's best discriminator for data p and generator q on one finite support:
    D*(x) = p(x) / (p(x) + q(x)), maximizing p log D + q log(1 - D) point by point (1/2 where neither
    has mass, where any value does)."""
    p, q = _discrete_pair(p, q)
    total = p + q
    return np.divide(p, total, out=np.full_like(p, 0.5), where=total > 0)


def gan_value(p: np.ndarray, q: np.ndarray, d: np.ndarray) -> float:
    """The original GAN's value V(D, G) = E_p[log D] + E_q[log(1 - D)] for a discriminator d with values
    in [0, 1] on the support (terms with zero mass count 0, so D* may be 0 or 1 where it should be)."""
    p, q = _discrete_pair(p, q)
    d = np.asarray(d, dtype=np.float64)
    if d.shape != p.shape or (d < 0).any() or (d > 1).any():
        raise ValueError(f"d must hold a value in [0, 1] for each of the {len(p)} support points")
    with np.errstate(divide="ignore"):
        real = np.where(p > 0, p * np.log(np.where(p > 0, d, 1.0)), 0.0)
        fake = np.where(q > 0, q * np.log(np.where(q > 0, 1 - d, 1.0)), 0.0)
    return float(real.sum() + fake.sum())


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """TV(p, q) = sup_A |p(A) - q(A)| = sum |p - q| / 2."""
    p, q = _discrete_pair(p, q)
    return float(np.abs(p - q).sum() / 2)


def hellinger_distance(p: np.ndarray, q: np.ndarray) -> float:
    """H(p, q) = sqrt(1 - sum sqrt(p q)), between 0 and 1."""
    p, q = _discrete_pair(p, q)
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def parallel_lines(theta: float, n: int = 41) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arjovsky et al.'s example: P_0 = law of (0, Z) and P_theta = law of (theta, Z), Z uniform on
    n points of [0, 1]. Returns both point sets (n, 2) and both probability vectors on their joint
    support (for the divergences)."""
    z = np.linspace(0, 1, n)
    p_points = np.stack([np.zeros(n), z], 1)
    q_points = np.stack([np.full(n, float(theta)), z], 1)
    support, index = np.unique(np.vstack([p_points, q_points]), axis=0, return_inverse=True)
    index = index.reshape(-1)
    p = np.bincount(index[:n], minlength=len(support)) / n
    q = np.bincount(index[n:], minlength=len(support)) / n
    return p_points, q_points, p, q
