"""Figures the chapters share: image grids, 2-D densities with their score fields, graphical
models, and gluing figures and numbers into the chapter pages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.animation import Animation
from matplotlib.axes import Axes
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from torchvision.utils import make_grid

__all__ = ["animation_html", "density_and_score", "glue", "graphical_model", "image_grid", "show_images"]


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Tile images (B, 1, H, W) or (B, H, W), uint8 or with values in [0, 1], into one (H', W') array."""
    images = torch.as_tensor(images).detach().cpu()
    if images.numel() == 0:
        raise ValueError(f"no images to tile: got an empty batch of shape {tuple(images.shape)}")
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if images.ndim == 3:
        images = images[:, None]  # (B, H, W) -> (B, 1, H, W)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected grey images (B, 1, H, W) or (B, H, W), got {tuple(images.shape)}")
    if images.isnan().any():
        raise ValueError(f"{int(images.isnan().flatten(1).any(1).sum())} of {len(images)} images hold NaN "
                         "pixels, which would be drawn as blank tiles: the model or sampler that made them "
                         "diverged")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"image values must lie in [0, 1], got [{images.min():.3g}, {images.max():.3g}]; "
            "map them there first (e.g. (x + 1) / 2 for data in [-1, 1])"
        )
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=0.3)  # (3, H', W'): grey, repeated
    return grid[0].numpy()


def show_images(
    images: torch.Tensor, nrow: int = 8, title: str | None = None, ax: Axes | None = None
) -> Axes:
    """Draw :func:`image_grid` of ``images`` on ``ax`` (a new figure if None) in grey, no ticks."""
    if ax is None:
        _, ax = plt.subplots(figsize=(nrow * 0.6, max(1, int(np.ceil(len(images) / nrow))) * 0.6))
    ax.imshow(image_grid(images, nrow=nrow), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _evaluate(function: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """``function`` at float64 ``points``, as a float64 CPU tensor; a network (an ``nn.Module``) gets
    them in its weights' dtype and on their device, since float32 weights refuse float64 inputs."""
    weight = next(iter(function.parameters()), None) if isinstance(function, torch.nn.Module) else None
    value = function(points if weight is None else points.to(weight))
    return value.detach().cpu().double()


def density_and_score(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    limits: tuple[float, float] = (-3.0, 3.0),
    resolution: int = 200,
    arrows: int = 20,
    ax: Axes | None = None,
) -> Axes:
    """Shade p(x) = exp(log_prob(x)) on a square grid and, if given, draw the score field as arrows.

    Arrow lengths are normalized per arrow (the direction is what the picture teaches; the score's
    magnitude grows without bound in the tails).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    lo, hi = limits
    axis = torch.linspace(lo, hi, resolution, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # (R*R, 2)
    density = _evaluate(log_prob, points).exp().reshape(resolution, resolution)
    ax.imshow(density.numpy(), origin="lower", extent=(lo, hi, lo, hi), cmap="Blues")
    if score is not None:
        coarse = torch.linspace(lo, hi, arrows, dtype=torch.float64)
        cx, cy = torch.meshgrid(coarse, coarse, indexing="xy")
        grid = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)
        field = _evaluate(score, grid)
        field = field / field.norm(dim=1, keepdim=True).clamp_min(1e-12)
        ax.quiver(grid[:, 0], grid[:, 1], field[:, 0], field[:, 1], color="tab:red", alpha=0.7,
                  angles="xy", scale=arrows * 1.2, width=0.004)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    return ax


def graphical_model(
    nodes: dict[str, tuple[float, float, str]],
    edges: list[tuple[str, str, dict[str, Any]]],
    plates: list[tuple[tuple[float, float, float, float], str]] = (),
    ax: Axes | None = None,
    radius: float = 0.32,
) -> Axes:
    """Draw a directed graphical model.

    ``nodes`` maps a label (TeX allowed) to ``(x, y, kind)``: kind "observed" (a shaded circle),
    "latent" (an open circle), "parameter" (a small dot with the label beside it) or "text" (the
    label alone, e.g. an ellipsis). ``edges`` lists ``(tail, head, style)``, an arrow from node to
    node; ``style`` may set ``linestyle`` ("--" for an inference or fixed process), ``color``,
    ``bend`` (the arc's curvature: positive bows to the right of the direction of travel, negative
    to the left) and ``label`` (written beside the arc's middle).
    ``plates`` lists ``((x0, y0, x1, y1), label)``: a box around nodes repeated ``label`` times.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 2.5))
    kinds = {"observed", "latent", "parameter", "text"}
    patches = {}
    for label, (x, y, kind) in nodes.items():
        if kind not in kinds:
            raise ValueError(f"node {label!r}: kind must be one of {sorted(kinds)}, not {kind!r}")
        if kind in ("observed", "latent"):
            patches[label] = Circle((x, y), radius, facecolor="0.82" if kind == "observed" else "white",
                                    edgecolor="black", linewidth=1.2, zorder=2)
            ax.add_patch(patches[label])
            ax.text(x, y, label, ha="center", va="center", fontsize=12, zorder=3)
        elif kind == "parameter":
            patches[label] = Circle((x, y), radius / 5, color="black", zorder=2)
            ax.add_patch(patches[label])
            ax.text(x, y + 1.8 * radius / 5, label, ha="center", va="bottom", fontsize=12)
        else:
            ax.text(x, y, label, ha="center", va="center", fontsize=14)
    for tail, head, style in edges:
        missing = [name for name in (tail, head) if name not in nodes]
        if missing:
            raise ValueError(f"edge {tail!r} -> {head!r}: no node {missing[0]!r}; nodes: {list(nodes)}")
        bend = style.get("bend", 0.0)
        arrow = FancyArrowPatch(
            nodes[tail][:2], nodes[head][:2], patchA=patches.get(tail), patchB=patches.get(head),
            arrowstyle="-|>", mutation_scale=14, connectionstyle=f"arc3,rad={bend}",
            linestyle=style.get("linestyle", "-"), color=style.get("color", "black"), linewidth=1.2,
            shrinkA=2 if tail in patches else 12, shrinkB=2 if head in patches else 12, zorder=1)
        ax.add_patch(arrow)
        if "label" in style:
            (xa, ya), (xb, yb) = nodes[tail][:2], nodes[head][:2]
            # the middle of an arc3 curve lies bend * (its chord turned by -90 degrees) / 2 away
            mx, my = (xa + xb) / 2 + bend * (yb - ya) / 2, (ya + yb) / 2 - bend * (xb - xa) / 2
            side = 1 if -bend * (xb - xa) >= 0 else -1
            gap = 0.12 if bend else radius + 0.12  # a straight arrow's label clears the circles
            ax.text(mx, my + side * gap, style["label"], ha="center", va="bottom" if side > 0 else "top",
                    fontsize=10, color=style.get("color", "black"))
    for (x0, y0, x1, y1), label in plates:
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0.02",
                                    facecolor="none", edgecolor="black", linewidth=1.0))
        ax.text(x1 - 0.08, y0 + 0.08, label, ha="right", va="bottom", fontsize=11)
    xs = [x for x, _, _ in nodes.values()] + [c for (a, _, b, _), _ in plates for c in (a, b)]
    ys = [y for _, y, _ in nodes.values()] + [c for (_, a, _, b), _ in plates for c in (a, b)]
    margin = 2.5 * radius
    ax.set_xlim(min(xs) - margin, max(xs) + margin)
    ax.set_ylim(min(ys) - margin, max(ys) + margin)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return ax


