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
# # Evaluating the models: one honest table
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/genmodels-book/a-tale-of-vaes-wgans-ddpms/blob/main/notebooks/07_evaluation.ipynb)
#
# This notebook measures every published model the same way, as described in the
# [evaluation chapter](../chapters/evaluation.md): $N$ samples per model and per sampling seed,
# pushed through the same uint8 path into the feature space of the project's
# [MNIST classifier](06_feature_network.ipynb), and compared with the 10,000 MNIST test images by
# FID, KID, precision and recall. Every row is repeated over several sampling seeds and reports the
# spread, so a difference between two rows can be told from noise. The numbers are written to
# `results/metrics.json` and glued into the [results page](../chapters/results.md).

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
seeds = (
    3  # sampling seeds per row; each row reports mean and standard deviation over them
)

# %%
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, Markdown
from markdown_it import MarkdownIt
from torchvision.transforms.functional import gaussian_blur

from genmodels.data import load_mnist
from genmodels.diffusion import dpm_solver_2m_sample, load_ddpm, trailing_timesteps
from genmodels.features import (
    extract_features,
    inception_features,
    legible_share,
    load_classifier,
)
from genmodels.metrics import (
    FeatureStatistics,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
    to_uint8,
)
from genmodels.plotting import glue, show_images
from genmodels.train import (
    git_commit,
    hardware,
    pick_device,
    resolve_profile,
    write_json,
)
from genmodels.vae import load_vae
from genmodels.wgan import load_generator

profile = resolve_profile(profile)
device = pick_device()
n_samples = {"smoke": 500, "cpu": 10_000, "gpu": 10_000}[profile]
checkpoints = Path("../checkpoints")
results_path = Path("../results/metrics.json") if profile != "smoke" else None
commit = git_commit()
print(
    f"profile {profile} on {hardware(device)}: "
    f"N = {n_samples:,} per row and seed, {seeds} seeds"
)

# %% [markdown]
# ## The reference: MNIST's test set in the classifier's feature space

# %%
classifier, classifier_checkpoint = load_classifier(
    checkpoints / "mnist-classifier.pt", map_location=device
)
classifier_record = classifier_checkpoint["extra"]["record"]
print(
    f"feature network: test accuracy {classifier_record['test_accuracy']:.2%}, "
    f"{classifier.config.feature_dim}-dimensional features, eval mode"
)
train_images = load_mnist(train=True).data  # uint8 (60000, 28, 28)
test_images = load_mnist(train=False).data[:n_samples]
test_features = extract_features(classifier, test_images)
reference = FeatureStatistics(test_features.shape[1]).update(test_features)

# %% [markdown]
# ## The registry
#
# Each row is a name and a function that returns `n` images for a given seed (uint8, or floats in
# $[0, 1]$). Adding a model is adding one entry here. The WGANs have no likelihood, so their NLL
# column stays empty. The VAE's NLL is in nats per image of *binarized* MNIST, the DDPM's a bound
# in bits per pixel on MNIST's 256 grey levels: different data, so the two cannot be compared. The
# DDPM is sampled with SDE-DPM-Solver++(2M) on trailing timesteps, at the number of network calls
# its row names. Of the samplers the [DDPM notebook](04_ddpm.ipynb) measured against Algorithm 2's
# 1000 calls, DDIM with $\eta = 1$ came closest with at most 20 calls; the SDE solver is its
# second-order form (derived on the DDPM page), and at 20 calls it scored lower than DDIM with
# $\eta = 1$ on each of three seeds ([benchmarks page](../chapters/benchmarks.md)). It runs under
# bf16 autocast where the device has bfloat16 instructions, as the DDPM notebook does: from the same
# noise, float32 gives the same digits and an FID about one percent lower, a quarter of the spread
# between seeds at 1,000 samples (same page). The
# two VAE rows differ only in what counts as "the sample": the decoder's pixel probabilities, or a
# Bernoulli draw from them (the model's actual samples; see the [VAE notebook](02_vae.ipynb)). Binary
# images are far from MNIST's grey strokes in the classifier's eyes too, so the second floor row
# draws the same Bernoulli pixels from real training images: what a perfect model of MNIST binarized
# that way would score, a yardstick rather than a bound (binary images with less speckle than that
# could land nearer the grey test images). Each model row carries the SHA-256 of the checkpoint it
# measured.

# %%
vae, vae_checkpoint = load_vae(checkpoints / "vae-j32.pt", map_location=device)
vae_record = vae_checkpoint["extra"]["record"]


