"""The crossover for networks: from a sweep's rows to U-Net capacity* versus training-set size N.

The GMM laboratory (jaxmem.experiments.gmm_crossover) finds that the capacity M* at which a trained mixture
starts memorising grows linearly in N. This module asks the same of U-Nets: over a sweep of
trained networks (configs/sweeps/unet_crossover_*.py: training-set size N x network width),
for each N it finds the capacity at which the memorisation rate (the 1/3 nearest-neighbour
test, summary.json "memorization_rate") first reaches a threshold (default 0.5), fits
capacity* = a N + b and capacity* = a0 N (through the origin), and draws the result beside
the GMM laboratory's M* versus N.

Capacity is a column of the sweep's rows, by default "parameters" (the U-Net's parameter
count); the onset is interpolated linearly in log(capacity), because widths grow
geometrically. Sweep hook: a sweep file sets ANALYSIS = "jaxmem.experiments.unet_crossover:analyze"
(options in ANALYSIS_OPTIONS) and jaxmem.sweep.aggregate calls `analyze(rows, root, **options)`,
which writes into the sweep root
  capacity_crossover.csv / .md   one row per N: capacity*, its bracketing runs, or the reason
                                 there is none; the .md adds the fits
  capacity_crossover.json        the fits and the GMM reference
  capacity_crossover.png         left: runs (N, capacity) coloured by memorisation rate,
                                 capacity* and the fits; right: the GMM laboratory's M* vs N
  memorization_vs_capacity.png   memorisation rate versus capacity, one line per N
and returns the Markdown lines report.md embeds (figures by relative path).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from jaxmem import io, noise, theory
from jaxmem.validation import require

THRESHOLD = 0.5
# The GMM laboratory's time grid (jaxmem.noise.vp_times' defaults): 26 VP times in [0.001, 0.999].
GMM_TIMES = noise.vp_times()
GMM_WEIGHTING, GMM_VARIANCE = "x0", 1.0
# Column pairs (N, M*) of the GMM tables: a crossover sweep's results.csv, a crossover run's crossover.csv.
GMM_COLUMNS = (("rows.0.N", "rows.0.M_pt"), ("N", "M_pt"))
# Where the GMM laboratory's M* versus N usually is (configs/sweeps/gmm_crossover_n.py, `make demo`): under
# runs/ of the repository that holds this package, whatever the working directory.
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GMM_TABLES = tuple(os.path.join(_REPOSITORY, "runs", name) for name in ("crossover_n/results.csv", "demo/crossover.csv"))
ANALYSIS = "jaxmem.experiments.unet_crossover:analyze"  # the sweep hook, for a sweep file's ANALYSIS
TABLE_COLUMNS = ("N", "capacity_star", "capacity_below", "rate_below", "capacity_above", "rate_above",
                 "runs", "reason")
# summary.json's sample quality (launch/edm_training.py with eval.quality), flattened by the sweep's aggregate:
# table column -> row column.
QUALITY_COLUMNS = {"fid_train": "quality.train.fid", "fid_heldout": "quality.heldout.fid",
                   "kid_heldout": "quality.heldout.kid", "precision_heldout": "quality.heldout.precision",
                   "recall_heldout": "quality.heldout.recall"}


def capacity_curves(rows: Sequence[Mapping], n: str = "num_train", capacity: str = "parameters",
                    rate: str = "memorization_rate") -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """Per training-set size, the memorisation rate as a function of capacity.

    rows: sweep rows (jaxmem.sweep.aggregate); only rows with status 'done' (or no status)
    and numeric `n`, `capacity`, `rate` cells count. Returns {N: (capacities [J] float64,
    increasing, rates [J] in [0, 1], runs used)}; runs with equal capacity are averaged.
    Raises ValueError when no finished row has the three columns (naming them and the
    columns there are) or a rate lies outside [0, 1].
    """
    done = [r for r in rows if r.get("status", "done") == "done"]
    usable = [r for r in done if all(math.isfinite(io.as_float(r.get(c))) for c in (n, capacity, rate))]
    if not usable:
        present = sorted({k for r in done for k in r})
        raise ValueError(f"no finished sweep run has numeric columns n={n!r}, capacity={capacity!r} and "
                         f"rate={rate!r} ({len(done)} finished of {len(rows)} runs); columns there: "
                         f"{', '.join(present) or 'none'}")
    groups: dict[int, dict[float, list[float]]] = {}
    for row in usable:
        value = io.as_float(row[rate])
        require(0.0 <= value <= 1.0, f"{rate} of run {row.get('run', '?')}", value, "a rate in [0, 1]")
        require(io.as_float(row[capacity]) > 0, f"{capacity} of run {row.get('run', '?')}", row[capacity],
                "a capacity > 0")
        groups.setdefault(int(io.as_float(row[n])), {}).setdefault(io.as_float(row[capacity]), []).append(value)
    curves = {}
    for size in sorted(groups):
        caps = sorted(groups[size])
        curves[size] = (np.array(caps, np.float64), np.array([np.mean(groups[size][c]) for c in caps]),
                        sum(len(v) for v in groups[size].values()))
    return curves


def onset_capacity(capacities, rates, threshold: float = THRESHOLD) -> tuple[float, str]:
    """The capacity at which the memorisation rate first reaches `threshold`, and why if none.

    capacities: [J] increasing, > 0 (e.g. parameter counts); rates: [J] in [0, 1]. With j the
    first index where rates[j] >= threshold, the onset is interpolated linearly in
    log(capacity) between runs j-1 and j:
        log c* = log c[j-1] + (log c[j] - log c[j-1]) (threshold - r[j-1]) / (r[j] - r[j-1]).
    Returns (c*, "") or (NaN, reason) when the rate never reaches the threshold or already
    does at the smallest capacity (the onset lies outside the swept capacities).
    """
    capacities, rates = np.asarray(capacities, np.float64), np.asarray(rates, np.float64)
    require(0.0 < threshold <= 1.0, "threshold", threshold, "a rate in (0, 1]")
    require(capacities.ndim == 1 and capacities.shape == rates.shape and capacities.size >= 1,
            "capacities, rates", (capacities.shape, rates.shape), "two 1-D arrays of one length >= 1")
    require(bool(np.all(capacities > 0)) and bool(np.all(np.diff(capacities) > 0)), "capacities",
            capacities.tolist(), "positive and strictly increasing")
    require(bool(np.all((rates >= 0) & (rates <= 1))), "rates", rates.tolist(), "rates in [0, 1]")
    above = np.nonzero(rates >= threshold)[0]
    if above.size == 0:
        return float("nan"), (f"never reached {threshold:g}: rate {rates[-1]:.3g} at the largest capacity "
                               f"{capacities[-1]:.4g}")
    j = int(above[0])
    if j == 0:
        return float("nan"), (f"memorising already at the smallest capacity {capacities[0]:.4g} "
                              f"(rate {rates[0]:.3g} >= {threshold:g})")
    return float(np.exp(theory.first_crossing(np.log(capacities), rates, threshold))), ""


def gmm_reference(paths: Sequence[str] | str = (), n_max: float = 1.0) -> dict:
    """The GMM laboratory's M* versus N for the right-hand panel.

    paths: candidate tables, the first that exists is used: a GMM crossover sweep's
    results.csv (columns rows.0.N, rows.0.M_pt) or a crossover run's crossover.csv (N, M_pt);
    relative paths are taken from the current directory. Without one, the closed-form line
    M* = f N of jaxmem.theory.formula_crossover_fraction on the laboratory's 26-time grid with
    x0 weighting and s0^2 = 1, over N in [0, n_max]. Returns {source, label, N [P], M_star [P],
    fit}.
    """
    for path in [paths] if isinstance(paths, str) else list(paths):
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            table = list(csv.DictReader(f))
        header = set(table[0]) if table else set()
        columns = next(((a, b) for a, b in GMM_COLUMNS if {a, b} <= header), None)
        if columns is None:
            raise ValueError(f"GMM table {path} has none of the column pairs "
                             f"{', '.join(f'({a}, {b})' for a, b in GMM_COLUMNS)}; its columns: "
                             f"{', '.join(sorted(header)) or 'none'}")
        rows = [r for r in table if r.get("status", "done") == "done"]
        n = np.array([io.as_float(r[columns[0]]) for r in rows])
        m = np.array([io.as_float(r[columns[1]]) for r in rows])
        return dict(source=os.path.abspath(path), label=f"measured M_pt ({os.path.basename(path)})",
                    N=n.tolist(), M_star=m.tolist(), fit=theory.linear_fits(n, m))
    fraction = theory.formula_crossover_fraction(GMM_TIMES, GMM_WEIGHTING, GMM_VARIANCE)
    n = np.linspace(0.0, max(float(n_max), 1.0), 2)
    return dict(source="closed form", label=(f"closed form M* = {fraction:.3f} N ({GMM_WEIGHTING} weighting, "
                                             f"s0^2 = {GMM_VARIANCE:g}, 26 VP times)"),
                N=n.tolist(), M_star=(fraction * n).tolist(),
                fit=dict(slope=fraction, intercept=0.0, r2=1.0, slope_origin=fraction, r2_origin=1.0, points=0))


def crossover_table(curves: Mapping, threshold: float = THRESHOLD) -> list[dict]:
    """One row per N (TABLE_COLUMNS): capacity*, the bracketing runs and their rates, or the reason."""
    table = []
    for size, (caps, rates, runs) in curves.items():
        value, reason = onset_capacity(caps, rates, threshold)
        row = dict(N=size, capacity_star=value, capacity_below=float("nan"), rate_below=float("nan"),
                   capacity_above=float("nan"), rate_above=float("nan"), runs=runs, reason=reason)
        if not reason:
            j = int(np.nonzero(rates >= threshold)[0][0])
            row.update(capacity_below=caps[j - 1], rate_below=rates[j - 1], capacity_above=caps[j],
                       rate_above=rates[j])
        table.append(row)
    return table


def quality_table(rows: Sequence[Mapping], n: str = "num_train", capacity: str = "parameters",
                  rate: str = "memorization_rate") -> list[dict]:
    """Sample quality beside memorisation, one row per finished run that has quality columns
    (QUALITY_COLUMNS; NaN where a run lacks one), sorted by (N, capacity); [] when no run has any."""
    done = [r for r in rows if r.get("status", "done") == "done"
            and any(column in r for column in QUALITY_COLUMNS.values())]
    table = [{"N": int(io.as_float(r.get(n))), capacity: io.as_float(r.get(capacity)),
              rate: io.as_float(r.get(rate)), **{k: io.as_float(r.get(c)) for k, c in QUALITY_COLUMNS.items()}}
             for r in done if math.isfinite(io.as_float(r.get(n)))]
    return sorted(table, key=lambda row: (row["N"], row[capacity]))


def sweep_axes(train_sizes: Sequence[int], widths: Sequence[int], epochs: int | None = None,
               min_images: int = 0, embed_per_channel: int = 4) -> list[dict]:
    """The axes of a capacity sweep (jaxmem.sweep): training-set size N x width.

    Width: model.channels zipped with model.embed_dim = embed_per_channel x channels. N:
    data.num_train, zipped with training.total_images = max(epochs x N, min_images) when
    `epochs` is given (the same passes over the data for every N, as Gu et al. scale training
    with N, with a floor of optimizer steps for the smallest sets); otherwise every run keeps the
    base config's total_images (fewer epochs at larger N, which confounds capacity with
    training length).
    """
    require(len(train_sizes) >= 1 and len(widths) >= 1, "train_sizes, widths", (train_sizes, widths),
            "non-empty lists")
    require(epochs is None or epochs >= 1, "epochs", epochs, "None (fixed images) or an integer >= 1")
    require(min_images >= 0, "min_images", min_images, "an integer >= 0")
    sizes = {"data.num_train": list(train_sizes)}
    if epochs is not None:
        sizes["training.total_images"] = [max(int(epochs * n), int(min_images)) for n in train_sizes]
    return [sizes, {"model.channels": list(widths), "model.embed_dim": [embed_per_channel * w for w in widths]}]


def analyze(rows: Sequence[Mapping], root: str, n: str = "num_train", capacity: str = "parameters",
            rate: str = "memorization_rate", threshold: float = THRESHOLD, gmm_results: Sequence[str] | str = GMM_TABLES,
            data_dim: int | None = None) -> list[str]:
    """The sweep hook: writes the capacity* table, fits and figures into `root`; returns report lines.

    rows: jaxmem.sweep.aggregate's rows; n, capacity, rate: their column names; gmm_results:
    candidate GMM tables for the right panel (gmm_reference); data_dim: pixels x channels of
    an image, to state the slope per data dimension (the GMM's M* counts components of d
    numbers each, so a0 / d is comparable with its M*/N).
    """
    from jaxmem.plots import unet_crossover as plots

    curves = capacity_curves(rows, n, capacity, rate)
    table = crossover_table(curves, threshold)
    fit = theory.linear_fits([r["N"] for r in table], [r["capacity_star"] for r in table])
    gmm = gmm_reference(gmm_results, n_max=max(curves))
    io.write_csv(os.path.join(root, "capacity_crossover.csv"), table, TABLE_COLUMNS)
    io.write_json(os.path.join(root, "capacity_crossover.json"), dict(
        threshold=threshold, columns=dict(n=n, capacity=capacity, rate=rate), fit=fit, data_dim=data_dim,
        table=table, gmm=gmm))
    fit_lines = [f"- onset: the {capacity} at which {rate} first reaches {threshold:g}, interpolated "
                 f"linearly in log({capacity}) between the bracketing runs",
                 f"- fit: {capacity}* = {plots.line_text(fit['slope'], fit['intercept'])} (R^2 {fit['r2']:.3f}); "
                 f"through the origin {fit['slope_origin']:.4g} N (R^2 {fit['r2_origin']:.3f}); "
                 f"{fit['points']} of {len(table)} N with an onset"]
    if data_dim and math.isfinite(fit["slope_origin"]):
        fit_lines.append(f"- per data dimension (d = {data_dim}): a0 / d = {fit['slope_origin'] / data_dim:.4g} "
                         f"{capacity} per number in the training set (N d), beside the GMM laboratory's "
                         f"M*/N = {gmm['fit']['slope_origin']:.3f} (through the origin; a component holds d numbers)")
    fit_lines.append(f"- GMM laboratory: {gmm['label']}; slope {gmm['fit']['slope']:.3f} "
                     f"(source: {gmm['source']})")
    io.write_text(os.path.join(root, "capacity_crossover.md"),
                  io.markdown_table(table, TABLE_COLUMNS) + "\n" + "\n".join(fit_lines) + "\n")
    plots.save_capacity_crossover(os.path.join(root, "capacity_crossover.png"), curves, table, fit, gmm,
                                  capacity, rate)
    plots.save_rate_curves(os.path.join(root, "memorization_vs_capacity.png"), curves, threshold, capacity, rate)
    lines = ["## Capacity crossover", "", *fit_lines, "",
             "Also as [capacity_crossover.csv](capacity_crossover.csv) and "
             "[capacity_crossover.json](capacity_crossover.json).", "",
             io.markdown_table(table, TABLE_COLUMNS),
             f"![{capacity}* versus N beside the GMM laboratory's M* versus N](capacity_crossover.png)", "",
             f"![{rate} versus {capacity}, one line per N](memorization_vs_capacity.png)", ""]
    quality = quality_table(rows, n, capacity, rate)
    if quality:
        columns = ("N", capacity, rate, *QUALITY_COLUMNS)
        io.write_csv(os.path.join(root, "quality_vs_capacity.csv"), quality, columns)
        lines += ["## Sample quality beside memorisation", "",
                  "FID of each run's samples against its training subset and against held-out images "
                  "(KID, precision and recall against the held-out ones; summary.json `quality`). Also as "
                  "[quality_vs_capacity.csv](quality_vs_capacity.csv).", "",
                  io.markdown_table(quality, columns)]
    return lines

