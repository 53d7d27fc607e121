"""Config presets, loading and validation shared by every experiment family.

Each `configs/<family>.py` defines `get_config(arg)` and builds its preset with
`select_preset(arg, PRESETS)`; launchers load configs through ml_collections'
`config_flags`, tests and notebooks through `load_config("configs/x.py:preset")`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping

import ml_collections


def select_preset(
    arg: str | None, presets: Mapping[str, Callable[[], ml_collections.ConfigDict]]
) -> ml_collections.ConfigDict:
    """Builds preset `arg` (the text after ':' in --config=file.py:arg) and locks it.

    Raises ValueError naming the valid presets when `arg` is unknown. The returned
    config is locked, so a misspelled `--config.field=value` override fails.
    """
    name = arg or next(iter(presets))
    if name not in presets:
        raise ValueError(
            f"unknown config preset {name!r}; valid presets: {', '.join(sorted(presets))}"
        )
    config = presets[name]()
    config.preset = name
    config.lock()
    return config


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:preset]` the way `--config=` does, for tests and notebooks."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location("_jaxmem_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def require(condition: bool, field: str, value, allowed: str) -> None:
    """Raises ValueError('<field> = <value> is invalid; allowed: <allowed>') unless condition."""
    if not condition:
        raise ValueError(f"{field} = {value!r} is invalid; allowed: {allowed}")


def require_choice(field: str, value, choices: Iterable) -> None:
    """Raises ValueError naming `field` and the allowed `choices` when value is not one of them."""
    choices = list(choices)
    require(value in choices, field, value, "one of " + ", ".join(map(repr, choices)))
