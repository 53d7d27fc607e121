"""Config presets, loading and field lookup shared by every experiment family.

Each `configs/<experiment>.py` defines `get_config(arg)` and builds its preset with
`select_preset(arg, PRESETS)`; launchers load configs through ml_collections'
`config_flags`, tests and notebooks through `load_config("configs/x.py:preset")`. An unknown
preset, file or field raises jaxmem.validation.ConfigError, naming what is valid.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import os
from collections.abc import Callable, Mapping

import ml_collections

from jaxmem.validation import ConfigError, require


# Config fields that do not change a run's results (they steer logging, checkpoint cadence or
# memory/speed), so a rerun may change them on a workdir that holds results of the others
# (jaxmem.io.check_fingerprint, the sweep's finished-run check). A name ending in "." covers a
# group. Device counts and meshes are not config fields: they never enter a fingerprint.
RESULT_NEUTRAL_FIELDS = (
    "training.log_every_steps", "training.checkpoint_every_steps", "training.checkpoint_every_seconds",
    "training.keep_checkpoints", "training.async_checkpoints", "eval.model_batch", "compute.",
)


# Fields added after workdirs existed, with the value that reproduces the results from before they
# existed. A record written before a field existed lacks it; jaxmem.io.differing_fields reads the
# missing field as this value, so such a workdir still resumes (and a finished sweep run still
# counts as done) under a config that leaves the field at it.
LATER_FIELDS = {
    "data.rank": 0, "data.off_variance": 0.0, "data.replication": "none", "data.replicated_fraction": 0.0,
    "data.copies": 1, "data.zipf_exponent": 1.0, "training.adam_b2": 0.999, "training.optimizer": "jaxmem",
    "sampling.final_denoise": True, "model.window_rounds": 0, "model.window_tolerance": 0.05,
}


# Fields renamed so that one concept has one name in every experiment family: {old dotted name: new}.
# A name also matches inside a group that holds a whole config (posthoc_ema's model.optim.lr,
# denoiser_swaps' memorizing.optim.lr). Records written before a rename (config.json,
# fingerprint.json) are read through current_name (jaxmem.io.differing_fields,
# jaxmem.workdir.recorded_fields_of), so their workdirs resume and finished sweep runs still
# count as done; an old name on the command line or in a sweep file fails naming the new one
# (get_field). No old name is a field of any config today.
RENAMED_FIELDS = {
    "data.n_train": "data.num_train", "data.n_heldout": "data.num_heldout",  # noise_regimes
    "data.num_images": "data.num_reference",  # sample_quality's reference subset
    "optim.lr": "optim.peak_lr", "optim.beta1": "optim.adam_b1", "optim.beta2": "optim.adam_b2",
    "optim.eps": "optim.adam_eps",  # edm_training (and the configs that hold one)
}


def current_name(field: str) -> str:
    """Dotted `field` of a stored record under today's name (RENAMED_FIELDS), e.g. "optim.lr" ->
    "optim.peak_lr", "model.optim.lr" -> "model.optim.peak_lr"; any other field unchanged."""
    for old, new in RENAMED_FIELDS.items():
        if field == old or field.endswith("." + old):
            return field[:len(field) - len(old)] + new
    return field


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
            renamed = current_name(path)
            if renamed != path and _has_field(config, renamed):
                raise ConfigError(f"config field {path!r} was renamed {renamed!r}; write {renamed!r} instead")
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


def _has_field(config: ml_collections.ConfigDict, path: str) -> bool:
    """Whether dotted `path` names a field of `config`."""
    try:
        get_field(config, path)
    except ConfigError:
        return False
    return True
