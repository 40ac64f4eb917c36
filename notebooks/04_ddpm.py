# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Denoising diffusion on MNIST: Algorithms 1 and 2, and sampling fast
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/genmodels-book/a-tale-of-vaes-wgans-ddpms/blob/main/notebooks/04_ddpm.ipynb)
#
# This notebook goes with the [DDPM chapter](../chapters/ddpm.md). It checks the forward process
# and the samplers against closed forms (no training needed for that), trains the
# $\epsilon$-network on MNIST with Algorithm 1, samples with Algorithm 2, DDIM and DPM-Solver++(2M)
# at several step counts, measures what each costs and how good its samples are, reports an upper
# bound on the model's negative log-likelihood (the variational bound) in bits per dimension, and
# publishes the weights.

# %% tags=["remove-cell"]
# Setup: on Colab, fetch this book (package, checkpoints) and install it;
# elsewhere `make` did it.
# Running it again does nothing new.
import importlib.util
import os
import subprocess
import sys

REPOSITORY = "https://github.com/genmodels-book/a-tale-of-vaes-wgans-ddpms"
BOOK = "/content/book"
if "google.colab" in sys.modules:
    if not os.path.isdir(f"{BOOK}/.git"):
        clone = ["git", "clone", "-q", "--depth", "1", REPOSITORY, BOOK]
        cloned = subprocess.run(clone, capture_output=True, text=True)
        if cloned.returncode != 0:
            raise RuntimeError(
                f"could not clone {REPOSITORY} into {BOOK}: "
                f"{cloned.stderr.strip()} (check the runtime's network, or "
                f"move {BOOK} aside, then run this cell again)"
            )
    if importlib.util.find_spec("genmodels") is None:
        install = [sys.executable, "-m", "pip", "install", "-q", BOOK]
        subprocess.run(install, check=True)
    os.chdir(f"{BOOK}/notebooks")

# %% tags=["parameters"]
profile = None  # "smoke", "cpu", "gpu" or "auto"; None: $GENMODELS_PROFILE, else "auto"
seed = 0  # seeds Python, NumPy and torch
train_from_scratch = True  # False: load the published epsilon-network instead

# %%
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genmodels.data import load_mnist
from genmodels.diffusion import (
    EpsilonFromV,
    NoiseSchedule,
    ancestral_sample,
    ddim_sample,
    dpm_solver_2m_sample,
    gaussian_data_eps,
    load_ddpm,
    loss_simple,
    predict_x0,
    prior_term,
    q_sample,
    vlb_terms,
)
from genmodels.features import extract_features, load_classifier
from genmodels.metrics import FeatureStatistics, frechet_distance, to_uint8
from genmodels.plotting import glue, show_images
from genmodels.train import (
    TrainingRun,
    hardware,
    pick_device,
    publish_checkpoint,
    resolve_profile,
    scratch_dir,
    seed_everything,
)
from genmodels.unet import UNet, UNetConfig

profile = resolve_profile(profile)
seed_everything(seed)
device = pick_device()
sizes = {  # what each compute profile affords; `batch` is the sampling chunk
    "smoke": dict(
        n_train=512,
        epochs=2,
        train_minutes=None,
        batch_size=128,
        channels=16,
        blocks_per_level=1,
        learning_rate=2e-4,
        warmup_steps=1_000,
        ema_decay=0.999,
        fid_every=1,
        n_grid=8,
        n_fid=130,
        n_nll=2,
        batch=128,
    ),
    "cpu": dict(
        n_train=60_000,
        epochs=40,
        train_minutes=27.0,
        batch_size=64,
        channels=24,
        blocks_per_level=1,
        learning_rate=5e-4,
        warmup_steps=200,
        ema_decay=0.995,
        fid_every=2,
        n_grid=32,
        n_fid=1_000,
        n_nll=20,
        batch=250,
    ),
    "gpu": dict(
        n_train=60_000,
        epochs=200,
        train_minutes=2.0,
        batch_size=512,
        channels=64,
        blocks_per_level=2,
        learning_rate=5e-4,
        warmup_steps=200,
        ema_decay=0.998,
        fid_every=2,
        n_grid=32,
        n_fid=2_000,
        n_nll=200,
        batch=2_000,
    ),
}[profile]
batch_size = sizes["batch_size"]  # images per training step
# the published weights, and the classifier FID is measured with
checkpoints = Path("../checkpoints")
# Where this run writes: a smoke run only proves the code runs,
# so it writes to a scratch folder.
published = checkpoints if profile != "smoke" else scratch_dir("ddpm")
# resumable state
runs = Path("../runs") if profile != "smoke" else scratch_dir("ddpm-runs")
linear = NoiseSchedule(T=1000, kind="linear")  # beta from 1e-4 to 0.02, as Ho et al.
T = linear.T
print(f"profile {profile} on {hardware(device)}: {sizes}")
notebook_started = time.perf_counter()

# %% [markdown]
# ## 1. The forward process, checked
#
# Images are scaled to $[-1, 1]$, as in Ho et al. The schedule stores every quantity with the
# paper's index: `schedule.alpha_bar[t]` is $\bar\alpha_t$ for $t = 1, \dots, T$, and entry 0
# describes the data itself. First the facts the derivation rests on: $\bar\alpha_T$ is almost 0,
# so $x_T$ is almost exactly $\mathcal{N}(0, I)$ whatever $x_0$ was, and the signal-to-noise ratio
# $\bar\alpha_t / (1 - \bar\alpha_t)$ falls over eight orders of magnitude.

