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
# $\epsilon$-network on MNIST with Algorithm 1, samples with Algorithm 2 and with DDIM at several
# step counts, measures what each costs and how good its samples are, reports the model's
# negative log-likelihood in bits per dimension, and publishes the weights.

# %% tags=["remove-cell"]
# Setup: on Colab, fetch this book (package, checkpoints) and install it; elsewhere `make` did it.
import os
import subprocess
import sys

REPOSITORY = "https://github.com/genmodels-book/a-tale-of-vaes-wgans-ddpms"
if "google.colab" in sys.modules:
    subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORY, "/content/book"], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "/content/book"], check=True)
    os.chdir("/content/book/notebooks")

# %% tags=["parameters"]
profile = None  # "smoke", "cpu", "gpu" or "auto"; None reads $GENMODELS_PROFILE (default "auto")
seed = 0  # seeds Python, NumPy and torch
train_from_scratch = True  # False: load the published epsilon-network instead of training

# %%
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from genmodels.data import load_mnist
from genmodels.diffusion import (
    NoiseSchedule,
    ancestral_sample,
    ddim_sample,
    gaussian_data_eps,
    loss_simple,
    predict_x0,
    prior_term,
    q_sample,
    vlb_terms,
)
from genmodels.features import extract_features, load_classifier
from genmodels.metrics import FeatureStatistics, frechet_distance, to_uint8
from genmodels.plotting import show_images
from genmodels.train import (
    hardware,
    load_checkpoint,
    pick_device,
    progress,
    publish_checkpoint,
    resolve_profile,
    save_checkpoint,
    seed_everything,
)
from genmodels.unet import UNet, UNetConfig, load_unet

profile = resolve_profile(profile)
seed_everything(seed)
device = pick_device()
sizes = {  # what each compute profile affords; `batch` is the sampling chunk
    "smoke": dict(n_train=512, epochs=1, train_minutes=None, channels=16, blocks_per_level=1,
                  learning_rate=2e-4, warmup_steps=1_000, ema_decay=0.999,
                  n_grid=8, n_fid=130, n_nll=2, batch=128),
    "cpu": dict(n_train=60_000, epochs=6, train_minutes=None, channels=16, blocks_per_level=1,
                learning_rate=5e-4, warmup_steps=200, ema_decay=0.995,
                n_grid=32, n_fid=500, n_nll=20, batch=128),
    "gpu": dict(n_train=60_000, epochs=200, train_minutes=4.0, channels=64, blocks_per_level=2,
                learning_rate=2e-4, warmup_steps=1_000, ema_decay=0.999,
                n_grid=32, n_fid=2_000, n_nll=500, batch=2_000),
}[profile]
batch_size = 128
published = Path("../checkpoints") if profile != "smoke" else Path(tempfile.mkdtemp())
runs = Path("../runs") if profile != "smoke" else Path(tempfile.mkdtemp())  # resumable state
schedule = NoiseSchedule(T=1000, kind="linear")  # beta from 1e-4 to 0.02, as Ho et al.
T = schedule.T
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
for name, s in (("linear (Ho et al.)", schedule), ("cosine (Nichol & Dhariwal)", cosine)):
    ab = s.alpha_bar[1:].double().numpy()
    axes[0].plot(ts, np.sqrt(ab), label=name)
    axes[1].semilogy(ts, ab / (1 - ab), label=name)
axes[0].set_ylabel(r"$\sqrt{\bar\alpha_t}$, the signal's weight in $x_t$")
axes[1].set_ylabel(r"signal-to-noise ratio $\bar\alpha_t / (1 - \bar\alpha_t)$")
for ax in axes:
    ax.set_xlabel("t")
    ax.legend()
fig.tight_layout()
print(f"alpha_bar_T = {schedule.alpha_bar[T].item():.2e}; KL(q(x_T | x_0) || N(0, I)) for an MNIST digit: "
      f"{prior_term(schedule, torch.zeros(1, 784) + 0.5).item():.2e} nats")

# %% [markdown]
# The closed form $q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}\, x_0, (1 - \bar\alpha_t) I)$
# against the chain it summarizes: we run the one-step transitions
# $x_s = \sqrt{1 - \beta_s}\, x_{s-1} + \sqrt{\beta_s}\, z$ from $s = 1$ to $t$ on 4,000 copies of one
# digit and compare the per-pixel mean and variance with the closed form.

