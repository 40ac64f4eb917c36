"""Figures of results/benchmarks.json for the book's benchmarks page: results/unet_levers.png,
results/training_throughput.png, results/allocator.png, results/bf16_isa.png,
results/bf16_quality.png, results/sampler_noise.png, results/stochastic_samplers.png,
results/wgan_batch_gp.png (and _clip, where measured) and
results/ddpm_machines.png (the cpu profile's recipe on this machine and on one without bfloat16); and
results/ddpm_profiles.png, the DDPM notebook's runs side by side from their checkpoint records: the
published one (checkpoints/ddpm.json, the gpu profile), the gpu profile's first run
(results/gpu-h200/ddpm.json) and the cpu profile's (results/cpu-xeon/ddpm.json).

    python benchmarks/plot.py

Reads only what the benchmark scripts stored (no measurement here); ddpm_recipes.py draws its own
figure, results/ddpm_recipes.png, as it measures.
"""

import json
import textwrap
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


def plot_allocator(section: dict, path: Path) -> None:
    """Images per second of each workload under each allocator setting (ratio to glibc's defaults),
    and the system time per call that the kernel spent on page faults."""
    rows = section["rows"]
    workloads, arms = section["workloads"], section["arms"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(workloads) * len(arms) + 1.4), sharey=True)
    labels, positions = [], []
    for w, workload in enumerate(workloads):
        for a, arm in enumerate(arms):
            positions.append(w * (len(arms) + 1) + a)
            labels.append(f"{workload}: {arm}" if a == 0 else arm)
    colors = ["tab:gray" if arm == "glibc defaults" else "tab:blue" for _ in workloads for arm in arms]
    for ax, key, title in ((axes[0], "images_per_s", "images per second (one network call or training step)"),
                           (axes[1], "system_seconds_per_call", "system (kernel) seconds per call")):
        values = [rows[workload][arm][key] for workload in workloads for arm in arms]
        bars = ax.barh(positions, values, color=colors)
        if key == "images_per_s":  # the range over processes as a whisker, the ratio beside it
            pairs = [(w, a) for w in workloads for a in arms]
            low = [v - rows[w][a]["images_per_s_range"][0] for v, (w, a) in zip(values, pairs, strict=True)]
            high = [rows[w][a]["images_per_s_range"][1] - v for v, (w, a) in zip(values, pairs, strict=True)]
            ax.errorbar(values, positions, xerr=[low, high], fmt="none", ecolor="black", lw=1, capsize=3)
            for bar, (workload, arm) in zip(bars, pairs, strict=True):
                ax.text(rows[workload][arm]["images_per_s_range"][1], bar.get_y() + bar.get_height() / 2,
                        f"  {rows[workload][arm]['speedup']:.2f}x", va="center", fontsize=8)
            ax.set_xlim(right=1.2 * max(rows[w][a]["images_per_s_range"][1] for w, a in pairs))
        ax.set_xlabel(title)
    axes[0].set_yticks(positions, [label.replace(": ", ":\n") for label in labels], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"median process of {section['processes']} (whiskers: the range), each the median of "
                 f"{section['repeats']} calls; bf16 autocast, on "
                 f"{section['hardware']}, torch {section['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_profile_runs(records: list[tuple[str, dict, str]], path: Path) -> plt.Figure:
    """The DDPM notebook's checkpoint records, one colour per run: FID against training minutes as
    each run scored itself (top left), FID against network calls per sampler (top right) and
    seconds per 1,000 samples (below), the legends in the fourth cell (two rows of two, so the page,
    about 700 pixels wide, shows the text at a readable size). Each run is scored at its own sample
    count, so each has its own floor of real images (dashed): FID's bias depends on the count."""
    fig, grid = plt.subplots(2, 2, figsize=(11, 8.4))
    axes, key = [grid[0, 0], grid[0, 1], grid[1, 0]], grid[1, 1]
    names = {"ddim": "DDIM, η = 1", "dpm": "DPM-Solver++(2M)", "ancestral": "Algorithm 2"}
    markers = {"ddim": "o", "dpm": "s", "ancestral": "*"}
    for label, record, color in records:
        where = (f"{label}: {record['params'] / 1e6:.2f} M parameters, batch {record['batch_size']}, "
                 f"{record['train_seconds'] / 60:.1f} training min on {record['hardware']}")
        scored = [h for h in record["history"] if "fid_dpm20" in h]
        if scored:
            axes[0].plot([h["seconds"] / 60 for h in scored], [h["fid_dpm20"] for h in scored],
                         marker="o", ms=3, color=color)
        for family, marker in markers.items():
            rows = [r for r in record["samplers"] if r["family"] == family
                    and (family != "ddim" or r["eta"] == 1.0)]
            if not rows:
                continue
            calls, style = [r["calls"] for r in rows], dict(marker=marker, color=color, ms=8 if
                                                             family == "ancestral" else 5)
            axes[1].plot(calls, [r["fid"] for r in rows], **style)
            axes[2].plot(calls, [r["seconds_per_1k"] for r in rows], **style)
        for ax in axes[:2]:
            ax.axhline(record["fid_floor"], color=color, ls="--", lw=1)
        axes[0].plot([], [], color=color, label=where)
    axes[0].set_xlabel("training minutes")
    axes[0].set_ylabel("FID, DPM-Solver++(2M), 20 steps")
    axes[0].set_title("time to quality (dashed: real images, same N)", fontsize=10)
    for ax in axes:
        ax.set_yscale("log")
    for ax in axes[1:]:
        ax.set_xscale("log")
        ax.set_xlabel("network calls per sample")
    axes[0].set_xscale("log")
    axes[1].set_ylabel("FID (classifier features)")
    axes[2].set_ylabel("seconds per 1,000 samples")
    for family, marker in markers.items():
        key.plot([], [], marker=marker, color="tab:gray", ls="-", label=names[family])
    key.axis("off")
    runs = [textwrap.fill(label, 48) for label in axes[0].get_legend_handles_labels()[1]]
    key.add_artist(key.legend(axes[0].get_legend_handles_labels()[0], runs, loc="upper left", fontsize=9,
                              frameon=False, title="runs (colour)", title_fontsize=9))
    key.legend(loc="lower left", fontsize=9, frameon=False, title="samplers (marker)", title_fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def plot_stochastic_samplers(section: dict, path: Path) -> None:
    """FID and legible share of each sampler, seed by seed (the seeds are shared, so compare along a
    line), with each sampler's mean."""
    rows = section["rows"]
    names = list(dict.fromkeys(row["sampler"] for row in rows))
    calls = sorted({row["calls"] for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, label in ((axes[0], "fid", "FID (lower is better)"),
                           (axes[1], "legible", "legible: classifier confidence above 0.9")):
        for seed in section["seeds"]:
            for n in calls:
                values = [next(r[key] for r in rows if r["sampler"] == name and r["seed"] == seed
                               and r["calls"] == n) for name in names]
                ax.plot(values, range(len(names)), color="tab:gray", lw=0.8, marker="o", ms=4)
        for n in calls:
            means = [sum(r[key] for r in rows if r["sampler"] == name and r["calls"] == n)
                     / len(section["seeds"]) for name in names]
            ax.scatter(means, range(len(names)), color="tab:red", marker="|", s=300, zorder=3,
                       label="mean over seeds")
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[0].set_xlim(right=axes[0].get_xlim()[1] + 0.3 * (axes[0].get_xlim()[1] - axes[0].get_xlim()[0]))
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"the published DDPM, {', '.join(map(str, calls))} network calls, N = {section['n']:,} per "
                 f"sampler and seed (seeds {section['seeds']}; one grey line per seed), on "
                 f"{section['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_bf16_isa(section: dict, path: Path, checks: list[dict] | None = None) -> None:
    """Training and sampling throughput of the U-Net in float32, in bf16, and under the autocast the
    notebooks ask for, with oneDNN held to each row's instruction set; this processor first. ``checks``:
    sections of the same benchmark run on other processors, whose rows come last, named by
    their machine (their rates are that machine's; their ratios are what compare)."""
    rows = dict(section["rows"])
    names = sorted(rows, key=lambda n: (not rows[n]["native_bf16"], -rows[n]["sample_bf16_speedup"]))
    for check in checks or []:
        for name, row in check["rows"].items():
            machine = check["hardware"].removeprefix("cpu: ")
            label = f"{machine}, not held" if name == "this processor" else f"{name}, held on {machine}"
            rows[label] = row
            names.append(label)
    kinds = (("float32", "float32", "tab:gray"), ("bf16", "bf16 (kept)", "tab:orange"),
             ("autocast_asked", "bf16 autocast as the notebooks ask for it (what the U-Net computes)",
              "tab:blue"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 * len(names) + 2.0), sharey=True)
    height = 0.8 / len(kinds)
    for ax, part, title in ((axes[0], "train", "training"), (axes[1], "sample", "one network call")):
        for k, (key, label, color) in enumerate(kinds):
            values = [rows[name][f"{part}_{key}_images_per_s"] for name in names]
            positions = [i + (k - 1) * height for i in range(len(names))]
            bars = ax.barh(positions, values, height=height, color=color, label=label)
            for bar, name, value in zip(bars, names, values, strict=True):
                ratio = value / rows[name][f"{part}_float32_images_per_s"]
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {ratio:.2f}x", va="center",
                        fontsize=7)
        if checks:
            ax.axhline(len(section["rows"]) - 0.5, color="black", lw=0.8)
        ax.set_xlabel(f"images per second, {title}")
        ax.margins(x=0.12)
    axes[0].set_yticks(range(len(names)),
                       [f"{name}\n(native_bf16: {rows[name]['native_bf16']})" for name in names])
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    train, sample = section["train"], section["sample"]
    fig.suptitle(f"U-Net training ({train['channels']} channels, batch {train['batch']}) and a network call "
                 f"({sample['channels']} channels, chunk {sample['batch']}) on {section['hardware']},\n"
                 "oneDNN and MKL held to each row's instructions; ratios to float32 in the same row"
                 + ("; below the line, another machine, nothing held" if checks else ""),
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)


def plot_recipe_on_machines(runs: list[tuple[dict, str]], path: Path, title: str) -> None:
    """One training recipe of ddpm_recipes.py run on several machines, each (section, recipe name):
    FID against training minutes (left) and against training images (right). Where the curves part on
    the left and meet on the right, the machines differ in speed only."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for (section, name), style in zip(runs, ("-", "--", ":", "-."), strict=False):
        curve = section["recipes"][name]["curve"]
        batch = section["recipes"][name]["recipe"]["batch"]
        precision = "bf16" if section["bf16"] else "float32"
        label = f"{section['hardware'].removeprefix('cpu: ')} (trained and scored in {precision})"
        line, = axes[0].plot([p["train_minutes"] for p in curve], [p["fid"] for p in curve], marker="o",
                             ms=5, mfc="none", ls=style, label=label)
        axes[1].plot([p["step"] * batch / 1e6 for p in curve], [p["fid"] for p in curve], marker="o", ms=5,
                     mfc="none", ls=style, color=line.get_color())
        axes[0].annotate(f"{curve[-1]['step']:,} steps", (curve[-1]["train_minutes"], curve[-1]["fid"]),
                         textcoords="offset points", xytext=(-6, -13), ha="right", fontsize=8)
        for ax in axes:
            ax.axhline(section["fid_floor"], color="gray", ls="--", lw=1)
    axes[0].set_xlabel("training minutes")
    axes[1].set_xlabel("training images (millions)")
    axes[0].set_ylabel(f"FID, N = {runs[0][0]['n_fid']:,} (dashed: real images)")
    axes[0].set_yscale("log")
    ticks = [2, 3, 5, 10, 20]
    axes[0].set_yticks(ticks, [str(t) for t in ticks])
    axes[0].minorticks_off()
    axes[0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 0.07))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_bf16_quality(section: dict, path: Path) -> None:
    """The published DDPM's FID in float32 and in bf16, seed by seed (each pair drew the same noise), and
    how often the classifier gives a pair's two images the same digit."""
    rows = section["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    for row in rows:
        axes[0].plot([row["fid_float32"], row["fid_bf16"]], [0, 1], color="tab:gray", lw=0.8, marker="o",
                     ms=4)
        axes[0].annotate(f"seed {row['seed']}", (row["fid_bf16"], 1), textcoords="offset points",
                         xytext=(0, -14), ha="center", fontsize=7)
    axes[0].set_yticks([0, 1], ["float32", "bf16 autocast"])
    axes[0].set_ylim(1.5, -0.5)
    axes[0].set_xlabel("FID (lower is better)")
    seeds = [f"seed {row['seed']}" for row in rows]
    same = [100 * row["same_digit"] for row in rows]
    bars = axes[1].barh(seeds, same, color="tab:blue")
    for bar, row in zip(bars, rows, strict=True):
        axes[1].text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                     f" {100 * row['same_digit']:.1f} %, mean |difference| {row['mean_abs_difference']:.4f}",
                     va="center", fontsize=7)
    axes[1].set_xlim(0, 160)
    axes[1].set_xticks([0, 25, 50, 75, 100])
    axes[1].invert_yaxis()
    axes[1].set_xlabel("pairs the classifier calls the same digit (%)")
    fig.suptitle(f"the published DDPM, {section['sampler']}, {section['calls']} network calls,\n"
                 f"N = {section['n']:,} per seed and precision, the same noise in both; on "
                 f"{section['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_sampler_noise(section: dict, path: Path) -> None:
    """FID and legible share against the sampler's noise eta, one grey line per seed (the seeds are
    shared), with the mean over seeds; eta = 1 (the reverse SDE) marked."""
    rows = section["rows"]
    etas = sorted({row["eta"] for row in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, key, label in ((axes[0], "fid", "FID (lower is better)"),
                           (axes[1], "legible", "legible share (confidence above 0.9)")):
        for seed in section["seeds"]:
            values = [next(r[key] for r in rows if r["eta"] == eta and r["seed"] == seed) for eta in etas]
            ax.plot(etas, values, color="tab:gray", lw=0.8, marker="o", ms=3,
                    label="one seed" if seed == section["seeds"][0] else None)
        means = [sum(r[key] for r in rows if r["eta"] == eta) / len(section["seeds"]) for eta in etas]
        ax.plot(etas, means, color="tab:red", lw=1.5, marker="s", ms=4, label="mean over seeds")
        ax.axvline(1.0, color="tab:blue", lw=0.8, ls="--", label="eta = 1: the reverse SDE")
        ax.set_xlabel("eta (the fresh noise against the posterior's)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"the published DDPM, {section['sampler']}, {section['calls']} network calls, "
                 f"N = {section['n']:,} per eta and seed (seeds {section['seeds']}),\n"
                 f"on {section['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_wgan_batch(section: dict, path: Path) -> None:
    """FID and legible share of the WGAN's generator against generator iterations, one line per batch m
    (benchmarks/wgan_batch.py)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for m, rows in sorted(section["curves"].items(), key=lambda item: int(item[0])):
        iterations = [row["iteration"] for row in rows]
        for ax, key in zip(axes, ("fid", "legible"), strict=True):
            ax.plot(iterations, [row[key] for row in rows], marker="o", ms=3, label=f"m = {m}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("FID (lower is better)")
    axes[1].set_ylabel("legible share (with the digit reference)")
    for ax in axes:
        ax.set_xlabel("generator iterations")
    axes[0].legend(fontsize=8)
    variant = {"gp": "WGAN-GP", "clip": "WGAN, weight clipping"}[section["variant"]]
    fig.suptitle(f"{variant}, {section['channels']} channels, n_critic = {section['n_critic']}, seed "
                 f"{section['seed']}; N = {section['n']:,} samples per score, on {section['hardware']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    stored = json.loads((ROOT / "results" / "benchmarks.json").read_text())
    plot_unet_levers(stored["unet_levers"], ROOT / "results" / "unet_levers.png")
    print("written results/unet_levers.png")
    if "training_throughput" in stored:
        plot_training_throughput(stored["training_throughput"], ROOT / "results" / "training_throughput.png")
        print("written results/training_throughput.png")
    if "allocator" in stored:
        plot_allocator(stored["allocator"], ROOT / "results" / "allocator.png")
        print("written results/allocator.png")
    if "bf16_isa" in stored:
        checks = [section for name, section in stored.items() if name.startswith("bf16_isa_")]
        plot_bf16_isa(stored["bf16_isa"], ROOT / "results" / "bf16_isa.png", checks)
        print("written results/bf16_isa.png")
    if "bf16_quality" in stored:
        plot_bf16_quality(stored["bf16_quality"], ROOT / "results" / "bf16_quality.png")
        print("written results/bf16_quality.png")
    if "sampler_noise" in stored:
        plot_sampler_noise(stored["sampler_noise"], ROOT / "results" / "sampler_noise.png")
        print("written results/sampler_noise.png")
    if "stochastic_samplers" in stored:
        plot_stochastic_samplers(stored["stochastic_samplers"], ROOT / "results" / "stochastic_samplers.png")
        print("written results/stochastic_samplers.png")
    if "ddpm_width" in stored and "ddpm_avx2_host" in stored:
        recipe = "v-prediction, batch 64, 24 channels"  # the cpu profile's, in both sections
        title = (f"The cpu profile's recipe ({recipe}) for 27 minutes on a processor with bfloat16 and on "
                 "one with only AVX2,\nfrom the same weights on the same batches (scored with 17 and 20 "
                 "network calls: before and after a fix to the timesteps)")
        plot_recipe_on_machines([(stored["ddpm_width"], recipe), (stored["ddpm_avx2_host"], recipe)],
                                ROOT / "results" / "ddpm_machines.png", title)
        print("written results/ddpm_machines.png")
    for name in ("wgan_batch_gp", "wgan_batch_clip"):
        if name in stored:
            plot_wgan_batch(stored[name], ROOT / "results" / f"{name}.png")
            print(f"written results/{name}.png")
    runs = [("cpu profile", ROOT / "results" / "cpu-xeon" / "ddpm.json", "tab:blue"),
            ("gpu profile, first run", ROOT / "results" / "gpu-h200" / "ddpm.json", "tab:orange"),
            ("gpu profile, published", ROOT / "checkpoints" / "ddpm.json", "tab:red")]
    records = [(label, json.loads(path.read_text()), color) for label, path, color in runs if path.exists()]
    plot_profile_runs(records, ROOT / "results" / "ddpm_profiles.png")
    print("written results/ddpm_profiles.png")

if __name__ == "__main__":
    main()
