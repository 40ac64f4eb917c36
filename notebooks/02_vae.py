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
from genmodels.distributions import bernoulli_log_prob, normal_kl, normal_log_prob
from genmodels.latent import LinearGaussian
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
from genmodels.vae import (
    VAE,
    VAEConfig,
    binarize,
    elbo_terms,
    importance_weighted_bound,
    iwae_bound,
    load_vae,
    reparameterize,
)

profile = resolve_profile(profile)
seed_everything(seed)
device = pick_device()
sizes = {  # what each compute profile affords
    "smoke": dict(
        n_train=2_048, epochs=2, epochs_2d=1, n_test_nll=128, iwae_k=16, refine_steps=5
    ),
    "cpu": dict(
        n_train=60_000,
        epochs=100,
        epochs_2d=20,
        n_test_nll=10_000,
        iwae_k=1_000,
        refine_steps=500,
    ),
    "gpu": dict(  # an epoch of 128-image steps: about 1.2 s on an H200, launch-bound
        n_train=60_000,
        epochs=240,
        epochs_2d=40,
        n_test_nll=10_000,
        iwae_k=5_000,
        refine_steps=1_000,
    ),
}[profile]
batch_size, learning_rate = 128, 1e-3
checkpoints = Path("../checkpoints")  # the published weights
# Where this run writes: a smoke run only proves the code runs,
# so it writes to a scratch folder.
published = checkpoints if profile != "smoke" else scratch_dir("vae")
# resumable state
runs = Path("../runs") if profile != "smoke" else scratch_dir("vae-runs")
print(f"profile {profile} on {hardware(device)}: {sizes}")

# %% [markdown]
# ## 1. The formulas, checked
#
# ### The Gaussian KL in closed form
#
# The closed form of the chapter against `torch.distributions.kl_divergence` and against a Monte Carlo estimate
# of $\mathbb{E}_q[\log q(z) - \log p(z)]$ with 200,000 samples, for a few pairs of Gaussians:

# %%
generator = torch.Generator().manual_seed(seed)
print(f"{'q':>16} {'p':>16} {'closed form':>12} {'torch':>10} {'Monte Carlo':>18}")
for (m1, s1), (m2, s2) in [
    ((0.0, 1.0), (0.0, 1.0)),
    ((1.0, 0.5), (0.0, 1.0)),
    ((-2.0, 2.0), (1.0, 0.7)),
]:
    m1, lv1, m2, lv2 = (
        torch.tensor(v, dtype=torch.float64)
        for v in (m1, 2 * math.log(s1), m2, 2 * math.log(s2))
    )
    closed = normal_kl(m1, lv1, m2, lv2).item()
    reference = D.kl_divergence(
        D.Normal(m1, (lv1 / 2).exp()), D.Normal(m2, (lv2 / 2).exp())
    ).item()
    z = m1 + (lv1 / 2).exp() * torch.randn(
        200_000, dtype=torch.float64, generator=generator
    )
    log_ratio = normal_log_prob(z, m1, lv1) - normal_log_prob(z, m2, lv2)
    mc, se = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(len(z))
    assert abs(closed - reference) < 1e-12 and abs(closed - mc) < 4 * se + 1e-12
    print(
        f"N({m1:.1f}, {(lv1 / 2).exp():.1f}^2) N({m2:.1f}, {(lv2 / 2).exp():.1f}^2) "
        f"{closed:12.5f} {reference:10.5f} {mc:10.5f} ± {se:.5f}"
    )

# %% [markdown]
# ### The ELBO's gap is the KL to the true posterior
#
# The VAE's $\log p_\theta(x)$ cannot be computed, so we check
# $\mathcal{L}(q) = \log p(x) - \mathrm{KL}(q(z) \,\|\, p(z \mid x))$ (the chapter's
# $\mathrm{ELBO}(\theta, \phi; x)$, which is $\mathcal{L}_1$) on a model where it can:
# the linear-Gaussian model $p(z) = \mathcal{N}(0, 1)$, $p(x \mid z) = \mathcal{N}(Wz + b, s^2 I)$
# with a one-dimensional $z$ and three-dimensional $x$. Its marginal and posterior are Gaussian in
# closed form. For three choices of $q(z \mid x)$ we estimate the ELBO by Monte Carlo and compare
# it with $\log p(x) - \mathrm{KL}(q \,\|\, p(z \mid x))$.

