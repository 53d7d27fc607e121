"""Flag-driven sweeps: expand a grid over config fields into runs, execute them, aggregate results.

    python launch/sweep.py --config=configs/crossover.py:demo --sweep=configs/sweeps/crossover_n.py \
        [--sweep.training.steps=1000,2000] [--config.a.b=value] --workdir=runs/sweep [--dry_run]

A sweep is a list of axes; the runs are the Cartesian product of the axes. An axis is a dict
from config field paths to lists of values: with one field it is a grid axis, with several
fields the lists are walked together (zipped; equal lengths). A sweep file defines
`get_sweep()` returning that list, e.g. `[{"data.train_sizes": [(8,), (16,)]},
{"training.steps": [10, 20], "training.chunk_steps": [5, 10]}]` gives 2 x 2 runs. A sweep
file may also define `PLOT = {"x": column, "y": [columns]}` (columns of results.csv): the
aggregated figure results.png, one line per y column against x over the finished runs; and
`ANALYSIS = "package.module:function"` with optional `ANALYSIS_OPTIONS = {...}` (JSON values):
aggregate() calls function(rows, root, **options) with the results rows and the sweep root; it
writes its own files into the root (through jaxmem.io) and returns Markdown lines that
report.md appends (figures linked by paths relative to the root), e.g.
jaxmem.capacity_crossover:analyze. PLOT and ANALYSIS are stored in sweep.json, so
`--aggregate_only` redoes them.

Every run gets its own workdir `<root>/<field>=<value>__...` and is launched as a subprocess of
the family's launcher with `--config.<field>=<value>` overrides, so it writes what a single
run writes and resumes from its own checkpoints. Per-run bookkeeping:
  sweep_run.json        the run's name and swept values
  config.json/.txt      the resolved config (written by the run's launcher)
  run.log               stdout and stderr of the latest attempt
  attempts.jsonl        one line per attempt: exit code, seconds
  DONE                  written atomically after a zero exit; a rerun skips the run
  FAILED                exit code and the tail of stderr; removed when the run is relaunched
`aggregate(root)` writes results.csv, results.md and report.md into the sweep root (plus
results.png and the analysis' files when the sweep file asks for them).
"""

from __future__ import annotations

import ast
import concurrent.futures
import copy
import dataclasses
import importlib
import importlib.util
import itertools
import json
import os
import pathlib
import platform
import queue
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

import ml_collections
from absl import logging

from jaxmem import io
from jaxmem.config import LAUNCHER_ALIASES, get_field

DONE, FAILED = "DONE", "FAILED"
RUN_FILE, ATTEMPTS_FILE, LOG_FILE = "sweep_run.json", "attempts.jsonl", "run.log"
STDERR_TAIL_LINES = 40


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the sweep: its folder name, swept values ({field path: value}) and workdir."""

    name: str
    values: dict
    workdir: str


# --------------------------------------------------------------------------- fields and values


def _split_top_level(text: str) -> list[str]:
    """Splits 'a,(1,2),[3]' at commas outside brackets and quotes: ['a', '(1,2)', '[3]']."""
    parts, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_value(path: str, text: str, current):
    """Parses flag text as a value of the type of config field `path` (whose value is `current`)."""
    try:
        if isinstance(current, bool):
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1")
        if isinstance(current, str):
            return text
        if isinstance(current, int | float):
            return type(current)(text)
        value = ast.literal_eval(text)
        if isinstance(current, tuple | list):
            value = tuple(value) if isinstance(value, tuple | list) else (value,)
        return value
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"--sweep.{path}: cannot parse {text!r} as {type(current).__name__} "
                         f"(current value {current!r}): {e}") from None


def flag_axes(config: ml_collections.ConfigDict, sweep_flags: Mapping[str, str]) -> list[dict]:
    """Grid axes from `--sweep.<field>=v1,v2,...` flags ({field: 'v1,v2,...'}), typed by the config."""
    return [{path: [parse_value(path, v, get_field(config, path)) for v in _split_top_level(text)]}
            for path, text in sweep_flags.items()]


def split_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Separates `--sweep.<field>=...` and `--config.<field>=...` flags (absl cannot declare them).

    Returns (remaining argv, {field: 'v1,v2'} of the sweep flags, {field: 'value'} of the fixed
    overrides applied to every run).
    """
    rest, sweeps, overrides = [], {}, {}
    for arg in argv:
        for prefix, target in (("--sweep.", sweeps), ("--config.", overrides)):
            if arg.startswith(prefix):
                field, eq, text = arg[len(prefix):].partition("=")
                if not eq:
                    raise ValueError(f"{arg!r}: write {prefix}<field>=<value(s)> with '='")
                target[field] = text
                break
        else:
            rest.append(arg)
    return rest, sweeps, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, str]) -> ml_collections.ConfigDict:
    """A copy of config with {field: flag text} overrides parsed by field type and applied."""
    return resolve(config, {path: parse_value(path, text, get_field(config, path)) for path, text in overrides.items()})


