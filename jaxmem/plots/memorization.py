"""Figures of the memorization experiments on trained networks (jaxmem.experiments.denoiser_swaps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from jaxmem import io
from jaxmem.validation import require
from jaxmem.plots.samples import save_sample_grid


def save_pairs(path: str, samples: np.ndarray, neighbours: np.ndarray, title: str | None = None) -> str:
    """PNG of sample / nearest-training-image pairs: columns alternate sample, neighbour.

    samples, neighbours: [P, H, W, C] in [-1, 1], row p of one matching row p of the other.
    """
    samples, neighbours = np.asarray(samples, np.float32), np.asarray(neighbours, np.float32)
    require(samples.shape == neighbours.shape and samples.ndim == 4 and len(samples) >= 1,
            "samples.shape, neighbours.shape", (samples.shape, neighbours.shape), "equal [P, H, W, C] with P >= 1")
    interleaved = np.stack([samples, neighbours], axis=1).reshape(-1, *samples.shape[1:])
    return save_sample_grid(path, interleaved, columns=min(8, 2 * len(samples)), title=title)


REGION_SHADES = {"large": "0.86", "medium": "0.91", "small": "0.95"}  # greys: the lines keep the colours
NUDGE = 1.06  # sideways factor in sigma between neighbouring curves' error bars (log axis)


def _shade_regions(axis, regions: Mapping[str, tuple[float, float]], label_top: bool = True) -> None:
    """Grey background bands for the swap regions {name: (sigma_lo, sigma_hi)}, clipped to the
    plotted (log) sigma range and named above the axis. Call after the curves and set_xscale."""
    left, right = axis.get_xlim()
    for name, (lo, hi) in regions.items():
        lo, hi = max(lo, left), min(hi, right)
        if lo >= hi:
            continue
        axis.axvspan(lo, hi, color=REGION_SHADES.get(name, "0.9"), zorder=0, lw=0)
        if label_top:
            axis.text(np.sqrt(lo * hi), 1.0, name, transform=axis.get_xaxis_transform(), ha="center",
                      va="bottom", fontsize=7, color="0.3")
    axis.set_xlim(left, right)


def per_level_figure(path: str, rows: Sequence[Mapping], regions: Mapping[str, tuple[float, float]],
                     title: str = "One denoising step by noise level") -> str:
    """Two panels against sigma (log): memorized fraction of one-step outputs (with its Wilson
    interval as error bars, each curve nudged sideways so the bars stay apart) and the denoising
    MSE. One colour per model; training images solid with filled circles, held-out images dashed
    with open squares; swap regions as named grey bands.

    rows: dicts with model, split, sigma, memorized_fraction, ci_low, ci_high, mse.
    regions: swap regions in sigma for the background.
    """
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 8.0), sharex=True)
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = {model: f"C{i}" for i, model in enumerate(models)}
    curves = list(dict.fromkeys((r["model"], r["split"]) for r in rows))
    for i, (model, split) in enumerate(curves):
        part = sorted((r for r in rows if r["model"] == model and r["split"] == split), key=lambda r: r["sigma"])
        sigma = np.array([r["sigma"] for r in part])
        train = split == "train"
        style = dict(color=colours[model], ls="-" if train else "--", marker="o" if train else "s", ms=4,
                     mfc=colours[model] if train else "white", label=f"{model}, {split} images")
        fraction = np.array([r["memorized_fraction"] for r in part])
        bars = np.stack([fraction - [r["ci_low"] for r in part], np.array([r["ci_high"] for r in part]) - fraction])
        nudged = sigma * NUDGE ** (i - (len(curves) - 1) / 2)
        top.errorbar(nudged, fraction, yerr=bars.clip(0), capsize=2, elinewidth=0.8, **style)
        bottom.plot(sigma, [r["mse"] for r in part], **style)
    for axis in (top, bottom):
        axis.set_xscale("log")
        _shade_regions(axis, regions, label_top=axis is top)
        axis.grid(alpha=0.3)
    top.set_title(title, pad=16)
    top.set_ylabel("one-step outputs memorized\n(1/3 nearest-neighbour test; bars: Wilson interval)")
    top.set_ylim(-0.02, 1.02)
    top.legend(fontsize=7, loc="best", framealpha=0.9)
    bottom.set_yscale("log")
    bottom.set_ylabel(r"denoising MSE $|D(x + \sigma z; \sigma) - x|^2$")
    bottom.set_xlabel(r"noise level $\sigma$ (log scale)")
    figure.tight_layout()
    return io.save_figure(path, figure)


def swap_profile_figure(path: str, sigmas: np.ndarray, rates: np.ndarray, low: np.ndarray, high: np.ndarray,
                        base_rate: float, regions: Mapping[str, tuple[float, float]],
                        title: str = "Donor denoiser swapped in at a single step") -> str:
    """Memorization rate of the base model with the donor swapped in at one grid step, by sigma.

    sigmas, rates, low, high: [n] per step (the step's level and the rate with its interval);
    base_rate: the base model alone (horizontal line).
    """
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    line, = axis.plot(sigmas, rates, "o-", ms=3, label="donor at this step only")
    axis.fill_between(sigmas, low, high, color=line.get_color(), alpha=0.15)
    axis.axhline(base_rate, color="k", lw=1, ls=":", label="base alone")
    axis.set_xscale("log")
    _shade_regions(axis, regions)
    axis.set_title(title, pad=16)
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("sigma of the swapped step")
    axis.set_ylabel("memorization rate")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return io.save_figure(path, figure)


def trajectory_figure(path: str, sigmas: np.ndarray, target_coef: np.ndarray, noise_coef: np.ndarray,
                      memorized: np.ndarray) -> str:
    """Mean x* and noise coefficients along the trajectories, memorized vs not, with the ideal
    memorizer a = 1 - sigma / sigma_max, b = sigma.

    sigmas: [T] levels (decreasing, ending in 0); target_coef, noise_coef: [T, S]; memorized: bool [S].
    """
    sigmas = np.asarray(sigmas, np.float64)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    steps = np.arange(len(sigmas))
    for flag, label in ((True, "memorized"), (False, "not memorized")):
        chosen = memorized == flag
        if chosen.any():
            left.plot(steps, target_coef[:, chosen].mean(axis=1), "o-", ms=3, label=f"{label} ({chosen.sum()})")
            # b / sigma on the positive levels (the last latent, at sigma = 0, is the sample)
            right.plot(steps[:-1], noise_coef[:-1, chosen].mean(axis=1) / sigmas[:-1], "o-", ms=3,
                       label=f"{label} ({chosen.sum()})")
    left.plot(steps, 1.0 - sigmas / sigmas[0], "k:", label="ideal memorizer")
    right.plot(steps[:-1], np.ones(len(steps) - 1), "k:", label="ideal memorizer")
    left.set_ylabel("x* coefficient a")
    right.set_ylabel("noise coefficient b / sigma")
    for axis in (left, right):
        axis.set_xlabel("step index i (sigma_i decreasing)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return io.save_figure(path, figure)


def posthoc_ema_figure(path: str, rows: Sequence[Mapping], levels: Sequence[Mapping],
                       title: str = "Memorization against EMA length") -> str:
    """Memorization rate (Wilson interval as error bars) and, when the rows have it, FID against
    sigma_rel for the reconstructed EMA lengths; the trained classic EMA as a star at the
    sigma_rel of its profile (and a dashed vertical line), the raw parameters as a dotted
    horizontal line. With per-level rows, a last panel: the one-step memorized fraction of noised
    training images against sigma, one curve per reconstructed length (darker = longer).

    rows: dicts with row, sigma_rel, rate, ci_low, ci_high (and fid); the row named "trained EMA"
    and the one named "raw parameters" are marked, every other row is a reconstructed length.
    levels: dicts with row, sigma_rel, sigma, memorized_fraction (may be empty).
    """
    special = {"trained EMA", "raw parameters"}
    posthoc = sorted((r for r in rows if r["row"] not in special), key=lambda r: r["sigma_rel"])
    marks = {r["row"]: r for r in rows if r["row"] in special}
    panels = [("rate", "memorization rate (1/3 test)")]
    if all(r.get("fid") is not None for r in rows):
        panels.append(("fid", "FID"))
    figure, axes = plt.subplots(1, len(panels) + bool(levels), figsize=(4.6 * (len(panels) + bool(levels)), 4.0))
    axes = np.atleast_1d(axes)
    x = np.array([r["sigma_rel"] for r in posthoc])
    for axis, (key, label) in zip(axes, panels):
        y = np.array([r[key] for r in posthoc], np.float64)
        if key == "rate":
            bars = np.stack([y - [r["ci_low"] for r in posthoc], np.array([r["ci_high"] for r in posthoc]) - y])
            axis.errorbar(x, y, yerr=bars.clip(0), fmt="o-", ms=4, capsize=2, label="post-hoc EMA")
        else:
            axis.plot(x, y, "o-", ms=4, label="post-hoc EMA")
        if "trained EMA" in marks:
            trained = marks["trained EMA"]
            axis.axvline(trained["sigma_rel"], color="C3", ls="--", lw=0.8)
            yerr = ([[trained["rate"] - trained["ci_low"]], [trained["ci_high"] - trained["rate"]]]
                    if key == "rate" else None)
            axis.errorbar([trained["sigma_rel"]], [trained[key]], yerr=yerr, fmt="*", ms=12, color="C3", capsize=2,
                          label=f"trained EMA (sigma_rel {trained['sigma_rel']:.3g})")
        if "raw parameters" in marks:
            axis.axhline(marks["raw parameters"][key], color="0.4", ls=":", lw=1, label="raw parameters")
        axis.set_xscale("log")
        axis.set_xlabel("EMA length sigma_rel (log scale)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    if levels:
        axis = axes[-1]
        colours = plt.get_cmap("viridis")
        for i, r in enumerate(posthoc):
            part = sorted((v for v in levels if v["row"] == r["row"]), key=lambda v: v["sigma"])
            axis.plot([v["sigma"] for v in part], [v["memorized_fraction"] for v in part], "-", lw=1,
                      color=colours(i / max(1, len(posthoc) - 1)), label=f"{r['sigma_rel']:g}")
        axis.set_xscale("log")
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("noise level sigma (log scale)")
        axis.set_ylabel("one-step outputs memorized (training images)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, title="sigma_rel", title_fontsize=7, ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    return io.save_figure(path, figure)
