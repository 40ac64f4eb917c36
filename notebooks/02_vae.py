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
# # A VAE on binarized MNIST: checked, trained, measured
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/genmodels-book/a-tale-of-vaes-wgans-ddpms/blob/main/notebooks/02_vae.ipynb)
#
# This notebook puts the [VAE chapter](../chapters/vae.md) to work. First it checks the formulas
# numerically, on models where the right answer is known; then it trains a VAE on dynamically
# binarized MNIST with the loss KL + binary cross-entropy, looks at what it learned, and measures
# its test log-likelihood with the importance-weighted bound.

# %% tags=["remove-cell"]
# Setup: on Colab, fetch this book (package, checkpoints) and install it; elsewhere `make` did it.
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
            raise RuntimeError(f"could not clone {REPOSITORY} into {BOOK}: "
                               f"{cloned.stderr.strip()} (check the runtime's network, or "
                               f"move {BOOK} aside, then run this cell again)")
    if importlib.util.find_spec("genmodels") is None:
        install = [sys.executable, "-m", "pip", "install", "-q", BOOK]
        subprocess.run(install, check=True)
    os.chdir(f"{BOOK}/notebooks")

# %% tags=["parameters"]
profile = None  # "smoke", "cpu", "gpu" or "auto"; None reads $GENMODELS_PROFILE (default "auto")
seed = 0  # seeds Python, NumPy and torch
latent_dim = 32  # J, the size of z for the main model
train_from_scratch = True  # False: load the published checkpoint instead of training

# %%
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import distributions as D

from genmodels.data import load_mnist
from genmodels.distributions import normal_kl, normal_log_prob
from genmodels.latent import LinearGaussian
from genmodels.plotting import show_images
from genmodels.train import (
    hardware,
    pick_device,
    progress,
    publish_checkpoint,
    resolve_profile,
    resume,
    save_checkpoint,
    scratch_dir,
    seed_everything,
)
from genmodels.vae import (
    VAE,
    VAEConfig,
    binarize,
    elbo_terms,
    importance_weighted_bound,
    iwae_bound,
    load_vae,
)

profile = resolve_profile(profile)
seed_everything(seed)
device = pick_device()
sizes = {  # what each compute profile affords
    "smoke": dict(n_train=2_048, epochs=2, epochs_2d=1, n_test_nll=128, iwae_k=16),
    "cpu": dict(n_train=60_000, epochs=100, epochs_2d=20, n_test_nll=10_000, iwae_k=1_000),
    "gpu": dict(n_train=60_000, epochs=400, epochs_2d=50, n_test_nll=10_000, iwae_k=5_000),
}[profile]
batch_size, learning_rate = 128, 1e-3
checkpoints = Path("../checkpoints")  # the published weights
# Where this run writes: a smoke run only proves the code runs, so it writes to a scratch folder.
published = checkpoints if profile != "smoke" else scratch_dir("vae")
runs = Path("../runs") if profile != "smoke" else scratch_dir("vae-runs")  # resumable state
print(f"profile {profile} on {hardware(device)}: {sizes}")

# %% [markdown]
# ## 1. The formulas, checked
#
# ### The Gaussian KL in closed form
#
# {eq}`normal-kl` against `torch.distributions.kl_divergence` and against a Monte Carlo estimate
# of $\mathbb{E}_q[\log q(z) - \log p(z)]$ with 200,000 samples, for a few pairs of Gaussians:

# %%
generator = torch.Generator().manual_seed(seed)
print(f"{'q':>16} {'p':>16} {'closed form':>12} {'torch':>10} {'Monte Carlo':>18}")
for (m1, s1), (m2, s2) in [((0.0, 1.0), (0.0, 1.0)), ((1.0, 0.5), (0.0, 1.0)), ((-2.0, 2.0), (1.0, 0.7))]:
    m1, lv1, m2, lv2 = (torch.tensor(v, dtype=torch.float64)
                        for v in (m1, 2 * math.log(s1), m2, 2 * math.log(s2)))
    closed = normal_kl(m1, lv1, m2, lv2).item()
    reference = D.kl_divergence(D.Normal(m1, (lv1 / 2).exp()), D.Normal(m2, (lv2 / 2).exp())).item()
    z = m1 + (lv1 / 2).exp() * torch.randn(200_000, dtype=torch.float64, generator=generator)
    log_ratio = normal_log_prob(z, m1, lv1) - normal_log_prob(z, m2, lv2)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(len(z))
    assert abs(closed - reference) < 1e-12 and abs(closed - mc) < 4 * se + 1e-12
    print(f"N({m1:.1f}, {(lv1 / 2).exp():.1f}^2) N({m2:.1f}, {(lv2 / 2).exp():.1f}^2) "
          f"{closed:12.5f} {reference:10.5f} {mc:10.5f} ± {se:.5f}")

