"""Feature networks: one uint8 path, eval-mode features, and Inception only from disk."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from genmodels.features import (
    INCEPTION_WEIGHTS,
    ClassifierConfig,
    DigitReference,
    MNISTClassifier,
    extract_features,
    feature_statistics,
    fit_digit_reference,
    inception_features,
    ink,
    legible_share,
    load_classifier,
    mahalanobis_sq,
    reference_checks,
)
from genmodels.train import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture  # one per test: a test that switches it to eval mode must not do so for the next
def classifier():
    torch.manual_seed(0)
    network = MNISTClassifier(ClassifierConfig(channels=(8, 16), feature_dim=32))
    network.train()  # the helpers must switch it to eval mode themselves
    return network


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (64, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def test_classifier_shapes(classifier, images):
    assert classifier(images).shape == (64, 10)
    assert classifier.features(images).shape == (64, 32)


def test_real_and_generated_images_share_one_path(classifier, images):
    """A float image in [0, 1] and its uint8 form give the same features."""
    classifier.eval()
    as_float = images.float() / 255
    torch.testing.assert_close(classifier.features(as_float), classifier.features(images))
    torch.testing.assert_close(classifier.features(images[:, None]), classifier.features(images))


def test_prepare_rejects_other_sizes_and_ranges():
    with pytest.raises(ValueError, match=r"MNIST-sized images \(B, 1, 28, 28\)"):
        MNISTClassifier.prepare(torch.zeros(4, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MNISTClassifier.prepare(torch.full((4, 28, 28), -1.0))


def test_extracted_features_do_not_depend_on_the_batching(classifier, images):
    """In eval mode batch norm uses running statistics, so batch size cannot change a feature."""
    one_batch = extract_features(classifier, images, batch_size=64)
    small_batches = extract_features(classifier, images, batch_size=7)
    assert one_batch.dtype == np.float64 and one_batch.shape == (64, 32)
    np.testing.assert_allclose(one_batch, small_batches, rtol=1e-5, atol=1e-6)
    assert not classifier.training


def test_feature_statistics_equal_numpy(classifier, images):
    features = extract_features(classifier, images)
    statistics = feature_statistics(classifier, images, batch_size=10)
    assert statistics.n == 64
    np.testing.assert_allclose(statistics.mean, features.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(statistics.covariance, np.cov(features, rowvar=False), rtol=1e-4, atol=1e-6)


def test_inception_without_weights_names_the_file_and_never_downloads(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS) as error:
        inception_features(tmp_path)
    assert "cannot be downloaded here" in str(error.value)


def test_inception_path_gives_2048_features_for_grey_images(tmp_path, monkeypatch):
    """With the weights file present, the same uint8 path feeds pytorch-fid's Inception-v3.

    The architecture is built untrained here (the real weights are not on this machine); what is
    tested is the path: grey to three channels, [0, 1] input, 2048 pool features per image.
    """
    import pytorch_fid.inception

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / INCEPTION_WEIGHTS).write_bytes(b"")
    monkeypatch.setattr(
        pytorch_fid.inception, "fid_inception_v3",
        lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                                num_classes=1008),
    )
    network = inception_features(tmp_path)
    features = extract_features(network, torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    assert torch.hub.get_dir() != str(tmp_path)  # the hub directory is restored


def test_load_classifier_rebuilds_it_in_eval_mode(classifier, images, tmp_path):
    path = save_checkpoint(tmp_path / "classifier.pt", classifier, config=classifier.config)
    loaded, _ = load_classifier(path)
    assert loaded.config == classifier.config and not loaded.training
    np.testing.assert_allclose(extract_features(loaded, images), extract_features(classifier, images))


class _FixedLogits(torch.nn.Module):
    """A stand-in classifier whose logits for image i are row i of a table."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.logits = torch.as_tensor(logits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits[images[:, 0, 0, 0].long()]


def test_legible_share_counts_the_images_classified_with_probability_above_the_threshold():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (700, 10))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # softmax by hand
    expected = np.sum(probabilities.max(axis=1) > 0.9)
    index = torch.arange(700).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28)  # image i holds i
    share = legible_share(_FixedLogits(logits), index, batch_size=256)  # three batches, the last short
    assert 35 < expected < 665 and round(share * 700) == expected
    assert legible_share(_FixedLogits(logits), index, confidence=0.0) == 1.0


