"""Run a sweep over config fields, one workdir per run, then aggregate the results.

    python launch/sweep.py --config=configs/gmm_crossover.py:demo --sweep=configs/sweeps/gmm_crossover_n.py \
        --workdir=runs/crossover_n
    python launch/sweep.py --config=configs/gmm_crossover.py:smoke --sweep.data.train_sizes='(8,),(12,)' \
        --config.training.steps=10 --workdir=runs/s --dry_run

--sweep=FILE (get_sweep() axes) and repeated --sweep.<field>=v1,v2,... flags combine into one
grid; --config.<field>=value overrides apply to every run. Rerunning the same command skips
finished runs, relaunches unfinished or failed ones and rewrites the report. A sweep file's
PLOT and ANALYSIS (e.g. configs/sweeps/unet_crossover_digits.py: the U-Net capacity crossover,
jaxmem.experiments.unet_crossover) are recorded in <workdir>/sweep.json, so --aggregate_only redoes them.

Before any run starts, the driver validates every run's config (the family's validate_config)
and refuses, exit 2, a sweep whose --parallel largest runs need more memory together than the
host has available (jaxmem.footprint; --nomemory_check skips that sum).

The driver holds <workdir>/.lock while it runs (a second driver on the same root exits 2; with
--run_index, as in SLURM array tasks that share a root, only each run's own lock is taken).
SIGTERM or SIGINT stops the running children (they save and stop), marks them unfinished and
exits 128 + the signal's number; a rerun resumes them. A run still held by a child of a driver
killed with SIGKILL is waited for (--busy_wait seconds) instead of being launched twice.
"""

import os
import sys

from absl import flags, logging

from jaxmem import experiments, footprint, io, lock
from jaxmem import workdir as ownership
from jaxmem.sweep import aggregate, execute, expand
from jaxmem.cli import WRITE_ERROR_EXIT_CODE, fail, quiet_libraries, run_app, user_errors
from jaxmem.config import load_config
from jaxmem.validation import require

flags.DEFINE_string("config", None, "configs/<experiment>.py:<preset> of every run.")
flags.DEFINE_string("sweep", None, "configs/sweeps/<name>.py defining get_sweep().")
flags.DEFINE_string("workdir", "runs/sweep", "Sweep root; each run gets a folder in it.")
flags.DEFINE_string("launcher", None, "Launcher of the runs (default: launch/<config file name>).")
flags.DEFINE_integer("parallel", 1, "Runs launched at once (each a subprocess).")
flags.DEFINE_integer("gpus_per_run", 0, "With --parallel: pin each run to its own GPUs (0: no pinning).")
flags.DEFINE_integer("run_index", None, "Run only run number INDEX (from 0) of the sweep (SLURM array tasks).")
flags.DEFINE_bool("dry_run", False, "Print the runs and their shell-quoted commands; launch nothing.")
flags.DEFINE_bool("aggregate_only", False, "Only rewrite results.csv/.md and report.md of --workdir.")
flags.DEFINE_bool("memory_check", True, "Refuse a sweep whose --parallel runs together need more memory than "
                  "the host has available (jaxmem.footprint); each run checks its own too.")
flags.DEFINE_float("busy_wait", 600.0, "Seconds to wait for a run whose workdir another process still holds.")
FLAGS = flags.FLAGS


