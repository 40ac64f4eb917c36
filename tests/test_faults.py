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
import time
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
real_replace, calls = os.replace, {"data": 0, "journal": 0}

def replace(source, destination):  # SIGKILL: no handler, no finally, nothing of Python runs after it
    kind = "journal" if Path(destination).name.startswith(train.JOURNAL) else "data"
    calls[kind] += 1
    if (kind, calls[kind]) == (sys.argv[1], int(sys.argv[2])):
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, destination)

os.replace = replace
"""


def killed_at_rename(number: int, code: str, *args: str, kind: str = "data") -> None:
    """Run ``code`` in a child process that is SIGKILLed just before its ``number``-th rename of a
    file of the set (``kind="data"``) or of a journal (``kind="journal"``)."""
    script = KILL_AT_RENAME + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script, kind, str(number), *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr


def journals_and_leftovers(*folders: Path) -> list[str]:
    return [p.name for folder in folders for p in folder.iterdir() if p.name.startswith(".")]


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
        torch.save(model.state_dict(), sys.argv[4])
        train.publish_checkpoint(Path(sys.argv[3]) / "a.pt", model, config={"width": 32},
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
        train.write_together({Path(sys.argv[3]) / "01.ipynb": b"new copy",
                              Path(sys.argv[4]) / "pipeline.json": b'{"notebooks": {}}'})
    """, str(notebooks), str(results))
    assert (notebooks / "01.ipynb").read_bytes() == b"new copy"
    assert (results / "pipeline.json").read_bytes() == b"{}"  # half old, half new
    finish_interrupted_writes(results)  # as the pipeline does, under its lock, before reading
    assert pipeline._read_manifest(results / "pipeline.json") == {"notebooks": {}}
    assert [p.name for p in notebooks.iterdir()] == ["01.ipynb"]
    assert [p.name for p in results.iterdir()] == ["pipeline.json"]


def test_a_set_whose_journals_were_not_all_written_is_undone_and_later_writes_survive(tmp_path):
    """Killed between writing its first and second journal, no rename had begun: the set is undone,
    also after a newer write in the folder that had no journal."""
    first, second = tmp_path / "book", tmp_path / "results"
    train.write_together({first / "01.ipynb": b"v1", second / "pipeline.json": b"v1"})
    killed_at_rename(2, """
        train.write_together({Path(sys.argv[3]) / "01.ipynb": b"v2",
                              Path(sys.argv[4]) / "pipeline.json": b"v2"})
    """, str(first), str(second), kind="journal")
    write_json(second / "pipeline.json", "v3")  # its folder has no journal: nothing to finish there
    train.write_together({first / "01.ipynb": b"v3"})  # finds the other journal first, and undoes it
    assert (first / "01.ipynb").read_bytes() == b"v3"
    assert json.loads((second / "pipeline.json").read_text()) == "v3"
    (half_written,) = journals_and_leftovers(first, second)  # the journal it died writing: it may
    assert half_written.startswith(f".{train.JOURNAL}.")  # be another machine's, so it waits to age


def test_a_set_killed_while_being_undone_is_undone(published, tmp_path_factory):
    """A rename fails (a full disk, say), the process starts restoring the old files and is killed:
    the next read restores the rest, rather than completing the new set."""
    before = snapshot(published)
    killed_at_rename(1, """
        import torch
        from torch import nn
        real = os.replace
        def fail_third(source, destination):  # the third file of the set cannot be renamed
            if str(destination).endswith("SHA256SUMS") and not str(source).endswith(".previous"):
                raise OSError("no space left on device")
            if str(source).endswith(".previous"):  # restoring the old files: the process dies here
                os.kill(os.getpid(), signal.SIGKILL)
            real(source, destination)
        os.replace = fail_third
        train.publish_checkpoint(Path(sys.argv[3]) / "a.pt", nn.Linear(32, 32), config={"width": 32},
                                 record={"profile": "gpu"}, step=2)
    """, str(published), kind="never")
    assert snapshot(published) != before  # a.pt and a.json are new, SHA256SUMS old
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))
    assert snapshot(published) == before


