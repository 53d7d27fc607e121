"""Orbax checkpoints of every trainer (EDM, GMM grid): keep-last-n steps, verified restore with
fallback, and a save failure that stops the run with one line.

One checkpoint step holds up to three items (orbax `CheckpointManager` with `ocp.args.Composite`):
  state   the TrainState pytree (StandardSave; restored into an abstract, sharded target)
  data    the input pipeline's position {"epoch", "offset"} (JSON; trainers with a position)
  config  the run's resolved config (JSON; for the record, never read back into the run)
Saves are asynchronous; orbax writes each step into a temporary folder and renames it when
complete, so a killed save leaves no partial step behind, and a failed save's temporary folder
is removed. The manager keeps the last `keep`
steps (>= 2, so a step found unreadable has a predecessor). A step that exists but cannot be
restored (corrupt or truncated files) is reported in one line, moved aside to
`<directory>.rejected/<step>` and the previous step is tried. A save that fails (full disk,
read-only target) raises CheckpointWriteError at the next save or at close(), naming the step,
the folder, the cause and the last good step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jaxmem.validation import require
from jaxmem.io import WriteError

MIN_KEEP = 2


class CheckpointWriteError(WriteError):
    """A checkpoint step could not be written; the message names it, the cause and the last good step."""


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: state (sharded like the target), data position dict (None for a
    Checkpointer without positions), step."""

    state: object
    position: dict | None
    step: int


def agree_any(*flags: bool) -> bool | tuple[bool, ...]:
    """Each flag True on every process when it is True on any process, from one allgather for all
    of them (identity on one process). One flag in, one bool out; several in, a tuple out."""
    agreed = tuple(bool(f) for f in flags)
    if jax.process_count() > 1:
        gathered = multihost_utils.process_allgather(np.asarray(agreed, np.int32))
        agreed = tuple(bool(v) for v in np.any(np.asarray(gathered).reshape(-1, len(flags)), axis=0))
    return agreed[0] if len(flags) == 1 else agreed


def short_cause(error: BaseException) -> str:
    """The operating system's words for an I/O error inside an orbax/tensorstore message
    ("No space left on device"), else readable(error)."""
    code = re.search(r"os_error_code='?(\d+)", str(error))
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return readable(error)


def readable(error: BaseException) -> str:
    """`<type>: <first line of the message>`, without the spec TensorStore appends to its errors
    ([tensorstore_spec='{"context": ...}'] and [source locations=...])."""
    text = re.split(r"\s*\[(?:tensorstore_spec|source locations)=", str(error), maxsplit=1)[0].strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def check_keep(keep: int) -> None:
    """Fails, naming training.keep_checkpoints, unless keep >= MIN_KEEP (the config's door check)."""
    require(keep >= MIN_KEEP, "training.keep_checkpoints", keep,
            f"an integer >= {MIN_KEEP} (an unreadable latest step falls back to the previous one)")


