"""Which experiment owns a workdir, so that no launcher writes into another experiment's results.

A workdir says who owns it in `<workdir>/experiment.json` ({"experiment": <name>, "created",
"command"}), written once, when a run first claims the folder; the name is the launcher's
(`gmm_crossover`, `edm_training`, `noise_regimes`, `denoiser_swaps`, `sample_quality`,
`posthoc_ema`, `sweep`, `compile_check`, `import_edm`: the file name of launch/<name>.py). A
record written under an experiment's former name (FORMER_NAMES: the launchers were once named
after their config families) counts as the experiment's present name, so such a workdir resumes.
Every launcher checks the folder before it writes anything (jaxmem.cli) and refuses, with ForeignWorkdir (a ConfigError: one `error:` line, exit 2):
  - a folder owned by another experiment,
  - a non-empty folder without an owner record that it cannot adopt,
  - a path that exists and is not a folder.
The lock machinery (`.lock`, `.lock.takeover`, jaxmem.lock) is not content: a folder that holds
only those counts as empty.

Adoption covers workdirs written before owner records existed: the caller says which folders it
recognises as its own (`adopt`), e.g. one whose recorded config.json or fingerprint.json names
only fields of this run's config (recorded_fields_of). A folder that is refused but known to be a
run of this experiment can be marked by hand: write {"experiment": "<name>"} into its
experiment.json.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from collections.abc import Callable

import ml_collections

from jaxmem import io
from jaxmem.config import current_name
from jaxmem.validation import ConfigError

OWNER_FILE = "experiment.json"
NOT_CONTENT = (".lock", ".lock.takeover")  # jaxmem.lock's files
RECORDS = ("config.json", "fingerprint.json")  # what a pre-owner-record workdir holds at its top
# Former owner names -> present ones: launch/crossover.py, launch/edm.py, ... before each launcher,
# config file and experiment module took one name.
FORMER_NAMES = {"crossover": "gmm_crossover", "edm": "edm_training", "geometry": "noise_regimes",
                "swap": "denoiser_swaps", "quality": "sample_quality"}


class ForeignWorkdir(ConfigError):
    """The folder belongs to another experiment, or holds files of unknown origin."""


def launcher_name(path: str | None = None) -> str:
    """The owner name of a launcher: its file name without .py (default: the running program's)."""
    path = path or getattr(sys.modules["__main__"], "__file__", None) or sys.argv[0]
    return os.path.splitext(os.path.basename(path))[0]


def owner_of(folder: str) -> str | None:
    """The experiment recorded in `folder`'s owner file, by its present name (a former one is
    translated by FORMER_NAMES); None without one. ForeignWorkdir when the file is unreadable (it
    cannot say who owns the folder)."""
    path = os.path.join(folder, OWNER_FILE)
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ForeignWorkdir(f"{path} cannot be read ({e}); it should say which experiment owns {folder}") from e
    if not isinstance(record, dict) or not isinstance(record.get("experiment"), str):
        raise ForeignWorkdir(f"{path} does not name the experiment that owns {folder} "
                             '(expected {"experiment": "<launcher name>"})')
    return FORMER_NAMES.get(record["experiment"], record["experiment"])


def check(folder: str, owner: str, adopt: Callable[[str], bool] | None = None) -> bool:
    """Whether `folder` may be written by experiment `owner` (True: it is already recorded as
    owner's; False: it is new, empty, or adopted, and claim() will record it). Writes nothing.

    Raises ForeignWorkdir naming the folder, its owner (or its contents) and what to do.
    """
    if not os.path.exists(folder):
        return False
    if not os.path.isdir(folder):
        raise ForeignWorkdir(f"{folder} is a file; allowed: a folder of a {owner} run, or a path to create")
    recorded = owner_of(folder)
    if recorded == owner:
        return True
    if recorded is not None:
        raise ForeignWorkdir(f"{folder} belongs to a {recorded} run (its {OWNER_FILE}), not to {owner}; "
                             f"use another --workdir (or launch/{recorded}.py to resume it)")
    content = sorted(set(os.listdir(folder)) - set(NOT_CONTENT))
    if content and not (adopt and adopt(folder)):
        shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
        raise ForeignWorkdir(f"{folder} is not empty ({shown}) and no {OWNER_FILE} says it is a {owner} run; "
                             f"use a new or empty --workdir (a {owner} run made before owner records: write "
                             f'{{"experiment": "{owner}"}} into {os.path.join(folder, OWNER_FILE)})')
    return False


def claim(folder: str, owner: str, adopt: Callable[[str], bool] | None = None) -> None:
    """check(), then records `owner` in the folder (created) unless recorded already. The record is
    created exclusively (io.write_new), so of two runs that claim one new folder for different
    experiments the second is refused. Raises io.WriteError when the folder cannot be written."""
    if check(folder, owner, adopt):
        return
    record = dict(experiment=owner, created=datetime.datetime.now().isoformat(timespec="seconds"),
                  command=shlex.join(sys.argv))
    if not io.write_new(os.path.join(folder, OWNER_FILE), json.dumps(record, indent=2) + "\n"):
        check(folder, owner)  # someone recorded an owner meanwhile: refused unless it is `owner`


def recorded_fields_of(config: ml_collections.ConfigDict) -> Callable[[str], bool]:
    """adopt(folder): whether the folder's config.json or fingerprint.json (what workdirs held
    before owner records) names only fields of `config` (older records may lack fields added
    since, and name renamed fields by their old names, jaxmem.config.RENAMED_FIELDS; a record of
    another experiment names fields this config does not have)."""
    fields = _field_names(config.to_dict())

    def adopt(folder: str) -> bool:
        for name in RECORDS:
            try:
                with open(os.path.join(folder, name)) as f:
                    recorded = json.load(f)
            except (OSError, ValueError):
                continue
            return (isinstance(recorded, dict) and bool(recorded)
                    and {current_name(name) for name in _field_names(recorded)} <= fields)
        return False

    return adopt


def _field_names(tree, prefix: str = "") -> set[str]:
    """Dotted names of the leaves of nested dicts (a list or tuple is one value)."""
    names = set()
    for key, value in tree.items():
        name = f"{prefix}{key}"
        names |= _field_names(value, name + ".") if isinstance(value, dict) else {name}
    return names
