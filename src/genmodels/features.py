"""Feature networks for the metrics: an MNIST classifier the project trains itself, and, where its
weights are on disk, pytorch-fid's Inception-v3.

Both take images through the same path: :func:`genmodels.metrics.to_uint8`, then uint8 / 255
(which each network rescales to [-1, 1]), then the network in eval mode; both return one feature
vector per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genmodels.metrics import FeatureStatistics, to_uint8
from genmodels.train import load_model

__all__ = [
    "INCEPTION_WEIGHTS",
    "ClassifierConfig",
    "DigitReference",
    "MNISTClassifier",
    "extract_features",
    "feature_statistics",
    "fit_digit_reference",
    "inception_features",
    "ink",
    "legible_share",
    "load_classifier",
    "mahalanobis_sq",
    "reference_checks",
]

# The file pytorch-fid loads (through torch.hub's cache) for its FID Inception-v3.
INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


@dataclass
class ClassifierConfig:
    channels: tuple[int, int] = (32, 64)  # convolution widths of the two blocks
    feature_dim: int = 128  # size of the penultimate layer: the feature space of the metrics
    dropout: float = 0.3  # before the final layer, during training only


class MNISTClassifier(nn.Module):
    """Two conv-pool blocks, then a ``feature_dim`` layer (the features), then the 10 class logits."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        c1, c2 = self.config.channels
        d = self.config.feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),  # -> (c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),  # -> (c2, 7, 7)
            nn.Flatten(),  # (B, c2, 7, 7) -> (B, c2 * 49)
            nn.Linear(c2 * 7 * 7, d), nn.BatchNorm1d(d), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(self.config.dropout), nn.Linear(d, 10))

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] images (B, 28, 28) or (B, 1, 28, 28) -> float (B, 1, 28, 28), centred."""
        images = to_uint8(images)
        if images.ndim == 3:
            images = images[:, None]
        if images.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected MNIST-sized images (B, 1, 28, 28), got {tuple(images.shape)}")
        return (images.float() / 255 - 0.5) / 0.5

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The penultimate activations: (B, feature_dim)."""
        return self.body(self.prepare(images).to(next(self.parameters()).device))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits: (B, 10)."""
        return self.head(self.features(images))


def load_classifier(
    path: str | Path, map_location: str | torch.device | None = "cpu"
) -> tuple[MNISTClassifier, dict]:
    """The published classifier, built from its stored config, in eval mode on ``map_location``:
    (network, checkpoint)."""
    return load_model(path, MNISTClassifier, ClassifierConfig, map_location)


@torch.no_grad()
def extract_features(network: nn.Module, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Features of ``images`` from ``network`` (put in eval mode), in float64: (N, feature_dim)."""
    images = to_uint8(images)  # a tensor or numpy array, uint8 or floats in [0, 1]; refuses an empty one
    network.eval()
    # float64 on the CPU: Apple's MPS has no float64
    chunks = [network.features(batch).cpu().double() for batch in images.split(batch_size)]
    return torch.cat(chunks).numpy()


def feature_statistics(network: nn.Module, images: torch.Tensor, batch_size: int = 500) -> FeatureStatistics:
    """Mean and covariance of the features of ``images``, accumulated batch by batch."""
    network.eval()
    statistics = None
    with torch.no_grad():
        for batch in images.split(batch_size):
            features = network.features(batch)
            statistics = statistics or FeatureStatistics(features.shape[1])
            statistics.update(features)
    return statistics


@torch.no_grad()
def legible_share(classifier: nn.Module, images: torch.Tensor, confidence: float = 0.9,
                  batch_size: int = 500, reference: DigitReference | None = None) -> float:
    """The share of ``images`` that ``classifier`` assigns to one class with a probability above
    ``confidence``: the samples a reader would call a digit ("legible" in the book's tables). With a
    ``reference`` (:func:`fit_digit_reference`), an image must also lie near its digit's features and
    carry its ink (:func:`reference_checks`): confidence alone is fooled by images unlike any digit
    (a blank image is a confident 1, uniform noise a confident 8)."""
    _check_confidence(confidence)
    _require_images(images, "legible_share")
    if reference is not None:
        checks = reference_checks(classifier, images, reference, confidence, batch_size)
        return (checks["confident"] & checks["near"] & checks["inked"]).float().mean().item()
    classifier.eval()
    logits = torch.cat([classifier(batch) for batch in images.split(batch_size)])
    if logits.ndim != 2 or logits.shape[0] != len(images) or logits.shape[1] < 2:
        raise ValueError(f"the classifier returned {tuple(logits.shape)} for {len(images)} images; it must "
                         f"return class logits, one row per image: ({len(images)}, number of classes)")
    return (logits.softmax(-1).max(-1).values > confidence).float().mean().item()


