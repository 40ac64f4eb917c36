"""`make results`: run the chapter notebooks with papermill in dependency order, skip what has not
changed, resume where an interrupted run stopped, and log what each notebook cost.

A notebook runs again when its *key* changes: the hash of its source (code and Markdown cells), of
its profile, and of every file it reads (the checkpoints that earlier notebooks publish). So
re-running one chapter re-runs the notebooks that read what it published (the evaluation; for the
DDPM also the Langevin notebook; for the feature network the DDPM, Langevin and evaluation
notebooks), and nothing else. A change to ``src/genmodels`` alone re-runs nothing: name the
notebooks with ``--force`` (and ``--only``, or every other stale notebook runs too). The manifest
(``results/pipeline.json``; ``book/_build/smoke/pipeline.json`` for the smoke profile) is written
after every notebook, so an interruption costs at most the notebook it happened in, and that
notebook resumes from its own saved state in ``runs/``.

Usage: ``python -m genmodels.pipeline --profile cpu`` (what ``make results PROFILE=cpu`` runs);
``--profile gpu-dry`` checks the gpu profile's shapes and settings on the CPU (``genmodels.dryrun``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from genmodels.dryrun import is_profile_table
from genmodels.train import (
    GPU_ON_CPU,
    CheckpointError,
    Profile,
    ProfileError,
    _refuse_protected,
    file_sha256,
    finish_interrupted_writes,
    hardware,
    json_text,
    resolve_profile,
    write_json,
    write_together,
)

__all__ = [
    "STEPS", "Step", "code_meaning", "execute_notebook", "main", "notebook_key", "plan", "run_pipeline"
]


@dataclass(frozen=True)
class Step:
    notebook: str  # the name in notebooks/, without .ipynb
    reads: tuple[str, ...] = ()  # files (relative to the repository) that it reads; "f.json#k": entry k
    writes: tuple[str, ...] = ()  # files that it publishes (not in the smoke profile)


CHECKPOINTS = {
    "06_feature_network": ("checkpoints/mnist-classifier.pt",),
    "02_vae": ("checkpoints/vae-j32.pt", "checkpoints/vae-j2.pt"),
    "03_wgan": ("checkpoints/wgan-gp.pt", "checkpoints/wgan-clip.pt"),
    "04_ddpm": ("checkpoints/ddpm.pt",),
}
STEPS: tuple[Step, ...] = (  # in an order where every file is published before it is read
    Step("01_data"),
    Step("06_feature_network", writes=CHECKPOINTS["06_feature_network"]),
    Step("02_vae", writes=CHECKPOINTS["02_vae"]),
    Step("03_wgan", writes=CHECKPOINTS["03_wgan"]),
    Step("04_ddpm", reads=CHECKPOINTS["06_feature_network"] + ("results/benchmarks.json#ddpm_recipes",),
         writes=CHECKPOINTS["04_ddpm"]),
    Step("05_langevin", reads=CHECKPOINTS["06_feature_network"] + CHECKPOINTS["04_ddpm"]),
    Step("07_evaluation", reads=tuple(path for paths in CHECKPOINTS.values() for path in paths),
         writes=("results/metrics.json",)),
)
TIMEOUTS = {"smoke": 15 * 60, "cpu": 3 * 3600, "gpu": 9 * 60}  # seconds per notebook
# glibc's malloc: blocks below 32 MiB (its largest mmap threshold on 64-bit) come from the heap, and
# freed memory stays there for the next step rather than going back to the kernel. It changes where
# memory comes from, never a computed number; on two cores a sampling call of the published U-Net on
# 500 images ran 1.4 to 1.8 times faster with it in three runs of benchmarks/allocator.py, and small
# steps neither gained nor lost. Set in each notebook's process unless the environment already sets
# it; other C libraries ignore it.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _source_hash(notebook: Path) -> str:
    """Hash of a notebook's cell types and sources: what `make sync` keeps equal to its .py form."""
    cells = json.loads(notebook.read_text())["cells"]
    return _sha256_text(json.dumps([(c["cell_type"], "".join(c["source"]).strip()) for c in cells]))


def notebook_key(root: Path, step: Step, profile: str) -> dict[str, str]:
    """What defines a notebook's run: its source, its profile and the files it reads (their hashes)."""
    key = {"source": _source_hash(root / "notebooks" / f"{step.notebook}.ipynb"), "profile": profile}
    for path in step.reads:
        key[path] = _read_hash(root, path)
    return key


