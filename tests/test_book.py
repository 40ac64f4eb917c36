"""The book's Markdown pages: math that Markdown cannot mistake for something else."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "book").rglob("*.md"))


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
