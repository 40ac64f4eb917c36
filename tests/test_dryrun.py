"""The gpu-dry run: the gpu profile's shapes and settings with the smoke profile's counts, every entry
of every profile table classified, nothing published."""

import ast
from pathlib import Path

import nbformat
import pytest
from test_pipeline import write_notebook  # a notebook of a parameters cell and one code cell

from genmodels.dryrun import (
    COUNTS,
    FEWER,
    SETTINGS,
    STOP_BEFORE,
    DryRunError,
    dry_notebook,
    dry_source,
    gpu_dry,
    is_profile_table,
    run_gpu_dry,
    settings_read,
)
from genmodels.pipeline import STEPS, Step

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [ROOT / "notebooks" / f"{step.notebook}.ipynb" for step in STEPS]


def test_counts_come_from_smoke_and_shapes_and_settings_from_gpu():
    table = {"smoke": dict(epochs=2, channels=16, learning_rate=1e-3),
             "cpu": dict(epochs=40, channels=16, learning_rate=5e-4),
             "gpu": dict(epochs=200, channels=64, learning_rate=5e-4)}
    assert gpu_dry("sizes", table) == dict(epochs=2, channels=64, learning_rate=5e-4)
    assert gpu_dry("n_samples", {"smoke": 500, "cpu": 10_000, "gpu": 10_000}) == 500
    assert gpu_dry("channels", {"smoke": 8, "cpu": 16, "gpu": 64}) == 64


def test_an_unclassified_entry_or_a_profile_missing_one_is_a_clear_error():
    with pytest.raises(DryRunError, match="'width' is neither a count nor a setting: add it to COUNTS"):
        gpu_dry("sizes", {"smoke": dict(width=1), "cpu": dict(width=2), "gpu": dict(width=3)})
    with pytest.raises(DryRunError, match=r"smoke and gpu profiles set different entries \(\['channels'\]\)"):
        gpu_dry("sizes", {"smoke": dict(epochs=1), "cpu": dict(epochs=1), "gpu": dict(epochs=1, channels=8)})


def test_the_rewrite_replaces_only_profile_tables_and_what_it_computes_is_the_blend():
    cell = ("batch = 4  # not a table\n"
            "sizes = {'smoke': dict(epochs=1, channels=8), 'cpu': dict(epochs=9, channels=16),\n"
            "         'gpu': dict(epochs=99, channels=64)}[profile]\n"
            "other = {'smoke': 1, 'gpu': 2}[profile]\n"  # not a table of the three profiles
            "width = sizes['channels'] * 2\n")
    source, tables, settings = dry_source(cell)
    assert tables == ["sizes"] and settings == ["channels"]
    namespace = {"profile": "smoke"}
    exec(source, namespace)
    assert namespace["sizes"] == dict(epochs=1, channels=64) and namespace["width"] == 128
    assert namespace["batch"] == 4 and namespace["other"] == 1
    assert dry_source("%matplotlib inline") == ("%matplotlib inline", [], [])
    assert dry_source("x = 1  # keeps its comment") == ("x = 1  # keeps its comment", [], [])
    fewer, _, _ = dry_source("n_samples = {'smoke': 500, 'cpu': 10_000, 'gpu': 10_000}[profile]",
                             fewer={"n_samples": 7})
    namespace = {"profile": "smoke"}
    exec(fewer, namespace)
    assert namespace["n_samples"] == 7
    with pytest.raises(DryRunError, match="'channels' is a setting"):
        dry_source("x = 1", fewer={"channels": 8})


def test_a_profile_table_is_a_dict_of_exactly_the_three_profiles_indexed_by_profile():
    def table(text: str) -> bool:
        return is_profile_table(ast.parse(text, mode="eval").body)

    assert table("{'smoke': 1, 'cpu': 2, 'gpu': 3}[profile]")
    assert table("{'gpu': dict(c=64), 'smoke': dict(c=8), 'cpu': dict(c=16)}[profile]")
    assert not table("{'smoke': 1, 'cpu': 2}[profile]")  # a profile missing
    assert not table("{'smoke': 1, 'cpu': 2, 'gpu': 3, 'tpu': 4}[profile]")
    assert not table("{'smoke': 1, 'cpu': 2, 'gpu': 3}[kind]")  # not indexed by the profile
    assert not table("{'smoke': 1, 'cpu': 2, **more}[profile]")
    assert not table("sizes[profile]")