class Checkpointer:
    """Keep-last-n, step- and time-interval checkpoints in `directory` (async orbax saves).

    keep: steps kept (>= MIN_KEEP; None keeps every step, as the power-EMA snapshots need). every_steps: save when the step is a multiple (0 = never
    by step count). every_seconds: save when this many seconds passed since the last save
    (0 = never by time). with_position: steps hold the input position (the "data" item).
    `rejected` lists (step, error message) of checkpoints found unreadable on restore.
    """

    def __init__(self, directory: str, keep: int | None = 3, every_steps: int = 0, every_seconds: float = 0.0,
                 async_save: bool = True, with_position: bool = True):
        if (keep is not None and keep < MIN_KEEP) or every_steps < 0 or every_seconds < 0:
            raise ValueError(f"a Checkpointer needs keep >= {MIN_KEEP} (or None), every_steps >= 0 and "
                             f"every_seconds >= 0; got keep = {keep}, every_steps = {every_steps}, "
                             f"every_seconds = {every_seconds}")
        self.directory = os.path.abspath(directory)
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.with_position = with_position
        self.rejected: list[tuple[int, str]] = []
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config"))
        self._last_save = time.monotonic()
        self._unconfirmed: int | None = None  # the step of a save started but not yet known written
        self._failed = False  # a save failed (and was reported); orbax raises it again on close

    def time_due(self) -> bool:
        """Whether every_seconds passed since the last save, on this process (not agreed)."""
        return self.every_seconds > 0 and time.monotonic() - self._last_save >= self.every_seconds

    def due(self, step: int, time_due: bool | None = None) -> bool:
        """Whether the interval policy asks for a save at `step`. time_due: `time_due()` already
        agreed over processes by the caller (the training loop gathers it with its other flags);
        None agrees it here."""
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        return by_steps or (agree_any(self.time_due()) if time_due is None else time_due)

    def save(self, step: int, state, position: dict | None = None, config: dict | None = None) -> None:
        """Starts an asynchronous save of step `step` (skipped when that step is already saved).

        Raises CheckpointWriteError when the previous save failed or this one cannot start.
        """
        self._confirm()
        if step in self.manager.all_steps():
            return
        items = {"state": ocp.args.StandardSave(state)}
        if self.with_position:
            items["data"] = ocp.args.JsonSave(position)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        self._unconfirmed = step
        try:
            self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as error:  # noqa: BLE001 - any failure to write is reported the same way
            raise self._write_error(step, error) from error
        self._last_save = time.monotonic()

    def _confirm(self) -> None:
        """Waits for the pending save; CheckpointWriteError naming its step if it failed."""
        if self._unconfirmed is None:
            return
        step, self._unconfirmed = self._unconfirmed, None
        try:
            self.manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            raise self._write_error(step, error) from error

    def _write_error(self, step: int, error: BaseException) -> CheckpointWriteError:
        """The CheckpointWriteError of a failed save of `step`, once its partial folders (orbax's
        `<step>.orbax-checkpoint-tmp*`) are removed: a full disk leaves nothing half-written."""
        self._failed = True
        if jax.process_index() == 0:
            for name in os.listdir(self.directory):
                if name.startswith(f"{step}.orbax-checkpoint-tmp"):
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
        self.manager.reload()
        good = [s for s in self.manager.all_steps() if s != step]
        last = f"step {max(good)} (intact)" if good else "none"
        return CheckpointWriteError(f"checkpoint step {step} could not be written to {self.directory}: "
                                    f"{short_cause(error)}; last good checkpoint: {last}")

    def steps(self) -> list[int]:
        """The saved steps, ascending."""
        return sorted(self.manager.all_steps())

    def restore(self, step: int, abstract_state) -> tuple[object, dict | None]:
        """(state restored into `abstract_state`, the step's config record or None) of step `step`."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "config": ocp.args.JsonRestore()}
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored.state, (dict(restored.config) if restored.config is not None else None)

    def drop_after(self, step: int) -> list[int]:
        """Deletes the saved steps after `step` (what a run resumed from `step` writes again);
        returns them."""
        self._confirm()
        dropped = [s for s in self.manager.all_steps() if s > step]
        for s in dropped:
            self.manager.delete(s)
        return dropped

    def restore_latest(self, abstract_state, total_steps: int) -> Restored | None:
        """The newest readable checkpoint restored into `abstract_state`, or None when there is none.

        abstract_state: pytree of jax.ShapeDtypeStruct with shardings (e.g. from jax.eval_shape);
        total_steps: the run's length, for the log line "resumed from step S of T (workdir W)".
        Unreadable steps are logged (one line each), recorded in `rejected`, moved aside, and the
        previous tried.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if self.with_position:
                items["data"] = ocp.args.JsonRestore()
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
                position = dict(restored.data) if self.with_position else None
                if self.with_position:
                    require(set(position) == {"epoch", "offset"}, f"checkpoint {step} data position",
                            position, "{'epoch': int, 'offset': int}")
            except Exception as error:  # noqa: BLE001 - any failure to read means the step is unusable
                message = readable(error)
                logging.error("checkpoint step %d in %s cannot be restored (%s); moved aside to %s.rejected, "
                              "trying the previous one", step, self.directory, message, self.directory)
                self.rejected.append((step, message))
                self._move_aside(step)
                continue
            logging.info("resumed from step %d of %d (workdir %s)", step, total_steps,
                         os.path.dirname(self.directory))
            return Restored(restored.state, position, step)
        return None

    def _move_aside(self, step: int) -> None:
        """Moves step folder `step` to `<directory>.rejected/<step>` and rescans the manager."""
        if jax.process_index() == 0:
            target = os.path.join(self.directory + ".rejected", str(step))
            if os.path.exists(target):
                shutil.rmtree(target)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"jaxmem_reject_checkpoint_{step}")
        self.manager.reload()

    def close(self) -> None:
        """Waits for the pending save (CheckpointWriteError if it failed) and releases the manager."""
        try:
            if not self._failed:
                self._confirm()
        finally:
            if self._failed:  # reported once already; orbax would raise the same failure again
                with contextlib.suppress(Exception):
                    self.manager.close()
            else:
                self.manager.close()