def _read_hash(root: Path, read: str) -> str:
    """The hash of a file a notebook reads; ``file.json#section`` hashes only that top-level entry of a
    JSON file, so that a notebook reading one benchmark is not made stale by another."""
    path, _, section = read.partition("#")
    if not (root / path).is_file():
        return "missing"
    if not section:
        return file_sha256(root / path)
    value = json.loads((root / path).read_text()).get(section)
    return "missing" if value is None else _sha256_text(json.dumps(value, sort_keys=True))


def _manifest_path(root: Path, profile: str) -> Path:
    return root / ("book/_build/smoke" if profile == "smoke" else "results") / "pipeline.json"


def _executed_dir(root: Path, profile: str) -> Path:
    return root / ("book/_build/smoke" if profile == "smoke" else "book/notebooks")


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    fix = f"restore it with `git checkout -- {path}`, or move it aside to re-run every notebook"
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SystemExit(f"{path} is not valid JSON ({error}): {fix}") from error
    entries = manifest.get("notebooks", {}) if isinstance(manifest, dict) else None
    if not isinstance(entries, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("key", {}), dict) for entry in entries.values()):
        raise SystemExit(f"{path} is not a manifest of runs (an object whose \"notebooks\" maps each "
                         f"notebook to an object): {fix}")
    return manifest


def _up_to_date(root: Path, step: Step, profile: str, entry: dict | None) -> bool:
    """The recorded run has the same key (or ran in a profile in which the notebook runs the same
    computation: see :func:`profiles_agree`), and its executed copy and outputs are still what it
    made."""
    if not entry:
        return False
    if entry.get("key") != notebook_key(root, step, _served_by(root, step.notebook, profile, entry)):
        return False
    files = {f"{_executed_dir(root, profile).relative_to(root)}/{step.notebook}.ipynb": entry.get("executed")}
    if profile != "smoke":
        files.update(entry.get("outputs", {}))
    return all((root / path).is_file() and file_sha256(root / path) == digest
               for path, digest in files.items())


def _served_by(root: Path, notebook: str, profile: str, entry: dict) -> str:
    """The profile whose run serves ``profile``: the recorded run's, where the notebook runs the same
    computation in both (:func:`profiles_agree`), else ``profile`` itself."""
    ran_in = entry.get("key", {}).get("profile")
    if ran_in != profile and {ran_in, profile} == {"cpu", "gpu"} \
            and profiles_agree(root / "notebooks" / f"{notebook}.ipynb", ran_in, profile):
        return ran_in
    return profile


def plan(
    root: Path, profile: str, steps: tuple[Step, ...] = STEPS, entries: dict | None = None
) -> list[Step]:
    """The notebooks that would run, in order, assuming each one that runs changes what it publishes.
    ``entries``: the manifest's records (default: read from its file)."""
    if entries is None:
        entries = _read_manifest(_manifest_path(root, profile)).get("notebooks", {})
    stale: list[Step] = []
    for step in steps:
        upstream = any(set(step.reads) & set(earlier.writes) for earlier in stale)
        if upstream or not _up_to_date(root, step, profile, entries.get(step.notebook)):
            stale.append(step)
    return stale


# How the child process that runs one notebook is started: genmodels._runner, papermill with
# nbclient's Output-widget stand-in switched off (a reply it could hide made cells wait out their
# time limit); its arguments follow.
_CHILD = ("-m", "genmodels._runner")


def _execute(root: Path, step: Step, profile: str, timeout: int, require_glue: bool) -> dict:
    """Run one notebook with papermill in a child process; the executed copy appears atomically."""
    out_dir = _executed_dir(root, profile)
    return execute_notebook(root / "notebooks" / f"{step.notebook}.ipynb", out_dir / f"{step.notebook}.ipynb",
                            profile, cwd=root / "notebooks", timeout=timeout, name=step.notebook,
                            partial=_partial_path(root, step.notebook, profile), require_glue=require_glue)