# %%
model_lg = LinearGaussian(
    weight=torch.tensor([[1.5], [-0.7], [0.4]]),
    bias=torch.tensor([0.2, -0.1, 0.5]),
    log_sigma=-0.3,
)
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
    print(
        f"{name:>22}: ELBO = {w.mean():.4f} ± {w.std() / math.sqrt(len(w)):.4f}, "
        f"log p(x) - KL(q || posterior) = {log_p - gap:.4f}"
    )
    assert (
        abs(w.mean().item() - (log_p - gap))
        < 4 * w.std().item() / math.sqrt(len(w)) + 1e-9
    )

# %% [markdown]
# With $q$ equal to the posterior every importance weight equals $p(x)$ and the bound is exact
# (standard error 0). Otherwise the ELBO falls short by exactly the KL.
#
# ### The importance-weighted bound tightens with $K$
#
# Averaging $K$ weights inside the logarithm,
# $\mathcal{L}_K = \mathbb{E}\big[\log \frac{1}{K} \sum_k p(x, z_k) / q(z_k)\big]$, with the shifted,
# too-wide $q$ (right), beside the ELBO of every $q$ with the posterior's width as its mean slides
# away from the posterior's (left):

# %%
ks = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
bounds = [
    importance_weighted_bound(
        log_weights(post_mean + 0.5, post_logvar + math.log(4.0), k, 2000)
    )
    .mean()
    .item()
    for k in ks
]
shifts = torch.linspace(-1.5, 1.5, 13, dtype=torch.float64)
draws_by_shift = [
    log_weights(post_mean + d, post_logvar, 20_000).reshape(-1) for d in shifts
]
elbos = [w.mean().item() for w in draws_by_shift]
ses = [w.std().item() / math.sqrt(len(w)) for w in draws_by_shift]
gaps = [
    normal_kl(post_mean + d, post_logvar, post_mean, post_logvar).item() for d in shifts
]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
left.plot(shifts, elbos, "o", label=r"ELBO $\mathcal{L}(q)$, Monte Carlo")
left.plot(
    shifts,
    [log_p - g for g in gaps],
    "-",
    label=r"$\log p(x) - \mathrm{KL}(q \| p(z|x))$",
)
left.axhline(log_p, color="black", ls="--", label=r"exact $\log p(x)$")
left.set_xlabel(r"mean of $q$ minus the posterior mean")
left.set_ylabel("nats")
left.legend(fontsize=8)
left.set_title("the ELBO's gap is the KL to the posterior")
right.semilogx(
    ks, bounds, "o-", base=2, label=r"$\mathcal{L}_K$ (mean of 2,000 estimates)"
)
right.axhline(log_p, color="black", ls="--", label=r"exact $\log p(x)$")
right.set_xlabel("K, samples inside the logarithm")
right.legend(fontsize=8)
right.set_title("more samples, a tighter bound")
fig.tight_layout()
glue("elbo_gap_figure", fig)
assert (
    all(b1 < b2 for b1, b2 in zip(bounds, bounds[1:], strict=False))
    and log_p - bounds[-1] < 0.02
)
assert all(
    abs(e - (log_p - g)) < 4 * se + 1e-9
    for e, g, se in zip(elbos, gaps, ses, strict=True)
)

# %% [markdown]
# ### Erratum demonstrated: the encoder's $\sigma$ is a standard deviation
#
# The lecture writes $q_\phi(z \mid x) = \mathcal{N}(\mu, \mathrm{diag}(\sigma))$ for the
# encoder's output $(\mu, \log \sigma)$. The draws $z = \mu + \sigma \odot \varepsilon$ that
# `reparameterize` makes have covariance $\mathrm{diag}(\sigma^2)$, which is what the KL term
# assumes:

