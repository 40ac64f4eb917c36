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
# trains a WGAN with the gradient penalty on a 2-D mixture where the true W1 is known, and then
# trains two WGANs on MNIST: Algorithm 1 of Arjovsky et al. (2017) with weight clipping, exactly as
# published, and the gradient-penalty version of Gulrajani et al. (2017).

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
train_from_scratch = True  # False: load the published generators instead of training

# %%
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from genmodels.data import eight_gaussians, load_mnist
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
sizes = {  # generator iterations (each follows n_critic critic iterations), at most, and minutes
    "smoke": dict(toy_iterations=20, w1_samples=100, channels=8, clip_iterations=30, gp_iterations=30,
                  clip_minutes=1.0, gp_minutes=1.0, log_every=10),
    "cpu": dict(toy_iterations=2_000, w1_samples=300, channels=32, clip_iterations=100_000,
                gp_iterations=100_000, clip_minutes=13.0, gp_minutes=10.0, log_every=100),
    "gpu": dict(toy_iterations=4_000, w1_samples=300, channels=64, clip_iterations=100_000,
                gp_iterations=100_000, clip_minutes=3.0, gp_minutes=3.0, log_every=500),
}[profile]
checkpoints = Path("../checkpoints")  # the published weights
# Where this run writes: a smoke run only proves the code runs, so it writes to a scratch folder.
published = checkpoints if profile != "smoke" else scratch_dir("wgan")
runs = Path("../runs") if profile != "smoke" else scratch_dir("wgan-runs")  # resumable state
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
        values = np.where(np.isinf(values), np.nan, values)  # infinite away from theta = 0
    ax.plot(thetas, values, "o-" if name == "W1" else ".", ms=3, label=name)
ax.axhline(math.log(2), color="gray", lw=0.5)
ax.text(0.55, math.log(2) + 0.03, "log 2", color="gray")
ax.set_xlabel(r"$\theta$")
ax.set_ylabel("distance between $P_0$ and $P_\\theta$")
ax.legend(ncol=5, fontsize=8, loc="upper center")
assert np.allclose(table["W1"], np.abs(thetas), atol=1e-9)
print("KL(P_0 || P_theta) is infinite for every theta != 0; JS = log 2 =", f"{math.log(2):.4f}")

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
print(f"primal {primal:.4f}   dual {dual:.4f}   area between the CDFs {w1_1d(x, y, a, b):.4f}")
print("optimal plan (rows: x = 0, 3; columns: y = 1, 2):\n", np.round(plan, 3) + 0.0)  # + 0.0: no "-0."
grid = np.linspace(-0.5, 3.5, 801)
cdf_p = (a[None] * (x[None] <= grid[:, None])).sum(1)
cdf_q = (b[None] * (y[None] <= grid[:, None])).sum(1)
slope = np.sign(cdf_q - cdf_p)  # the optimal critic's slope: f' = sign(F_Q - F_P)
fig, axes = plt.subplots(1, 2, figsize=(12, 2.9))
axes[0].step(grid, cdf_p, where="post", label="$F_P$")
axes[0].step(grid, cdf_q, where="post", label="$F_Q$")
axes[0].fill_between(grid, cdf_p, cdf_q, step="post", alpha=0.2, color="gray",
                     label=r"$|F_P - F_Q|$: its area is $W_1$")
axes[0].set_xlabel("x")
axes[0].legend(fontsize=8)
support = np.concatenate([x, y])
order = np.argsort(support)
axes[1].plot(support[order], f[order], "k-", lw=1, label="optimal critic f (linear program)")
axes[1].bar(x, a, width=0.12, color="tab:blue", alpha=0.6, label="P")
axes[1].bar(y, -b, width=0.12, color="tab:orange", alpha=0.6, label="Q (drawn downwards)")
axes[1].set_xlabel("x")
axes[1].legend(fontsize=8)
fig.tight_layout()
assert abs(primal - dual) < 1e-8 and abs(primal - w1_1d(x, y, a, b)) < 1e-8
critic_slopes = np.diff(f[order]) / np.diff(support[order])  # between consecutive support points
for (left, right), s_lp in zip(zip(support[order][:-1], support[order][1:], strict=True), critic_slopes,
                                strict=True):
    s_cdf = slope[(grid > left) & (grid < right)]
    print(f"on ({left:g}, {right:g}): critic slope {s_lp:+.2f}, sign(F_Q - F_P) = {s_cdf.mean():+.0f}")

