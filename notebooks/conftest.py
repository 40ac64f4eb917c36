"""`pytest --nbval notebooks/`: the smoke profile unless told otherwise, published folders untouched,
and nothing left behind in the temporary directory."""

import os
import shutil
from pathlib import Path

import pytest

from genmodels.train import PROTECTED, scratch_dir

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = [ROOT / "checkpoints", ROOT / "results", ROOT / "book" / "notebooks"]


def fingerprint() -> dict[str, tuple[int, int]]:
    """(size, modification time) of every file in the published folders."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for folder in PUBLISHED if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


def pytest_configure(config):
    profile = os.environ.setdefault("GENMODELS_PROFILE", "smoke").strip().lower()
    os.environ[PROTECTED] = os.pathsep.join(map(str, PUBLISHED))
    # Kernels inherit the environment: their temporary files and connection files go to a folder
    # that is removed when the run ends (or, after a killed run, by the next one).
    scratch = scratch_dir("nbval")
    os.environ["TMPDIR"] = os.environ["JUPYTER_RUNTIME_DIR"] = str(scratch)
    config._genmodels = {"fingerprint": fingerprint(), "scratch": scratch}
    if profile != "smoke":
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"GENMODELS_PROFILE={profile}: the notebooks will train at full {profile} sizes (minutes to "
            "hours each) and cannot publish anything, since under pytest checkpoints/, results/ and "
            "book/notebooks/ are protected. To publish, run `make results PROFILE=...` instead."
        ), stacklevel=2)


def pytest_sessionfinish(session, exitstatus):
    state = session.config._genmodels
    changed = sorted(set(fingerprint().items()) ^ set(state["fingerprint"].items()))
    shutil.rmtree(state["scratch"], ignore_errors=True)
    if changed:
        names = sorted({name for name, _ in changed})
        session.config.get_terminal_writer().line(
            f"ERROR: the notebooks changed published files: {names[:10]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
