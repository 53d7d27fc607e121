"""Config validation: ConfigError and the checks that raise it, naming the field.

Every problem a user can fix (a bad config value, an unknown preset or field, unusable input
data) raises `ConfigError`, a ValueError whose message names the field and the allowed values;
the launchers (jaxmem.cli) print it on one line and exit 2 instead of showing a traceback.
Configs are checked where they enter: each experiment's validate_config, called once by its
launcher (jaxmem.cli.run_main) before any work (the sweep driver also checks every run's config
before it starts any); the library underneath checks only its own arguments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import ml_collections


class ConfigError(ValueError):
    """A config, flag or input-data problem the user can fix; the message says what and how."""


def require(condition: bool, field: str, value, allowed: str) -> None:
    """Raises ConfigError('<field> = <value> is invalid; allowed: <allowed>') unless condition."""
    if not condition:
        raise ConfigError(f"{field} = {value!r} is invalid; allowed: {allowed}")


def require_choice(field: str, value, choices: Iterable) -> None:
    """Raises ConfigError naming `field` and the allowed `choices` when value is not one of them."""
    choices = list(choices)
    require(value in choices, field, value, "one of " + ", ".join(map(repr, choices)))


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
    for path, value in config_fields(config):
        for item in value if isinstance(value, tuple | list) else (value,):
            require(not isinstance(item, float) or math.isfinite(item), path, value, "a finite number")


def config_fields(config: ml_collections.ConfigDict, prefix: str = ""):
    """(dotted path, value) of every non-group field, in definition order, values before groups."""
    items = list(config.items())
    for key, value in sorted(items, key=lambda kv: isinstance(kv[1], ml_collections.ConfigDict)):
        if isinstance(value, ml_collections.ConfigDict):
            yield from config_fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