def test_an_error_while_writing_the_journals_leaves_everything_as_it_was(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    train.write_together({first / "x": b"old", second / "y": b"old"})
    real_replace = os.replace

    def no_room_for_the_second_journal(source, destination):
        if Path(destination).parent == second and Path(destination).name.startswith(train.JOURNAL):
            raise OSError("no space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(train.os, "replace", no_room_for_the_second_journal)
    with pytest.raises(OSError, match="no space left"):
        train.write_together({first / "x": b"new", second / "y": b"new"})
    monkeypatch.undo()
    assert (first / "x").read_bytes() == b"old" and (second / "y").read_bytes() == b"old"
    assert journals_and_leftovers(first, second) == []


def test_the_journal_of_a_live_writer_is_waited_for_not_finished(tmp_path, monkeypatch):
    train.write_together({tmp_path / "x": b"old", tmp_path / "y": b"old"})
    staged = [(train._stage(tmp_path / name, lambda f: f.write(b"new")), tmp_path / name) for name in "xy"]
    journal = train._Journal(staged)
    journal.write()  # holds its lock, as a writer between its renames does
    monkeypatch.setattr(train, "PATIENCE", 0.3)
    with pytest.raises(CheckpointError, match="another process has been replacing the files"):
        finish_interrupted_writes(tmp_path)
    assert (tmp_path / "x").read_bytes() == b"old"  # nothing was finished under the writer's feet
    journal.remove()
    for temporary, _ in staged:
        temporary.unlink()
    assert finish_interrupted_writes(tmp_path) == [] and journals_and_leftovers(tmp_path) == []


def test_without_file_locks_the_process_id_tells_a_live_writer(published, monkeypatch):
    """Where fcntl is missing (Windows), a journal whose process runs is left alone, another finished."""
    killed_at_rename(2, """
        from torch import nn
        train.publish_checkpoint(Path(sys.argv[3]) / "a.pt", nn.Linear(32, 32), config={"width": 32},
                                 record={"profile": "gpu"}, step=2)
    """, str(published))
    monkeypatch.setattr(train, "fcntl", None)
    (dead,) = published.glob(f"{train.JOURNAL}.*.json")
    alive = dead.with_name(f"{train.JOURNAL}.{os.getpid()}-{dead.name.split('-')[-1]}")
    dead.rename(alive)  # as if this process had written it
    assert finish_interrupted_writes(published) == [] and alive.exists()
    alive.rename(dead)
    assert finish_interrupted_writes(published) == [published / "a.json", published / "SHA256SUMS"]
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))


def test_a_link_in_the_set_is_replaced_as_a_rename_replaces_it(tmp_path):
    """The journal names the link, not its target: finishing the set replaces the link, as the
    rename would have, and leaves the file it pointed to alone."""
    folder, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target").write_bytes(b"not ours")
    train.write_together({folder / "y": b"old"})
    (folder / "x").symlink_to(elsewhere / "target")
    killed_at_rename(2, """
        train.write_together({Path(sys.argv[3]) / "y": b"new", Path(sys.argv[3]) / "x": b"new"})
    """, str(folder))  # killed before the link's rename
    finish_interrupted_writes(folder)
    assert not (folder / "x").is_symlink() and (folder / "x").read_bytes() == b"new"
    assert (folder / "y").read_bytes() == b"new" and (elsewhere / "target").read_bytes() == b"not ours"


def test_a_set_left_in_a_protected_folder_is_a_clear_error_that_changes_nothing(published, monkeypatch):
    killed_at_rename(2, """
        from torch import nn
        train.publish_checkpoint(Path(sys.argv[3]) / "a.pt", nn.Linear(32, 32), config={"width": 32},
                                 record={"profile": "gpu"}, step=2)
    """, str(published))
    before = snapshot(published)
    monkeypatch.setenv(train.PROTECTED, str(published))  # as under the test suite and gpu-dry
    with pytest.raises(CheckpointError, match=r"left an unfinished set in .*make results"):
        load_checkpoint(published / "a.pt", nn.Linear(32, 32))
    assert snapshot(published) == before
    monkeypatch.delenv(train.PROTECTED)
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))  # finished where writing is allowed