@torch.no_grad()
def reference_checks(classifier: nn.Module, images: torch.Tensor, reference: DigitReference,
                     confidence: float = 0.9, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Each image's three checks, on the CPU: ``confident`` (the classifier's probability of the digit
    it calls above ``confidence``), ``near`` and ``inked`` (:class:`DigitReference`), and ``digit``,
    the digit it is called: a dict of (N,) tensors."""
    _check_confidence(confidence)
    _require_images(images, "reference_checks")
    _require_features_and_head(classifier)
    classifier.eval()
    features = torch.cat([classifier.features(batch) for batch in images.split(batch_size)])
    probability, digit = classifier.head(features).softmax(-1).max(-1)
    return dict(confident=(probability > confidence).cpu(), near=reference.near(features, digit),
                inked=reference.inked(images, digit), digit=digit.cpu())


def _check_confidence(confidence: float) -> None:
    if not 0 <= confidence < 1:  # at 1 nothing would count, whatever the images
        raise ValueError(f"confidence must lie in [0, 1) (a probability, not a percentage), "
                         f"got {confidence}: the book uses 0.9")


def _require_images(images: torch.Tensor, caller: str) -> None:
    if len(images) == 0:
        raise ValueError(f"no images: {caller} needs at least one")


def _require_features_and_head(classifier: nn.Module) -> None:
    if not (hasattr(classifier, "features") and hasattr(classifier, "head")):
        raise ValueError("a reference needs the classifier's features and its head (an MNISTClassifier); "
                         f"got {type(classifier).__name__}")


# --------------------------------------------------------------------------------------------
# Where real digits lie: a check that confidence alone cannot pass


def mahalanobis_sq(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(f - mu)^T Sigma^-1 (f - mu) for each row f of ``features`` and mu of ``means``: (N,)."""
    offset = features.double() - means.double()  # (N, d)
    return ((offset @ precision.double()) * offset).sum(-1)


def ink(images: torch.Tensor) -> torch.Tensor:
    """The mean pixel intensity of each image, on [0, 1] (0: blank), on the CPU: (N,)."""
    images = to_uint8(images)  # uint8 or [0, 1]; (N, 28, 28) or (N, 1, 28, 28)
    return images.reshape(len(images), -1).cpu().double().mean(-1) / 255


@dataclass(frozen=True)
class DigitReference:
    """Where real digits lie, to the classifier and in ink: a Gaussian of the features per digit with
    one covariance shared by the ten (the model of linear discriminant analysis, which Lee et al.,
    2018, use to find inputs unlike the training data), and a floor on each digit's ink. (Noise, a grey
    image or anything with too much ink lies far from the features of the digit it is called; a blank
    image can lie near the 1s, and only the ink floor turns it away.)"""

    class_means: torch.Tensor  # (10, d): mu_k, the mean feature of digit k (float64)
    precision: torch.Tensor  # (d, d): (Sigma + lambda I)^-1, Sigma the within-digit covariance
    max_distance: float  # the squared Mahalanobis distance to its digit's mean within which ...
    min_ink: torch.Tensor  # (10,): ... and the mean intensity of each digit above which ...
    coverage: float  # ... this share of the calibration digits lie (each check on its own)

    def distance(self, features: torch.Tensor, digit: torch.Tensor) -> torch.Tensor:
        """d_k(f) = (f - mu_k)^T (Sigma + lambda I)^-1 (f - mu_k), k each image's ``digit``: (N,)."""
        return mahalanobis_sq(features.cpu(), self.class_means[digit.cpu()], self.precision)

    def near(self, features: torch.Tensor, digit: torch.Tensor) -> torch.Tensor:
        """Whether each image's features lie as near the mean of its ``digit`` as ``coverage`` of real
        digits' do (one threshold for all ten): (N,) bool, on the CPU."""
        return self.distance(features, digit) <= self.max_distance

    def inked(self, images: torch.Tensor, digit: torch.Tensor) -> torch.Tensor:
        """Whether each image carries at least the ink that ``coverage`` of the real digits called
        its ``digit`` carry (a floor per digit: a 1 has less than an 8): (N,) bool, on the CPU."""
        return ink(images) >= self.min_ink[digit.cpu()]


