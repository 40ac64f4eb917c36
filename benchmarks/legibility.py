"""When is a confident classifier a reader? The legible share of the evaluation table (the classifier
names one digit with probability above 0.9) beside a check that confidence alone cannot pass: the
image must also lie where real digits lie, to the classifier (its features no farther from its
digit's mean, in the Mahalanobis distance of one covariance shared by the digits, than 99 % of real
test digits) and in ink (its mean intensity no lower than that of 99 % of the real test digits the
classifier calls the same digit):
genmodels.features.fit_digit_reference and legible_share(..., reference=...).

Run: python benchmarks/legibility.py [--n 1000] [--ddpm-n 500] [--etas 1 2.5] [--device cpu]

The reference is fitted on the 60,000 training images (class means and covariance) and on 5,000 test
images drawn at random (the distance and each digit's least ink); the real-data row is the other
5,000 test images, and the same digits blurred (a Gaussian of one pixel) and at half their ink: digits a
reader still reads, to show what the checks cost such images.
Each model row draws its samples from seed 0 as the evaluation notebook draws them (the VAE's
decoder means and Bernoulli draws, the two WGANs, the published DDPM at 20 network calls with
SDE-DPM-Solver++(2M) on trailing timesteps for each eta), beside baselines that are not digits
(blank and uniform-noise images) and a DDPM U-Net at the cpu profile's width that was never trained,
sampled the same way. Results (per row: the share confident, near its digit, with ink,
and legible by confidence alone and with the reference, with hardware, commit and the checkpoints'
hashes) are merged into results/benchmarks.json under "legibility"; the figure, with the samples
that the reference turns away, is written to results/legibility.png. About ten minutes on two AVX2
cores (the DDPM's rows take most of it); seconds on a GPU. Not a test.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import torch
from evaluation_draw import SAMPLER, sample  # beside this script
from timing import at_least_one, autocast_computed, store_section  # benchmarks/timing.py, beside this script
from torchvision.transforms.functional import gaussian_blur

from genmodels.data import load_mnist
from genmodels.diffusion import EpsilonFromV, NoiseSchedule, load_ddpm
from genmodels.features import fit_digit_reference, load_classifier, reference_checks
from genmodels.train import file_sha256, hardware
from genmodels.unet import UNet, UNetConfig
from genmodels.vae import load_vae
from genmodels.wgan import load_generator

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIDENCE = 0.9  # the evaluation table's
COVERAGE = 0.99
CALLS = 20  # the evaluation table's network calls per DDPM sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=at_least_one, default=1000, help="images per row (but the DDPM's)")
    parser.add_argument("--ddpm-n", type=at_least_one, default=500, help="images per DDPM row")
    parser.add_argument("--etas", type=float, nargs="+", default=[1.0, 2.5],
                        help="the DDPM sampler's noise (1: the evaluation's)")
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"), help="cpu or cuda")
    args = parser.parse_args()
    checkpoints, device, n = ROOT / "checkpoints", args.device, args.n
    classifier, _ = load_classifier(checkpoints / "mnist-classifier.pt", map_location=device)
    train, test = load_mnist(train=True), load_mnist(train=False)
    # half the test images, drawn at random (MNIST's two halves come from different writers), calibrate
    # the reference; the other half is the real-data row
    halves = torch.randperm(len(test.data), generator=torch.Generator().manual_seed(0)).split(5_000)
    reference = fit_digit_reference(classifier, train.data, train.targets, test.data[halves[0]], COVERAGE)
    print(f"{hardware(device)}; reference: squared distance <= {reference.max_distance:.0f}, "
          f"mean ink of each digit >= {[round(x, 3) for x in reference.min_ink.tolist()]}", flush=True)

    vae, _ = load_vae(checkpoints / "vae-j32.pt", map_location=device)
    ddpm, schedule, _ = load_ddpm(checkpoints / "ddpm.pt", map_location=device)
    torch.manual_seed(0)  # the untrained network's weights
    untrained = EpsilonFromV(UNet(UNetConfig(channels=24, blocks_per_level=1)).to(device).eval(),
                             NoiseSchedule(T=1000, kind="cosine"))

    def seeded() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(0)

    def wgan(variant: str):
        generator, _ = load_generator(checkpoints / f"wgan-{variant}.pt", map_location=device)
        return generator.sample(n, generator=seeded()).reshape(n, 1, 28, 28).cpu()

    held_out = test.data[halves[1]][:, None]
    rows = {"real test digits (not fitted on)": lambda: held_out,
            # the same digits as a reader still reads them, blurred as a decoder's mean blurs, or faint
            "the same, blurred (Gaussian, 1 pixel)": lambda: blurred(held_out, sigma=1.0),
            "the same, at half their ink": lambda: (held_out.float() / 2).round().to(torch.uint8),
            "blank images": lambda: torch.zeros(n, 1, 28, 28),
            "uniform noise": lambda: torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8,
                                                   generator=torch.Generator().manual_seed(0))}
    rows["VAE, decoder means"] = lambda: vae.sample(n, generator=seeded())[0].cpu()
    rows["VAE, Bernoulli draws"] = lambda: vae.sample(n, generator=seeded())[1].cpu()
    rows["WGAN, weight clipping"] = lambda: wgan("clip")
    rows["WGAN-GP"] = lambda: wgan("gp")
    for eta in args.etas:
        rows[f"DDPM, eta = {eta:g}"] = lambda eta=eta: sample(ddpm, schedule, args.ddpm_n, CALLS, 0, eta=eta,
                                                              device=device)[0]
    rows["DDPM U-Net never trained (24 channels)"] = lambda: sample(untrained, untrained.schedule,
                                                                    args.ddpm_n, CALLS, 0, device=device)[0]

    results, turned_away = [], {}
    for name, draw in rows.items():
        with torch.no_grad():
            images = draw()
        row = reference_checks(classifier, images, reference, CONFIDENCE)
        digit = row.pop("digit")
        legible = row["confident"] & row["near"] & row["inked"]
        shares = {key: value.float().mean().item() for key, value in row.items()}
        results.append(dict(row=name, n=len(images), **shares, legible_confidence_only=shares["confident"],
                            legible=legible.float().mean().item(),
                            digit_called_most=digit.bincount(minlength=10).argmax().item(),
                            share_called_it=digit.bincount(minlength=10).max().item() / len(digit)))
        turned_away[name] = images[row["confident"] & ~legible][:8]
        print(f"  {name:>40}: confident {shares['confident']:6.1%}, near its digit {shares['near']:6.1%}, "
              f"inked {shares['inked']:6.1%} -> legible {results[-1]['legible']:6.1%} (N = {len(images):,}; "
              f"called {results[-1]['digit_called_most']} most, {results[-1]['share_called_it']:.0%})",
              flush=True)

    section = dict(
        confidence=CONFIDENCE, coverage=COVERAGE, calls=CALLS, sampler=SAMPLER, seed=0,
        reference=dict(fitted_on="the 60,000 training images (class means, shared covariance)",
                       calibrated_on="5,000 test images drawn at random, seed 0 (distance, each digit's "
                                     "least ink); the real-data row is the other 5,000",
                       max_distance=reference.max_distance, min_ink=reference.min_ink.tolist()),
        checkpoints={name: file_sha256(checkpoints / name) for name in
                     ("mnist-classifier.pt", "vae-j32.pt", "wgan-clip.pt", "wgan-gp.pt", "ddpm.pt")},
        autocast=autocast_computed(device), rows=results, hardware=hardware(device),
    )
    store_section("legibility", **section)
    plot_legibility(section, turned_away, ROOT / "results" / "legibility.png")
    print("written results/legibility.png")


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 images convolved with a Gaussian of standard deviation ``sigma`` pixels (a 5 x 5 kernel)."""
    smooth = gaussian_blur(images.float(), kernel_size=[5, 5], sigma=[sigma, sigma])
    return smooth.round().clamp(0, 255).to(torch.uint8)


