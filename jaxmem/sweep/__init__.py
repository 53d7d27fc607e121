"""Flag-driven sweeps: expand a grid over config fields into runs, execute them, aggregate results.

    python launch/sweep.py --config=configs/gmm_crossover.py:demo --sweep=configs/sweeps/gmm_crossover_n.py \
        [--sweep.training.steps=1000,2000] [--config.a.b=value] --workdir=runs/sweep [--dry_run]

A sweep is a list of axes; the runs are the Cartesian product of the axes. An axis is a dict
from config field paths to lists of values: with one field it is a grid axis, with several
fields the lists are walked together (zipped; equal lengths). A sweep file defines
`get_sweep()` returning that list, e.g. `[{"data.train_sizes": [(8,), (16,)]},
{"training.steps": [10, 20], "training.chunk_steps": [5, 10]}]` gives 2 x 2 runs. A sweep
file may also define `PLOT = {"x": column, "y": [columns]}` (columns of results.csv): the
aggregated figure results.png, one line per y column against x over the finished runs; and
`ANALYSIS = "package.module:function"` with optional `ANALYSIS_OPTIONS = {...}` (JSON values):
aggregate() calls function(rows, root, **options) with the results rows and the sweep root; it
writes its own files into the root (through jaxmem.io) and returns Markdown lines that
report.md appends (figures linked by paths relative to the root), e.g.
jaxmem.experiments.unet_crossover:analyze. PLOT and ANALYSIS are stored in sweep.json, so
`--aggregate_only` redoes them.

Every run gets its own workdir `<root>/<field>=<value>__...` and is launched as a subprocess of
the family's launcher with `--config.<field>=<value>` overrides, so it writes what a single
run writes and resumes from its own checkpoints. Per-run bookkeeping:
  sweep_run.json        the run's name and swept values
  config.json/.txt      the resolved config (written by the run's launcher)
  run.log               stdout and stderr of every attempt, each after a '--- attempt started' line
  attempts.jsonl        one line per attempt: exit code, seconds
  DONE                  written atomically after a zero exit; a rerun skips the run
  FAILED                exit code and the tail of stderr; removed when the run is relaunched
`aggregate(root)` writes results.csv, results.md and report.md into the sweep root (plus
results.png and the analysis' files when the sweep file asks for them).

The package: expand.py (flags and sweep files into typed runs), execute.py (one subprocess per
run, its bookkeeping and status), aggregate.py (results tables, report.md, figure, analysis).
"""
