"""The book's Markdown pages: math that Markdown cannot mistake for something else."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p for p in (ROOT / "book").rglob("*.md") if "_build" not in p.parts)


def prose_lines(text: str):
    """(line number, line) of the lines outside display math ($$ ... $$) and fenced blocks."""
    closing = None  # what ends the block we are in
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if closing is None:
            if stripped.startswith("$$"):
                closing = None if stripped.count("$$") > 1 else "$$"
            elif stripped.startswith(("```", ":::")):
                closing = stripped[:3]
            else:
                yield number, line
        elif closing in stripped:
            closing = None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_line_of_inline_math_starts_like_a_list_item(page):
    """A paragraph line that starts with '+ ', '- ' or '* ' followed by math becomes a bullet, and the
    math around it is shown as raw TeX (as happened on the evaluation page)."""
    for number, line in prose_lines(page.read_text()):
        assert not re.match(r"^[+*-] +\\", line), f"{page.name}:{number} starts a list: {line!r}"
        assert not re.match(r"^\+", line), f"{page.name}:{number} starts with '+': {line!r}"


def test_algorithms_are_typeset_one_way():
    """Every algorithm is a {prf:algorithm} (sphinx-proof), not an ASCII block or a quoted list."""
    for page in PAGES:
        text = page.read_text()
        assert not re.search(r"```text\s*\nAlgorithm", text), f"{page.name}: an algorithm in a text block"
        assert not re.search(r"^> \d+\. ", text, re.MULTILINE), f"{page.name}: an algorithm as a quoted list"
    for name, count in (("wgan.md", 1), ("ddpm.md", 2)):
        assert (ROOT / "book" / "chapters" / name).read_text().count("{prf:algorithm}") == count, name


def test_code_shown_beside_an_equation_exists_where_the_page_says():
    """A page includes a function from src/ with literalinclude :pyobject: (never a copy); each named
    function must be defined at the top level of the named file."""
    import ast

    pattern = re.compile(r"```\{literalinclude\} (\S+)\n:pyobject: (\w+)")
    found = 0
    for page in PAGES:
        for path, name in pattern.findall(page.read_text()):
            source = (page.parent / path).resolve()
            assert source.is_file() and ROOT / "src" in source.parents, f"{page.name}: {path}"
            tree = ast.parse(source.read_text())
            names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
            assert name in names, f"{page.name}: {name} is not defined in {path}"
            found += 1
    assert found >= 10


@pytest.mark.parametrize("name", ["likelihood_and_elbo.md", "vae.md", "wgan.md", "ddpm.md", "langevin.md"])
def test_every_theory_chapter_has_exercises_each_with_a_hidden_solution(name):
    text = (ROOT / "book" / "chapters" / name).read_text()
    labels = re.findall(r"````\{exercise\}[^\n]*\n:label: (\S+)", text)
    solutions = re.findall(r"````\{solution\} (\S+)\n:class: dropdown", text)
    assert 5 <= len(labels) <= 8, f"{name}: {len(labels)} exercises"
    assert sorted(labels) == sorted(solutions), f"{name}: exercises without a hidden solution"


@pytest.mark.parametrize("name", ["likelihood_and_elbo.md", "vae.md", "wgan.md", "ddpm.md", "langevin.md"])
def test_every_theory_chapter_shows_glued_figures_with_numbered_captions(name):
    text = (ROOT / "book" / "chapters" / name).read_text()
    figures = re.findall(r"^```\{glue:figure\} (\S+)\n:doc: (\S+)\n:name: (fig-\S+)\n\n(\S.*?)\n```$", text,
                         flags=re.MULTILINE | re.DOTALL)
    assert len(figures) >= 2, f"{name}: {len(figures)} glued figures with a name (numbered) and a caption"
    for key, doc, _label, _caption in figures:
        executed = ROOT / "book" / doc.lstrip("/")
        assert f'"{key}"' in executed.read_text(), f"{name}: {doc} glues no {key!r}"