def test_a_table_the_rewrite_cannot_name_is_refused_at_once():
    with pytest.raises(DryRunError, match="line 1: a profile table must be assigned to a name"):
        dry_source("print({'smoke': 1, 'cpu': 2, 'gpu': 3}[profile])")
    with pytest.raises(DryRunError, match="line 1: a profile table must be assigned to one name"):
        dry_source("a = b = {'smoke': 1, 'cpu': 2, 'gpu': 3}[profile]")
    with pytest.raises(DryRunError, match="'n_widgets' is neither a count nor a setting"):
        dry_source("n_widgets = {'smoke': 1, 'cpu': 2, 'gpu': 3}[profile]")


def _tables(path: Path) -> dict[str, dict]:
    """Every profile table of a notebook, evaluated independently of the rewrite (their values are
    literals and dict(...) calls)."""
    tables = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Subscript) \
                    and isinstance(node.value.value, ast.Dict) and ast.unparse(node.value.slice) == "profile":
                expression = ast.Expression(node.value.value)
                tables[node.targets[0].id] = eval(compile(expression, path.name, "eval"), {"dict": dict})
    return tables


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_profile_tables_and_every_entry_is_classified(path):
    notebook, settings = dry_notebook(path)  # raises on an unclassified entry or an unnamed table
    tables = _tables(path)
    assert tables, f"{path.name} has no profile table"
    entries = {}  # entry -> (smoke value, gpu value), from the tables evaluated here
    for name, table in tables.items():
        if isinstance(table["gpu"], dict):
            entries.update({key: (table["smoke"][key], table["gpu"][key]) for key in table["gpu"]})
        else:
            entries[name] = (table["smoke"], table["gpu"])
    differ = [key for key, (smoke, gpu) in entries.items() if key in SETTINGS and smoke != gpu]
    assert sorted(settings) == sorted(differ)
    stop = STOP_BEFORE.get(path.stem)
    if stop is not None:  # the dry run ends just before that cell
        source = nbformat.read(path, as_version=4).cells
        assert source[len(notebook.cells)].source.startswith(stop)
        assert [c.source for c in source[: len(notebook.cells)] if c.cell_type == "markdown"] == \
               [c.source for c in notebook.cells if c.cell_type == "markdown"]


def test_the_classification_lists_are_disjoint_and_name_only_entries_that_exist():
    assert not COUNTS & SETTINGS
    used = set()
    for path in NOTEBOOKS:
        for name, table in _tables(path).items():
            used |= set(table["gpu"]) if isinstance(table["gpu"], dict) else {name}
    assert COUNTS | SETTINGS == used, f"stale: {sorted((COUNTS | SETTINGS) - used)}"


def test_the_ddpm_dry_run_builds_the_gpu_network_and_trains_on_the_smoke_data():
    sizes = gpu_dry("sizes", _tables(ROOT / "notebooks/04_ddpm.ipynb")["sizes"], FEWER["04_ddpm"])
    gpu = _tables(ROOT / "notebooks/04_ddpm.ipynb")["sizes"]["gpu"]
    assert (sizes["channels"], sizes["blocks_per_level"], sizes["batch_size"]) == \
           (gpu["channels"], gpu["blocks_per_level"], gpu["batch_size"]) == (64, 2, 512)
    # one step of fewer images than the gpu batch (the smoke profile's batch): a full gpu batch took a
    # third of the dry run on two AVX2 cores, and has run for real on the GPU
    smoke = _tables(ROOT / "notebooks/04_ddpm.ipynb")["sizes"]["smoke"]
    assert sizes["n_train"] == smoke["batch_size"] < sizes["batch_size"]
    assert sizes["epochs"] == 1 and sizes["train_minutes"] is None
    assert sizes["fid_every"] > sizes["epochs"]  # no FID during the one epoch: the smoke run scores


def test_the_langevin_dry_run_moves_the_gpu_particles_for_fewer_steps_than_the_smoke_run():
    table = _tables(ROOT / "notebooks/05_langevin.ipynb")["sizes"]
    sizes = gpu_dry("sizes", table, FEWER["05_langevin"])
    assert sizes["particles"] == table["gpu"]["particles"] == 20_000
    assert 10 <= sizes["chain_steps"] < table["smoke"]["chain_steps"]  # at least a step per level of 10
    assert sizes["dsm_steps"] == table["smoke"]["dsm_steps"]


