"""Every lecture erratum that ../shared/DESIGN.md lists is corrected on a chapter page, in a warning box
titled "Erratum: ...", and demonstrated in a notebook by a cell that computes the difference.

ERRATA below pairs each listed erratum with its box and its demonstrating cell. An erratum whose
demonstration is still to be written is listed in PENDING with what it needs: its test fails (strict
xfail) until the demonstration lands, and then the entry must leave PENDING."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "book" / "chapters"
NOTEBOOKS = ROOT / "notebooks"
DESIGN = ROOT.parent / "shared" / "DESIGN.md"

# (words of the DESIGN.md item, chapter page, words of the box title, notebook, text of the cell)
ERRATA = {
    "mle-direction": ("MLE minimizes KL(p* || p_theta)", "likelihood_and_elbo",
                      "maximum likelihood minimizes", "01_data", "def reverse_kl_fit("),
    "bce-grey": ("BCE on grey pixels is not a likelihood", "vae", "binary cross-entropy is a likelihood",
                 "02_vae", "perfect = -bernoulli_log_prob(grey"),
    "w1-not-w2": ("Kantorovich-Rubinstein duality holds for W1", "wgan", "$W_1$, not $W_2$",
                  "03_wgan", "optimal_transport(s * x10, s * y10, p=2)"),
    "forward-step": ("Forward process is N(x_t; sqrt(1 - beta_t) x_{t-1}", "ddpm",
                     "the forward step starts from", "04_ddpm",
                     "(1 - linear.beta[step]).sqrt() * chain"),
    "alpha-bar": ("alpha_bar, not alpha", "ddpm", r"$\bar\alpha_t$, not $\alpha_t$", "04_ddpm",
                  "lecture's alpha_t"),
    "langevin-sign": ("(plus, not minus)", "langevin", "Langevin climbs the log-density", "05_langevin",
                      "wrong_way = lambda x: -target.score(x)"),
    "encoder-input": ('"Encoder_phi(alpha)" means Encoder_phi(x)', "vae",
                      "the encoder reads $x$", "02_vae", "z_q = reparameterize(mu_q, log_sigma_q"),
    "bound-expectation": ("expectation is over q(x_0)", "ddpm", "the bound averages over the data",
                          "04_ddpm", "[nll_bits_per_dim(chunk, \"beta_tilde\") for chunk in own_x"),
    "dsm-noised-score": ("learns the score of the *noised* data", "langevin",
                         "learns the score of the noised data", "05_langevin",
                         "score_from_eps("),
    "n-critic": ("runs n_critic + 1 times", "wgan", "takes $n_\\text{critic}$ steps", "03_wgan",
                 "len(range(0, n_critic + 1))"),
    "stationary": ("Stationary distribution of this SDE", "langevin",
                   "the SDE's stationary distribution is $p$", "05_langevin", "mala"),
}
PENDING: dict[str, str] = {}  # name: what its demonstration still needs (none today)


def design_items() -> list[str]:
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## Errata in the lecture", 1)[1].split("\n## ", 1)[0]
    items, current = [], None
    for line in section.splitlines()[1:]:
        if line.startswith("- "):
            current = line[2:]
            items.append(current)
        elif line.startswith("  ") and current is not None:
            items[-1] += " " + line.strip()
    return items


@pytest.mark.skipif(not DESIGN.exists(), reason=f"{DESIGN} is not part of this checkout")
def test_every_erratum_of_the_design_is_registered_once():
    items = design_items()
    assert len(items) == len(ERRATA), f"DESIGN.md lists {len(items)} errata, the registry {len(ERRATA)}"
    for name, (words, *_rest) in ERRATA.items():
        matches = [item for item in items if words in item]
        assert len(matches) == 1, f"{name}: {words!r} matches {len(matches)} DESIGN.md items"


def boxes(page: str) -> list[str]:
    text = (CHAPTERS / f"{page}.md").read_text(encoding="utf-8")
    return re.findall(r"^:::\{admonition\} Erratum: (.+)\n:class: warning$", text, flags=re.MULTILINE)


@pytest.mark.parametrize("name", sorted(ERRATA))
def test_the_erratum_has_a_titled_warning_box(name):
    _words, page, title, _notebook, _cell = ERRATA[name]
    assert any(title in box for box in boxes(page)), f"{page}.md has no 'Erratum: ...{title}...' box"


def test_every_erratum_box_is_titled():
    for page in CHAPTERS.glob("*.md"):
        untitled = re.findall(r"^:::\{admonition\} Erratum\s*$", page.read_text(encoding="utf-8"),
                              flags=re.MULTILINE)
        assert not untitled, f"{page.name}: an erratum box without a title saying what is corrected"


def code_cells(notebook: str) -> list[str]:
    text = (NOTEBOOKS / f"{notebook}.py").read_text(encoding="utf-8")
    cells = re.split(r"^# %%.*$", text, flags=re.MULTILINE)
    headers = re.findall(r"^# %%.*$", text, flags=re.MULTILINE)
    return [cell for header, cell in zip(headers, cells[1:], strict=True) if "[markdown]" not in header]


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=PENDING[name]))
    if name in PENDING else name for name in sorted(ERRATA)])
def test_the_erratum_is_demonstrated_by_a_notebook_cell(name):
    _words, _page, _title, notebook, cell = ERRATA[name]
    assert any(cell in code for code in code_cells(notebook)), f"{notebook} has no cell with {cell!r}"