@dataclass
class Row:
    model: str
    sample: Callable[[int, int], torch.Tensor]  # (n, seed) -> images (n, 1, 28, 28)
    kind: str  # "model", "floor" or "baseline"
    nll: float | None = None
    nll_unit: str | None = None
    train_seconds: float | None = None
    train_hardware: str | None = None  # where it trained (its checkpoint's record)
    params: int | None = None
    checkpoint: str | None = None  # the published file the row measures


def vae_sample(which: int) -> Callable[[int, int], torch.Tensor]:
    def sample(n: int, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=device).manual_seed(seed)
        return vae.sample(n, generator=generator)[which].cpu()

    return sample


def training_subset(n: int, seed: int) -> torch.Tensor:
    """n training images, a different disjoint block for every seed."""
    return train_images[seed * n : (seed + 1) * n][:, None]


def binarized_training_images(n: int, seed: int) -> torch.Tensor:
    """Each pixel of n training images drawn as Bernoulli(intensity / 255), as the
    VAE's draws are."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(training_subset(n, seed).float() / 255, generator=generator)


def uniform_noise(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)


def blurred_training_images(n: int, seed: int) -> torch.Tensor:
    blurred = gaussian_blur(
        training_subset(n, seed).float() / 255, kernel_size=9, sigma=1.5
    )
    # float rounding in the convolution can overshoot 1 by 1e-7
    return blurred.clamp(0, 1)


def wgan_sample(variant: str) -> Callable[[int, int], torch.Tensor]:
    generator, _ = load_generator(
        checkpoints / f"wgan-{variant}.pt", map_location=device
    )

    def sample(n: int, seed: int) -> torch.Tensor:
        with torch.no_grad():
            images = generator.sample(
                n, generator=torch.Generator(device=device).manual_seed(seed)
            )
        return images.reshape(n, 1, 28, 28).cpu()

    return sample


def wgan_info(variant: str) -> dict:
    generator, checkpoint = load_generator(checkpoints / f"wgan-{variant}.pt")
    return dict(
        train_seconds=checkpoint["extra"]["record"]["train_seconds"],
        train_hardware=checkpoint["extra"]["record"]["hardware"],
        # parameters only, as for the other models: not batch normalization's statistics
        params=sum(p.numel() for p in generator.parameters()),
        checkpoint=f"wgan-{variant}.pt",
    )


ddpm, ddpm_schedule, ddpm_checkpoint = load_ddpm(
    checkpoints / "ddpm.pt", map_location=device
)
ddpm_record = ddpm_checkpoint["extra"]["record"]
# smoke: only proves the row runs
ddpm_calls = {"smoke": 5, "cpu": 20, "gpu": 20}[profile]
# fresh noise at every step, as Algorithm 2; the last timestep is T / calls, not 1
ddpm_timesteps = trailing_timesteps(ddpm_schedule.T, ddpm_calls)


# chunks of 100: on a CPU, blocks of that size are reused by the memory allocator
# rather than handed back to the kernel (see the benchmarks page)
def ddpm_sample(n: int, seed: int, batch: int = 100) -> torch.Tensor:
    generator = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for b in range(0, n, batch):
        # as the DDPM notebook samples
        with torch.autocast(device.type, dtype=torch.bfloat16):
            chunks.append(
                dpm_solver_2m_sample(
                    ddpm,
                    ddpm_schedule,
                    (min(batch, n - b), 1, 28, 28),
                    timesteps=ddpm_timesteps,
                    stochastic=True,
                    generator=generator,
                    device=device,
                )
            )
    return ((torch.cat(chunks).float().cpu() + 1) / 2).clamp(0, 1)  # [-1, 1] -> [0, 1]


# the tighter of the two fixed variances
ddpm_bound = min(ddpm_record["nll_bits_per_dim"].values())
ddpm_info = dict(
    nll=ddpm_bound,
    nll_unit=f"bits/dim (bound, {ddpm_record['n_nll']} test images)",
    train_seconds=ddpm_record["train_seconds"],
    train_hardware=ddpm_record["hardware"],
    params=sum(p.numel() for p in ddpm.parameters()),
    checkpoint="ddpm.pt",
)
vae_info = dict(
    nll=vae_record["test_nll"],
    nll_unit=f"{vae_record['nll_unit']} (IWAE K = {vae_record['test_nll_k']:,}, "
    f"{vae_record['test_nll_n']:,} test images)",
    train_seconds=vae_record["train_seconds"],
    train_hardware=vae_record["hardware"],
    params=sum(p.numel() for p in vae.parameters()),
    checkpoint="vae-j32.pt",
)
registry = [
    Row("real data: training vs test images", training_subset, "floor"),
    Row(
        "real data, binarized: Bernoulli draws of training images",
        binarized_training_images,
        "floor",
    ),
    Row("VAE, decoder means", vae_sample(0), "model", **vae_info),
    Row("VAE, Bernoulli draws", vae_sample(1), "model", **vae_info),
    Row("WGAN, weight clipping", wgan_sample("clip"), "model", **wgan_info("clip")),
    Row("WGAN-GP", wgan_sample("gp"), "model", **wgan_info("gp")),
    Row(
        f"DDPM, SDE-DPM-Solver++(2M), {ddpm_calls} calls",
        ddpm_sample,
        "model",
        **ddpm_info,
    ),
    Row("baseline: blurred training images", blurred_training_images, "baseline"),
    Row("baseline: uniform noise", uniform_noise, "baseline"),
]

# %% [markdown]
# ## Measuring every row
#
# For each row and seed: draw $N$ images (timed), quantize them to uint8, compute their features,
# then FID (Fréchet distance of the feature Gaussians, float64), KID (100 subsets of 1,000) and
# precision and recall ($k = 3$ nearest neighbours) against the test set.

# %%
published_hashes = {
    name: digest
    for digest, name in (
        line.split()
        for line in (checkpoints / "SHA256SUMS").read_text().splitlines()
        if line.strip()
    )
}


def checkpoint_sha256(name: str) -> str:
    """The published SHA-256 of a checkpoint (the loaders above refused any file
    that does not match it)."""
    return published_hashes[name]


records, grids = [], {}
for row in registry:
    per_seed = []
    for seed in range(seeds):
        started = time.perf_counter()
        images = to_uint8(row.sample(n_samples, seed))
        sample_seconds = time.perf_counter() - started
        features = extract_features(classifier, images)
        statistics = FeatureStatistics(features.shape[1]).update(features)
        fid = frechet_distance(
            reference.mean, reference.covariance, statistics.mean, statistics.covariance
        )
        kid, _ = kernel_inception_distance(test_features, features, seed=seed)
        precision, recall = precision_recall(test_features, features)
        per_seed.append(
            dict(
                fid=fid,
                kid=kid,
                precision=precision,
                recall=recall,
                seconds_per_1k=sample_seconds / n_samples * 1000,
            )
        )
        grids.setdefault(row.model, images[:32])
    mean = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
    std = {
        k: float(np.std([s[k] for s in per_seed], ddof=1))
        for k in ("fid", "kid", "precision", "recall")
    }
    records.append(
        dict(
            model=row.model,
            kind=row.kind,
            fid=mean["fid"],
            fid_std=std["fid"],
            kid=mean["kid"],
            kid_std=std["kid"],
            precision=mean["precision"],
            precision_std=std["precision"],
            recall=mean["recall"],
            recall_std=std["recall"],
            nll=row.nll,
            nll_unit=row.nll_unit,
            sample_seconds_per_1k=mean["seconds_per_1k"]
            if row.kind == "model"
            else None,
            train_seconds=row.train_seconds,
            train_hardware=row.train_hardware,
            params=row.params,
            n_samples=n_samples,
            seeds=seeds,
            reference="MNIST test set",
            feature_network="mnist-classifier.pt",
            checkpoint=row.checkpoint,
            checkpoint_sha256=None
            if row.checkpoint is None
            else checkpoint_sha256(row.checkpoint),
            profile=profile,
            hardware=hardware(device),
            commit=commit,
        )
    )
    print(
        f"{row.model:>36}: FID {mean['fid']:8.3f} ± {std['fid']:.3f}   "
        f"KID {mean['kid']:.5f}   "
        f"precision {mean['precision']:.3f} ± {std['precision']:.3f}   "
        f"recall {mean['recall']:.3f} ± {std['recall']:.3f}"
    )

# %% [markdown]
# ## The table
#
# FID, KID, precision and recall are means over the sampling seeds with their standard deviation;
# lower FID and KID are better, higher precision and recall. For FID and KID the real-data row is
# the floor: what samples as good as fresh real digits would score at this $N$. Recall has no such
# ceiling: it counts the test images that fall inside the balls drawn around the samples (each
# reaching a sample's $k$-th nearest neighbour among the samples), and samples more spread out than
# real digits draw larger balls, so a model's recall can exceed the real-data row's without its
# samples being better: read it beside precision.

# %%
def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def trained(r: dict) -> str:
    """Training minutes and where: "18.9 on CPU (2 threads)", "3.2 on GPU (NVIDIA
    H200)"."""
    if r["train_seconds"] is None:
        return "–"
    kind, _, name = r["train_hardware"].partition(": ")
    where = f"GPU ({name})" if kind == "cuda" else f"CPU ({name.rsplit(', ', 1)[-1]})"
    return f"{r['train_seconds'] / 60:.1f} on {where}"