# %%
mu_q, log_sigma_q = torch.tensor([0.5, -1.0]), torch.log(torch.tensor([0.5, 2.0]))
z_q = reparameterize(mu_q, log_sigma_q, torch.randn(400_000, 2, generator=generator))
print("sample covariance of the draws:\n", torch.cov(z_q.T).numpy().round(3))
print(
    "diag(sigma) =",
    log_sigma_q.exp().tolist(),
    "  diag(sigma^2) =",
    log_sigma_q.exp().pow(2).tolist(),
)
assert torch.allclose(torch.cov(z_q.T), torch.diag(log_sigma_q.exp().pow(2)), atol=0.02)

# %% [markdown]
# ### Erratum demonstrated: binary cross-entropy is a likelihood only for binary data
#
# For a binary pixel, $\exp(-\mathrm{BCE}(p, x)) = p^x (1 - p)^{1 - x}$ sums to 1 over
# $x \in \{0, 1\}$. Read as a density of a grey value $x \in [0, 1]$ it integrates to less than 1
# (left), and for $p \ne \frac12$ it is monotone in $x$: largest at $x = 0$ or $x = 1$, never at the
# decoder's own value $x = p$. On grey test images, a "decoder"
# that knows every pixel exactly ($p_d = x_d$) still pays a positive BCE (right): the grey images'
# "nats" measure nothing about the model.

# %%
x_grid = torch.linspace(0, 1, 2001, dtype=torch.float64)
grey = load_mnist(train=False).data[:1000].double().div(255).reshape(-1, 784)
# p_d = x_d
perfect = -bernoulli_log_prob(grey, torch.logit(grey.clamp(1e-12, 1 - 1e-12))).sum(1)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
for p_pixel in (0.1, 0.5, 0.9):
    logit = torch.logit(torch.full_like(x_grid, p_pixel))
    density = bernoulli_log_prob(x_grid, logit).exp()  # exp(-BCE(p, x))
    mass = torch.trapezoid(density, x_grid).item()
    left.plot(
        x_grid, density, label=f"p = {p_pixel}: integral over [0, 1] = {mass:.3f}"
    )
    assert mass < 1 - 1e-3
left.set_xlabel("grey value x")
left.set_ylabel(r"$p^x (1 - p)^{1 - x}$")
left.legend(fontsize=8)
right.hist(perfect.numpy(), bins=40, color="tab:gray")
right.set_xlabel("BCE of a grey test image under the exact decoder $p_d = x_d$ (nats)")
right.set_ylabel("test images")
fig.tight_layout()
glue("vae_bce_grey_figure", fig)
glue("vae_bce_grey_perfect", f"{perfect.mean():.1f}")
print(
    "BCE of the 'perfect' decoder on 1,000 grey test images: "
    f"{perfect.mean():.1f} nats on average"
)
assert perfect.min() > 0

# %% [markdown]
# ## 2. Training on binarized MNIST
#
# The training images are kept as grey levels in $[0, 1]$ and binarized *dynamically*: each
# minibatch is redrawn as $b \sim \mathrm{Bernoulli}(x)$ right before it is used. The test set is
# binarized once, with a fixed seed (0), so that every number below refers to the same binary
# images.

# %%
train_pixels = (
    load_mnist(train=True).data[: sizes["n_train"]].float().div(255).reshape(-1, 784)
)
test_pixels = load_mnist(train=False).data.float().div(255).reshape(-1, 784)
test_labels = load_mnist(train=False).targets
test_x = binarize(test_pixels, generator=torch.Generator().manual_seed(0)).to(device)
train_pixels = train_pixels.to(device)
print(f"training on {len(train_pixels):,} images, testing on {len(test_x):,}")


