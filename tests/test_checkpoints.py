"""Checkpoints are data, never code; published ones are verified; loaders say what went wrong.

Each test reproduces a finding of the reliability review and fails without its fix.
"""

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import genmodels
from genmodels import train
from genmodels.features import ClassifierConfig, MNISTClassifier, load_classifier
from genmodels.train import (
    CheckpointError,
    ChecksumError,
    StaleRunError,
    TrainingRun,
    file_sha256,
    load_checkpoint,
    load_model,
    publish_checkpoint,
    read_checkpoint,
    read_sha256sums,
    resume,
    save_checkpoint,
    scratch_dir,
    verify_published,
)
from genmodels.unet import UNet, UNetConfig, load_unet
from genmodels.vae import VAE, VAEConfig, load_vae
from genmodels.wgan import load_generator

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "checkpoints"


@dataclasses.dataclass
class TinyConfig:
    hidden: int = 8  # width of the hidden layer


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, (config or TinyConfig()).hidden), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def copy_published(name: str, to: Path) -> Path:
    """A copy of a published checkpoint with its record and a SHA256SUMS listing only it."""
    for suffix in (".pt", ".json"):
        shutil.copy(PUBLISHED / f"{name}{suffix}", to / f"{name}{suffix}")
    digest = read_sha256sums(PUBLISHED / "SHA256SUMS")[f"{name}.pt"]
    (to / "SHA256SUMS").write_text(f"{digest}  {name}.pt\n")
    return to / f"{name}.pt"


def tensor_data_offset(path: Path) -> int:
    """Byte offset of the first tensor record's data inside a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        record = next(r for r in archive.infolist() if "/data/" in r.filename and r.file_size > 1024)
    with open(path, "rb") as f:  # the local header: 30 bytes, then the name and the extra field
        f.seek(record.header_offset + 26)
        name_length, extra_length = (int.from_bytes(f.read(2), "little") for _ in range(2))
    return record.header_offset + 30 + name_length + extra_length


# --------------------------------------------------------------------------------------------
# 1. Loading never runs code


@pytest.mark.parametrize("where", ["read_checkpoint", "load_vae", "resume"])
def test_a_checkpoint_carrying_code_is_refused_and_nothing_runs(tmp_path, where):
    marker = tmp_path / "pwned"
    vae = VAE(VAEConfig(hidden_dims=(8,), latent_dim=2))
    path = save_checkpoint(tmp_path / "vae.pt", vae, config=VAEConfig(hidden_dims=(8,), latent_dim=2),
                           extra={"note": Payload(marker)}, run={"lr": 1e-3})
    with pytest.raises(CheckpointError, match="not tensors or plain data.*data, never code") as error:
        if where == "read_checkpoint":
            read_checkpoint(path)
        elif where == "load_vae":
            load_vae(path)
        else:
            resume(path, vae, optimizer=torch.optim.Adam(vae.parameters()), run={"lr": 1e-3})
    assert "system" in str(error.value)  # names what it refused
    assert not marker.exists(), "loading the checkpoint ran its payload"
    assert path.exists()  # and the file is left where it was


def test_new_checkpoints_load_with_the_plain_safe_unpickler(tmp_path):
    """Format 2 holds only tensors and plain data: torch.load(weights_only=True) with no allowlist."""
    model = Tiny()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "tiny.pt", model, optimizer=optimizer, config=TinyConfig(),
                           run={"lr": 1e-3, "widths": (1, 2)})
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["format"] == 2 and checkpoint["run"] == {"lr": 1e-3, "widths": [1, 2]}
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []


def test_every_published_checkpoint_loads_safely_with_its_loader():
    loaders = {"vae-j32": load_vae, "vae-j2": load_vae, "ddpm": functools.partial(load_unet, raw=True),
               "mnist-classifier": load_classifier}
    for name, loader in loaders.items():
        model, checkpoint = loader(PUBLISHED / f"{name}.pt")
        assert not model.training and checkpoint["step"] >= 0
    for variant in ("gp", "clip"):
        generator, _ = load_generator(PUBLISHED / f"wgan-{variant}.pt")
        assert not generator.training
        assert generator(torch.randn(2, generator.config.latent_dim)).shape == (2, 784)


# --------------------------------------------------------------------------------------------
# 2. Published checkpoints are verified


def test_a_damaged_published_checkpoint_is_refused_naming_file_hashes_and_fix(tmp_path):
    path = copy_published("vae-j32", tmp_path)
    expected = file_sha256(path)
    content = bytearray(path.read_bytes())
    start = tensor_data_offset(path) + 4096
    content[start:start + 16] = bytes(b ^ 0x5A for b in content[start:start + 16])
    path.write_bytes(bytes(content))
    with pytest.raises(ChecksumError) as error:
        load_vae(path)
    message = str(error.value)
    assert str(path) in message and expected in message and file_sha256(path) in message
    assert "git checkout -- " in message and "re-run the notebook" in message


def test_the_json_record_is_checked_too(tmp_path):
    path = copy_published("mnist-classifier", tmp_path)
    (tmp_path / "SHA256SUMS").unlink()  # only the record is left to check against
    record = json.loads((tmp_path / "mnist-classifier.json").read_text())
    load_classifier(path)
    (tmp_path / "mnist-classifier.json").write_text(json.dumps({**record, "sha256": "0" * 64}))
    with pytest.raises(ChecksumError, match="mnist-classifier.json says sha256 0000"):
        load_classifier(path)
    (tmp_path / "mnist-classifier.json").write_text("{not json")
    with pytest.raises(ChecksumError, match="not valid JSON.*git checkout"):
        load_classifier(path)
    # a damaged record is refused, not skipped: it would leave the weights unchecked
    without_sha = {key: value for key, value in record.items() if key != "sha256"}
    for damaged in (without_sha, {**record, "file": "other.pt"}, [record], {**record, "sha256": None}):
        (tmp_path / "mnist-classifier.json").write_text(json.dumps(damaged))
        with pytest.raises(ChecksumError, match="does not name it with its sha256.*git checkout"):
            load_classifier(path)


def test_a_checkpoint_is_published_to_a_pt_file_only(tmp_path):
    with pytest.raises(ValueError, match="to a .pt file, not .*model.json"):
        publish_checkpoint(tmp_path / "model.json", Tiny(), config=TinyConfig(), record={})
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_state_with_a_flipped_byte_is_refused_although_nothing_lists_it(tmp_path):
    """torch.load ignores the zip's CRC-32s: without a check, damaged weights load silently."""
    model = nn.Linear(64, 64)
    path = save_checkpoint(tmp_path / "state.pt", model)
    content = bytearray(path.read_bytes())
    content[tensor_data_offset(path) + 100] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match="fails its CRC-32 check.*move it aside"):
        load_checkpoint(path, nn.Linear(64, 64))