class Stopped(Exception):
    pass


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_the_renames_waits_for_the_set_to_be_whole(published, monkeypatch, number):
    """Ctrl-C, a `kill` or a closed terminal (the pipeline turns the last two into an interrupt) stop
    the run only once the three files are renamed."""
    real_replace, calls = os.replace, []

    def signal_at_the_second(source, destination):
        if not Path(destination).name.startswith(train.JOURNAL):
            calls.append(destination)
            if len(calls) == 2:
                os.kill(os.getpid(), number)
        real_replace(source, destination)

    def stop(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(number, stop)
    try:
        monkeypatch.setattr(train.os, "replace", signal_at_the_second)
        with pytest.raises(Stopped):
            republish(published)
    finally:
        signal.signal(number, previous)
    monkeypatch.undo()
    assert len(calls) == 3  # all three renamed, then the signal
    assert read_checkpoint(published / "a.pt")["extra"]["record"]["profile"] == "gpu"


def test_a_checkpoint_killed_while_being_staged_leaves_no_temporary_behind(published):
    """Killed while writing the new weights (the longest step), before any journal: the old set is
    whole, and the half-written temporary of the dead process goes with the next read."""
    before = snapshot(published)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from torch import nn
        from genmodels import train
        def dies(f):
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        real = train._stage
        train._stage = lambda final, write: real(final, dies)
        train.publish_checkpoint(Path(sys.argv[1]) / "a.pt", nn.Linear(32, 32), config={}, record={})
    """), str(published)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (left,) = [p for p in published.iterdir() if p.name not in before]
    assert left.name.startswith(f".a.pt.{train.STAGED}") and left.read_bytes() == b"half a checkpoint"
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))  # the old one, verified
    assert left.exists()  # a writer takes seconds, but this one may still be running elsewhere
    hours_ago = time.time() - 2 * train.ABANDONED
    os.utime(left, (hours_ago, hours_ago))  # abandoned
    ours = train._stage(published / "c.pt", lambda f: f.write(b"staged by this live process"))
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))
    assert sorted(p.name for p in published.iterdir()) == sorted([*before, ours.name])  # ours is kept
    ours.unlink()


def fail_renames(monkeypatch, *, data: int, restore: bool = False) -> None:
    """os.replace raises OSError at the ``data``-th rename of a file of the set, and (``restore``)
    when a backup is renamed back."""
    real_replace, calls = os.replace, []

    def replace(source, destination):
        if str(source).endswith(".previous"):
            if restore:
                raise OSError("input/output error")
        elif not Path(destination).name.startswith(train.JOURNAL):
            calls.append(destination)
            if len(calls) == data:
                raise OSError("no space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(train.os, "replace", replace)


def three_files(folder: Path, content: bytes) -> dict[Path, bytes]:
    return {folder / name: content for name in ("x", "y", "z")}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_a_set_that_cannot_be_marked_as_undone_is_left_whole_for_recovery(tmp_path, monkeypatch):
    """The third rename fails, and so does writing the marks that say the set is being undone: then
    nothing is restored (a kill halfway would leave a mix no journal explains); the journal stays, and
    recovery completes the set."""
    train.write_together(three_files(tmp_path, b"old"))
    fail_renames(monkeypatch, data=3)
    monkeypatch.setattr(train._Journal, "turn_back", lambda self: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError, match="no space left"):
        train.write_together(three_files(tmp_path, b"new"))
    monkeypatch.undo()
    assert contents(tmp_path) == {"x": b"new", "y": b"new", "z": b"old"}  # as left, journaled
    assert len(list(tmp_path.glob(f"{train.JOURNAL}.*.json"))) == 1
    finish_interrupted_writes(tmp_path)
    assert contents(tmp_path) == {"x": b"new", "y": b"new", "z": b"new"}
    assert journals_and_leftovers(tmp_path) == []


def test_a_set_whose_old_files_cannot_be_restored_keeps_its_journal_and_marks(tmp_path, monkeypatch):
    train.write_together(three_files(tmp_path, b"old"))
    fail_renames(monkeypatch, data=3, restore=True)
    with pytest.raises(OSError, match="no space left"):
        train.write_together(three_files(tmp_path, b"new"))
    monkeypatch.undo()
    assert len(list(tmp_path.glob(f"{train.JOURNAL}.*.back"))) == 1  # being undone, and still to undo
    finish_interrupted_writes(tmp_path)
    assert contents(tmp_path) == {"x": b"old", "y": b"old", "z": b"old"}
    assert journals_and_leftovers(tmp_path) == []


def test_one_file_alone_is_replaced_without_a_backup_to_leave_behind(tmp_path):
    write_json(tmp_path / "metrics.json", {"fid": 1.0})
    killed_at_rename(1, """
        train.write_json(Path(sys.argv[3]) / "metrics.json", {"fid": 2.0})
    """, str(tmp_path))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".metrics.json.staged")] == [
        "metrics.json"]  # no .previous: a single rename happens or does not


def test_two_recoveries_of_one_set_do_not_trip_over_each_other(tmp_path, monkeypatch):
    """Two readers in the set's two folders finish it at once: what the other did first is skipped."""
    first, second = tmp_path / "book", tmp_path / "results"
    train.write_together({first / "a": b"old", second / "b": b"old"})
    killed_at_rename(1, """
        train.write_together({Path(sys.argv[3]) / "a": b"new", Path(sys.argv[4]) / "b": b"new"})
    """, str(first), str(second))
    real_replace = os.replace

    def the_other_reader_is_faster(source, destination):
        real_replace(source, destination)  # done by the other recovery, just before this one
        real_replace(source, destination)  # FileNotFoundError

    monkeypatch.setattr(train.os, "replace", the_other_reader_is_faster)
    finish_interrupted_writes(second)
    monkeypatch.undo()
    assert (first / "a").read_bytes() == b"new" and (second / "b").read_bytes() == b"new"
    assert journals_and_leftovers(first, second) == []


def test_reading_a_protected_folder_removes_nothing(published, monkeypatch):
    """The test suite and gpu-dry fingerprint the published folders: a read there deletes no leftover."""
    mark = published / f"{train.JOURNAL}.1-abc.back"
    mark.write_bytes(b"")
    stale = published / f".a.pt.{train.STAGED}xyz.tmp"
    stale.write_bytes(b"half")
    hours_ago = time.time() - 2 * train.ABANDONED
    os.utime(stale, (hours_ago, hours_ago))
    monkeypatch.setenv(train.PROTECTED, str(published))
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))
    assert mark.exists() and stale.exists()
    monkeypatch.delenv(train.PROTECTED)
    load_checkpoint(published / "a.pt", nn.Linear(32, 32))
    assert not mark.exists() and not stale.exists()


