"""Exact transport distances: sorting = primal LP = dual LP; the parallel-lines example."""

import math

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance

from genmodels.wasserstein import (
    hellinger_distance,
    js_divergence,
    kantorovich_dual,
    kl_divergence,
    optimal_transport,
    parallel_lines,
    total_variation,
    w1_1d,
)

rng = np.random.default_rng(0)


def random_discrete(n):
    weights = rng.uniform(0.1, 1, n)
    return rng.normal(0, 2, n), weights / weights.sum()


@pytest.mark.parametrize("trial", range(5))
def test_w1_by_sorting_equals_primal_and_dual_linear_programs(trial):
    x, a = random_discrete(7)
    y, b = random_discrete(9)
    by_sorting = w1_1d(x, y, a, b)
    primal, plan = optimal_transport(x, y, a, b, p=1)
    dual, f = kantorovich_dual(x, y, a, b)
    assert by_sorting == pytest.approx(primal, rel=1e-8)
    assert dual == pytest.approx(primal, rel=1e-7)
    assert by_sorting == pytest.approx(wasserstein_distance(x, y, a, b), rel=1e-10)  # scipy's
    # The plan is a coupling of a and b, and the dual's f is 1-Lipschitz on the support.
    np.testing.assert_allclose(plan.sum(1), a, atol=1e-9)
    np.testing.assert_allclose(plan.sum(0), b, atol=1e-9)
    support = np.concatenate([x, y])
    assert (np.abs(f[:, None] - f[None, :]) <= np.abs(support[:, None] - support[None, :]) + 1e-9).all()


def test_w1_between_unit_gaussians_is_the_shift():
    x = rng.normal(0.3, 1, 200_000)
    y = rng.normal(-1.2, 1, 200_000)
    assert w1_1d(x, y) == pytest.approx(1.5, abs=0.01)


