"""Config presets, loading and validation shared by every experiment family.

Each `configs/<experiment>.py` defines `get_config(arg)` and builds its preset with
`select_preset(arg, PRESETS)`; launchers load configs through ml_collections'
`config_flags`, tests and notebooks through `load_config("configs/x.py:preset")`.

Every problem a user can fix (a bad config value, an unknown preset or field, unusable input
data) raises `ConfigError`, a ValueError whose message names the field and the allowed values;
the launchers (jaxmem.cli) print it on one line and exit 2 instead of showing a traceback.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import math
import os
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping

import ml_collections

class ConfigError(ValueError):
    """A config, flag or input-data problem the user can fix; the message says what and how."""


# Config fields that do not change a run's results (they steer logging, checkpoint cadence or
# memory/speed), so a rerun may change them on a workdir that holds results of the others
# (jaxmem.io.check_fingerprint, the sweep's finished-run check). A name ending in "." covers a
# group. Device counts and meshes are not config fields: they never enter a fingerprint.
RESULT_NEUTRAL_FIELDS = (
    "training.log_every_steps", "training.checkpoint_every_steps", "training.checkpoint_every_seconds",
    "training.keep_checkpoints", "training.async_checkpoints", "eval.model_batch", "compute.",
)


def result_neutral(field: str) -> bool:
    """Whether dotted `field` (e.g. "training.log_every_steps", "compute.chunk_size") is in
    RESULT_NEUTRAL_FIELDS."""
    return any(field == name or (name.endswith(".") and field.startswith(name)) for name in RESULT_NEUTRAL_FIELDS)


def select_preset(
    arg: str | None, presets: Mapping[str, Callable[[], ml_collections.ConfigDict]]
) -> ml_collections.ConfigDict:
    """Builds preset `arg` (the text after ':' in --config=file.py:arg) and locks it.

    Raises ConfigError naming the valid presets when `arg` is unknown. The returned
    config is locked, so a misspelled `--config.field=value` override fails.
    """
    name = arg or next(iter(presets))
    if name not in presets:
        raise ConfigError(f"unknown config preset {name!r}; valid presets: {', '.join(sorted(presets))}")
    config = presets[name]()
    config.preset = name
    config.lock()
    return config


def config_module(path: str, kind: str = "config file"):
    """The executed Python file `path`: a config file (its get_config and, by convention,
    PRESETS) or another `kind` of such file (a sweep file). ConfigError when it is not a Python
    file that runs (e.g. --config=README.md) or, for a config file, has no get_config."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} {path!r} does not exist")
    name = f"_jaxmem_{kind.split()[0]}"  # any file name is read as Python source (and refused if it is not)
    module_spec = importlib.util.spec_from_file_location(name, path,
                                                         loader=importlib.machinery.SourceFileLoader(name, path))
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except (SyntaxError, ImportError, NameError, UnicodeDecodeError) as e:
        raise ConfigError(f"{kind} {path!r} is not a Python {kind} ({type(e).__name__}: {e}); allowed: a "
                          f"file like configs/<experiment>.py") from e
    require(kind != "config file" or callable(getattr(module, "get_config", None)), "--config", path,
            "a config file that defines get_config(preset), e.g. configs/<experiment>.py")
    return module


def _numbers(values) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)


def check_override(field: str, default, value) -> None:
    """Raises ConfigError, naming `field`, when an override made a tuple field something else
    (ml_collections takes `--config.data.train_sizes=many` as the text 'many') or put text into
    a tuple of numbers."""
    if isinstance(default, tuple):
        numbers = bool(default) and _numbers(default)
        require(isinstance(value, tuple) and (not numbers or _numbers(value)), field, value,
                f"a tuple like {default!r}" + (" (numbers)" if numbers else ""))


