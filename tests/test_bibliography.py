"""The bibliography: every {cite} role on a page names an entry of book/references.bib, every entry is
cited somewhere, and every entry says who wrote what, when."""

import json
import re
from pathlib import Path

import pytest
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
BIBFILE = BOOK / "references.bib"

# A MyST cite role, {cite}`k`, {cite:t}`k1,k2` or {footcite}`k`, and its targets. A target may carry pre- and
# post-text in braces, as in {cite:p}`{see}key{Theorem 1}` (sphinxcontrib-bibtex's syntax).
CITE_ROLE = re.compile(r"\{(?:foot)?cite(?::[a-z]+)?\}`([^`]*)`")
NOTE = re.compile(r"\{[^{}]*\}")


def cited_keys(text: str) -> list[str]:
    """The citation keys of every cite role in a Markdown text, in order of appearance."""
    return [key.strip() for targets in CITE_ROLE.findall(text) for key in NOTE.sub("", targets).split(",")]


def book_sources() -> dict[str, str]:
    """Markdown of the book's pages and of its notebooks' Markdown cells, by path; not _build/."""
    sources = {}
    for path in sorted(BOOK.rglob("*.md")):
        if "_build" not in path.relative_to(BOOK).parts:
            sources[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    for path in sorted(BOOK.rglob("*.ipynb")):
        if "_build" not in path.relative_to(BOOK).parts:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            sources[str(path.relative_to(ROOT))] = "\n".join(
                "".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"
            )
    return sources


BIBLIOGRAPHY = parse_file(str(BIBFILE))
CITATIONS = {source: cited_keys(text) for source, text in book_sources().items()}


def test_cited_keys_parses_every_role_form():
    text = (
        "{cite:t}`ho2020denoising` found; {cite:p}`a,b` and {cite}`c` "
        "{cite:p}`{see}d{Theorem 1, part 2}`; {cite:alp}`e`; {footcite:t}`f`; not a role: `g` {eq}`h`"
    )
    assert cited_keys(text) == ["ho2020denoising", "a", "b", "c", "d", "e", "f"]


def test_the_book_cites_something():
    assert any(CITATIONS.values()), "no {cite} role found under book/"


@pytest.mark.parametrize("source", sorted(s for s, keys in CITATIONS.items() if keys))
def test_every_cited_key_is_in_the_bibliography(source):
    missing = sorted(set(CITATIONS[source]) - set(BIBLIOGRAPHY.entries))
    assert not missing, f"{source} cites keys that {BIBFILE.name} lacks: {missing}"


def test_every_entry_is_cited():
    cited = {key for keys in CITATIONS.values() for key in keys}
    uncited = sorted(set(BIBLIOGRAPHY.entries) - cited)
    assert not uncited, f"{BIBFILE.name} has entries no page cites: {uncited}"


@pytest.mark.parametrize("key", sorted(BIBLIOGRAPHY.entries))
def test_entry_has_author_title_and_year(key):
    entry = BIBLIOGRAPHY.entries[key]
    assert entry.persons.get("author"), f"{key} has no author"
    assert entry.fields.get("title", "").strip(), f"{key} has no title"
    assert re.fullmatch(r"(19|20)\d\d", entry.fields.get("year", "")), f"{key} has no four-digit year"
