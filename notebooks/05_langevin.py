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
# # Langevin dynamics and score matching: exact on toy densities, then on MNIST
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/genmodels-book/a-tale-of-vaes-wgans-ddpms/blob/main/notebooks/05_langevin.ipynb)
#
# This notebook goes with the [Langevin chapter](../chapters/langevin.md). On 2-D densities whose
# score is known exactly it runs Langevin Monte Carlo and measures what the chapter derives: the
# bias of the unadjusted chain and how the Metropolis correction removes it, the runaway chain of
# the lecture's sign, why one noise level is not enough and annealing is, and a network that learns
# the score by denoising. Then it turns the published DDPM's noise predictor into a score and samples
# MNIST digits with a predictor-corrector sampler.

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
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, Markdown, display
from markdown_it import MarkdownIt
from matplotlib import animation
from scipy import linalg, stats

from genmodels.data import GaussianMixture, eight_gaussians, load_mnist
from genmodels.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddim_timesteps,
    diffused_mixture,
    dpm_solver_2m_sample,
    load_ddpm,
    mixture_reverse_conditional,
    predict_x0,
)
from genmodels.features import extract_features, load_classifier
from genmodels.langevin import (
    annealed_langevin_sample,
    dsm_loss,
    langevin_sample,
    mala_sample,
    score_from_eps,
)
from genmodels.metrics import FeatureStatistics, frechet_distance, to_uint8
from genmodels.plotting import animation_html, density_and_score, glue, show_images
from genmodels.train import hardware, pick_device, resolve_profile, seed_everything

profile = resolve_profile(profile)
seed_everything(seed)
device = pick_device()
sizes = {  # what each compute profile affords
    "smoke": dict(
        particles=500, chain_steps=200, dsm_steps=100, frames=10, n_fid=256, calls=10
    ),
    "cpu": dict(
        particles=4_000,
        chain_steps=2_000,
        dsm_steps=20_000,
        frames=40,
        n_fid=1_000,
        calls=50,
    ),
    "gpu": dict(
        particles=20_000,
        chain_steps=4_000,
        dsm_steps=40_000,
        frames=60,
        n_fid=10_000,
        calls=50,
    ),
}[profile]
print(f"profile {profile} on {hardware(device)}: {sizes}")

# %% [markdown]
# ## 1. The score needs no normalizing constant
#
# The score $\nabla_x \log p(x)$ of the eight-Gaussians mixture, drawn as arrows over its density.
# Multiplying $p$ by any constant adds a constant to $\log p$ and leaves the gradient unchanged: the
# score of an unnormalized density, computed by automatic differentiation, is the exact score.

# %%
mixture = eight_gaussians()
points = mixture.sample(
    1_000, generator=torch.Generator().manual_seed(seed)
).requires_grad_()
unnormalized = mixture.log_prob(points) + math.log(7.0)  # log(7 p(x)): not a density
(autograd_score,) = torch.autograd.grad(unnormalized.sum(), points)
difference = (autograd_score - mixture.score(points.detach())).abs().max().item()
print(
    "largest difference between the score of 7 p by autograd and the exact score: "
    f"{difference:.2e}"
)

fig, ax = plt.subplots(figsize=(4, 4))
density_and_score(mixture.log_prob, mixture.score, limits=(-3, 3), ax=ax)
ax.set_title("eight Gaussians and their score")
glue("langevin_score_field", fig)

# %% [markdown]
# ## 2. The unadjusted chain is biased; the Metropolis correction removes the bias
#
# On a Gaussian target $\mathcal{N}(0, \Sigma)$ the score is $-\Sigma^{-1} x$, and the unadjusted
# Langevin chain $x_{k+1} = (I - \eta \Sigma^{-1}) x_k + \sqrt{2\eta}\, \xi_k$ is a linear Gaussian
# recursion. Its stationary covariance $C$ solves $C = A C A^\top + 2\eta I$ with
# $A = I - \eta\Sigma^{-1}$, a discrete Lyapunov equation, and,
# for $0 < \eta < 2\lambda_{\min}(\Sigma)$
# (beyond that the chain diverges), $C \ne \Sigma$ ($C$ is the chapter's $\Sigma_\eta$).
# The chain is run from the target itself, so that any error is the chain's own bias; the
# Metropolis-adjusted chain (MALA) is run beside it.

