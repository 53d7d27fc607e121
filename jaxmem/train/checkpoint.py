"""Orbax checkpoints of a training run: train state, input position and config, with safe resume.

One checkpoint step holds three items (orbax `CheckpointManager` with `ocp.args.Composite`):
  state   the TrainState pytree (StandardSave; restored into an abstract, sharded target)
  data    the input pipeline's position {"epoch", "offset"} (JSON)
  config  the run's resolved config (JSON; for the record, never read back into the run)
Saves are asynchronous; orbax writes each step into a temporary folder and renames it when
complete, so a killed save leaves no partial step behind. The manager keeps the last
`keep` steps. A step that exists but cannot be restored (corrupt or truncated files) is
reported, moved aside to `<directory>.rejected/<step>` and the previous step is tried.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from jaxmem.config import require


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: state (sharded like the target), data position dict, step."""

    state: object
    position: dict
    step: int


def agree_any(*flags: bool) -> bool | tuple[bool, ...]:
    """Each flag True on every process when it is True on any process, from one allgather for all
    of them (identity on one process). One flag in, one bool out; several in, a tuple out."""
    agreed = tuple(bool(f) for f in flags)
    if jax.process_count() > 1:
        gathered = multihost_utils.process_allgather(np.asarray(agreed, np.int32))
        agreed = tuple(bool(v) for v in np.any(np.asarray(gathered).reshape(-1, len(flags)), axis=0))
    return agreed[0] if len(flags) == 1 else agreed


class Checkpointer:
    """Keep-last-n, step- and time-interval checkpoints in `directory` (async orbax saves).

    every_steps: save when the step is a multiple (0 = never by step count).
    every_seconds: save when this many seconds passed since the last save (0 = never by time).
    `rejected` lists (step, error message) of checkpoints found unreadable on restore.
    """

    def __init__(self, directory: str, keep: int = 3, every_steps: int = 0, every_seconds: float = 0.0,
                 async_save: bool = True):
        require(keep >= 1, "training.keep_checkpoints", keep, "an integer >= 1")
        require(every_steps >= 0, "training.checkpoint_every_steps", every_steps, "an integer >= 0")
        require(every_seconds >= 0, "training.checkpoint_every_seconds", every_seconds, "seconds >= 0")
        self.directory = os.path.abspath(directory)
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.rejected: list[tuple[int, str]] = []
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data", "config"))
        self._last_save = time.monotonic()

    def time_due(self) -> bool:
        """Whether every_seconds passed since the last save, on this process (not agreed)."""
        return self.every_seconds > 0 and time.monotonic() - self._last_save >= self.every_seconds

    def due(self, step: int, time_due: bool | None = None) -> bool:
        """Whether the interval policy asks for a save at `step`. time_due: `time_due()` already
        agreed over processes by the caller (the training loop gathers it with its other flags);
        None agrees it here."""
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        return by_steps or (agree_any(self.time_due()) if time_due is None else time_due)

    def save(self, step: int, state, position: dict, config: dict) -> None:
        """Starts an asynchronous save of step `step` (skipped when that step is already saved)."""
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(position),
            config=ocp.args.JsonSave(config)), force=True)
        self._last_save = time.monotonic()

    def restore_latest(self, abstract_state) -> Restored | None:
        """The newest readable checkpoint restored into `abstract_state`, or None when there is none.

        abstract_state: pytree of jax.ShapeDtypeStruct with shardings (e.g. from jax.eval_shape).
        Unreadable steps are logged, recorded in `rejected`, moved aside, and the previous tried.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                items = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
                require(set(items.data) == {"epoch", "offset"}, f"checkpoint {step} data position",
                        dict(items.data), "{'epoch': int, 'offset': int}")
            except Exception as error:  # noqa: BLE001 - any failure to read means the step is unusable
                message = f"{type(error).__name__}: {str(error)[:300]}"
                logging.error("checkpoint step %d in %s cannot be restored (%s); moving it aside and "
                              "trying the previous one", step, self.directory, message)
                self.rejected.append((step, message))
                self._move_aside(step)
                continue
            logging.info("restored checkpoint step %d from %s", step, self.directory)
            return Restored(items.state, dict(items.data), step)
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
        """Waits for pending asynchronous saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
