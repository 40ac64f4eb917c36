"""What every training notebook needs and none of them teaches: seeds, devices, compute profiles,
checkpoints that survive interruption, and progress bars.

The training loops themselves live in the notebooks, where the algorithm's lines stay visible.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import numbers
import os
import pickle
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, get_args

import numpy as np
import torch
from torch.torch_version import TorchVersion
from tqdm.auto import tqdm

try:
    import fcntl
except ImportError:  # Windows: a journal's writer is told alive by its process id (see _claimed)
    fcntl = None

__all__ = [
    "PROFILES",
    "CheckpointError",
    "ChecksumError",
    "ProfileError",
    "StaleRunError",
    "TrainingRun",
    "file_sha256",
    "files_changed",
    "finish_interrupted_writes",
    "fingerprint",
    "git_commit",
    "hardware",
    "load_checkpoint",
    "decay_to_zero",
    "load_model",
    "modified_code",
    "pick_device",
    "power_ema",
    "progress",
    "publish_checkpoint",
    "read_checkpoint",
    "read_sha256sums",
    "resolve_profile",
    "resume",
    "save_checkpoint",
    "scratch_dir",
    "seed_everything",
    "verify_published",
    "write_json",
]

Profile = Literal["smoke", "cpu", "gpu"]
PROFILES: tuple[str, ...] = (*get_args(Profile), "auto")
CHECKPOINT_FORMAT = 2  # bump when the layout of the saved dictionary changes
READABLE_FORMATS = (1, 2)  # 2: RNG states as tensors, the settings of the run that saved it
GPU_ON_CPU = "GENMODELS_ALLOW_GPU_PROFILE_ON_CPU"  # set to 1 to run the gpu profile without CUDA
PROTECTED = "GENMODELS_PROTECTED_DIRS"  # folders (os.pathsep-separated) that nothing may write into
PUBLISHED_DIRS = ("checkpoints", "results", "book/notebooks")  # what only `make results` writes


class ProfileError(ValueError):
    """An unknown compute profile was asked for."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or does not fit the model it is loaded into."""


class ChecksumError(CheckpointError):
    """A published checkpoint no longer matches the checksum it was published with."""


class StaleRunError(CheckpointError):
    """A run's saved state belongs to a run with other settings."""


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) random number generators."""
    if isinstance(seed, torch.Tensor) and seed.numel() == 1:
        seed = seed.item()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be a whole number in 0..2**32 - 1 (NumPy's range), got {seed!r}")
    seed = int(seed)  # a numpy integer too
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS devices


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given, else the best available of cuda, mps and cpu."""
    if preferred is not None:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"pick_device({preferred!r}), but this machine has no CUDA device: call "
                             "pick_device() to choose what is there (on Colab: Runtime > Change runtime "
                             "type > GPU)")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_profile(profile: str | None = None, runs: bool = True) -> Profile:
    """The compute profile: ``profile`` if given, else ``$GENMODELS_PROFILE``, else ``auto``.

    ``auto`` becomes ``gpu`` where CUDA is available and ``cpu`` otherwise. ``gpu`` without CUDA is
    refused (its sizes take hours on a CPU) unless ``$GENMODELS_ALLOW_GPU_PROFILE_ON_CPU`` is 1, or
    ``runs`` is False: the caller runs nothing in the profile (it plans, or copies prose).
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
    if chosen == "gpu" and runs and not torch.cuda.is_available() and os.environ.get(GPU_ON_CPU) != "1":
        raise ProfileError(
            "the gpu profile was asked for, but this machine has no CUDA device: its full-size runs "
            "would take many hours on the CPU. Use the cpu profile (or auto), or set "
            f"{GPU_ON_CPU}=1 to run the gpu sizes on the CPU anyway"
        )
    return chosen  # type: ignore[return-value]


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm.auto progress bar (a widget in Jupyter, text elsewhere) that refreshes at most once a
    second. ``TQDM_DISABLE=1`` silences it, in Jupyter too (tqdm's notebook bar ignores the variable),
    so that the executed notebooks the book publishes carry no widgets."""
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false"))
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


# oneDNN's instruction sets below AVX512_CORE_BF16, the first with bfloat16 arithmetic: held to one of
# them by ONEDNN_MAX_CPU_ISA, its bf16 kernels emulate (it ignores values it does not know)
_BELOW_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def _onednn_cap() -> str:
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # oneDNN's order
        if os.environ.get(name, "").strip():
            return os.environ[name].strip().upper()
    return "ALL"