# %%
sigma = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
precision = torch.linalg.inv(sigma)
target = GaussianMixture(torch.zeros(1, 2), sigma[None], torch.ones(1))
start = target.sample(sizes["particles"], generator=torch.Generator().manual_seed(1))
bias = []
for eta in (0.01, 0.02, 0.05, 0.1, 0.2):  # stable while eta < 2 lambda_min(Sigma) = 0.4
    a = np.eye(2) - eta * precision.numpy()
    # C = A C A^T + 2 eta I
    predicted = linalg.solve_discrete_lyapunov(a, 2 * eta * np.eye(2))
    ula = langevin_sample(
        target.score,
        start,
        eta,
        sizes["chain_steps"],
        generator=torch.Generator().manual_seed(2),
    )
    mala, acceptance = mala_sample(
        target.log_prob,
        target.score,
        start,
        eta,
        sizes["chain_steps"],
        generator=torch.Generator().manual_seed(3),
    )
    bias.append(
        dict(
            eta=eta,
            ula=torch.linalg.norm(torch.cov(ula.T) - sigma).item(),
            predicted=float(np.linalg.norm(predicted - sigma.numpy())),
            mala=torch.linalg.norm(torch.cov(mala.T) - sigma).item(),
            acceptance=acceptance,
        )
    )
    print(
        f"eta {eta:4.2f}: ||C - Sigma|| unadjusted {bias[-1]['ula']:.3f} "
        f"(predicted {bias[-1]['predicted']:.3f}), MALA {bias[-1]['mala']:.3f} "
        f"(acceptance {acceptance:.2f})"
    )

fig, ax = plt.subplots(figsize=(5, 3.5))
etas = [row["eta"] for row in bias]
ax.loglog(
    etas, [row["predicted"] for row in bias], "k--", label="unadjusted, predicted"
)
ax.loglog(etas, [row["ula"] for row in bias], "o", label="unadjusted, measured")
ax.loglog(etas, [max(row["mala"], 1e-3) for row in bias], "s", label="MALA, measured")
ax.set_xlabel("step size η")
ax.set_ylabel("‖covariance − Σ‖ (Frobenius)")
ax.legend(fontsize=8)
glue("langevin_bias", fig)
glue("langevin_bias_eta_01", f"{bias[3]['ula']:.3f}")
glue("langevin_mala_eta_01", f"{bias[3]['mala']:.3f}")

# %% [markdown]
# To try other settings, move the sliders (this needs a running kernel, e.g. on Colab; the figure
# above is the static version): the unadjusted and the Metropolis-adjusted chain after the chosen
# number of steps, with the target's 2-standard-deviation ellipse.


# %% tags=["remove-output"]
def compare_chains(eta: float = 0.1, steps: int = 200) -> None:
    """Draw both chains' particles after ``steps`` steps of size ``eta`` over the
    target's ellipse."""
    ula = langevin_sample(
        target.score,
        start[:1_000],
        eta,
        steps,
        generator=torch.Generator().manual_seed(2),
    )
    mala, acceptance = mala_sample(
        target.log_prob,
        target.score,
        start[:1_000],
        eta,
        steps,
        generator=torch.Generator().manual_seed(3),
    )
    angle = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
    ellipse = (
        2 * torch.stack([angle.cos(), angle.sin()], 1) @ torch.linalg.cholesky(sigma).T
    )
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5), sharex=True, sharey=True)
    for ax, x, title in (
        (axes[0], ula, "unadjusted"),
        (axes[1], mala, f"MALA, {acceptance:.0%} accepted"),
    ):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        ax.plot(ellipse[:, 0], ellipse[:, 1], "k")
        ax.set_title(f"{title}, η = {eta:g}", fontsize=9)
        ax.set_aspect("equal")
    plt.show()


try:
    import ipywidgets

    ipywidgets.interact(
        compare_chains,
        eta=ipywidgets.FloatLogSlider(0.1, base=10, min=-2, max=-0.45),
        steps=ipywidgets.IntSlider(200, 10, 1_000, 10),
    )
except ImportError:  # without ipywidgets, one setting
    compare_chains()