# %%
test_set = load_mnist(train=False)
digit = test_set.data[0].float().div(255).mul(2).sub(1).reshape(1, 784)  # x_0 in [-1, 1]
generator = torch.Generator().manual_seed(seed)
chain = digit.expand(4000, 784).clone()
for step in range(1, 501):
    chain = (1 - schedule.beta[step]).sqrt() * chain + schedule.beta[step].sqrt() * torch.randn(
        chain.shape, generator=generator)
    if step in (50, 200, 500):
        ab = schedule.alpha_bar[step]
        mean_error = (chain.mean(0) - ab.sqrt() * digit[0]).abs().max().item()
        var_error = (chain.var(0) - (1 - ab)).abs().max().item()
        print(f"t = {step:3d}: iterated chain vs closed form, largest pixel error: mean {mean_error:.3f}, "
              f"variance {var_error:.3f} (Monte Carlo error ~ {3 / math.sqrt(4000):.3f})")
        assert mean_error < 0.08 and var_error < 0.12

fig, axes = plt.subplots(1, 8, figsize=(12, 1.8))
for ax, step in zip(axes, (0, 50, 100, 200, 300, 500, 700, 1000), strict=True):
    t = torch.tensor([step])
    xt = digit if step == 0 else q_sample(schedule, digit, t, torch.randn(1, 784, generator=generator))
    show_images(((xt.reshape(1, 28, 28) + 1) / 2).clamp(0, 1), nrow=1, ax=ax, title=f"t = {step}")

# %% [markdown]
# ## 2. The samplers, checked without training
#
# When the data is Gaussian, $\mathcal{N}(m, S)$, the best possible $\epsilon$-predictor is known in
# closed form (`gaussian_data_eps`): $x_t$ and $\epsilon$ are jointly Gaussian, so
# $\mathbb{E}[\epsilon \mid x_t]$ is a linear function of $x_t$. Driven by it, Algorithm 2 and DDIM
# must return samples with mean $m$ and covariance $S$: this tests the samplers' every coefficient
# at once. With the same predictor the variational bound, summed over all $T$ terms, must come
# close to the data's true negative log-likelihood.

# %%
m = torch.tensor([1.0, -2.0])
S = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
exact = gaussian_data_eps(schedule, m, S)
n_check = 4000
g = torch.Generator().manual_seed(seed)
checks = {
    "Algorithm 2, 1000 steps": ancestral_sample(exact, schedule, (n_check, 2), generator=g)[0],
    "DDIM, 1000 steps": ddim_sample(exact, schedule, (n_check, 2), steps=1000, generator=g),
    "DDIM, 50 steps": ddim_sample(exact, schedule, (n_check, 2), steps=50, generator=g),
    "DDIM, 10 steps": ddim_sample(exact, schedule, (n_check, 2), steps=10, generator=g),
}
print(f"{'data':>24}: mean {m.tolist()}, covariance {S.flatten().tolist()}")
for name, x in checks.items():
    mean, cov = x.mean(0), torch.cov(x.T)
    print(f"{name:>24}: mean {np.round(mean.tolist(), 3)}, covariance {np.round(cov.flatten().tolist(), 3)}")
    if "10 steps" not in name:  # Monte Carlo error of a variance from 4,000 draws: about 0.02
        assert (mean - m).abs().max() < 0.08 and (cov - S).abs().max() < 0.1

x0 = m + torch.randn(2000, 2, generator=g) @ torch.linalg.cholesky(S).T
true_nll = -torch.distributions.MultivariateNormal(m, S).log_prob(x0).mean().item()
bounds = {}
for variance in ("beta", "beta_tilde"):
    bounds[variance] = prior_term(schedule, x0).mean().item() + sum(
        vlb_terms(exact, schedule, x0, torch.full((len(x0),), step), decoder="gaussian", variance=variance)
        .mean().item() for step in range(1, T + 1))
    print(f"variational bound with the exact predictor and sigma_t^2 = {variance:>10}: "
          f"{bounds[variance]:.3f} nats (true NLL {true_nll:.3f})")
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
# measures on MNIST. With 50 steps it is already small, and with 1000 it is gone.