def test_the_published_folder_is_consistent():
    """Every listed file exists and matches, every .pt is listed, every .json agrees with its .pt."""
    sums = read_sha256sums(PUBLISHED / "SHA256SUMS")
    for name, digest in sums.items():
        assert (PUBLISHED / name).is_file(), f"SHA256SUMS lists {name}, which is missing"
        assert file_sha256(PUBLISHED / name) == digest, f"{name} does not match SHA256SUMS"
    weights = sorted(p.name for p in PUBLISHED.glob("*.pt"))
    assert weights == sorted(sums), "every published .pt is listed in SHA256SUMS, and nothing else"
    for name in weights:
        path = PUBLISHED / name
        record = json.loads(path.with_suffix(".json").read_text())
        checkpoint = read_checkpoint(path)
        assert record["file"] == name and record["sha256"] == sums[name]
        assert record["bytes"] == path.stat().st_size
        assert record["step"] == checkpoint["step"]
        assert json.loads(json.dumps(record["config"])) == json.loads(json.dumps(checkpoint["config"]))
        buffers = ("running_mean", "running_var", "num_batches_tracked")  # batch norm's, not parameters
        assert record["params"] == sum(t.numel() for k, t in checkpoint["model"].items()
                                       if not k.endswith(buffers))


# --------------------------------------------------------------------------------------------
# 3. Publishing is one step


def test_publishing_reads_sha256sums_first_and_tolerates_blank_lines(tmp_path):
    model = Tiny()
    record = {"profile": "cpu"}
    publish_checkpoint(tmp_path / "a.pt", model, config=TinyConfig(), record=record)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("\n" + sums.read_text() + "\n\n")
    publish_checkpoint(tmp_path / "b.pt", model, config=TinyConfig(), record=record)
    assert sorted(read_sha256sums(sums)) == ["a.pt", "b.pt"]
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0

    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    sums.write_text(sums.read_text() + "this line is not a checksum\n")
    before["SHA256SUMS"] = sums.read_bytes()
    with pytest.raises(CheckpointError, match="line 3, is not '<sha256>  <file name>'"):
        publish_checkpoint(tmp_path / "a.pt", Tiny(TinyConfig()), config=TinyConfig(), record=record, step=9)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing was written


# --------------------------------------------------------------------------------------------
# 6. Loaders put the model where they are asked to


@pytest.mark.parametrize("loader, name", [(load_vae, "vae-j2"),
                                          (functools.partial(load_unet, raw=True), "ddpm"),
                                          (load_classifier, "mnist-classifier")])
