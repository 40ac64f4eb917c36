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
# # Wasserstein GANs: distances, duality, and Algorithm 1 on MNIST
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/genmodels-book/a-tale-of-vaes-wgans-ddpms/blob/main/notebooks/03_wgan.ipynb)
#
# This notebook goes with the [WGAN chapter](../chapters/wgan.md). It computes the distances of the
# parallel-lines example exactly, works the Kantorovich-Rubinstein duality on a small problem,
# trains a WGAN with the gradient penalty on a 2-D mixture, where W1 between samples can be
# computed exactly, and then trains two WGANs on MNIST: Algorithm 1 of Arjovsky et al. (2017) with
# weight clipping, exactly as published, and the gradient-penalty version of Gulrajani et al.
# (2017).

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
train_from_scratch = True  # False: load the published generators instead of training

# %%
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from genmodels.data import eight_gaussians, load_mnist
from genmodels.plotting import glue, show_images
from genmodels.train import (
    TrainingRun,
    hardware,
    pick_device,
    progress,
    publish_checkpoint,
    resolve_profile,
    scratch_dir,
    seed_everything,
)
from genmodels.wasserstein import (
    hellinger_distance,
    js_divergence,
    kantorovich_dual,
    kl_divergence,
    optimal_transport,
    parallel_lines,
    total_variation,
    w1_1d,
)
from genmodels.wgan import (
    ConvCritic,
    ConvGenerator,
    Critic,
    DCGANConfig,
    Generator,
    WGANConfig,
    clip_weights_,
    critic_loss,
    generator_loss,
    gradient_penalty,
    load_generator,
)

profile = resolve_profile(profile)
seed_everything(seed)
device = pick_device()
# generator iterations (each follows n_critic critic iterations), at most, and minutes
sizes = {
    "smoke": dict(
        toy_iterations=20,
        w1_samples=100,
        clip_channels=8,
        gp_channels=8,
        iterations=30,
        clip_minutes=1.0,
        gp_minutes=1.0,
        log_every=10,
    ),
    "cpu": dict(
        toy_iterations=2_000,
        w1_samples=300,
        clip_channels=32,
        gp_channels=16,
        iterations=100_000,
        clip_minutes=13.0,
        gp_minutes=13.0,
        log_every=100,
    ),
    "gpu": dict(  # launch-bound small steps: the 2-D run gains little from a GPU
        toy_iterations=2_000,
        w1_samples=300,
        clip_channels=64,
        gp_channels=64,
        iterations=100_000,
        clip_minutes=2.0,
        gp_minutes=2.0,
        log_every=500,
    ),
}[profile]
checkpoints = Path("../checkpoints")  # the published weights
# Where this run writes: a smoke run only proves the code runs,
# so it writes to a scratch folder.
published = checkpoints if profile != "smoke" else scratch_dir("wgan")
# resumable state
runs = Path("../runs") if profile != "smoke" else scratch_dir("wgan-runs")
print(f"profile {profile} on {hardware(device)}: {sizes}")

# %% [markdown]
# ## 1. Distances on the parallel lines
#
# Let $Z \sim U[0, 1]$, $P_0$ the distribution of $(0, Z)$ and $P_\theta$ that of $(\theta, Z)$:
# two vertical segments at horizontal distance $|\theta|$. We discretize $Z$ on 41 points and
# compute every distance exactly: W1 as the optimal-transport linear program, the divergences from
# the probability vectors on the joint support.

# %%
thetas = np.linspace(-1, 1, 41)
table = {name: [] for name in ("W1", "JS", "KL", "TV", "Hellinger")}
for theta in thetas:
    p_points, q_points, p, q = parallel_lines(theta)
    table["W1"].append(optimal_transport(p_points, q_points)[0])
    table["JS"].append(js_divergence(p, q))
    table["KL"].append(kl_divergence(p, q))
    table["TV"].append(total_variation(p, q))
    table["Hellinger"].append(hellinger_distance(p, q))
