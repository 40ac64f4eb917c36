"""Figures of results/benchmarks.json for the book's benchmarks page: results/unet_levers.png and
results/training_throughput.png.

    python benchmarks/plot.py

Reads only what the benchmark scripts stored (no measurement here); ddpm_recipes.py draws its own
figure, results/ddpm_recipes.png, as it measures.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def plot_unet_levers(levers: dict, path: Path) -> None:
    """Training and sampling throughput of the U-Net for each speed lever, beside the baseline."""
    rows = levers["rows"]
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.2), sharey=True)
    for ax, key, title in ((axes[0], "train_images_per_s", "training"),
                           (axes[1], "sample_images_per_s", "sampling (one network call per image)")):
        values = [rows[name][key] for name in names]
        baseline = rows["float32 (baseline)"][key]
        bars = ax.barh(names, values, color=["tab:gray" if "baseline" in n else "tab:blue" for n in names])
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value / baseline:.2f}x",
                    va="center", fontsize=8)
        ax.axvline(1.3 * baseline, color="tab:red", ls="--", lw=1, label="1.3 x the baseline")
        ax.set_xlabel(f"images per second, {title}")
        ax.legend(fontsize=8, loc="lower right")
    axes[0].invert_yaxis()
    fig.suptitle(f"U-Net (channels {levers['channels']}, batch {levers['batch']}) on {levers['hardware']}, "
                 f"torch {levers['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_training_throughput(throughput: dict, path: Path) -> None:
    """Images per second that each model's training step consumes, as its notebook trains it."""
    rows = throughput["rows"]
    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.2))
    values = [rows[name]["images_per_s"] for name in names]
    bars = ax.barh(names, values, color="tab:blue")
    for bar, name in zip(bars, names, strict=True):
        row = rows[name]
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {row['images_per_s']:,.0f} /s ({row['seconds_per_step'] * 1000:.0f} ms per "
                f"{row['images_per_step']} images)", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training images per second (logarithmic)")
    ax.set_xlim(right=max(values) * 20)
    ax.invert_yaxis()
    ax.set_title(f"training throughput on {throughput['hardware']}, torch {throughput['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    stored = json.loads((ROOT / "results" / "benchmarks.json").read_text())
    plot_unet_levers(stored["unet_levers"], ROOT / "results" / "unet_levers.png")
    print("written results/unet_levers.png")
    if "training_throughput" in stored:
        plot_training_throughput(stored["training_throughput"], ROOT / "results" / "training_throughput.png")
        print("written results/training_throughput.png")


if __name__ == "__main__":
    main()