def test_every_loader_moves_the_model_to_map_location(loader, name):
    model, _ = loader(PUBLISHED / f"{name}.pt", map_location="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    model, _ = loader(PUBLISHED / f"{name}.pt", map_location=None)  # None: the CPU
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_asking_for_cuda_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="map_location='cuda'.*no CUDA device.*map_location='cpu'"):
        load_vae(PUBLISHED / "vae-j2.pt", map_location="cuda")


def test_a_checkpoint_saved_on_cuda_loads_with_map_location_none(tmp_path):
    """A file whose tensors say 'cuda:0' (as one saved on a GPU does) loads on a CPU machine."""
    path = save_checkpoint(tmp_path / "gpu.pt", Tiny(), config=TinyConfig())
    moved = tmp_path / "moved.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(moved, "w", zipfile.ZIP_STORED) as target:
        for record in source.infolist():
            data = source.read(record)
            if record.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data  # pickle protocol 2: the location's string
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            target.writestr(record, data)
    with pytest.raises(RuntimeError, match="CUDA"):  # what torch itself does with it
        torch.load(moved, weights_only=True)
    model, _ = load_model(moved, Tiny, TinyConfig, map_location=None)
    assert torch.equal(model.net[0].weight, read_checkpoint(path)["model"]["net.0.weight"])


# --------------------------------------------------------------------------------------------
# 7. Clear errors for the wrong file


def test_a_checkpoint_of_another_model_names_what_it_holds_and_its_loader(tmp_path):
    path = save_checkpoint(tmp_path / "unet.pt", UNet(UNetConfig(channels=8)), config=UNetConfig(channels=8))
    with pytest.raises(CheckpointError, match=r"holds a UNet \(config .*'channels': 8.*not a VAE: "
                                              r"load it with genmodels.diffusion.load_ddpm"):
        load_vae(path)
    classifier = MNISTClassifier(ClassifierConfig())
    path = save_checkpoint(tmp_path / "classifier.pt", classifier, config=ClassifierConfig())
    with pytest.raises(CheckpointError, match="not a UNet: load it with genmodels.features.load_classifier"):
        load_unet(path)


def test_missing_fields_newer_formats_and_unknown_config_get_clear_errors(tmp_path):
    payload = torch.load(save_checkpoint(tmp_path / "a.pt", Tiny(), config=TinyConfig()), weights_only=True)
    del payload["model_class"]
    torch.save(payload, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="model_class is missing or of the wrong type"):
        load_model(tmp_path / "b.pt", Tiny, TinyConfig)

    payload["model_class"], payload["format"] = "Tiny", 7
    torch.save(payload, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=rf"format 7; this is genmodels {genmodels.__version__}, "
                                              r"which reads formats up to 2: upgrade genmodels"):
        read_checkpoint(tmp_path / "c.pt")

    payload["format"], payload["config"] = 2, {"hidden": 8, "depth": 3}
    payload["provenance"]["genmodels_version"] = "99.0"  # a later version, whose TinyConfig grew a field
    torch.save(payload, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match=r"config entries \['depth'\] that TinyConfig of genmodels .*"
                                              r"written by genmodels 99.0"):
        load_model(tmp_path / "d.pt", Tiny, TinyConfig)


def test_no_error_advises_deleting_a_valid_file(tmp_path):
    path = save_checkpoint(tmp_path / "tiny.pt", Tiny(), config=TinyConfig())
    messages = []
    for attempt in (lambda: load_vae(path), lambda: load_checkpoint(path, nn.Linear(3, 3)),
                    lambda: resume(path, Tiny(), optimizer=torch.optim.SGD(Tiny().parameters(), 0.1),
                                   run={"lr": 0.1})):
        with pytest.raises(CheckpointError) as error:
            attempt()
        messages.append(str(error.value))
    assert not any("delete it" in m for m in messages[:2]), messages


# --------------------------------------------------------------------------------------------
# 9. Resume continues only the same run


def test_resume_refuses_the_state_of_a_run_with_other_settings(tmp_path):
    settings = {"learning_rate": 1e-3, "epochs": 10, "seed": 0, "n_train": 60_000}
    model = Tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = tmp_path / "tiny-last.pt"
    assert resume(path, model, optimizer=optimizer, run=settings) is None  # nothing to resume yet
    save_checkpoint(path, model, optimizer=optimizer, step=4, run=settings)

    fresh = Tiny()
    state = resume(path, fresh, optimizer=torch.optim.Adam(fresh.parameters()), run=dict(settings))
    assert state["step"] == 4 and torch.equal(fresh.net[0].weight, model.net[0].weight)

    changed = {**settings, "learning_rate": 5e-4, "n_train": 2_048}
    untouched = Tiny()
    before = {k: v.clone() for k, v in untouched.state_dict().items()}
    with pytest.raises(StaleRunError) as error:
        resume(path, untouched, optimizer=torch.optim.Adam(untouched.parameters()), run=changed)
    message = str(error.value)
    assert "learning_rate: 0.001 there, 0.0005 now" in message and "n_train: 60000 there, 2048 now" in message
    assert "epochs" not in message and "Move the file aside" in message
    assert all(torch.equal(before[k], v) for k, v in untouched.state_dict().items())
    assert path.exists()


