"""What every training notebook needs and none of them teaches: seeds, devices, compute profiles,
checkpoints that survive interruption, and progress bars.

The training loops themselves live in the notebooks, where the algorithm's lines stay visible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import platform
import random
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = [
    "PROFILES",
    "CheckpointError",
    "ProfileError",
    "file_sha256",
    "git_commit",
    "hardware",
    "load_checkpoint",
    "pick_device",
    "progress",
    "publish_checkpoint",
    "read_checkpoint",
    "resolve_profile",
    "save_checkpoint",
    "seed_everything",
    "write_json",
]

Profile = Literal["smoke", "cpu", "gpu"]
PROFILES: tuple[str, ...] = (*get_args(Profile), "auto")
CHECKPOINT_FORMAT = 1  # bump when the layout of the saved dictionary changes


class ProfileError(ValueError):
    """An unknown compute profile was asked for."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or does not fit the model it is loaded into."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS devices


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given, else the best available of cuda, mps and cpu."""
    if preferred is not None:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_profile(profile: str | None = None) -> Profile:
    """The compute profile: ``profile`` if given, else ``$GENMODELS_PROFILE``, else ``auto``.

    ``auto`` becomes ``gpu`` where CUDA is available and ``cpu`` otherwise.
    """
    chosen = profile if profile is not None else os.environ.get("GENMODELS_PROFILE", "auto")
    chosen = str(chosen).strip().lower()
    if chosen not in PROFILES:
        source = "" if profile is not None else " (from GENMODELS_PROFILE)"
        raise ProfileError(
            f"unknown compute profile {chosen!r}{source}; valid profiles: {', '.join(PROFILES)}"
        )
    if chosen == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return chosen  # type: ignore[return-value]


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm.auto progress bar (a widget in Jupyter, text elsewhere) that refreshes at most once a
    second, so logs of executed notebooks stay short. Set ``TQDM_DISABLE=1`` to silence it."""
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def hardware(device: torch.device | str | None = None) -> str:
    """A one-line description of where a result was computed, e.g. ``"cpu: AMD EPYC, 2 threads"``."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        processor = names[0] if names else processor
    except OSError:
        pass
    return f"{device.type}: {processor}, {torch.get_num_threads()} threads"


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The commit hash of the repository at ``path`` (default: this package's), else
    ``$GENMODELS_COMMIT`` (for a copy of the tree without its ``.git``), else ``"unknown"``."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    fallback = os.environ.get("GENMODELS_COMMIT", "unknown")
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return fallback
    return out.stdout.strip() if out.returncode == 0 else fallback


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the checksum published beside every checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None or isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    raise TypeError(f"config must be a dataclass or a dict, got {type(config).__name__}")


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    config: Any = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model and optimizer state, config, step, RNG state and provenance to ``path``, atomically.

    The file is written beside its destination under a temporary name, flushed to disk, and only
    then renamed over ``path``: an interrupted save leaves the previous checkpoint intact.
    """
    from genmodels import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__qualname__,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": _config_dict(config),
        "step": int(step),
        "rng": _rng_state(),
        "extra": extra or {},
        "provenance": {
            "genmodels_version": __version__,
            "git_commit": git_commit(),
            "torch_version": torch.__version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a checkpoint is for sharing
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (the old file survives a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return path


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def publish_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    config: Any,
    record: dict[str, Any],
    step: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a checkpoint for others to use: the ``.pt`` file, a ``.json`` record of where it came from
    (``record`` plus checksum, commit and sizes), and its line in the folder's ``SHA256SUMS``.

    ``extra`` (e.g. sample snapshots) goes into the ``.pt`` file only. Returns the JSON record.
    Every file is replaced atomically.
    """
    path = Path(path)
    save_checkpoint(path, model, config=config, step=step, extra={**(extra or {}), "record": record})
    full_record = {
        **record,
        "file": path.name,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "params": sum(p.numel() for p in model.parameters()),
        "config": _config_dict(config),
        "step": int(step),
        "commit": git_commit(),
    }
    write_json(path.with_suffix(".json"), full_record)
    sums_path = path.parent / "SHA256SUMS"
    sums = {}
    if sums_path.exists():
        for line in sums_path.read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    sums[path.name] = full_record["sha256"]
    _write_atomically(sums_path, "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())))
    return full_record


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """The dictionary written by :func:`save_checkpoint` (config, step, extra, provenance, states).

    Raises :class:`CheckpointError` for a missing, truncated or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train the model first, or check the path")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {error}); "
            "delete it and re-run the training, or restore it from checkpoints/"
        ) from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was not written by genmodels.train.save_checkpoint (format "
            f"{checkpoint.get('format') if isinstance(checkpoint, dict) else None!r}, "
            f"expected {CHECKPOINT_FORMAT})"
        )
    return checkpoint


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    Returns the checkpoint dictionary. Raises :class:`CheckpointError` for a missing, truncated or
    foreign file, and for a checkpoint of another architecture, naming the parameters that do not
    fit; the model is left untouched then.
    """
    checkpoint = read_checkpoint(path, map_location)
    _check_fits(Path(path), checkpoint, model)
    model.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        if checkpoint["optimizer"] is None:
            raise CheckpointError(f"{path} holds no optimizer state to resume from")
        optimizer.load_state_dict(checkpoint["optimizer"])
    if restore_rng:
        _set_rng_state(checkpoint["rng"])
    return checkpoint


def _check_fits(path: Path, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    saved, wanted = checkpoint["model"], model.state_dict()
    problems = []
    if checkpoint["model_class"] != type(model).__qualname__:
        problems.append(f"it holds a {checkpoint['model_class']}, not a {type(model).__qualname__}")
    missing = sorted(set(wanted) - set(saved))
    unexpected = sorted(set(saved) - set(wanted))
    if missing:
        problems.append(f"missing parameters {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected parameters {unexpected[:5]}")
    for name in sorted(set(saved) & set(wanted)):
        if saved[name].shape != wanted[name].shape:
            problems.append(
                f"{name} has shape {tuple(saved[name].shape)} in the checkpoint but "
                f"{tuple(wanted[name].shape)} in the model"
            )
    if problems:
        config = checkpoint.get("config")
        hint = f"; the checkpoint's config is {config}" if config else ""
        raise CheckpointError(
            f"{path} does not fit this model: " + "; ".join(problems[:6])
            + f"{hint}. Build the model with the checkpoint's config."
        )
