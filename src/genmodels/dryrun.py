"""`make gpu-dry`: every notebook with the gpu profile's shapes and settings, for a handful of steps,
on the CPU.

The gpu profile runs only where a GPU is lent, and then against the clock; its network widths, batch
sizes and learning-rate settings appear in no run that CI makes. A dry run finds, in CI and without
CUDA, the mistakes that do not need CUDA to show: a width a layer cannot take, a batch that does not
divide as the code assumes, a key missing from the gpu profile's table, the peak memory of the gpu
batch sizes (all but the DDPM's training batch: ``FEWER`` says why).

Each notebook's *profile tables* (``{"smoke": ..., "cpu": ..., "gpu": ...}[profile]``) are rewritten
before it runs: every entry that sets how long a run lasts (a count: ``COUNTS``) keeps the smoke
profile's value, every other entry (a shape or a setting: ``SETTINGS``) takes the gpu profile's. An
entry that is in neither list stops the dry run with a message naming it, so that a new size is
classified when it is added. A notebook whose gpu settings are its smoke settings is left to the
smoke run of ``make test``, which already runs what its dry run would; where even the smoke counts
would take minutes at the gpu width, ``FEWER`` gives smaller ones, and ``STOP_BEFORE`` ends a dry
run before the cells whose cost no count sets, provided they read no setting that the cells before
them do not. The notebook otherwise runs as the smoke profile
does: it writes only to scratch folders, publishes nothing, and ``checkpoints/``, ``results/`` and
``book/notebooks/`` are protected (``$GENMODELS_PROTECTED_DIRS``), so that an attempt to write there
fails the run. The executed copies and ``pipeline.json`` (wall time and peak memory of each
notebook) go to ``book/_build/gpu-dry/``.

Usage: ``python -m genmodels.pipeline --profile gpu-dry`` (what ``make gpu-dry`` runs).
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path
from typing import NamedTuple

from genmodels.train import (
    PROTECTED,
    PUBLISHED_DIRS,
    files_changed,
    fingerprint,
    git_commit,
    hardware,
    write_json,
)

__all__ = [
    "COUNTS", "SETTINGS", "DryRunError", "dry_source", "gpu_dry", "is_profile_table", "run_gpu_dry",
    "settings_read",
]

PROFILE_KEYS = ("smoke", "cpu", "gpu")
# Entries of the profile tables that set how long a run lasts: the dry run keeps the smoke values.
COUNTS = frozenset({
    "n_toy", "n_kl_steps",  # 01_data
    "n_train", "epochs", "epochs_2d", "n_test_nll", "refine_steps",  # 02_vae (and others)
    "toy_iterations", "w1_samples", "iterations", "clip_minutes", "gp_minutes", "log_every",  # 03_wgan
    "train_minutes", "fid_every", "n_grid", "n_fid", "n_nll",  # 04_ddpm
    "chain_steps", "dsm_steps", "frames", "calls",  # 05_langevin
    "n_samples", "ddpm_calls",  # 07_evaluation
})
# Entries that set shapes and settings: the dry run takes the gpu values.
SETTINGS = frozenset({
    "iwae_k",  # 02_vae: importance samples per image, the largest batch the VAE's decoder sees
    "clip_channels", "gp_channels",  # 03_wgan
    "batch_size", "channels", "blocks_per_level", "learning_rate", "warmup_steps", "ema_decay",
    "batch",  # 04_ddpm
    "particles",  # 05_langevin
})
# Counts smaller than the smoke profile's, where the smoke count at the gpu width would take minutes.
# The DDPM chapter: one epoch is one training step of 128 images (the smoke profile's batch) at the gpu
# width, and no FID during training (``fid_every`` beyond the one epoch). A step of the gpu profile's
# 512 images took about 20 s on two cores with bf16 and 60 s on two AVX2 cores in float32, a third of
# the whole dry run there, and checked only its memory on the CPU (9.2 GB in float32), which says
# little of a GPU's in bfloat16; that batch has run for real on the H200 (the published DDPM):
# scoring 130 images with 20 calls of the 64-channel network took another 55 s there and checks
# nothing the smoke run does not (130 images make one chunk of the gpu profile's 2,000). The VAE's
# test-set bound: 16 images at the gpu K check the same decoder batch as 128 (18 s on AVX2). The
# WGANs: six iterations of six 64-channel steps each (five of the critic, one of the generator),
# logged twice, check the same shapes as the smoke profile's 30. The Langevin chapter's chains: 40
# steps (four per level of the annealing ladder) of the gpu profile's 20,000 particles check the
# shapes and the memory of the smoke profile's 200 steps, in a fifth of the 25 s those took on AVX2.
FEWER = {
    "02_vae": dict(n_test_nll=16),
    "03_wgan": dict(iterations=6, log_every=3),
    "04_ddpm": dict(n_train=128, epochs=1, n_grid=1, fid_every=2),
    "05_langevin": dict(chain_steps=40),
}
# Where a dry run stops: before the cells whose cost no count sets, once every setting has been read
# by a cell that runs (``dry_notebook`` refuses a stop after which a cell reads a setting that no
# earlier cell reads). The DDPM chapter, after training: a loss probe of 512 test images at 12 noise
# levels (30-60 s at the gpu width), a 1,000-step trajectory, and the comparison of 13 samplers (about
# 1,250 network calls per image) on at least 129 images, since FID's covariance of 128 features needs
# more images than features (its dry run took 10 minutes). The VAE chapter's last analysis: a
# K-sample bound on 256 images (30 s at the gpu K), which the test-set bound before it already runs
# at the same K. The rest of the Langevin chapter reads no setting (only counts, and the published
# DDPM), so its smoke run covers it.
STOP_BEFORE = {
    "02_vae": "### Which latent dimensions are used",
    "04_ddpm": "Left, the training loss",
    "05_langevin": "## 5. Learning the score by denoising",
}
DRY_DIR = "book/_build/gpu-dry"
HELPER = "_gpu_dry"  # the name the rewritten notebook calls


class DryRunError(ValueError):
    """A notebook's profile table cannot be rewritten for a dry run."""