# matplotlib's JavaScript player draws its buttons with Font Awesome icons, fetched from a CDN;
# plain characters need no network.
_BUTTON_GLYPHS = {
    "fa fa-fast-backward": "⏮", "fa fa-step-backward": "⏴|", "fa fa-play fa-flip-horizontal": "◀",
    "fa fa-pause": "❚❚", "fa fa-play": "▶", "fa fa-step-forward": "|⏵", "fa fa-fast-forward": "⏭",
    "fa fa-minus": "−", "fa fa-plus": "+",
}


def animation_html(animation: Animation, fps: int = 4) -> str:
    """The animation as a self-contained HTML player (frames embedded as images), with no request to
    the network: matplotlib's ``to_jshtml`` without its Font Awesome stylesheet."""
    html = animation.to_jshtml(fps=fps, default_mode="once")
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", html)
    return re.sub(r'<i class="(fa [^"]*)"></i>',
                  lambda match: f"<span>{_BUTTON_GLYPHS.get(match.group(1), '·')}</span>", html)


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` (a figure, a number's text, HTML) under ``name`` for the book's chapter pages
    (myst-nb's ``glue``); where myst-nb is not installed, as on Colab, there is no page to feed and
    nothing happens. Unlike myst-nb's, ``display`` defaults to False: the notebook shows the value
    where it is computed, the page where it is discussed."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=display)