# %% [markdown]
# ## 3. Training with Algorithm 1
#
# The $\epsilon$-network is the U-Net of `genmodels.unet` (residual blocks, group normalization, a
# sinusoidal embedding of $t$ added in every block, self-attention at $7 \times 7$). The loop below
# is Algorithm 1 line by line, on minibatches of 128 with Adam (after a linear warm-up) and gradient
# norms clipped at 1, as Ho et al. We also keep an exponential moving average of the weights
# (torch's `AveragedModel` with an EMA rule): the averaged network is the one we sample from. Ho et
# al.'s learning rate $2 \cdot 10^{-4}$, 1,000 warm-up steps and decay 0.999 are the `gpu` profile's;
# the `cpu` profile, with six epochs (2,814 steps, about half an hour on two cores), takes larger
# steps ($5 \cdot 10^{-4}$ after 200 warm-up steps) and a shorter average (decay 0.995, a memory
# of about 200 steps), since an average over 1,000 steps would still carry the untrained network's
# weights at the end. (Five epochs are not enough: a run stopped after five scored 17-25% worse
# FID with every sampler than the six-epoch network.) The state is saved after every epoch, so an interrupted run
# resumes where it stopped.

# %%
train_x = load_mnist(train=True).data[: sizes["n_train"]].float().div(255).mul(2).sub(1)[:, None]
train_x = train_x.to(device)  # (N, 1, 28, 28) in [-1, 1]
config = UNetConfig(channels=sizes["channels"], blocks_per_level=sizes["blocks_per_level"])


def train_ddpm(config: UNetConfig, name: str):
    """Algorithm 1 with Adam and an EMA of the weights; return the EMA network, history, seconds."""
    model = UNet(config).to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(sizes["ema_decay"]), use_buffers=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=sizes["learning_rate"])
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / sizes["warmup_steps"]))
    history, seconds, start_epoch = [], 0.0, 0
    resume_path = runs / f"{name}-last.pt"
    if resume_path.exists():
        state = load_checkpoint(resume_path, model, optimizer=optimizer, restore_rng=True)
        ema.load_state_dict(state["extra"]["ema"])
        warmup.load_state_dict(state["extra"]["warmup"])
        history, seconds, start_epoch = state["extra"]["history"], state["extra"]["seconds"], state["step"]
        print(f"resuming {name} after epoch {start_epoch}")
    for epoch in progress(range(start_epoch, sizes["epochs"]), desc=name, initial=start_epoch,
                          total=sizes["epochs"]):
        if sizes["train_minutes"] is not None and seconds > 60 * sizes["train_minutes"]:
            print(f"stopping after epoch {epoch}: the {sizes['train_minutes']}-minute budget is spent")
            break
        started = time.perf_counter()
        model.train()
        total = torch.zeros((), device=device)
        for batch in torch.randperm(len(train_x), device=device).split(batch_size):
            x0 = train_x[batch]  # x_0 ~ q(x_0)
            t = schedule.sample_t(len(x0), device=device)  # t ~ Uniform({1, ..., T})
            eps = torch.randn_like(x0)  # eps ~ N(0, I)
            # ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2
            loss = loss_simple(model, schedule, x0, t, eps).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # take a gradient descent step on it
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            warmup.step()
            ema.update_parameters(model)
            total += loss.detach() * len(x0)
        seconds += time.perf_counter() - started
        history.append(dict(epoch=epoch + 1, loss=(total / len(train_x)).item(), seconds=seconds))
        save_checkpoint(resume_path, model, optimizer=optimizer, config=config, step=epoch + 1,
                        extra=dict(ema=ema.state_dict(), warmup=warmup.state_dict(), history=history,
                                   seconds=seconds))
    return ema.module.eval(), history, seconds


# %%
published_path = published / "ddpm.pt"
if train_from_scratch:
    model, history, train_seconds = train_ddpm(config, f"ddpm-{profile}")
else:
    model, checkpoint = load_unet(published_path, map_location=device)
    history, train_seconds = checkpoint["extra"]["record"]["history"], checkpoint["extra"]["record"]["train_seconds"]
params = sum(p.numel() for p in model.parameters())
print(f"{len(history)} epochs ({len(history) * math.ceil(len(train_x) / batch_size):,} steps) in "
      f"{train_seconds / 60:.1f} minutes on {hardware(device)}; {params:,} parameters; "
      f"final training loss {history[-1]['loss']:.4f}")

# %% [markdown]
# The loss is the mean squared error of the predicted noise per pixel. A network that predicts 0
# scores 1; the loss falls well below that within the first epoch and then creeps down. How hard
# the task is depends on $t$: at large $t$, $x_t$ is almost all noise and $\epsilon \approx x_t$ is
# easy to read off; at small $t$ the noise is a faint layer over a clean digit and must be told
# apart from the digit's own edges.