def _code_cells(notebook: Path) -> list:
    import nbformat

    return [cell for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"]


def _glues(notebook: Path) -> bool:
    """Whether the notebook hands values to the book's pages with ``glue(...)``."""
    return any("glue(" in cell.source for cell in _code_cells(notebook))


def _require_glue(glued: list[str]) -> None:
    """Refuse a publishing run whose glued values would be lost: ``genmodels.plotting.glue`` does
    nothing where myst-nb is missing (as on Colab, where no page is fed), so the executed copies would
    hold none of the numbers and figures the chapters show, and the book would not build."""
    if glued and importlib.util.find_spec("myst_nb") is None:
        raise SystemExit(
            f"myst-nb is not installed in {sys.executable}'s environment, so {', '.join(glued)} would "
            "record none of the values the book's pages glue in; nothing was run. Install the book's "
            "packages (pip install -e '.[book]', or only `pip install --no-deps myst-nb` where the "
            "kernel has IPython), then run again.")


def _glued_nothing(executed: Path) -> bool:
    """Whether an executed copy holds no glued value (myst-nb's outputs carry ``scrapbook`` metadata)."""
    return not any("scrapbook" in output.get("metadata", {})
                   for cell in _code_cells(executed) for output in cell.get("outputs", []))


def _partial_path(root: Path, notebook: str, profile: str) -> Path:
    """Where the cells of a run that did not finish are kept, with their outputs and times: a scratch
    folder of the build, never the published copies."""
    return root / "book" / "_build" / "partial" / profile / f"{notebook}.ipynb"


def execute_notebook(source: Path, target: Path, profile: str, *, cwd: Path, timeout: int,
                     env: dict[str, str] | None = None, name: str = "", partial: Path | None = None,
                     require_glue: bool = False) -> dict:
    """Execute ``source`` with papermill (parameter ``profile``) in a child process, in ``cwd``,
    within ``timeout`` seconds; ``target`` appears only when it succeeds. Returns its wall time, peak
    memory and the executed copy's hash. A run that fails, overruns or is interrupted leaves the cells
    it ran (papermill saves after each one, with its start time and duration) at ``partial``, if
    given, and nothing at ``target``: where the time went is what the next attempt needs. With
    ``require_glue``, a run whose copy holds no glued value fails the same way (its kernel lacked
    myst-nb, say)."""
    name = name or source.stem
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.tmp.ipynb")
    command = [sys.executable, *_CHILD, str(source), str(temporary), profile, str(cwd), str(timeout)]

    def set_aside() -> str:
        """Move what the unfinished run wrote out of the published folder; say where it went."""
        if partial is None or not temporary.exists():
            temporary.unlink(missing_ok=True)
            return ""
        partial.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, partial)
        return f"; the cells that ran, with their times, are in {partial}"

    started = time.perf_counter()
    try:
        environment = {**KEEP_FREED_MEMORY, **os.environ, **(env or {}), "TQDM_DISABLE": "1"}
        done = subprocess.run(command, env=environment, timeout=timeout + 120, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        kept = set_aside()
        raise SystemExit(f"{name} ran past its {timeout} s limit and was stopped; its saved state "
                         f"in runs/ (if any) lets the next run resume it{kept}") from None
    except BaseException:
        kept = set_aside()
        if kept:
            print(f"{name} interrupted{kept}", file=sys.stderr)
        raise
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        kept = set_aside()
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"{name} failed after {seconds:.0f} s; the published copy is unchanged{kept}.\n"
                         f"{tail}")
    if require_glue and _glued_nothing(temporary):
        kept = set_aside()
        raise SystemExit(f"{name} ran in {seconds:.0f} s but its copy holds none of the values it glues for "
                         "the book's pages (is myst-nb installed where its kernel runs?); the published "
                         f"copy is unchanged{kept}")
    os.replace(temporary, target)
    peak = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("peak-kb"))
    return {"wall_seconds": round(seconds, 1), "peak_memory_mb": round(peak / 1024, 1),
            "executed": file_sha256(target)}


