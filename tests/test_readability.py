"""Notebooks a student can read: the training loops fit on one screen beside their algorithm box,
plots are folded away in the book while the algorithms stay open, Markdown reads the same in the book
and in Colab, and the executed copies carry no clutter (object reprs, leftovers of interrupted runs)."""

from __future__ import annotations

import ast
import base64
import io
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_TRAINING_LINES = 25
MAX_LINE = 88  # characters: a code line the book shows at its width without scrolling sideways
# A cell whose first statement makes a figure draws, and only draws: the book folds its input away.
MAKES_FIGURE = re.compile(r"^fig(, [\w()., ]+)? = plt\.(subplots|figure)\(")
MYST_ONLY = re.compile(r"\{(eq|numref|ref|cite(:\w+)?|glue(:\w+)?|doc|term)\}`")


def code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def statements(source: str) -> list[str]:
    return [line for line in source.splitlines() if line.strip() and not line.lstrip().startswith(("#", "%"))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_training_functions_fit_on_one_screen(path):
    for cell in code_cells(path):
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue  # IPython magics: no training function there
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("train"):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_TRAINING_LINES, (
                    f"{path.stem}: {node.name} is {length} lines; move its bookkeeping (resuming, saving, "
                    f"logging) into genmodels.train or a helper so the algorithm fits in {MAX_TRAINING_LINES}"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_line_scrolls_sideways(path):
    executed = ROOT / "book" / "notebooks" / path.name
    for notebook in (path, executed):
        for cell in code_cells(notebook):
            long = [line for line in cell.source.splitlines() if len(line) > MAX_LINE]
            assert not long, (
                f"{notebook.relative_to(ROOT)}: {len(long)} code line(s) over {MAX_LINE} characters, "
                f"e.g. {long[0]!r}; wrap them (ruff format notebooks/ uses this width), then bring "
                "the executed copy along with `python -m genmodels.pipeline --refresh-markdown`"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_plotting_cells_are_folded_and_algorithm_cells_stay_open(path):
    for cell in code_cells(path):
        lines = statements(cell.source)
        hidden = "hide-input" in cell.metadata.get("tags", [])
        defines = any(re.match(r"\s*(def|class) ", line) for line in lines)
        checks = any(re.match(r"\s*assert ", line) for line in lines)
        if hidden:
            assert not defines and not re.search(r"\btrain_\w+\(", cell.source), (
                f"{path.stem}: a cell that defines or trains something is hidden:\n{cell.source[:200]}")
        elif lines and MAKES_FIGURE.match(lines[0]) and not defines and not checks:
            pytest.fail(f"{path.stem}: a plotting cell is shown in full; tag it hide-input:\n"
                        f"{cell.source[:200]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_reads_the_same_in_colab(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            found = MYST_ONLY.search(cell.source)
            assert not found, (f"{path.stem}: the MyST role {found.group(0)} shows as raw text in Colab and "
                               "Jupyter; write the formula or link to the chapter instead")


CLUTTER = re.compile(r"^(<(Axes|Figure|matplotlib)[^>]*>|Text\(\d|\[<matplotlib)|resuming .* after",
                     re.MULTILINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_executed_copy_carries_no_clutter(path):
    executed = ROOT / "book" / "notebooks" / path.name
    for cell in code_cells(executed):
        for output in cell.get("outputs", []):
            if output.output_type not in ("stream", "execute_result"):
                continue  # a displayed figure carries its repr beside the image; the book shows the image
            text = output.get("text", "") or output.get("data", {}).get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            found = CLUTTER.search(text)
            assert not found, (f"{path.stem}: an executed cell prints {found.group(0)!r}: end the cell "
                               "with a statement that returns nothing, or assign the value")


# Image grids drawn by genmodels.plotting.show_images separate their cells with padding of one grey
# (torchvision's pad value 0.3, drawn with the reversed grey map: 179 of 255).
GRID_GREY = 179
# The width a full-width figure is shown at in the book, in CSS pixels, in a 1280-pixel-wide window
# (measured in Chromium on the results page), and the smallest width a digit may be shown at in it:
# two thirds of MNIST's 28 pixels, rounded up.
BOOK_COLUMN, MIN_CELL_PIXELS = 676, 19


def grid_pitch(image: np.ndarray) -> float | None:
    """The spacing in pixels of an image grid's cells in a greyscale figure, or None without one:
    the padding forms long lines of its grey, equally spaced, and square cells space them alike
    across and down."""
    grey = np.abs(image.astype(int) - GRID_GREY) <= 1
    pitches = []
    for axis in (0, 1):
        counts = grey.sum(axis=axis)
        lines = np.flatnonzero(counts >= max(20, counts.max() / 2))
        if len(lines) == 0:
            return None
        centres = [run.mean() for run in np.split(lines, np.flatnonzero(np.diff(lines) > 1) + 1)]
        gaps = np.diff(centres)
        gaps = gaps[gaps > 3]
        if len(gaps) < 2:
            return None
        pitches.append(float(np.median(gaps)))
    return min(pitches) if abs(pitches[0] - pitches[1]) <= 0.05 * max(pitches) else None


def png_outputs(path: Path):
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                data = base64.b64decode(output["data"]["image/png"])
                yield index, np.asarray(Image.open(io.BytesIO(data)).convert("L"))


def test_grid_pitch_finds_the_cells_of_an_image_grid_and_nothing_in_a_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from genmodels.plotting import show_images

    fig, ax = plt.subplots(figsize=(4.8, 2.4))
    show_images(torch.rand(32, 1, 28, 28), nrow=8, ax=ax)
    fig.subplots_adjust(0, 0, 1, 1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    image = np.asarray(Image.open(buffer).convert("L"))
    # 8 cells of 28 + 2 pixels of padding (and 2 more at the edge) fill 480 pixels of figure width
    assert grid_pitch(image) == pytest.approx(480 * 30 / (8 * 30 + 2), rel=0.03)
    fig, ax = plt.subplots(figsize=(4.8, 2.4))
    ax.plot(np.arange(10), np.arange(10) ** 2, color="0.7")
    ax.grid(True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    assert grid_pitch(np.asarray(Image.open(buffer).convert("L"))) is None
    plt.close("all")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_published_image_grid_shows_digits_large_enough_to_read(path):
    executed = ROOT / "book" / "notebooks" / path.name
    for index, image in png_outputs(executed):
        pitch = grid_pitch(image)
        if pitch is None:
            continue
        shown = pitch * min(1.0, BOOK_COLUMN / image.shape[1])  # a wide figure is scaled down
        assert shown >= MIN_CELL_PIXELS, (
            f"{path.stem}, cell {index}: its image grid's cells are {shown:.0f} pixels wide in the "
            f"book's {BOOK_COLUMN}-pixel column (at least {MIN_CELL_PIXELS}); give the figure fewer "
            "columns of images or more height, not more width"
        )