# %% [markdown]
# ### The ELBO's gap is the KL to the true posterior
#
# The VAE's $\log p_\theta(x)$ cannot be computed, so we check {eq}`elbo-gap` on a model where it
# can: the linear-Gaussian model $p(z) = \mathcal{N}(0, 1)$, $p(x \mid z) = \mathcal{N}(Wz + b, s^2 I)$
# with a one-dimensional $z$ and three-dimensional $x$. Its marginal and posterior are Gaussian in
# closed form. For three choices of $q(z \mid x)$ we estimate the ELBO by Monte Carlo and compare
# it with $\log p(x) - \mathrm{KL}(q \,\|\, p(z \mid x))$.

# %%
model_lg = LinearGaussian(weight=torch.tensor([[1.5], [-0.7], [0.4]]), bias=torch.tensor([0.2, -0.1, 0.5]),
                          log_sigma=-0.3)
x_lg = torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
log_p = model_lg.log_marginal(x_lg).item()
post_mean, post_cov = model_lg.posterior(x_lg)
post_logvar = torch.log(post_cov[0, 0])


def log_weights(q_mean, q_logvar, k, repeats=1):
    """log p(x, z) - log q(z) for z ~ q: (k, repeats, 1)."""
    eps = torch.randn(k, repeats, 1, 1, dtype=torch.float64, generator=generator)
    z = q_mean + (q_logvar / 2).exp() * eps
    return model_lg.log_joint(x_lg, z) - normal_log_prob(z, q_mean, q_logvar).sum(-1)


print(f"log p(x) = {log_p:.4f} (exact)")
for name, q_mean, q_logvar in [
    ("q = true posterior", post_mean, post_logvar),
    ("q shifted by 0.5", post_mean + 0.5, post_logvar),
    ("q shifted, too wide", post_mean + 0.5, post_logvar + math.log(4.0)),
]:
    w = log_weights(q_mean, q_logvar, 200_000).reshape(-1)
    gap = normal_kl(q_mean, q_logvar, post_mean, post_logvar).item()
    print(f"{name:>22}: ELBO = {w.mean():.4f} ± {w.std() / math.sqrt(len(w)):.4f}, "
          f"log p(x) - KL(q || posterior) = {log_p - gap:.4f}")
    assert abs(w.mean().item() - (log_p - gap)) < 4 * w.std().item() / math.sqrt(len(w)) + 1e-9

# %% [markdown]
# With $q$ equal to the posterior every importance weight equals $p(x)$ and the bound is exact
# (standard error 0). Otherwise the ELBO falls short by exactly the KL.
#
# ### The importance-weighted bound tightens with $K$
#
# Averaging $K$ weights inside the logarithm, {eq}`iwae`, with the shifted, too-wide $q$:

# %%
ks = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
bounds = [importance_weighted_bound(log_weights(post_mean + 0.5, post_logvar + math.log(4.0), k, 2000))
          .mean().item() for k in ks]
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.semilogx(ks, bounds, "o-", base=2, label=r"$\mathcal{L}_K$ (mean of 2,000 estimates)")
ax.axhline(log_p, color="black", ls="--", label=r"exact $\log p(x)$")
ax.set_xlabel("K, samples inside the logarithm")
ax.set_ylabel("nats")
ax.legend()
assert all(b1 < b2 for b1, b2 in zip(bounds, bounds[1:], strict=False)) and log_p - bounds[-1] < 0.02

# %% [markdown]
# ## 2. Training on binarized MNIST
#
# The training images are kept as grey levels in $[0, 1]$ and binarized *dynamically*: each
# minibatch is redrawn as $b \sim \mathrm{Bernoulli}(x)$ right before it is used. The test set is
# binarized once, with a fixed seed (0), so that every number below refers to the same binary
# images.

