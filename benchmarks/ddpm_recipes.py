"""Time to quality of DDPM training recipes on this machine: Ho et al.'s Algorithm 1 against the
changes the field found to pay most per unit of compute, each added to the one before.

Run: python benchmarks/ddpm_recipes.py [--steps 1500] [--evaluate-every 500] [--n-fid 1000] [--bf16]
[--only NAME ...] [--section NAME] (measure only these recipes, written to their own section: curves
measured at different times may use different classifiers, so a section mixes runs only with --add,
and only runs scored the same way)
[--minutes M] (stop each recipe after M minutes of training) [--compare SECTION/NAME ...] (also draw
curves stored by an earlier run scored the same way) [--add] (add these recipes to the section's
stored ones, which must have been scored the same way, instead of replacing them)
Every recipe trains the same U-Net (16 channels, the cpu profile's width when the stored curves were
measured; it is 24 since the ddpm_width section; unless the recipe names another width) from the
same initial weights (at one width) on the same batches for the same number of steps
(equal steps are equal wall time: the changes cost nothing per step; a recipe with a smaller batch
takes proportionally more steps, so the same number of images, in about the same time; a wider network
costs more per step, and ``--minutes`` then compares at equal time), and is scored every
``--evaluate-every`` steps by the book's FID (classifier features, N = ``--n-fid`` samples from
DPM-Solver++(2M) with 20 network calls, against the 10,000 test images; the floor is N real training
images), and by the share of those samples that the classifier calls a digit with confidence above
0.9 ("legible"). Prints and writes the section of results/benchmarks.json ("ddpm_recipes" unless
--section names another) and its figure, results/SECTION.png (FID against training minutes). Not a
test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from timing import at_least_one  # noqa: E402  (benchmarks/timing.py, beside this script)
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402

from genmodels.data import load_mnist  # noqa: E402
from genmodels.diffusion import (  # noqa: E402
    NoiseSchedule,
    dpm_solver_2m_sample,
    logsnr_timesteps,
    min_snr_weight,
    predict_eps_from_v,
    q_sample,
    v_target,
)
from genmodels.distributions import mean_flat  # noqa: E402
from genmodels.features import extract_features, legible_share, load_classifier  # noqa: E402
from genmodels.metrics import FeatureStatistics, frechet_distance  # noqa: E402
from genmodels.train import (  # noqa: E402
    decay_to_zero,
    file_sha256,
    git_commit,
    hardware,
    modified_code,
    native_bf16,
    power_ema,
    write_json,
)
from genmodels.unet import UNet, UNetConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_BATCH = 128  # Ho et al.'s; ``--steps`` counts steps of this many images
SCORE_STEPS = 20  # DPM-Solver++(2M) steps of every FID sample; the grid decides the network calls


@dataclass(frozen=True)
class Recipe:
    schedule: str = "linear"  # Ho et al.'s betas 1e-4..0.02, or Nichol & Dhariwal's cosine
    prediction: str = "eps"  # what the network outputs: epsilon, or v = alpha eps - sigma x0
    min_snr: bool = False  # Hang et al.'s min-SNR-5 loss weights
    lr_to_zero: bool = False  # cosine decay of the learning rate to zero over the run
    decay_last: float = 0.0  # or: constant, then linear decay to zero over this last fraction of it
    ema: str = "0.995"  # a fixed decay, or "power": the power-function EMA (gamma = 6.94), or
    # several decays separated by spaces: one run keeps every average and scores each of them
    batch: int = REFERENCE_BATCH  # images per step; a smaller batch takes proportionally more steps
    channels: int = 16  # the U-Net's width at the first level (the cpu profile's was 16; now 24)


RECIPES = {
    "Ho et al. (linear, epsilon, EMA 0.995)": Recipe(),
    "+ cosine schedule": Recipe(schedule="cosine"),
    "+ v-prediction": Recipe(schedule="cosine", prediction="v"),
    "+ min-SNR-5 weights": Recipe(schedule="cosine", prediction="v", min_snr=True),
    "+ learning rate to zero, power EMA": Recipe(schedule="cosine", prediction="v", min_snr=True,
                                                 lr_to_zero=True, ema="power"),
    "v-prediction + linear decay to zero over the last 20 %": Recipe(schedule="cosine", prediction="v",
                                                                     decay_last=0.2),
    "v-prediction, three EMA lengths": Recipe(schedule="cosine", prediction="v", ema="0.995 0.998 0.999"),
    "v-prediction, batch 64": Recipe(schedule="cosine", prediction="v", batch=64),
    "v-prediction, batch 64, 24 channels": Recipe(schedule="cosine", prediction="v", batch=64, channels=24),
}
RECIPES["v-prediction"] = RECIPES["+ v-prediction"]  # the name the ddpm_batch section compares under


def as_eps_model(network, schedule: NoiseSchedule, prediction: str):
    if prediction == "eps":
        return network
    return lambda xt, t: predict_eps_from_v(schedule, xt, t, network(xt, t))


def train_and_score(recipe: Recipe, data, score, steps, evaluate_every, bf16, minutes=None):
    """Train ``steps`` steps of REFERENCE_BATCH images' worth (more, smaller steps for a smaller batch:
    the same images, so about the same time), scoring every ``evaluate_every`` such steps, and at the
    end; or stop, scored, once ``minutes`` of training have passed."""
    batch = recipe.batch
    steps, evaluate_every = (n * REFERENCE_BATCH // batch for n in (steps, evaluate_every))
    torch.manual_seed(0)
    model = UNet(UNetConfig(channels=recipe.channels))
    schedule = NoiseSchedule(kind=recipe.schedule)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    warmup = 200

    def learning_rate(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup)
        if recipe.decay_last:
            return ramp * decay_to_zero(step / steps, recipe.decay_last)
        if not recipe.lr_to_zero or step < warmup:
            return ramp
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    emas = ({"power": power_ema(model)} if recipe.ema == "power" else
            {decay: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
             for decay in recipe.ema.split()})
    generator = torch.Generator().manual_seed(1)
    curve, seconds, losses = [], 0.0, []
    for step in range(steps):
        started = time.perf_counter()
        x0 = data[torch.randint(len(data), (batch,), generator=generator)]
        t = torch.randint(1, schedule.T + 1, (batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        target = noise if recipe.prediction == "eps" else v_target(schedule, x0, t, noise)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            output = model(q_sample(schedule, x0, t, noise), t)
        per_example = mean_flat((target - output.float()) ** 2)
        if recipe.min_snr:
            per_example = per_example * min_snr_weight(schedule, t, 5.0, recipe.prediction)
        loss = per_example.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        for ema in emas.values():
            ema.update_parameters(model)
        seconds += time.perf_counter() - started
        losses.append(loss.item())
        out_of_time = minutes is not None and seconds >= 60 * minutes
        if (step + 1) % evaluate_every == 0 or step + 1 == steps or out_of_time:
            scores = {decay: score(as_eps_model(ema.module.eval(), schedule, recipe.prediction),
                                   schedule, bf16) for decay, ema in emas.items()}
            fids = {decay: round(fid, 3) for decay, (fid, _) in scores.items()}
            point = {"step": step + 1, "train_minutes": round(seconds / 60, 2),
                     "fid": next(iter(fids.values())),  # the first average's
                     "legible": round(next(iter(scores.values()))[1], 4),
                     "loss_last_100": round(sum(losses[-100:]) / len(losses[-100:]), 5)}
            if len(fids) > 1:
                point["fid_by_ema"] = fids
            curve.append(point)
            print(f"    step {step + 1:5d}  {seconds / 60:5.1f} min  FID {fids}  "
                  f"legible {point['legible']:.3f}", flush=True)
        if out_of_time:
            break
    return curve


def scoring(section: dict) -> tuple:
    """What makes two sections' FIDs comparable: the classifier, the sample count and the precision."""
    return section.get("classifier_sha256"), section.get("n_fid"), section.get("bf16")


