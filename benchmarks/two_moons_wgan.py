"""The WGAN chapter's two-moons exercise, measured: the WGAN notebook's 2-D WGAN-GP (section 3), trained
on `genmodels.data.two_moons` in place of the eight Gaussians, and what tells whether it found both moons.

The loop is the notebook's: the same generator and critic (three hidden layers of 256, z in R^2), Adam
with alpha = 1e-4 and betas (0.5, 0.9), n_critic = 10, lambda = 10, batches of 256, 2,000 generator
iterations; and the same with the critic's learning rate four times the generator's (4e-4, the two
time-scale update rule of Heusel et al.), which on the eight Gaussians converged on each of seeds 0 to 5
where the notebook's converges for some (results/gpu-h200/README.md). Measured for each learning rate and
seed, as the exercise's solution reads them:

- the exact W1 between 300 data and 300 generator samples (the transport linear program, as the
  notebook computes it), against its floor, the exact W1 between two data samples of 300 (each the
  mean over five draws), and the critic's estimate E f(x) - E f(g(z)) over 4,000 samples each;
- where the samples lie: the share farther than three noise deviations (0.15) from both moons'
  arcs (a bridge between the moons, or strays; about 0.3 % of the data), the share on the upper moon
  (the data's is one half), and the coverage of the arcs: each moon's arc cut into 10 equal pieces by
  angle, the share of the 20 pieces that hold at least half the samples a data set of the same size
  puts there (a missing piece of a moon shows as coverage below 1).

Run: python benchmarks/two_moons_wgan.py [--iterations 2000] [--seeds 0 1 2]
        [--learning-rates 1e-4,1e-4 1e-4,4e-4] [--section two_moons_wgan]
(each learning rate a pair generator,critic). Six to eight minutes per 2,000 iterations on two AVX2
cores. Writes the section (default "two_moons_wgan") of results/benchmarks.json (with hardware and
commit) and the figure results/<section>.png (the critic's landscape and the samples of the first
seed at each pair of learning rates; W1 over training for every run). Not a test.

The record "two_moons_wgan_longer" answers the solution's next question, more iterations or smaller
steps: python benchmarks/two_moons_wgan.py --section two_moons_wgan_longer --iterations 6000
--seeds 0 --learning-rates 1e-4,1e-4 2.5e-5,2.5e-5
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import at_least_one, store_section  # noqa: E402  (benchmarks/timing.py, beside this script)

from genmodels.data import two_moons  # noqa: E402
from genmodels.train import seed_everything  # noqa: E402
from genmodels.wasserstein import optimal_transport  # noqa: E402
from genmodels.wgan import Critic, Generator, WGANConfig, critic_loss, generator_loss, gradient_penalty  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOISE = 0.05  # two_moons' default
# The moons' arcs: the upper one is the unit circle's upper half about (0, 0), the lower one the
# lower half of the unit circle about (1, 0.5) (see genmodels.data.two_moons).
ARCS = (((0.0, 0.0), 0.0), ((1.0, 0.5), math.pi))  # (centre, first angle of the half circle)


def arc_distance_and_position(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each point, its distance to each moon's arc (n, 2) and its position along it, in [0, 1)
    from the arc's first end (n, 2): the angle about the arc's centre, clamped to the half circle."""
    distances, positions = [], []
    for (cx, cy), start in ARCS:
        dx, dy = points[:, 0] - cx, points[:, 1] - cy
        along = np.mod(np.arctan2(dy, dx) - start, 2 * math.pi)  # 0..pi on the arc
        on_arc = along <= math.pi
        radial = np.abs(np.hypot(dx, dy) - 1)
        ends = [(cx + math.cos(start + a), cy + math.sin(start + a)) for a in (0.0, math.pi)]
        to_end = np.minimum(*(np.hypot(points[:, 0] - ex, points[:, 1] - ey) for ex, ey in ends))
        distances.append(np.where(on_arc, radial, to_end))
        past_first_end = along > 1.5 * math.pi  # just before the arc's start, not past its far end
        position = np.where(on_arc, along / math.pi, np.where(past_first_end, 0.0, 1.0))
        positions.append(position.clip(0, 1 - 1e-9))
    return np.stack(distances, 1), np.stack(positions, 1)