# %%
test_x = test_set.data.float().div(255).mul(2).sub(1)[:, None]
probe_t = [1, 2, 5, 10, 20, 50, 100, 200, 400, 600, 800, 1000]
probe = test_x[:512].to(device)
with torch.no_grad():
    loss_by_t = [loss_simple(model, schedule, probe, torch.full((len(probe),), s, device=device),
                             torch.randn(probe.shape, generator=torch.Generator().manual_seed(s)).to(device))
                 .mean().item() for s in probe_t]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].plot([h["epoch"] for h in history], [h["loss"] for h in history], "o-")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel(r"$L_\mathrm{simple}$, training (epoch mean)")
axes[1].loglog(probe_t, loss_by_t, "o-")
axes[1].set_xlabel("t")
axes[1].set_ylabel(r"$\|\epsilon - \epsilon_\theta(x_t, t)\|^2$ per pixel, test images")
fig.tight_layout()

# %% [markdown]
# ## 4. Sampling: Algorithm 2 and DDIM
#
# Algorithm 2 walks all $T = 1000$ steps of the reverse chain, each a call of the network and a
# draw of fresh noise ($\sigma_t^2 = \beta_t$, no noise at the last step). DDIM uses the same
# network on a subsequence of the timesteps. With $\eta = 0$ it adds no noise at all: the same
# starting $x_T$ always gives the same image. With $\eta = 1$ it draws fresh noise at every step,
# of the variance {eq}`ddim-sigma` that makes it Algorithm 2 (with $\sigma_t^2 = \tilde\beta_t$)
# when no step is skipped. Samples from the same seed for each:

# %%
def to_images(x: torch.Tensor) -> torch.Tensor:
    """Samples in [-1, 1] (B, 1, 28, 28) -> uint8 images (B, 1, 28, 28), the data's own 256 levels."""
    return to_uint8(((x.float().cpu() + 1) / 2).clamp(0, 1))


