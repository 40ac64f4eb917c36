"""Fault injection: interrupted writes and corrupted bytes end in a clear error or a correct result,
and no valid file is ever deleted or replaced by a worse one.

(Raw MNIST files, a read-only data directory and a missing data source are in test_data.py.)
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from genmodels import pipeline, train
from genmodels.train import (
    CheckpointError,
    ChecksumError,
    finish_interrupted_writes,
    load_checkpoint,
    publish_checkpoint,
    read_checkpoint,
    save_checkpoint,
    write_json,
)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def published(tmp_path) -> Path:
    """A folder with two published checkpoints, their records and SHA256SUMS."""
    torch.manual_seed(0)
    for name in ("a", "b"):
        publish_checkpoint(tmp_path / f"{name}.pt", nn.Linear(32, 32), config={"width": 32},
                           record={"profile": "cpu"}, step=1)
    return tmp_path


def interrupt_rename(monkeypatch, number: int) -> None:
    """Make the ``number``-th os.replace raise KeyboardInterrupt (Ctrl-C, or the machine going away)."""
    real_replace, calls = os.replace, []

    def replace(source, destination):
        if Path(destination).name.startswith(train.JOURNAL):
            return real_replace(source, destination)  # the note of what is to come, not one of the files
        calls.append(destination)
        if len(calls) == number:
            raise KeyboardInterrupt
        real_replace(source, destination)

    monkeypatch.setattr(train.os, "replace", replace)


def republish(folder: Path) -> None:
    publish_checkpoint(folder / "a.pt", nn.Linear(32, 32), config={"width": 32}, record={"profile": "gpu"},
                       step=2)


@pytest.mark.parametrize("failing_rename", [1, 2, 3])
def test_publishing_interrupted_at_any_rename_leaves_every_file_as_it_was(published, monkeypatch,
                                                                          failing_rename):
    before = snapshot(published)
    interrupt_rename(monkeypatch, failing_rename)
    with pytest.raises(KeyboardInterrupt):
        republish(published)
    monkeypatch.undo()
    assert snapshot(published) == before  # the old .pt, .json and SHA256SUMS, and nothing else
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))  # still verified and loadable


@pytest.mark.parametrize("failing_write", [1, 2, 3])
def test_publishing_interrupted_while_writing_any_file_leaves_every_file_as_it_was(published, monkeypatch,
                                                                                   failing_write):
    before = snapshot(published)
    real_stage, calls = train._stage, []

    def stage(final, write):
        calls.append(final)
        if len(calls) == failing_write:
            def dies_halfway(f):
                f.write(b"half a file")
                raise OSError("no space left on device")
            return real_stage(final, dies_halfway)
        return real_stage(final, write)

    monkeypatch.setattr(train, "_stage", stage)
    with pytest.raises(OSError, match="no space left"):
        republish(published)
    monkeypatch.undo()
    assert snapshot(published) == before


def test_a_first_publication_interrupted_leaves_nothing_behind(tmp_path, monkeypatch):
    interrupt_rename(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        publish_checkpoint(tmp_path / "new.pt", nn.Linear(2, 2), config={}, record={})
    assert list(tmp_path.iterdir()) == []  # what did not exist before does not exist now


def test_json_results_interrupted_keep_the_old_file(tmp_path, monkeypatch):
    path = write_json(tmp_path / "metrics.json", {"fid": 1.0})
    monkeypatch.setattr(train.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        write_json(path, {"fid": 2.0})
    assert json.loads(path.read_text()) == {"fid": 1.0} and len(list(tmp_path.iterdir())) == 1


KILL_AT_RENAME = """
import os, signal, sys
from pathlib import Path
from genmodels import train
real_replace, calls = os.replace, []

def replace(source, destination):  # SIGKILL: no handler, no finally, nothing of Python runs after it
    if not Path(destination).name.startswith(train.JOURNAL):
        calls.append(destination)
        if len(calls) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, destination)