# %% [markdown]
# ## 3. The lecture's sign: a chain that runs away
#
# The lecture's step subtracts $\eta \nabla \log p$. On the same Gaussian, that chain moves *down*
# the log-density: $x_{k+1} = (I + \eta\Sigma^{-1}) x_k + \sqrt{2\eta}\, \xi_k$ grows geometrically.

# %%
wrong_way = lambda x: -target.score(x)  # noqa: E731 (the lecture's minus sign)
x, distances = start[:500], []
for _ in range(20):
    x = langevin_sample(
        wrong_way, x, 0.05, 10, generator=torch.Generator().manual_seed(4)
    )
    distances.append(x.norm(dim=1).mean().item())
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(range(10, 201, 10), distances)
ax.set_xlabel("steps")
ax.set_ylabel("mean distance from the mode")
ax.set_title("x ← x − η ∇log p + √(2η) ξ runs away")
glue("langevin_wrong_sign", fig)
print(f"mean distance after 200 steps with the lecture's sign: {distances[-1]:.3g}")

# %% [markdown]
# ## 4. One noise level is not enough
#
# All particles start in one mode of the eight Gaussians, which are separated by regions where the
# density is almost zero. The chain on the data's own score stays near where it started: the mixture
# weights come out wrong. Annealing runs the chain on the scores of the data convolved with
# $\mathcal{N}(0, \sigma^2 I)$ for a decreasing ladder of $\sigma$: at large $\sigma$ the modes merge
# into one broad bump and the particles spread over all of them, and the later levels sharpen them.


# %%
def mode_counts(x: torch.Tensor) -> np.ndarray:
    """How many particles lie nearest to each of the eight means."""
    nearest = torch.cdist(x, mixture.means).argmin(dim=1)
    return np.bincount(nearest.numpy(), minlength=8)


poor_start = mixture.means[0] + 0.1 * torch.randn(
    sizes["particles"],
    2,
    dtype=torch.float64,
    generator=torch.Generator().manual_seed(5),
)
# the noise ladder sigma_1 > ... > sigma_M (Song & Ermon's sigma_L)
sigmas = np.geomspace(3.0, 0.05, 10).tolist()
# Song & Ermon's step size at the smallest sigma; level i uses
# epsilon sigma_i^2 / sigma_M^2
epsilon = 0.002
steps_per_level = sizes["chain_steps"] // len(sigmas)
single = langevin_sample(
    mixture.score,
    poor_start,
    0.005,
    sizes["chain_steps"],
    generator=torch.Generator().manual_seed(6),
)
annealed = annealed_langevin_sample(
    lambda x, i: mixture.noised(sigmas[i]).score(x),
    poor_start,
    sigmas,
    epsilon,
    steps_per_level,
    generator=torch.Generator().manual_seed(7),
)
p_single = stats.chisquare(mode_counts(single)).pvalue
p_annealed = stats.chisquare(mode_counts(annealed)).pvalue
print(
    f"single level: counts {mode_counts(single).tolist()}, "
    f"chi-square p = {p_single:.2g}"
)
print(
    f"annealed:     counts {mode_counts(annealed).tolist()}, "
    f"chi-square p = {p_annealed:.2g}"
)
glue("langevin_p_single", f"{p_single:.1g}" if p_single > 0 else "below 10⁻³⁰⁰")
glue("langevin_p_annealed", f"{p_annealed:.2f}")

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, x, title in ((axes[0], single, "one level"), (axes[1], annealed, "annealed")):
    density_and_score(mixture.log_prob, limits=(-3, 3), ax=ax)
    ax.scatter(x[:, 0], x[:, 1], s=1, color="tab:orange", alpha=0.5)
    ax.set_title(title)
width = 0.4
axes[2].bar(np.arange(8) - width / 2, mode_counts(single), width, label="one level")
axes[2].bar(np.arange(8) + width / 2, mode_counts(annealed), width, label="annealed")
axes[2].axhline(sizes["particles"] / 8, color="k", ls="--", label="true weight")
axes[2].set_xlabel("mode")
axes[2].set_ylabel("particles")
axes[2].legend(fontsize=8)
fig.tight_layout()
glue("langevin_annealing", fig)

# %% [markdown]
# The same annealing written out level by level, to keep a frame of the particles every
# `frame_every` steps (the chain's steps over the number of frames):
# an animation that plays without a network connection, and a static strip of frames for print.

