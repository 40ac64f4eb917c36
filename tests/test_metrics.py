"""Fréchet distance, KID and precision/recall against independent references and known answers."""

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.optimize import linear_sum_assignment
from scipy.stats import wasserstein_distance

from genmodels.metrics import (
    FeatureStatistics,
    fid_bias,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
    to_uint8,
)

rng = np.random.default_rng(0)


def random_covariance(d, rng):
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def test_frechet_distance_is_zero_for_identical_statistics_and_symmetric():
    mu, sigma = rng.standard_normal(16), random_covariance(16, rng)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    mu2, sigma2 = rng.standard_normal(16), random_covariance(16, rng)
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(frechet_distance(mu2, sigma2, mu, sigma))


def test_frechet_distance_closed_form_for_commuting_covariances():
    """Diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2."""
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    s1, s2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d", [2, 10, 64])
def test_frechet_distance_equals_pytorch_fid(d):
    for _ in range(5):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        sigma1, sigma2 = random_covariance(d, rng), random_covariance(d, rng)
        expected = calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
        assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_frechet_distance_is_w2_squared_by_exact_optimal_transport_in_1d():
    """In 1-D, W2 between samples is the sorted matching; for Gaussians it tends to the closed form."""
    n = 200_000
    x = rng.normal(1.0, 2.0, n)
    y = rng.normal(-0.5, 0.7, n)
    w2_squared_by_transport = np.mean((np.sort(x) - np.sort(y)) ** 2)
    fid = frechet_distance(np.array([x.mean()]), np.array([[x.var(ddof=1)]]),
                           np.array([y.mean()]), np.array([[y.var(ddof=1)]]))
    assert fid == pytest.approx(w2_squared_by_transport, rel=0.01)
    assert fid == pytest.approx(1.5**2 + (2.0 - 0.7) ** 2, rel=0.01)
    # The sorted matching is the optimal assignment (checked on a small sample by the Hungarian method).
    small_x, small_y = x[:200], y[:200]
    cost = (small_x[:, None] - small_y[None, :]) ** 2
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].mean() == pytest.approx(np.mean((np.sort(small_x) - np.sort(small_y)) ** 2))
    assert wasserstein_distance(small_x, small_y) <= np.sqrt(cost[rows, cols].mean()) + 1e-12  # W1 <= W2


def test_frechet_distance_rejects_bad_statistics():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="same feature network"):
        frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, sigma, np.full(4, np.nan), sigma)


def test_streaming_statistics_equal_numpy_on_all_features_at_once():
    features = rng.standard_normal((5000, 12)) * rng.uniform(0.5, 3, 12) + 1e4  # a large offset
    statistics = FeatureStatistics(12)
    for batch in np.array_split(features, 17):
        statistics.update(torch.from_numpy(batch))
    assert statistics.n == 5000
    np.testing.assert_allclose(statistics.mean, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(statistics.covariance, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-9)


def test_streaming_statistics_refuse_bad_features():
    statistics = FeatureStatistics(4)
    with pytest.raises(ValueError, match="expected 4-dimensional"):
        statistics.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        statistics.update(np.array([[0.0, np.nan, 0.0, 0.0]]))
    statistics.update(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="use more than 4 samples"):
        _ = statistics.covariance


def test_kid_is_about_zero_for_one_distribution_and_positive_for_two():
    own = np.random.default_rng(12)  # not the module's stream: the outcome must not depend on test order
    a, b = own.standard_normal((2000, 16)), own.standard_normal((2000, 16))
    same, same_std = kernel_inception_distance(a, b, subsets=50, subset_size=500)
    # The 50 subsets overlap (500 of 2,000 each), so their mean is not 50 independent draws: bound it
    # by the spread of one subset's estimate.
    assert abs(same) < 3 * same_std
    shifted, shifted_std = kernel_inception_distance(a, b + 0.5, subsets=50, subset_size=500)
    assert shifted > 10 * shifted_std + abs(same)


def test_kid_estimator_equals_a_direct_double_sum():
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5)) + 0.2

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    kid, std = kernel_inception_distance(x, y, subsets=1, subset_size=100)  # the whole sets, once
    assert kid == pytest.approx(xx + yy - 2 * xy, rel=1e-10) and std == 0