@torch.no_grad()
def fit_digit_reference(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        calibration: torch.Tensor, coverage: float = 0.99) -> DigitReference:
    """The class means and the shared within-class covariance of the features of labelled real
    ``images`` (the training set), the distance that ``coverage`` of other real digits
    (``calibration``, e.g. test images) stay within, and for each digit the ink that ``coverage`` of
    those the classifier calls it carry at least (the 1 - coverage quantile): :class:`DigitReference`."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must lie in (0, 1) (a share of real digits), got {coverage}: the book "
                         "uses 0.99")
    _require_features_and_head(classifier)
    labels = torch.as_tensor(labels).cpu()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: give one label per image")
    digits = labels.unique().tolist()
    if digits != list(range(10)):
        raise ValueError(f"the labels hold the digits {digits}; fitting needs images of every digit 0-9")
    features = torch.from_numpy(extract_features(classifier, images))  # (N, d), float64
    means = torch.stack([features[labels == k].mean(0) for k in range(10)])  # mu_k
    within = features - means[labels]  # f - mu_y
    covariance = within.T @ within / (len(features) - 10)  # Sigma, pooled: N - 10 degrees of freedom
    # ReLU units that never fire have no variance; a small ridge lambda = 1e-4 tr(Sigma) / d keeps
    # Sigma invertible and makes a unit that fires only for images unlike digits weigh heavily
    ridge = 1e-4 * covariance.diagonal().mean()
    precision = torch.linalg.inv(covariance + ridge * torch.eye(len(covariance), dtype=covariance.dtype))
    held = torch.from_numpy(extract_features(classifier, calibration))
    # the digit the classifier calls each image, as at use (not its label, nor the nearest mean)
    digit = classifier.head(held.float().to(next(classifier.parameters()).device)).argmax(-1).cpu()
    distance = mahalanobis_sq(held, means[digit], precision)
    amount = ink(calibration)
    if set(digit.tolist()) != set(range(10)):
        raise ValueError("the classifier calls no calibration image some digit: give it real digits of "
                         "every class (e.g. the test images)")
    least = torch.stack([torch.quantile(amount[digit == k], 1 - coverage) for k in range(10)])
    return DigitReference(means, precision, torch.quantile(distance, coverage).item(), least, coverage)


class _InceptionFeatures(nn.Module):
    """pytorch-fid's FID Inception-v3 on grey images: 2048 pool features per image."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def features(self, images: torch.Tensor) -> torch.Tensor:
        images = to_uint8(images)
        if images.ndim == 3:
            images = images[:, None]
        rgb = (images.float() / 255).expand(-1, 3, -1, -1)  # grey -> three equal channels
        return self.inception(rgb.to(next(self.parameters()).device))[0][:, :, 0, 0]


def inception_features(hub_dir: str | Path | None = None) -> nn.Module:
    """pytorch-fid's Inception-v3 feature network, if its weights are already on disk.

    Never downloads: where ``<torch hub dir>/checkpoints/pt_inception-2015-12-05-6726825d.pth`` is
    missing, raises FileNotFoundError saying how to get it.
    """
    hub = Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())
    weights = hub / "checkpoints" / INCEPTION_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(
            f"Inception FID weights not found at {weights}. They cannot be downloaded here; where "
            "there is internet (e.g. Colab), `pytorch_fid.inception.fid_inception_v3()` fetches them "
            "into torch's hub cache. This book's own FID uses the MNIST classifier instead."
        )
    from pytorch_fid.inception import InceptionV3

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    try:
        network = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True, normalize_input=True)
    finally:
        torch.hub.set_dir(previous)
    return _InceptionFeatures(network).eval()