def placement(points: np.ndarray, pieces: int = 10) -> dict:
    """Off-moon share, upper-moon share and arc coverage of ``points`` (see the module's docstring)."""
    distances, positions = arc_distance_and_position(points)
    nearest = distances.argmin(1)
    near = distances.min(1) <= 3 * NOISE
    expected = len(points) / (2 * pieces)  # what the data puts in each piece, up to its noise
    counts = [np.histogram(positions[near & (nearest == k), k], bins=pieces, range=(0, 1))[0]
              for k in range(2)]
    return {"off_moons": float(1 - near.mean()), "upper": float((nearest == 0).mean()),
            "coverage": float(np.mean(np.concatenate(counts) >= expected / 2))}


def learning_rates(text: str) -> tuple[float, float]:
    """An argument "generator,critic", e.g. 1e-4,4e-4: the two Adam learning rates."""
    try:
        generator_lr, critic_lr = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two learning rates generator,critic (e.g. 1e-4,4e-4), "
                                         f"got {text!r}") from None
    if not (0 < generator_lr and 0 < critic_lr):
        raise argparse.ArgumentTypeError(f"learning rates must be positive, got {text!r}")
    return generator_lr, critic_lr


def exact_w1(x: np.ndarray, y: np.ndarray) -> float:
    return optimal_transport(x, y)[0]


def train(seed: int, iterations: int, n_w1: int, generator_lr: float, critic_lr: float, log_every: int = 100):
    """The WGAN notebook's section 3 on the two moons, with Adam's learning rates ``generator_lr`` and
    ``critic_lr``: (generator, critic, log of (iteration, critic estimate, exact W1), seconds of
    training)."""
    seed_everything(seed)
    config = WGANConfig(data_dim=2, latent_dim=2, hidden_dims=(256, 256, 256), image_output=False)
    generator, critic = Generator(config), Critic(config)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=generator_lr, betas=(0.5, 0.9))
    c_optimizer = torch.optim.Adam(critic.parameters(), lr=critic_lr, betas=(0.5, 0.9))
    log, seconds = [], 0.0
    for iteration in range(1, iterations + 1):
        started = time.perf_counter()
        for _ in range(10):  # n_critic
            real = two_moons(256).float()
            fake = generator.sample(256).detach()
            loss = critic_loss(critic(real), critic(fake)) + 10 * gradient_penalty(critic, real, fake)
            c_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            c_optimizer.step()
        g_optimizer.zero_grad(set_to_none=True)
        generator_loss(critic(generator.sample(256))).backward()
        g_optimizer.step()
        seconds += time.perf_counter() - started
        if iteration % log_every == 0 or iteration == 1:
            with torch.no_grad():
                real, fake = two_moons(4000).float(), generator.sample(4000)
                estimate = (critic(real).mean() - critic(fake).mean()).item()
            log.append((iteration, estimate, exact_w1(real[:n_w1].numpy(), fake[:n_w1].numpy())))
    return generator, critic, log, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=at_least_one, default=2000, help="generator iterations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--learning-rates", type=learning_rates, nargs="+",
                        default=[(1e-4, 1e-4), (1e-4, 4e-4)], help="pairs generator,critic (Adam's alpha)")
    parser.add_argument("--section", default="two_moons_wgan", help="of results/benchmarks.json")
    parser.add_argument("--n-w1", type=at_least_one, default=300, help="per exact W1, as the notebook")
    parser.add_argument("--n-placement", type=at_least_one, default=10_000, help="samples for placement")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = torch.Generator().manual_seed(12345)
    data = two_moons(args.n_placement, generator=rng).numpy()
    floor = float(np.mean([exact_w1(two_moons(args.n_w1, generator=rng).numpy(),
                                    two_moons(args.n_w1, generator=rng).numpy()) for _ in range(5)]))
    rows, firsts = [], {}
    for generator_lr, critic_lr in args.learning_rates:
        for seed in args.seeds:
            generator, critic, log, seconds = train(seed, args.iterations, args.n_w1, generator_lr, critic_lr)
            with torch.no_grad():
                samples = generator.sample(args.n_placement, generator=torch.Generator().manual_seed(seed))
                samples = samples.numpy()
            w1 = float(np.mean([exact_w1(two_moons(args.n_w1, generator=rng).numpy(),
                                         samples[k * args.n_w1:(k + 1) * args.n_w1]) for k in range(5)]))
            rows.append({"generator_lr": generator_lr, "critic_lr": critic_lr, "seed": seed, "w1": w1,
                         "critic_estimate": log[-1][1],
                         "train_seconds": seconds, "curve": [list(entry) for entry in log],
                         **placement(samples)})
            print(f"learning rates {generator_lr:g} (generator), {critic_lr:g} (critic), seed {seed}: "
                  f"exact W1 {w1:.3f} (floor {floor:.3f}), "
                  f"critic estimate {log[-1][1]:.3f}, off the moons {rows[-1]['off_moons']:.1%}, "
                  f"upper {rows[-1]['upper']:.1%}, coverage {rows[-1]['coverage']:.0%}, {seconds:.0f} s",
                  flush=True)
            firsts.setdefault((generator_lr, critic_lr), (seed, critic, samples))
    figure_path = ROOT / "results" / f"{args.section}.png"
    plot(firsts, rows, floor, data, args.n_w1, figure_path)
    store_section(args.section, iterations=args.iterations, n_w1=args.n_w1,
                  n_placement=args.n_placement, noise=NOISE, floor=floor, data=placement(data), rows=rows,
                  figure=str(figure_path.relative_to(ROOT)))