# %%
cosine = NoiseSchedule(T=1000, kind="cosine")
ts = np.arange(1, T + 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for name, s in (("linear (Ho et al.)", linear), ("cosine (Nichol & Dhariwal)", cosine)):
    ab = s.alpha_bar[1:].double().numpy()
    axes[0].plot(ts, np.sqrt(ab), label=name)
    axes[1].semilogy(ts, ab / (1 - ab), label=name)
axes[0].set_ylabel(r"$\sqrt{\bar\alpha_t}$, the signal's weight in $x_t$")
axes[1].set_ylabel(r"signal-to-noise ratio $\bar\alpha_t / (1 - \bar\alpha_t)$")
for ax in axes:
    ax.set_xlabel("t")
    ax.legend()
fig.tight_layout()
glue("ddpm_schedules", fig)
print(
    f"alpha_bar_T = {linear.alpha_bar[T].item():.2e} (linear), "
    f"{cosine.alpha_bar[T].item():.2e} (cosine)"
)

# %% [markdown]
# The closed form $q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)$
# against the chain it summarizes: we run the one-step transitions
# $x_s = \sqrt{1 - \beta_s}\, x_{s-1} + \sqrt{\beta_s}\, z$ from $s = 1$ to $t$ on 4,000 copies of one
# digit and compare the per-pixel mean and variance with the closed form.

# %%
test_set = load_mnist(train=False)
# x_0 in [-1, 1]
digit = test_set.data[0].float().div(255).mul(2).sub(1).reshape(1, 784)
generator = torch.Generator().manual_seed(seed)
chain = digit.expand(4000, 784).clone()
for step in range(1, 501):
    chain = (
        (1 - linear.beta[step]).sqrt() * chain
        + linear.beta[step].sqrt() * torch.randn(chain.shape, generator=generator)
    )
    if step in (50, 200, 500):
        ab = linear.alpha_bar[step]
        mean_error = (chain.mean(0) - ab.sqrt() * digit[0]).abs().max().item()
        var_error = (chain.var(0) - (1 - ab)).abs().max().item()
        print(
            f"t = {step:3d}: iterated chain vs closed form, largest pixel error: "
            f"mean {mean_error:.3f}, variance {var_error:.3f} "
            f"(Monte Carlo error ~ {3 / math.sqrt(4000):.3f})"
        )
        assert mean_error < 0.08 and var_error < 0.12
print(
    f"L_T = KL(q(x_T | x_0) || N(0, I)) for this digit: "
    f"{prior_term(linear, digit).item():.2e} nats (linear), "
    f"{prior_term(cosine, digit).item():.2e} nats (cosine)"
)

fig, axes = plt.subplots(1, 8, figsize=(12, 1.8))
for ax, step in zip(axes, (0, 50, 100, 200, 300, 500, 700, 1000), strict=True):
    t = torch.tensor([step])
    xt = (
        digit
        if step == 0
        else q_sample(linear, digit, t, torch.randn(1, 784, generator=generator))
    )
    show_images(
        ((xt.reshape(1, 28, 28) + 1) / 2).clamp(0, 1),
        nrow=1,
        ax=ax,
        title=f"t = {step}",
    )
glue("ddpm_forward_digit", fig)

# %% [markdown]
# ### Erratum demonstrated: $\bar\alpha_t$, not $\alpha_t$
#
# The lecture's $x_t = \sqrt{\alpha_t}\, x_0 + \sqrt{1 - \alpha_t}\, \epsilon$ (one step's worth of
# noise) and its "$x_t = x_0 + \epsilon$" (no scaling at all), beside the closed form, on the same
# digit and the same $\epsilon$. The correlation of $x_t$ with $x_0$ over the pixels says how
# much of the digit is left.

# %%
eps_demo = torch.randn(1, 784, generator=generator)
versions = {  # name: x_t as a function of the step t
    (
        r"$\sqrt{\bar\alpha_t} x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon$"
        " (the forward process)"
    ): lambda step: q_sample(linear, digit, torch.tensor([step]), eps_demo),
    (
        r"$\sqrt{\alpha_t} x_0 + \sqrt{1 - \alpha_t}\,\epsilon$"
        " (the lecture's alpha_t)"
    ): lambda step: (
        (1 - linear.beta[step]).sqrt() * digit + linear.beta[step].sqrt() * eps_demo
    ),
    r"$x_0 + \epsilon$ (the lecture's step 3)": lambda step: digit + eps_demo,
}
steps_shown = (1, 100, 500, 1000)
fig, axes = plt.subplots(3, len(steps_shown), figsize=(7.5, 6.4))
for row, (name, noised) in enumerate(versions.items()):
    for ax, step in zip(axes[row], steps_shown, strict=True):
        xt = noised(step)
        corr = torch.corrcoef(torch.cat([xt, digit]))[0, 1].item()
        # rescaled to show the pattern, whatever its range
        image = (xt - xt.min()) / (xt.max() - xt.min())
        show_images(
            image.reshape(1, 28, 28),
            nrow=1,
            ax=ax,
            title=f"t = {step}: corr {corr:.2f}",
        )
    axes[row, 0].text(-0.1, 0.5, name, transform=axes[row, 0].transAxes, rotation=90,
                      ha="right", va="center", fontsize=8)
    print(
        f"{name}: correlation of x_T with x_0 "
        f"{torch.corrcoef(torch.cat([noised(T), digit]))[0, 1]:.3f}"
    )
fig.tight_layout()
glue("ddpm_alpha_bar_erratum", fig)
lecture_corr = torch.corrcoef(
    torch.cat([versions[list(versions)[1]](T), digit])
)[0, 1].item()
glue("ddpm_lecture_corr_T", f"{lecture_corr:.2f}")
assert lecture_corr > 0.9 > 0.1 > abs(
    torch.corrcoef(
        torch.cat([q_sample(linear, digit, torch.tensor([T]), eps_demo), digit])
    )[0, 1]
)

# %% [markdown]
# ## 2. The samplers, checked without training
#
# When the data is Gaussian, $\mathcal{N}(m, S)$, the best possible $\epsilon$-predictor is known in
# closed form (`gaussian_data_eps`): $x_t$ and $\epsilon$ are jointly Gaussian, so
# $\mathbb{E}[\epsilon \mid x_t]$ is a linear function of $x_t$. Driven by it, Algorithm 2 and DDIM
# must return samples with mean $m$ and covariance $S$ up to discretization error, which shrinks
# with the step size: this tests the samplers' every coefficient at once. With the same predictor the variational bound, summed over all $T + 1$ terms
# ($L_T, L_{T-1}, \dots, L_0$), must come close to the data's true negative log-likelihood when the
# reverse variance is the right one.

# %%
m = torch.tensor([1.0, -2.0])
S = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
exact = gaussian_data_eps(linear, m, S)
n_check = 4000
g = torch.Generator().manual_seed(seed)
checks = {
    "Algorithm 2, 1000 steps": ancestral_sample(
        exact, linear, (n_check, 2), generator=g
    )[0],
    "DDIM, 1000 steps": ddim_sample(
        exact, linear, (n_check, 2), steps=1000, generator=g
    ),
    "DDIM, 50 steps": ddim_sample(exact, linear, (n_check, 2), steps=50, generator=g),
    "DDIM, 10 steps": ddim_sample(exact, linear, (n_check, 2), steps=10, generator=g),
    "DPM-Solver++(2M), 10 steps": dpm_solver_2m_sample(
        exact, linear, (n_check, 2), steps=10, generator=g
    ),
}
print(f"{'data':>24}: mean {m.tolist()}, covariance {S.flatten().tolist()}")
for name, x in checks.items():
    mean, cov = x.mean(0), torch.cov(x.T)
    print(
        f"{name:>24}: mean {np.round(mean.tolist(), 3)}, "
        f"covariance {np.round(cov.flatten().tolist(), 3)}"
    )
    # Monte Carlo error of a variance from 4,000 draws: about 0.02
    if name != "DDIM, 10 steps":
        assert (mean - m).abs().max() < 0.08 and (cov - S).abs().max() < 0.1

x0 = m + torch.randn(2000, 2, generator=g) @ torch.linalg.cholesky(S).T
true_nll = -torch.distributions.MultivariateNormal(m, S).log_prob(x0).mean().item()
bounds = {}
for variance in ("beta", "beta_tilde"):
    bounds[variance] = prior_term(linear, x0).mean().item() + sum(
        vlb_terms(
            exact,
            linear,
            x0,
            torch.full((len(x0),), step),
            decoder="gaussian",
            variance=variance,
        )
        .mean()
        .item()
        for step in range(1, T + 1)
    )
    print(
        f"variational bound with the exact predictor and sigma_t^2 = {variance:>10}: "
        f"{bounds[variance]:.3f} nats (true NLL {true_nll:.3f})"
    )
assert 0 <= bounds["beta"] - true_nll < 0.1 and bounds["beta_tilde"] > bounds["beta"]

# %% [markdown]
# The bound is tight only with the right reverse variance. Ho et al. note that
# $\sigma_t^2 = \beta_t$ is optimal when $x_0 \sim \mathcal{N}(0, I)$ and
# $\sigma_t^2 = \tilde\beta_t$ when $x_0$ is a single fixed point; these data have unit-scale
# variance, and $\beta_t$ wins by more than a nat even with a perfect mean.
#
# Even with a perfect network, DDIM with 10 steps returns too narrow a distribution: its covariance
# is visibly smaller than $S$, far beyond the Monte Carlo error. That is the error of taking a few
# large steps along the deterministic sampling path, and it is the price of speed that section 5
# measures on MNIST. With 50 steps it is already small, and with 1000 it is gone. DPM-Solver++(2M)
# takes the same 10 network calls along the same path, but to second order in log-SNR time (see the
# [chapter](../chapters/ddpm.md)): its covariance errs a few hundredths the other way, slightly too
# wide, where DDIM's with 10 steps is a third too narrow.

# %% [markdown]
# ## 3. Training: Algorithm 1, and the three changes that pay on a CPU
#
# The $\epsilon$-network is the U-Net of `genmodels.unet` (residual blocks, group normalization, a
# sinusoidal embedding of $t$ added in every block, self-attention at $7 \times 7$). The loop below
# is Algorithm 1 line by line, except that line 5's loss is written for a network that predicts $v$
# rather than $\epsilon$ (the second change below; `EpsilonFromV` turns the trained network back
# into $\epsilon_\theta$), on minibatches with Adam (after a linear warm-up) and gradient
# norms clipped at 1, as Ho et al., with an exponential moving average of the weights (torch's
# `AveragedModel`): the averaged network is the one we sample from. Three changes to Ho et al.'s
# recipe were measured on a two-core CPU before the book adopted them, and each is derived on the
# [DDPM page](../chapters/ddpm.md): two changes to what is trained, scored by FID after the same
# number of training steps, each added to the ones before (`benchmarks/ddpm_recipes.py`), and one
# of speed (`benchmarks/unet_levers.py`). The printout below reads `results/benchmarks.json` in
# the file's alphabetical order; the changes were added in the order Ho et al.'s recipe, cosine
# schedule, v-prediction, min-SNR-5 weights, then a learning rate decayed to zero with a
# power-function average, each "+" row holding every change before it in that order. Its "20
# network calls" are the 20 steps asked for: with the cosine schedule they made 17 (the DDPM page's
# note on the spacing says why). The three changes adopted:
#
# - the **cosine schedule** (Nichol & Dhariwal 2021), plotted in section 1, which wastes fewer steps
#   on images that are already almost pure noise. Alone it scored worse than Ho et al.'s linear
#   schedule in this short run (see the printout); it pays together with the next change;
# - **v-prediction** (Salimans & Ho 2022): the network predicts $v = \sqrt{\bar\alpha_t}\,\epsilon -
#   \sqrt{1 - \bar\alpha_t}\, x_0$ rather than $\epsilon$. Its loss $\|v - v_\theta\|^2$ is the
#   $\epsilon$-loss of the same network divided by $\bar\alpha_t$, so it no longer ignores the
#   large-$t$ steps where an $\epsilon$-network's error is amplified into $\hat x_0$. `EpsilonFromV`
#   turns the network back into $\epsilon_\theta = \sqrt{1 - \bar\alpha_t}\, x_t +
#   \sqrt{\bar\alpha_t}\, v_\theta$, so every sampler and the bound below take it unchanged;
# - **bfloat16 autocast** for the network's convolutions and products (the loss stays in float32),
#   the one speed lever of `benchmarks/unet_levers.py` that was worth 1.3 times or more, on a
#   processor with bfloat16 instructions (AVX-512 BF16 or AMX, as the benchmarks' machine has) or
#   a GPU from Ampere on. Many laptops have none, and there bfloat16 is slower than float32, on
#   AVX2 many times slower (`benchmarks/bf16_isa.py`), so there the U-Net computes in float32
#   under the same autocast.
#
# The `cpu` profile's minibatches hold 64 images, not Ho et al.'s 128: over the first twelve minutes
# twice as many steps of half the size reached a lower FID (the `ddpm_batch` entry of
# `results/benchmarks.json`); over the whole budget it did no better. Its U-Net is 24 channels
# wide, not the 16 at which the recipes and speed levers were measured: on two cores a step costs about half as much again, and at every matched minute
# from the sixth on the wider network reached a lower FID (the `ddpm_width` entry). The learning rate
# ($5 \cdot 10^{-4}$ after 200 warm-up steps) and the EMA's decay (0.995, a memory of about 200
# steps, short enough for a run of a few thousand) suit a short run. The `gpu` profile
# trains a wider network on batches of 512 (at 128 images a step, a GPU spends most of its time
# launching kernels: see the [benchmarks](../chapters/benchmarks.md)) for two minutes, fewer steps
# of eight times as many images, with the same rate and warm-up and an average over about 500 steps
# (0.998). Both profiles train
# for a fixed budget of minutes, not of epochs, and every few epochs they score the averaged network
# (FID with DPM-Solver++ asked for 20 steps, section 5 explains both; the book's published runs
# predate the fix of section 5's note, and those 20 steps made 17 calls) to draw its
# time-to-quality curve. The state is saved after every epoch, so an interrupted run resumes where it stopped.

# %%
recipes = json.loads(Path("../results/benchmarks.json").read_text())["ddpm_recipes"]
print(
    f"Recipes at {recipes['steps']:,} training steps each on {recipes['hardware']} "
    f"(FID at N = {recipes['n_fid']:,}, {recipes['sampler']}; "
    f"floor {recipes['fid_floor']:.2f}):"
)
for name, result in recipes["recipes"].items():
    final = result["curve"][-1]
    print(
        f"  {name:>38}: FID {final['fid']:6.2f} "
        f"after {final['train_minutes']:.1f} training minutes"
    )

# %%
train_x = (
    load_mnist(train=True)
    .data[: sizes["n_train"]]
    .float()
    .div(255)
    .mul(2)
    .sub(1)[:, None]
)
train_x = train_x.to(device)  # (N, 1, 28, 28) in [-1, 1]
config = UNetConfig(
    channels=sizes["channels"], blocks_per_level=sizes["blocks_per_level"]
)
schedule = NoiseSchedule(T=1000, kind="cosine")  # Nichol & Dhariwal (2021)
# the network predicts v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0
prediction = "v"


def bf16():
    """Autocast: the network's convolutions and matrix products in bfloat16, the rest
    in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16)


# The classifier FID is measured with (see the evaluation chapter), and the test
# set's statistics.
classifier, _ = load_classifier(
    checkpoints / "mnist-classifier.pt", map_location=device
)
reference = FeatureStatistics(classifier.config.feature_dim).update(
    extract_features(classifier, test_set.data[:, None].to(device))
)


def fid(images: torch.Tensor) -> float:
    """FID of uint8 images (B, 1, 28, 28) against the 10,000 test images, in
    classifier features."""
    statistics = FeatureStatistics(classifier.config.feature_dim).update(
        extract_features(classifier, images.to(device))
    )
    return frechet_distance(
        reference.mean, reference.covariance, statistics.mean, statistics.covariance
    )


def to_images(x: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] (B, 1, 28, 28) -> uint8 images (B, 1, 28, 28), the data's
    own 256 levels."""
    return to_uint8(((x.float().cpu() + 1) / 2).clamp(0, 1))


def draw(
    model, sampler: str, calls: int, eta: float | None, n: int, seed: int
) -> tuple[torch.Tensor, float]:
    """n uint8 samples and the seconds they took, from Algorithm 2 (``"ancestral"``,
    T network calls), DDIM or DPM-Solver++(2M) (``"dpm"``) with ``calls`` network
    calls."""
    g = torch.Generator(device=device).manual_seed(seed)
    chunks, started = [], time.perf_counter()
    for b in range(0, n, sizes["batch"]):
        shape = (min(sizes["batch"], n - b), 1, 28, 28)
        with bf16():
            if sampler == "ancestral":
                x = ancestral_sample(
                    model, schedule, shape, generator=g, device=device
                )[0]
            elif sampler == "ddim":
                x = ddim_sample(model, schedule, shape, steps=calls, eta=eta,
                                generator=g, device=device)
            else:
                x = dpm_solver_2m_sample(model, schedule, shape, steps=calls,
                                         generator=g, device=device, clip_x0=True)
        chunks.append(to_images(x))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(chunks), time.perf_counter() - started


n_fid = sizes["n_fid"]
# real images at the same N: a yardstick, not a bound
floor = fid(load_mnist(train=True).data[:n_fid, None])


def train_ddpm(config: UNetConfig, name: str):
    """Algorithm 1 (v-prediction, cosine schedule), Adam and an EMA of the weights."""
    model, ema, optimizer, warmup = training_parts(config)
    state = TrainingRun(runs / f"{name}-last.pt", run=settings(config), model=model,
                        optimizer=optimizer, config=config, ema=ema, warmup=warmup)
    for epoch in state.steps(sizes["epochs"], minutes=sizes["train_minutes"],
                             desc=name):
        model.train()
        total = torch.zeros((), device=device)
        for batch in torch.randperm(len(train_x), device=device).split(batch_size):
            x0 = train_x[batch]  # x_0 ~ q(x_0)
            t = schedule.sample_t(len(x0), device=device)  # t ~ Uniform({1, ..., T})
            eps = torch.randn_like(x0)  # eps ~ N(0, I)
            with bf16():  # ||v - v_theta(x_t, t)||^2 at x_t = q_sample(x_0, t, eps)
                loss = loss_simple(model, schedule, x0, t, eps,
                                   prediction=prediction).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # take a gradient descent step on it
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            warmup.step()
            ema.update_parameters(model)
            total += loss.detach() * len(x0)
        log_epoch(state, epoch, ema, (total / len(train_x)).item())
    return ema.module.eval(), state.log, state.seconds


# %% [markdown]
# What the loop calls: the network, its average, Adam with a linear warm-up; the settings that
# identify the run (a saved state is resumed only by the same settings); and the record of each
# epoch, with the FID of the averaged network every few epochs, on a clock that is stopped meanwhile.


# %%
def training_parts(config: UNetConfig):
    model = UNet(config).to(device)
    ema = AveragedModel(
        model, multi_avg_fn=get_ema_multi_avg_fn(sizes["ema_decay"]), use_buffers=True
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=sizes["learning_rate"])
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / sizes["warmup_steps"])
    )
    return model, ema, optimizer, warmup


