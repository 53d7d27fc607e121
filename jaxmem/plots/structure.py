"""Figures of the crossover on structured data (jaxmem.experiments.gmm_crossover.structure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from jaxmem import io
from jaxmem.plots import line_text


def save_structure(path: str, table: Sequence[Mapping], fits: Mapping, field: str) -> str:
    """M_pt (mean over seeds, 95% interval) against N, one colour per value of `field`, with the
    closed-form prediction dashed and the measured-loss one dotted; when every value has a single
    N, M_pt / N against the field value instead. table: structure_table rows; fits: {value: theory.linear_fits}."""
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    values = list(dict.fromkeys(r["value"] for r in table))
    sizes = sorted({r["N"] for r in table})
    if len(sizes) == 1:
        x = np.array(values, np.float64)
        y = np.array([r["M_pt_over_N"] for r in table])
        err = np.array([(r["ci95_hi"] - r["ci95_lo"]) / 2 / r["N"] for r in table])
        axis.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o-", capsize=3, label="M_pt / N (95% interval)")
        axis.plot(x, [r["Mstar_formula_x0"] / r["N"] for r in table], "k--", label="closed form (x0)")
        axis.plot(x, [r["Mstar_measured_x0"] / r["N"] for r in table], "k:", label="measured losses (x0)")
        axis.set_xlabel(field)
        axis.set_ylabel("M / N")
        axis.set_title(f"memorisation capacity at N = {sizes[0]} against {field}")
    else:
        for colour, value in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3, values):
            mine = [r for r in table if r["value"] == value]
            n = np.array([r["N"] for r in mine], np.float64)
            half = np.nan_to_num([(r["ci95_hi"] - r["ci95_lo"]) / 2 for r in mine])
            fit = fits[value]
            line = line_text(fit["slope"], fit["intercept"], ".3f", ".1f")
            axis.errorbar(n, [r["M_pt"] for r in mine], yerr=half, fmt="o", color=colour, capsize=3,
                          label=f"{field.split('.')[-1]} = {value}: M_pt = {line}")
            axis.plot(n, [r["Mstar_formula_x0"] for r in mine], "--", color=colour, alpha=0.7)
            axis.plot(n, [r["Mstar_measured_x0"] for r in mine], ":", color=colour, alpha=0.7)
        axis.plot([], [], "k--", label="closed form (x0)")
        axis.plot([], [], "k:", label="measured losses (x0)")
        axis.set_xlabel("N (distinct training points)")
        axis.set_ylabel("M_pt (components)")
        axis.set_title(f"memorisation capacity against N by {field}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return io.save_figure(path, figure)


MIN_RATIO = 0.05  # models with fewer memorised samples than this share say little about where they land


def save_multiplicity(path: str, table: Sequence[Mapping], field: str) -> str:
    """Per value of `field` (one panel each): the rate per point of each multiplicity relative to
    the model's rate over all points, against M/N (models in bins of 0.1 in M/N, those with a
    memorisation ratio >= MIN_RATIO, averaged); 1 = no preference."""
    values = list(dict.fromkeys(r["value"] for r in table))
    figure, axes = plt.subplots(1, len(values), figsize=(5.2 * len(values), 4.2), squeeze=False)
    for axis, value in zip(axes[0], values):
        mine = [r for r in table if r["value"] == value]
        for m in sorted({r["multiplicity"] for r in mine}):
            points = {}
            for r in mine:
                if r["multiplicity"] == m and r["ratio"] >= MIN_RATIO:
                    points.setdefault(round(r["M_over_N"], 1), []).append(r["rate_per_point_relative"])
            x = sorted(points)
            axis.plot(x, [np.mean(points[k]) for k in x], "o-", label=f"stored {m}x")
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.set_xlabel(f"M / N (bins of 0.1; models with ratio >= {MIN_RATIO})")
        axis.set_ylabel("memorisation rate per point / rate over all points")
        axis.set_title(f"{field.split('.')[-1]} = {value}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return io.save_figure(path, figure)