def test_two_publishers_in_one_folder_keep_each_others_lines(tmp_path):
    """A notebook run by hand publishes while `make results` does: each reads SHA256SUMS, adds its line
    and writes it back, so without the folder's lock the later writer would drop the other's line."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from torch import nn
        from genmodels import train
        real = train.write_together
        def slow(files):  # SHA256SUMS has been read: let the other publisher try now
            print("read", flush=True)
            time.sleep(1.5)
            real(files)
        train.write_together = slow
        train.publish_checkpoint(Path(sys.argv[1]) / "a.pt", nn.Linear(2, 2), config={}, record={})
    """), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "read"
    publish_checkpoint(tmp_path / "b.pt", nn.Linear(2, 2), config={}, record={})  # waits for the lock
    assert child.wait(timeout=120) == 0
    assert sorted(train.read_sha256sums(tmp_path / "SHA256SUMS")) == ["a.pt", "b.pt"]
    for name in ("a.pt", "b.pt"):
        load_checkpoint(tmp_path / name, nn.Linear(2, 2))


def test_an_unreadable_journal_is_a_clear_error_that_changes_nothing(tmp_path):
    write_json(tmp_path / "metrics.json", {"fid": 1.0})
    journal = tmp_path / f"{train.JOURNAL}.1-abc.json"  # nobody holds its lock: its writer is gone
    journal.write_text('{"renames": [')
    with pytest.raises(CheckpointError, match=f"{train.JOURNAL}.1-abc.json.*unreadable.*remove"):
        write_json(tmp_path / "metrics.json", {"fid": 2.0})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"fid": 1.0} and journal.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [journal.name, "metrics.json"]


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