# %% [markdown]
# Where $F_Q > F_P$ the critic rises with slope 1, where $F_Q < F_P$ it falls with slope $-1$, and
# where the CDFs agree ($1 < x < 2$ here) any slope in $[-1, 1]$ will do: integrating by parts,
# $\mathbb{E}_P[f] - \mathbb{E}_Q[f] = \int f'(t)\,(F_Q(t) - F_P(t))\, dt$, which
# $f' = \operatorname{sign}(F_Q - F_P)$ maximizes. So the critic is high on $P$'s mass at the two
# ends and low on $Q$'s in the middle, as steep as the Lipschitz constraint allows wherever it can
# tell the two apart. A WGAN's critic network is trying to find this $f$, and its estimate
# $\mathbb{E}_P[f] - \mathbb{E}_Q[f]$ is the generator's training signal.
#
# ## 3. A WGAN on a 2-D mixture, where W1 is known
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
toy_config = WGANConfig(data_dim=2, latent_dim=2, hidden_dims=(256, 256, 256), image_output=False)
toy_generator, toy_critic = Generator(toy_config).to(device), Critic(toy_config).to(device)
toy_g_optimizer = torch.optim.Adam(toy_generator.parameters(), lr=1e-4, betas=(0.5, 0.9))
toy_c_optimizer = torch.optim.Adam(toy_critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
n_w1 = sizes["w1_samples"]
floor = np.mean([optimal_transport(mixture.sample(n_w1).numpy(), mixture.sample(n_w1).numpy())[0]
                 for _ in range(3)])
toy_log = []
for iteration in progress(range(sizes["toy_iterations"]), desc="2-D WGAN-GP"):
    for _ in range(10):  # n_critic
        real = mixture.sample(256).float().to(device)
        fake = toy_generator.sample(256).detach()
        f_real, f_fake = toy_critic(real), toy_critic(fake)
        loss = critic_loss(f_real, f_fake) + 10 * gradient_penalty(toy_critic, real, fake)
        toy_c_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        toy_c_optimizer.step()
    toy_g_optimizer.zero_grad(set_to_none=True)
    generator_loss(toy_critic(toy_generator.sample(256))).backward()
    toy_g_optimizer.step()
    if iteration % max(10, sizes["toy_iterations"] // 20) == 0 or iteration + 1 == sizes["toy_iterations"]:
        with torch.no_grad():
            real, fake = mixture.sample(4000).float(), toy_generator.sample(4000).cpu()
            estimate = (toy_critic(real.to(device)).mean() - toy_critic(fake.to(device)).mean()).item()
        exact, _ = optimal_transport(real[:n_w1].numpy(), fake[:n_w1].numpy())
        toy_log.append((iteration + 1, estimate, exact))

# %%
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
axes[1].plot(steps, exacts, "o-", label=f"exact W1, data vs generator ({n_w1} samples each, linear program)")
axes[1].plot(steps, estimates, "s-", label=r"critic estimate $E[f(x)] - E[f(g(z))]$ (4,000 samples each)")
axes[1].axhline(floor, color="gray", ls="--", label=f"exact W1 between two data samples of {n_w1}: the floor")
axes[1].set_xlabel("generator iteration")
axes[1].set_ylabel("W1")
axes[1].legend(fontsize=8)
fig.tight_layout()
print(f"after {steps[-1]} generator iterations: exact W1 {exacts[-1]:.3f} (floor {floor:.3f}), "
      f"critic estimate {estimates[-1]:.3f}")

# %% [markdown]
# The critic is high (red) where the data has more mass than the generator and low (blue) where
# the generator has more: its slope is what pushes the generator's samples. The printed numbers and
# the right panel compare its estimate with the exact W1. Two caveats in reading them: the exact value
# between finite samples has a floor above 0, and the critic's estimate is a lower bound only as far
# as the penalty really keeps $f$ 1-Lipschitz, and a difference of two sample means, so near
# convergence it is small and noisy, and can dip below 0.

# %% [markdown]
# ## 4. MNIST: Algorithm 1 with weight clipping, and the gradient penalty
#
# Both WGANs use the same convolutional pair, after the DCGAN architecture of Arjovsky et al.'s and
# Gulrajani et al.'s experiments, sized for $28 \times 28$ (`genmodels.wgan.ConvGenerator` and
# `ConvCritic`): the generator maps $z \in \mathbb{R}^{64}$ linearly to $2C$ maps of $7 \times 7$ and
# doubles the resolution twice with transposed convolutions (batch normalization, ReLU, a sigmoid
# for grey pixels in $[0, 1]$); the critic halves it twice with strided convolutions and leaky ReLUs
# and ends in one linear unit. The critic has no batch normalization, which the penalty forbids, so
# that the two runs differ only in how the critic is kept Lipschitz and in the optimizer each paper
# prescribes:
#
# | | clipping (Arjovsky et al., Algorithm 1) | gradient penalty (Gulrajani et al.) |
# |---|---|---|
# | Lipschitz constraint | $w \leftarrow \mathrm{clip}(w, -c, c)$ after each critic step, $c = 0.01$ | $\lambda\, \mathbb{E}[(\lVert \nabla f(\hat x) \rVert_2 - 1)^2]$, $\lambda = 10$ |
# | optimizer | RMSProp, $\alpha = 5 \cdot 10^{-5}$ | Adam, $\alpha = 10^{-4}$, $\beta = (0, 0.9)$ |
# | $n_\text{critic}$, $m$ | 5, 64 | 5, 64 |
#
# Each run has a budget of minutes (the `cpu` profile's are printed above). The loop below is
# Algorithm 1 line by line. Every `log_every` generator iterations it records the critic's W
# estimate on the current batch, and it saves the whole state (both networks, both optimizers, the
# RNG) atomically, so an interrupted run resumes and a diverging one stops with the last good
# checkpoint intact.

# %%
train_pixels = load_mnist(train=True).data.float().div(255).reshape(-1, 784).to(device)
n_critic, m, c = 5, 64, 0.01
dcgan = DCGANConfig(channels=sizes["channels"])


def make_optimizer(variant: str, parameters):
    if variant == "clip":
        return torch.optim.RMSprop(parameters, lr=5e-5)
    return torch.optim.Adam(parameters, lr=1e-4, betas=(0.0, 0.9))


def train_wgan(variant: str):
    """Train the MNIST WGAN ``variant`` ("clip" or "gp") for its budget; return the generator, the
    critic, the log, the sample snapshots and the training seconds."""
    iterations, minutes = sizes[f"{variant}_iterations"], sizes[f"{variant}_minutes"]
    generator, critic = ConvGenerator(dcgan).to(device), ConvCritic(dcgan).to(device)
    g_optimizer = make_optimizer(variant, generator.parameters())
    c_optimizer = make_optimizer(variant, critic.parameters())
    state_path = runs / f"wgan-{variant}-{profile}-last.pt"
    run = dict(config=dcgan, variant=variant, iterations=iterations, minutes=minutes, seed=seed,
               n_critic=n_critic, batch_size=m, c=c)  # resume only this run
    log, snapshots, seconds, start = [], {}, 0.0, 0
    fixed_z = torch.randn(32, dcgan.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    if state := resume(state_path, generator, optimizer=g_optimizer, run=run):
        extra = state["extra"]
        critic.load_state_dict(extra["critic"])
        c_optimizer.load_state_dict(extra["critic_optimizer"])
        log, snapshots, seconds, start = extra["log"], extra["snapshots"], extra["seconds"], state["step"]
        print(f"resuming {variant} after generator iteration {start}")
    started = time.perf_counter()
    bar = progress(range(start, iterations), desc=f"WGAN-{variant}", initial=start, total=iterations)
    for iteration in bar:
        for _ in range(n_critic):
            x = train_pixels[torch.randint(len(train_pixels), (m,), device=device)]  # m real samples
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
        g_optimizer.step()  # theta <- theta - alpha * RMSProp(theta, g_theta)  (or Adam)

        if (iteration + 1) % sizes["log_every"] == 0 or iteration + 1 == iterations:
            w_estimate = (f_real.mean() - f_fake.mean()).item()
            if not (math.isfinite(w_estimate) and math.isfinite(g_loss.item()) and abs(w_estimate) < 1e4):
                raise RuntimeError(
                    f"WGAN-{variant} diverged at generator iteration {iteration + 1}: W estimate "
                    f"{w_estimate}, generator loss {g_loss.item()}. The last good state is {state_path} "
                    f"(iteration {start}); lower the learning rate or check the data, then run again "
                    "to resume from it."
                )
            seconds += time.perf_counter() - started
            started = time.perf_counter()
            log.append(dict(iteration=iteration + 1, w_estimate=w_estimate, seconds=seconds))
            out_of_time = seconds > 60 * minutes
            # sample grids at about 2%, 10% and 30% of the budget, and at the end
            due = len(snapshots) < 3 and seconds >= (0.02, 0.1, 0.3)[len(snapshots)] * 60 * minutes
            if due or out_of_time or iteration + 1 == iterations:
                generator.eval()  # batch normalization with its running statistics
                with torch.no_grad():
                    snapshots[iteration + 1] = generator(fixed_z).reshape(-1, 28, 28).cpu()
                generator.train()
            save_checkpoint(state_path, generator, optimizer=g_optimizer, config=dcgan, step=iteration + 1,
                            run=run, extra=dict(critic=critic.state_dict(), log=log, snapshots=snapshots,
                                                critic_optimizer=c_optimizer.state_dict(), seconds=seconds))
            start = iteration + 1
            if out_of_time:
                print(f"WGAN-{variant}: the {minutes:g}-minute budget is spent")
                break
    return generator.eval(), critic.eval(), log, snapshots, seconds


# %%
results = {}
for variant in ("clip", "gp"):
    if train_from_scratch:
        results[variant] = train_wgan(variant)
    else:
        generator, checkpoint = load_generator(checkpoints / f"wgan-{variant}.pt", map_location=device)
        critic = ConvCritic(generator.config).to(device).eval()
        critic.load_state_dict(checkpoint["extra"]["critic"])
        results[variant] = (generator, critic, checkpoint["extra"]["record"]["log"],
                            checkpoint["extra"]["snapshots"], checkpoint["extra"]["record"]["train_seconds"])
    _, _, log, _, seconds = results[variant]
    print(f"WGAN-{variant}: {log[-1]['iteration']:,} generator iterations in {seconds / 60:.1f} minutes "
          f"on {hardware(device)}; final W estimate {log[-1]['w_estimate']:.4f}")

# %% [markdown]
# ## 5. The W estimate over training, and what clipping does to the critic
#
# The lecture's figure: the critic's estimate of $W(P_r, P_\theta)$ over generator iterations,
# here beside samples of a fixed set of $z$ taken along training. The two curves are not in the
# same units. With the penalty the critic is close to 1-Lipschitz and its estimate is on the scale
# of $W_1$ itself. With clipping the critic is $K$-Lipschitz for some $K$ fixed by $c$ and the
# architecture, which nobody computes, so its curve estimates at most $K \cdot W_1$: read its shape,
# not its level, and not against the other curve. The numbers below the figure summarize both.

# %%
fig = plt.figure(figsize=(14, 7))
for row, variant in enumerate(("clip", "gp")):
    _, _, log, snapshots, _ = results[variant]
    ax = fig.add_subplot(2, 1 + len(snapshots), row * (1 + len(snapshots)) + 1)
    its = [entry["iteration"] for entry in log]
    ws = np.array([entry["w_estimate"] for entry in log])
    ax.plot(its, ws, lw=0.6, alpha=0.5)
    window = max(1, len(ws) // 30)
    smooth = np.convolve(ws, np.ones(window) / window, mode="valid")
    ax.plot(its[window - 1:], smooth, lw=1.5)
    ax.set_title(f"WGAN-{variant}: W estimate")
    ax.set_xlabel("generator iteration")
    for column, (iteration, images) in enumerate(sorted(snapshots.items()), start=2):
        grid_ax = fig.add_subplot(2, 1 + len(snapshots), row * (1 + len(snapshots)) + column)
        show_images(images[:16], nrow=4, ax=grid_ax, title=f"iteration {iteration:,}")
    print(f"WGAN-{variant}: W estimate (moving average over {window} logs) starts at {smooth[0]:.3g}, "
          f"peaks at {smooth.max():.3g} (iteration {its[window - 1 + int(smooth.argmax())]:,}) "
          f"and ends at {smooth[-1]:.3g}")
fig.tight_layout()

# %% [markdown]
# Gulrajani et al.'s diagnostic of weight clipping: the distribution of the critic's weights after
# training. RMSProp pushes a clipped weight against the wall of its box whenever the gradient keeps
# pointing outwards, so the weights pile up at $\pm c$; a critic with most weights at the walls
# spends its capacity on being Lipschitz rather than on telling the images apart. The penalized
# critic's weights are free to take any value.

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3))
for ax, variant in zip(axes, ("clip", "gp"), strict=True):
    weights = torch.cat([p.detach().flatten().cpu() for name, p in results[variant][1].named_parameters()
                         if name.endswith("weight")])
    ax.hist(weights.numpy(), bins=101, color="tab:blue")
    ax.set_yscale("log")
    ax.set_title(f"WGAN-{variant}: the critic's {len(weights):,} weights")
    ax.set_xlabel("weight")
    if variant == "clip":
        at_walls = (weights.abs() >= 0.99 * c).float().mean().item()
        print(f"WGAN-clip: {at_walls:.1%} of the critic's weights lie within 1% of the walls ±c = ±{c}")
    else:
        beyond = (weights.abs() > c).float().mean().item()
        print(f"WGAN-gp: {beyond:.1%} of the critic's weights are larger than c = {c} in absolute value "
              f"(clipping would cut them all), the largest {weights.abs().max():.3g}")
fig.tight_layout()

# %% [markdown]
# Samples of the two final generators:

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 6))
for ax, variant in zip(axes, ("clip", "gp"), strict=True):
    generator = results[variant][0]
    with torch.no_grad():
        images = generator.sample(64, generator=torch.Generator(device=device).manual_seed(seed))
    show_images(images.reshape(-1, 28, 28).cpu(), nrow=8, ax=ax, title=f"WGAN-{variant}")

