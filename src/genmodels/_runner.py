"""The child process in which :mod:`genmodels.pipeline` runs one notebook: papermill, with nbclient's
stand-in for Output widgets switched off.

``ipywidgets.interactive`` holds an Output widget. nbclient answers such a widget's messages itself,
on the shell channel, while it is waiting on that same channel for the cell's reply, and now and then
the reply is not seen until the cell's time limit has passed (jupyter/nbclient#312): measured on two
cores, 1 of 80 runs of a notebook with one interactive cell waited out its 20 s limit, and one dry run
of the VAE notebook its 600 s. Without the stand-in nothing is sent to the kernel during a cell, and
what a widget's function prints or draws when its cell runs lands in the cell's own outputs instead of
the widget's saved state (the book's widget cells hide their outputs and show a static figure beside).

Usage: python -m genmodels._runner SOURCE TARGET PROFILE CWD TIMEOUT
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import papermill
from papermill import engines
from papermill.clientwrap import PapermillNotebookClient


class NotebookClient(PapermillNotebookClient):
    """papermill's notebook client without nbclient's Output-widget stand-in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.widget_registry = {}  # nbclient fills it in __init__; empty, no widget is answered


def execute(source: str, target: str, profile: str, cwd: str, timeout: int) -> None:
    """papermill.execute_notebook with the ``profile`` parameter and a time limit per cell, through
    :class:`NotebookClient` (the class papermill's nbclient engine builds is swapped for the call)."""
    built = engines.PapermillNotebookClient
    engines.PapermillNotebookClient = NotebookClient
    try:
        papermill.execute_notebook(source, target, parameters={"profile": profile}, cwd=cwd,
                                   progress_bar=False, execution_timeout=int(timeout))
    finally:
        engines.PapermillNotebookClient = built


def _arguments(argv: list[str]) -> tuple[str, str, str, str, int]:
    """SOURCE TARGET PROFILE CWD TIMEOUT, checked: a wrong one stops before a kernel starts."""
    usage = "usage: python -m genmodels._runner SOURCE TARGET PROFILE CWD TIMEOUT"
    if len(argv) != 5:
        raise SystemExit(f"{usage} (got {len(argv)} arguments)")
    source, target, profile, cwd, timeout = argv
    if Path(target).resolve() == Path(source).resolve():
        raise SystemExit(f"{usage}: TARGET is SOURCE ({source}); the executed copy goes elsewhere")
    if profile not in ("smoke", "cpu", "gpu", "auto"):  # genmodels.train.PROFILES, which imports torch
        raise SystemExit(f"{usage}: PROFILE must be smoke, cpu, gpu or auto, got {profile!r}")
    if not timeout.isdigit() or int(timeout) < 1:
        raise SystemExit(f"{usage}: TIMEOUT is a cell's limit in whole seconds, at least 1, got {timeout!r} "
                         "(nbclient reads 0 or less as no limit at all)")
    return source, target, profile, cwd, int(timeout)


if __name__ == "__main__":
    execute(*_arguments(sys.argv[1:]))
    print("peak-kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