def settings(config: UNetConfig) -> dict:
    return dict(
        config=config,
        schedule=schedule.kind,
        prediction=prediction,
        seed=seed,
        n_train=len(train_x),
        batch_size=batch_size,
        **{
            k: sizes[k]
            for k in (
                "epochs",
                "train_minutes",
                "learning_rate",
                "warmup_steps",
                "ema_decay",
            )
        },
    )


def log_epoch(state: TrainingRun, epoch: int, ema, loss: float):
    state.log.append(dict(epoch=epoch + 1, loss=loss, seconds=state.seconds))
    # time to quality: the averaged network, as published
    if (epoch + 1) % sizes["fid_every"] == 0:
        with state.paused():  # scoring is not training time
            images, _ = draw(
                EpsilonFromV(ema.module.eval(), schedule), "dpm", 20, None, n_fid, seed
            )
            state.log[-1]["fid_dpm20"] = fid(images)


# %%
published_path = published / "ddpm.pt"
if train_from_scratch:
    network, history, train_seconds = train_ddpm(config, f"ddpm-{profile}")
    # every sampler below takes an epsilon-network
    model = EpsilonFromV(network, schedule)
else:
    model, schedule, checkpoint = load_ddpm(
        checkpoints / "ddpm.pt", map_location=device
    )
    history, train_seconds = (
        checkpoint["extra"]["record"]["history"],
        checkpoint["extra"]["record"]["train_seconds"],
    )
