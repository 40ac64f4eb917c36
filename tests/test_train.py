"""Seeds, devices, profiles, progress bars and checkpoints that survive interruption."""

import contextlib
import dataclasses
import hashlib
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import genmodels
from genmodels import train
from genmodels.train import (
    PROFILES,
    CheckpointError,
    ProfileError,
    StaleRunError,
    TrainingRun,
    file_sha256,
    git_commit,
    hardware,
    load_checkpoint,
    modified_code,
    pick_device,
    progress,
    publish_checkpoint,
    read_checkpoint,
    resolve_profile,
    save_checkpoint,
    seed_everything,
    write_json,
)


def draw_everything():
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_seed_everything_makes_all_three_generators_repeat():
    seed_everything(123)
    first = draw_everything()
    seed_everything(123)
    assert draw_everything() == first
    seed_everything(124)
    assert draw_everything() != first


def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Profiles


def test_profile_precedence(monkeypatch):
    monkeypatch.setenv("GENMODELS_PROFILE", "smoke")
    assert resolve_profile() == "smoke"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("gpu") == "gpu"  # an explicit parameter wins over the environment
    assert resolve_profile(" CPU ") == "cpu"
    monkeypatch.delenv("GENMODELS_PROFILE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_profile() == "cpu"  # default is auto
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_profile("auto") == "gpu"


def test_unknown_profile_is_a_one_line_error_listing_the_valid_ones(monkeypatch):
    monkeypatch.setenv("GENMODELS_PROFILE", "bogus")
    with pytest.raises(ProfileError) as error:
        resolve_profile()
    message = str(error.value)
    assert "\n" not in message
    assert "'bogus'" in message and "GENMODELS_PROFILE" in message
    assert PROFILES == ("smoke", "cpu", "gpu", "auto")
    assert all(name in message for name in PROFILES)
    with pytest.raises(ValueError, match="valid profiles: smoke, cpu, gpu, auto"):
        resolve_profile("fast")


def test_gpu_profile_without_cuda_is_refused_unless_asked_twice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(train.GPU_ON_CPU, raising=False)
    for asked in ("gpu", " GPU"):
        with pytest.raises(ProfileError, match="no CUDA device.*many hours.*cpu profile") as error:
            resolve_profile(asked)
        assert train.GPU_ON_CPU in str(error.value)
        assert resolve_profile(asked, runs=False) == "gpu"  # planning or copying prose runs nothing there
    monkeypatch.setenv("GENMODELS_PROFILE", "gpu")
    with pytest.raises(ProfileError):
        resolve_profile()
    assert resolve_profile(runs=False) == "gpu"
    assert resolve_profile("auto", runs=False) == "cpu"
    monkeypatch.setenv(train.GPU_ON_CPU, "1")
    assert resolve_profile() == "gpu"
    assert resolve_profile("auto") == "cpu"


def test_unknown_profile_from_the_command_line_fails_with_one_line():
    script = "from genmodels.train import resolve_profile; resolve_profile()"
    env = {**os.environ, "GENMODELS_PROFILE": "bogus"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("genmodels.train.ProfileError: unknown compute profile 'bogus'")
    assert last.endswith("valid profiles: smoke, cpu, gpu, auto")


def test_progress_is_a_tqdm_that_counts():
    bar = progress(range(5), disable=False)
    assert list(bar) == list(range(5))
    assert bar.n == 5 and bar.mininterval == 1.0


def test_tqdm_disable_silences_the_notebook_bar_too(monkeypatch):
    """tqdm.notebook's bar ignores TQDM_DISABLE, so executed notebooks published widget views."""
    from tqdm import notebook

    monkeypatch.setattr(train, "tqdm", notebook.tqdm)  # what tqdm.auto gives inside a kernel
    monkeypatch.setenv("TQDM_DISABLE", "1")
    bar = progress(range(3))
    assert bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setenv("TQDM_DISABLE", "0")
    assert not progress(range(3), file=open(os.devnull, "w")).disable


# --------------------------------------------------------------------------------------------
# Checkpoints


@dataclasses.dataclass
class TinyConfig:
    hidden: int = 8  # width of the hidden layer
    lr: float = 1e-2  # learning rate


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 1))

    def forward(self, x):
        return self.net(x)


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)