class _FixedFeatures(torch.nn.Module):
    """A stand-in classifier whose features for image i (every pixel i) are row i of a table."""

    def __init__(self, features: np.ndarray, head: torch.nn.Linear):
        super().__init__()
        self.table, self.head = torch.as_tensor(features, dtype=torch.float32), head

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.table[images[:, 0, 0, 0].long()]


def test_with_a_reference_an_image_must_be_confident_near_its_digit_and_carry_ink():
    rng = np.random.default_rng(1)
    features, means = rng.normal(0, 1, (256, 4)), rng.normal(0, 1, (10, 4))
    head = torch.nn.Linear(4, 10)
    torch.nn.init.normal_(head.weight, 0, 3)
    a = rng.normal(0, 1, (4, 4))
    precision = a @ a.T + np.eye(4)
    least = rng.uniform(0, 0.5, 10)  # each digit's least ink
    # by hand: softmax, the predicted digit's offset, the quadratic form, the ink i / 255
    logits = features.astype(np.float32) @ head.weight.detach().numpy().T + head.bias.detach().numpy()
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    digit = probabilities.argmax(1)
    offset = features.astype(np.float32).astype(np.float64) - means[digit]  # the features as returned
    distance = np.einsum("ni,ij,nj->n", offset, precision, offset)
    limit = np.median(distance)
    confident, near = probabilities.max(1) > 0.9, distance <= limit
    inked = np.arange(256) / 255 >= least[digit]
    expected = confident & near & inked
    assert (confident & near & ~inked).any() and (confident & ~near & inked).any()  # each check counts
    reference = DigitReference(torch.as_tensor(means), torch.as_tensor(precision), float(limit),
                               min_ink=torch.as_tensor(least), coverage=0.5)
    index = torch.arange(256).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28).to(torch.uint8)  # image i holds i
    share = legible_share(_FixedFeatures(features, head), index, reference=reference, batch_size=100)
    assert 10 < expected.sum() < (probabilities.max(1) > 0.9).sum() and round(share * 256) == expected.sum()
    checks = reference_checks(_FixedFeatures(features, head), index, reference, batch_size=100)
    for key, by_hand in (("confident", confident), ("near", near), ("inked", inked), ("digit", digit)):
        np.testing.assert_array_equal(checks[key].numpy(), by_hand)


def test_mahalanobis_sq_is_scipys_squared_distance():
    from scipy.spatial.distance import mahalanobis

    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (5, 5))
    precision, f, mu = a @ a.T + 0.1 * np.eye(5), rng.normal(0, 1, (7, 5)), rng.normal(0, 1, (7, 5))
    ours = mahalanobis_sq(torch.as_tensor(f), torch.as_tensor(mu), torch.as_tensor(precision)).numpy()
    np.testing.assert_allclose(ours, [mahalanobis(u, v, precision) ** 2 for u, v in zip(f, mu, strict=True)],
                               rtol=1e-12)


def test_ink_is_the_mean_intensity_in_every_image_form():
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[1, :14] = 255  # half the image at full intensity
    np.testing.assert_allclose(ink(images).numpy(), [0.0, 0.5])
    np.testing.assert_allclose(ink(images[:, None].float() / 255).numpy(), [0.0, 0.5])