def gpu_dry(name: str, table: dict, fewer: dict | None = None):
    """The dry run's value of the profile table assigned to ``name``: for a table of dicts, the gpu
    profile's dict with every count replaced by the smoke profile's (or by ``fewer``'s); for a table
    of single values, the smoke value when ``name`` is a count and the gpu value when it is a setting."""
    smoke, gpu, fewer = table["smoke"], table["gpu"], fewer or {}
    if not isinstance(gpu, dict):
        return fewer.get(name, smoke) if _kind(name) == "count" else gpu
    if set(smoke) != set(gpu):
        raise DryRunError(f"{name}: the smoke and gpu profiles set different entries "
                          f"({sorted(set(smoke) ^ set(gpu))}); give every profile the same ones")
    return {key: fewer.get(key, smoke[key]) if _kind(key) == "count" else gpu[key] for key in gpu}


def _kind(name: str) -> str:
    if name in COUNTS:
        return "count"
    if name in SETTINGS:
        return "setting"
    raise DryRunError(
        f"profile entry {name!r} is neither a count nor a setting: add it to COUNTS (the dry run keeps "
        "the smoke profile's value) or to SETTINGS (it takes the gpu profile's) in genmodels/dryrun.py"
    )


def is_profile_table(node: ast.AST) -> bool:
    """``node`` is ``{"smoke": ..., "cpu": ..., "gpu": ...}[profile]``."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict)
            and isinstance(node.slice, ast.Name) and node.slice.id == "profile"):
        return False
    keys = [key.value if isinstance(key, ast.Constant) else None for key in node.value.keys]
    return len(keys) == len(PROFILE_KEYS) and set(keys) == set(PROFILE_KEYS)


class _Rewrite(ast.NodeTransformer):
    """``name = {...}[profile]`` becomes ``name = _gpu_dry("name", {...}, fewer)``."""

    def __init__(self, fewer: dict) -> None:
        self.tables: list[str] = []
        self.settings: list[str] = []  # the settings whose gpu value differs from the smoke value
        self.fewer = fewer

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        if is_profile_table(node.value):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise DryRunError(f"line {node.lineno}: a profile table must be assigned to one name")
            name = node.targets[0].id
            for key, (smoke, gpu) in _entries(name, node.value.value).items():
                if _kind(key) == "setting" and ast.dump(smoke) != ast.dump(gpu):
                    self.settings.append(key)
            self.tables.append(name)
            fewer = ast.parse(repr(self.fewer), mode="eval").body
            node.value = ast.Call(ast.Name(HELPER, ast.Load()),
                                  [ast.Constant(name), node.value.value, fewer], [])
            return node
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if is_profile_table(node):
            raise DryRunError(f"line {node.lineno}: a profile table must be assigned to a name, "
                              "`name = {...}[profile]`, for the dry run to know what it sets")
        return self.generic_visit(node)


def _entries(name: str, table: ast.Dict) -> dict[str, tuple[ast.expr, ast.expr]]:
    """The entries a table sets, each with its smoke and gpu values (syntax trees): the keys of its
    values when they are ``dict(...)`` or ``{...}``, else the table's own name."""
    profiles = dict(zip([key.value for key in table.keys], table.values, strict=True))
    smoke, gpu = profiles["smoke"], profiles["gpu"]

    def items(value: ast.expr) -> dict[str, ast.expr] | None:
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict" and not value.args:
            return {keyword.arg: keyword.value for keyword in value.keywords}
        if isinstance(value, ast.Dict) and all(isinstance(key, ast.Constant) for key in value.keys):
            return {key.value: item for key, item in zip(value.keys, value.values, strict=True)}
        return None

    smoke_items, gpu_items = items(smoke), items(gpu)
    if gpu_items is None or smoke_items is None:
        return {name: (smoke, gpu)}
    return {key: (smoke_items.get(key, gpu_items[key]), gpu_items[key]) for key in gpu_items}