def main(argv, sweep_flags, overrides):
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    quiet_libraries()
    root = os.path.abspath(FLAGS.workdir)
    with user_errors():
        require(FLAGS.parallel >= 1, "--parallel", FLAGS.parallel, "an integer >= 1 (runs launched at once)")
        require(FLAGS.gpus_per_run >= 0, "--gpus_per_run", FLAGS.gpus_per_run, "an integer >= 0 (0: no pinning)")
        require(FLAGS.busy_wait >= 0, "--busy_wait", FLAGS.busy_wait, "seconds >= 0")
    if FLAGS.aggregate_only:
        with user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE), user_errors(ValueError):
            ownership.check(root, "sweep", is_sweep_root)
            require(is_sweep_root(root), "--workdir", root, "the root of a sweep run before (it holds sweep.json)")
            logging.info("report: %s", aggregate.aggregate(root)["paths"]["report"])
        return
    if FLAGS.config is None:
        fail("--config=configs/<experiment>.py:<preset> is required")
    with user_errors(ValueError, FileNotFoundError):
        config = expand.apply_overrides(load_config(FLAGS.config), overrides)
        axes, plot = expand.load_sweep_file(FLAGS.sweep) if FLAGS.sweep else ([], None)
        analysis = expand.load_sweep_analysis(FLAGS.sweep) if FLAGS.sweep else None
        axes += expand.flag_axes(config, sweep_flags)
        runs = selected = expand.expand(config, axes, root)
        if FLAGS.run_index is not None:
            if not 0 <= FLAGS.run_index < len(runs):
                fail(f"--run_index={FLAGS.run_index} is invalid; allowed: 0..{len(runs) - 1}")
            selected = [runs[FLAGS.run_index]]
        launcher = os.path.abspath(FLAGS.launcher) if FLAGS.launcher else execute.default_launcher(FLAGS.config)
        require(os.path.isfile(launcher), "--launcher", FLAGS.launcher, "an existing launcher (launch/<x>.py)")
        # The root is a sweep's; each run's folder belongs to the config family's experiment (the
        # driver writes its bookkeeping there first, so it claims them for it). The family, not
        # --launcher: a wrapper launcher still runs launch/<experiment>.py inside.
        experiment = ownership.launcher_name(execute.default_launcher(FLAGS.config))
        ownership.check(root, "sweep", is_sweep_root)
        for run in selected:
            ownership.check(run.workdir, experiment, is_sweep_run)
        # Every run to be launched is validated here, before any starts; the memory of the
        # --parallel largest ones, which may run at once, must fit together.
        estimates = []
        for run in selected:
            if execute.status(run) != "done":
                with footprint.collecting() as found:
                    experiments.validate_config(experiment, expand.resolve(config, run.values))
                estimates.append({name: sum(parts.get(name, 0) for parts in found) for name in set().union(*found)})
        with footprint.checking(FLAGS.memory_check):
            footprint.require_together(estimates, FLAGS.parallel)
    if FLAGS.dry_run:
        print(execute.describe(selected, FLAGS.config, launcher, overrides))
        return
    with (user_errors(io.WriteError, code=WRITE_ERROR_EXIT_CODE), user_errors(lock.WorkdirBusy, ValueError),
          lock.held(root, enabled=FLAGS.run_index is None)):
        ownership.claim(root, "sweep", is_sweep_root)
        for run in selected:
            ownership.claim(run.workdir, experiment, is_sweep_run)
        aggregate.write_sweep_record(root, FLAGS.config, launcher, runs, plot, analysis)
        try:
            results = execute.execute(selected, config, FLAGS.config, launcher, overrides, FLAGS.parallel,
                                      FLAGS.gpus_per_run, FLAGS.busy_wait)
        except execute.SweepInterrupted as stopped:
            logging.warning("%s", stopped)
            sys.exit(128 + stopped.signum)
        logging.info("report: %s", aggregate.aggregate(root)["paths"]["report"])
    if any(s != "done" for s in results.values()):
        sys.exit(1)


def is_sweep_root(folder: str) -> bool:
    """A sweep root written before owner records (jaxmem.workdir): it holds sweep.json."""
    return os.path.exists(os.path.join(folder, "sweep.json"))


def is_sweep_run(folder: str) -> bool:
    """A run folder of a sweep written before owner records: it holds the driver's sweep_run.json."""
    return os.path.exists(os.path.join(folder, execute.RUN_FILE))


if __name__ == "__main__":
    with user_errors(ValueError):
        absl_argv, sweep_flags, overrides = expand.split_argv(sys.argv)
    run_app(lambda argv: main(argv, sweep_flags, overrides), argv=absl_argv)