def _set(config: ml_collections.ConfigDict, path: str, value) -> None:
    *groups, key = path.split(".")
    node = config
    for group in groups:
        node = node[group]
    node[key] = value


def _sweep_module(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location("_jaxmem_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def analysis_function(name: str):
    """The function named 'package.module:function'; ValueError naming `name` when it cannot be found."""
    module_name, colon, function_name = str(name).partition(":")
    if not colon or not module_name or not function_name:
        raise ValueError(f"ANALYSIS = {name!r} is invalid; allowed: 'package.module:function'")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"ANALYSIS = {name!r} cannot be loaded: {e}") from None
    if not callable(function):
        raise ValueError(f"ANALYSIS = {name!r} is not a function")
    return function


def load_sweep_analysis(path: str) -> dict | None:
    """{"function": 'package.module:function', "options": {...}} from a sweep file's ANALYSIS and
    ANALYSIS_OPTIONS, checked (importable, options a JSON dict); None when it defines none."""
    module = _sweep_module(path)
    name = getattr(module, "ANALYSIS", None)
    if name is None:
        return None
    analysis_function(name)
    options = getattr(module, "ANALYSIS_OPTIONS", {})
    if not isinstance(options, Mapping):
        raise ValueError(f"ANALYSIS_OPTIONS of {path!r} must be a dict of keyword arguments; got {options!r}")
    try:
        options = json.loads(json.dumps(dict(options)))  # what sweep.json will hold
    except TypeError as e:
        raise ValueError(f"ANALYSIS_OPTIONS of {path!r} must hold JSON values: {e}") from None
    return dict(function=name, options=options)


def load_sweep_file(path: str) -> tuple[list[dict], dict | None]:
    """(the axes returned by `get_sweep()`, the optional PLOT spec) of a sweep file."""
    module = _sweep_module(path)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"sweep file {path!r} defines no get_sweep()")
    plot = getattr(module, "PLOT", None)
    if plot is not None and (set(plot) != {"x", "y"} or isinstance(plot["y"], str)):
        raise ValueError(f"PLOT of {path!r} must be {{'x': column, 'y': [columns]}}; got {plot!r}")
    return list(module.get_sweep()), plot


# --------------------------------------------------------------------------- expansion


def _value_text(value) -> str:
    """A short readable form of a swept value for run names: (8, 12) -> '8-12'."""
    if isinstance(value, tuple | list):
        return "-".join(_value_text(v) for v in value)
    return str(value)


def run_name(values: Mapping) -> str:
    """The filesystem-safe folder name of a run: 'data.train_sizes=8__training.steps=20'."""
    name = "__".join(f"{path}={_value_text(v)}" for path, v in values.items())
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", name) or "base"


