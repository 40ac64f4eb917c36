"""`pytest --nbval notebooks/`: the smoke profile unless told otherwise, published folders untouched,
and nothing left behind in the temporary directory."""

import os
import shutil
from pathlib import Path

import pytest

from genmodels.train import (
    PROTECTED,
    PUBLISHED_DIRS,
    files_changed,
    fingerprint,
    scratch_dir,
)

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = [ROOT / folder for folder in PUBLISHED_DIRS]


def pytest_configure(config):
    profile = os.environ.setdefault("GENMODELS_PROFILE", "smoke").strip().lower()
    os.environ[PROTECTED] = os.pathsep.join(map(str, PUBLISHED))
    # Kernels inherit the environment: their temporary files and connection files go to a folder
    # that is removed when the run ends (or, after a killed run, by the next one).
    scratch = scratch_dir("nbval")
    os.environ["TMPDIR"] = os.environ["JUPYTER_RUNTIME_DIR"] = str(scratch)
    config._genmodels = {"fingerprint": fingerprint(PUBLISHED), "scratch": scratch}
    if profile != "smoke":
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            f"GENMODELS_PROFILE={profile}: the notebooks will train at full {profile} sizes (minutes to "
            "hours each) and cannot publish anything, since under pytest checkpoints/, results/ and "
            "book/notebooks/ are protected. To publish, run `make results PROFILE=...` instead."
        ), stacklevel=2)


def pytest_sessionfinish(session, exitstatus):
    state = session.config._genmodels
    changed = files_changed(state["fingerprint"], fingerprint(PUBLISHED))
    shutil.rmtree(state["scratch"], ignore_errors=True)
    if changed:
        session.config.get_terminal_writer().line(
            f"ERROR: the notebooks changed published files: {changed[:10]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