params = sum(p.numel() for p in model.parameters())
print(
    f"{len(history)} epochs "
    f"({len(history) * math.ceil(len(train_x) / batch_size):,} steps) in "
    f"{train_seconds / 60:.1f} minutes on {hardware(device)}; {params:,} parameters; "
    f"final training loss {history[-1]['loss']:.4f}"
)

# %% [markdown]
# Left, the training loss, $\|v - v_\theta\|^2$ per pixel. Middle, the time-to-quality curve: FID of
# the averaged network against training minutes, with the floor of real images at the same $N$.
# Right, how hard the task is at each $t$, measured as the error of the *noise* prediction
# $\|\epsilon - \epsilon_\theta(x_t, t)\|^2$ on test images: at large $t$, $x_t$ is almost all noise
# and $\epsilon \approx x_t$ is easy to read off; at small $t$ the noise is a faint layer over a
# clean digit and must be told apart from the digit's own edges, so the $\epsilon$-error is largest
# there, although the *image* is easiest to guess there: $x_0 \approx x_t$. The
# [chapter](../chapters/ddpm.md) explains why the bound,
# on the linear schedule, weighs exactly these
# small-$t$ terms most (on the cosine schedule used here it also weighs the last few steps heavily,
# where this error is tiny).

# %%
test_x = test_set.data.float().div(255).mul(2).sub(1)[:, None]
probe_t = [1, 2, 5, 10, 20, 50, 100, 200, 400, 600, 800, 1000]
probe = test_x[:512].to(device)
with torch.no_grad(), bf16():
    loss_by_t = [
        loss_simple(
            model,
            schedule,
            probe,
            torch.full((len(probe),), s, device=device),
            torch.randn(
                probe.shape, generator=torch.Generator().manual_seed(s)
            ).to(device),
        )
        .mean()
        .item()
        for s in probe_t
    ]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.4))
