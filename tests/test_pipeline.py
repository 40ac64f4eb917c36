"""The results pipeline: dependency order, skipping what is unchanged, resuming after an interruption,
atomic executed copies, and a smoke run that never touches the published folders."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import nbformat
import pytest
import torch

from genmodels import pipeline
from genmodels.pipeline import STEPS, Step, code_meaning, notebook_key, plan, run_pipeline

ROOT = Path(__file__).resolve().parents[1]

# Two tiny "chapters" and an "evaluation" that reads what both publish.
TINY = (
    Step("01_a", writes=("checkpoints/a.txt",)),
    Step("02_b", writes=("checkpoints/b.txt",)),
    Step("09_eval", reads=("checkpoints/a.txt", "checkpoints/b.txt"), writes=("results/metrics.json",)),
)


def write_notebook(root: Path, name: str, body: str) -> None:
    cells = [nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell(body)]
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    notebook = nbformat.v4.new_notebook(cells=cells, metadata=kernel)
    nbformat.write(notebook, root / "notebooks" / f"{name}.ipynb")


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "notebooks").mkdir()
    for folder in ("checkpoints", "results"):
        (tmp_path / folder).mkdir()
    for name in ("a", "b"):
        write_notebook(tmp_path, f"0{'12'['ab'.index(name)]}_{name}",
                       f"if profile != 'smoke':\n    open('../checkpoints/{name}.txt', 'w').write('{name}1')")
    write_notebook(tmp_path, "09_eval",
                   "a, b = open('../checkpoints/a.txt').read(), open('../checkpoints/b.txt').read()\n"
                   "if profile != 'smoke':\n    open('../results/metrics.json', 'w').write(a + b)")
    return tmp_path


def run(repo: Path, profile="cpu", **kwargs) -> list[str]:
    return run_pipeline(repo, profile, steps=TINY, timeout=120, log=lambda message: None, **kwargs)


@pytest.mark.slow
def test_runs_in_order_then_skips_what_is_unchanged_and_reruns_what_depends_on_a_change(repo):
    assert run(repo) == ["01_a", "02_b", "09_eval"]
    assert (repo / "results/metrics.json").read_text() == "a1b1"
    manifest = json.loads((repo / "results/pipeline.json").read_text())["notebooks"]
    for name, entry in manifest.items():
        assert entry["wall_seconds"] > 0 and entry["peak_memory_mb"] > 10, name
        assert entry["key"]["profile"] == "cpu"
        executed = nbformat.read(repo / "book/notebooks" / f"{name}.ipynb", as_version=4)
        assert executed.metadata.papermill.parameters == {"profile": "cpu"}
    assert run(repo) == []  # nothing changed

    write_notebook(repo, "02_b", "if profile != 'smoke':\n    open('../checkpoints/b.txt', 'w').write('b2')")
    assert plan(repo, "cpu", TINY) == [TINY[1], TINY[2]]
    assert run(repo) == ["02_b", "09_eval"]  # the chapter, and the evaluation that reads it
    assert (repo / "results/metrics.json").read_text() == "a1b2"

    (repo / "checkpoints/a.txt").write_text("tampered")  # a published file changed by hand
    assert run(repo) == ["01_a", "09_eval"]
    assert run(repo, force=["09_eval"]) == ["09_eval"]


@pytest.mark.slow
def test_an_interruption_costs_only_the_notebook_it_happened_in(repo, monkeypatch):
    real_execute, calls = pipeline._execute, []

    def interrupted(root, step, profile, timeout, require_glue):
        calls.append(step.notebook)
        if step.notebook == "02_b":
            raise KeyboardInterrupt
        return real_execute(root, step, profile, timeout, require_glue)

    monkeypatch.setattr(pipeline, "_execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(repo)
    monkeypatch.undo()
    assert run(repo) == ["02_b", "09_eval"]  # 01_a is not run again


@pytest.mark.slow
def test_a_failing_notebook_keeps_the_published_copy_and_leaves_no_temporary(repo):
    run(repo, only=["01_a"])
    published = (repo / "book/notebooks/01_a.ipynb").read_bytes()
    write_notebook(repo, "01_a", "raise ValueError('broken chapter')")
    with pytest.raises(SystemExit, match="01_a failed after .* the published copy is unchanged"):
        run(repo, only=["01_a"])
    assert (repo / "book/notebooks/01_a.ipynb").read_bytes() == published
    assert sorted(p.name for p in (repo / "book/notebooks").iterdir()) == ["01_a.ipynb"]


@pytest.mark.slow
def test_a_publishing_run_without_myst_nb_refuses_before_running_anything(repo, monkeypatch):
    """genmodels.plotting.glue does nothing without myst-nb (as on Colab): a run there would publish
    executed copies without the numbers and figures the chapters glue in."""
    write_notebook(repo, "01_a", "from genmodels.plotting import glue\nglue('a_number', '1')")
    find_spec = pipeline.importlib.util.find_spec
    monkeypatch.setattr(pipeline.importlib.util, "find_spec",
                        lambda name, *args: None if name == "myst_nb" else find_spec(name, *args))
    with pytest.raises(SystemExit, match=r"myst-nb is not installed .* 01_a would record none .* "
                                         r"nothing was run\. Install the book's packages"):
        run(repo)
    assert not (repo / "book/notebooks").exists() and not (repo / "results/pipeline.json").exists()
    assert run(repo, "smoke", only=["02_b"]) == ["02_b"]  # smoke copies are never published: no check


@pytest.mark.slow
def test_an_executed_copy_without_its_glued_values_is_not_published(repo):
    """Its kernel's glue recorded nothing (here a stand-in that drops the value): the copy is set
    aside with the cells that ran, and the manifest still has the notebook to run."""
    write_notebook(repo, "01_a", "def glue(name, value):\n    pass\nglue('a_number', '1')")
    with pytest.raises(SystemExit, match="01_a ran in .* holds none of the values it glues .* "
                                         "the published copy is unchanged; the cells that ran"):
        run(repo, only=["01_a"])
    assert not (repo / "book/notebooks/01_a.ipynb").exists()
    assert (repo / "book/_build/partial/cpu/01_a.ipynb").is_file()
    write_notebook(repo, "01_a", "from myst_nb import glue\nglue('a_number', '1')")
    assert run(repo, only=["01_a"]) == ["01_a"]
    outputs = nbformat.read(repo / "book/notebooks/01_a.ipynb", as_version=4).cells[-1].outputs
    assert outputs[0]["metadata"]["scrapbook"]["name"] == "a_number"


@pytest.mark.slow
def test_a_smoke_run_writes_nothing_published(repo):
    assert run(repo, "smoke", only=["01_a"]) == ["01_a"]
    assert (repo / "book/_build/smoke/01_a.ipynb").is_file()
    assert (repo / "book/_build/smoke/pipeline.json").is_file()
    assert not (repo / "book/notebooks").exists() and not (repo / "results/pipeline.json").exists()
    assert list((repo / "checkpoints").iterdir()) == []


@pytest.mark.slow
def test_a_run_that_replaces_another_profiles_published_copy_says_so(repo):
    write_notebook(repo, "02_b", "size = {'smoke': 1, 'cpu': 2, 'gpu': 3}[profile]  # the profiles differ\n"
                                 "if profile != 'smoke':\n    open('../checkpoints/b.txt', 'w').write('b1')")
    assert run(repo) == ["01_a", "02_b", "09_eval"]
    manifest_path = repo / "results/pipeline.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["notebooks"]["02_b"]["key"]["profile"] = "gpu"  # as if a GPU had published it
    manifest["notebooks"]["02_b"]["hardware"] = "cuda: NVIDIA H200"
    manifest_path.write_text(json.dumps(manifest))
    said = []
    assert run_pipeline(repo, "cpu", steps=TINY, timeout=120, log=said.append) == ["02_b", "09_eval"]
    assert ("02_b: its published copy is a gpu run (cuda: NVIDIA H200); this cpu run replaces it and the "
            "files it writes (git checkout -- book/notebooks checkpoints results restores them)") in said
    assert not any("09_eval: its published copy" in line for line in said)  # it was a cpu run


@pytest.mark.slow
def test_execute_notebook_passes_its_environment_and_writes_the_copy_only_when_it_succeeds(repo):
    write_notebook(repo, "01_a", "import os\nprint(profile, os.environ['GENMODELS_EXAMPLE'])")
    target = repo / "elsewhere" / "01_a.ipynb"
    result = pipeline.execute_notebook(repo / "notebooks/01_a.ipynb", target, "smoke", cwd=repo / "notebooks",
                                       timeout=120, env={"GENMODELS_EXAMPLE": "seen"})
    assert nbformat.read(target, as_version=4).cells[-1].outputs[0]["text"] == "smoke seen\n"
    assert result["executed"] == pipeline.file_sha256(target) and result["peak_memory_mb"] > 0
    with pytest.raises(SystemExit, match="01_a failed after"):  # the variable is missing: KeyError
        pipeline.execute_notebook(repo / "notebooks/01_a.ipynb", repo / "other.ipynb", "smoke",
                                  cwd=repo / "notebooks", timeout=120)
    assert not (repo / "other.ipynb").exists() and not list(repo.glob(".other*"))


@pytest.mark.slow
def test_the_runner_answers_no_widget_during_a_cell(repo, monkeypatch):
    """nbclient answers an Output widget's messages itself, on the shell channel where it awaits the
    cell's reply, which now and then hides the reply until the time limit (genmodels._runner). The
    runner's client has no such stand-in where nbclient's own has one; run through the runner, a cell
    with ipywidgets.interactive makes none, and what the widget's function prints lands in the cell's
    own outputs. (Plain papermill is not run here: it is the path that can hang.)"""
    from nbclient import NotebookClient, output_widget

    from genmodels import _runner

    empty = nbformat.v4.new_notebook()
    assert "@jupyter-widgets/output" in NotebookClient(empty).widget_registry
    manager = types.SimpleNamespace(nb=empty)  # papermill's client takes its notebook manager
    assert _runner.NotebookClient(manager).widget_registry == {}
    made = []
    original = output_widget.OutputWidget.__init__

    def counting(self, *args, **kwargs):
        made.append(args[0])
        original(self, *args, **kwargs)

    monkeypatch.setattr(output_widget.OutputWidget, "__init__", counting)
    write_notebook(repo, "01_a", "import ipywidgets\n"
                                 "ipywidgets.interactive(lambda z=1.0: print('value', z), z=(0.0, 2.0))")
    target = repo / "out.ipynb"
    _runner.execute(str(repo / "notebooks/01_a.ipynb"), str(target), "smoke", str(repo / "notebooks"), 120)
    assert made == []
    outputs = nbformat.read(target, as_version=4).cells[-1].outputs
    assert [output.get("text") for output in outputs if output["output_type"] == "stream"] == ["value 1.0\n"]
    assert any("application/vnd.jupyter.widget-view+json" in output.get("data", {}) for output in outputs)


@pytest.mark.slow
def test_notebooks_keep_freed_memory_unless_the_environment_says_otherwise(repo, monkeypatch):
    """The allocator setting of benchmarks/allocator.py reaches the notebook's process; a value the
    user exported wins."""
    code = "import os\nprint(os.environ['MALLOC_MMAP_THRESHOLD_'], os.environ['MALLOC_TRIM_THRESHOLD_'])"
    write_notebook(repo, "01_a", code)
    target = repo / "elsewhere" / "01_a.ipynb"
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    pipeline.execute_notebook(repo / "notebooks/01_a.ipynb", target, "smoke", cwd=repo / "notebooks",
                              timeout=120)
    printed = nbformat.read(target, as_version=4).cells[-1].outputs[0]["text"].split()
    assert printed == [str(32 * 2**20), "131072"]


@pytest.mark.slow
def test_a_run_that_overruns_leaves_the_cells_it_ran_with_their_times_outside_the_published_folder(repo):
    write_notebook(repo, "01_a", "print('first cell done')")
    notebook = nbformat.read(repo / "notebooks/01_a.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import time\ntime.sleep(60)"))
    nbformat.write(notebook, repo / "notebooks/01_a.ipynb")
    target, partial = repo / "book/notebooks/01_a.ipynb", repo / "book/_build/partial/cpu/01_a.ipynb"
    with pytest.raises(SystemExit, match=f"01_a failed after .*the cells that ran.* are in {partial}"):
        pipeline.execute_notebook(repo / "notebooks/01_a.ipynb", target, "cpu", cwd=repo / "notebooks",
                                  timeout=3, partial=partial)  # papermill stops the cell after 3 s
    assert not target.exists() and not list(target.parent.glob(".*"))
    kept = nbformat.read(partial, as_version=4)
    assert kept.cells[-2].outputs[0]["text"] == "first cell done\n"
    assert kept.cells[-2].metadata.papermill.duration >= 0  # the time each finished cell took
    assert kept.cells[-1].metadata.papermill.start_time  # and when the one that overran started


def test_unknown_notebooks_and_a_damaged_manifest_are_clear_errors(repo):
    with pytest.raises(SystemExit, match="no notebook '03_c' in the pipeline; its notebooks are 01_a, 02_b"):
        run(repo, only=["03_c"])
    (repo / "results/pipeline.json").write_text("{broken")
    with pytest.raises(SystemExit, match="pipeline.json is not valid JSON.*git checkout"):
        run(repo)
    (repo / "results/pipeline.json").write_bytes(b"\xff\xfe")
    with pytest.raises(SystemExit, match="pipeline.json is not valid JSON.*git checkout"):
        run(repo)
    for wrong_shape in ([], {"notebooks": []}, {"notebooks": {"01_a": "x"}},
                        {"notebooks": {"01_a": {"key": 1}}}):
        (repo / "results/pipeline.json").write_text(json.dumps(wrong_shape))
        with pytest.raises(SystemExit, match="is not a manifest of runs.*git checkout"):
            run(repo)


def test_a_run_in_protected_folders_is_refused_before_any_notebook_runs(repo, monkeypatch):
    monkeypatch.setenv("GENMODELS_PROTECTED_DIRS", str(repo / "book" / "notebooks"))
    monkeypatch.setattr(pipeline, "_execute", lambda *args: pytest.fail("a notebook ran"))
    with pytest.raises(PermissionError, match="refusing to write.*protected"):
        run(repo)


def test_a_terminated_run_stops_its_notebook_and_sets_aside_what_it_wrote(repo, tmp_path):
    """SIGTERM (a `kill`, a cancelled job) stops the run as Ctrl-C does: the notebook's process dies
    with it, nothing half-written is left in the published folder, and the lock is free again."""
    pid_file = repo / "notebook.pid"  # the stand-in notebook runs in repo/notebooks
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import sys
        from pathlib import Path
        from genmodels import pipeline

        # a notebook that starts writing its copy (argv[2]), then runs for a long time
        pipeline._CHILD = ("-c", (
            "import os, sys, time\\n"
            "open(sys.argv[2], 'w').write('partial')\\n"
            "open(os.path.join(sys.argv[4], '..', 'notebook.pid'), 'w').write(str(os.getpid()))\\n"
            "time.sleep(120)\\n"
        ))
        steps = (pipeline.Step("01_a", writes=("checkpoints/a.txt",)),)
        pipeline.run_pipeline(Path(sys.argv[1]), "cpu", steps=steps, timeout=300, log=print)
    """))
    process = subprocess.Popen([sys.executable, str(driver), str(repo)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    notebook = int(pid_file.read_text())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "stopped by SIGTERM" in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(notebook, 0)  # the notebook's process is gone, not orphaned
    assert list((repo / "book" / "notebooks").glob(".*")) == []  # set aside, not left in the folder
    with pipeline._exclusive(repo, "cpu"):  # the lock is free
        pass


def test_the_key_names_source_profile_and_inputs(repo):
    key = notebook_key(repo, TINY[2], "cpu")
    assert set(key) == {"source", "profile", "checkpoints/a.txt", "checkpoints/b.txt"}
    assert key["checkpoints/a.txt"] == "missing"
    (repo / "checkpoints/a.txt").write_text("x")
    assert notebook_key(repo, TINY[2], "cpu")["checkpoints/a.txt"] != "missing"
    assert notebook_key(repo, TINY[2], "gpu") != notebook_key(repo, TINY[2], "cpu")


def test_the_real_steps_cover_every_notebook_and_declare_what_they_read_and_write():
    names = [step.notebook for step in STEPS]
    assert sorted(names) == sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    published: set[str] = set()
    for step in STEPS:
        source = (ROOT / "notebooks" / f"{step.notebook}.py").read_text()
        for path in step.reads:
            if path.startswith("results/benchmarks"):  # measured by benchmarks/, committed
                file, _, section = path.partition("#")
                assert (ROOT / file).is_file(), path
                assert not section or section in json.loads((ROOT / file).read_text()), path
                continue
            assert path in published, f"{step.notebook} reads {path} before any notebook publishes it"
        for path in step.reads + step.writes:
            file_name = Path(path.partition("#")[0]).name
            stem = re.sub(r"\d+", "", Path(path).stem)  # vae-j32 is written as vae-j{latent_dim}
            assert file_name in source or stem.split("-")[0] in source, (step.notebook, path)
        published |= set(step.writes)
    checkpoints = {f"checkpoints/{p.name}" for p in (ROOT / "checkpoints").glob("*.pt")}
    assert checkpoints <= published, "a published checkpoint that no notebook declares it writes"


def test_the_gpu_profile_prints_one_command_per_stale_notebook(monkeypatch, capsys, tmp_path):
    """A lent GPU runs one command of at most 10 minutes at a time: `make results PROFILE=gpu` plans,
    on the machine where the lease is planned, which has no CUDA (printing runs nothing)."""
    monkeypatch.delenv("GENMODELS_ALLOW_GPU_PROFILE_ON_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pipeline.main(["--profile", "gpu", "--root", str(ROOT)])
    printed = capsys.readouterr().out
    commands = [line.strip() for line in printed.splitlines() if "--only" in line]
    stale = [step.notebook for step in plan(ROOT, "gpu")]  # those not yet run in the gpu profile, and after
    assert [c.split("--only ")[1].split()[0] for c in commands] == stale
    assert stale or "nothing: every notebook is up to date" in printed
    assert stale == [step.notebook for step in STEPS if step.notebook in stale]  # in dependency order
    assert all("-m genmodels.pipeline --profile gpu" in c for c in commands)
    with pytest.raises(SystemExit, match="no CUDA device"):  # running a notebook in it still needs CUDA
        pipeline.main(["--profile", "gpu", "--root", str(ROOT), "--only", "03_wgan"])
    copy = tmp_path / "repository"  # a Markdown refresh runs nothing either: on a copy of what it reads
    shutil.copytree(ROOT / "notebooks", copy / "notebooks")
    for path in ("book/notebooks/01_data.ipynb", "results/pipeline.json"):
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, copy / path)
    pipeline.main(["--profile", "gpu", "--root", str(copy), "--refresh-markdown", "01_data"])
    assert "01_data: nothing to refresh" in capsys.readouterr().out


def test_the_gpu_plan_takes_force_and_checks_its_names(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pipeline.main(["--profile", "gpu", "--root", str(ROOT), "--force", "01_data"])
    commands = [line.strip() for line in capsys.readouterr().out.splitlines() if "--only" in line]
    assert "--only 01_data --force 01_data   #" in commands[0]  # first, and forced
    assert all("--force" not in c for c in commands[1:])
    manifest = json.loads((ROOT / "results/pipeline.json").read_text())["notebooks"]
    for command in commands:  # what each took on a GPU last time, where one ran it: the lease's budget
        entry = manifest[command.split("--only ")[1].split()[0]]
        ran_on_gpu = entry["key"]["profile"] == "gpu"
        assert (f"took {entry['wall_seconds']:.0f} s on {entry['hardware']}" in command) is ran_on_gpu
        assert ("no gpu run of it recorded yet" in command) is not ran_on_gpu
    with pytest.raises(SystemExit, match="no notebook '01_dta' in the pipeline.*STEPS"):
        pipeline.main(["--profile", "gpu", "--root", str(ROOT), "--force", "01_dta"])


def test_the_command_line_refuses_what_it_cannot_do_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("GENMODELS_PROFILE", raising=False)
    with pytest.raises(SystemExit, match=r"unknown compute profile 'bogus'.*\(or gpu-dry"):
        pipeline.main(["--profile", "bogus", "--root", str(ROOT)])
    monkeypatch.setenv("GENMODELS_PROFILE", "bogus")
    with pytest.raises(SystemExit, match=r"unknown compute profile 'bogus'"):
        pipeline.main(["--root", str(ROOT)])
    for argv in (["--refresh-markdown", "01_data", "--only", "02_vae"],  # it runs nothing
                 ["--profile", "cpu", "--root", str(tmp_path)]):  # not the repository
        with pytest.raises(SystemExit) as exit_:
            pipeline.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "takes no --only, --force or --all" in err and "holds no notebooks/ folder" in err
    assert not (tmp_path / "results").exists()  # nothing made under a wrong root
    done = subprocess.run([sys.executable, "-m", "genmodels.train", "bogus"], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "unknown compute profile" in done.stderr


def test_the_runner_checks_its_arguments_before_starting_a_kernel():
    from genmodels._runner import _arguments

    assert _arguments(["a.ipynb", "b.ipynb", "cpu", ".", "60"]) == ("a.ipynb", "b.ipynb", "cpu", ".", 60)
    for argv, says in ((["a.ipynb", "b.ipynb", "cpu", "."], "got 4 arguments"),
                       (["a.ipynb", "./a.ipynb", "cpu", ".", "60"], "TARGET is SOURCE"),
                       (["a.ipynb", "b.ipynb", "fast", ".", "60"], "PROFILE must be"),
                       (["a.ipynb", "b.ipynb", "cpu", ".", "0"], "no limit at all"),
                       (["a.ipynb", "b.ipynb", "cpu", ".", "-1"], "at least 1"),
                       (["a.ipynb", "b.ipynb", "cpu", ".", "ten"], "whole seconds")):
        with pytest.raises(SystemExit, match=says):
            _arguments(argv)


@pytest.mark.slow
def test_prose_written_after_a_run_reaches_the_executed_copy_without_running_it_again(repo):
    path = repo / "notebooks" / "01_a.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("The run shows X."))
    nbformat.write(notebook, path)
    assert run(repo) == ["01_a", "02_b", "09_eval"]
    executed = repo / "book/notebooks/01_a.ipynb"
    outputs = [c.get("outputs") for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"]

    notebook.cells[-1].source = "The run shows Y."  # prose edited after reading the outputs
    nbformat.write(notebook, path)
    assert plan(repo, "cpu", TINY)[0] == TINY[0]  # stale: its source changed
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    refreshed = nbformat.read(executed, as_version=4)
    assert refreshed.cells[-1].source == "The run shows Y."
    assert [c.get("outputs") for c in refreshed.cells if c.cell_type == "code"] == outputs
    assert plan(repo, "cpu", TINY) == []  # up to date: nothing re-runs
    manifest = (repo / "results/pipeline.json").read_bytes()
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    assert (repo / "results/pipeline.json").read_bytes() == manifest  # nothing to refresh: not rewritten

    notebook.cells[1].metadata["tags"] = ["hide-input"]  # how the book shows a cell: no re-run either
    nbformat.write(notebook, path)
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    refreshed = nbformat.read(executed, as_version=4)
    shown = [c for c in refreshed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert shown[1].metadata["tags"] == ["hide-input"]
    assert [c.get("outputs") for c in refreshed.cells if c.cell_type == "code"] == outputs

    # re-wrapped and commented: the same code, so no re-run
    notebook.cells[1].source = ("# the same statements, laid out again\nif profile != 'smoke':\n    open(\n"
                                "        '../checkpoints/a.txt', 'w'\n    ).write('a1')  # a comment\n")
    nbformat.write(notebook, path)
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    shown = [c for c in nbformat.read(executed, as_version=4).cells
             if "injected-parameters" not in c.metadata.get("tags", [])]
    assert shown[1].source == notebook.cells[1].source
    assert [c.get("outputs") for c in shown if c.cell_type == "code"] == [
        c.get("outputs") for c in refreshed.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    assert plan(repo, "cpu", TINY) == []

    # another profile's sizes retuned: what the cpu run ran is unchanged, so no re-run
    notebook.cells.insert(2, nbformat.v4.new_code_cell(
        "n = {'smoke': 1, 'cpu': 2, 'gpu': 3}[profile]"))
    nbformat.write(notebook, path)
    assert run(repo, only=["01_a"]) == ["01_a"]
    notebook.cells[2].source = "n = {'smoke': 1, 'cpu': 2, 'gpu': 30}[profile]"
    nbformat.write(notebook, path)
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    assert "'gpu': 30" in nbformat.read(executed, as_version=4).cells[3].source  # after the injected cell
    notebook.cells[2].source = "n = {'smoke': 1, 'cpu': 20, 'gpu': 30}[profile]"  # its own profile's: refused
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit, match="the sizes of profiles other than cpu: run it"):
        pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    notebook.cells[2].source = "n = {'smoke': 1, 'cpu': 2, 'gpu': 30}[profile]"

    notebook.cells[1].source += "\nprint('changed')"  # code changed: prose alone cannot bring it up to date
    nbformat.write(notebook, path)
    with pytest.raises(SystemExit, match="its code .* changed since it ran, beyond layout"):
        pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)


@pytest.mark.slow
def test_a_records_prose_is_brought_up_to_date_under_its_own_title_where_its_code_still_ran(repo):
    path = repo / "notebooks" / "01_a.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell("# A\n\nWhat it does, first draft."))
    notebook.cells.append(nbformat.v4.new_markdown_cell("The run shows X."))
    nbformat.write(notebook, path)
    assert run(repo, only=["01_a"]) == ["01_a"]
    record_path = repo / "book/notebooks/01_a_cpu.ipynb"  # a cpu run kept beside a published one
    record = nbformat.read(repo / "book/notebooks/01_a.ipynb", as_version=4)
    note = "# The cpu profile's run: A\n\n```{note}\nA record, kept beside the published run.\n```\n"
    record.cells[0].source = note + "\nWhat it does, first draft."
    nbformat.write(record, record_path)
    (repo / "book/notebooks/01_a_draft.ipynb").write_bytes(record_path.read_bytes())  # not a profile's
    outputs = [c.get("outputs") for c in record.cells if c.cell_type == "code"]

    notebook.cells[0].source = "# A\n\nWhat it does, corrected."
    notebook.cells[-1].source = "The run shows Y."
    nbformat.write(notebook, path)
    said = []
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=said.append)
    refreshed = nbformat.read(record_path, as_version=4)
    assert refreshed.cells[0].source == note + "\nWhat it does, corrected."  # its title and note kept
    assert refreshed.cells[-1].source == "The run shows Y."
    assert [c.get("outputs") for c in refreshed.cells if c.cell_type == "code"] == outputs
    assert any("01_a_cpu.ipynb: 2 cell(s)" in line for line in said)
    assert nbformat.read(repo / "book/notebooks/01_a_draft.ipynb", as_version=4).cells[-1].source \
        == "The run shows X."

    notebook.cells[-1].source = "The run shows Z."  # the published copy is then refreshed as well
    nbformat.write(notebook, path)
    record_code = [c for c in refreshed.cells if c.cell_type == "code"][-1]
    record_code.source += "\nprint('a record of older code')"
    nbformat.write(refreshed, record_path)
    kept = record_path.read_bytes()
    said.clear()
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=said.append)
    assert record_path.read_bytes() == kept  # its code is not the notebook's: its prose is not either
    assert any("01_a_cpu.ipynb: a record of code that has changed since it ran" in line for line in said)
    assert nbformat.read(repo / "book/notebooks/01_a.ipynb", as_version=4).cells[-1].source \
        == "The run shows Z."

    record.cells[0].source = "# A record without its note"
    nbformat.write(record, record_path)
    with pytest.raises(SystemExit, match="opens with its own title and a {note} block"):
        pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=said.append)


def test_the_books_records_read_as_their_notebooks_do_where_their_code_still_ran():
    checked = 0
    for path in sorted((ROOT / "book/notebooks").glob("*_cpu.ipynb")):
        source = nbformat.read(ROOT / "notebooks" / f"{path.stem.removesuffix('_cpu')}.ipynb", as_version=4)
        ran = pipeline._ran_cells(nbformat.read(path, as_version=4))
        if not pipeline._same_code(source.cells[1:], ran[1:], "cpu"):
            continue  # a record of older code keeps its prose; its note says what changed
        checked += 1
        assert [c.source for c in ran[1:]] == [c.source for c in source.cells[1:]], \
            f"{path.name}: python -m genmodels.pipeline --refresh-markdown {path.stem.removesuffix('_cpu')}"
        assert ran[0].source == pipeline._record_opening(path, ran[0].source, source.cells[0].source)
        assert ran[0].source.startswith("# The cpu profile's run") and "```{note}" in ran[0].source
    assert checked >= 3  # the VAE, DDPM and Langevin records


def test_the_command_line_says_how_to_resume_after_an_interruption(repo, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("stopped by SIGTERM")

    monkeypatch.setattr(pipeline, "run_pipeline", interrupted)
    with pytest.raises(SystemExit) as exit_:
        pipeline.main(["--profile", "cpu", "--root", str(repo)])
    assert exit_.value.code == 130
    assert "stopped by SIGTERM: the notebooks that finished are recorded" in capsys.readouterr().err


@pytest.mark.slow
def test_refreshing_prose_replaces_the_copy_and_its_manifest_entry_together_or_neither(repo, monkeypatch):
    from genmodels import train

    path = repo / "notebooks" / "01_a.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_markdown_cell("Prose written before the run."))
    nbformat.write(notebook, path)
    assert run(repo, only=["01_a"]) == ["01_a"]
    notebook.cells[-1].source = "Prose written after the run."
    nbformat.write(notebook, path)
    published = [repo / "book/notebooks/01_a.ipynb", repo / "results/pipeline.json"]
    before = [file.read_bytes() for file in published]

    real_stage = train._stage

    def disk_full_at_the_manifest(final, write):
        if final.name == "pipeline.json":
            raise OSError(28, "No space left on device")
        return real_stage(final, write)

    monkeypatch.setattr(train, "_stage", disk_full_at_the_manifest)
    with pytest.raises(OSError, match="No space left"):
        pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    monkeypatch.setattr(train, "_stage", real_stage)
    monkeypatch.setenv("GENMODELS_PROTECTED_DIRS", str(repo / "results"))
    with pytest.raises(PermissionError, match="refusing to write"):
        pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    assert [file.read_bytes() for file in published] == before  # neither was replaced
    assert [p.name for p in (repo / "book/notebooks").iterdir()] == ["01_a.ipynb"]  # no temporary left
    monkeypatch.delenv("GENMODELS_PROTECTED_DIRS")
    pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)
    assert plan(repo, "cpu", TINY[:1]) == []  # both replaced, and they agree


def test_code_meaning_ignores_layout_comments_and_docstrings_but_not_what_runs():
    ran = 'def f(x):\n    """Old words."""\n    return g(x, 1)  # note\n'
    laid_out = 'def f(x):\n    """New words,\n    wrapped."""\n    return g(\n        x,\n        1,\n    )\n'
    assert code_meaning(laid_out) == code_meaning(ran)
    assert code_meaning(ran.replace("1", "2")) != code_meaning(ran)  # a changed constant
    assert code_meaning('s = "text"') != code_meaning('s = "other"')  # a string that is not a docstring
    assert code_meaning("%matplotlib inline") == "%matplotlib inline"  # not Python: its text
    sized = "sizes = {'smoke': dict(c=1), 'cpu': dict(c=16), 'gpu': dict(c=64)}[profile]\nuse(sizes)"
    retuned = sized.replace("c=16", "c=24")  # the cpu profile retuned
    assert code_meaning(retuned, "gpu") == code_meaning(sized, "gpu")
    assert code_meaning(retuned, "cpu") != code_meaning(sized, "cpu")
    assert code_meaning(retuned) != code_meaning(sized)
    assert code_meaning(sized, "gpu") == code_meaning("sizes = dict(c=64)\nuse(sizes)")


def test_a_second_run_of_the_same_profile_stops_with_a_message_while_the_first_holds_the_lock(repo):
    with pipeline._exclusive(repo, "cpu"):
        with pytest.raises(SystemExit, match="another run, a cpu or gpu run"):
            run(repo, "cpu")
        assert not (repo / "results" / "pipeline.json").exists()  # it wrote nothing
    assert run(repo, "cpu")  # the lock is released with the first run
    with pipeline._exclusive(repo, "cpu"):  # refreshing the prose writes the manifest too
        with pytest.raises(SystemExit, match="another run, a cpu or gpu run"):
            pipeline.refresh_markdown(repo, "01_a", "cpu", steps=TINY, log=lambda message: None)


def test_a_notebook_reading_one_section_of_a_json_file_ignores_the_others(repo):
    benchmarks = repo / "results" / "benchmarks.json"
    benchmarks.parent.mkdir(exist_ok=True)
    benchmarks.write_text(json.dumps({"recipes": {"fid": 1.0}, "throughput": 5}))
    step = Step("01_a", reads=("results/benchmarks.json#recipes",))
    before = notebook_key(repo, step, "cpu")
    benchmarks.write_text(json.dumps({"throughput": 6, "recipes": {"fid": 1.0}}))  # another section
    assert notebook_key(repo, step, "cpu") == before
    benchmarks.write_text(json.dumps({"throughput": 6, "recipes": {"fid": 2.0}}))  # its own section
    assert notebook_key(repo, step, "cpu") != before
    benchmarks.write_text(json.dumps({"throughput": 6}))
    assert notebook_key(repo, step, "cpu")["results/benchmarks.json#recipes"] == "missing"


@pytest.mark.parametrize("body, agree", [
    ('n = {"smoke": 1, "cpu": 5, "gpu": 5}[profile]\nmap_location = str("cpu")  # not a profile', True),
    ('n = {"smoke": 1, "cpu": 5, "gpu": 9}[profile]', False),
    ('n = 9 if profile == "gpu" else 5', False),
    ('n = {"cpu": 5, "gpu": 9}.get(profile, 1)', False),
    ('n = 5 if profile in ("cpu", "gpu") else 1', False),  # the same here, but read conservatively
])
def test_a_run_serves_another_profile_only_where_the_notebook_cannot_tell_them_apart(tmp_path, body, agree):
    (tmp_path / "notebooks").mkdir()
    write_notebook(tmp_path, "01_a", body)
    notebook = tmp_path / "notebooks/01_a.ipynb"
    assert pipeline.profiles_agree(notebook, "cpu", "gpu") is agree
    executed = tmp_path / "book/notebooks/01_a.ipynb"  # a cpu run, as the manifest records it
    executed.parent.mkdir(parents=True)
    executed.write_text("{}")
    step = Step("01_a")
    entry = {"key": notebook_key(tmp_path, step, "cpu"), "executed": pipeline.file_sha256(executed)}
    assert plan(tmp_path, "cpu", (step,), {"01_a": entry}) == []
    assert plan(tmp_path, "gpu", (step,), {"01_a": entry}) == ([] if agree else [step])
    assert plan(tmp_path, "smoke", (step,), {"01_a": entry}) == [step]  # smoke is never a published run

    executed.write_text(notebook.read_text())  # a comment written after the run reaches it, in either profile
    manifest = tmp_path / "results/pipeline.json"
    manifest.parent.mkdir()
    entry["executed"] = pipeline.file_sha256(executed)
    manifest.write_text(json.dumps({"notebooks": {"01_a": entry}}))
    source = nbformat.read(notebook, as_version=4)
    source.cells[-1].source += "  # a comment written later"
    nbformat.write(source, notebook)
    if agree:
        pipeline.refresh_markdown(tmp_path, "01_a", "gpu", steps=(step,), log=lambda message: None)
        assert "a comment written later" in executed.read_text()
        assert json.loads(manifest.read_text())["notebooks"]["01_a"]["key"]["profile"] == "cpu"
    else:
        with pytest.raises(SystemExit, match="its executed copy is a cpu run: refresh it with --profile cpu"):
            pipeline.refresh_markdown(tmp_path, "01_a", "gpu", steps=(step,), log=lambda message: None)


def test_the_feature_network_and_the_evaluation_are_the_same_in_the_cpu_and_gpu_profiles():
    """The feature network defines every FID of the book, and the evaluation measures the models the
    same way in both profiles: the page "Without a GPU" compares the two profiles' tables."""
    assert pipeline.profiles_agree(ROOT / "notebooks/06_feature_network.ipynb", "cpu", "gpu")
    assert pipeline.profiles_agree(ROOT / "notebooks/07_evaluation.ipynb", "cpu", "gpu")
    assert not pipeline.profiles_agree(ROOT / "notebooks/04_ddpm.ipynb", "cpu", "gpu")