# %% [markdown]
# ## 6. Publishing the generators
#
# Each generator is saved in `checkpoints/` with its critic, its training log, its sample snapshots,
# and where it came from; the [evaluation notebook](07_evaluation.ipynb) measures both.

# %%
if train_from_scratch:
    for variant in ("clip", "gp"):
        generator, critic, log, snapshots, seconds = results[variant]
        record = dict(profile=profile, hardware=hardware(device), train_seconds=round(seconds, 1),
                      generator_iterations=log[-1]["iteration"], n_critic=n_critic, batch_size=m,
                      architecture="DCGAN-style convolutional generator and critic",
                      optimizer="RMSProp lr 5e-5" if variant == "clip" else "Adam lr 1e-4 betas (0, 0.9)",
                      lipschitz=(f"weight clipping c = {c}" if variant == "clip"
                                 else "gradient penalty lambda = 10"),
                      log=log)
        summary = publish_checkpoint(published / f"wgan-{variant}.pt", generator, config=generator.config,
                                     record=record, step=log[-1]["iteration"],
                                     extra=dict(snapshots=snapshots, critic=critic.state_dict()))
        (runs / f"wgan-{variant}-{profile}-last.pt").unlink(missing_ok=True)
        print(f"published {summary['file']}: sha256 {summary['sha256'][:16]}..., "
              f"{summary['params']:,} parameters")