def draw(sampler: str, steps: int, eta: float | None, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """n uint8 samples from Algorithm 2 (``sampler="ancestral"``) or DDIM, and the seconds they took."""
    g = torch.Generator(device=device).manual_seed(seed)
    chunks, started = [], time.perf_counter()
    for b in range(0, n, sizes["batch"]):
        shape = (min(sizes["batch"], n - b), 1, 28, 28)
        if sampler == "ancestral":
            x = ancestral_sample(model, schedule, shape, generator=g, device=device)[0]
        else:
            x = ddim_sample(model, schedule, shape, steps=steps, eta=eta, generator=g, device=device)
        chunks.append(to_images(x))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(chunks), time.perf_counter() - started


samplers = [("ancestral", T, None)]  # (sampler, steps, eta)
samplers += [("ddim", k, eta) for eta in (0.0, 1.0) for k in (10, 20, 50, 100, T)]
label = {(s, k, eta): "Algorithm 2, 1000 steps" if s == "ancestral" else f"DDIM, {k} steps, η = {eta:g}"
         for s, k, eta in samplers}
shown = [("ancestral", T, None), ("ddim", 10, 0.0), ("ddim", 50, 0.0), ("ddim", T, 0.0),
         ("ddim", 10, 1.0), ("ddim", 20, 1.0), ("ddim", 50, 1.0), ("ddim", 100, 1.0)]
fig, axes = plt.subplots(2, 4, figsize=(15, 8))
for ax, key in zip(axes.flat, shown, strict=True):
    show_images(draw(*key, n=sizes["n_grid"], seed=seed)[0].float() / 255, nrow=8, ax=ax, title=label[key])
fig.tight_layout()

# %% [markdown]
# ### The reverse trajectory, and the forward process beside it
#
# Top: one run of Algorithm 2 from $x_T$ to $x_0$, every 100 steps. Middle: the network's current
# guess of the clean image at the same steps, $\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,
# \epsilon_\theta(x_t, t)) / \sqrt{\bar\alpha_t}$: the digit's identity is settled early, the strokes
# late. Bottom: the forward process applied to the result, which undoes the trajectory in law.

# %%
g = torch.Generator(device=device).manual_seed(seed + 1)
x0_sample, trajectory = ancestral_sample(model, schedule, (1, 1, 28, 28), generator=g, device=device,
                                         trajectory_every=100)
steps_shown = list(range(T, -1, -100))  # the trajectory holds x_1000, x_900, ..., x_0
guesses = []
with torch.no_grad():
    for s, xt in zip(steps_shown, trajectory, strict=True):
        if s == 0:
            guesses.append(xt)
            continue
        t = torch.tensor([s], device=device)
        guesses.append(predict_x0(schedule, xt.to(device), t, model(xt.to(device), t)).cpu())
forward = [x0_sample.cpu() if s == 0 else q_sample(schedule, x0_sample.cpu(), torch.tensor([s]))
           for s in steps_shown]
fig, axes = plt.subplots(3, len(steps_shown), figsize=(13, 3.8))
for column, s in enumerate(steps_shown):
    for row, images in enumerate((trajectory, guesses, forward)):
        show_images(((images[column].reshape(1, 28, 28) + 1) / 2).clamp(0, 1), nrow=1, ax=axes[row, column])
    axes[0, column].set_title(f"t = {s}", fontsize=9)
for row, name in enumerate(("reverse: $x_t$", r"guess $\hat x_0$", "forward: $x_t$")):
    axes[row, 0].text(-4, 14, name, ha="right", va="center", fontsize=9)
fig.tight_layout()

# %% [markdown]
# ## 5. How good, and how fast? FID against the number of steps
#
# Every sampler draws the same number $N$ of images from the same seed. Each is scored by the
# book's FID, the Fréchet distance between Gaussians fitted to the features of the project's MNIST
# classifier (see the [evaluation chapter](../chapters/evaluation.md)), against the 10,000 MNIST
# test images. FID is biased upwards at small $N$, so the row of real training images at the same
# $N$ is the floor. Wall time is measured for the whole batch and given per 1,000 samples. (DDIM
# with all 1000 steps costs as much as Algorithm 2; it is scored only in the `gpu` profile.)

# %%
classifier, _ = load_classifier(Path("../checkpoints/mnist-classifier.pt"), map_location=device)
reference = FeatureStatistics(classifier.config.feature_dim).update(
    extract_features(classifier, test_set.data[:, None].to(device)))


def fid(images: torch.Tensor) -> float:
    statistics = FeatureStatistics(classifier.config.feature_dim).update(extract_features(classifier, images.to(device)))
    return frechet_distance(reference.mean, reference.covariance, statistics.mean, statistics.covariance)


n_fid = sizes["n_fid"]
floor = fid(load_mnist(train=True).data[:n_fid, None])
fid_samplers = [key for key in samplers if profile == "gpu" or key[:2] != ("ddim", T)]  # DDIM-1000: gpu only
speed = []
for key in fid_samplers:
    images, seconds = draw(*key, n=n_fid, seed=seed)
    speed.append(dict(sampler=label[key], steps=key[1], eta=key[2], fid=fid(images),
                      seconds_per_1k=seconds / n_fid * 1000))
    print(f"{label[key]:>29}: FID {speed[-1]['fid']:7.3f}   {speed[-1]['seconds_per_1k']:8.2f} s per 1,000 samples")
print(f"{'real training images':>29}: FID {floor:7.3f}   (the floor at N = {n_fid:,})")

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
ancestral = speed[0]
for eta, marker in ((0.0, "o-"), (1.0, "^-")):
    ddim = [r for r in speed[1:] if r["eta"] == eta]
    ax.loglog([r["seconds_per_1k"] for r in ddim], [r["fid"] for r in ddim], marker, label=f"DDIM, η = {eta:g}")
    for r in ddim:
        ax.annotate(f"{r['steps']}", (r["seconds_per_1k"], r["fid"]), textcoords="offset points", xytext=(4, 4))
ax.loglog([ancestral["seconds_per_1k"]], [ancestral["fid"]], "s", ms=8, label="Algorithm 2 (1000 steps)")
ax.axhline(floor, color="gray", ls="--", label=f"real images, same N = {n_fid:,}")
ax.set_xlabel(f"seconds per 1,000 samples ({hardware(device)})")
ax.set_ylabel("FID (classifier features)")
ax.legend(fontsize=8)
for ddim50 in (r for r in speed[1:] if r["steps"] == 50):
    print(f"DDIM with 50 steps, η = {ddim50['eta']:g}: FID {ddim50['fid']:.2f} = "
          f"{ddim50['fid'] / ancestral['fid']:.2f} x that of Algorithm 2, in "
          f"{ancestral['seconds_per_1k'] / ddim50['seconds_per_1k']:.1f} x less time")

# %% [markdown]
# Time falls in proportion to the number of steps for both samplers, so 50 steps cost about a
# twentieth of Algorithm 2. Quality does not fall with it in the same way for both. The
# deterministic sampler ($\eta = 0$) carries every error of the network to the end of its path, and
# more steps do not remove that error (compare its 50- and 1000-step grids above, which share their
# speckled backgrounds). The stochastic one ($\eta = 1$) draws fresh noise at every step, as
# Algorithm 2 does, and that noise keeps washing out the network's errors, so it comes close to
# Algorithm 2 with a twentieth of the network calls. The [DDPM chapter](../chapters/ddpm.md) says
# why, and the [evaluation](07_evaluation.ipynb) samples the DDPM this way.

# %% [markdown]
# ## 6. The likelihood: the variational bound in bits per dimension
#
# The bound {eq}`ddpm-vlb` is a sum of $T + 1$ terms: $L_T$ (the prior term, almost 0 here),
# $L_{t-1}$ for $t = 2, \dots, T$ (KL divergences between Gaussians, in closed form) and $L_0$, the
# discretized Gaussian decoder that turns the density into a probability for each of the 256
# grey levels. We sum every term exactly, for each test image, with one draw of $x_t$ per term.
# Divided by $784 \ln 2$ it is a bound on the code length in bits per pixel. We compute it for both
# fixed variances: $\beta_t$ (the choice for sampling) and $\tilde\beta_t$, which suits data that
# are nearly deterministic given $x_t$, as MNIST's mostly black pixels are.

# %%
def nll_bits_per_dim(x0: torch.Tensor, variance: str) -> torch.Tensor:
    """The variational bound L_T + sum_t L_{t-1} + L_0 per image, in bits per dimension: (B,)."""
    total = prior_term(schedule, x0)
    with torch.no_grad():
        for step in range(1, T + 1):
            t = torch.full((len(x0),), step, device=x0.device)
            total = total + vlb_terms(model, schedule, x0, t, decoder="discretized", variance=variance)
    return total / (x0[0].numel() * math.log(2))


nll_x = test_x[: sizes["n_nll"]].to(device)
torch.manual_seed(seed)
nll = {}
for variance in ("beta_tilde", "beta"):
    bits = torch.cat([nll_bits_per_dim(chunk, variance) for chunk in nll_x.split(sizes["batch"])]).cpu()
    nll[variance] = (bits.mean().item(), bits.std().item() / math.sqrt(len(bits)))
    print(f"sigma_t^2 = {variance:>10}: NLL <= {nll[variance][0]:.3f} ± {nll[variance][1]:.3f} bits/dim "
          f"({len(bits)} test images)")

# %% [markdown]
# For scale: storing the 256 grey levels of a pixel without a model takes 8 bits. The bound is
# loose in the places the chapter predicts: the variances are fixed rather than learned, and the
# network was trained on $L_\mathrm{simple}$, which down-weights exactly the small-$t$ terms that
# dominate the bound. (On CIFAR-10, Ho et al. report $\le 3.75$ bits/dim for their
# $L_\mathrm{simple}$ model.)
#
# ## 7. Publishing the network
#
# The EMA weights go to `checkpoints/ddpm.pt` with their provenance, and the
# [evaluation notebook](07_evaluation.ipynb) measures them beside the other models.

# %%
if train_from_scratch:
    record = dict(profile=profile, hardware=hardware(device), train_seconds=round(train_seconds, 1),
                  epochs=len(history), steps=len(history) * math.ceil(len(train_x) / batch_size),
                  batch_size=batch_size, learning_rate=sizes["learning_rate"],
                  warmup_steps=sizes["warmup_steps"], ema_decay=sizes["ema_decay"],
                  schedule=f"{schedule.kind}, T = {T}", history=history,
                  samplers=speed, fid_floor=floor, n_fid=n_fid,
                  nll_bits_per_dim={k: v[0] for k, v in nll.items()},
                  nll_standard_error={k: v[1] for k, v in nll.items()}, n_nll=len(nll_x),
                  notebook_seconds=round(time.perf_counter() - notebook_started, 1))
    summary = publish_checkpoint(published_path, model, config=config, record=record, step=record["steps"])
    (runs / f"ddpm-{profile}-last.pt").unlink(missing_ok=True)
    print(f"published {summary['file']}: sha256 {summary['sha256'][:16]}..., {summary['params']:,} parameters")