def _cells(*sources: str) -> list:
    return [nbformat.v4.new_code_cell(source) for source in sources]


def test_the_settings_a_cell_reads_are_found_in_every_spelling_but_not_in_the_tables_that_set_them():
    table = "sizes = {'smoke': dict(channels=8, iwae_k=2), 'cpu': dict(channels=8, iwae_k=9), " \
            "'gpu': dict(channels=64, iwae_k=99)}[profile]"
    assert settings_read(_cells(table, "%matplotlib inline", "x = 1")) == set()
    assert settings_read(_cells("width = sizes['channels']")) == {"channels"}
    assert settings_read(_cells("net = UNet(config.channels)", "print(f\"{sizes['iwae_k']}\")")) == \
           {"channels", "iwae_k"}
    assert settings_read(_cells("make(batch_size=2)", "lr = learning_rate * 2")) == \
           {"batch_size", "learning_rate"}
    assert settings_read([nbformat.v4.new_markdown_cell("the channels")]) == set()


def test_a_dry_run_may_not_stop_before_the_only_cell_that_reads_a_setting(tmp_path, monkeypatch):
    table = "sizes = {'smoke': dict(epochs=1, channels=8), 'cpu': dict(epochs=9, channels=8), " \
            "'gpu': dict(epochs=9, channels=64)}[profile]"
    cells = [nbformat.v4.new_code_cell(table), nbformat.v4.new_code_cell("epochs = sizes['epochs']"),
             nbformat.v4.new_markdown_cell("## Later"), nbformat.v4.new_code_cell("w = sizes['channels']")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "01_a.ipynb")
    monkeypatch.setitem(STOP_BEFORE, "01_a", "## Later")
    with pytest.raises(DryRunError, match=r"01_a.ipynb: the cells from '## Later' on, which the dry run "
                                          r"skips, read \['channels'\], which no cell before them reads"):
        dry_notebook(tmp_path / "01_a.ipynb")
    cells[1].source += "\nwidth = sizes['channels']"  # now a cell that runs reads it too
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "01_a.ipynb")
    notebook, settings = dry_notebook(tmp_path / "01_a.ipynb")
    assert len(notebook.cells) == 2 and settings == ["channels"]


@pytest.fixture
def repo(tmp_path) -> Path:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "model.pt").write_text("published")
    return tmp_path


@pytest.mark.slow
def test_a_dry_run_executes_the_blend_in_the_smoke_profile_and_refuses_to_publish(repo):
    table = "{'smoke': dict(epochs=2, channels=8), 'cpu': dict(epochs=50, channels=16), " \
            "'gpu': dict(epochs=90, channels=64)}[profile]"
    write_notebook(repo, "01_a", f"sizes = {table}\nprint(profile, sizes['epochs'], sizes['channels'])")
    write_notebook(repo, "02_b", f"sizes = {table}\nopen('../checkpoints/model.pt', 'w').write('new')")
    write_notebook(repo, "03_c", "n_samples = {'smoke': 5, 'cpu': 50, 'gpu': 50}[profile]")
    steps = (Step("01_a"), Step("02_b"), Step("03_c"))
    logged = []
    record = run_gpu_dry(repo, steps=steps, only=["01_a", "03_c"], timeout=120, log=logged.append)
    ran = record["notebooks"]["01_a"]
    assert ran["wall_seconds"] > 0 and ran["gpu_settings"] == ["channels"] and ran["stopped_before"] is None
    assert "skipped" in record["notebooks"]["03_c"] and not (repo / "book/_build/gpu-dry/03_c.ipynb").exists()
    assert "03_c: its gpu settings are its smoke settings; the smoke run (make test) covers it" in logged
    executed = nbformat.read(repo / "book/_build/gpu-dry/01_a.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "smoke 2 64\n"
    assert (repo / "book/_build/gpu-dry/pipeline.json").is_file()
    with pytest.raises(SystemExit, match="02_b: its dry run changed published files.*checkpoints/model.pt"):
        run_gpu_dry(repo, steps=steps, only=["02_b"], timeout=120, log=lambda message: None)