# %%
x, levels = poor_start, [poor_start]
frame_every = max(1, len(sigmas) * steps_per_level // sizes["frames"])
for i, level in enumerate(sigmas):
    # Song & Ermon's x + alpha_i / 2 s + sqrt(alpha_i) z
    eta = epsilon * level**2 / sigmas[-1] ** 2 / 2
    x, path = langevin_sample(
        mixture.noised(level).score,
        x,
        eta,
        steps_per_level,
        generator=torch.Generator().manual_seed(10 + i),
        trajectory_every=frame_every,
    )
    levels += path[1:]
# a thousand particles per frame keep the page light
frames = [x[:1_000] for x in levels]
fig, ax = plt.subplots(figsize=(3.5, 3.5))
cloud = ax.scatter(frames[0][:, 0], frames[0][:, 1], s=1, color="tab:orange")
ax.set_xlim(-3.5, 3.5)
ax.set_ylim(-3.5, 3.5)
ax.set_aspect("equal")
movie = animation.FuncAnimation(
    fig, lambda k: cloud.set_offsets(frames[k].numpy()), frames=len(frames)
)
plt.close(fig)
HTML(animation_html(movie))

# %% tags=["hide-input"]
picks = np.linspace(0, len(levels) - 1, 5).round().astype(int)
fig, axes = plt.subplots(1, len(picks), figsize=(2.2 * len(picks), 2.3))
for ax, k in zip(axes, picks, strict=True):
    ax.scatter(levels[k][:, 0], levels[k][:, 1], s=0.5, color="tab:orange")
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"step {k * frame_every}", fontsize=8)
fig.tight_layout()

# %% [markdown]
# The paths of six particles from the fourth noise level on, one point per frame, so that each
# segment joins states many steps apart (before that level the noise is so large that the particles
# jump across the picture): at the fourth and fifth levels they still roam the ring that the merged
# modes form, and as sigma shrinks each settles into one of the eight modes.

# %% tags=["hide-input"]
# level 4 on
settling = [x for k, x in enumerate(levels) if k * frame_every >= 3 * steps_per_level]
paths = torch.stack([x[:6] for x in settling], dim=1)  # (6 particles, frames, 2)
fig, ax = plt.subplots(figsize=(4, 4))
density_and_score(mixture.log_prob, limits=(-3.5, 3.5), ax=ax)
for path in paths:
    ax.plot(path[:, 0], path[:, 1], lw=1, alpha=0.8)
    # where the fourth level begins
    ax.plot(path[0, 0], path[0, 1], "wo", ms=4, mec="k")
    ax.plot(path[-1, 0], path[-1, 1], "k.", ms=6)  # where the last level ends
ax.set_title(f"annealed Langevin: 6 paths, σ ≤ {sigmas[3]:.2f}", fontsize=9)
glue("langevin_trajectories", fig)

# %% [markdown]
# ## 5. Learning the score by denoising
#
# A small network $s_\theta(x, \sigma)$ learns the noised scores of the mixture from samples alone,
# by denoising score matching: the regression target is the score of the noise that was added,
# $-z / \sigma$. Its minimizer is the score of the noised data, which we know exactly here. The
# error is measured where the noised density puts its mass: the root-mean-square error of the
# learned score over draws from the noised mixture, relative to the root-mean-square of the exact
# score there.


