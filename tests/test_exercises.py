"""The exercises' checked answers: every Python block of a solution runs, and prints the numbers the
solution shows under it (to a relative 1e-3, so that another CPU's last digits do not matter). An
exercise whose answer drifted from genmodels fails here, not in a reader's hands."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["likelihood_and_elbo", "vae", "wgan", "ddpm", "langevin", "evaluation"]
SNIPPET = re.compile(r"```python\n(.*?)```\n\n```text\n(.*?)```", re.S)
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan")


def snippets():
    for chapter in CHAPTERS:
        text = (ROOT / "book" / "chapters" / f"{chapter}.md").read_text()
        for number, (code, expected) in enumerate(SNIPPET.findall(text), start=1):
            yield pytest.param(code, expected, id=f"{chapter}-{number}")


def numbers_and_words(output: str) -> tuple[list[float], str]:
    """The numbers of an output, and the output with each number replaced by '#'."""
    values = [float(token) for token in NUMBER.findall(output)]
    return values, NUMBER.sub("#", output)


@pytest.mark.parametrize(("code", "expected"), list(snippets()))
def test_a_solutions_code_prints_what_the_solution_says(code, expected):
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got_values, got_words = numbers_and_words(done.stdout)
    want_values, want_words = numbers_and_words(expected)
    assert got_words == want_words, f"printed\n{done.stdout}\nthe page shows\n{expected}"
    for got, want in zip(got_values, want_values, strict=True):
        assert got == want or math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-6), (
            f"printed {got}, the page shows {want}:\n{done.stdout}")


def test_there_are_checked_answers_in_every_theory_chapter():
    found = {chapter: 0 for chapter in CHAPTERS}
    for param in snippets():
        found[param.id.rsplit("-", 1)[0]] += 1
    assert all(count >= 1 for count in found.values()), found
