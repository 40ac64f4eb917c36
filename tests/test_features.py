"""Feature networks: one uint8 path, eval-mode features, and Inception only from disk."""

import numpy as np
import pytest
import torch
import torchvision

from genmodels.features import (
    INCEPTION_WEIGHTS,
    ClassifierConfig,
    MNISTClassifier,
    extract_features,
    feature_statistics,
    inception_features,
    legible_share,
    load_classifier,
)
from genmodels.train import save_checkpoint


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
