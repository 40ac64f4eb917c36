"""The U-Net epsilon-network: shapes, timestep conditioning, and the sinusoidal embedding."""

import math

import pytest
import torch

from genmodels.unet import UNet, UNetConfig, timestep_embedding


def test_timestep_embedding_is_the_transformer_sinusoid():
    t = torch.tensor([0, 1, 500])
    embedding = timestep_embedding(t, 8)
    assert embedding.shape == (3, 8)
    frequencies = [10_000 ** (-k / 4) for k in range(4)]
    expected = [[math.cos(s * w) for w in frequencies] + [math.sin(s * w) for w in frequencies]
                for s in (0, 1, 500)]
    torch.testing.assert_close(embedding, torch.tensor(expected))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet(UNetConfig(channels=8, groups=4, dropout=0.0)).eval()


def test_unet_maps_images_to_noise_of_the_same_shape(unet):
    x = torch.randn(3, 1, 28, 28)
    out = unet(x, torch.tensor([1, 10, 1000]))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_depends_on_the_timestep(unet):
    x = torch.randn(1, 1, 28, 28).expand(2, 1, 28, 28)
    out = unet(x, torch.tensor([1, 1000]))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_unet_mixes_the_whole_image(unet):
    """Through the 7 x 7 bottleneck and attention, a pixel in one corner affects the opposite one."""
    x = torch.zeros(2, 1, 28, 28)
    x[1, 0, 0, 0] = 5.0
    out = unet(x, torch.tensor([500, 500]))
    assert (out[0, 0, -1, -1] - out[1, 0, -1, -1]).abs() > 0


def test_unet_rejects_other_shapes(unet):
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        unet(torch.zeros(2, 1, 32, 32), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"t of shape \(B,\)"):
        unet(torch.zeros(2, 1, 28, 28), torch.tensor([1]))


def test_load_unet_rebuilds_the_published_architecture(tmp_path, unet):
    from genmodels.train import CheckpointError, save_checkpoint
    from genmodels.unet import load_unet

    path = save_checkpoint(tmp_path / "ddpm.pt", unet, config=unet.config)
    loaded, checkpoint = load_unet(path)
    assert loaded.config == unet.config and not loaded.training
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    torch.testing.assert_close(loaded(x, t), unet(x, t))
    other = UNet(UNetConfig(channels=16, groups=4))
    with pytest.raises(CheckpointError, match="does not fit"):
        from genmodels.train import load_checkpoint
        load_checkpoint(path, other)


def test_load_ddpm_reads_the_parameterization_and_schedule_from_the_record(tmp_path, unet):
    from genmodels.diffusion import EpsilonFromV, NoiseSchedule, load_ddpm, predict_eps_from_v
    from genmodels.train import save_checkpoint

    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    old = save_checkpoint(tmp_path / "ho.pt", unet, config=unet.config, extra=dict(record={}))
    model, schedule, _ = load_ddpm(old)  # no word in the record: Ho et al.'s epsilon, linear, T = 1000
    assert not isinstance(model, EpsilonFromV) and schedule.kind == "linear" and schedule.T == 1000
    record = dict(prediction="v", noise_schedule=dict(kind="cosine", T=1000))
    new = save_checkpoint(tmp_path / "v.pt", unet, config=unet.config, extra=dict(record=record))
    model, schedule, _ = load_ddpm(new)
    cosine = NoiseSchedule(kind="cosine")
    assert isinstance(model, EpsilonFromV) and schedule.kind == "cosine"
    torch.testing.assert_close(schedule.alpha_bar, cosine.alpha_bar)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), predict_eps_from_v(cosine, x, t, unet.eval()(x, t)))
    record = dict(prediction="x0")
    bad = save_checkpoint(tmp_path / "x0.pt", unet, config=unet.config, extra=dict(record=record))
    with pytest.raises(ValueError, match="predicts 'x0'.*upgrade genmodels"):
        load_ddpm(bad)


def test_unet_computes_float32_under_bf16_autocast_where_bf16_is_emulated(unet, monkeypatch):
    from genmodels import unet as unet_module

    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    exact = unet(x, t)
    monkeypatch.setattr(unet_module, "native_bf16", lambda device: False)  # an AVX2 laptop
    with pytest.warns(RuntimeWarning, match="not native") as warned:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = unet(x, t)
            assert torch.is_autocast_enabled("cpu")  # the caller's autocast is left as it was
            from_bf16 = unet(x.bfloat16(), t)  # a bf16 input, as autocast accepts it
    assert warned[0].filename == __file__  # the caller's line, not torch's
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, exact, rtol=0, atol=0)  # the float32 network, bit for bit
    torch.testing.assert_close(from_bf16, unet(x.bfloat16().float(), t), rtol=0, atol=0)
    unet.bf16_where_emulated = True  # to measure bf16 there: kept
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert unet(x, t).dtype == torch.bfloat16
    finally:
        del unet.bf16_where_emulated
    monkeypatch.setattr(unet_module, "native_bf16", lambda device: True)  # AVX-512 BF16, AMX
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = unet(x, t)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), exact, rtol=0.05, atol=0.05)


def test_a_compiled_unet_reads_the_bf16_check_without_a_graph_break(unet):
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 700])
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = torch._dynamo.explain(unet)(x, t)
    assert explained.graph_break_count == 0, explained.break_reasons