axes[0].plot([h["epoch"] for h in history], [h["loss"] for h in history], "o-")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel(r"$\|v - v_\theta\|^2$ per pixel, training")
scored = [h for h in history if "fid_dpm20" in h]
axes[1].semilogy(
    [h["seconds"] / 60 for h in scored],
    [h["fid_dpm20"] for h in scored],
    "o-",
    label="EMA network, DPM-Solver++ (20 calls)",
)
axes[1].axhline(floor, color="gray", ls="--", label=f"real images, same N = {n_fid:,}")
axes[1].set_xlabel(f"training minutes ({hardware(device)})")
axes[1].set_ylabel("FID (classifier features)")
axes[1].legend(fontsize=8)
axes[2].loglog(probe_t, loss_by_t, "o-")
axes[2].set_xlabel("t")
axes[2].set_ylabel(r"$\|\epsilon - \epsilon_\theta(x_t, t)\|^2$ per pixel, test images")
fig.tight_layout()
for h in scored:
    print(
        f"after {h['seconds'] / 60:5.1f} training minutes (epoch {h['epoch']:2d}): "
        f"FID {h['fid_dpm20']:.2f}"
    )
glue("ddpm_training", fig)
glue("ddpm_train_minutes", f"{train_seconds / 60:.0f}")
glue("ddpm_train_steps", f"{len(history) * math.ceil(len(train_x) / batch_size):,}")
glue("ddpm_hardware", hardware(device))
glue("ddpm_profile", profile)