def settings_read(cells) -> set[str]:
    """The settings (``SETTINGS``) that a notebook's code ``cells`` read outside the profile tables
    that set them: as a name (``batch_size``), a key (``sizes["channels"]``), an attribute
    (``config.channels``) or a keyword (``channels=...``)."""
    read = set()

    def visit(node: ast.AST) -> None:
        if is_profile_table(node):
            return
        word = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                else node.arg if isinstance(node, ast.keyword)
                else node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
        if word in SETTINGS:
            read.add(word)
        for child in ast.iter_child_nodes(node):
            visit(child)

    for cell in cells:
        if cell.cell_type == "code":
            try:
                visit(ast.parse(cell.source))
            except SyntaxError:
                continue  # an IPython magic, not Python
    return read


class Rewritten(NamedTuple):
    source: str  # the cell, its profile tables rewritten
    tables: list[str]  # the names the tables are assigned to
    settings: list[str]  # the settings whose gpu value is not the smoke value


def dry_source(source: str, fewer: dict | None = None) -> Rewritten:
    """A code cell with its profile tables rewritten (``fewer``: counts smaller than the smoke
    profile's); a cell without one is returned as it was."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return Rewritten(source, [], [])  # an IPython magic, not Python: it has no profile tables
    for name in fewer or {}:
        if _kind(name) != "count":
            raise DryRunError(f"{name!r} is a setting: a dry run takes the gpu value of every setting")
    rewrite = _Rewrite(fewer or {})
    tree = rewrite.visit(tree)
    if not rewrite.tables:
        return Rewritten(source, [], [])
    return Rewritten(f"from genmodels.dryrun import gpu_dry as {HELPER}\n" + ast.unparse(tree),
                     rewrite.tables, rewrite.settings)


def dry_notebook(path: Path):
    """The notebook at ``path`` with its profile tables rewritten (an ``nbformat`` node), and the
    settings in which its dry run differs from its smoke run."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    stop = STOP_BEFORE.get(path.stem)
    skipped, read_before = [], set()  # the cells after the stop, and the settings the rest read
    if stop is not None:
        ends = [i for i, cell in enumerate(notebook.cells) if cell.source.lstrip().startswith(stop)]
        if len(ends) != 1:
            raise DryRunError(f"{path.name}: STOP_BEFORE names {stop!r}, which begins {len(ends)} cells, "
                              "not one: update it in genmodels/dryrun.py")
        skipped, notebook.cells = notebook.cells[ends[0]:], notebook.cells[: ends[0]]
        read_before = settings_read(notebook.cells)  # before the rewrite, which hides the tables
    tables, settings = [], []
    for cell in notebook.cells:
        if cell.cell_type == "code":
            rewritten = dry_source(cell.source, FEWER.get(path.stem))
            cell.source = rewritten.source
            tables += rewritten.tables
            settings += rewritten.settings
    if not tables:
        raise DryRunError(f"{path.name} has no profile table (`name = {{...}}[profile]`): give its sizes "
                          "one, so that the dry run knows its counts from its settings")
    unchecked = (settings_read(skipped) - read_before) & set(settings)
    if unchecked:
        raise DryRunError(f"{path.name}: the cells from {stop!r} on, which the dry run skips, read "
                          f"{sorted(unchecked)}, which no cell before them reads, so no dry run would "
                          "check it: move STOP_BEFORE later in genmodels/dryrun.py")
    return notebook, settings