def kantorovich_by_dense_linear_program(x, y, a, b, p=1):
    """The reference: Kantorovich's linear program written out with dense constraint matrices."""
    n, m = len(x), len(y)
    rows = np.repeat(np.eye(n), m, axis=1)  # sum_j gamma_ij = a_i
    columns = np.tile(np.eye(m), n)  # sum_i gamma_ij = b_j
    result = linprog((cdist(x, y) ** p).ravel(), A_eq=np.vstack([rows, columns]),
                     b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    assert result.success
    return result.fun


@pytest.mark.parametrize(("trial", "p"), [(0, 1), (1, 1), (2, 2)])
def test_optimal_transport_with_equal_weights_is_an_assignment(trial, p):
    """Between two clouds of n equally weighted points an optimal plan is a permutation (Birkhoff):
    the assignment the function solves reaches the linear program's optimum, and is a coupling."""
    x, y = rng.normal(size=(25, 2)), rng.normal(size=(25, 2)) + [1.0, 0.0]
    cost, plan = optimal_transport(x, y, p=p)
    uniform = np.full(25, 1 / 25)
    assert cost == pytest.approx(kantorovich_by_dense_linear_program(x, y, uniform, uniform, p), rel=1e-9)
    np.testing.assert_allclose(plan.sum(0), uniform)
    np.testing.assert_allclose(plan.sum(1), uniform)
    assert np.count_nonzero(plan) == 25  # a permutation, each pair carrying 1/n
    assert cost == pytest.approx(np.sum(plan * cdist(x, y) ** p))
    # Weights given explicitly, or samples of different sizes, take the general linear program:
    weights = rng.uniform(0.1, 1, 25)
    weights /= weights.sum()
    weighted, _ = optimal_transport(x, y, weights, uniform, p=p)
    assert weighted == pytest.approx(kantorovich_by_dense_linear_program(x, y, weights, uniform, p), rel=1e-8)
    fewer, _ = optimal_transport(x, y[:20], p=p)
    assert fewer == pytest.approx(
        kantorovich_by_dense_linear_program(x, y[:20], uniform, np.full(20, 1 / 20), p), rel=1e-8
    )


def test_optimal_transport_in_2d_agrees_with_the_dual_and_with_w2_for_a_shift():
    x = rng.normal(size=(12, 2))
    shift = np.array([0.7, -0.4])
    primal, plan = optimal_transport(x, x + shift, p=1)
    dual, _ = kantorovich_dual(x, x + shift)
    assert primal == pytest.approx(np.linalg.norm(shift), rel=1e-8)  # moving every point is optimal
    assert dual == pytest.approx(primal, rel=1e-7)
    squared, _ = optimal_transport(x, x + shift, p=2)
    assert squared == pytest.approx(np.sum(shift**2), rel=1e-8)  # W2^2 with cost |x - y|^2


@pytest.mark.parametrize("theta", [-1.0, -0.3, 0.05, 0.5])
def test_parallel_lines_w_is_theta_and_the_divergences_jump(theta):
    p_points, q_points, p, q = parallel_lines(theta)
    assert len(p) == 82 and p.sum() == pytest.approx(1) and np.all(p * q == 0)  # disjoint supports
    w1, _ = optimal_transport(p_points, q_points)
    assert w1 == pytest.approx(abs(theta), rel=1e-8)
    assert js_divergence(p, q) == pytest.approx(math.log(2))
    assert kl_divergence(p, q) == math.inf
    assert total_variation(p, q) == pytest.approx(1.0)
    assert hellinger_distance(p, q) == pytest.approx(1.0)


def test_parallel_lines_at_zero_every_distance_is_zero():
    p_points, q_points, p, q = parallel_lines(0.0)
    assert len(p) == 41 and np.array_equal(p, q)  # one shared support of 41 points
    assert optimal_transport(p_points, q_points)[0] == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(p, q) == kl_divergence(p, q) == total_variation(p, q) == 0.0
    assert hellinger_distance(p, q) == pytest.approx(0.0, abs=1e-7)


def test_divergences_against_direct_formulas():
    p = np.array([0.2, 0.5, 0.3])
    q = np.array([0.4, 0.4, 0.2])
    expected_kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert kl_divergence(p, q) == pytest.approx(expected_kl)
    m = (p + q) / 2
    expected_js = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m, strict=True)) + 0.5 * sum(
        qi * math.log(qi / mi) for qi, mi in zip(q, m, strict=True))
    assert js_divergence(p, q) == pytest.approx(expected_js)
    assert total_variation(p, q) == pytest.approx(0.2)
    affinity = sum(math.sqrt(a * b) for a, b in zip(p, q, strict=True))
    assert hellinger_distance(p, q) == pytest.approx(math.sqrt(1 - affinity))
    with pytest.raises(ValueError, match="sum to 1"):
        kl_divergence(np.array([0.5, 0.6]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="weights summing to 1"):
        w1_1d(np.zeros(2), np.ones(2), a=np.array([0.2, 0.2]))


def test_the_optimal_discriminator_turns_the_gan_value_into_jensen_shannon():
    from scipy.spatial.distance import jensenshannon

    from genmodels.wasserstein import gan_value, optimal_discriminator

    rng = np.random.default_rng(3)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(6)), rng.dirichlet(np.ones(6))
        best = gan_value(p, q, optimal_discriminator(p, q))
        # SciPy's Jensen-Shannon *distance* (natural log) is the square root of the divergence
        assert best == pytest.approx(2 * jensenshannon(p, q) ** 2 - math.log(4), abs=1e-12)
        for _ in range(20):  # no other discriminator does better
            assert gan_value(p, q, rng.uniform(0.01, 0.99, 6)) <= best + 1e-12
    # disjoint supports (the parallel lines): D* is 1 on the data and 0 on the samples, V = 0 whatever
    # the distance between them, the constant 2 log 2 - log 4
    p, q = np.array([0.5, 0.5, 0, 0]), np.array([0, 0, 0.5, 0.5])
    assert optimal_discriminator(p, q).tolist() == [1, 1, 0, 0]
    assert gan_value(p, q, optimal_discriminator(p, q)) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gan_value(p, q, np.array([0.5, 0.5, 0.5, 1.5]))