def _onednn_bf16() -> bool:
    """oneDNN's own answer: may its kernels compute in bfloat16 here (natively or not)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN or without the query
        return False


def _bf16_instructions() -> bool:
    """Whether this x86 processor has bfloat16 arithmetic: AVX-512 BF16 or AMX."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively, so that bf16 autocast saves time there.

    The current CUDA GPU does from Ampere on; an older one (Colab's T4) only emulates it. An x86 CPU
    does when the processor has the instructions for it, AVX-512 BF16 or AMX, and oneDNN may use them
    (``ONEDNN_MAX_CPU_ISA`` set below ``AVX512_CORE_BF16`` forbids it); on other x86 CPUs the bf16
    kernels convert every operand and are slower than float32 (``benchmarks/bf16_isa.py``). Anything
    else (ARM processors, Apple's MPS) is answered False, unmeasured: float32 is always correct, at
    worst slower.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or _onednn_cap() in _BELOW_BF16:
        return False
    return _onednn_bf16() and _bf16_instructions()


def bf16_autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` where it computes bf16 natively (:func:`native_bf16`), and
    nothing (float32) elsewhere: the network's convolutions and matrix products in bfloat16, the rest
    in float32. Use it where speed is all that bf16 is for."""
    device = torch.device(device)
    if native_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


CODE_DIRS = ("src", "notebooks", "benchmarks")  # what a result's numbers depend on


def modified_code(path: str | os.PathLike | None = None) -> list[str] | None:
    """The files of the code (:data:`CODE_DIRS`) that differ from the commit :func:`git_commit` names,
    relative to the repository at ``path`` (default: this package's): a record of a result carries them
    beside its commit, so that a measurement made with uncommitted changes says so. None outside a
    repository (a copy of the tree without its ``.git``)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=where, capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0:
            return None
        out = subprocess.run(["git", "status", "--porcelain", "-z", "--untracked-files=no", "--", *CODE_DIRS],
                             cwd=top.stdout.strip(), capture_output=True, text=True, timeout=10,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # never block the user's git
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    paths, entries = [], iter(out.stdout.split("\0"))
    for entry in entries:  # "XY path"
        if len(entry) > 3:
            paths.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)  # a rename's or a copy's old path follows
    return sorted(paths)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the checksum published beside every checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decay_to_zero(progress: float, last: float = 0.2) -> float:
    """The learning rate's multiplier at ``progress`` (the fraction of the run done, in [0, 1]):
    constant, then linear to zero over the ``last`` fraction of the run, and zero after it.

    Stochastic gradient steps at a constant rate keep the weights in a cloud whose width grows with
    the rate; decaying the rate to zero at the end lets them settle at its centre ("warmup-stable-
    decay", Hägele et al. 2024). Measured in the fraction of a *time* budget, it needs no step count.
    """
    if not 0 < last <= 1:
        raise ValueError(f"last must be a fraction of the run in (0, 1], not {last}")
    return min(1.0, max(0.0, (1.0 - progress) / last))


def power_ema(model: torch.nn.Module, gamma: float = 6.94) -> torch.optim.swa_utils.AveragedModel:
    """An average of the weights after each update, update n weighted in proportion to n^gamma
    (the power-function EMA of Karras et al. 2024): its window is a fixed fraction of the run, however
    short, where a fixed decay of 0.999 averages over the last ~1,000 steps whatever the run's length.
    gamma = 6.94 gives a relative width (std / length) of 0.10. Call ``.update_parameters(model)``.
    """
    if gamma <= -1:
        raise ValueError(f"gamma must be greater than -1 (0: a plain mean of every step), got {gamma}")
    totals = [0.0]  # totals[n] = sum of k^gamma for k = 1..n, extended as n grows

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = int(num_averaged) + 1  # this is update n; the average so far holds updates 1..n-1
        while len(totals) <= n:
            totals.append(totals[-1] + len(totals) ** gamma)
        return averaged + (n**gamma / totals[n]) * (current - averaged)

    return torch.optim.swa_utils.AveragedModel(model, avg_fn=average, use_buffers=True)


# --------------------------------------------------------------------------------------------
# Checkpoints: data, never code.
#
# A checkpoint holds only tensors and plain Python data (dicts, lists, tuples, numbers, strings),
# so that torch's safe unpickler (``weights_only=True``) can read it: loading a file from anywhere
# can then never run code. Format 1 stored NumPy's RNG state as an ndarray and torch's version as
# a ``TorchVersion``; exactly those types are allowed when reading, nothing that can call anything.

_FORMAT_1_TYPES = [
    np.ndarray.__reduce__(np.zeros(1))[0],  # numpy's _reconstruct: an empty array of a given dtype
    np.ndarray, np.dtype, type(np.dtype(np.uint32)), TorchVersion,
]
_sha256_cache: dict[tuple[str, int, int], str] = {}


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data (NumPy's key as an int64 tensor)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),  # (version, tuple of 625 ints, gauss_next)
        "numpy": {**numpy_state, "state": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
        }},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
        np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
    else:  # format 1: the legacy tuple
        np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _config_dict(config: Any) -> dict[str, Any] | None:
    if config is None or isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    raise TypeError(f"config must be a dataclass or a dict, got {type(config).__name__}")


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON gives them back (dataclasses as dicts, tuples as lists), so that the
    settings saved with a run and those of a new run compare equal when they are the same."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    return json.loads(json.dumps(settings, sort_keys=True, default=plain))


def fingerprint(folders) -> dict[str, tuple[int, int]]:
    """(size, modification time) of every file in ``folders``: taken before and after a run that
    must publish nothing (the smoke notebooks, the gpu-dry run)."""
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for folder in map(Path, folders)
            if folder.exists() for path in sorted(folder.rglob("*")) if path.is_file()}


def files_changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """The files added, removed or rewritten between two fingerprints, sorted."""
    return sorted({path for path, _ in set(before.items()) ^ set(after.items())})


def _protected_by(path: Path) -> str | None:
    """The folder of $GENMODELS_PROTECTED_DIRS that holds ``path``, if any: under the test suite and
    the gpu-dry run the published folders are listed there."""
    return next((folder for folder in filter(None, os.environ.get(PROTECTED, "").split(os.pathsep))
                 if path.resolve().is_relative_to(Path(folder).resolve())), None)


def _refuse_protected(path: Path) -> None:
    """Refuse to write ``path`` in a protected folder (:func:`_protected_by`)."""
    folder = _protected_by(path)
    if folder is not None:
        raise PermissionError(
            f"refusing to write {path}: {folder} is protected in this run (${PROTECTED}, set by the "
            "test suite and the gpu-dry run, which never change published files). Publish with "
            "`make results PROFILE=...`"
        )


def _stage(final: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a temporary file beside ``final`` with ``write``, flushed to disk; return its path."""
    _refuse_protected(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.{STAGED}", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o644)  # mkstemp makes it private; a checkpoint is for sharing
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


STAGED = "staged-"  # in the name of a temporary, which _sweep may remove once abandoned
JOURNAL = ".genmodels-replacing"  # {JOURNAL}.{pid}-{random}.json: a set of files being replaced
PATIENCE = 60.0  # seconds to wait for another process that is replacing files in a folder we read
ABANDONED = 3600.0  # seconds after which a temporary of a writer that is gone may be removed


def _backup_of(final: Path, token: str) -> Path:
    """The second name the old content of ``final`` keeps while the set ``token`` replaces it."""
    return final.with_name(f".{final.name}.{token}.previous")


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable before anything that depends on them (POSIX; a no-op
    where a folder cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


class _Journal:
    """What a set of files replaced together is to become, written into every folder the set touches
    before its first rename and removed after its last. A process killed between two renames (SIGKILL,
    power loss) leaves it behind, and :func:`finish_interrupted_writes` completes the set from it (every
    temporary is whole and on disk by then), or, where the set was being undone or its journals were
    not all written yet, undoes it. The writer holds a lock on each journal while it works, which tells
    a live writer from a dead one whatever process ids the machine reuses."""

    def __init__(self, staged: list[tuple[Path, Path]]):
        self.staged = staged
        self.token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # this set's: no other set's backups
        name = f"{JOURNAL}.{self.token}.json"
        self.folders = sorted({final.parent.resolve() for _, final in staged})
        self.paths = [folder / name for folder in self.folders]
        self.handles: list[BinaryIO] = []

    def write(self) -> None:
        for folder, path in zip(self.folders, self.paths, strict=True):
            def relative(file: Path, folder=folder) -> str:  # the folder resolved, the name kept: a
                return os.path.relpath(file.parent.resolve() / file.name, folder)  # link stays a link
            note = {"renames": [{"temporary": relative(temporary), "final": relative(final),
                                 "backup": relative(_backup_of(final, self.token)),
                                 "existed": final.exists()}
                                for temporary, final in self.staged],
                    "journals": [relative(other) for other in self.paths]}
            _refuse_protected(path)
            descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
            handle = os.fdopen(descriptor, "wb")  # held, and locked, until remove()
            self.handles.append(handle)
            try:
                if fcntl is not None:
                    fcntl.flock(handle, fcntl.LOCK_EX)  # from its first byte: see finish_interrupted_writes
                os.chmod(temporary, 0o644)  # readers of the folder read it too
                handle.write(json_text(note).encode())
                handle.flush()
                os.fsync(handle.fileno())
                os.replace(temporary, path)
            finally:
                Path(temporary).unlink(missing_ok=True)  # renamed, or not to be left behind
            _fsync_folder(folder)

    def turn_back(self) -> None:
        """Say, beside each journal, that this set is being undone: if the process dies while it
        restores the old files, recovery finishes restoring them rather than completing the new set.
        Raises OSError if a mark cannot be written: then nothing may be restored (see _replace_all)."""
        for path in self.paths:
            if path.exists():
                path.with_suffix(".back").write_bytes(b"")
        for folder in self.folders:
            _fsync_folder(folder)

    def remove(self) -> None:
        for path in self.paths:  # the journals before their marks: a lone mark means nothing
            path.unlink(missing_ok=True)
        for path in self.paths:
            path.with_suffix(".back").unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Let go of the locks, leaving the journals for recovery to finish the set."""
        for handle in self.handles:
            handle.close()


def _lock_shared(handle: BinaryIO, journal: Path) -> bool:
    """Wait, up to :data:`PATIENCE` seconds, for the writer's exclusive lock on ``journal`` to go,
    and take a shared one (which NFS grants on a file opened for reading). False where the file
    system has no locks, or the platform no fcntl."""
    if fcntl is None:
        return False
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"another process has been replacing the files listed in {journal} for "
                    f"{PATIENCE:.0f} s: wait for it to finish, or stop it and read again"
                ) from None
            time.sleep(0.05)
        except OSError:
            return False


@contextlib.contextmanager
def _claimed(journal: Path) -> Iterator[bool]:
    """Hold ``journal``'s lock: true while its set is unfinished and its writer is gone. A live writer
    is waited for (it holds the lock for a few renames), up to :data:`PATIENCE` seconds."""
    try:
        handle = open(journal, "rb")  # noqa: SIM115
    except FileNotFoundError:
        yield False  # finished meanwhile
        return
    with handle:
        if not _lock_shared(handle, journal):  # no locks here: a journal of a running process is
            pid = journal.name.partition(f"{JOURNAL}.")[2].split("-")[0]  # its writer's
            if not pid.isdigit() or _process_alive(int(pid)):
                yield False
                return
        try:
            unfinished = os.path.samestat(os.fstat(handle.fileno()), os.stat(journal))
        except FileNotFoundError:
            unfinished = False  # its writer finished while we waited
        yield unfinished


def finish_interrupted_writes(folder: str | os.PathLike) -> list[Path]:
    """Complete, or undo, any set of files that a killed process left half replaced in ``folder``.

    :func:`write_together` renames its files one by one; a process killed between two renames would
    leave, say, a new checkpoint beside its old checksum. Its journal (see :class:`_Journal`) says
    which temporaries were still to be renamed over which files: they are renamed now, so the set is
    the new one throughout; a set that was being undone, or whose journals were not all written yet
    (then no rename had begun), gets its old files back. Journals of live writers are waited for;
    files that dead writers were still staging (a checkpoint killed halfway) go once abandoned
    (:func:`_sweep`).
    Called before every write (:func:`write_together`, :func:`save_checkpoint`, the pipeline's executed
    copies) and every read of a published file; returns the files it changed.
    """
    folder = Path(folder)
    changed: list[Path] = []
    for journal in sorted(folder.glob(f"{JOURNAL}.*.json")):
        with _claimed(journal) as unfinished:
            if unfinished:
                changed += _finish(folder, journal)
    _sweep(folder)
    return changed


def _sweep(folder: Path) -> None:
    """Remove, as far as it can, what dead writers left in ``folder`` that no journal names: marks
    without their journal, and journals and staged files (a checkpoint's megabytes) that their
    writers died writing, once older than :data:`ABANDONED` seconds (a writer takes seconds; age
    tells a dead one even from a process of another machine or container). Never in a protected
    folder; a folder that cannot be written keeps them, and the read goes on."""
    if _protected_by(folder) is not None or any(folder.glob(f"{JOURNAL}.*.json")):
        return  # a journal left: a set being written, or left to finish, owns these files
    now = time.time()
    for leftover in [*folder.glob(f"{JOURNAL}.*.back"), *folder.glob(f".{JOURNAL}.*.json.*.tmp"),
                     *folder.glob(f".*.{STAGED}*.tmp")]:
        with contextlib.suppress(OSError):
            if leftover.suffix == ".back" or now - leftover.stat().st_mtime > ABANDONED:
                leftover.unlink()


def _finish(folder: Path, journal: Path) -> list[Path]:
    try:
        text = journal.read_text()
    except FileNotFoundError:
        return []  # finished from another of its folders meanwhile
    try:
        note = json.loads(text)
        renames = [(folder / r["temporary"], folder / r["final"], folder / r["backup"], bool(r["existed"]))
                   for r in note["renames"]]
        journals = [folder / other for other in note["journals"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{journal} (what a killed write had yet to rename) is unreadable ({error}). Check the files "
            f"in {folder} against `git status`, then remove {journal.name}"
        ) from error
    undo = any(path.with_suffix(".back").exists() for path in journals)
    forward = not undo and all(path.exists() for path in journals)
    changed = []
    try:
        for temporary, final, backup, existed in renames:
            _refuse_protected(final)
            with contextlib.suppress(FileNotFoundError):  # gone: another recovery of the set did it
                if forward and temporary.exists():
                    os.replace(temporary, final)
                    changed.append(final)
                elif undo and backup.exists():
                    os.replace(backup, final)
                    changed.append(final)
                elif undo and not existed and final.exists():
                    final.unlink()
                    changed.append(final)
        for place in {final.parent for _, final, _, _ in renames}:
            _fsync_folder(place)
        for temporary, _, backup, _ in renames:
            temporary.unlink(missing_ok=True)
            backup.unlink(missing_ok=True)
        for path in journals:
            path.unlink(missing_ok=True)
        for path in journals:
            path.with_suffix(".back").unlink(missing_ok=True)
    except OSError as error:  # a protected or read-only folder, a full disk
        raise CheckpointError(
            f"a process killed while replacing files left an unfinished set in {folder} ({journal.name}), "
            f"and it cannot be finished here ({error}). The next read or write of {folder} where writing "
            "is allowed finishes it: e.g. `make results`, or python -c \"from genmodels.train import "
            f"finish_interrupted_writes; finish_interrupted_writes('{folder}')\""
        ) from error
    if changed:
        print(f"{'undid' if undo or not forward else 'completed'} an interrupted write: "
              f"{', '.join(os.path.normpath(path) for path in changed)}", file=sys.stderr)
    return [Path(os.path.normpath(path)) for path in changed]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT), SIGTERM and SIGHUP until the block is done, so that they stop a set of renames
    before or after it, never halfway (in the main thread; elsewhere Python delivers no signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
        handler = signal.getsignal(number)
        if handler is not None:  # None: a handler Python did not install, which it cannot restore
            previous[number] = signal.signal(number, lambda n, frame: received.append(n))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)


def _replace_all(staged: list[tuple[Path, Path]]) -> None:
    """Rename each staged temporary over its destination, all or none: if a rename fails, the
    destinations already replaced get their previous content back. No temporary is left behind.
    A set of several files is journaled first (:class:`_Journal`), so that a process killed between
    its renames leaves it for the next read or write to finish; Ctrl-C waits for the renames. Callers
    finish what an earlier writer left in the folders first (:func:`finish_interrupted_writes`)."""
    journal = _Journal(staged) if len(staged) > 1 else None
    renamed: list[tuple[Path, Path | None, bool]] = []  # replaced: a second name for its old content
    backups: list[Path] = []
    outcome = "left"  # "done", "undone", or "left" to finish_interrupted_writes with the journals
    with _signals_held():
        try:
            if journal is not None:
                journal.write()
            for temporary, final in staged:
                existed, backup = final.exists(), None
                if journal is not None and existed:  # one file alone is replaced or not: no backup
                    backup = _backup_of(final, journal.token)
                    try:
                        os.link(final, backup)  # a second name, no copy
                    except OSError:  # a file system without hard links
                        shutil.copy2(final, backup)
                    backups.append(backup)
                os.replace(temporary, final)
                renamed.append((final, backup, existed))
            for folder in journal.folders if journal is not None else []:
                _fsync_folder(folder)  # the renames on disk before their journals go
            outcome = "done"
        except BaseException:
            outcome = "undone" if _undo(journal, renamed) else "left"
            raise
        finally:
            if outcome == "left" and journal is not None:  # its journals, temporaries and backups
                journal.release()  # say what recovery does
            else:
                for temporary, _ in staged:
                    temporary.unlink(missing_ok=True)
                for backup in backups:
                    backup.unlink(missing_ok=True)
                if journal is not None:
                    journal.remove()


def _undo(journal: _Journal | None, renamed: list[tuple[Path, Path | None, bool]]) -> bool:
    """Give the files already replaced their old content back, after marking the set as being undone
    (so that a kill meanwhile is undone by recovery too). False where that could not be done: then
    the set is left, journaled, for :func:`finish_interrupted_writes`."""
    if not renamed:
        return True
    try:
        journal.turn_back()  # several files: renamed is empty for one whose rename failed
        for final, backup, existed in reversed(renamed):
            if backup is not None:
                os.replace(backup, final)
            elif not existed:
                final.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def _payload(model, optimizer, config, step, extra, run) -> dict[str, Any]:
    from genmodels import __version__

    return {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__qualname__,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": _config_dict(config),
        "step": int(step),
        "rng": _rng_state(),
        "extra": extra or {},
        "run": _plain(run) if run is not None else None,
        "provenance": {
            "genmodels_version": __version__,
            "git_commit": git_commit(),
            "torch_version": str(torch.__version__),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    config: Any = None,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    """Write model and optimizer state, config, step, RNG state and provenance to ``path``, atomically.

    ``run`` names the settings that define the run (learning rate, epochs, seed, data size, ...):
    :func:`resume` continues the saved state only for the same settings. The file is written beside
    its destination under a temporary name, flushed to disk, and only then renamed over ``path``:
    an interrupted save leaves the previous checkpoint intact.
    """
    path = Path(path)
    payload = _payload(model, optimizer, config, step, extra, run)
    finish_interrupted_writes(path.parent)
    _replace_all([(_stage(path, lambda f: torch.save(payload, f)), path)])
    return path


def json_text(obj: Any) -> str:
    """How the project writes JSON: indented, keys sorted, a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def write_together(files: dict[Path, bytes]) -> None:
    """Write each file atomically, all of them or none: every one is staged under a temporary name
    (or refused, in a protected folder) before any is renamed into place (:func:`_replace_all`)."""
    for folder in {path.parent for path in files}:
        finish_interrupted_writes(folder)  # before ours: a set it completes must not overwrite ours
    staged = []
    try:
        for path, data in files.items():
            staged.append((_stage(path, lambda f, data=data: f.write(data)), path))
    except BaseException:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
        raise
    _replace_all(staged)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (the old file survives a crash)."""
    path = Path(path)
    write_together({path: json_text(obj).encode()})
    return path


def read_sha256sums(path: str | os.PathLike) -> dict[str, str]:
    """file name -> hex SHA-256 from a ``sha256sum``-style file (blank lines allowed); {} if absent."""
    path = Path(path)
    if not path.exists():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise CheckpointError(
                f"{path}, line {number}, is not '<sha256>  <file name>': {line!r}. Restore the file "
                f"with `git checkout -- {path}`, or mend that line"
            )
        sums[parts[1].strip().lstrip("*")] = parts[0]
    return sums


def _sha256_cached(path: Path) -> str:
    """file_sha256, remembered per (path, size, modification time) for the life of the process."""
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _sha256_cache:
        _sha256_cache[key] = file_sha256(path)
    return _sha256_cache[key]


def verify_published(path: str | os.PathLike) -> None:
    """Check a published checkpoint against the ``SHA256SUMS`` and the ``.json`` record beside it.

    A file that neither lists (a run's own saved state, say) is not checked. Raises
    :class:`ChecksumError` naming the file, both hashes and how to restore it.
    """
    path = Path(path)
    finish_interrupted_writes(path.parent)
    expected = {}
    sums = read_sha256sums(path.parent / "SHA256SUMS")
    if path.name in sums:
        expected[str(path.parent / "SHA256SUMS")] = sums[path.name]
    record_path = path.with_suffix(".json")
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ChecksumError(
                f"{record_path}, the record of {path.name}, is not valid JSON ({error}). Restore it "
                f"with `git checkout -- {record_path}`, or re-run the notebook that publishes it"
            ) from error
        if not (isinstance(record, dict) and record.get("file") == path.name
                and isinstance(record.get("sha256"), str)):
            raise ChecksumError(
                f"{record_path}, the record of {path.name}, does not name it with its sha256 (a record "
                f"written by publish_checkpoint holds \"file\": \"{path.name}\" and \"sha256\"). Restore it "
                f"with `git checkout -- {record_path}`, or re-run the notebook that publishes it"
            )
        expected[str(record_path)] = record["sha256"]
    if not expected:
        return
    actual = _sha256_cached(path)
    for source, digest in expected.items():
        if digest != actual:
            raise ChecksumError(
                f"{path} does not match its published checksum: {source} says sha256 {digest}, "
                f"the file has {actual}. It was changed or damaged after it was published; "
                f"restore it with `git checkout -- {path}`, or re-run the notebook that publishes it"
            )


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder itself (no lock file to leave behind) while the block
    runs; where folders cannot be locked (Windows, NFS), nothing is held."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # NFS locks only files opened for writing: no lock there
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


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
    The three files are replaced together: ``SHA256SUMS`` is read (under the folder's publishing
    lock, so that two publishers keep each other's lines), all three are written under temporary
    names, and only then renamed; if a rename fails, the old files come back.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"publish a checkpoint to a .pt file, not {path}: its record goes beside it "
                         f"as {path.with_suffix('.json').name}")
    sums_path, record_path = path.parent / "SHA256SUMS", path.with_suffix(".json")
    payload = _payload(model, None, config, step, {**(extra or {}), "record": record}, None)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    weights = buffer.getvalue()
    full_record = {
        **record,
        "file": path.name,
        "sha256": hashlib.sha256(weights).hexdigest(),
        "bytes": len(weights),
        "params": sum(p.numel() for p in model.parameters()),
        "config": _config_dict(config),
        "step": int(step),
        "commit": git_commit(),
        "modified_code": modified_code(),
    }
    _refuse_protected(sums_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_locked(path.parent):  # two publishers reading SHA256SUMS at once: a line lost
        sums = read_sha256sums(sums_path)  # a malformed file stops us before anything is written
        sums[path.name] = full_record["sha256"]
        sums_text = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
        write_together({path: weights, record_path: json_text(full_record).encode(),
                        sums_path: sums_text.encode()})
    return full_record


def _check_device(map_location: str | torch.device | None) -> torch.device:
    device = torch.device("cpu" if map_location is None else map_location)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"map_location={str(map_location)!r}, but this machine has no CUDA device: "
            "use map_location='cpu', or pick_device() to choose what is there"
        )
    return device


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((key, _to_device(value, device)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(value, device) for value in obj)
    return obj


_FIELDS = {"model_class": str, "model": dict, "config": (dict, type(None)), "step": int,
           "extra": dict, "provenance": dict}


def _check_layout(path: Path, checkpoint: Any) -> None:
    from genmodels import __version__

    if not isinstance(checkpoint, dict):
        checkpoint = {"(not a dictionary)": type(checkpoint).__name__}
    written_by = checkpoint.get("provenance")
    version = written_by.get("genmodels_version", "?") if isinstance(written_by, dict) else "?"
    form = checkpoint.get("format")
    if isinstance(form, int) and form > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by genmodels {version} in checkpoint format {form}; this is genmodels "
            f"{__version__}, which reads formats up to {CHECKPOINT_FORMAT}: upgrade genmodels to load it"
        )
    if form not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} was not written by genmodels.train.save_checkpoint (format {form!r}, expected one of "
            f"{READABLE_FORMATS}): it holds {sorted(map(str, checkpoint))[:8]}"
        )
    wrong = [name for name, kind in _FIELDS.items() if not isinstance(checkpoint.get(name), kind)]
    if wrong:
        raise CheckpointError(
            f"{path} says it is a genmodels checkpoint (format {form}, genmodels {version}) but its "
            f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} missing or of the wrong type. "
            "It was not written by save_checkpoint; restore the original file or re-run the training"
        )


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """The dictionary written by :func:`save_checkpoint` (config, step, extra, provenance, states),
    its tensors on ``map_location`` (None: the CPU).

    A published checkpoint is first checked against its ``SHA256SUMS`` and ``.json`` record. The file
    is read with torch's safe unpickler, so a file holding code is refused, never run. Raises
    :class:`CheckpointError` for a missing, truncated, foreign or unsafe file.
    """
    path = Path(path)
    device = _check_device(map_location)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train the model first, or check the path")
    verify_published(path)
    try:
        _check_crcs(path)
        with torch.serialization.safe_globals(_FORMAT_1_TYPES):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise _unreadable(path, error) from error
        culprit = next((line.strip() for line in str(error).splitlines()
                        if "GLOBAL" in line or "but got" in line), "an unsupported type")
        raise CheckpointError(
            f"{path} holds Python objects that are not tensors or plain data ({culprit[:200]}); a "
            "checkpoint is data, never code, so genmodels refuses to load it. Do not load it with "
            "torch.load(weights_only=False) unless you trust where it came from"
        ) from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as error:
        raise _unreadable(path, error) from error
    _check_layout(path, checkpoint)
    return _to_device(checkpoint, device) if device.type != "cpu" else checkpoint


def _check_crcs(path: Path) -> None:
    """torch.load does not check the CRC-32 that its zip container stores for every record, so a
    flipped byte in the weights would load silently; zipfile checks them (milliseconds)."""
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise ValueError(f"its record {damaged} fails its CRC-32 check")


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a readable checkpoint (truncated or corrupt: {str(error)[:200]}). If it is a "
        f"published checkpoint, restore it with `git checkout -- {path}`; if it is a run's saved "
        "state, move it aside and re-run the notebook, which then starts afresh"
    )


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` (and ``optimizer``).

    Returns the checkpoint dictionary. Raises :class:`CheckpointError` for a missing, truncated,
    foreign or unsafe file, and for a checkpoint of another architecture, naming the parameters that
    do not fit; the model is left untouched then.
    """
    checkpoint = read_checkpoint(path, map_location)
    _load_into(Path(path), checkpoint, model, optimizer, restore_rng)
    return checkpoint


def _load_into(path, checkpoint, model, optimizer=None, restore_rng=False) -> None:
    _check_fits(path, checkpoint, model)
    if optimizer is not None and checkpoint.get("optimizer") is None:
        raise CheckpointError(f"{path} holds no optimizer state to resume from")
    if optimizer is not None:  # checked before anything is loaded, as the architecture is
        saved = [len(group["params"]) for group in checkpoint["optimizer"].get("param_groups", [])]
        wanted = [len(group["params"]) for group in optimizer.param_groups]
        if saved != wanted:
            raise CheckpointError(
                f"{path} holds the state of an optimizer over other parameters (groups of {saved} "
                f"tensors; this one has {wanted}): move it aside to start afresh")
    model.load_state_dict(checkpoint["model"])
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if restore_rng:
        _set_rng_state(checkpoint["rng"])


def resume(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    run: dict[str, Any],
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any] | None:
    """Continue a run: load the state saved at ``path`` into model and optimizer and restore the RNGs,
    if it was saved by a run with the same ``run`` settings. Returns the checkpoint, or None when
    there is nothing to resume. A state saved with other settings raises :class:`StaleRunError`
    (continuing it would silently mix two runs); the file is left alone.
    """
    path = Path(path)
    if not path.exists():
        return None
    checkpoint = read_checkpoint(path, map_location)
    saved, wanted = checkpoint.get("run"), _plain(run)
    if saved != wanted:
        if saved is None:
            differences = "it was saved without the settings of its run"
        else:
            differences = "; ".join(
                f"{key}: {saved.get(key, '(not set)')!r} there, {wanted.get(key, '(not set)')!r} now"
                for key in sorted(set(saved) | set(wanted)) if saved.get(key) != wanted.get(key)
            )
        raise StaleRunError(
            f"{path} is the saved state of a different run ({differences}). Resuming it would continue "
            "that run under the new settings. Move the file aside (or delete it) to start afresh, or "
            "restore the settings to resume it"
        )
    _load_into(path, checkpoint, model, optimizer, restore_rng=True)
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


M = TypeVar("M", bound=torch.nn.Module)


def load_model(
    path: str | os.PathLike,
    model_class: type[M],
    config_class: type,
    map_location: str | torch.device | None = "cpu",
) -> tuple[M, dict[str, Any]]:
    """A ``model_class(config_class(**stored config))`` with the checkpoint's weights, in eval mode on
    ``map_location``: (model, checkpoint). A checkpoint of another model, or a config this version
    does not know, gets an error that says what the file holds and which loader fits it."""
    path = Path(path)
    return model_from_checkpoint(path, read_checkpoint(path), model_class, config_class, map_location)


def model_from_checkpoint(
    path: str | os.PathLike,
    checkpoint: dict[str, Any],
    model_class: type[M],
    config_class: type,
    map_location: str | torch.device | None = "cpu",
) -> tuple[M, dict[str, Any]]:
    """:func:`load_model` on a checkpoint already read by :func:`read_checkpoint` (``path`` names it in
    errors), for a loader that must look at the file before it knows which model it holds."""
    device = _check_device(map_location)
    held = checkpoint["model_class"]
    if held != model_class.__qualname__:
        loader = _LOADERS.get(held, "the loader of that model")
        raise CheckpointError(
            f"{path} holds a {held} (config {checkpoint['config']}), not a {model_class.__qualname__}: "
            f"load it with {loader}"
        )
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"config_class must be the config dataclass itself (e.g. VAEConfig), not "
                        f"{config_class!r}: the checkpoint's stored config builds the instance")
    stored = dict(checkpoint["config"] or {})
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    unknown = sorted(set(stored) - set(fields))
    if unknown:
        from genmodels import __version__

        if len(unknown) > len(stored) / 2:  # most entries unknown: another model's config class
            raise CheckpointError(
                f"{path} holds a {held} whose config has entries {unknown} that {config_class.__name__} "
                f"does not know: {config_class.__name__} is not the config of a {held}; load it with "
                f"{_LOADERS.get(held, 'the config class the model was built with')}")
        raise CheckpointError(
            f"{path} has config entries {unknown} that {config_class.__name__} of genmodels "
            f"{__version__} does not know (it was written by genmodels "
            f"{checkpoint['provenance'].get('genmodels_version', '?')}): use the genmodels version "
            "that wrote it"
        )
    for name, value in stored.items():  # JSON-like storage turns tuples into lists
        if isinstance(value, list) and isinstance(fields[name].default, tuple):
            stored[name] = tuple(value)
    model = model_class(config_class(**stored))
    _load_into(path, checkpoint, model)
    return model.to(device).eval(), checkpoint


_LOADERS = {  # model class -> the function that loads it, for error messages
    "VAE": "genmodels.vae.load_vae",
    "UNet": "genmodels.diffusion.load_ddpm",
    "MNISTClassifier": "genmodels.features.load_classifier",
    "Generator": "genmodels.wgan.load_generator",
    "ConvGenerator": "genmodels.wgan.load_generator",
    "Critic": "genmodels.train.load_model(path, Critic, WGANConfig)",
    "ConvCritic": "genmodels.train.load_model(path, ConvCritic, DCGANConfig)",
}


# --------------------------------------------------------------------------------------------
# The bookkeeping around a training loop


class TrainingRun:
    """What a training loop carries besides its algorithm: resuming, saving, its clock, its budget.

    A notebook's loop then shows only the algorithm's lines::

        state = TrainingRun(runs / "vae-last.pt", run=settings, model=vae, optimizer=adam,
                            schedule=lr_schedule)
        for epoch in state.steps(epochs, desc="vae"):
            ...                              # the algorithm
            state.log.append(dict(...))      # whatever the loop measures

    ``steps`` first resumes from ``path`` when a run with the same ``run`` settings saved it there
    (:func:`resume`; other settings raise :class:`StaleRunError`), then yields the remaining step
    indices. After every ``every``-th step (and the last) it saves the model, the optimizer, every
    other object with a ``state_dict`` passed as a keyword (a second network, its optimizer, a
    learning-rate schedule, an EMA), ``log``, ``extra`` and the clock, atomically; with ``minutes``
    it stops after the first save past that budget of training time. ``due`` tells the loop body
    whether the step it is in ends with a save (the moment to measure and log). A loop body that
    raises leaves the last saved state intact, so running again continues from it.
    """

    def __init__(self, path: str | os.PathLike, *, run: dict[str, Any], model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, config: Any = None, **others: Any) -> None:
        self.path, self.run, self.config = Path(path), run, config
        self.model, self.optimizer, self.others = model, optimizer, others
        self.step, self.log, self.extra = 0, [], {}
        self.due, self.budget_spent, self.current = False, False, 0
        self._seconds, self._clock = 0.0, None

    @property
    def seconds(self) -> float:
        """Training time so far, across resumed sessions (wall time inside :meth:`steps`)."""
        running = time.perf_counter() - self._clock if self._clock is not None else 0.0
        return self._seconds + running

    def resume(self) -> bool:
        """Load the saved state of this run, if any; True when there was one."""
        checkpoint = resume(self.path, self.model, optimizer=self.optimizer, run=self.run)
        if checkpoint is None:
            return False
        saved = checkpoint["extra"]
        if not {"states", "log", "extra", "seconds"} <= set(saved):
            raise CheckpointError(f"{self.path} is not the saved state of a TrainingRun (written by "
                                  "save_checkpoint, say): move it aside to start afresh")
        missing = sorted(set(self.others) - set(saved["states"]))
        if missing:
            raise CheckpointError(f"{self.path} holds no state for {', '.join(missing)}: move it aside "
                                  "to start afresh")
        for name, obj in self.others.items():
            obj.load_state_dict(saved["states"][name])
        self.step, self.log, self.extra = checkpoint["step"], saved["log"], saved["extra"]
        self._seconds = saved["seconds"]
        return True

    def save(self) -> Path:
        """Write the whole state to ``path`` atomically."""
        states = {name: obj.state_dict() for name, obj in self.others.items()}
        extra = dict(states=states, log=self.log, extra=self.extra, seconds=self.seconds)
        return save_checkpoint(self.path, self.model, optimizer=self.optimizer, config=self.config,
                               step=self.step, run=self.run, extra=extra)

    def steps(self, total: int, *, every: int = 1, minutes: float | None = None,
              desc: str | None = None) -> Iterator[int]:
        """Resume, then yield the step indices ``step, ..., total - 1``, saving as described above."""
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, not {every}")
        self.resume()
        self.budget_spent = minutes is not None and self._seconds > 60 * minutes
        if self.budget_spent:
            return
        self._clock = time.perf_counter()
        try:
            for step in progress(range(self.step, total), desc=desc, initial=self.step, total=total):
                self.due = (step + 1) % every == 0 or step + 1 == total
                self.current = step
                yield step
                if self.due:
                    self.step = step + 1
                    self.save()
                    if minutes is not None and self.seconds > 60 * minutes:
                        self.budget_spent = True
                        return
        finally:
            self._seconds, self._clock = self.seconds, None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the clock inside the block: time spent evaluating during training is not training
        time, and does not count against the budget of ``steps``."""
        running = self._clock is not None
        self._seconds, self._clock = self.seconds, None
        try:
            yield
        finally:
            if running:
                self._clock = time.perf_counter()

    def check_finite(self, limit: float = 1e4, **values: float) -> None:
        """Stop the run with a clear message when a measured value is not finite or exceeds
        ``limit`` in size (a diverging run); the last saved state stays as it was."""
        bad = {name: value for name, value in values.items()
               if not (math.isfinite(value) and abs(value) < limit)}
        if bad:
            shown = ", ".join(f"{name} = {value}" for name, value in bad.items())
            raise RuntimeError(
                f"the run diverged at step {self.current + 1} ({shown}). The last good state, step "
                f"{self.step}, is {self.path}: lower the learning rate or check the data, then run "
                "again to resume from it"
            )


# --------------------------------------------------------------------------------------------
# Scratch space for smoke runs


def scratch_dir(name: str = "run") -> Path:
    """A new temporary directory for what a smoke run writes, removed when the process exits.

    Directories live under ``<tmp>/genmodels-scratch/<pid>-...``; those of processes that no longer
    run (a killed run) are removed on the next call. Nothing outside that folder is touched.
    """
    root = Path(tempfile.gettempdir()) / "genmodels-scratch"
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(dir=root, prefix=f"{os.getpid()}-{name}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


if __name__ == "__main__":  # `python -m genmodels.train PROFILE` prints the profile it resolves to
    try:
        print(resolve_profile(sys.argv[1] if len(sys.argv) > 1 else None))
    except ProfileError as error:
        raise SystemExit(str(error)) from None