def score_calls(schedule: str) -> int:
    """The network calls per sample of this script's FIDs on ``schedule``: the steps of ``SCORE_STEPS``
    left on its log-SNR grid (before that grid dropped its repeats, the cosine schedule's kept 17)."""
    return len(logsnr_timesteps(NoiseSchedule(kind=schedule), SCORE_STEPS))


def earlier_curves(stored: dict, this_scoring: tuple, compare: list[str], add_to: str | None = None,
                   only: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """From the stored benchmark sections, the curves named ``SECTION/NAME`` in ``compare`` (to draw
    beside this run's), and with ``add_to`` that section's recipes other than ``only`` (to keep beside
    them); each must have been scored as this run is (``scoring``, and each curve at the network calls
    this run makes on its schedule), or the comparison would mislead."""
    def same_calls(section_name: str, name: str, result: dict, why: str) -> dict:
        now, then = score_calls(result["recipe"]["schedule"]), result.get("network_calls")
        if then != now:
            told = f"{then} network calls per sample" if then else "network calls it did not record"
            raise SystemExit(f"{why}: {section_name}/{name} was scored with {told}, this run scores its "
                             f"schedule with {now}; measure it again (--only) rather than compare")
        return result

    def alike(section_name: str, why: str) -> dict:
        if section_name not in stored:
            raise SystemExit(f"{why}: results/benchmarks.json has no section {section_name!r}; stored: "
                             f"{', '.join(sorted(stored)) or 'none'}")
        section = stored[section_name]
        if scoring(section) != this_scoring:
            def told(values: tuple) -> str:
                return "classifier {:.12}, N = {}, bf16 {}".format(*(str(v) for v in values))
            raise SystemExit(f"{why}: section {section_name!r} was scored with {told(scoring(section))}, "
                             f"this run with {told(this_scoring)}; match them (--n-fid, --bf16) "
                             "or leave it out")
        return section

    compared = {}
    for reference in compare:
        section_name, slash, name = reference.partition("/")
        recipes = alike(section_name, f"--compare {reference}")["recipes"]
        if not slash or name not in recipes:
            raise SystemExit(f"--compare {reference}: name a curve as SECTION/NAME; {section_name!r} "
                             f"stores {', '.join(sorted(recipes))}")
        compared[f"{name} ({section_name})"] = same_calls(section_name, name, recipes[name],
                                                          f"--compare {reference}")
    kept = {}
    if add_to is not None:
        stored_recipes = alike(add_to, "--add")["recipes"]
        kept = {name: same_calls(add_to, name, result, "--add") for name, result in stored_recipes.items()
                if name not in only}
    return compared, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=at_least_one, default=1500)
    parser.add_argument("--evaluate-every", type=at_least_one, default=500)
    parser.add_argument("--n-fid", type=at_least_one, default=1000)
    parser.add_argument("--bf16", action="store_true",
                        help="train and sample under bf16 autocast (where the CPU has bf16 instructions)")
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), metavar="NAME",
                        help="measure only these recipes (default: all)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop each recipe after this many minutes of training (scored there)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="SECTION/NAME",
                        help="also draw these curves stored by an earlier run (scored the same way only)")
    parser.add_argument("--add", action="store_true",
                        help="keep the section's stored recipes (same classifier, N and precision)")
    parser.add_argument("--section", default="ddpm_recipes",
                        help="the entry of results/benchmarks.json (and results/NAME.png) to write")
    args = parser.parse_args()
    if args.bf16 and not native_bf16("cpu"):
        print("--bf16: this CPU has no bfloat16 instructions, so the U-Net computes in float32 under the "
              "autocast (genmodels.unet.UNet); the section records bf16 false")
        args.bf16 = False
    path = ROOT / "results" / "benchmarks.json"
    stored_sections = json.loads(path.read_text()) if path.exists() else {}
    if not re.fullmatch(r"[a-z0-9_]+", args.section):
        parser.error(f"--section {args.section!r}: a name of lower-case letters, digits and _ (it also names "
                     "results/NAME.png)")
    if args.section in stored_sections and "recipes" not in stored_sections[args.section]:
        parser.error(f"--section {args.section}: results/benchmarks.json holds another benchmark's section "
                     "of that name (no recipes in it); choose a new name")
    classifier_sha256 = file_sha256(ROOT / "checkpoints" / "mnist-classifier.pt")
    # checked before any training: curves of earlier runs to draw beside these, and with --add the
    # section's stored recipes, which this run's join
    compared, kept = earlier_curves(stored_sections,
                                    (classifier_sha256, args.n_fid, args.bf16), args.compare,
                                    args.section if args.add else None, args.only or ())
    data = load_mnist(train=True).data.float().div(127.5).sub(1)[:, None]  # (60000, 1, 28, 28) in [-1, 1]
    classifier, _ = load_classifier(ROOT / "checkpoints" / "mnist-classifier.pt")
    test = load_mnist(train=False).data
    reference = FeatureStatistics(classifier.config.feature_dim).update(extract_features(classifier, test))

    def fid_of(images_uint8: torch.Tensor) -> float:
        statistics = FeatureStatistics(classifier.config.feature_dim).update(
            extract_features(classifier, images_uint8))
        return frechet_distance(reference.mean, reference.covariance, statistics.mean, statistics.covariance)

    @torch.no_grad()
    def score(eps_model, schedule, bf16) -> tuple[float, float]:
        """FID of N samples, and the share of them the classifier calls a digit with confidence > 0.9."""
        generator, images = torch.Generator().manual_seed(123), []
        for start in range(0, args.n_fid, 250):
            shape = (min(250, args.n_fid - start), 1, 28, 28)
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                x = dpm_solver_2m_sample(eps_model, schedule, shape, steps=SCORE_STEPS, generator=generator,
                                         clip_x0=True)
            images.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        images = torch.cat(images)
        return fid_of(images), legible_share(classifier, images)

    floor = fid_of(load_mnist(train=True).data[: args.n_fid])
    print(f"{hardware('cpu')}; FID floor (N = {args.n_fid} real training images): {floor:.3f}", flush=True)
    results = {}
    for name, recipe in RECIPES.items():
        if args.only and name not in args.only:
            continue
        print(f"  {name}", flush=True)
        curve = train_and_score(recipe, data, score, args.steps, args.evaluate_every, args.bf16, args.minutes)
        results[name] = {"recipe": asdict(recipe), "curve": curve,
                         "network_calls": score_calls(recipe.schedule), "commit": git_commit(),
                         "modified_code": modified_code(),
                         "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results = {**kept, **results}

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, result in [*results.items(), *compared.items()]:
        curve = result["curve"]
        minutes = [p["train_minutes"] for p in curve]
        for decay in curve[0].get("fid_by_ema", {None: None}):
            fids = [p["fid_by_ema"][decay] if decay else p["fid"] for p in curve]
            ax.plot(minutes, fids, "o-" if name in results else "s--",
                    label=f"{name}: EMA {decay}" if decay else name)
    ax.axhline(floor, color="gray", ls="--", label=f"real images, N = {args.n_fid}")
    ax.set_yscale("log")
    ax.set_xlabel(f"training minutes ({hardware('cpu')})")
    ax.set_ylabel("FID (classifier features), DPM-Solver++ 20 steps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "results" / f"{args.section}.png", dpi=120)

    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[args.section] = {
        "hardware": hardware("cpu"), "torch": torch.__version__, "commit": git_commit(),
        "modified_code": modified_code(), "classifier_sha256": classifier_sha256,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "steps": args.steps,
        "batch": REFERENCE_BATCH, "bf16": args.bf16, "n_fid": args.n_fid, "fid_floor": round(floor, 3),
        "sampler": "DPM-Solver++(2M) in 20 steps (each recipe's network_calls), x0 clipped to [-1, 1]",
        "recipes": results,
        **({"minutes": args.minutes} if args.minutes else {}),
        **({"compared_with": args.compare} if args.compare else {}),
    }
    write_json(path, stored)
    print(f"written to {path} ({args.section}) and results/{args.section}.png")


if __name__ == "__main__":
    main()
