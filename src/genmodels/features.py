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
    "MNISTClassifier",
    "extract_features",
    "feature_statistics",
    "inception_features",
    "legible_share",
    "load_classifier",
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
                  batch_size: int = 500) -> float:
    """The share of ``images`` that ``classifier`` assigns to one class with a probability above
    ``confidence``: the samples a reader would call a digit ("legible" in the book's tables)."""
    if not 0 <= confidence < 1:  # at 1 nothing would count, whatever the images
        raise ValueError(f"confidence must lie in [0, 1) (a probability, not a percentage), "
                         f"got {confidence}: the book uses 0.9")
    if len(images) == 0:
        raise ValueError("no images: legible_share needs at least one")
    classifier.eval()
    logits = torch.cat([classifier(batch) for batch in images.split(batch_size)])
    if logits.ndim != 2 or logits.shape[0] != len(images) or logits.shape[1] < 2:
        raise ValueError(f"the classifier returned {tuple(logits.shape)} for {len(images)} images; it must "
                         f"return class logits, one row per image: ({len(images)}, number of classes)")
    return (logits.softmax(-1).max(-1).values > confidence).float().mean().item()


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