# %% [markdown]
# ## 4. Sampling: Algorithm 2, DDIM and DPM-Solver++
#
# Algorithm 2 walks all $T = 1000$ steps of the reverse chain, each a call of the network and a
# draw of fresh noise ($\sigma_t^2 = \beta_t$, no noise at the last step). DDIM uses the same
# network on a subsequence of the timesteps. With $\eta = 0$ it adds no noise at all: the same
# starting $x_T$ always gives the same image. With $\eta = 1$ it draws fresh noise at every step,
# of the variance (the chapter's $\sigma_{t \to s}^2$) that makes it Algorithm 2 (with
# $\sigma_t^2 = \tilde\beta_t$) when no step is skipped. DPM-Solver++(2M) follows the same
# deterministic path as DDIM with $\eta = 0$ (the probability-flow ODE), but to second order, with
# steps evenly spaced in log-SNR and the predicted $\hat x_0$ clipped to the images' range
# $[-1, 1]$. (Runs made before `logsnr_timesteps` returned as many timesteps as asked, as the
# book's published runs of this notebook were, made fewer network calls than DPM-Solver++'s labels
# say: its 10, 20 and 50 steps made 9, 17 and 38, and its points in the figure below sit at the
# steps asked; see the chapter's note on the spacing.) Samples
# from the same seed for each:

# %%
samplers = [("ancestral", T, None)]  # (sampler, network calls, eta)
samplers += [("ddim", k, eta) for eta in (0.0, 1.0) for k in (10, 20, 50, 100, T)]
samplers += [("dpm", k, None) for k in (5, 10, 20, 50)]


def describe(sampler: str, calls: int, eta: float | None) -> str:
    if sampler == "ancestral":
        return f"Algorithm 2, {calls} calls"
    return (
        f"DDIM, η = {eta:g}, {calls} calls"
        if sampler == "ddim"
        else f"DPM-Solver++(2M), {calls} calls"
    )


label = {key: describe(*key) for key in samplers}
shown = [
    ("ancestral", T, None),
    ("ddim", 10, 0.0),
    ("ddim", 50, 0.0),
    ("ddim", 20, 1.0),
    ("ddim", 50, 1.0),
    ("dpm", 5, None),
    ("dpm", 10, None),
    ("dpm", 20, None),
]
fig, axes = plt.subplots(2, 4, figsize=(15, 4.6))
for ax, key in zip(axes.flat, shown, strict=True):
    show_images(
        draw(model, *key, n=sizes["n_grid"], seed=seed)[0].float() / 255,
        nrow=8,
        ax=ax,
        title=label[key],
    )
fig.tight_layout()
glue("ddpm_samples", fig)

# %% [markdown]
# ### The reverse trajectory, and the forward process beside it
#
# Top: one run of Algorithm 2 from $x_T$ to $x_0$, every 100 steps. Middle: the network's current
# guess of the clean image at the same steps, $\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,
# \epsilon_\theta(x_t, t)) / \sqrt{\bar\alpha_t}$: a blurred average of the digits $x_t$ is still
# compatible with at large $t$, sharpening into one digit as the noise falls. Bottom: the forward
# process applied to the result, which undoes the trajectory in law.

# %%
g = torch.Generator(device=device).manual_seed(seed + 1)
with bf16():
    x0_sample, trajectory = ancestral_sample(
        model,
        schedule,
        (1, 1, 28, 28),
        generator=g,
        device=device,
        trajectory_every=100,
    )
steps_shown = list(range(T, -1, -100))  # the trajectory holds x_1000, x_900, ..., x_0
guesses = []
with torch.no_grad(), bf16():
    for s, xt in zip(steps_shown, trajectory, strict=True):
        if s == 0:
            guesses.append(xt)
            continue
        t = torch.tensor([s], device=device)
        guesses.append(
            predict_x0(schedule, xt.to(device), t, model(xt.to(device), t)).cpu()
        )
forward = [
    x0_sample.cpu()
    if s == 0
    else q_sample(schedule, x0_sample.cpu(), torch.tensor([s]))
    for s in steps_shown
]
fig, axes = plt.subplots(3, len(steps_shown), figsize=(13, 3.8))
for column, s in enumerate(steps_shown):
    for row, images in enumerate((trajectory, guesses, forward)):
        show_images(
            ((images[column].reshape(1, 28, 28) + 1) / 2).clamp(0, 1),
            nrow=1,
            ax=axes[row, column],
        )
    axes[0, column].set_title(f"t = {s}", fontsize=9)
for row, name in enumerate(("reverse: $x_t$", r"guess $\hat x_0$", "forward: $x_t$")):
    axes[row, 0].text(-4, 14, name, ha="right", va="center", fontsize=9)
fig.tight_layout()
glue("ddpm_trajectory", fig)

# %% [markdown]
# ## 5. How good, and how fast? FID against the number of network calls
#
# Every sampler draws the same number $N$ of images from the same seed. Each is scored by the
# book's FID, the Fréchet distance between Gaussians fitted to the features of the project's MNIST
# classifier (see the [evaluation chapter](../chapters/evaluation.md)), against the 10,000 MNIST
# test images. FID is biased upwards at small $N$, so the row of real training images at the same
# $N$ is a yardstick, not a bound: it is one draw of $N$ images, and a good sampler can score below
# it. A network call costs the same in every sampler, so the calls are the cost;
# wall time is measured too and given per 1,000 samples. (DDIM with 100 calls is scored only in the
# `gpu` profile.)