fig, ax = plt.subplots(figsize=(7, 3.4))
for name, values in table.items():
    values = np.array(values)
    if name == "KL":
        # infinite away from theta = 0
        values = np.where(np.isinf(values), np.nan, values)
    ax.plot(thetas, values, "o-" if name == "W1" else ".", ms=3, label=name)
ax.axhline(math.log(2), color="gray", lw=0.5)
ax.text(0.55, math.log(2) + 0.03, "log 2", color="gray")
ax.set_xlabel(r"$\theta$")
ax.set_ylabel("distance between $P_0$ and $P_\\theta$")
ax.legend(ncol=5, fontsize=8, loc="upper center")
assert np.allclose(table["W1"], np.abs(thetas), atol=1e-9)
glue("wgan_parallel_lines_figure", fig)
print(
    "KL(P_0 || P_theta) is infinite for every theta != 0; JS = log 2 =",
    f"{math.log(2):.4f}",
)

# %% [markdown]
# W1 $= |\theta|$ is continuous in $\theta$ and has a useful gradient everywhere but at 0; JS, TV and
# Hellinger jump to their maximum as soon as $\theta \neq 0$ and are flat otherwise, and KL is
# infinite. A generator whose samples lie on a low-dimensional set, as images do, is in the
# situation of $P_\theta$: the f-divergences give it no signal about which way to move.
#
# ## 2. Kantorovich-Rubinstein duality, worked
#
# Two small distributions on the line: $P$ puts half its mass on 0 and half on 3, $Q$ half on 1 and
# half on 2, so $P$ is the wider of the two and their cumulative distribution functions cross. The
# primal (the cheapest transport plan), the dual (the best 1-Lipschitz $f$) and the area between
# the CDFs all give the same number.

# %%
x, a = np.array([0.0, 3.0]), np.array([0.5, 0.5])
y, b = np.array([1.0, 2.0]), np.array([0.5, 0.5])
primal, plan = optimal_transport(x, y, a, b)
dual, f = kantorovich_dual(x, y, a, b)
print(
    f"primal {primal:.4f}   dual {dual:.4f}   "
    f"area between the CDFs {w1_1d(x, y, a, b):.4f}"
)
print(
    "optimal plan (rows: x = 0, 3; columns: y = 1, 2):\n",
    np.round(plan, 3) + 0.0,  # + 0.0: no "-0."
)
grid = np.linspace(-0.5, 3.5, 801)
cdf_p = (a[None] * (x[None] <= grid[:, None])).sum(1)
cdf_q = (b[None] * (y[None] <= grid[:, None])).sum(1)
slope = np.sign(cdf_q - cdf_p)  # the optimal critic's slope: f' = sign(F_Q - F_P)
fig, axes = plt.subplots(1, 2, figsize=(12, 2.9))
axes[0].step(grid, cdf_p, where="post", label="$F_P$")
axes[0].step(grid, cdf_q, where="post", label="$F_Q$")
axes[0].fill_between(
    grid,
    cdf_p,
    cdf_q,
    step="post",
    alpha=0.2,
    color="gray",
    label=r"$|F_P - F_Q|$: its area is $W_1$",
)
axes[0].set_xlabel("x")
axes[0].legend(fontsize=8)
support = np.concatenate([x, y])
order = np.argsort(support)
axes[1].plot(
    support[order], f[order], "k-", lw=1, label="optimal critic f (linear program)"
)
axes[1].bar(x, a, width=0.12, color="tab:blue", alpha=0.6, label="P")
axes[1].bar(
    y, -b, width=0.12, color="tab:orange", alpha=0.6, label="Q (drawn downwards)"
)
axes[1].set_xlabel("x")
axes[1].legend(fontsize=8)
fig.tight_layout()
glue("wgan_kr_example_figure", fig)
assert abs(primal - dual) < 1e-8 and abs(primal - w1_1d(x, y, a, b)) < 1e-8
# between consecutive support points
critic_slopes = np.diff(f[order]) / np.diff(support[order])
for (left, right), s_lp in zip(
    zip(support[order][:-1], support[order][1:], strict=True),
    critic_slopes,
    strict=True,
):
    s_cdf = slope[(grid > left) & (grid < right)]
    print(
        f"on ({left:g}, {right:g}): critic slope {s_lp:+.2f}, "
        f"sign(F_Q - F_P) = {s_cdf.mean():+.0f}"
    )