def expand(config: ml_collections.ConfigDict, axes: Sequence[Mapping], root: str) -> list[Run]:
    """The runs of the Cartesian product of `axes` (grid or zipped), checked against `config`.

    Raises ValueError on an unknown field, a field on two axes, zipped lists of unequal
    length, an empty axis, a value of the wrong type or two runs with the same folder name.
    """
    seen = set()
    per_axis = []
    for axis in axes:
        lengths = {path: len(values) for path, values in axis.items()}
        if not axis or 0 in lengths.values():
            raise ValueError(f"sweep axis {dict(axis)!r} is empty")
        if len(set(lengths.values())) > 1:
            raise ValueError(f"zipped sweep fields need lists of equal length; got {lengths}")
        for path in axis:
            get_field(config, path)
            if path in seen:
                raise ValueError(f"config field {path!r} is swept on two axes")
            seen.add(path)
        per_axis.append([dict(zip(axis, point)) for point in zip(*axis.values())])

    runs, names = [], {}
    for combination in itertools.product(*per_axis):
        values = {k: v for point in combination for k, v in point.items()}
        resolve(config, values)  # type check now, not half way through the sweep
        name = run_name(values)
        if name in names:
            raise ValueError(f"runs {names[name]} and {values} share the folder name {name!r}")
        names[name] = values
        runs.append(Run(name, values, os.path.join(root, name)))
    return runs


def resolve(config: ml_collections.ConfigDict, values: Mapping) -> ml_collections.ConfigDict:
    """A copy of config with the swept values set (the locked config rejects wrong types)."""
    config = copy.deepcopy(config)
    for path, value in values.items():
        current = get_field(config, path)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            _set(config, path, value)
        except TypeError as e:
            raise ValueError(f"sweep value {value!r} for {path!r} has the wrong type: {e}") from None
    return config


def _override_text(value) -> str:
    """The text of a value in a `--config.<field>=` flag (parsed back by ml_collections)."""
    return value if isinstance(value, str) else repr(value)


def default_launcher(config_spec: str) -> str:
    """configs/<family>.py -> launch/<family>.py next to it (edm.py -> train.py)."""
    config_path = os.path.abspath(config_spec.partition(":")[0])
    base = os.path.basename(config_path)
    launcher = os.path.join(os.path.dirname(os.path.dirname(config_path)), "launch",
                            LAUNCHER_ALIASES.get(base, base))
    if not os.path.isfile(launcher):
        raise FileNotFoundError(f"no launcher {launcher} for {config_spec}; pass --launcher=launch/<x>.py")
    return launcher


# --------------------------------------------------------------------------- execution


def status(run: Run) -> str:
    """'done', 'failed' or 'pending' (never started or interrupted)."""
    if os.path.exists(os.path.join(run.workdir, DONE)):
        return "done"
    return "failed" if os.path.exists(os.path.join(run.workdir, FAILED)) else "pending"


def launch_command(run: Run, config_spec: str, launcher: str, overrides: Mapping[str, str]) -> list[str]:
    """The subprocess command of one run: fixed overrides first, then the run's swept values."""
    flags = [f"--config.{k}={v}" for k, v in overrides.items() if k not in run.values]
    flags += [f"--config.{k}={_override_text(v)}" for k, v in run.values.items()]
    return [sys.executable, launcher, f"--config={config_spec}", *flags, f"--workdir={run.workdir}"]