# %%
most_ddim_calls = 100 if profile == "gpu" else 50
fid_samplers = [
    key for key in samplers if key[0] != "ddim" or key[1] <= most_ddim_calls
]
speed = []
for key in fid_samplers:
    images, seconds = draw(model, *key, n=n_fid, seed=seed)
    speed.append(
        dict(
            sampler=label[key],
            family=key[0],
            calls=key[1],
            eta=key[2],
            fid=fid(images),
            seconds_per_1k=seconds / n_fid * 1000,
        )
    )
    print(
        f"{label[key]:>30}: FID {speed[-1]['fid']:7.3f}   "
        f"{speed[-1]['seconds_per_1k']:7.2f} s per 1,000 samples"
    )
print(f"{'real training images':>30}: FID {floor:7.3f}   (the floor at N = {n_fid:,})")

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.8))
for family, eta, marker, name in (
    ("ddim", 0.0, "o-", "DDIM, η = 0"),
    ("ddim", 1.0, "^-", "DDIM, η = 1"),
    ("dpm", None, "D-", "DPM-Solver++(2M)"),
):
    rows = [r for r in speed if r["family"] == family and r["eta"] == eta]
    ax.loglog([r["calls"] for r in rows], [r["fid"] for r in rows], marker, label=name)
ancestral = speed[0]
ax.loglog([ancestral["calls"]], [ancestral["fid"]], "s", ms=8, label="Algorithm 2")
ax.axhline(floor, color="gray", ls="--", label=f"real images, same N = {n_fid:,}")
ax.set_xlabel("network calls per sample")
ax.set_ylabel("FID (classifier features)")
ax.legend(fontsize=8)
glue("ddpm_fid_vs_calls", fig)
by_key = {(r["family"], r["calls"], r["eta"]): r for r in speed}
for name, key in (
    ("alg2", ("ancestral", T, None)),
    ("dpm20", ("dpm", 20, None)),
    ("dpm10", ("dpm", 10, None)),
    ("ddim20_eta0", ("ddim", 20, 0.0)),
    ("ddim20_eta1", ("ddim", 20, 1.0)),
):
    glue(f"ddpm_fid_{name}", f"{by_key[key]['fid']:.1f}")
glue("ddpm_fid_floor", f"{floor:.1f}")
glue("ddpm_n_fid", f"{n_fid:,}")
glue(
    "ddpm_dpm20_seconds_per_10k",
    f"{by_key[('dpm', 20, None)]['seconds_per_1k'] * 10:.0f}",
)
for key in (("ddim", 20, 0.0), ("ddim", 20, 1.0), ("dpm", 20, None), ("dpm", 10, None)):
    r = by_key[key]
    print(
        f"{r['sampler']:>30}: "
        f"FID {r['fid'] / ancestral['fid']:.2f} x that of Algorithm 2, "
        f"in {ancestral['seconds_per_1k'] / r['seconds_per_1k']:.0f} x less time"
    )

# %% [markdown]
# Time falls in proportion to the number of calls actually made for every sampler (in a run made
# before `logsnr_timesteps` returned as many timesteps as asked, as the book's published runs were,
# DPM-Solver++'s 10, 20 and 50 steps made 9, 17 and 38 calls, as its times show, and the ratios
# printed above are for those calls; see section 4); quality does not. The two
# deterministic samplers, DDIM with $\eta = 0$ and DPM-Solver++, level off at about the same FID by
# 50 calls, above Algorithm 2's. On Gaussian data (section 2) their error was discretization, which
# more steps remove, and the second-order solver removed it faster; here what remains is the
# network's own error, which a deterministic path carries to the end. The stochastic DDIM
# ($\eta = 1$) draws fresh noise at every step, as Algorithm 2 does, and that noise washes out part
# of the network's errors: the printout above says how close it comes to Algorithm 2 with 20 calls,
# a fiftieth of the cost. At 5 calls, DPM-Solver++'s steps are too long for its extrapolation. The
# [DDPM chapter](../chapters/ddpm.md) derives the solvers, and the [evaluation](07_evaluation.ipynb)
# samples the DDPM with SDE-DPM-Solver++(2M), the second-order form of DDIM with $\eta = 1$, at
# 20 calls on trailing timesteps.

# %% [markdown]
# ## 6. The likelihood: the variational bound in bits per dimension
#
# The chapter's bound $L = L_T + \sum_{t \ge 2} L_{t-1} + L_0$ is a sum of $T + 1$ terms: $L_T$ (the prior term, almost 0 here),
# $L_{t-1}$ for $t = 2, \dots, T$ (KL divergences between Gaussians, in closed form) and $L_0$, the
# discretized Gaussian decoder that turns the density into a probability for each of the 256
# grey levels. We sum all $T + 1$ terms (no sampling of $t$), for each test image, each estimated
# with one draw of $x_t$.
# Divided by $784 \ln 2$ it is a bound on the code length in bits per pixel. We compute it for both
# fixed variances: $\beta_t$ (the choice for sampling) and $\tilde\beta_t$, which suits data that
# are nearly deterministic given $x_t$, as MNIST's mostly black pixels are.

# %% [markdown]
# Before summing, the weights that $L_\mathrm{simple}$ drops: with $\sigma_t^2 = \beta_t$, term
# $L_{t-1}$ of the bound is $\lVert \epsilon - \epsilon_\theta \rVert^2$ times
# $\beta_t / (2 \alpha_t (1 - \bar\alpha_t))$, for Ho et al.'s linear schedule and for the cosine one.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.2))
elbo_weight = {}
for name, s in (("linear (Ho et al.)", linear), ("cosine", cosine)):
    beta, alpha, alpha_bar = (
        s.beta[1:].double(),
        1 - s.beta[1:].double(),
        s.alpha_bar[1:].double(),
    )
    elbo_weight[name] = (beta / (2 * alpha * (1 - alpha_bar))).numpy()
    # t >= 2: L_0 is the decoder's term
    ax.loglog(ts[1:], elbo_weight[name][1:], label=name)
