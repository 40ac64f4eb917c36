"""No number on a chapter page describes a result unless it is glued from an executed notebook.

The prose of every page (outside math, code, included source, exercises and their solutions, and glue
roles) is scanned for numbers with a decimal point or a percent sign, the form results take. Each one
must be listed, with its reason, in tests/allowed_numbers.txt: constants from papers and the lecture,
thresholds the book sets, values a derivation fixes. A measured value typed into the prose goes stale
with the next run; gluing it (`{glue:text}`) keeps it true."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "book" / "chapters").glob("*.md")) + [ROOT / "book" / "intro.md"]
ALLOWED = ROOT / "tests" / "allowed_numbers.txt"
SKIPPED = {"code-cell", "literalinclude", "exercise", "solution", "math", "prf:proof", "prf:algorithm"}
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?:\.\d+)?\s?%)(?!\w)")


def prose(text: str) -> str:
    """The page's running text: fenced blocks of the SKIPPED kinds, plain code fences, math, inline
    code, roles (glue, eq, cite, ...), link targets and directive options removed."""
    kept, closing, open_kept = [], None, []
    for line in text.splitlines():
        if closing is not None:
            if line.strip() == closing:
                closing = None
            continue
        if open_kept and line.strip() == open_kept[-1]:
            open_kept.pop()  # the end of a kept directive
            continue
        fence = re.match(r"^(`{3,}|:{3,})\s*(?:\{([\w:-]+)\})?", line)
        if fence and (fence.group(2) in SKIPPED or (fence.group(2) is None and line.startswith("```"))):
            closing = fence.group(1)
            continue
        if fence:
            open_kept.append(fence.group(1))  # a kept directive (a figure, a note): its body is prose
            continue
        kept.append(line)
    text = "\n".join(kept)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return re.sub(r"^:[\w-]+:.*$", " ", text, flags=re.MULTILINE)


def allowed() -> Counter:
    entries = Counter()
    for line in ALLOWED.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            page, number, reason = re.split(r"\s{2,}", line.strip(), maxsplit=2)
            assert reason, f"{ALLOWED.name}: {line!r} gives no reason"
            entries[(page, number)] += 1
    return entries


def test_prose_drops_math_code_roles_and_exercises():
    text = ("A 1.5 here, $x = 2.5$ there, `3.5` and {glue:text}`nb::k:s`.\n"
            "```{exercise} t\n4.5\n```\n$$\n5.5\n$$\n:::{note}\nkept 6.5\n:::\n"
            "```{glue:figure} k\ncaption 7.5\n```\nafter 8.5\n```python\n9.5\n```\n")
    assert NUMBER.findall(prose(text)) == ["1.5", "6.5", "7.5", "8.5"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_result_number_on_the_page_is_glued_or_allowed(page):
    found = Counter((page.name, re.sub(r"\s+", " ", n)) for n in NUMBER.findall(prose(page.read_text())))
    permitted = allowed()
    extra = {key: count for key, count in found.items() if key[0] == page.name and permitted[key] < 1}
    assert not extra, (
        f"{page.name} types these numbers into its prose: {sorted(n for _, n in extra)}. Glue a measured "
        f"value from its notebook ({{glue:text}}), or, for a constant from a paper, a setting or a "
        f"derived value, list it with its reason in {ALLOWED.name}"
    )


def test_every_allowed_number_is_still_used():
    used = Counter()
    for page in PAGES:
        used.update((page.name, re.sub(r"\s+", " ", n)) for n in NUMBER.findall(prose(page.read_text())))
    stale = [key for key in allowed() if used[key] == 0]
    assert not stale, f"{ALLOWED.name} lists numbers no page carries any more: {stale}"