def test_a_state_saved_without_its_settings_is_not_resumed(tmp_path):
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    path = save_checkpoint(tmp_path / "old-last.pt", model, optimizer=optimizer)
    with pytest.raises(StaleRunError, match="saved without the settings of its run"):
        resume(path, Tiny(), optimizer=torch.optim.SGD(Tiny().parameters(), 0.1), run={"lr": 0.1})


def test_a_state_that_does_not_fit_the_optimizer_or_the_loop_is_refused_before_loading(tmp_path):
    settings = {"lr": 0.1}
    model = Tiny()
    one_group = torch.optim.SGD(model.parameters(), 0.1)
    path = save_checkpoint(tmp_path / "tiny-last.pt", model, optimizer=one_group, run=settings)
    untouched = Tiny()
    before = {k: v.clone() for k, v in untouched.state_dict().items()}
    weights, biases = ([p for n, p in untouched.named_parameters() if n.endswith(kind)]
                       for kind in ("weight", "bias"))
    two_groups = torch.optim.SGD([{"params": weights}, {"params": biases}], 0.1)
    with pytest.raises(CheckpointError, match="an optimizer over other parameters.*move it aside"):
        resume(path, untouched, optimizer=two_groups, run=settings)
    assert all(torch.equal(before[k], v) for k, v in untouched.state_dict().items())
    state = TrainingRun(path, run=settings, model=Tiny(), optimizer=torch.optim.SGD(Tiny().parameters(), 0.1))
    with pytest.raises(CheckpointError, match="not the saved state of a TrainingRun.*move it aside"):
        state.resume()


# --------------------------------------------------------------------------------------------
# 10. Smoke runs clean up after themselves


def test_scratch_dirs_vanish_at_exit_and_after_a_killed_run(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    script = ("from genmodels.train import scratch_dir; d = scratch_dir('x'); (d / 'f').write_text('1'); "
              "print(d)")
    made = Path(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                               check=True).stdout.strip())
    assert made.parent == tmp_path / "genmodels-scratch" and not made.exists()

    killed = subprocess.Popen([sys.executable, "-c", script + "; import time; time.sleep(60)"], env=env,
                              stdout=subprocess.PIPE, text=True)
    left = Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait()
    assert left.exists()  # a killed process runs no exit handler
    mine = tmp_path / "genmodels-scratch" / "not-a-pid"
    mine.mkdir()
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert not left.exists() and mine.exists()  # only directories of dead processes are removed


def test_scratch_dir_is_new_each_time(monkeypatch, tmp_path):
    monkeypatch.setattr(train.tempfile, "tempdir", str(tmp_path))
    first, second = scratch_dir("a"), scratch_dir("a")
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith(f"{os.getpid()}-a-")


def test_verify_published_ignores_files_nothing_lists(tmp_path):
    path = save_checkpoint(tmp_path / "mine.pt", Tiny())
    verify_published(path)  # no SHA256SUMS, no record: nothing to check against
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  other.pt\n")
    verify_published(path)
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  mine.pt\n")
    with pytest.raises(ChecksumError, match="SHA256SUMS says sha256 0000"):
        verify_published(path)


# --------------------------------------------------------------------------------------------
# 8. Under the test suite, nothing writes into the published folders


def test_protected_folders_refuse_every_write_and_keep_their_files(tmp_path, monkeypatch):
    published = tmp_path / "checkpoints"
    publish_checkpoint(published / "a.pt", Tiny(), config=TinyConfig(), record={})
    before = {p.name: p.read_bytes() for p in published.iterdir()}
    monkeypatch.setenv(train.PROTECTED, os.pathsep.join([str(tmp_path / "results"), str(published)]))
    for write in (lambda: publish_checkpoint(published / "a.pt", Tiny(), config=TinyConfig(), record={}),
                  lambda: save_checkpoint(published / "b.pt", Tiny()),
                  lambda: train.write_json(tmp_path / "results" / "metrics.json", {})):
        with pytest.raises(PermissionError, match="protected in this run.*make results"):
            write()
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before
    assert not (tmp_path / "results").exists()
    save_checkpoint(tmp_path / "elsewhere.pt", Tiny())  # other folders are fine