def plot_legibility(section: dict, turned_away: dict[str, torch.Tensor], path: Path) -> None:
    """Left: each row's legible share by confidence alone and with the reference. Right, on the same
    row: up to eight of its samples that the classifier is confident about and the reference turns away."""
    rows = section["rows"]
    fig, (ax, strips) = plt.subplots(1, 2, figsize=(11, 0.62 * len(rows) + 1.5), sharey=True,
                                     gridspec_kw=dict(width_ratios=[1, 1.15]))
    y = range(len(rows))
    ax.barh([i - 0.2 for i in y], [r["legible_confidence_only"] for r in rows], 0.4, color="tab:gray",
            label=f"confidence above {section['confidence']} alone")
    ax.barh([i + 0.2 for i in y], [r["legible"] for r in rows], 0.4, color="tab:green",
            label="and near its digit's features, with ink")
    ax.set_yticks(list(y), [f"{r['row']}\n(N = {r['n']:,})" for r in rows], fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of samples legible")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=1)
    canvas = torch.ones(len(rows) * 30, 8 * 30)  # white where a row has fewer than eight
    for i, r in enumerate(rows):
        for j, image in enumerate(turned_away.get(r["row"], [])):
            pixels = image.float().reshape(28, 28)
            pixels = pixels / 255 if image.dtype == torch.uint8 else pixels
            canvas[i * 30 + 1:i * 30 + 29, j * 30 + 1:j * 30 + 29] = pixels
    # row i of the canvas spans i - 0.5 to i + 0.5, beside its bars
    strips.imshow(canvas, cmap="gray", vmin=0, vmax=1, aspect="auto", extent=(0, 8, len(rows) - 0.5, -0.5))
    strips.set_title("confident, but turned away by the reference (up to 8 per row)", fontsize=9)
    strips.set_xticks([])
    strips.tick_params(left=False)
    for side in strips.spines.values():
        side.set_visible(False)
    fig.suptitle(f"The legible share with and without the reference of real digits (each check keeps "
                 f"{section['coverage']:.0%} of them), seed {section['seed']};\nDDPM: {section['sampler']}, "
                 f"{section['calls']} network calls; on {section['hardware']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)

if __name__ == "__main__":
    main()