# %%
class ScoreNet(torch.nn.Module):
    """s_theta(x, sigma) for 2-D points: an MLP on (x, log sigma), its output
    divided by sigma."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, width),
            torch.nn.SiLU(),
            torch.nn.Linear(width, 2),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x, sigma.log().expand(len(x), 1)], dim=1)
        # the score of a sigma-noised density scales as 1 / sigma
        return self.net(features) / sigma


torch.manual_seed(seed)
score_net = ScoreNet().double()
optimizer = torch.optim.Adam(score_net.parameters(), lr=2e-3)
decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=sizes["dsm_steps"])
generator = torch.Generator().manual_seed(8)
started = time.perf_counter()
for _ in range(sizes["dsm_steps"]):
    x = mixture.sample(512, generator=generator)
    level = torch.tensor(sigmas)[torch.randint(len(sigmas), (1,), generator=generator)]
    loss = dsm_loss(
        lambda y, s=level: score_net(y, s.reshape(1, 1)), x, level.item()
    ).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    decay.step()
print(
    f"{sizes['dsm_steps']} steps of denoising score matching in "
    f"{time.perf_counter() - started:.0f} s"
)

grid = (
    torch.stack(
        torch.meshgrid(
            torch.linspace(-3, 3, 60), torch.linspace(-3, 3, 60), indexing="xy"
        ),
        dim=-1,
    )
    .reshape(-1, 2)
    .double()
)
errors = []
fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, level in zip(axes, (sigmas[3], sigmas[6], sigmas[8]), strict=True):
    noised = mixture.noised(level)
    with torch.no_grad():
        learned = score_net(grid, torch.tensor([[level]], dtype=torch.float64))
    # where its mass is
    draws = noised.sample(20_000, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        miss = (
            score_net(draws, torch.tensor([[level]], dtype=torch.float64))
            - noised.score(draws)
        )
    relative = (
        (miss.pow(2).sum(1).mean() / noised.score(draws).pow(2).sum(1).mean())
        .sqrt()
        .item()
    )
    errors.append(dict(sigma=level, relative=relative))
    density_and_score(noised.log_prob, limits=(-3, 3), ax=ax)
    step = 3
    sub = grid.reshape(60, 60, 2)[::step, ::step].reshape(-1, 2)
    with torch.no_grad():
        ls = score_net(sub, torch.tensor([[level]], dtype=torch.float64))
    es = noised.score(sub)
    ax.quiver(
        sub[:, 0], sub[:, 1], es[:, 0], es[:, 1], color="k", alpha=0.5, angles="xy"
    )
    ax.quiver(
        sub[:, 0],
        sub[:, 1],
        ls[:, 0],
        ls[:, 1],
        color="tab:red",
        alpha=0.6,
        angles="xy",
    )
    ax.set_title(f"σ = {level:.2f}: exact (black), learned (red)", fontsize=8)
    print(
        f"sigma {level:.3f}: relative root-mean-square error of the learned score "
        f"under the noised mixture: {relative:.3f}"
    )
fig.tight_layout()
glue("langevin_learned_score", fig)

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
for ax, level in zip(axes, (sigmas[3], sigmas[6], sigmas[8]), strict=True):
    noised = mixture.noised(level)
    sub = grid.reshape(60, 60, 2)[::3, ::3].reshape(-1, 2)
    with torch.no_grad():
        gap = (
            score_net(sub, torch.tensor([[level]], dtype=torch.float64))
            - noised.score(sub)
        )
    # relative size
    size = (gap.norm(dim=1) / noised.score(sub).norm(dim=1).clamp_min(1.0)).numpy()
    density_and_score(noised.log_prob, limits=(-3, 3), ax=ax)
    arrows = ax.quiver(
        sub[:, 0], sub[:, 1], gap[:, 0], gap[:, 1], size, cmap="Reds", angles="xy"
    )
    ax.set_title(f"σ = {level:.2f}: learned − exact", fontsize=8)
fig.colorbar(arrows, ax=axes, shrink=0.8, label="‖learned − exact‖ / max(‖exact‖, 1)")
glue("langevin_score_difference", fig)
glue("langevin_dsm_error", f"{max(e['relative'] for e in errors):.2f}")

learned_chain = annealed_langevin_sample(
    lambda x, i: score_net(
        x, torch.tensor([[sigmas[i]]], dtype=torch.float64)
    ).detach(),
    poor_start,
    sigmas,
    epsilon,
    steps_per_level,
    generator=torch.Generator().manual_seed(9),
)
p_learned = stats.chisquare(mode_counts(learned_chain)).pvalue
print(
    "annealed Langevin on the learned scores: "
    f"counts {mode_counts(learned_chain).tolist()}, "
    f"chi-square p = {p_learned:.2g}"
)
glue("langevin_p_learned", f"{p_learned:.1g}")

# %% [markdown]
# ## 6. MNIST: the DDPM's noise predictor is a score
#
# The published DDPM's $\epsilon_\theta$ (for a network that predicts $v$, the $\epsilon$ it implies)
# gives the score of the noised data at every level $t$,
# $\nabla \log q_t(x) \approx s_\theta(x, t) = -\epsilon_\theta(x, t) / \sqrt{1 - \bar\alpha_t}$. A
# predictor-corrector sampler (Song et al. 2021) alternates a step of a reverse-process sampler (the
# predictor; here a DDIM step with $\eta = 1$, with $\hat x_0$ clipped to $[-1, 1]$) with a Langevin
# step at the level just reached (the corrector), whose size is set so that the score step is
# $r\sqrt{1 - \beta_t}$ times the noise step, about a fixed fraction $r$. The loop:

# %%
ddpm, schedule, ddpm_checkpoint = load_ddpm(
    Path("../checkpoints/ddpm.pt"), map_location=device
)
# a v-predicting network reaches here as its epsilon-network
score = score_from_eps(ddpm, schedule)


@torch.no_grad()
def predictor_corrector(
    n: int, predictor_steps: int, r: float = 0.16, generator=None, keep=()
):
    """DDIM (eta = 1) predictor steps, each followed by one Langevin corrector step
    at the new level."""
    x = torch.randn(n, 1, 28, 28, generator=generator, device=device)
    times, kept = ddim_timesteps(schedule.T, predictor_steps), []
    for current, following in zip(times, [*times[1:], 0], strict=True):
        t = torch.full((n,), current, device=device)
        eps = ddpm(x, t)
        x0 = predict_x0(schedule, x, t, eps).clamp(-1, 1)
        ab_t, ab_s = (
            schedule.alpha_bar[current].item(),
            schedule.alpha_bar[following].item(),
        )
        noise_sd = math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))  # eta = 1
        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - noise_sd**2, 0.0)) * eps
        if following == 0:
            break
        x = x + noise_sd * torch.randn(x.shape, generator=generator, device=device)
        s = torch.full((n,), following, device=device)
        z = torch.randn(x.shape, generator=generator, device=device)
        # the corrector: Langevin at level s, x <- x + e grad + sqrt(2e) z
        grad = score(x, s)
        e = (
            2
            * (1 - schedule.beta[following].item())
            * (r * z.flatten(1).norm(dim=1) / grad.flatten(1).norm(dim=1)) ** 2
        )
        x = x + e[:, None, None, None] * grad + (2 * e[:, None, None, None]).sqrt() * z
        if current in keep:
            kept.append(x.cpu())
    return x, kept


# %%
classifier, _ = load_classifier(
    Path("../checkpoints/mnist-classifier.pt"), map_location=device
)
test_images = load_mnist(train=False).data[:, None]
reference = FeatureStatistics(classifier.config.feature_dim).update(
    extract_features(classifier, test_images)
)


def fid(x: torch.Tensor) -> float:
    images = to_uint8(((x.clamp(-1, 1) + 1) / 2).cpu())
    statistics = FeatureStatistics(classifier.config.feature_dim).update(
        extract_features(classifier, images)
    )
    return frechet_distance(
        reference.mean, reference.covariance, statistics.mean, statistics.covariance
    )


def sample_in_chunks(sampler, n: int, chunk: int = 250) -> tuple[torch.Tensor, float]:
    generator, parts, started = (
        torch.Generator(device=device).manual_seed(seed), [], time.perf_counter()
    )
    for begin in range(0, n, chunk):
        parts.append(sampler(min(chunk, n - begin), generator).cpu())
    return torch.cat(parts), time.perf_counter() - started


# network calls per sample: `calls` for both DDIMs; the predictor-corrector
# sampler's half as many predictor steps, each with a corrector but the last,
# make one fewer (its row rounds it up); DPM-Solver++ half as many
calls = sizes["calls"]
samplers = {  # name -> (network calls per sample, sampler)
    "DDIM, η = 0": (
        calls,
        lambda n, g: ddim_sample(ddpm, schedule, (n, 1, 28, 28), calls, 0.0, g, device),
    ),
    "DDIM, η = 1": (
        calls,
        lambda n, g: ddim_sample(ddpm, schedule, (n, 1, 28, 28), calls, 1.0, g, device),
    ),
    f"predictor-corrector ({calls // 2} + {calls // 2})": (
        calls,
        lambda n, g: predictor_corrector(n, calls // 2, generator=g)[0],
    ),
    "DPM-Solver++(2M)": (
        calls // 2,
        lambda n, g: dpm_solver_2m_sample(
            ddpm,
            schedule,
            (n, 1, 28, 28),
            calls // 2,
            generator=g,
            device=device,
            clip_x0=True,
        ),
    ),
}
floor = fid(
    load_mnist(train=True).data[: sizes["n_fid"], None].float().div(127.5).sub(1)
)
rows = []
for name, (calls, sampler) in samplers.items():
    images, seconds = sample_in_chunks(sampler, sizes["n_fid"])
    rows.append(
        dict(
            sampler=name,
            calls=calls,
            fid=fid(images),
            seconds_per_1k=1000 * seconds / sizes["n_fid"],
        )
    )
    print(
        f"{name:>32}: {calls:3d} network calls, FID {rows[-1]['fid']:6.2f}, "
        f"{rows[-1]['seconds_per_1k']:6.1f} s per 1,000 samples"
    )
print(
    f"{'real training images':>32}: FID {floor:6.2f} "
    f"(the floor at N = {sizes['n_fid']:,})"
)
table = "\n".join(
    ["| sampler | network calls | FID | s per 1,000 |", "|---|---|---|---|"]
    + [
        f"| {r['sampler']} | {r['calls']} | {r['fid']:.2f} "
        f"| {r['seconds_per_1k']:.1f} |"
        for r in rows
    ]
    + [f"| real training images (floor) | | {floor:.2f} | |"]
)
display(Markdown(table))
# the chapter page pastes HTML, not Markdown
to_html = MarkdownIt("commonmark").enable("table").render
glue(
    "langevin_mnist_table",
    HTML(to_html(table).replace("<table>", '<table class="table">')),
)
glue("langevin_mnist_n", f"{sizes['n_fid']:,}")
glue("langevin_hardware", hardware(device))

# %% [markdown]
# Digits taking shape under the predictor-corrector sampler: each column but the last is the state
# after one predictor step and its corrector (a subset of the levels),
# from nearly pure noise (left);
# the last column is the final image, after the remaining predictor steps. The title
# lists the level each of those predictor steps starts from; the column shows the sample one level
# further on, where its corrector ran. The table above counts 25 + 25 calls; the last predictor
# step lands on the image with no corrector after it, so the sampler makes 49. (This cell reads
# `calls` after the loop above has reused the name for each row's count, which leaves it at the
# last row's 25: the figure takes 12 predictor levels, and the DPM-Solver++ row asked for 12 steps,
# not 25. The book's published runs also predate the fix that made `logsnr_timesteps` return as
# many timesteps as asked, so there those 12 steps made 11 network calls, as the row's time per
# 1,000 samples shows beside DDIM's for 50. The chapter page has the details; a distinct name for
# the loop's count fixes the first slip.)

# %%
times = ddim_timesteps(schedule.T, calls // 2)
keep = times[:: max(1, len(times) // 8)][:8]
final, kept = predictor_corrector(
    8, calls // 2, generator=torch.Generator(device=device).manual_seed(seed), keep=keep
)
evolution = torch.stack([*kept, final.cpu()], dim=1)  # (8 samples, steps, 1, 28, 28)
fig, ax = plt.subplots(figsize=(7, 7))
show_images(
    ((evolution.reshape(-1, 1, 28, 28).clamp(-1, 1) + 1) / 2),
    nrow=evolution.shape[1],
    ax=ax,
)
ax.set_title("t = " + ", ".join(str(t) for t in keep) + ", then 0", fontsize=8)
glue("langevin_mnist_evolution", fig)

# %% [markdown]
# ## 7. In one dimension: the densities a DDPM passes through, and why its steps may be Gaussian
#
# With data from a Gaussian mixture every density of the forward process is known exactly
# (`diffused_mixture`): noise keeps each component Gaussian, moves it towards 0 and widens it,
# until at $t = T$ only $\mathcal{N}(0, 1)$ is left. Left, that marginal $q_t(x)$ for Ho et al.'s
# linear schedule, with five forward paths drawn step by step. The reverse conditionals are
# exact too (`mixture_reverse_conditional`, Bayes' rule with a mixture prior). Over one step,
# $q(x_{t-1} \mid x_t)$ (middle) is a single narrow bump, almost exactly the Gaussian with its
# mean and variance (dashed): that is why a reverse process made of Gaussian steps can be
# right. Over all $t$ steps at once, $q(x_0 \mid x_t)$ (right) has one peak per mode of the data,
# which no Gaussian fits: a one-step sampler from noise to data cannot be Gaussian.

# %%
toy = GaussianMixture(
    torch.tensor([[-1.0], [0.5]]),
    torch.tensor([[[0.2**2]], [[0.3**2]]]),
    torch.tensor([0.3, 0.7]),
)
linear = NoiseSchedule(T=1000, kind="linear")
xs = torch.linspace(-3, 3, 601, dtype=torch.float64)
marginals = torch.stack(  # q_t(x) on the grid xs, for t = 0, ..., T: (601, T + 1)
    [diffused_mixture(linear, t, toy).log_prob(xs[:, None]).exp() for t in range(1001)],
    dim=1,
)
generator = torch.Generator().manual_seed(seed)
paths = [toy.sample(5, generator=generator)[:, 0]]
for t in range(1, 1001):  # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps
    beta = linear.beta[t].double()
    noise = torch.randn(5, generator=generator, dtype=torch.float64)
    paths.append((1 - beta).sqrt() * paths[-1] + beta.sqrt() * noise)
paths = torch.stack(paths, 1)  # (5, T + 1)


def moment_matched(mixture: GaussianMixture) -> torch.distributions.Normal:
    """The Gaussian with the mixture's mean and variance (1-D)."""
    means, variances = mixture.means[:, 0], mixture.covariances[:, 0, 0]
    mean = (mixture.weights * means).sum()
    variance = (mixture.weights * (variances + means**2)).sum() - mean**2
    return torch.distributions.Normal(mean, variance.sqrt())


