"""The shared absl entry point of every launcher in launch/.

    python launch/<x>.py --config=configs/<x>.py:<preset> [--config.a.b=value ...] --workdir=DIR

The resolved config is written into the workdir before the run starts; rerunning the same
command resumes (or skips finished work) from what the workdir holds.
"""

from __future__ import annotations

import logging as std_logging
import os
import pathlib
from collections.abc import Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from jaxmem import io, parallel


class _QuietLibraries(std_logging.Filter):
    """Drops INFO-level chatter of orbax (hundreds of lines per checkpoint); warnings pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def run_main(run: Callable[[ml_collections.ConfigDict, str], object], default_workdir: str) -> None:
    """Defines --config/--workdir, resolves them and calls run(config, workdir)."""
    config_flag = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<preset>",
                                                  lock_config=True)
    flags.DEFINE_string("workdir", default_workdir, "Folder that receives everything the run writes.")

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if config_flag.value is None:
            raise app.UsageError("--config=configs/<family>.py:<preset> is required")
        logging.get_absl_handler().addFilter(_QuietLibraries())
        parallel.initialize_distributed()
        workdir = os.path.abspath(flags.FLAGS.workdir)
        config = config_flag.value
        # A rerun with another config must not relabel the workdir before the experiment's own
        # fingerprint check has accepted it: then the config is recorded after a successful run.
        previous = os.path.join(workdir, "config.json")
        changed = os.path.exists(previous) and pathlib.Path(previous).read_text() != io.config_json(config)
        if not changed:
            io.save_config(workdir, config)
        logging.info("workdir: %s", workdir)
        run(config, workdir)
        if changed:
            io.save_config(workdir, config)

    app.run(main)
