"""Figures of results/benchmarks.json for the book's benchmarks page: results/unet_levers.png and
results/training_throughput.png; and results/ddpm_gpu_run.png, the record of the gpu profile's DDPM
run (results/gpu-h200/ddpm.json) beside the published cpu profile's (checkpoints/ddpm.json).

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


def plot_gpu_run(gpu: dict, cpu: dict, path: Path) -> None:
    """FID and sampling time against network calls for each sampler, from two DDPM notebook records
    (one per profile), each with its own floor: the sample counts differ, and FID's bias with them."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for record, color in ((gpu, "tab:red"), (cpu, "tab:blue")):
        where = (f"{record['profile']}: {record['params'] / 1e6:.2f} M parameters, "
                 f"{record['train_seconds'] / 60:.1f} training min on {record['hardware']}")
        for family, marker in (("ddim", "o"), ("dpm", "s"), ("ancestral", "*")):
            rows = [r for r in record["samplers"] if r["family"] == family
                    and (family != "ddim" or r["eta"] == 1.0)]
            if not rows:
                continue
            name = {"ddim": "DDIM, η = 1", "dpm": "DPM-Solver++(2M)", "ancestral": "Algorithm 2"}[family]
            calls, style = [r["calls"] for r in rows], dict(marker=marker, color=color, ms=8 if
                                                             family == "ancestral" else 5)
            axes[0].plot(calls, [r["fid"] for r in rows], **style, label=f"{name} ({record['profile']})")
            axes[1].plot(calls, [r["seconds_per_1k"] for r in rows], **style)
        axes[0].axhline(record["fid_floor"], color=color, ls="--", lw=1,
                        label=f"real images, N = {record['n_fid']:,} ({record['profile']})")
        axes[1].plot([], [], color=color, label=where)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network calls per sample")
    axes[0].set_ylabel("FID (classifier features)")
    axes[1].set_ylabel("seconds per 1,000 samples")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    stored = json.loads((ROOT / "results" / "benchmarks.json").read_text())
    plot_unet_levers(stored["unet_levers"], ROOT / "results" / "unet_levers.png")
    print("written results/unet_levers.png")
    if "training_throughput" in stored:
        plot_training_throughput(stored["training_throughput"], ROOT / "results" / "training_throughput.png")
        print("written results/training_throughput.png")
    gpu_record = ROOT / "results" / "gpu-h200" / "ddpm.json"
    if gpu_record.exists():
        plot_gpu_run(json.loads(gpu_record.read_text()),
                     json.loads((ROOT / "checkpoints" / "ddpm.json").read_text()),
                     ROOT / "results" / "ddpm_gpu_run.png")
        print("written results/ddpm_gpu_run.png")


if __name__ == "__main__":
    main()
