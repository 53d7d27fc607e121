"""Sweep aggregation: every run's summary.json and swept values into results.csv / results.md,
report.md (environment, failures, figures), the sweep file's PLOT figure and its analysis.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence

from jaxmem import io
from jaxmem.sweep.execute import FAILED, RUN_FILE, status
from jaxmem.sweep.expand import Run, analysis_function, value_text


def _sweep_runs(root: str, order: Sequence[str] = ()) -> list[tuple[str, dict]]:
    """(workdir, sweep_run.json) of every run folder directly under root: `order` first, then by name."""
    names = [n for n in order if os.path.isfile(os.path.join(root, n, RUN_FILE))]
    names += sorted(n for n in os.listdir(root)
                    if n not in names and os.path.isfile(os.path.join(root, n, RUN_FILE)))
    found = []
    for name in names:
        with open(os.path.join(root, name, RUN_FILE)) as f:
            found.append((os.path.join(root, name), json.load(f)))
    return found


def _environment() -> list[str]:
    import flax
    import jax
    import optax

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return [f"- python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}, "
            f"optax {optax.__version__}",
            f"- devices (as seen by the sweep process): {len(devices)} x {', '.join(kinds)} "
            f"({jax.default_backend()}), {jax.process_count()} process(es)"]


def save_sweep_figure(path: str, rows: Sequence[Mapping], x: str, ys: Sequence[str]) -> str | None:
    """Plots columns `ys` against column `x` over the finished runs (a missing or non-numeric y
    is a gap); None when nothing is numeric."""
    import matplotlib.pyplot as plt

    done = sorted((r for r in rows if r["status"] == "done" and not math.isnan(io.as_float(r.get(x)))),
                  key=lambda r: io.as_float(r[x]))
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    plotted = False
    for y in ys:
        points = [(io.as_float(r[x]), io.as_float(r.get(y))) for r in done]
        if any(not math.isnan(value) for _, value in points):
            axis.plot(*zip(*points), "o-", label=y)
            plotted = True
    if not plotted:
        plt.close(figure)
        return None
    axis.set_xlabel(x)
    axis.legend()
    axis.grid(alpha=0.3)
    return io.save_figure(path, figure)


def aggregate(root: str) -> dict:
    """Gathers every run's summary.json (flattened scalars) and swept values into results.csv,
    results.md and report.md in the sweep root; returns their paths and the rows.

    With sweep.json's PLOT, also results.png; with its analysis, report.md embeds the lines the
    analysis function returns (a failing analysis is reported in report.md, then raised as
    ValueError)."""
    meta_path = os.path.join(root, "sweep.json")
    meta = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
    rows, figures, failures = [], {}, {}
    for workdir, record in _sweep_runs(root, meta.get("runs", ())):
        name = record["name"]
        run = Run(name, record["values"], workdir)
        row = dict(run=name, status=status(run))
        row.update({k: value_text(v) for k, v in record["values"].items()})
        summary_path = os.path.join(workdir, "summary.json")
        if row["status"] == "done" and os.path.isfile(summary_path):
            with open(summary_path) as f:
                row.update({k: v for k, v in io.flatten(json.load(f)).items()
                            if not (isinstance(v, str) and os.path.isabs(v))})  # skip file paths
        if row["status"] == "failed":
            with open(os.path.join(workdir, FAILED)) as f:
                failures[name] = json.load(f)
        figures[name] = sorted(p for p in os.listdir(workdir) if p.endswith(".png"))
        rows.append(row)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    paths = dict(csv=io.write_csv(os.path.join(root, "results.csv"), rows, columns),
                 md=io.write_text(os.path.join(root, "results.md"), io.markdown_table(rows, columns)))

    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "pending")}
    lines = [f"# Sweep report: {os.path.basename(os.path.abspath(root))}", ""]
    if meta:
        lines += [f"- config: `{meta['config']}`, launcher: `{meta['launcher']}`",
                  f"- swept fields: {', '.join(f'`{f}`' for f in meta['fields']) or 'none'}"]
    lines += [f"- runs: {len(rows)} ({counts['done']} done, {counts['failed']} failed, "
              f"{counts['pending']} pending)", *_environment(), "", "## Results", "",
              "Also as [results.csv](results.csv).", "", io.markdown_table(rows, columns)]
    plot = meta.get("plot")
    if plot and save_sweep_figure(os.path.join(root, "results.png"), rows, plot["x"], plot["y"]):
        paths["figure"] = os.path.join(root, "results.png")
        lines += [f"![{', '.join(plot['y'])} versus {plot['x']}](results.png)", ""]
    analysis, analysis_error = meta.get("analysis"), None
    if analysis:
        try:
            lines += list(analysis_function(analysis["function"])(rows, root, **analysis.get("options", {})))
        except Exception as e:  # the tables and report are still written, then the error is raised
            analysis_error = e
            lines += [f"## Analysis {analysis['function']} failed", "", "```", f"{type(e).__name__}: {e}",
                      "```", ""]
    if failures:
        lines += ["## Failed runs", ""]
        for name, info in failures.items():
            lines += [f"### {name} (exit code {info['exit_code']})", "", "```",
                      info["stderr_tail"].rstrip(), "```", ""]
    if any(figures.values()):
        lines += ["## Figures", ""]
        for name, pngs in figures.items():
            if pngs:
                lines += [f"### {name}", ""] + [f"![{name}/{p}]({name}/{p})" for p in pngs] + [""]
    paths["report"] = io.write_text(os.path.join(root, "report.md"), "\n".join(lines) + "\n")
    if analysis_error is not None:
        raise ValueError(f"analysis {analysis['function']} of {root} failed (results and report.md are "
                         f"written): {type(analysis_error).__name__}: {analysis_error}") from analysis_error
    return dict(paths=paths, rows=rows)


def write_sweep_record(root: str, config_spec: str, launcher: str, runs: Sequence[Run],
                       plot: Mapping | None = None, analysis: Mapping | None = None) -> str:
    """Writes <root>/sweep.json: the config, launcher, swept fields, run names, PLOT spec and
    analysis ({"function": 'module:function', "options": {...}}, see load_sweep_analysis)."""
    fields = list(dict.fromkeys(k for run in runs for k in run.values))
    return io.write_json(os.path.join(root, "sweep.json"), dict(
        config=config_spec, launcher=launcher, fields=fields, runs=[r.name for r in runs],
        plot=dict(plot) if plot else None, analysis=dict(analysis) if analysis else None))