lines = [
    "| model | FID ↓ | KID ↓ | precision ↑ | recall ↑ | NLL "
    "| sampling s / 1k | training min | parameters |",
    "|---|---|---|---|---|---|---|---|---|",
]
for r in sorted(records, key=lambda r: (r["kind"] != "floor", r["fid"])):
    nll = "–" if r["nll"] is None else f"{r['nll']:.2f} {r['nll_unit']}"
    lines.append(
        f"| {r['model']} | {r['fid']:.2f} ± {r['fid_std']:.2f} "
        f"| {r['kid']:.4f} ± {r['kid_std']:.4f} "
        f"| {r['precision']:.3f} ± {r['precision_std']:.3f} "
        f"| {r['recall']:.3f} ± {r['recall_std']:.3f} | {nll} "
        f"| {fmt(r['sample_seconds_per_1k'], '.3f')} "
        f"| {trained(r)} | {fmt(r['params'], ',d')} |"
    )
caption = (
    f"N = {n_samples:,} samples per row and seed, {seeds} seeds; "
    "features of the project's MNIST classifier "
    f"(test accuracy {classifier_record['test_accuracy']:.2%}); "
    "reference: the MNIST test "
    f"set. Measured in the `{profile}` profile on {hardware(device)}, commit "
    f"`{commit[:10]}`; each model was trained where its row says."
)
table = "\n".join(lines)
# other pages paste HTML, not Markdown
to_html = MarkdownIt("commonmark").enable("table").render
glue("results_table", HTML(to_html(table).replace("<table>", '<table class="table">')))
glue("results_caption", HTML(to_html(caption)))
Markdown(table + "\n\n" + caption)