def trained_tiny(config=None, steps=3):
    config = config or TinyConfig()
    torch.manual_seed(0)
    model = Tiny(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def test_checkpoint_round_trip_restores_everything(tmp_path):
    config = TinyConfig()
    model, optimizer = trained_tiny(config)
    path = save_checkpoint(tmp_path / "tiny.pt", model, optimizer=optimizer, config=config, step=3,
                           extra={"loss": [1.0, 0.5]})
    seed_everything(7)
    expected_draws = draw_everything()

    fresh = Tiny(config)
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=config.lr)
    seed_everything(99)
    checkpoint = load_checkpoint(path, fresh, optimizer=fresh_optimizer, restore_rng=False)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor)
    saved_state = optimizer.state_dict()["state"][0]["exp_avg"]
    torch.testing.assert_close(fresh_optimizer.state_dict()["state"][0]["exp_avg"], saved_state)
    assert checkpoint["step"] == 3 and checkpoint["config"] == {"hidden": 8, "lr": 1e-2}
    assert checkpoint["extra"] == {"loss": [1.0, 0.5]}
    provenance = checkpoint["provenance"]
    assert provenance["genmodels_version"] == genmodels.__version__
    assert provenance["git_commit"] == git_commit()
    assert provenance["torch_version"] == torch.__version__

    # The RNG state is the one at save time: resuming continues the same random stream.
    seed_everything(7)
    save_checkpoint(path, model, config=config)
    seed_everything(99)
    load_checkpoint(path, fresh, restore_rng=True)
    assert draw_everything() == expected_draws


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    model, _ = trained_tiny()
    path = save_checkpoint(tmp_path / "tiny.pt", model)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint.*truncated or corrupt"):
        load_checkpoint(path, Tiny(TinyConfig()))
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path, Tiny(TinyConfig()))


def test_missing_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt", Tiny(TinyConfig()))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not written by genmodels"):
        load_checkpoint(tmp_path / "foreign.pt", Tiny(TinyConfig()))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    model, _ = trained_tiny(TinyConfig(hidden=8))
    path = save_checkpoint(tmp_path / "tiny.pt", model, config=TinyConfig(hidden=8))
    wider = Tiny(TinyConfig(hidden=16))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, wider)
    message = str(error.value)
    assert "net.0.weight has shape (8, 4) in the checkpoint but (16, 4) in the model" in message
    assert "'hidden': 8" in message  # the config that would fit
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())  # untouched
    with pytest.raises(CheckpointError, match="holds a Tiny, not a Other"):
        load_checkpoint(path, Other())


def test_resuming_needs_optimizer_state(tmp_path):
    model, _ = trained_tiny()
    path = save_checkpoint(tmp_path / "tiny.pt", model)
    fresh = Tiny(TinyConfig())
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, fresh, optimizer=torch.optim.SGD(fresh.parameters(), lr=0.1))


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, _ = trained_tiny(steps=1)
    path = save_checkpoint(tmp_path / "tiny.pt", model, step=1)
    good_bytes = path.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(train.torch, "save", dies_halfway)
    later, _ = trained_tiny(steps=5)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, later, step=5)
    monkeypatch.undo()
    assert path.read_bytes() == good_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt"]  # no partial file left
    assert load_checkpoint(path, Tiny(TinyConfig()))["step"] == 1


def test_config_must_be_a_dataclass_or_dict(tmp_path):
    model, _ = trained_tiny()
    with pytest.raises(TypeError, match="dataclass or a dict"):
        save_checkpoint(tmp_path / "tiny.pt", model, config="hidden=8")
    assert not (tmp_path / "tiny.pt").exists()


def test_file_sha256_matches_hashlib_and_sha256sum(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 5000)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    sha256sum = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True)
    assert file_sha256(path) == sha256sum.stdout.split()[0]