def check_finite(config: ml_collections.ConfigDict) -> None:
    """Fails, naming the field, on a float field (or a float inside a tuple field) that is inf or
    NaN: every field of every experiment is a finite quantity, and an infinite one fails late,
    deep inside a run."""
    for path, value in _leaves(config):
        for item in value if isinstance(value, tuple | list) else (value,):
            require(not isinstance(item, float) or math.isfinite(item), path, value, "a finite number")


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:preset]` the way `--config=` does, for tests and notebooks."""
    path, _, arg = spec.partition(":")
    return config_module(path).get_config(arg or None)


def get_field(config: ml_collections.ConfigDict, path: str):
    """The value of dotted field `path`; ConfigError naming the field, the fields of the group
    it should be in and the closest spelling when there is no such field (or it is a group)."""
    node = config
    for i, key in enumerate(path.split(".")):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            group = ".".join(path.split(".")[:i])
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"unknown config field {path!r} ({group} is a value, not a group)")
            close = difflib.get_close_matches(key, node.keys(), n=1)
            hint = f"; did you mean {'.'.join([group, close[0]]).lstrip('.')!r}?" if close else ""
            raise ConfigError(f"unknown config field {path!r}{hint} ({group or 'the config'} has the fields: "
                              f"{', '.join(sorted(node.keys()))})")
        node = node[key]
    if isinstance(node, ml_collections.ConfigDict):
        raise ConfigError(f"config field {path!r} is a group, not a value; its fields: {', '.join(sorted(node.keys()))}")
    return node


def field_lines(config: ml_collections.ConfigDict, descriptions: Mapping[str, str] | None = None,
                width: int = 100) -> list[str]:
    """The config's fields with their values, one wrapped block per group: '  group: a=1 b=(2, 3)',
    or '  group: <description>' and then the values when `descriptions` ({group: one line}) has it."""
    groups: dict[str, list[str]] = {}
    for path, value in _leaves(config):
        group, _, name = path.rpartition(".")
        groups.setdefault(group, []).append(f"{name}={value!r}")
    lines = []
    for group, items in groups.items():
        label = f"  {group or '(top level)'}: "
        description = (descriptions or {}).get(group)
        if description:
            lines += [one_line(label + description, width)]
            label = "      "
        lines.append(textwrap.fill(" ".join(items), width, initial_indent=label, subsequent_indent="      ",
                                   break_on_hyphens=False))
    return lines


def docstring_entries(doc: str | None, section: str) -> dict[str, str]:
    """{name: description} of a config file docstring's section, e.g. its "Presets (...):" or
    "Fields:" list, whose entries read '  name   description' with deeper indented continuation
    lines (joined into one line); 'a / b   description' or 'a, b' followed by the description's
    lines describes both. Empty without the section."""
    entries: dict[str, list[str]] = {}
    inside, names = False, []
    for line in (doc or "").splitlines():
        if not inside:
            inside = line.startswith(section)
            continue
        if not line.strip() or not line.startswith(" "):
            if entries:
                break
            continue
        match = re.match(r"^  (\w+(?:(?: / |, )\w+)*)(?:\s+(\S.*))?$", line)
        if match:
            names = re.split(r" / |, ", match.group(1))
            for name in names:
                entries[name] = [match.group(2) or ""]
        else:
            for name in names:
                entries[name].append(line.strip())
    return {name: " ".join(p for p in parts if p) for name, parts in entries.items()}


def one_line(text: str, width: int) -> str:
    """text cut to `width` characters, ending in '...' when cut."""
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def _leaves(config: ml_collections.ConfigDict, prefix: str = ""):
    """(dotted path, value) of every non-group field, in definition order, values before groups."""
    items = list(config.items())
    for key, value in sorted(items, key=lambda kv: isinstance(kv[1], ml_collections.ConfigDict)):
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def require(condition: bool, field: str, value, allowed: str) -> None:
    """Raises ConfigError('<field> = <value> is invalid; allowed: <allowed>') unless condition."""
    if not condition:
        raise ConfigError(f"{field} = {value!r} is invalid; allowed: {allowed}")


def require_choice(field: str, value, choices: Iterable) -> None:
    """Raises ConfigError naming `field` and the allowed `choices` when value is not one of them."""
    choices = list(choices)
    require(value in choices, field, value, "one of " + ", ".join(map(repr, choices)))