# %%
if results_path is not None:
    write_json(results_path, records)
    print(f"wrote {len(records)} rows to {results_path}")
slugs = [
    "real",
    "binarized",
    "vae_means",
    "vae_draws",
    "wgan_clip",
    "wgan_gp",
    "ddpm",
    "blurred",
    "noise",
]
# single numbers for the results page's prose
for slug, record in zip(slugs, records, strict=True):
    glue(f"results_{slug}_fid", f"{record['fid']:.2f}")
    glue(f"results_{slug}_fid_std", f"{record['fid_std']:.2f}")
    glue(f"results_{slug}_precision", f"{record['precision']:.2f}")
    glue(f"results_{slug}_recall", f"{record['recall']:.2f}")
    glue(f"results_{slug}_recall_std", f"{record['recall_std']:.2f}")

# %% [markdown]
# Are the differences real? Two rows are told apart only when their intervals of mean ± 2 standard
# deviations over seeds do not overlap; the check below says so
# for each adjacent pair of rows in the ranking by FID,
# the floors and the noise baseline included.

# %%
ranked = sorted(records, key=lambda r: r["fid"])
for better, worse in zip(ranked, ranked[1:], strict=False):
    separated = (
        better["fid"] + 2 * better["fid_std"] < worse["fid"] - 2 * worse["fid_std"]
    )
    print(
        f"{better['model']} < {worse['model']}: "
        f"{'separated' if separated else 'NOT separated'} (mean ± 2 std intervals)"
    )

# %% [markdown]
# ## Inception FID, where its weights are present
#
# The standard FID uses pytorch-fid's Inception-v3 weights, which cannot be downloaded on the machines
# this book is built on. Where they are already in torch's hub cache (on Colab, run
# `!pip install pytorch-fid` and `pytorch_fid.inception.fid_inception_v3()` once, which downloads
# them), the same path computes it, for seed 0 of every row; elsewhere the cell says why it cannot.

# %%
try:
    inception = inception_features().to(device)
except (FileNotFoundError, ImportError) as reason:
    print(f"Inception FID skipped: {reason}")
