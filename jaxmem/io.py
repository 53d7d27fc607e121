"""The workdir contract: everything a run writes goes through these atomic writers.

A file is written to a temporary sibling and renamed into place, so a crashed or
killed run never leaves a half-written table, figure or config behind. A write that fails
(full disk, read-only folder) raises WriteError naming the file and the cause; the launchers
turn it into one `error:` line and a non-zero exit (jaxmem.cli).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from jaxmem.config import LATER_FIELDS, current_name, result_neutral
from jaxmem.validation import ConfigError


class WriteError(OSError):
    """A result or checkpoint could not be written; the message names what, where and why."""


@contextlib.contextmanager
def writing(path: str):
    """Turns an OSError raised inside the block into WriteError('cannot write <path>: <cause>')."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from error


def file_mode() -> int:
    """The mode a plain new file gets here: 0o666 less the process's umask (0o644 under the usual
    022), what open() would give, so collaborators read results as they read any other file."""
    with _UMASK_GUARD:  # reading the umask means setting it; threads must not see the 0 meanwhile
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


_UMASK_GUARD = threading.Lock()


@contextlib.contextmanager
def _temporary(path: str):
    """Yields a new temporary file beside `path` (mode file_mode(), not mkstemp's private 0o600),
    removed on exit unless it was renamed away; WriteError naming `path` when any of it fails."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    with writing(path):
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
            os.fchmod(fd, file_mode())
            os.close(fd)
            yield tmp
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path in the same folder; renames it onto `path` on success (WriteError
    when any of it fails; the temporary file is removed)."""
    with _temporary(path) as tmp:
        yield tmp
        os.replace(tmp, path)


def write_new(path: str, text: str) -> bool:
    """Creates `path` holding `text` only if it does not exist, atomically: complete or absent, and
    of racing writers exactly one succeeds (a hard link of a finished temporary file). False when
    `path` exists; WriteError when it cannot be written."""
    with _temporary(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
    return True


def write_text(path: str, text: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return path


def _jsonable(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if hasattr(value, "__array__"):
        return np.asarray(value).tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str, obj) -> str:
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path: str, rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Writes a list of dicts as CSV; columns default to the keys of the first row."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format_cell(row.get(k)) for k in columns})
    return write_text(path, buffer.getvalue())


def format_cell(value):
    """Floats to 6 significant digits; None (a missing value) to an empty cell, as CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return value


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """Renders a list of dicts as a GitHub Markdown table."""
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(format_cell(row.get(c, ""))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def append_jsonl(path: str, records: Iterable[Mapping]) -> None:
    """Appends JSON lines (metrics); each line is flushed whole."""
    with writing(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            for record in records:
                f.write(json.dumps(record, default=_jsonable) + "\n")
            f.flush()


def drop_records_after(path: str, step: int) -> int:
    """Rewrites the JSON-lines file `path` (atomically) without its records whose "step" is past
    `step` (a resumed run redoes those steps); returns how many were dropped (0 when no file).
    A torn last line (a run killed mid-write) is dropped too."""
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    if len(kept) < len(lines):
        write_text(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def folder_name(path: str) -> str:
    """The last component of a folder path, trailing separators ignored: 'runs/a/' -> 'a'
    (progress lines name a run by its workdir)."""
    return os.path.basename(os.path.normpath(path))


def save_npz(path: str, **arrays) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def save_figure(path: str, figure) -> str:
    """Saves a matplotlib figure atomically as PNG and closes it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            figure.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def check_fingerprint(path: str, fingerprint: str, what: str) -> bool:
    """Ties a folder to one config, so a rerun resumes only what the same config wrote.

    fingerprint: JSON text of a dict of the config fields the folder's results depend on.
    The first call writes it to `path` and returns False; later calls return True when the
    stored fingerprint matches up to the result-neutral fields (jaxmem.config.RESULT_NEUTRAL_FIELDS)
    and otherwise raise ConfigError (a ValueError) naming `path`, `what` it holds (e.g.
    "checkpoints of another config") and the fields that differ.
    """
    if not os.path.exists(path):
        write_text(path, fingerprint + "\n")
        return False
    with open(path) as f:
        stored = json.loads(f.read())
    changed = differing_fields(stored, json.loads(fingerprint))
    if changed:
        raise ConfigError(f"{path} holds {what} (fields that differ: {', '.join(changed)}); rerun with the "
                          f"config that wrote it, or use a new --workdir")
    return True


def differing_fields(old: Mapping, new: Mapping) -> list[str]:
    """The dotted fields whose values differ between two nested config dicts, leaving out
    jaxmem.config.RESULT_NEUTRAL_FIELDS; sorted, under today's names. A field of either record
    under an old name (jaxmem.config.RENAMED_FIELDS, e.g. a fingerprint written before optim.lr
    became optim.peak_lr) is read as its new name. A field present in one only counts, unless it
    is in jaxmem.config.LATER_FIELDS and the other holds its value there."""
    old, new = ({current_name(k): v for k, v in flatten(record).items()} for record in (old, new))

    def value(flat, key):
        return flat.get(key, LATER_FIELDS.get(key, "<absent>"))

    return sorted(k for k in old.keys() | new.keys() if value(old, k) != value(new, k) and not result_neutral(k))


def flatten(tree, prefix: str = "") -> dict:
    """Scalars of nested dicts/lists as one dict: {"a": {"b": [1]}} -> {"a.b.0": 1}."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def as_float(value) -> float:
    """float(value) of a table cell; NaN for a missing (None) or non-numeric cell."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def config_json(config: ml_collections.ConfigDict) -> str:
    """The text `save_config` writes to config.json."""
    return json.dumps(config.to_dict(), indent=2, default=_jsonable) + "\n"


def save_config(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Writes the resolved config into the workdir as `config.json` (plus a readable dump)."""
    write_text(os.path.join(workdir, "config.txt"), str(config))
    return write_text(os.path.join(workdir, "config.json"), config_json(config))
