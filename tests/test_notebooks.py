"""Notebooks: clean, paired with their text form, built to the template, and published as executed.

Running them is the job of `pytest --nbval notebooks/` in the smoke profile (see the Makefile).
"""

from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"].removeprefix("https://github.com/")


def toc_files(entries) -> list[str]:
    found = []
    for entry in entries:
        if "file" in entry:
            found.append(entry["file"])
        for key in ("chapters", "sections", "parts"):
            found += toc_files(entry.get(key, []))
    return found


TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
TOC_FILES = [TOC["root"], *toc_files(TOC.get("parts", []) + TOC.get("chapters", []))]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


def code_and_markdown(cells) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_in_sync_with_its_text_form(path):
    text_form = path.with_suffix(".py")
    assert text_form.exists(), f"{path.name} has no paired {text_form.name}: run `make sync`"
    paired, notebook = jupytext.read(text_form), jupytext.read(path)
    assert code_and_markdown(paired.cells) == code_and_markdown(notebook.cells), (
        f"{path.name} and {text_form.name} differ: run `make sync`"
    )
    assert nbformat.read(path, as_version=4).metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_carries_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {index} carries outputs: clear them"
            assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_template(path):
    cells = nbformat.read(path, as_version=4).cells
    badge = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{path.name}"
    assert cells[0].cell_type == "markdown" and badge in cells[0].source, "no Colab badge to itself"
    setup = cells[1]
    assert setup.cell_type == "code" and '"google.colab" in sys.modules' in setup.source
    assert f"https://github.com/{REPOSITORY}" in setup.source
    parameters = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "exactly one cell tagged `parameters` (papermill)"
    assert "profile = None" in parameters[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executed_copy_in_the_book_ran_this_notebook(path):
    """The book shows book/notebooks/<name>: it must come from the current source, and say how."""
    executed_path = ROOT / "book" / "notebooks" / path.name
    assert executed_path.exists(), f"no executed copy of {path.name}: run `make results`"
    executed = nbformat.read(executed_path, as_version=4)
    source = nbformat.read(path, as_version=4)
    ran = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert code_and_markdown(ran) == code_and_markdown(source.cells), (
        f"book/notebooks/{path.name} is stale: re-run `make results PROFILE=...`"
    )
    papermill = executed.metadata["papermill"]
    assert papermill["exception"] in (None, False)
    assert papermill["parameters"]["profile"] in ("cpu", "gpu")  # published runs are not smoke runs
    assert papermill["duration"] > 0
    code = [c for c in ran if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "not every cell ran"


def test_every_chapter_in_the_toc_exists_and_every_notebook_is_a_chapter():
    for entry in TOC_FILES:
        candidates = [ROOT / "book" / f"{entry}{suffix}" for suffix in ("", ".md", ".ipynb")]
        assert any(c.is_file() for c in candidates), f"_toc.yml names {entry}, which does not exist"
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in TOC_FILES, f"{path.name} is not in _toc.yml"


def test_book_finds_the_top_level_configuration():
    for name in ("_config.yml", "_toc.yml"):
        link = ROOT / "book" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()


def run_setup_cell(path, monkeypatch, *, cloned: bool, clone_fails: bool = False):
    """Run a notebook's setup cell as on Colab, with git, pip and the file system faked: the
    commands it would run, and where it would change directory."""
    import os
    import subprocess
    import sys
    import types
    from importlib import util

    commands, moves = [], []

    def run(command, **kwargs):
        commands.append(command[:2])
        failed = clone_fails and command[0] == "git"
        if failed and kwargs.get("check"):
            raise subprocess.CalledProcessError(128, command)
        return subprocess.CompletedProcess(command, 128 if failed else 0, "",
                                           "fatal: unable to access the repository" if failed else "")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(os.path, "isdir", lambda p: cloned and p.endswith(".git"))
    monkeypatch.setattr(os, "chdir", moves.append)
    monkeypatch.setattr(util, "find_spec", lambda name: object() if cloned else None)
    exec(nbformat.read(path, as_version=4).cells[1].source, {})
    return commands, moves


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_setup_cell_fails_clearly_and_does_nothing_when_run_again(path, monkeypatch):
    with pytest.raises(RuntimeError, match="could not clone .* unable to access the repository"):
        run_setup_cell(path, monkeypatch, cloned=False, clone_fails=True)
    commands, moves = run_setup_cell(path, monkeypatch, cloned=False)
    assert [c[0] for c in commands] == ["git", sys_executable()] and moves == ["/content/book/notebooks"]
    commands, moves = run_setup_cell(path, monkeypatch, cloned=True)  # run again: nothing to do
    assert commands == [] and moves == ["/content/book/notebooks"]


def sys_executable() -> str:
    import sys

    return sys.executable


def load_nbval_conftest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("nbval_conftest", ROOT / "notebooks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeConfig:
    def __init__(self):
        self.warnings, self.lines = [], []

    def issue_config_time_warning(self, warning, stacklevel):
        self.warnings.append(str(warning))

    def get_terminal_writer(self):
        return self

    def line(self, text, **markup):
        self.lines.append(text)


def test_nbval_runs_the_smoke_profile_by_default_and_fails_if_a_published_file_changes(tmp_path, monkeypatch):
    import os
    import types

    from genmodels.train import PROTECTED

    conftest = load_nbval_conftest()
    monkeypatch.setattr(conftest, "PUBLISHED", [tmp_path / "checkpoints"])
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vae.pt").write_bytes(b"weights")
    for name in ("GENMODELS_PROFILE", PROTECTED, "TMPDIR", "JUPYTER_RUNTIME_DIR"):
        monkeypatch.setenv(name, "")  # so that the test's end restores what was there before
        monkeypatch.delenv(name)
    config = FakeConfig()
    conftest.pytest_configure(config)
    assert os.environ["GENMODELS_PROFILE"] == "smoke" and not config.warnings
    assert os.environ[PROTECTED] == str(tmp_path / "checkpoints")
    scratch = config._genmodels["scratch"]
    assert os.environ["TMPDIR"] == str(scratch) and scratch.is_dir()

    (tmp_path / "checkpoints" / "vae.pt").write_bytes(b"other weights")
    session = types.SimpleNamespace(config=config, exitstatus=0)
    conftest.pytest_sessionfinish(session, 0)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert "changed published files" in config.lines[0] and "vae.pt" in config.lines[0]
    assert not scratch.exists()  # the kernels' temporary files went with it

    monkeypatch.setenv("GENMODELS_PROFILE", "cpu")
    loud = FakeConfig()
    conftest.pytest_configure(loud)
    assert "train at full cpu sizes" in loud.warnings[0] and "make results" in loud.warnings[0]
    conftest.pytest_sessionfinish(types.SimpleNamespace(config=loud, exitstatus=0), 0)