def test_git_commit(tmp_path, monkeypatch):
    monkeypatch.delenv("GENMODELS_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"  # not a repository
    monkeypatch.setenv("GENMODELS_COMMIT", "abc123")  # a copy of the tree without .git
    assert git_commit(tmp_path) == "abc123"
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "add", "f"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"],
                   cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    assert git_commit(tmp_path) == head.stdout.strip()
    assert len(git_commit(tmp_path)) == 40


def test_modified_code_lists_what_differs_from_the_commit_in_the_code_only(tmp_path):
    assert modified_code(tmp_path) is None  # not a repository: nothing to compare with
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    for name in ("src/genmodels/a.py", "notebooks/n.py", "results/metrics.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "m"], cwd=tmp_path, check=True)
    assert modified_code(tmp_path / "src" / "genmodels") == []  # asked from a subfolder, as the package does
    (tmp_path / "results" / "metrics.json").write_text("2")  # a result being written: not code
    (tmp_path / "src" / "genmodels" / "a.py").write_text("2")
    (tmp_path / "notebooks" / "new.py").write_text("untracked: not part of any commit")
    assert modified_code(tmp_path / "src" / "genmodels") == ["src/genmodels/a.py"]
    subprocess.run(["git", "mv", "notebooks/n.py", "notebooks/a new name.py"], cwd=tmp_path, check=True)
    assert modified_code(tmp_path) == ["notebooks/a new name.py", "src/genmodels/a.py"]  # -z: as named
    record = publish_checkpoint(tmp_path / "checkpoints" / "m.pt", nn.Linear(2, 2), config={}, record={})
    assert "modified_code" in record  # the published record says what was uncommitted (here: the
    # package's own repository's state, whatever it is, as a list or None outside a repository)


def test_read_checkpoint_needs_no_model(tmp_path):
    model, _ = trained_tiny()
    path = save_checkpoint(tmp_path / "tiny.pt", model, config=TinyConfig(hidden=8), step=11)
    checkpoint = read_checkpoint(path)
    assert checkpoint["config"] == {"hidden": 8, "lr": 1e-2} and checkpoint["step"] == 11
    assert checkpoint["model_class"] == "Tiny"
    assert set(checkpoint["model"]) == set(model.state_dict())
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "nothing.pt")


def test_publish_checkpoint_writes_weights_record_and_checksums(tmp_path):
    model, _ = trained_tiny()
    record = {"profile": "cpu", "hardware": hardware("cpu"), "train_seconds": 1.5}
    first = publish_checkpoint(tmp_path / "tiny.pt", model, config=TinyConfig(), record=record, step=3)
    publish_checkpoint(tmp_path / "other.pt", model, config=TinyConfig(hidden=8), record=record)
    republished = publish_checkpoint(tmp_path / "tiny.pt", model, config=TinyConfig(), record=record, step=4,
                                     extra={"snapshots": [1, 2, 3]})
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sorted(check.stdout.splitlines()) == ["other.pt: OK", "tiny.pt: OK"]
    import json

    on_disk = json.loads((tmp_path / "tiny.json").read_text())
    assert on_disk == republished and on_disk["step"] == 4 and first["step"] == 3
    assert on_disk["sha256"] == file_sha256(tmp_path / "tiny.pt")
    assert on_disk["params"] == sum(p.numel() for p in model.parameters())
    assert on_disk["profile"] == "cpu" and on_disk["config"] == {"hidden": 8, "lr": 1e-2}
    assert read_checkpoint(tmp_path / "tiny.pt")["extra"] == {"record": record, "snapshots": [1, 2, 3]}
    assert "snapshots" not in on_disk
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "SHA256SUMS", "other.json", "other.pt", "tiny.json", "tiny.pt"]


def test_hardware_names_the_device(monkeypatch):
    description = hardware("cpu")
    assert description.startswith("cpu: ") and description.endswith(f"{torch.get_num_threads()} threads")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    assert hardware("cuda") == "cuda: NVIDIA H100 80GB HBM3"



def _linear_dtype_under_bf16_autocast(device: str = "cpu") -> torch.dtype:
    with train.bf16_autocast(device):
        return nn.Linear(4, 4)(torch.ones(2, 4)).dtype