def test_the_plug_in_kid_is_biased_upwards_as_the_evaluation_exercise_derives_and_the_books_is_not():
    """ex-evaluation-kid (b): keeping the i = j terms adds (E k(a, a) - E k(a, a')) (1/m + 1/n) on
    average, for two samples of one distribution; the book's estimate averages 0 there."""
    own = np.random.default_rng(5)
    d, m, repeats = 4, 20, 4000

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    unbiased, plug_in = [], []
    for _ in range(repeats):
        a, b = own.standard_normal((m, d)), own.standard_normal((m, d))
        unbiased.append(kernel_inception_distance(a, b, subsets=1, subset_size=m)[0])
        plug_in.append(k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())
    # E k(a, a) = E (|a|^2/d + 1)^3 and E k(a, a') = E (a.a'/d + 1)^3 for a, a' ~ N(0, I_4), exactly:
    # |a|^2 ~ chi^2_4 (moments 4, 24, 192); a.a' has moments 0, 4, 0 (its square has mean d = 4)
    self_term = 192 / d**3 + 3 * 24 / d**2 + 3 * 4 / d + 1
    cross_term = 3 * 4 / d**2 + 1
    predicted = (self_term - cross_term) * 2 / m
    error = np.std(plug_in) / np.sqrt(repeats)
    assert abs(np.mean(plug_in) - predicted) < 4 * error
    assert abs(np.mean(unbiased)) < 4 * np.std(unbiased) / np.sqrt(repeats)
    assert min(unbiased) < 0 < min(plug_in)  # (c): averaging 0 means going below it


def test_precision_and_recall():
    real = rng.standard_normal((1500, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    # Ten modes; the generator covers only five of them, faithfully.
    centres = rng.standard_normal((10, 8)) * 10
    labels = rng.integers(0, 10, 3000)
    real_modes = centres[labels[:1500]] + rng.standard_normal((1500, 8))
    kept = labels[1500:][labels[1500:] < 5]
    dropped = centres[kept] + rng.standard_normal((len(kept), 8))
    full = centres[labels[1500:]] + rng.standard_normal((1500, 8))
    precision_full, recall_full = precision_recall(real_modes, full)
    precision, recall = precision_recall(real_modes, dropped)
    assert precision_full > 0.75 and recall_full > 0.75  # k-NN balls miss some of a Gaussian's tail
    assert abs(precision - precision_full) < 0.05  # fidelity unchanged ...
    assert recall == pytest.approx(recall_full * 0.5, abs=0.07)  # ... but half the modes are missed
    with pytest.raises(ValueError, match="feature sizes differ"):
        precision_recall(real, real[:, :4])


def test_precision_and_recall_balls_by_hand_and_by_brute_force():
    # 1-D, k = 1: the real balls around 0, 1, 3 reach 1, 1 and 2 (the nearest OTHER real point).
    real, generated = np.array([[0.0], [1.0], [3.0]]), np.array([[2.1], [5.5], [-0.5]])
    # 2.1 lies in the ball of 3, -0.5 in that of 0, 5.5 in none; the generated balls (radii 2.6,
    # 3.4, 2.6) hold 0 and 1 (around 2.1 and -0.5) and 3 (around 2.1).
    assert precision_recall(real, generated, k=1) == (pytest.approx(2 / 3), 1.0)
    own = np.random.default_rng(13)
    real, generated = own.standard_normal((50, 3)), 0.6 * own.standard_normal((40, 3)) + 1.0

    def inside_fraction(queries, centres, k):
        """Explicit loops: the k-th smallest distance to another centre, then ball membership."""
        radii = [sorted(np.linalg.norm(c - other) for j, other in enumerate(centres) if j != i)[k - 1]
                 for i, c in enumerate(centres)]
        hits = [any(np.linalg.norm(q - c) <= r for c, r in zip(centres, radii, strict=True)) for q in queries]
        return sum(hits) / len(queries)

    for k in (1, 3):
        expected = (inside_fraction(generated, real, k), inside_fraction(real, generated, k))
        assert precision_recall(real, generated, k=k) == pytest.approx(expected, abs=1e-12)
        assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # the sets are not trivially nested


def test_to_uint8_is_the_one_quantization_path():
    stored = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(stored), stored)
    assert torch.equal(to_uint8(stored.float() / 255), stored)  # float round trip is exact
    assert to_uint8(torch.tensor([0.2, 0.8])).tolist() == [51, 204]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_uint8(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="uint8 or floating point"):
        to_uint8(torch.tensor([3]))


def test_fid_bias_has_its_closed_forms_for_one_dimension_and_the_identity():
    # one dimension: E(mean gap)^2 = 2 s^2 / n and E(sd gap)^2 = 2 Var(sd) ~ s^2 / n
    assert fid_bias(np.array([[4.0]]), 100) == pytest.approx(3 * 4.0 / 100, rel=1e-12)
    for d, n in ((1, 10), (128, 10_000), (2048, 50_000)):
        assert fid_bias(np.eye(d), n) == pytest.approx(d * (d + 5) / (2 * n), rel=1e-12)
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    spectrum = np.array([2.0, 0.5, 0.0])  # a rank-deficient covariance: the zero pair adds nothing
    expected = (2.5 * 2.5 + 1.0 + 0.25 + 2 * (2.0 * 0.5 / 2.5)) / 50
    assert fid_bias((rotation * spectrum) @ rotation.T, 50) == pytest.approx(expected, rel=1e-9)


def simulated_fid(rng, sigma: np.ndarray, n: int, m: int, pairs: int) -> tuple[float, float]:
    """The mean FID over ``pairs`` pairs of samples of n and m points from N(0, sigma), and its
    standard error."""
    root = np.linalg.cholesky(sigma)
    fids = []
    for _ in range(pairs):
        x, y = rng.standard_normal((n, len(sigma))) @ root.T, rng.standard_normal((m, len(sigma))) @ root.T
        fids.append(frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)))
    return np.mean(fids), np.std(fids) / np.sqrt(pairs)