ax.set_xlabel("t")
ax.set_ylabel(r"$\beta_t / (2 \alpha_t (1 - \bar\alpha_t))$")
ax.legend()
w = elbo_weight["linear (Ho et al.)"]
low = int(np.argmin(w[99:])) + 100  # the smallest weight from t = 100 on, and where
print(
    f"linear schedule: weight {w[1]:.3f} at t = 2, {w[9]:.3f} at t = 10, "
    f"{w[99]:.4f} at t = 100; "
    f"smallest {w[low - 1]:.4f} at t = {low}, {w[-1]:.4f} at t = {T}"
)
glue("ddpm_elbo_weights", fig)
glue("ddpm_weight_t2", f"{w[1]:.2f}")
glue("ddpm_weight_t10", f"{w[9]:.2f}")
glue("ddpm_weight_t100", f"{w[99]:.3f}")
glue("ddpm_weight_min", f"{w[low - 1]:.3f}")
glue("ddpm_weight_min_t", f"{low}")
glue("ddpm_weight_T", f"{w[-1]:.3f}")


# %%
def nll_bits_per_dim(x0: torch.Tensor, variance: str) -> torch.Tensor:
    """The variational bound L_T + sum_t L_{t-1} + L_0 per image, in bits per
    dimension: (B,)."""
    total = prior_term(schedule, x0)
    with torch.no_grad():
        for step in range(1, T + 1):
            t = torch.full((len(x0),), step, device=x0.device)
            total = total + vlb_terms(
                model, schedule, x0, t, decoder="discretized", variance=variance
            )
    return total / (x0[0].numel() * math.log(2))


nll_x = test_x[: sizes["n_nll"]].to(device)
torch.manual_seed(seed)
nll = {}
for variance in ("beta_tilde", "beta"):
    bits = torch.cat(
        [nll_bits_per_dim(chunk, variance) for chunk in nll_x.split(sizes["batch"])]
    ).cpu()
    nll[variance] = (bits.mean().item(), bits.std().item() / math.sqrt(len(bits)))
    print(
        f"sigma_t^2 = {variance:>10}: "
        f"NLL <= {nll[variance][0]:.3f} ± {nll[variance][1]:.3f} bits/dim "
        f"({len(bits)} test images)"
    )
glue("ddpm_nll_n", f"{len(nll_x)}")

# %% [markdown]
# ### Erratum demonstrated: the bound averages over the data, not over the model
#
# The lecture's left-hand side, $\mathbb{E}_\theta[-\log p_\theta(x_0)]$, read as an average over the
# model's own samples, is the model's entropy, not its fit to the data. The same bound
# ($\sigma_t^2 = \tilde\beta_t$) on samples of the model, drawn with DDIM ($\eta = 1$, 20 calls):

# %%
torch.manual_seed(seed)
own, _ = draw(model, "ddim", 20, 1.0, len(nll_x), seed + 1)
own_x = (own.float() / 255 * 2 - 1).to(device)
own_bits = torch.cat(
    [nll_bits_per_dim(chunk, "beta_tilde") for chunk in own_x.split(sizes["batch"])]
).cpu()
print(
    f"bound on the model's own samples: {own_bits.mean():.3f} bits/dim; on test images "
    f"{nll['beta_tilde'][0]:.3f} ({len(own_bits)} images each)"
)
glue("ddpm_own_samples_bits", f"{own_bits.mean():.2f}")

# %% [markdown]
# The number on the model's samples measures how sure the model is of what it makes, not how well
# it fits the data. (The samples come from DDIM in 20 calls, not from the 1000-step chain the bound
# is of, so it bounds their cross-entropy under the model, $H(r) + \mathrm{KL}(r \,\|\, p_\theta)$ for
# the sampler's distribution $r$: the model's entropy only when $r = p_\theta$.) A model that drew
# one perfect digit over and over could make it as small as it likes while missing nine digits out
# of ten. Only the average over the data measures fit, and that is the bound above.
#
# For scale: storing the 256 grey levels of a pixel without a model takes 8 bits. The bound is
# loose in the places the chapter predicts: the variances are fixed rather than learned, and the
# network was trained on the $v$-loss, which, like $L_\mathrm{simple}$, gives the small-$t$ terms
# that dominate the bound far less weight than the bound does. (On CIFAR-10, Ho et al. report $\le 3.75$ bits/dim for their
# $L_\mathrm{simple}$ model.)
#
# ## 7. Publishing the network
#
# The EMA weights go to `checkpoints/ddpm.pt` with their provenance, and the
# [evaluation notebook](07_evaluation.ipynb) measures them beside the other models.

# %%
if train_from_scratch:
    record = dict(
        profile=profile,
        hardware=hardware(device),
        train_seconds=round(train_seconds, 1),
        epochs=len(history),
        steps=len(history) * math.ceil(len(train_x) / batch_size),
        batch_size=batch_size,
        learning_rate=sizes["learning_rate"],
        warmup_steps=sizes["warmup_steps"],
        ema_decay=sizes["ema_decay"],
        schedule=f"{schedule.kind}, T = {T}",
        history=history,
        prediction=prediction,
        noise_schedule=dict(kind=schedule.kind, T=T),
        autocast="bfloat16",
        samplers=speed,
        fid_floor=floor,
        n_fid=n_fid,
        nll_bits_per_dim={k: v[0] for k, v in nll.items()},
        nll_standard_error={k: v[1] for k, v in nll.items()},
        n_nll=len(nll_x),
        notebook_seconds=round(time.perf_counter() - notebook_started, 1),
    )
    summary = publish_checkpoint(
        published_path, network, config=config, record=record, step=record["steps"]
    )
    (runs / f"ddpm-{profile}-last.pt").unlink(missing_ok=True)
    print(
        f"published {summary['file']}: sha256 {summary['sha256'][:16]}..., "
        f"{summary['params']:,} parameters"
    )