# %%
train_pixels = load_mnist(train=True).data[: sizes["n_train"]].float().div(255).reshape(-1, 784)
test_pixels = load_mnist(train=False).data.float().div(255).reshape(-1, 784)
test_labels = load_mnist(train=False).targets
test_x = binarize(test_pixels, generator=torch.Generator().manual_seed(0)).to(device)
train_pixels = train_pixels.to(device)
print(f"training on {len(train_pixels):,} images, testing on {len(test_x):,}")


# %% [markdown]
# The loop below is the whole algorithm: binarize, compute the two terms of the ELBO
# ({eq}`vae-minibatch-loss`), step Adam on their sum, and record both terms on the training
# minibatches and on the test set after every epoch. The learning rate follows a cosine schedule
# to zero. The state is saved after every epoch, so an interrupted run resumes where it stopped.

# %%
def train_vae(config: VAEConfig, epochs: int, name: str):
    """Train a VAE with Adam on the negative ELBO; return the model, the history and the seconds."""
    model = VAE(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps_per_epoch = math.ceil(len(train_pixels) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    history, seconds, start_epoch = [], 0.0, 0
    run = dict(config=config, epochs=epochs, seed=seed, n_train=len(train_pixels),
               batch_size=batch_size, learning_rate=learning_rate)  # resume only this run
    resume_path = runs / f"{name}-last.pt"
    if state := resume(resume_path, model, optimizer=optimizer, run=run):
        schedule.load_state_dict(state["extra"]["schedule"])
        history, seconds, start_epoch = state["extra"]["history"], state["extra"]["seconds"], state["step"]
        print(f"resuming {name} after epoch {start_epoch}")
    for epoch in progress(range(start_epoch, epochs), desc=name, initial=start_epoch, total=epochs):
        started = time.perf_counter()
        model.train()
        sums = torch.zeros(2, device=device)
        for batch in torch.randperm(len(train_pixels), device=device).split(batch_size):
            x = binarize(train_pixels[batch])  # dynamic binarization
            terms = elbo_terms(model, x)  # reconstruction log-likelihood and KL, per image
            loss = (terms.kl - terms.reconstruction).mean()  # KL + BCE
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums += torch.stack([-terms.reconstruction.sum(), terms.kl.sum()]).detach()
        seconds += time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            test_terms = elbo_terms(model, test_x)
        train_bce, train_kl = (sums / len(train_pixels)).tolist()
        history.append(dict(epoch=epoch + 1, train_bce=train_bce, train_kl=train_kl,
                            test_bce=-test_terms.reconstruction.mean().item(),
                            test_kl=test_terms.kl.mean().item()))
        save_checkpoint(resume_path, model, optimizer=optimizer, config=config, step=epoch + 1,
                        run=run, extra=dict(history=history, seconds=seconds,
                                            schedule=schedule.state_dict()))
    return model.eval(), history, seconds


# %%
config = VAEConfig(latent_dim=latent_dim)
published_path = published / f"vae-j{latent_dim}.pt"
if train_from_scratch:
    vae, history, train_seconds = train_vae(config, sizes["epochs"], f"vae-j{latent_dim}-{profile}")
else:
    vae, checkpoint = load_vae(checkpoints / f"vae-j{latent_dim}.pt", map_location=device)
    record = checkpoint["extra"]["record"]
    history, train_seconds = record["history"], record["train_seconds"]
print(f"{len(history)} epochs in {train_seconds / 60:.1f} minutes of training on {hardware(device)}; "
      f"{sum(p.numel() for p in vae.parameters()):,} parameters")

# %% [markdown]
# ### Both terms of the loss over training
#
# The reconstruction term, $-\log p_\theta(x \mid z)$ (the summed binary cross-entropy), falls as
# the decoder learns; the KL term *rises* at first: the encoder starts using its latent
# dimensions, paying nats of KL for every nat of reconstruction it gains. Train and test curves stay
# close, since dynamic binarization makes memorizing the training set hard.

# %%
epochs_seen = [h["epoch"] for h in history]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
titles = [r"reconstruction $-\log p_\theta(x|z)$", r"KL$(q_\phi(z|x) \| p(z))$"]
for ax, key, title in zip(axes, ["bce", "kl"], titles, strict=False):
    ax.plot(epochs_seen, [h[f"train_{key}"] for h in history], label="train (running mean over the epoch)")
    ax.plot(epochs_seen, [h[f"test_{key}"] for h in history], label="test")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
axes[0].legend()
axes[2].plot(epochs_seen, [h["test_bce"] + h["test_kl"] for h in history], color="tab:red")
axes[2].set_title("test negative ELBO = BCE + KL")
axes[2].set_xlabel("epoch")
fig.tight_layout()

# %% [markdown]
# ## 3. What the model learned
#
# ### Reconstructions
#
# Top: binarized test images. Bottom: the decoder's pixel probabilities $p_\theta(x \mid z)$ at
# $z = \mu_\phi(x)$, the mean of the encoder's distribution.

# %%
with torch.no_grad():
    originals = test_x[:16]
    mu, _ = vae.encoder(originals)
    reconstructions = vae.decode(mu)
fig, axes = plt.subplots(2, 1, figsize=(10, 1.6))
show_images(originals.reshape(-1, 28, 28).cpu(), nrow=16, ax=axes[0])
show_images(reconstructions.cpu(), nrow=16, ax=axes[1])
axes[0].set_title("binarized test images (top) and reconstruction probabilities (bottom)", fontsize=9)

# %% [markdown]
# ### Samples
#
# $z \sim \mathcal{N}(0, I)$, then the decoder. The **decoder means** are the pixel probabilities
# $p_d$: smooth grey images, which is what most VAE papers show. A **sample of the model** is one
# more step: a Bernoulli draw of every pixel. The draws are the images the likelihood is about,
# and they are speckled, because the decoder treats pixels as independent given $z$.

# %%
probabilities, draws = vae.sample(64, generator=torch.Generator(device=device).manual_seed(seed))
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
show_images(probabilities.cpu(), nrow=8, ax=axes[0], title="decoder means $p_\\theta(x|z)$, $z \\sim p(z)$")
show_images(draws.cpu(), nrow=8, ax=axes[1], title="Bernoulli draws $x \\sim p_\\theta(x|z)$ (same $z$)")

# %% [markdown]
# ### Interpolating in latent space
#
# Encode two test digits to their means $\mu_1, \mu_2$ and decode points on the segment between
# them. The decoded images change smoothly: nearby codes decode to similar images, which the KL
# term encourages by packing the codes into the region the prior covers.

# %%
pairs = [(0, 1), (2, 3), (4, 7), (10, 11)]
steps = torch.linspace(0, 1, 10, device=device)[:, None]
rows = []
with torch.no_grad():
    for i, j in pairs:
        mu_pair, _ = vae.encoder(test_x[[i, j]])
        rows.append(vae.decode((1 - steps) * mu_pair[0] + steps * mu_pair[1]))
show_images(torch.cat(rows).cpu(), nrow=10, title="linear interpolation between encoded test digits")

# %% [markdown]
# ### A two-dimensional latent space
#
# With $J = 2$ the whole latent space can be drawn. We train a second, smaller-latent model and
# decode a grid of codes placed at the quantiles of the prior (so that each cell holds equal prior
# mass), next to where the test digits land under the encoder.

# %%
if train_from_scratch:
    vae_2d, history_2d, train_seconds_2d = train_vae(VAEConfig(latent_dim=2), sizes["epochs_2d"],
                                                     f"vae-j2-{profile}")
else:
    vae_2d, checkpoint_2d = load_vae(checkpoints / "vae-j2.pt", map_location=device)
    record_2d = checkpoint_2d["extra"]["record"]
    history_2d, train_seconds_2d = record_2d["history"], record_2d["train_seconds"]
quantiles = torch.linspace(0.03, 0.97, 15)
grid_axis = D.Normal(0.0, 1.0).icdf(quantiles)
zz = torch.stack(torch.meshgrid(grid_axis, grid_axis.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
with torch.no_grad():
    manifold = vae_2d.decode(zz.to(device)).cpu()
    codes, _ = vae_2d.encoder(test_x)
fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
show_images(manifold, nrow=15, ax=axes[0], title="decoder means over a grid of prior quantiles")
scatter = axes[1].scatter(*codes.cpu().T, c=test_labels, cmap="tab10", s=2, alpha=0.6)
axes[1].legend(*scatter.legend_elements(), title="digit", loc="upper right", fontsize=8)
axes[1].set_xlim(-3.5, 3.5)
axes[1].set_ylim(-3.5, 3.5)
axes[1].set_title(r"encoder means $\mu_\phi(x)$ of the test set")
axes[1].set_aspect("equal")
print(f"2-D model: {len(history_2d)} epochs, {train_seconds_2d / 60:.1f} minutes; "
      f"test negative ELBO {history_2d[-1]['test_bce'] + history_2d[-1]['test_kl']:.1f} nats")

# %% [markdown]
# In a live notebook (Colab, Jupyter) the sliders below move a point through the 2-D latent space
# and show its decoding; the book, which has no Python kernel, shows the static grid above instead.

# %% tags=["remove-output"]
import ipywidgets as widgets


def explore(z1=0.0, z2=0.0):
    with torch.no_grad():
        image = vae_2d.decode(torch.tensor([[z1, z2]], device=device)).cpu()
    ax = show_images(image, nrow=1)
    ax.set_title(f"z = ({z1:.2f}, {z2:.2f})")
    plt.show()


widgets.interactive(explore, z1=(-3.0, 3.0, 0.1), z2=(-3.0, 3.0, 0.1))

# %% [markdown]
# ## 4. The test log-likelihood
#
# The negative ELBO bounds the negative log-likelihood from above; the importance-weighted bound
# with $K$ samples, {eq}`iwae`, is a tighter bound that approaches it as $K$ grows. First, how the
# bound tightens with $K$ on a few hundred test images:

# %%
subset = test_x[:min(256, sizes["n_test_nll"])]
ks_mnist = [k for k in (1, 10, 100, 1000) if k <= sizes["iwae_k"]]
torch.manual_seed(seed)
nll_by_k = [-iwae_bound(vae, subset, k=k).mean().item() for k in ks_mnist]
for k, nll in zip(ks_mnist, nll_by_k, strict=False):
    print(f"K = {k:5d}: -L_K = {nll:.2f} nats")
assert all(a >= b - 0.05 for a, b in zip(nll_by_k, nll_by_k[1:], strict=False))

# %% [markdown]
# Then the number this chapter publishes: $-\mathcal{L}_K$ averaged over the test set, with the
# largest $K$ the profile affords, and the standard error of the mean over test images.

# %%
torch.manual_seed(seed)
started = time.perf_counter()
nll_per_image = torch.cat([-iwae_bound(vae, batch, k=sizes["iwae_k"])
                           for batch in test_x[: sizes["n_test_nll"]].split(250)])
eval_seconds = time.perf_counter() - started
with torch.no_grad():
    test_elbo_terms = elbo_terms(vae, test_x[: sizes["n_test_nll"]])
nll = nll_per_image.mean().item()
nll_se = nll_per_image.std().item() / math.sqrt(len(nll_per_image))
negative_elbo = -test_elbo_terms.elbo.mean().item()
print(f"test NLL <= {nll:.2f} ± {nll_se:.2f} nats (IWAE, K = {sizes['iwae_k']}, "
      f"{len(nll_per_image):,} test images, {eval_seconds:.0f} s)")
print(f"test negative ELBO = {negative_elbo:.2f} nats, of which KL = {test_elbo_terms.kl.mean():.2f}")
print("reference: Burda et al. (2016), one-stochastic-layer VAE, IWAE K = 5000: 86.76 nats")

# %% [markdown]
# ## 5. Publishing the checkpoints
#
# The trained weights are saved in `checkpoints/` with a record of where they came from (profile,
# hardware, wall time, commit, checksum), so that the evaluation chapter and Colab readers can use
# them without training (set `train_from_scratch = False`). The smoke profile writes to a temporary
# folder instead, and never over a published checkpoint.

# %%
record = dict(
    profile=profile, hardware=hardware(device), train_seconds=round(train_seconds, 1),
    epochs=len(history), batch_size=batch_size, learning_rate=learning_rate,
    test_binarization_seed=0, test_nll=round(nll, 3), test_nll_se=round(nll_se, 3),
    test_nll_k=sizes["iwae_k"], test_nll_n=len(nll_per_image), test_negative_elbo=round(negative_elbo, 3),
    nll_unit="nats", history=history,
)
if train_from_scratch:
    summary = publish_checkpoint(published_path, vae, config=config, record=record, step=len(history))
    publish_checkpoint(published / "vae-j2.pt", vae_2d, config=vae_2d.config, step=len(history_2d),
                       record=dict(profile=profile, hardware=hardware(device),
                                   train_seconds=round(train_seconds_2d, 1), epochs=len(history_2d),
                                   history=history_2d))
    for name in (f"vae-j{latent_dim}-{profile}", f"vae-j2-{profile}"):
        (runs / f"{name}-last.pt").unlink(missing_ok=True)  # the run is complete: nothing to resume
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))