def test_the_digit_reference_pools_each_digits_covariance_as_numpy_does():
    """A stand-in classifier whose ten features of image i (every pixel i) are its logits, so that
    every digit is called; the fit against numpy's means, per-digit covariances and quantiles."""
    rng = np.random.default_rng(3)
    table = rng.normal(0, 1, (256, 10)) + 3 * np.eye(10)[np.arange(256) % 10]  # image i looks like i % 10
    head = torch.nn.Linear(10, 10)
    with torch.no_grad():
        head.weight.copy_(torch.eye(10))
        head.bias.zero_()
    network = _FixedFeatures(table, head)
    images = torch.arange(256).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28).to(torch.uint8)
    labels = torch.arange(256) % 10
    reference = fit_digit_reference(network, images, labels, images, coverage=0.9)
    f = table.astype(np.float32).astype(np.float64)  # the features as the network returns them
    groups = [f[labels.numpy() == k] for k in range(10)]
    np.testing.assert_allclose(reference.class_means.numpy(), [g.mean(0) for g in groups], atol=1e-9)
    # the within-digit covariance on N - 10 degrees of freedom, from numpy's per-digit covariances
    pooled = sum((len(g) - 1) * np.cov(g, rowvar=False) for g in groups) / (len(f) - 10)
    ridge = 1e-4 * np.trace(pooled) / len(pooled)
    np.testing.assert_allclose(np.linalg.inv(reference.precision.numpy()),
                               pooled + ridge * np.eye(len(pooled)), rtol=1e-6, atol=1e-9)
    # the thresholds: numpy's quantiles of the calibration images' distance, and of the ink of the
    # images called each digit
    called = f.argmax(1)
    offset = f - reference.class_means.numpy()[called]
    distance = np.einsum("ni,ij,nj->n", offset, np.linalg.inv(pooled + ridge * np.eye(10)), offset)
    assert reference.max_distance == pytest.approx(np.quantile(distance, 0.9), rel=1e-6)
    amount = np.arange(256) / 255
    np.testing.assert_allclose(reference.min_ink.numpy(),
                               [np.quantile(amount[called == k], 0.1) for k in range(10)], rtol=1e-12)
    with pytest.raises(ValueError, match="the classifier calls no calibration image some digit"):
        fit_digit_reference(network, images, labels, images[:5])


def test_confidence_alone_calls_blank_and_noise_digits_and_the_reference_does_not():
    """The published classifier: a blank image is a confident 1 and uniform noise a confident 8, but
    neither lies where real digits do (the blank image lies near the 1s' features and fails the ink
    floor; noise and a grey image lie far from the features of the digit they are called); real test
    digits the reference was not fitted on pass."""
    from genmodels.data import MNISTUnavailableError, load_mnist

    try:
        train, test = load_mnist(train=True), load_mnist(train=False)
    except MNISTUnavailableError as error:
        pytest.skip(f"MNIST is not prepared here ({error}): run `make data`")
    network, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    reference = fit_digit_reference(network, train.data[:10_000], train.targets[:10_000], test.data[:2_000])
    generator = torch.Generator().manual_seed(0)
    blank, grey = torch.zeros(64, 1, 28, 28), torch.full((64, 1, 28, 28), 0.5)
    noise = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=generator)
    for images, called, near in ((blank, 1, True), (grey, None, False), (noise, 8, False)):
        assert legible_share(network, images) == 1.0
        assert legible_share(network, images, reference=reference) == 0.0
        with torch.no_grad():
            features = network.features(images)
            digit = network.head(features).argmax(-1)
        assert called is None or (digit == called).all()
        assert (reference.near(features, digit) == near).all()
        assert not (near and reference.inked(images, digit).any())
    real = test.data[2_000:4_000]
    assert legible_share(network, real, reference=reference) > 0.95


@pytest.mark.slow
def test_the_gaussian_fid_bias_predicts_the_books_sampling_floor_and_half_the_tables_floor():
    """What the evaluation page says: in the published classifier's feature space, two disjoint draws
    of 10,000 training images are about as far apart as fid_bias predicts for Gaussian features of
    their covariance, though the features are not Gaussian; the table's floor, training against test
    images, is about twice the prediction."""
    import json

    from genmodels.data import MNISTUnavailableError, load_mnist
    from genmodels.metrics import fid_bias, frechet_distance

    try:
        train, test = load_mnist(train=True), load_mnist(train=False)
    except MNISTUnavailableError as error:
        pytest.skip(f"MNIST is not prepared here ({error}): run `make data`")
    network, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))  # the training set
    draws = [np.asarray(extract_features(network, train.data[order[k:k + 10_000]]), dtype=np.float64)
             for k in range(0, 60_000, 10_000)]
    fids = [frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
            for a, b in zip(draws[0::2], draws[1::2], strict=True)]
    predicted = fid_bias(np.cov(np.concatenate(draws), rowvar=False), 10_000)
    assert np.mean(fids) == pytest.approx(predicted, rel=0.2)
    assert fid_bias(np.eye(128), 10_000) > 4 * predicted  # the spectrum, not the dimension, sets it

    real = np.asarray(extract_features(network, test.data), dtype=np.float64)
    floor = next(row for row in json.loads((ROOT / "results" / "metrics.json").read_text())
                 if row["model"].startswith("real data: training vs test"))
    assert floor["n_samples"] == 10_000
    assert 1.6 < floor["fid"] / fid_bias(np.cov(real, rowvar=False), 10_000) < 2.6  # "about twice"