# %% [markdown]
# Where $F_Q > F_P$ the critic rises with slope 1, where $F_Q < F_P$ it falls with slope $-1$, and
# where the CDFs agree ($1 < x < 2$ here) any slope in $[-1, 1]$ will do: integrating by parts,
# $\mathbb{E}_P[f] - \mathbb{E}_Q[f] = \int f'(t)\,(F_Q(t) - F_P(t))\, dt$, which
# $f' = \operatorname{sign}(F_Q - F_P)$ maximizes. So the critic is high on $P$'s mass at the two
# ends and low on $Q$'s in the middle, as steep as the Lipschitz constraint allows wherever it can
# tell the two apart. A WGAN's critic network is trying to find this $f$, and its estimate
# $\mathbb{E}_P[f] - \mathbb{E}_Q[f]$ is the generator's training signal.
#
# ### Erratum demonstrated: the duality is about $W_1$, not $W_2^2$
#
# The lecture writes the Wasserstein distance with the cost $\lVert x - y \rVert^2$ and then
# applies Kantorovich-Rubinstein duality to it. With that cost the primal is $W_2^2$, and the
# dual over 1-Lipschitz critics does not equal it: it equals $W_1$, the primal with cost
# $\lVert x - y \rVert$. On two samples of ten points, and on copies of them scaled by $s$ (where
# $W_1$ grows like $s$ and $W_2^2$ like $s^2$), the three linear programs:

# %%
rng = np.random.default_rng(seed)
x10, y10 = rng.normal(0, 1, 10), rng.normal(1.5, 0.5, 10)
scales = np.array([0.25, 0.5, 1, 2, 4])
rows = [
    (
        optimal_transport(s * x10, s * y10)[0],
        kantorovich_dual(s * x10, s * y10)[0],
        optimal_transport(s * x10, s * y10, p=2)[0],
    )
    for s in scales
]
for s, (w1, dual_value, w2_squared) in zip(scales, rows, strict=True):
    print(
        f"s = {s:4g}: W1 (primal) {w1:7.4f}   dual, 1-Lipschitz f {dual_value:7.4f}   "
        f"W2^2 (primal, squared cost) {w2_squared:8.4f}"
    )
w1s, duals, w2s = np.array(rows).T
assert np.allclose(w1s, duals, atol=1e-8) and not np.allclose(duals, w2s, rtol=0.05)
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.loglog(scales, duals, "o-", label="dual over 1-Lipschitz critics")
ax.loglog(scales, w1s, "k+", ms=12, label="$W_1$: transport with cost $|x - y|$")
ax.loglog(scales, w2s, "s--", label="$W_2^2$: transport with cost $|x - y|^2$")
ax.set_xlabel("scale s of both samples")
ax.legend(fontsize=8)
glue("wgan_w1_w2_figure", fig)

# %% [markdown]
# ## 3. A WGAN on a 2-D mixture, where W1 between samples can be computed exactly
#
# The generator maps $z \sim \mathcal{N}(0, I_2)$ through an MLP to the plane; the critic is an MLP
# without batch normalization. We train with the gradient penalty, $\lambda = 10$ and Adam's
# $\alpha = 10^{-4}$, $\beta_2 = 0.9$ as in Gulrajani et al.'s Algorithm 1, but with $\beta_1 = 0.5$
# in place of its 0 and $n_\text{critic} = 10$ in place of its 5: a critic kept closer to its
# optimum gives the generator the gradient of W itself. We compare the critic's estimate with the
# exact W1 between samples, computed by
# the transport linear program. Even two samples of the *same* distribution are at a positive W1
# from each other; that floor is drawn too.