def execute_run(run: Run, command: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Launches one run (unless DONE) with environment `env` (default: ours) and records the
    outcome; returns its status."""
    if status(run) == "done":
        logging.info("%s: done before, skipped", run.name)
        return "done"
    failed_marker = os.path.join(run.workdir, FAILED)
    if os.path.exists(failed_marker):
        os.remove(failed_marker)
    io.write_json(os.path.join(run.workdir, RUN_FILE), dict(name=run.name, values=run.values))
    logging.info("%s: launching %s", run.name, " ".join(command))
    start = time.time()
    with open(os.path.join(run.workdir, LOG_FILE), "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env).returncode
    seconds = round(time.time() - start, 2)
    io.append_jsonl(os.path.join(run.workdir, ATTEMPTS_FILE), [dict(exit_code=code, seconds=seconds,
                                                                    finished=time.time())])
    if code == 0:
        io.write_json(os.path.join(run.workdir, DONE), dict(seconds=seconds))
        logging.info("%s: done in %.1f s", run.name, seconds)
        return "done"
    with open(os.path.join(run.workdir, LOG_FILE)) as log:
        tail = "".join(log.readlines()[-STDERR_TAIL_LINES:])
    io.write_json(failed_marker, dict(exit_code=code, seconds=seconds, stderr_tail=tail))
    logging.error("%s: FAILED with exit code %d after %.1f s; see %s", run.name, code, seconds,
                  os.path.join(run.workdir, LOG_FILE))
    return "failed"


def _check_recorded_config(run: Run, config: ml_collections.ConfigDict) -> None:
    """A finished run counts as done only for the config it recorded (its launcher's config.json)."""
    recorded = os.path.join(run.workdir, "config.json")
    if os.path.exists(recorded) and pathlib.Path(recorded).read_text() != io.config_json(config):
        raise ValueError(f"{run.workdir} finished with another config than this sweep's (check the "
                         f"--config.* overrides); rerun with the same ones, or use a new --workdir")


def execute(runs: Sequence[Run], config: ml_collections.ConfigDict, config_spec: str, launcher: str,
            overrides: Mapping[str, str] | None = None, parallel: int = 1, gpus_per_run: int = 0) -> dict[str, str]:
    """Runs every unfinished run, `parallel` subprocesses at a time; returns {name: status}.

    `config` is the base config with the fixed `overrides` ({field: flag text}) applied; a
    failed run is recorded and the others go on. gpus_per_run > 0 pins slot s of the
    `parallel` slots to GPUs s*gpus_per_run ... (s+1)*gpus_per_run - 1 (CUDA_VISIBLE_DEVICES).
    """
    overrides = dict(overrides or {})
    for run in runs:
        if status(run) == "done":
            _check_recorded_config(run, resolve(config, run.values))
    parallel = max(1, parallel)
    slots = queue.Queue()
    for slot in range(parallel):
        slots.put(slot)

    def one(run: Run) -> str:
        command = launch_command(run, config_spec, launcher, overrides)
        slot = slots.get()
        try:
            env = None
            if gpus_per_run > 0:
                gpus = ",".join(str(slot * gpus_per_run + i) for i in range(gpus_per_run))
                env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpus)
            return execute_run(run, command, env)
        finally:
            slots.put(slot)

    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        results = dict(zip([r.name for r in runs], pool.map(one, runs)))
    logging.info("sweep: %d done, %d failed of %d runs", sum(s == "done" for s in results.values()),
                 sum(s == "failed" for s in results.values()), len(results))
    return results


def describe(runs: Sequence[Run], config_spec: str, launcher: str, overrides: Mapping[str, str]) -> str:
    """The dry-run listing: one line per run with its status and its shell-quoted command."""
    lines = [f"{len(runs)} runs of {config_spec} via {launcher}"]
    for i, run in enumerate(runs, 1):
        lines.append(f"[{i}/{len(runs)}] {status(run):7s} {run.name}\n    "
                     + shlex.join(launch_command(run, config_spec, launcher, overrides)))
    return "\n".join(lines)


# --------------------------------------------------------------------------- aggregation


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


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def save_sweep_figure(path: str, rows: Sequence[Mapping], x: str, ys: Sequence[str]) -> str | None:
    """Plots columns `ys` against column `x` over the finished runs; None when nothing is numeric."""
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done" and _number(r.get(x)) is not None]
    done.sort(key=lambda r: _number(r[x]))
    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    plotted = False
    for y in ys:
        points = [(_number(r[x]), _number(r.get(y))) for r in done if _number(r.get(y)) is not None]
        if points:
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
        row.update({k: _value_text(v) for k, v in record["values"].items()})
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