def run_gpu_dry(root: Path, *, only: list[str] | None = None, steps=None, timeout: int = 10 * 60,
                log=print) -> dict:
    """Dry-run every notebook (or only those named) in order; returns the record written to
    ``book/_build/gpu-dry/pipeline.json``. Stops at the first notebook that fails, or that changed a
    file in ``checkpoints/``, ``results/`` or ``book/notebooks/``."""
    import nbformat

    from genmodels.pipeline import STEPS, execute_notebook

    known = [step.notebook for step in steps or STEPS]
    for name in only or []:
        if name not in known:
            raise SystemExit(f"no notebook {name!r}; the notebooks are {', '.join(known)}")
    out = root / DRY_DIR
    (out / "source").mkdir(parents=True, exist_ok=True)
    published = [root / folder for folder in PUBLISHED_DIRS]
    env = {PROTECTED: os.pathsep.join(map(str, published))}
    record = {"hardware": hardware("cpu"), "commit": git_commit(root), "notebooks": {}}
    started = time.perf_counter()
    for name in known:
        if only and name not in only:
            continue
        try:
            notebook, settings = dry_notebook(root / "notebooks" / f"{name}.ipynb")
        except DryRunError as error:
            raise SystemExit(f"{name}: {error}") from None
        if not settings:
            log(f"{name}: its gpu settings are its smoke settings; the smoke run (make test) covers it")
            record["notebooks"][name] = {"skipped": "the gpu profile differs from smoke only in counts"}
            continue
        source = out / "source" / f"{name}.ipynb"
        nbformat.write(notebook, source)
        stop = f", stopping before {STOP_BEFORE[name]!r}" if name in STOP_BEFORE else ""
        log(f"{name}: dry run with the gpu profile's {', '.join(settings)}{stop} ...")
        before = fingerprint(published)
        result = execute_notebook(source, out / f"{name}.ipynb", "smoke", cwd=root / "notebooks",
                                  timeout=timeout, env=env, name=name)
        changed = files_changed(before, fingerprint(published))
        if changed:
            raise SystemExit(f"{name}: its dry run changed published files, which only `make results` may "
                             f"write: {', '.join(changed[:5])}. Restore them with `git checkout -- <file>`")
        record["notebooks"][name] = {"gpu_settings": settings, "stopped_before": STOP_BEFORE.get(name),
                                     **result}
        log(f"{name}: done in {result['wall_seconds']:.0f} s, peak memory "
            f"{result['peak_memory_mb']:.0f} MB")
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "pipeline.json", record)
    return record
