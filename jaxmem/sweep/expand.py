"""Sweep expansion: `--sweep.<field>=v1,v2` flags and sweep files into axes, axes into runs.

Values are parsed by the type of the config field they set; expansion checks every run's
config (unknown fields, wrong types, clashing folder names) before anything is launched.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence

import ml_collections

from jaxmem.config import config_module, get_field


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the sweep: its folder name, swept values ({field path: value}) and workdir."""

    name: str
    values: dict
    workdir: str


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
    module = config_module(path, "sweep file")
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
    module = config_module(path, "sweep file")
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"sweep file {path!r} defines no get_sweep()")
    plot = getattr(module, "PLOT", None)
    if plot is not None and (set(plot) != {"x", "y"} or isinstance(plot["y"], str)):
        raise ValueError(f"PLOT of {path!r} must be {{'x': column, 'y': [columns]}}; got {plot!r}")
    return list(module.get_sweep()), plot


def value_text(value) -> str:
    """A short readable form of a swept value for run names: (8, 12) -> '8-12'."""
    if isinstance(value, tuple | list):
        return "-".join(value_text(v) for v in value)
    return str(value)


def run_name(values: Mapping) -> str:
    """The filesystem-safe folder name of a run: 'data.train_sizes=8__training.steps=20'."""
    name = "__".join(f"{path}={value_text(v)}" for path, v in values.items())
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