# %% [markdown]
# The loop below is the whole algorithm: binarize, compute the two terms of the ELBO
# (the chapter's minibatch loss), step Adam on their sum, and after every epoch measure both terms
# on 10,000 training images and on the test set. The learning rate follows a cosine schedule
# to zero. `TrainingRun` (in `genmodels.train`) saves the state after every epoch, so an
# interrupted run resumes where it stopped.

# %%
@torch.no_grad()
def measure(model, pixels, split):
    """The two terms of the loss in nats per image, averaged over ``pixels``
    (binarized here)."""
    model.eval()
    x = (
        pixels
        if split == "test"
        else binarize(pixels, generator=torch.Generator(device).manual_seed(1))
    )
    terms = elbo_terms(model, x)
    return {
        f"{split}_bce": -terms.reconstruction.mean().item(),
        f"{split}_kl": terms.kl.mean().item(),
    }


def train_vae(config: VAEConfig, epochs: int, name: str):
    """Train a VAE with Adam on the negative ELBO; return model, history and seconds."""
    model = VAE(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps = epochs * math.ceil(len(train_pixels) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    run = dict(config=config, epochs=epochs, seed=seed, n_train=len(train_pixels),
               batch_size=batch_size, learning_rate=learning_rate)  # resume only it
    state = TrainingRun(runs / f"{name}-last.pt", run=run, model=model,
                        optimizer=optimizer, config=config, schedule=schedule)
    for epoch in state.steps(epochs, desc=name):  # resumes; saves after every epoch
        model.train()
        for batch in torch.randperm(len(train_pixels), device=device).split(batch_size):
            x = binarize(train_pixels[batch])  # dynamic binarization
            terms = elbo_terms(model, x)  # reconstruction log-lik. and KL, per image
            loss = (terms.kl - terms.reconstruction).mean()  # KL + BCE
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        state.log.append(dict(epoch=epoch + 1,
                              **measure(model, train_pixels[:10_000], "train"),
                              **measure(model, test_x, "test")))
    return model.eval(), state.log, state.seconds


# %%
config = VAEConfig(latent_dim=latent_dim)
published_path = published / f"vae-j{latent_dim}.pt"
if train_from_scratch:
    vae, history, train_seconds = train_vae(
        config, sizes["epochs"], f"vae-j{latent_dim}-{profile}"
    )
else:
    vae, checkpoint = load_vae(
        checkpoints / f"vae-j{latent_dim}.pt", map_location=device
    )
    record = checkpoint["extra"]["record"]
    history, train_seconds = record["history"], record["train_seconds"]
print(
    f"{len(history)} epochs in {train_seconds / 60:.1f} minutes of training on "
    f"{hardware(device)}; "
    f"{sum(p.numel() for p in vae.parameters()):,} parameters"
)

# %% [markdown]
# ### Both terms of the loss over training
#
# The reconstruction term, $-\log p_\theta(x \mid z)$ (the summed binary cross-entropy), falls as
# the decoder learns; the KL term *rises* at first: the encoder starts using its latent
# dimensions, paying nats of KL for the reconstruction it gains, far fewer than it gains, so their
# sum falls. The two KL curves coincide, but the reconstruction curves draw apart as training goes
# on: dynamic binarization keeps the model from memorizing one binarization, not from fitting the
# 60,000 training digits themselves.

# %% tags=["hide-input"]
epochs_seen = [h["epoch"] for h in history]
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
titles = [r"reconstruction $-\log p_\theta(x|z)$", r"KL$(q_\phi(z|x) \| p(z))$"]
for ax, key, title in zip(axes, ["bce", "kl"], titles, strict=False):
    ax.plot(
        epochs_seen, [h[f"train_{key}"] for h in history], label="train (10,000 images)"
    )
    ax.plot(epochs_seen, [h[f"test_{key}"] for h in history], label="test")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
axes[0].legend()
axes[2].plot(
    epochs_seen, [h["test_bce"] + h["test_kl"] for h in history], color="tab:red"
)
axes[2].set_title("test negative ELBO = BCE + KL")
axes[2].set_xlabel("epoch")
fig.tight_layout()
glue("vae_loss_terms_figure", fig)

# %% [markdown]
# ## 3. What the model learned
#
# ### Reconstructions
#
# Top: binarized test images. Bottom: the decoder's pixel probabilities
# $(p_1, \dots, p_D) = \mathbb{E}_{p_\theta}[x \mid z]$ at $z = \mu_\phi(x)$, the mean of the
# encoder's distribution.

# %% tags=["hide-input"]
with torch.no_grad():
    originals = test_x[:16]
    mu, _ = vae.encoder(originals)
    reconstructions = vae.decode(mu)
fig, axes = plt.subplots(2, 1, figsize=(10, 1.6))
show_images(originals.reshape(-1, 28, 28).cpu(), nrow=16, ax=axes[0])
show_images(reconstructions.cpu(), nrow=16, ax=axes[1])
axes[0].set_title(
    "binarized test images (top) and reconstruction probabilities (bottom)", fontsize=9
)
fig.tight_layout()

# %% [markdown]
# ### Samples
#
# $z \sim \mathcal{N}(0, I)$, then the decoder. The **decoder means** are the pixel probabilities
# $p_d$: smooth grey images, which is what most VAE papers show. A **sample of the model** is one
# more step: a Bernoulli draw of every pixel. The draws are the images the likelihood is about,
# and they are speckled, because the decoder treats pixels as independent given $z$.

# %%
probabilities, draws = vae.sample(
    64, generator=torch.Generator(device=device).manual_seed(seed)
)
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
show_images(
    probabilities.cpu(),
    nrow=8,
    ax=axes[0],
    title="decoder means $p_\\theta(x|z)$, $z \\sim p(z)$",
)
show_images(
    draws.cpu(),
    nrow=8,
    ax=axes[1],
    title="Bernoulli draws $x \\sim p_\\theta(x|z)$ (same $z$)",
)
glue("vae_samples_figure", fig)

# %% [markdown]
# ### Interpolating in latent space
#
# Encode two test digits to their means $\mu_1, \mu_2$ and decode points on the segment between
# them. The decoded images change smoothly: nearby codes decode to similar images, which the KL
# term encourages by packing the codes into the region the prior covers.

# %% tags=["hide-input"]
pairs = [(0, 1), (2, 3), (4, 7), (10, 11)]
steps = torch.linspace(0, 1, 10, device=device)[:, None]
rows = []
with torch.no_grad():
    for i, j in pairs:
        mu_pair, _ = vae.encoder(test_x[[i, j]])
        rows.append(vae.decode((1 - steps) * mu_pair[0] + steps * mu_pair[1]))
ax = show_images(
    torch.cat(rows).cpu(),
    nrow=10,
    title="linear interpolation between encoded test digits",
)
ax.figure.set_size_inches(8, 3.6)

# %% [markdown]
# ### A two-dimensional latent space
#
# With $J = 2$ the whole latent space can be drawn. We train a second, smaller-latent model and
# decode a grid of codes placed at the quantiles of the prior (so that each cell holds equal prior
# mass), next to where the test digits land under the encoder.

# %%
if train_from_scratch:
    vae_2d, history_2d, train_seconds_2d = train_vae(
        VAEConfig(latent_dim=2), sizes["epochs_2d"], f"vae-j2-{profile}"
    )
else:
    vae_2d, checkpoint_2d = load_vae(checkpoints / "vae-j2.pt", map_location=device)
    record_2d = checkpoint_2d["extra"]["record"]
    history_2d, train_seconds_2d = record_2d["history"], record_2d["train_seconds"]
quantiles = torch.linspace(0.03, 0.97, 15)
grid_axis = D.Normal(0.0, 1.0).icdf(quantiles)
zz = torch.stack(
    torch.meshgrid(grid_axis, grid_axis.flip(0), indexing="xy"), dim=-1
).reshape(-1, 2)
with torch.no_grad():
    manifold = vae_2d.decode(zz.to(device)).cpu()
    codes, _ = vae_2d.encoder(test_x)
fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
show_images(
    manifold, nrow=15, ax=axes[0], title="decoder means over a grid of prior quantiles"
)
scatter = axes[1].scatter(*codes.cpu().T, c=test_labels, cmap="tab10", s=2, alpha=0.6)
axes[1].legend(*scatter.legend_elements(), title="digit", loc="upper right", fontsize=8)
axes[1].set_xlim(-3.5, 3.5)
axes[1].set_ylim(-3.5, 3.5)
axes[1].set_title(r"encoder means $\mu_\phi(x)$ of the test set")
axes[1].set_aspect("equal")
glue("vae_latent_2d_figure", fig)
print(
    f"2-D model: {len(history_2d)} epochs, {train_seconds_2d / 60:.1f} minutes; "
    "test negative ELBO "
    f"{history_2d[-1]['test_bce'] + history_2d[-1]['test_kl']:.1f} nats"
)

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
# with $K$ samples, $-\mathcal{L}_K$, is a tighter bound that approaches it as $K$ grows. First, how the
# bound tightens with $K$ on a few hundred test images:

# %%
subset = test_x[: min(256, sizes["n_test_nll"])]
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
nll_per_image = torch.cat(
    [
        -iwae_bound(vae, batch, k=sizes["iwae_k"])
        for batch in test_x[: sizes["n_test_nll"]].split(250)
    ]
)
eval_seconds = time.perf_counter() - started
with torch.no_grad():
    test_elbo_terms = elbo_terms(vae, test_x[: sizes["n_test_nll"]])
nll = nll_per_image.mean().item()
nll_se = nll_per_image.std().item() / math.sqrt(len(nll_per_image))
negative_elbo = -test_elbo_terms.elbo.mean().item()
print(
    f"test NLL <= {nll:.2f} ± {nll_se:.2f} nats (IWAE, K = {sizes['iwae_k']}, "
    f"{len(nll_per_image):,} test images, {eval_seconds:.0f} s)"
)
print(
    f"test negative ELBO = {negative_elbo:.2f} nats, "
    f"of which KL = {test_elbo_terms.kl.mean():.2f}"
)
print(
    "reference: Burda et al. (2016), one-stochastic-layer VAE, "
    "IWAE K = 5000: 86.76 nats"
)
glue("vae_nll", f"{nll:.2f}")
glue("vae_nll_se", f"{nll_se:.2f}")
glue("vae_nll_k", f"{sizes['iwae_k']:,}")
glue("vae_nll_n", f"{len(nll_per_image):,}")
glue("vae_negative_elbo", f"{negative_elbo:.2f}")
glue("vae_kl", f"{test_elbo_terms.kl.mean():.2f}")
glue("vae_elbo_iwae_gap", f"{negative_elbo - nll:.1f}")
glue("vae_epochs", f"{len(history)}")
glue("vae_train_minutes", f"{train_seconds / 60:.0f}")
glue("vae_hardware", hardware(device))
glue("vae_profile", profile)

# %% [markdown]
# ### Which latent dimensions are used, and what the gap to the bound is made of
#
# A latent dimension is *active* (Burda et al.) when the encoder's mean moves with the input,
# $\mathrm{Var}_x\big(\mu_{\phi,j}(x)\big) > 0.01$; in an inactive one the mean hardly moves, and
# typically $\sigma_j$ is close to 1 too: $q$ is then close to the prior there, its KL term near
# zero, and it carries almost nothing about $x$. The gap between the ELBO and
# $\log p_\theta(x)$ is $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x))$, and it has two
# sources (Cremer et al., 2018): the *amortization* gap, because one encoder network serves all
# images, and the *approximation* gap, because even the best diagonal Gaussian is not the
# posterior. Optimizing $(\mu, \log\sigma)$ of each image directly, with the decoder fixed, removes
# the first, as far as the optimization gets; what remains up to the $K$-sample bound estimates the
# second, low by the bound's own slack and high by whatever the optimization left. (The printout's
# "at least" holds only if the optimization reached the best Gaussian.)

# %%
with torch.no_grad():
    mu_test, _ = vae.encoder(test_x)
activity = mu_test.var(0)
active = int((activity > 0.01).sum())
print(f"active latent dimensions: {active} of {latent_dim}")


def elbo_estimate(x, mu, log_sigma, samples):
    """A `samples`-sample ELBO estimate per image, for q = N(mu, diag sigma^2)."""
    z = reparameterize(mu, log_sigma, torch.randn(samples, *mu.shape, device=device))
    log_likelihood = (
        bernoulli_log_prob(x.expand(samples, *x.shape), vae.decoder(z)).sum(-1).mean(0)
    )
    return log_likelihood - normal_kl(mu, 2 * log_sigma, 0 * mu, 0 * mu).sum(-1)


torch.manual_seed(seed)
few = test_x[:256]
with torch.no_grad():
    mu0, log_sigma0 = vae.encoder(few)
    amortized = (
        sum(elbo_estimate(few, mu0, log_sigma0, 100).mean().item() for _ in range(10))
        / 10
    )
    bound_few = iwae_bound(vae, few, k=sizes["iwae_k"]).mean().item()
mu_i, log_sigma_i = mu0.clone().requires_grad_(), log_sigma0.clone().requires_grad_()
per_image = torch.optim.Adam([mu_i, log_sigma_i], lr=1e-2)
for _ in range(sizes["refine_steps"]):  # maximize each image's own ELBO
    per_image.zero_grad()
    (-elbo_estimate(few, mu_i, log_sigma_i, 16).sum()).backward()
    per_image.step()
with torch.no_grad():
    optimized = (
        sum(elbo_estimate(few, mu_i, log_sigma_i, 100).mean().item() for _ in range(10))
        / 10
    )
print(
    f"on {len(few)} test images: ELBO with the encoder {amortized:.2f}, "
    "with q optimized per image "
    f"{optimized:.2f}, L_K (K = {sizes['iwae_k']}) {bound_few:.2f} nats"
)
print(
    f"amortization gap {optimized - amortized:.2f} nats, approximation gap at least "
    f"{bound_few - optimized:.2f} nats"
)
glue("vae_active_units", f"{active}")
glue("vae_latent_dim", f"{latent_dim}")
glue("vae_amortization_gap", f"{optimized - amortized:.1f}")
glue("vae_approximation_gap", f"{bound_few - optimized:.1f}")

# %% [markdown]
# ## 5. Publishing the checkpoints
#
# The trained weights are saved in `checkpoints/` with a record of where they came from (profile,
# hardware, wall time, commit, checksum), so that the evaluation chapter and Colab readers can use
# them without training (set `train_from_scratch = False`). The smoke profile writes to a temporary
# folder instead, and never over a published checkpoint.

# %%
record = dict(
    profile=profile,
    hardware=hardware(device),
    train_seconds=round(train_seconds, 1),
    epochs=len(history),
    batch_size=batch_size,
    learning_rate=learning_rate,
    test_binarization_seed=0,
    test_nll=round(nll, 3),
    test_nll_se=round(nll_se, 3),
    test_nll_k=sizes["iwae_k"],
    test_nll_n=len(nll_per_image),
    test_negative_elbo=round(negative_elbo, 3),
    nll_unit="nats",
    history=history,
)
if train_from_scratch:
    summary = publish_checkpoint(
        published_path, vae, config=config, record=record, step=len(history)
    )
    publish_checkpoint(
        published / "vae-j2.pt",
        vae_2d,
        config=vae_2d.config,
        step=len(history_2d),
        record=dict(
            profile=profile,
            hardware=hardware(device),
            train_seconds=round(train_seconds_2d, 1),
            epochs=len(history_2d),
            history=history_2d,
        ),
    )
    for name in (f"vae-j{latent_dim}-{profile}", f"vae-j2-{profile}"):
        # the run is complete: nothing to resume
        (runs / f"{name}-last.pt").unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))