os.replace = replace
"""


def killed_at_rename(number: int, code: str, *args: str) -> None:
    """Run ``code`` in a child process that is SIGKILLed just before its ``number``-th data rename."""
    script = KILL_AT_RENAME + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script, str(number), *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr


@pytest.mark.parametrize("killed_before_rename", [1, 2, 3])
def test_a_publication_killed_between_renames_is_completed_by_the_next_read(published, tmp_path_factory,
                                                                            killed_before_rename):
    """Power loss or SIGKILL between the renames of the .pt, the .json and SHA256SUMS: the next load
    finds the journal, completes the set, and gets the new checkpoint, verified."""
    weights = tmp_path_factory.mktemp("expected") / "weights.pt"
    killed_at_rename(killed_before_rename, """
        import torch
        from torch import nn
        torch.manual_seed(7)
        model = nn.Linear(32, 32)
        torch.save(model.state_dict(), sys.argv[3])
        train.publish_checkpoint(Path(sys.argv[2]) / "a.pt", model, config={"width": 32},
                                 record={"profile": "gpu"}, step=2)
    """, str(published), str(weights))
    journals = list(published.glob(f"{train.JOURNAL}.*.json"))
    assert len(journals) == 1  # the set is half written, and says so
    fresh = nn.Linear(32, 32)
    load_checkpoint(published / "a.pt", fresh)  # completes the set, then verifies it
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in torch.load(weights).items())
    assert json.loads((published / "a.json").read_text())["profile"] == "gpu"
    assert sorted(p.name for p in published.iterdir()) == ["SHA256SUMS", "a.json", "a.pt", "b.json", "b.pt"]
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=published, capture_output=True)
    assert check.returncode == 0, check.stdout
    load_checkpoint(published / "b.pt", nn.Linear(32, 32))  # the other checkpoint is untouched


def test_a_set_across_two_folders_is_completed_from_either(tmp_path):
    """The pipeline writes an executed copy and its manifest together: reading the manifest after a
    kill between the two renames completes both, and removes the journal in the other folder too."""
    notebooks, results = tmp_path / "book" / "notebooks", tmp_path / "results"
    train.write_together({notebooks / "01.ipynb": b"old copy", results / "pipeline.json": b"{}"})
    killed_at_rename(2, """
        train.write_together({Path(sys.argv[2]) / "01.ipynb": b"new copy",
                              Path(sys.argv[3]) / "pipeline.json": b'{"notebooks": {}}'})
    """, str(notebooks), str(results))
    assert (notebooks / "01.ipynb").read_bytes() == b"new copy"
    assert (results / "pipeline.json").read_bytes() == b"{}"  # half old, half new
    assert pipeline._read_manifest(results / "pipeline.json") == {"notebooks": {}}
    assert [p.name for p in notebooks.iterdir()] == ["01.ipynb"]
    assert [p.name for p in results.iterdir()] == ["pipeline.json"]


def test_the_journal_of_a_running_process_is_left_alone(tmp_path):
    train.write_together({tmp_path / "x": b"old", tmp_path / "y": b"old"})
    (tmp_path / ".x.tmp").write_bytes(b"new")
    journal = tmp_path / f"{train.JOURNAL}.{os.getpid()}.json"  # this process: still writing
    journal.write_text(json.dumps({"renames": [[".x.tmp", "x", ".x.previous"]],
                                   "journals": [journal.name]}))
    assert finish_interrupted_writes(tmp_path) == []
    assert (tmp_path / "x").read_bytes() == b"old" and journal.exists()


def test_an_unreadable_journal_is_a_clear_error_that_changes_nothing(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    write_json(tmp_path / "metrics.json", {"fid": 1.0})
    journal = tmp_path / f"{train.JOURNAL}.{dead}.json"
    journal.write_text('{"renames": [')
    with pytest.raises(CheckpointError, match=f"{train.JOURNAL}.{dead}.json.*unreadable.*remove"):
        write_json(tmp_path / "metrics.json", {"fid": 2.0})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"fid": 1.0} and journal.exists()


def flip_byte(path: Path, position: int) -> None:
    content = bytearray(path.read_bytes())
    content[position % len(content)] ^= 0x01
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_a_flipped_byte_anywhere_in_a_published_checkpoint_is_caught(published, fraction):
    path = published / "a.pt"
    flip_byte(path, int(fraction * path.stat().st_size))
    with pytest.raises(ChecksumError, match="does not match its published checksum"):
        load_checkpoint(path, nn.Linear(32, 32))


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_a_flipped_byte_anywhere_in_a_run_state_gives_an_error_or_the_same_weights(tmp_path, fraction):
    torch.manual_seed(0)
    model = nn.Linear(32, 32)
    path = save_checkpoint(tmp_path / "state.pt", model, optimizer=torch.optim.SGD(model.parameters(), 0.1))
    flip_byte(path, int(fraction * path.stat().st_size))
    fresh = nn.Linear(32, 32)
    try:
        load_checkpoint(path, fresh)
    except CheckpointError as error:
        assert str(path) in str(error)
    else:  # a byte the reader never uses (zip padding, say): what loaded must be exactly right
        assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    assert path.exists()


def test_a_damaged_record_or_checksum_list_is_caught(published):
    record = published / "a.json"
    flip_byte(record, record.read_text().index('"sha256"') + 12)  # one hex digit of the hash
    with pytest.raises(ChecksumError, match="a.json says sha256"):
        read_checkpoint(published / "a.pt")
    record.write_text(record.read_text()[:-10])  # truncated JSON
    with pytest.raises(ChecksumError, match="not valid JSON"):
        read_checkpoint(published / "a.pt")

    sums = published / "SHA256SUMS"
    lines = sums.read_text().splitlines()
    digit = lines[1][5]
    lines[1] = lines[1][:5] + ("0" if digit != "0" else "1") + lines[1][6:]  # b.pt's hash, one digit off
    sums.write_text("\n".join(lines) + "\n")
    with pytest.raises(ChecksumError, match="SHA256SUMS says sha256"):
        read_checkpoint(published / "b.pt")
    sums.write_text(sums.read_text().replace("  ", "", 1))
    with pytest.raises(CheckpointError, match="line 1, is not '<sha256>  <file name>'"):
        read_checkpoint(published / "b.pt")