else:
    inception_reference = FeatureStatistics(2048).update(
        extract_features(inception, test_images, batch_size=100)
    )
    for row, record in zip(registry, records, strict=True):
        statistics = FeatureStatistics(2048).update(
            extract_features(
                inception, to_uint8(row.sample(n_samples, 0)), batch_size=100
            )
        )
        record["inception_fid"] = frechet_distance(
            inception_reference.mean,
            inception_reference.covariance,
            statistics.mean,
            statistics.covariance,
        )
        print(
            f"{row.model:>36}: Inception FID {record['inception_fid']:.2f} "
            f"(seed 0, N = {n_samples:,})"
        )
    if results_path is not None:
        write_json(results_path, records)

# %% [markdown]
# ## Samples side by side

# %% tags=["hide-input"]
columns = 3
rows = math.ceil(len(grids) / columns)
fig, axes = plt.subplots(rows, columns, figsize=(13, 2.9 * rows), squeeze=False)
for ax, (name, images) in zip(axes.flat, grids.items(), strict=False):
    show_images(images, nrow=8, ax=ax)
    ax.set_title(name.replace(": ", ":\n"), fontsize=9)
for ax in axes.flat[len(grids) :]:
    ax.axis("off")
fig.tight_layout()
glue("sample_grids", fig)

# %% [markdown]
# How many samples would a reader call a digit? The share of samples of each row that the
# classifier assigns to one class with probability above 0.9: of one draw of 64 (seed 0, a grid's
# worth; for most rows its first 32 are the grid shown above), and of
# 3,000 (1,000 from each of three seeds), whose binomial standard error, about one percentage
# point, is printed (two of them make a 95 % interval; a draw of 64 has one of about six points). The real-data row is the reference. Confidence is
# not legibility: the classifier is just as sure about uniform noise, so the share means something
# only for images that already look like digits; read it beside precision, recall and FID.

# %%
def legible(images: torch.Tensor) -> float:
    """The share of images classified with a probability above 0.9."""
    return legible_share(classifier, images, confidence=0.9)


n_legible = min(1_000, n_samples)
with torch.no_grad():
    for slug, row in zip(slugs, registry, strict=True):
        grid = legible(row.sample(64, 0))
        share = np.mean([legible(row.sample(n_legible, s)) for s in range(seeds)])
        error = math.sqrt(share * (1 - share) / (seeds * n_legible))
        print(
            f"{row.model:>56}: {grid:4.0%} of 64 samples, "
            f"{share:6.1%} ± {error:.1%} of {seeds * n_legible:,} with confidence > 0.9"
        )
        glue(f"results_{slug}_legible", f"{grid:.0%}")
        glue(f"results_{slug}_legible_3k", f"{share:.1%}")


# %% [markdown]
# ## Are the samples copies of training images?
#
# A model that memorized its training set would score a perfect FID. For each of up to 1,000 VAE
# samples (decoder means, seed 0) and as many DDPM samples we find its nearest training image in
# pixel space and compare that distance with the one from each of as many *test* images to its
# nearest training image. Copies would sit much
# closer than test images do; the figure shows samples next to their nearest training neighbours.

# %%
n_check = min(1000, n_samples)
train_flat = train_images.float().reshape(len(train_images), -1) / 255
test_flat = test_images[:n_check].float().reshape(n_check, -1) / 255


def nearest_training(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    distances = torch.cat([torch.cdist(chunk, train_flat) for chunk in x.split(250)])
    return distances.min(dim=1)


test_distance, _ = nearest_training(test_flat)
fig, axes = plt.subplots(
    1, 3, figsize=(15, 3), gridspec_kw=dict(width_ratios=[1.2, 1, 1])
)
axes[0].hist(test_distance.numpy(), bins=40, alpha=0.5, label="test image")
print(
    f"median distance to the nearest training image (pixel L2, images in [0, 1]): "
    f"test images {test_distance.median():.2f}"
)
for ax, (name, sample) in zip(
    axes[1:], (("VAE", vae_sample(0)), ("DDPM", ddpm_sample)), strict=True
):
    samples = to_uint8(sample(n_check, 0)).float().reshape(n_check, -1) / 255
    sample_distance, sample_index = nearest_training(samples)
    print(f"{name} samples {sample_distance.median():.2f}")
    axes[0].hist(sample_distance.numpy(), bins=40, alpha=0.5, label=f"{name} sample")
    pairs = torch.stack(
        [
            samples[:8].reshape(8, 28, 28),
            train_flat[sample_index[:8]].reshape(8, 28, 28),
        ],
        1,
    )
    show_images(
        pairs.reshape(16, 28, 28),
        nrow=8,
        ax=ax,
        title=f"{name} samples (odd columns), nearest training images",
    )
axes[0].set_xlabel("L2 distance to the nearest training image")
axes[0].legend(fontsize=8)
fig.tight_layout()