@contextlib.contextmanager
def _exclusive(root: Path, profile: str):
    """Hold the manifest's lock while a run writes it: a second `make results` for the same profile
    stops at once with a message, instead of both runs writing over each other's manifest and copies."""
    path = _manifest_path(root, profile).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = "a smoke run" if profile == "smoke" else "a cpu or gpu run (both publish here)"
            raise SystemExit(
                f"another run, {who}, holds {path}: wait for it to finish (or stop it) "
                "and run again; the notebooks it completes will be skipped"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_pipeline(
    root: Path, profile: str, *, only: list[str] | None = None, force: list[str] | None = None,
    steps: tuple[Step, ...] = STEPS, timeout: int | None = None, log=print,
) -> list[str]:
    """Run every stale notebook (or only those named), recording each in the manifest as it ends.

    Returns the names of the notebooks that ran.
    """
    _check_names((only or []) + (force or []), steps)
    with _exclusive(root, profile), _terminate_as_interrupt():
        return _run_locked(root, profile, only, force, steps, timeout, log)


def _check_names(names: list[str], steps: tuple[Step, ...] = STEPS) -> None:
    known = {step.notebook for step in steps}
    for name in names:
        if name not in known:
            raise SystemExit(f"no notebook {name!r} in the pipeline; its notebooks are "
                             f"{', '.join(sorted(known))} (a new notebook needs its Step in "
                             "genmodels.pipeline.STEPS)")


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Stop on SIGTERM or SIGHUP (a `kill`, a cancelled CI job, a machine's time limit) as on Ctrl-C:
    the notebook's process is killed before the lock is released, and what it wrote is set aside.
    Without this the interpreter would die at once and leave the notebook running, unlocked."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_locked(root, profile, only, force, steps, timeout, log) -> list[str]:
    manifest_path = _manifest_path(root, profile)
    for path in (manifest_path, _executed_dir(root, profile)):
        _refuse_protected(path)  # before anything runs, not after an hour of it
    for folder in (manifest_path.parent, _executed_dir(root, profile)):
        finish_interrupted_writes(folder)  # a killed refresh's set, before this run reads or replaces it
    manifest = _read_manifest(manifest_path)
    entries = manifest.setdefault("notebooks", {})
    published = dict(entries)  # what each notebook's copy came from, before --force forgets it
    for name in force or []:
        entries.pop(name, None)
    todo = [step for step in plan(root, profile, steps, entries) if not only or step.notebook in only]
    # the notebooks whose glued values a publishing run must record (a smoke run publishes nothing)
    glued = [] if profile == "smoke" else [
        step.notebook for step in todo if _glues(root / "notebooks" / f"{step.notebook}.ipynb")]
    _require_glue(glued)
    for step in steps:
        if step not in todo and (not only or step.notebook in only):
            log(f"{step.notebook}: unchanged, skipped")
    ran = []
    for step in todo:
        log(f"{step.notebook}: running in the {profile} profile ...")
        earlier = published.get(step.notebook, {})
        if profile != "smoke" and earlier.get("key", {}).get("profile") not in (None, profile):
            log(f"{step.notebook}: its published copy is a {earlier['key']['profile']} run "
                f"({earlier.get('hardware', 'hardware not recorded')}); this {profile} run replaces it "
                "and the files it writes (git checkout -- book/notebooks checkpoints results restores "
                "them)")
        key = notebook_key(root, step, profile)  # what runs: an edit made meanwhile leaves it stale
        result = _execute(root, step, profile, timeout or TIMEOUTS[profile], step.notebook in glued)
        entries[step.notebook] = {
            "key": key,
            "outputs": {path: file_sha256(root / path) for path in step.writes
                        if profile != "smoke" and (root / path).is_file()},
            "hardware": hardware(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **result,
        }
        write_json(manifest_path, manifest)
        ran.append(step.notebook)
        log(f"{step.notebook}: done in {result['wall_seconds']:.0f} s, peak memory "
            f"{result['peak_memory_mb']:.0f} MB")
    return ran


def refresh_markdown(root: Path, notebook: str, profile: str, *, steps: tuple[Step, ...] = STEPS,
                     log=print) -> None:
    """Copy a notebook's Markdown cells, the tags of every cell (how the book shows it: hidden
    input, removed output) and the layout of its code cells into its executed copy, when nothing
    that runs has changed.

    Prose is often written after a run, once its outputs can be read, and code is re-wrapped to fit
    the page; re-running a notebook for that would cost its whole run (hours on a CPU). Refused unless
    every code cell means what ran (the same syntax tree: only line breaks, spacing, comments and
    docstrings may differ), the files the notebook reads are unchanged, and the executed copy is the
    one recorded. The notebook's records (runs of other profiles kept beside it,
    ``book/notebooks/NAME_cpu.ipynb``) get the same prose where their code still means what the
    notebook's does, under their own title and note.
    """
    with _exclusive(root, profile):
        _refresh_locked(root, notebook, profile, steps, log)


def _refresh_locked(root: Path, notebook: str, profile: str, steps: tuple[Step, ...], log) -> None:
    import nbformat

    _check_names([notebook], steps)
    step = next(s for s in steps if s.notebook == notebook)
    manifest_path = _manifest_path(root, profile)
    finish_interrupted_writes(manifest_path.parent)  # a killed refresh's copy and manifest
    manifest = _read_manifest(manifest_path)
    entry = manifest.get("notebooks", {}).get(notebook)
    executed_path = _executed_dir(root, profile) / f"{notebook}.ipynb"
    if not entry or not executed_path.exists() or entry.get("executed") != file_sha256(executed_path):
        raise SystemExit(f"{notebook}: no recorded run whose executed copy is {executed_path}: run it")
    profile = _served_by(root, notebook, profile, entry)  # a run that serves both: refresh that run
    key = notebook_key(root, step, profile)

    def without_source(k: dict) -> dict:
        return {name: value for name, value in k.items() if name != "source"}

    if without_source(entry["key"]) != without_source(key):
        ran_in = entry["key"].get("profile")
        if {**without_source(entry["key"]), "profile": profile} == without_source(key):
            cpu_note = f" ({GPU_ON_CPU}=1 on a machine without CUDA)" if ran_in == "gpu" else ""
            raise SystemExit(f"{notebook}: its executed copy is a {ran_in} run: refresh it with "
                             f"--profile {ran_in}{cpu_note}")
        raise SystemExit(f"{notebook}: the files it reads changed since it ran: run it")
    source = nbformat.read(root / "notebooks" / f"{notebook}.ipynb", as_version=4)
    executed = nbformat.read(executed_path, as_version=4)
    ran = _ran_cells(executed)
    if not _same_code(source.cells, ran, profile):
        raise SystemExit(f"{notebook}: its code (or the number of cells) changed since it ran, beyond "
                         "layout, comments, docstrings and the sizes of profiles other than "
                         f"{profile}: run it")
    changed = _copy_prose(source.cells, ran)
    if not changed and entry["key"] == key:
        log(f"{notebook}: nothing to refresh; {executed_path.relative_to(root)} is left as it is")
    else:
        copy = _notebook_bytes(executed)
        entry.update(key=key, executed=hashlib.sha256(copy).hexdigest(),
                     markdown_refreshed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        # the copy and the manifest that records it are replaced together, or neither is
        write_together({executed_path: copy, manifest_path: json_text(manifest).encode()})
        log(f"{notebook}: {changed} cell(s) or cell tags refreshed in "
            f"{executed_path.relative_to(root)}; outputs untouched")
    _refresh_records(root, notebook, source, log)


def _notebook_bytes(notebook) -> bytes:
    """A notebook's file as nbformat.write leaves it (ending in a newline)."""
    import nbformat

    text = nbformat.writes(notebook)
    return (text if text.endswith("\n") else text + "\n").encode()


def _ran_cells(executed) -> list:
    """An executed copy's cells without the one papermill injects (the run's parameters)."""
    return [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]


def _same_code(source_cells: list, ran_cells: list, profile: str) -> bool:
    """Whether the notebook's cells run what ran, in ``profile``: the same kinds of cell in the same
    order, and code cells of the same meaning (:func:`code_meaning`)."""
    def shape(cells) -> list:
        return [(c.cell_type, code_meaning(c.source, profile) if c.cell_type == "code" else None)
                for c in cells]

    return shape(source_cells) == shape(ran_cells)


def _copy_prose(source_cells: list, ran_cells: list) -> int:
    """Copy each cell's text (Markdown, and the layout of code of the same meaning) and tags into the
    executed cell beside it, leaving outputs alone; the number of cells changed."""
    changed = 0
    for new, old in zip(source_cells, ran_cells, strict=True):
        if new.source != old.source:
            old.source, changed = new.source, changed + 1
        tags = list(new.metadata.get("tags", []))
        if tags != list(old.metadata.get("tags", [])):
            old.metadata["tags"], changed = tags, changed + 1
            if not tags:
                del old.metadata["tags"]
    return changed


def _refresh_records(root: Path, notebook: str, source, log) -> None:
    """Bring the prose of a notebook's records up to date, as :func:`refresh_markdown` does its
    published copy: a record is a run of another profile kept beside the published one
    (``book/notebooks/NAME_cpu.ipynb``, shown on the page "Without a GPU"). Its first cell, its own
    title and note, is kept, followed by the notebook's opening cell after its title. A record whose
    code has changed since it ran is left as it is (its note says what changed)."""
    import nbformat

    for path in sorted(_executed_dir(root, "cpu").glob(f"{notebook}_*.ipynb")):
        profile = path.stem.removeprefix(f"{notebook}_")
        if profile not in get_args(Profile):
            continue
        record = nbformat.read(path, as_version=4)
        ran = _ran_cells(record)
        if not ran or not _same_code(source.cells[1:], ran[1:], profile):
            log(f"{path.relative_to(root)}: a record of code that has changed since it ran; its prose is "
                "left as it is")
            continue
        changed = _copy_prose(source.cells[1:], ran[1:])
        opening = _record_opening(path, ran[0].source, source.cells[0].source)
        if opening != ran[0].source:
            ran[0].source, changed = opening, changed + 1
        if changed:
            write_together({path: _notebook_bytes(record)})
            log(f"{path.relative_to(root)}: {changed} cell(s) or cell tags refreshed; outputs untouched")


def _record_opening(path: Path, record_first: str, notebook_first: str) -> str:
    """A record's first cell: its own title and ``{note}`` (what the run was), then the notebook's
    opening cell after the notebook's title line."""
    head, fence, _ = record_first.partition("\n```\n")
    if not fence or "```{note}" not in head:
        raise SystemExit(f"{path}: a record's first cell opens with its own title and a {{note}} block "
                         "saying what the run was; write one, then refresh it")
    return head + fence + notebook_first.partition("\n")[2]


def code_meaning(source: str, profile: str | None = None) -> str:
    """What a code cell runs, whatever its layout: its syntax tree without docstrings (the text
    itself for a cell that is not plain Python, such as an IPython magic).

    With a ``profile``, what it runs in that profile: each profile table
    (``{"smoke": ..., "cpu": ..., "gpu": ...}[profile]``) is read as its entry for that profile, so
    that retuning the cpu profile's sizes does not change what the gpu profile's run ran.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                node.body[0] = ast.Pass()
    if profile is not None:
        tree = _OneProfile(profile).visit(tree)
    return ast.dump(tree)


def profiles_agree(notebook: Path, first: str, second: str) -> bool:
    """Whether a notebook runs the same computation in two profiles, so that a run in one serves the
    other: every profile table has the same entry for both, and no code tells them apart by name
    (``profile == "gpu"``, or a table written some other way). A notebook whose sizes are the same
    in the cpu and gpu profiles (the data notebook, the feature network that defines every FID)
    then runs once for both; the executed copy still says where it ran."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if code_meaning(source, first) != code_meaning(source, second):
            return False
        try:
            tree = _OneProfile(first).visit(ast.parse(source))
        except SyntaxError:
            continue
        if _tells_apart(tree, {first, second}):
            return False
    return True


def _tells_apart(tree: ast.AST, names: set[str]) -> bool:
    """A comparison of ``profile`` with one of ``names``, or a dict keyed by one of them (a profile
    table in some other form)."""
    def mentions(node: ast.AST) -> bool:
        return any(isinstance(inner, ast.Constant) and inner.value in names for inner in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Name) and o.id == "profile" for o in operands) \
                    and any(mentions(o) for o in operands):
                return True
        if isinstance(node, ast.Dict) and any(key is not None and mentions(key) for key in node.keys):
            return True
    return False


class _OneProfile(ast.NodeTransformer):
    """Replaces each profile table by its entry for one profile."""

    def __init__(self, profile: str) -> None:
        self.profile = profile

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if is_profile_table(node):
            table = node.value
            entries = {key.value: value for key, value in zip(table.keys, table.values, strict=True)}
            if self.profile in entries:
                return self.visit(entries[self.profile])
        return self.generic_visit(node)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genmodels.pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None,
                        help="smoke, cpu, gpu or auto (default: $GENMODELS_PROFILE, else auto); "
                             "gpu-dry: every notebook with the gpu profile's shapes and settings for a "
                             "handful of steps, on the CPU, publishing nothing (see genmodels.dryrun)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="run only these, if they are stale")
    parser.add_argument("--force", nargs="+", metavar="NOTEBOOK", help="run these even if unchanged")
    parser.add_argument("--all", action="store_true", help="gpu: run every stale notebook in one command")
    parser.add_argument("--refresh-markdown", nargs="+", metavar="NOTEBOOK",
                        help="copy these notebooks' edited Markdown, cell tags and code layout into "
                             "their executed copies and records (what their code runs unchanged)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    if not (args.root / "notebooks").is_dir():
        parser.error(f"--root {args.root} holds no notebooks/ folder: give the repository's root")
    if args.refresh_markdown and (args.only or args.force or args.all):
        parser.error("--refresh-markdown names the notebooks it refreshes, and runs none: it takes no "
                     "--only, --force or --all")
    if args.profile is not None and args.profile.strip().lower() == "gpu-dry":
        from genmodels.dryrun import run_gpu_dry

        if args.force or args.all or args.refresh_markdown:
            parser.error("gpu-dry runs every notebook (or those named with --only) every time: it takes "
                         "no --force, --all or --refresh-markdown")
        record = run_gpu_dry(args.root, only=args.only)
        ran = [name for name, entry in record["notebooks"].items() if "skipped" not in entry]
        print(f"gpu-dry: {len(ran)} notebook(s) dry-run in {record['wall_seconds']:.0f} s, "
              f"{len(record['notebooks']) - len(ran)} left to the smoke run; executed copies in "
              f"{args.root / 'book/_build/gpu-dry'}")
        return
    try:  # the gpu plan (no --only or --all) and a Markdown refresh run no notebook: no CUDA needed
        profile = resolve_profile(args.profile, runs=bool(args.only or args.all))
    except ProfileError as error:
        raise SystemExit(f"{error} (or gpu-dry: every notebook with the gpu profile's shapes, for a "
                         "handful of steps)") from None
    if args.refresh_markdown:
        try:
            for notebook in args.refresh_markdown:
                refresh_markdown(args.root, notebook, profile)
        except CheckpointError as error:
            raise SystemExit(str(error)) from None
        return
    if profile == "gpu" and not (args.only or args.all):
        _check_names(args.force or [])
        forced = set(args.force or [])
        entries = _read_manifest(_manifest_path(args.root, profile)).get("notebooks", {})
        stale = plan(args.root, profile, entries={k: v for k, v in entries.items() if k not in forced})
        print("The gpu profile is sized so that each notebook fits one command of at most 10 minutes on "
              "a lent GPU.\nRun these one at a time (each resumes through the manifest):")
        recorded = []
        for step in stale:
            force = f" --force {step.notebook}" if step.notebook in forced else ""
            last = entries.get(step.notebook, {})
            if last.get("key", {}).get("profile") == "gpu" and "wall_seconds" in last:
                recorded.append(last["wall_seconds"])
                took = f"its last gpu run took {last['wall_seconds']:.0f} s on {last.get('hardware', '?')}"
            else:
                took = "no gpu run of it recorded yet"
            print(f"  {sys.executable} -m genmodels.pipeline --profile gpu --only {step.notebook}{force}"
                  f"   # {took}")
        if not stale:
            print("  (nothing: every notebook is up to date)")
        else:
            if recorded:
                print(f"Recorded gpu time of these: {sum(recorded) / 60:.1f} minutes for {len(recorded)} "
                      f"of {len(stale)}, from the manifest ({_manifest_path(args.root, profile)}).")
            print("A machine that starts every command from a fresh copy of the repository must get back "
                  "what each command\npublished (checkpoints/, results/, book/notebooks/) before the "
                  "next, or a later notebook reads the old\ncheckpoints: there, run a notebook and those "
                  "that read its checkpoints in one command, naming them together.")
        return
    try:
        run_pipeline(args.root, profile, only=args.only, force=args.force)
    except CheckpointError as error:  # a published file damaged, or a set a killed run left
        raise SystemExit(str(error)) from None
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM/SIGHUP (see _terminate_as_interrupt)
        print(f"{error or 'interrupted'}: the notebooks that finished are recorded, and running the same "
              "command again resumes", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