def plot(firsts: dict, rows: list[dict], floor: float, data: np.ndarray, n_w1: int, path: Path) -> None:
    """Top: the critic's landscape and the samples of each pair of learning rates' first seed; below,
    the exact W1 over training of every run."""
    fig = plt.figure(figsize=(12, 8.4))
    grid = fig.add_gridspec(2, len(firsts))
    gx, gy = np.meshgrid(np.linspace(-1.8, 2.8, 150), np.linspace(-1.3, 1.8, 120))
    points = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
    for column, ((generator_lr, critic_lr), (seed, critic, samples)) in enumerate(firsts.items()):
        ax = fig.add_subplot(grid[0, column])
        with torch.no_grad():
            landscape = critic(points).reshape(gx.shape).numpy()
        contour = ax.contourf(gx, gy, landscape, levels=30, cmap="RdBu_r")
        fig.colorbar(contour, ax=ax, label="critic $f_w(x)$", shrink=0.8)
        ax.scatter(data[:1000, 0], data[:1000, 1], s=2, c="black", label="data")
        ax.scatter(samples[:1000, 0], samples[:1000, 1], s=2, c="gold", label="generator")
        ax.set_aspect("equal")
        ax.legend(loc="lower left", fontsize=8)
        ax.set_title(f"learning rates {generator_lr:g} (generator), {critic_lr:g} (critic), seed {seed}",
                     fontsize=10)
    ax = fig.add_subplot(grid[1, :])
    styles = dict(zip(firsts, ("-", "--", ":", "-."), strict=False))
    for row in rows:
        steps, _, exact = zip(*row["curve"], strict=True)
        rates = (row["generator_lr"], row["critic_lr"])
        ax.plot(steps, exact, styles[rates], color=f"C{row['seed'] % 10}",
                label=f"learning rates {rates[0]:g}, {rates[1]:g}; seed {row['seed']}")
    ax.axhline(floor, color="gray", ls=(0, (1, 3)), label=f"floor: two data samples of {n_w1}")
    ax.set_yscale("log")
    ax.set_xlabel("generator iteration")
    ax.set_ylabel(f"exact W1, data vs generator ({n_w1} each)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
