"""Training throughput of every published model, as its notebook trains it: images per second.

Run: python benchmarks/training_throughput.py [--repeats 20]
Builds each model with the settings of the cpu profile's run (read from the record of its published
checkpoint where the cpu profile trained it, else from the cpu profile's own record in
results/cpu-xeon/; a model whose architecture is the same in every profile may come from any) and
times its training step on random data of the right shape, after two warm-up steps: the VAE (one
Adam step on a minibatch of 128), each WGAN (one generator iteration: n_critic = 5 critic steps on 64
real and 64 generated images, clipping or the gradient penalty, then one generator step) and the
DDPM's U-Net (one step of Algorithm 1 with v-prediction, bf16 autocast, on the cpu run's batch; the
EMA's update and the learning-rate schedule, a small part of a step, are not timed).
"Images per second" counts the real images a step consumes. Results (with hardware, commit and torch
version) are merged into results/benchmarks.json under "training_throughput". Run it on an idle
machine. Not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timing import at_least_one, store_section, timed  # benchmarks/timing.py, beside this script

from genmodels.diffusion import NoiseSchedule, loss_simple
from genmodels.train import hardware, native_bf16, read_checkpoint
from genmodels.unet import UNet, UNetConfig
from genmodels.vae import VAE, VAEConfig, binarize, elbo_terms
from genmodels.wgan import (
    ConvCritic,
    ConvGenerator,
    DCGANConfig,
    clip_weights_,
    critic_loss,
    generator_loss,
    gradient_penalty,
)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"



# the cpu profile's runs whose published checkpoints another profile has since replaced
CPU_RECORDS = {"ddpm.pt": ROOT / "results" / "cpu-xeon" / "ddpm.json"}
# the VAE notebook's profiles differ only in counts (data, epochs, samples), never in the network
SAME_IN_EVERY_PROFILE = {"vae-j32.pt"}


def cpu_record(name: str, checkpoints: Path = CHECKPOINTS, cpu_records: dict | None = None) -> dict:
    """The record (architecture ``config``, ``batch_size``, ...) of the cpu profile's run that trained
    the checkpoint ``name``, or of the published run where every profile trains the same network."""
    cpu_records = CPU_RECORDS if cpu_records is None else cpu_records
    checkpoint = read_checkpoint(checkpoints / name)
    record = checkpoint["extra"]["record"]
    if record["profile"] == "cpu" or name in SAME_IN_EVERY_PROFILE:
        return {**record, "config": checkpoint["config"]}
    if name not in cpu_records:
        raise SystemExit(f"{name} was trained in the {record['profile']} profile and no record of the cpu "
                         "profile's run is listed in CPU_RECORDS: keep the cpu run's record (its "
                         "checkpoint's .json) in results/cpu-xeon/ and list it there")
    return json.loads(cpu_records[name].read_text())


def config_of(name: str, cls, checkpoints: Path = CHECKPOINTS, cpu_records: dict | None = None):
    """The architecture the cpu profile trains under the checkpoint name ``name``."""
    return cls(**cpu_record(name, checkpoints, cpu_records)["config"])


def vae_step(batch: int = 128):
    model = VAE(config_of("vae-j32.pt", VAEConfig))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pixels = torch.rand(batch, 784)

    def step():
        terms = elbo_terms(model, binarize(pixels))
        loss = (terms.kl - terms.reconstruction).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, batch


def wgan_parts(variant: str, config: DCGANConfig, m: int = 64, n_critic: int = 5, real=None):
    """One generator iteration of the WGAN notebook's loop (Algorithm 1: n_critic critic steps on m real
    and m generated images, clipping or the gradient penalty, then one generator step) as a function
    ``step()``, with the generator and critic it trains; ``real()`` draws the m real images (default:
    one fixed batch of random pixels, enough for timing)."""
    generator, critic = ConvGenerator(config), ConvCritic(config)
    if variant == "clip":
        g_optimizer, c_optimizer = (torch.optim.RMSprop(p, lr=5e-5)
                                    for p in (generator.parameters(), critic.parameters()))
    else:
        g_optimizer, c_optimizer = (torch.optim.Adam(p, lr=1e-4, betas=(0.0, 0.9))
                                    for p in (generator.parameters(), critic.parameters()))
    if real is None:
        fixed = torch.rand(m, 784)
        real = lambda: fixed  # noqa: E731

    def step():
        for _ in range(n_critic):
            x = real()
            fake = generator.sample(m).detach()
            loss = critic_loss(critic(x), critic(fake))
            if variant == "gp":
                loss = loss + 10.0 * gradient_penalty(critic, x, fake)
            c_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            c_optimizer.step()
            if variant == "clip":
                clip_weights_(critic, 0.01)
        g_optimizer.zero_grad(set_to_none=True)
        generator_loss(critic(generator.sample(m))).backward()
        g_optimizer.step()

    return step, generator, critic


def wgan_step(variant: str, m: int = 64, n_critic: int = 5):
    step, _, _ = wgan_parts(variant, config_of(f"wgan-{variant}.pt", DCGANConfig), m, n_critic)
    return step, n_critic * m


def ddpm_step():
    record = cpu_record("ddpm.pt")
    model, batch = UNet(UNetConfig(**record["config"])), record["batch_size"]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    schedule = NoiseSchedule(T=1000, kind="cosine")
    x0 = torch.rand(batch, 1, 28, 28) * 2 - 1

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_simple(model, schedule, x0, prediction="v").mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least_one, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{hardware('cpu')}, torch {torch.__version__}")
    rows = {}
    precision = "bf16" if native_bf16("cpu") else "float32"  # what the U-Net computes under the autocast
    models = (("VAE (MLP, J = 32)", vae_step()), ("WGAN, weight clipping", wgan_step("clip")),
              ("WGAN-GP", wgan_step("gp")), (f"DDPM (U-Net, {precision})", ddpm_step()))
    for name, (step, images) in models:
        seconds = timed(step, args.repeats)
        rows[name] = {"images_per_s": round(images / seconds, 1), "seconds_per_step": round(seconds, 4),
                      "images_per_step": images}
        print(f"  {name:24s} {images / seconds:9.1f} images/s ({seconds * 1000:.1f} ms per step of "
              f"{images} images)", flush=True)
    store_section("training_throughput", threads=torch.get_num_threads(), repeats=args.repeats, rows=rows)


if __name__ == "__main__":
    main()