def test_fid_bias_is_the_mean_fid_between_two_samples_of_one_gaussian():
    """Monte Carlo: 3,000 pairs of samples of 400 from a rotated Gaussian whose variances span two
    orders of magnitude; the formula's first order in 1/n holds to within the simulation's error,
    and leaving out the pairs i != j (the covariances' off-diagonal scatter) would not."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    spectrum = np.array([4.0, 1.0, 0.25, 0.05])
    sigma = (rotation * spectrum) @ rotation.T
    n = 400
    mean, error = simulated_fid(rng, sigma, n, n, pairs=3000)
    predicted = fid_bias(sigma, n)
    assert abs(mean - predicted) < 4 * error + 0.02 * predicted
    l_i, l_j = spectrum[:, None], spectrum[None, :]
    diagonal_only = (2.5 * spectrum.sum() + spectrum.sum() / 2) / n
    assert abs(mean - diagonal_only) > 4 * error + 0.02 * predicted
    assert predicted == pytest.approx((2.5 * spectrum.sum() + (l_i * l_j / (l_i + l_j)).sum()) / n)


def test_fid_bias_between_samples_of_two_sizes_is_the_mean_fid_of_such_pairs():
    """Monte Carlo, as above, with samples of 200 and 2,000 points (a small profile's samples against
    a full test set): 1/n becomes (1/n + 1/m) / 2, not 1/n, nor 1/m."""
    rng = np.random.default_rng(1)
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    sigma = (rotation * np.array([2.0, 0.5, 0.1])) @ rotation.T
    n, m = 200, 2000
    mean, error = simulated_fid(rng, sigma, n, m, pairs=3000)
    predicted = fid_bias(sigma, n, m)
    assert abs(mean - predicted) < 4 * error + 0.02 * predicted
    assert predicted == pytest.approx(fid_bias(sigma, m, n))
    for other in (fid_bias(sigma, n), fid_bias(sigma, m)):  # either size alone is far off
        assert abs(mean - other) > 0.5 * mean


@pytest.mark.parametrize(("sigma", "n", "says"), [
    (np.ones(3), 10, r"a \(d, d\) covariance, got shape \(3,\)"),
    (np.ones((2, 3)), 10, r"a \(d, d\) covariance"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), 10, "NaN or infinite"),
    (np.diag([1.0, -1.0]), 10, "not positive semi-definite"),
    (np.eye(2), 1, "at least 2"),
    (np.eye(2), 2.5, "whole number of samples"),
    (np.eye(2), True, "whole number of samples"),
])
def test_fid_bias_refuses_what_is_not_a_covariance_and_a_sample_size(sigma, n, says):
    with pytest.raises(ValueError, match=says):
        fid_bias(sigma, n)


@pytest.mark.parametrize("m", [1, 2.5, True])
def test_fid_bias_refuses_a_second_sample_size_that_is_not_one(m):
    with pytest.raises(ValueError, match=r"^m must be a whole number of samples, at least 2 .* got"):
        fid_bias(np.eye(2), 10, m)