def test_bf16_autocast_only_where_the_cpu_has_bf16_instructions(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(train, "_onednn_bf16", lambda: True)
    monkeypatch.setattr(train, "_bf16_instructions", lambda: True)  # AVX-512 BF16 or AMX
    assert train.native_bf16("cpu")
    assert _linear_dtype_under_bf16_autocast() == torch.bfloat16
    monkeypatch.setattr(train, "_bf16_instructions", lambda: False)  # AVX-512 alone, AVX2
    assert not train.native_bf16("cpu")
    assert _linear_dtype_under_bf16_autocast() == torch.float32
    monkeypatch.setattr(train, "_bf16_instructions", lambda: True)
    monkeypatch.setattr(train, "_onednn_bf16", lambda: False)  # oneDNN will not compute bf16 here
    assert not train.native_bf16("cpu")


def test_bf16_instructions_are_none_where_torch_cannot_say(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert train._bf16_instructions()
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch without the query: float32
    assert not train._bf16_instructions()


def test_bf16_autocast_respects_a_onednn_instruction_cap():
    # ONEDNN_MAX_CPU_ISA=AVX2, in a fresh process as on an AVX2 laptop: float32 (there bf16 autocast
    # is many times slower); on a processor with bf16 instructions, oneDNN's own answer agrees
    code = "from genmodels.train import native_bf16; print(native_bf16('cpu'))"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    capped = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert capped.returncode == 0, capped.stderr
    assert capped.stdout.strip() == "False"


@pytest.mark.parametrize("onednn, dnnl, native", [
    ("AVX512_CORE", None, False),  # AVX-512 without BF16: bf16 slower than float32
    ("avx512_core_vnni", None, False),
    ("AVX2_VNNI_2", None, False),
    ("SSE41", None, False),
    (None, "AVX2", False),  # the older name
    ("ALL", "AVX2", True),  # ONEDNN_ first, as oneDNN reads them
    ("AVX512_CORE_BF16", None, True),
    ("AVX512_CORE_AMX", None, True),
    ("", None, True),  # values oneDNN ignores leave it uncapped
    ("no-such-isa", None, True),
])
def test_bf16_autocast_is_off_below_avx512_core_bf16(monkeypatch, onednn, dnnl, native):
    monkeypatch.setattr(train, "_onednn_bf16", lambda: True)  # the processor's answers, uncapped
    monkeypatch.setattr(train, "_bf16_instructions", lambda: True)
    for name, value in (("ONEDNN_MAX_CPU_ISA", onednn), ("DNNL_MAX_CPU_ISA", dnnl)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert train.native_bf16("cpu") is native


def test_bf16_autocast_on_gpus_without_native_bf16_and_other_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # a T4: bf16 only emulated

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert not train.native_bf16("cuda") and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert train.native_bf16("cuda:0")  # Ampere and later
    assert not train.native_bf16("mps") and not train.native_bf16(torch.device("meta"))
    assert isinstance(train.bf16_autocast("mps"), type(contextlib.nullcontext()))

def test_write_json_replaces_atomically(tmp_path, monkeypatch):
    import json

    path = write_json(tmp_path / "results" / "metrics.json", [{"model": "vae", "fid": 1.5}])
    assert json.loads(path.read_text()) == [{"fid": 1.5, "model": "vae"}]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, [{"model": "other"}])
    monkeypatch.undo()
    assert json.loads(path.read_text()) == [{"fid": 1.5, "model": "vae"}]
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_the_command_line_prints_the_resolved_profile(monkeypatch):
    """What `make results` records in every executed notebook: lower case, auto resolved."""
    for asked, expected in (("CPU", "cpu"), (" smoke ", "smoke"), ("auto", "cpu")):
        run = subprocess.run([sys.executable, "-m", "genmodels.train", asked], capture_output=True, text=True,
                             env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        assert run.returncode == 0 and run.stdout == f"{expected}\n", run.stderr


def test_power_ema_weights_update_n_in_proportion_to_n_to_the_gamma():
    model = torch.nn.Linear(1, 1, bias=False)
    values = np.random.default_rng(0).normal(size=300)
    for gamma in (0.0, 6.94):
        ema = train.power_ema(model, gamma=gamma)
        for value in values:
            with torch.no_grad():
                model.weight.fill_(float(value))
            ema.update_parameters(model)
        weights = np.arange(1, len(values) + 1, dtype=np.float64) ** gamma
        expected = (weights * values).sum() / weights.sum()
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="gamma must be greater than -1"):
        train.power_ema(model, gamma=-1)


# --------------------------------------------------------------------------------------------
# TrainingRun: the bookkeeping around a training loop


def _toy_run(path, total, *, stop_at=None, every=1, minutes=None, settings=None):
    """Fit a line with SGD and a decaying learning rate on data drawn inside the loop (so the RNG
    matters); ``stop_at`` interrupts the loop body at that step, as a killed process would."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    state = TrainingRun(path, run=settings or dict(lr=0.1), model=model, optimizer=optimizer,
                        schedule=schedule)
    for step in state.steps(total, every=every, minutes=minutes):
        if step == stop_at:
            raise KeyboardInterrupt
        x = torch.randn(16, 3)
        loss = (model(x).squeeze(1) - x.sum(1)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if state.due:
            state.log.append(dict(step=step + 1, loss=loss.item()))
    return model, state


def test_an_interrupted_training_run_resumes_to_the_same_weights(tmp_path):
    straight, straight_state = _toy_run(tmp_path / "a.pt", 10)
    with pytest.raises(KeyboardInterrupt):
        _toy_run(tmp_path / "b.pt", 10, stop_at=6)
    assert read_checkpoint(tmp_path / "b.pt")["step"] == 6  # steps 0..5 done and saved
    resumed, resumed_state = _toy_run(tmp_path / "b.pt", 10)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # RNG, momentum and schedule all restored
    assert resumed_state.log == straight_state.log and len(resumed_state.log) == 10
    assert resumed_state.step == 10 and resumed_state.seconds >= 0


def test_a_finished_run_resumes_to_nothing_left_to_do(tmp_path):
    _toy_run(tmp_path / "a.pt", 4)
    model, state = _toy_run(tmp_path / "a.pt", 4)
    assert state.step == 4 and len(state.log) == 4


def test_saving_every_k_steps_and_the_last(tmp_path):
    _, state = _toy_run(tmp_path / "a.pt", 7, every=3)
    assert [entry["step"] for entry in state.log] == [3, 6, 7]


def test_a_minute_budget_stops_after_the_first_save_past_it(tmp_path):
    _, state = _toy_run(tmp_path / "a.pt", 100, every=5, minutes=0.0)
    assert state.budget_spent and state.step == 5 and len(state.log) == 1
    _, again = _toy_run(tmp_path / "a.pt", 100, every=5, minutes=0.0)  # budget already spent
    assert again.budget_spent and again.step == 5


def test_a_run_with_other_settings_is_not_continued(tmp_path):
    _toy_run(tmp_path / "a.pt", 3)
    with pytest.raises(StaleRunError, match="lr"):
        _toy_run(tmp_path / "a.pt", 3, settings=dict(lr=0.2))


def test_check_finite_names_the_values_and_keeps_the_last_good_state(tmp_path):
    path = tmp_path / "a.pt"
    _toy_run(path, 2)
    before = path.read_bytes()
    state = TrainingRun(path, run=dict(lr=0.1), model=torch.nn.Linear(3, 1),
                        optimizer=torch.optim.SGD(torch.nn.Linear(3, 1).parameters(), lr=0.1))
    state.check_finite(loss=1.0, w=-3.0)  # fine
    with pytest.raises(RuntimeError, match=r"loss = nan.*last good state"):
        state.check_finite(loss=float("nan"), w=1.0)
    with pytest.raises(RuntimeError, match="w = 100000"):
        state.check_finite(w=1e5)
    assert path.read_bytes() == before


def test_time_inside_paused_is_not_training_time(tmp_path, monkeypatch):
    clock = iter(range(0, 1000, 10))  # every reading of the clock is 10 seconds after the last
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    state = TrainingRun(tmp_path / "a.pt", run=dict(lr=0.1), model=nn.Linear(2, 1),
                        optimizer=torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1))
    monkeypatch.setattr(state, "save", lambda: None)
    for _ in state.steps(1):
        before = state.seconds  # clock started at 0, read at 10
        with state.paused():  # stops at 20: the 10 seconds since count ...
            assert state.seconds == before + 10
            assert state.seconds == before + 10  # ... and nothing while paused
        after = state.seconds  # restarted at 30, read at 40
    assert after == before + 20


def test_decay_to_zero_matches_torchs_constant_then_linear_schedule():
    """Constant, then linear to zero over the last fifth: torch's SequentialLR of ConstantLR and
    LinearLR over 50 steps gives the same multipliers at progress step / 50."""
    total, last = 50, 0.2
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    flat = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    linear = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.0,
                                               total_iters=int(last * total))
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [flat, linear],
                                                     milestones=[int((1 - last) * total)])
    reference = []
    for _ in range(total + 1):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    ours = [train.decay_to_zero(step / total, last) for step in range(total + 1)]
    assert ours == pytest.approx(reference, abs=1e-12)
    assert train.decay_to_zero(1.3, last) == 0.0  # past the budget: no more steps
    with pytest.raises(ValueError, match="fraction of the run"):
        train.decay_to_zero(0.5, last=0.0)



def test_a_fingerprint_finds_every_file_added_rewritten_or_removed(tmp_path):
    from genmodels.train import files_changed, fingerprint

    folder = tmp_path / "checkpoints"
    (folder / "sub").mkdir(parents=True)
    for name in ("kept.pt", "rewritten.pt", "sub/removed.json"):
        (folder / name).write_text("old")
    before = fingerprint([folder, tmp_path / "missing"])  # a folder that does not exist adds nothing
    assert len(before) == 3 and files_changed(before, fingerprint([folder])) == []
    (folder / "rewritten.pt").write_text("new, longer")
    (folder / "sub" / "removed.json").unlink()
    (folder / "added.pt").write_text("new")
    assert files_changed(before, fingerprint([folder])) == [
        str(folder / "added.pt"), str(folder / "rewritten.pt"), str(folder / "sub" / "removed.json")]