t_show, x_show = 200, 0.1
conditionals = {  # name: (the exact conditional, the grid it is drawn on)
    f"x_{t_show - 1}": mixture_reverse_conditional(
        linear, t_show - 1, t_show, [x_show], toy
    ),
    "x_0": mixture_reverse_conditional(linear, 0, t_show, [x_show], toy),
}
for name, exact in conditionals.items():
    gaussian = moment_matched(exact)
    centre, width = gaussian.loc.item(), gaussian.scale.item()
    grid = torch.linspace(
        centre - 8 * width, centre + 8 * width, 4001, dtype=torch.float64
    )
    gap = (exact.log_prob(grid[:, None]).exp() - gaussian.log_prob(grid).exp()).abs()
    tv = 0.5 * gap.sum().item() * (grid[1] - grid[0]).item()
    print(
        f"q({name} | x_{t_show} = {x_show}): total variation from the Gaussian "
        f"with its mean and variance {tv:.4f}"
    )
    glue(f"langevin_1d_tv_{name}", f"{tv:.2g}")

# %% tags=["hide-input"]
fig, axes = plt.subplots(
    1, 3, figsize=(12, 3.6), gridspec_kw=dict(width_ratios=[2.2, 1, 1])
)
axes[0].imshow(
    marginals.numpy(),
    origin="lower",
    aspect="auto",
    cmap="Greys",
    extent=(0, 1000, -3, 3),
    vmax=marginals.max().item() * 0.6,
)
for path in paths:
    axes[0].plot(np.arange(1001), path.numpy(), lw=0.8)
axes[0].plot([t_show], [x_show], "o", color="tab:red")
axes[0].set_xlabel("t")
axes[0].set_ylabel("x")
axes[0].set_title(r"$q_t(x)$ and five forward paths", fontsize=10)
for ax, (name, exact) in zip(axes[1:], conditionals.items(), strict=True):
    gaussian = moment_matched(exact)
    centre, width = gaussian.loc.item(), gaussian.scale.item()
    grid = torch.linspace(
        centre - 4 * width, centre + 4 * width, 801, dtype=torch.float64
    )
    ax.plot(grid, exact.log_prob(grid[:, None]).exp(), color="tab:red", label="exact")
    same = gaussian.log_prob(grid).exp()
    ax.plot(grid, same, "k--", lw=1, label="Gaussian, same moments")
    index = name.split("_")[1]
    ax.set_title(rf"$q(x_{{{index}}} \mid x_{{{t_show}}} = {x_show})$", fontsize=10)
    ax.set_yticks([])
axes[1].legend(fontsize=8, loc="upper left")
fig.tight_layout()
glue("langevin_1d_diffusion", fig)