# %%
mixture = eight_gaussians(radius=2.0, std=0.2)
toy_config = WGANConfig(
    data_dim=2, latent_dim=2, hidden_dims=(256, 256, 256), image_output=False
)
toy_generator, toy_critic = (
    Generator(toy_config).to(device),
    Critic(toy_config).to(device),
)
toy_g_optimizer = torch.optim.Adam(
    toy_generator.parameters(), lr=1e-4, betas=(0.5, 0.9)
)
toy_c_optimizer = torch.optim.Adam(toy_critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
n_w1 = sizes["w1_samples"]
floor = np.mean(
    [
        optimal_transport(mixture.sample(n_w1).numpy(), mixture.sample(n_w1).numpy())[0]
        for _ in range(3)
    ]
)
toy_log = []
for iteration in progress(range(sizes["toy_iterations"]), desc="2-D WGAN-GP"):
    for _ in range(10):  # n_critic
        real = mixture.sample(256).float().to(device)
        fake = toy_generator.sample(256).detach()
        f_real, f_fake = toy_critic(real), toy_critic(fake)
        loss = (
            critic_loss(f_real, f_fake)
            + 10 * gradient_penalty(toy_critic, real, fake)
        )
        toy_c_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        toy_c_optimizer.step()
    toy_g_optimizer.zero_grad(set_to_none=True)
    generator_loss(toy_critic(toy_generator.sample(256))).backward()
    toy_g_optimizer.step()
    if (
        iteration % max(10, sizes["toy_iterations"] // 20) == 0
        or iteration + 1 == sizes["toy_iterations"]
    ):
        with torch.no_grad():
            real, fake = mixture.sample(4000).float(), toy_generator.sample(4000).cpu()
            estimate = (
                toy_critic(real.to(device)).mean() - toy_critic(fake.to(device)).mean()
            ).item()
        exact, _ = optimal_transport(real[:n_w1].numpy(), fake[:n_w1].numpy())
        toy_log.append((iteration + 1, estimate, exact))

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
grid = torch.linspace(-3.2, 3.2, 150)
gx, gy = torch.meshgrid(grid, grid, indexing="xy")
with torch.no_grad():
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).to(device)
    landscape = toy_critic(points).reshape(150, 150).cpu()
    fake = toy_generator.sample(1000).cpu()
contour = axes[0].contourf(gx, gy, landscape, levels=30, cmap="RdBu_r")
fig.colorbar(contour, ax=axes[0], label="critic $f_w(x)$")
real = mixture.sample(1000)
axes[0].scatter(real[:, 0], real[:, 1], s=2, c="black", label="data")
axes[0].scatter(fake[:, 0], fake[:, 1], s=2, c="gold", label="generator")
axes[0].legend(loc="upper right", fontsize=8)
axes[0].set_title("the trained critic's landscape")
axes[0].set_aspect("equal")
steps, estimates, exacts = zip(*toy_log, strict=True)
axes[1].plot(
    steps,
    exacts,
    "o-",
    label=f"exact W1, data vs generator ({n_w1} samples each, linear program)",
)
axes[1].plot(
    steps,
    estimates,
    "s-",
    label=r"critic estimate $E[f(x)] - E[f(g(z))]$ (4,000 samples each)",
)
axes[1].axhline(
    floor,
    color="gray",
    ls="--",
    label=f"exact W1 between two data samples of {n_w1}: the floor",
)
axes[1].set_xlabel("generator iteration")
axes[1].set_ylabel("W1")
axes[1].legend(fontsize=8)
fig.tight_layout()
print(
    f"after {steps[-1]} generator iterations: "
    f"exact W1 {exacts[-1]:.3f} (floor {floor:.3f}), "
    f"critic estimate {estimates[-1]:.3f}"
)
glue("wgan_toy_figure", fig)
glue("wgan_toy_exact", f"{exacts[-1]:.2f}")
glue("wgan_toy_floor", f"{floor:.2f}")
glue("wgan_toy_estimate", f"{estimates[-1]:.3f}")
glue("wgan_toy_estimate_min", f"{min(estimates):.2f}")
glue("wgan_toy_iterations", f"{steps[-1]:,}")

# %% [markdown]
# The critic is high (red) where the data has more mass than the generator and low (blue) where
# the generator has more: its slope is what pushes the generator's samples. The printed numbers and
# the right panel compare its estimate with the exact W1. Two caveats in reading them: the exact value
# between finite samples has a floor above 0 (two samples of the data are that far apart), so it
# overestimates the W1 between the distributions, and the critic's estimate is a lower bound only as
# far as the penalty really keeps $f$ 1-Lipschitz (and, from finite samples, only up to sampling
# noise); it equals W1 only if the critic has also found the supremum. A critic
# that lags behind a generator that has just moved can even estimate below 0, which no distance can.

# %% [markdown]
# ## 4. MNIST: Algorithm 1 with weight clipping, and the gradient penalty
#
# Both WGANs use the same convolutional pair, after the DCGAN architecture of Arjovsky et al.'s and
# Gulrajani et al.'s experiments, sized for $28 \times 28$ (`genmodels.wgan.ConvGenerator` and
# `ConvCritic`): the generator maps $z \in \mathbb{R}^{64}$ linearly to $2C$ maps of $7 \times 7$ and
# doubles the resolution twice with transposed convolutions (batch normalization, ReLU, a sigmoid
# for grey pixels in $[0, 1]$); the critic halves it twice with strided convolutions and leaky ReLUs
# and ends in one linear unit. The critic has no batch normalization, which the penalty forbids, so
# that the two runs differ in how the critic is kept Lipschitz and in the optimizer each paper
# prescribes, and in the `cpu` profile also in width (`clip_channels` and `gp_channels` above):
#
# | | clipping (Arjovsky et al., Algorithm 1) | gradient penalty (Gulrajani et al.) |
# |---|---|---|
# | Lipschitz constraint | $w \leftarrow \mathrm{clip}(w, -c, c)$ after each critic step, $c = 0.01$ | $\lambda\, \mathbb{E}[(\lVert \nabla f(\hat x) \rVert_2 - 1)^2]$, $\lambda = 10$ |
# | optimizer | RMSProp, $\alpha = 5 \cdot 10^{-5}$ | Adam, $\alpha = 10^{-4}$, $\beta = (0, 0.9)$ |
# | $n_\text{critic}$, $m$ | 5, 64 | 5, 64 (the paper fixes no $m$; its MNIST code uses 50) |
#
# Each run has a budget of minutes (the `cpu` profile's are printed above). The loop below is
# Algorithm 1 line by line. Every `log_every` generator iterations it records the critic's W
# estimate on the current batch, and it saves the whole state (both networks, both optimizers, the
# RNG) atomically, so an interrupted run resumes and a diverging one stops with the last good
# checkpoint intact.

# %%
train_pixels = load_mnist(train=True).data.float().div(255).reshape(-1, 784).to(device)
n_critic, m, c = 5, 64, 0.01
dcgan = {
    variant: DCGANConfig(channels=sizes[f"{variant}_channels"])
    for variant in ("clip", "gp")
}
print(
    "lecture's loop 'for t = 0, ..., n_critic' runs",
    len(range(0, n_critic + 1)),
    "times; the paper's critic takes",
    len(range(n_critic)),
    "steps per generator step, as below",
)


def make_optimizer(variant: str, network):
    if variant == "clip":
        return torch.optim.RMSprop(network.parameters(), lr=5e-5)
    return torch.optim.Adam(network.parameters(), lr=1e-4, betas=(0.0, 0.9))


def train_wgan(variant: str):
    """Algorithm 1 for the variant's budget ("gp": gradient penalty, not clipping)."""
    generator, critic, g_optimizer, c_optimizer, state = training_parts(variant)
    # Resumes, and saves every log_every iterations:
    for _ in state.steps(**budget(variant)):
        for _ in range(n_critic):
            # m real samples:
            x = train_pixels[torch.randint(len(train_pixels), (m,), device=device)]
            fake = generator.sample(m).detach()  # g_theta(z), z ~ p(z)
            f_real, f_fake = critic(x), critic(fake)
            loss = critic_loss(f_real, f_fake)  # -(mean f(x) - mean f(g(z)))
            if variant == "gp":
                loss = loss + 10.0 * gradient_penalty(critic, x, fake)
            c_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            c_optimizer.step()  # w <- w + alpha * RMSProp(w, g_w)  (or Adam)
            if variant == "clip":
                clip_weights_(critic, c)  # w <- clip(w, -c, c), after the step
        g_loss = generator_loss(critic(generator.sample(m)))  # -mean f(g_theta(z))
        g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        g_optimizer.step()  # theta <- theta - alpha * RMSProp(theta, g_theta) (or Adam)
        log_progress(state, variant, generator, f_real, f_fake, g_loss)
    return (generator.eval(), critic.eval(), state.log,
            final_snapshots(state, generator), state.seconds)


# %% [markdown]
# The bookkeeping the loop calls: the two networks with their optimizers and the run's saved
# state, the settings that identify a run (a saved state is resumed only by the same
# settings), and the record kept at every save: the W estimate, the clock, a stop if
# the run diverged, and grids of the same 32 latent codes at about 2 %, 10 % and 30 % of the
# budget and at the end.

# %%
latent_dim = dcgan["clip"].latent_dim
fixed_z = torch.randn(
    32, latent_dim, generator=torch.Generator().manual_seed(seed)
).to(device)


def training_parts(variant: str):
    """The two networks, their optimizers, and the run's saved state."""
    generator = ConvGenerator(dcgan[variant]).to(device)
    critic = ConvCritic(dcgan[variant]).to(device)
    g_optimizer = make_optimizer(variant, generator)
    c_optimizer = make_optimizer(variant, critic)
    state = TrainingRun(runs / f"wgan-{variant}-{profile}-last.pt",
                        run=settings(variant), model=generator, optimizer=g_optimizer,
                        critic=critic, critic_optimizer=c_optimizer)
    return generator, critic, g_optimizer, c_optimizer, state


def settings(variant: str) -> dict:
    return dict(
        config=dcgan[variant],
        variant=variant,
        iterations=sizes["iterations"],
        minutes=sizes[f"{variant}_minutes"],
        seed=seed,
        n_critic=n_critic,
        batch_size=m,
        c=c,
    )


def budget(variant: str) -> dict:
    return dict(
        total=sizes["iterations"],
        every=sizes["log_every"],
        minutes=sizes[f"{variant}_minutes"],
        desc=f"WGAN-{variant}",
    )


def log_progress(state: TrainingRun, variant: str, generator, f_real, f_fake, g_loss):
    """At every save: the W estimate on the current batch, a stop if the run
    diverged, snapshots."""
    if not state.due:
        return
    w_estimate = (f_real.mean() - f_fake.mean()).item()
    state.check_finite(w_estimate=w_estimate, generator_loss=g_loss.item())
    state.log.append(
        dict(iteration=state.current + 1, w_estimate=w_estimate, seconds=state.seconds)
    )
    taken = len(state.extra.setdefault("snapshots", {}))
    if (
        taken < 3
        and state.seconds >= (0.02, 0.1, 0.3)[taken] * 60 * sizes[f"{variant}_minutes"]
    ):
        snapshot(state, generator, state.current + 1)


@torch.no_grad()
def snapshot(state: TrainingRun, generator, iteration: int):
    generator.eval()  # batch normalization with its running statistics
    state.extra.setdefault("snapshots", {})[iteration] = (
        generator(fixed_z).reshape(-1, 28, 28).cpu()
    )
    generator.train()


def final_snapshots(state: TrainingRun, generator) -> dict:
    snapshot(state, generator, state.step)
    return state.extra["snapshots"]


# %%
results = {}
for variant in ("clip", "gp"):
    if train_from_scratch:
        results[variant] = train_wgan(variant)
    else:
        generator, checkpoint = load_generator(
            checkpoints / f"wgan-{variant}.pt", map_location=device
        )
        critic = ConvCritic(generator.config).to(device).eval()
        critic.load_state_dict(checkpoint["extra"]["critic"])
        results[variant] = (
            generator,
            critic,
            checkpoint["extra"]["record"]["log"],
            checkpoint["extra"]["snapshots"],
            checkpoint["extra"]["record"]["train_seconds"],
        )
    _, _, log, _, seconds = results[variant]
    print(
        f"WGAN-{variant}: {log[-1]['iteration']:,} generator iterations in "
        f"{seconds / 60:.1f} minutes "
        f"on {hardware(device)}; final W estimate {log[-1]['w_estimate']:.4f}"
    )

# %% [markdown]
# ## 5. The W estimate over training, and what clipping does to the critic
#
# The lecture's figure: the critic's estimate of $W(P_r, P_\theta)$ over generator iterations,
# here beside samples of a fixed set of $z$ taken along training. The two curves are not in the
# same units. With the penalty the critic is close to 1-Lipschitz and its estimate is on the scale
# of $W_1$ itself. With clipping the critic is $K$-Lipschitz for some $K$ fixed by $c$ and the
# architecture, so its curve estimates at most $K \cdot W_1$ (the critic's slope is measured below):
# read its shape, not its level, and not against the other curve. The numbers below the figure
# summarize both.

# %% tags=["hide-input"]
fig = plt.figure(figsize=(14, 7))
columns = 1 + max(len(results[variant][3]) for variant in ("clip", "gp"))
for row, variant in enumerate(("clip", "gp")):
    _, _, log, snapshots, _ = results[variant]
    ax = fig.add_subplot(2, columns, row * columns + 1)
    its = [entry["iteration"] for entry in log]
    ws = np.array([entry["w_estimate"] for entry in log])
    ax.plot(its, ws, lw=0.6, alpha=0.5)
    window = max(1, len(ws) // 30)
    smooth = np.convolve(ws, np.ones(window) / window, mode="valid")
    ax.plot(its[window - 1 :], smooth, lw=1.5)
    ax.set_title(f"WGAN-{variant}: W estimate")
    ax.set_xlabel("generator iteration")
    for column, (iteration, images) in enumerate(sorted(snapshots.items()), start=2):
        grid_ax = fig.add_subplot(2, columns, row * columns + column)
        show_images(images[:16], nrow=4, ax=grid_ax, title=f"iteration {iteration:,}")
    print(
        f"WGAN-{variant}: W estimate (moving average over {window} logs) "
        f"starts at {smooth[0]:.3g}, peaks at {smooth.max():.3g} "
        f"(iteration {its[window - 1 + int(smooth.argmax())]:,}) "
        f"and ends at {smooth[-1]:.3g}"
    )
    glue(f"wgan_{variant}_w_start", f"{smooth[0]:.2f}")
    glue(f"wgan_{variant}_w_peak", f"{smooth.max():.2f}")
    glue(f"wgan_{variant}_w_end", f"{smooth[-1]:.2f}")
    glue(f"wgan_{variant}_iterations", f"{log[-1]['iteration']:,}")
    glue(f"wgan_{variant}_minutes", f"{results[variant][4] / 60:.0f}")
fig.tight_layout()
glue("wgan_curves_figure", fig)

# %% [markdown]
# Gulrajani et al.'s diagnostic of weight clipping: the distribution of the critic's weights after
# training. RMSProp pushes a clipped weight against the wall of its box whenever the gradient keeps
# pointing outwards, so the weights pile up at $\pm c$ (an even spread over the box would put 1 % of
# them within 1 % of the walls; the share is printed below); a critic with many of its weights at
# the walls spends its capacity on being Lipschitz rather than on telling the images apart.
# The penalized
# critic's weights are free to take any value.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3))
for ax, variant in zip(axes, ("clip", "gp"), strict=True):
    weights = torch.cat(
        [
            p.detach().flatten().cpu()
            for name, p in results[variant][1].named_parameters()
            if name.endswith("weight")
        ]
    )
    ax.hist(weights.numpy(), bins=101, color="tab:blue")
    ax.set_yscale("log")
    ax.set_title(f"WGAN-{variant}: the critic's {len(weights):,} weights")
    ax.set_xlabel("weight")
    if variant == "clip":
        at_walls = (weights.abs() >= 0.99 * c).float().mean().item()
        print(
            f"WGAN-clip: {at_walls:.1%} of the critic's weights "
            f"lie within 1% of the walls ±c = ±{c}"
        )
    else:
        beyond = (weights.abs() > c).float().mean().item()
        print(
            f"WGAN-gp: {beyond:.1%} of the critic's weights "
            f"are larger than c = {c} in absolute value "
            f"(clipping would cut them all), the largest {weights.abs().max():.3g}"
        )
        glue("wgan_gp_beyond_c", f"{beyond:.0%}")
fig.tight_layout()
glue("wgan_weights_figure", fig)
glue("wgan_clip_at_walls", f"{at_walls:.0%}")

# %% [markdown]
# How steep is each critic where it matters? The gradient norm $\lVert \nabla_x f(\hat x) \rVert$ at
# points $\hat x$ between real and generated images, the places where the penalty asks for 1. The
# clipped critic's slope is its effective Lipschitz constant $K$ there: it sets the scale of its
# W estimate, which is $K$ times a distance, not $W_1$ itself.

# %%
x_real = train_pixels[
    torch.randperm(
        len(train_pixels), generator=torch.Generator().manual_seed(seed)
    )[:512]
]
for variant in ("clip", "gp"):
    generator, critic = results[variant][0], results[variant][1]
    with torch.no_grad():
        x_fake = generator.sample(
            512, generator=torch.Generator(device=device).manual_seed(seed)
        )
    mix = torch.rand(512, 1, device=device)
    x_hat = (mix * x_real + (1 - mix) * x_fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    norms = gradient.norm(dim=1)
    print(
        f"WGAN-{variant}: gradient norm of the critic at interpolates: "
        f"median {norms.median():.3g}, "
        f"10-90 % range {norms.quantile(0.1):.3g} to {norms.quantile(0.9):.3g}"
    )
    glue(f"wgan_{variant}_grad_norm", f"{norms.median():.2g}")

# %% [markdown]
# Samples of the two final generators. (In this run `train_wgan` returned its generator in training
# mode: its last snapshot put batch normalization back into training mode after the return value
# had switched it off. So the samples below, and the generated images of the gradient-norm cell
# above, are normalized by their own batch's statistics rather than the running ones, and these
# two cells moved the running statistics a little before the generators were published. The
# fix, taking the last snapshot before switching the generator to eval mode, goes in with the
# run that replaces this one.)

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
for ax, variant in zip(axes, ("clip", "gp"), strict=True):
    generator = results[variant][0]
    with torch.no_grad():
        images = generator.sample(
            64, generator=torch.Generator(device=device).manual_seed(seed)
        )
    show_images(
        images.reshape(-1, 28, 28).cpu(), nrow=8, ax=ax, title=f"WGAN-{variant}"
    )
glue("wgan_samples_figure", fig)
glue("wgan_hardware", hardware(device))
glue("wgan_profile", profile)

# %% [markdown]
# ## 6. Publishing the generators
#
# Each generator is saved in `checkpoints/` with its critic, its training log, its sample snapshots,
# and where it came from; the [evaluation notebook](07_evaluation.ipynb) measures both.

# %%
if train_from_scratch:
    for variant in ("clip", "gp"):
        generator, critic, log, snapshots, seconds = results[variant]
        record = dict(
            profile=profile,
            hardware=hardware(device),
            train_seconds=round(seconds, 1),
            generator_iterations=log[-1]["iteration"],
            n_critic=n_critic,
            batch_size=m,
            architecture="DCGAN-style convolutional generator and critic",
            optimizer="RMSProp lr 5e-5"
            if variant == "clip"
            else "Adam lr 1e-4 betas (0, 0.9)",
            lipschitz=(
                f"weight clipping c = {c}"
                if variant == "clip"
                else "gradient penalty lambda = 10"
            ),
            log=log,
        )
        summary = publish_checkpoint(
            published / f"wgan-{variant}.pt",
            generator,
            config=generator.config,
            record=record,
            step=log[-1]["iteration"],
            extra=dict(snapshots=snapshots, critic=critic.state_dict()),
        )
        (runs / f"wgan-{variant}-{profile}-last.pt").unlink(missing_ok=True)
        print(
            f"published {summary['file']}: sha256 {summary['sha256'][:16]}..., "
            f"{summary['params']:,} parameters"
        )
