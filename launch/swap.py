"""Memorization of trained networks: swap table, per-level rates, mitigation, trajectories.

    python launch/swap.py --config=configs/swap.py:digits --workdir=runs/swap_digits

Trains (or resumes, or reuses) the memorizing, generalizing and mitigated models in
<workdir>/{memorizing,generalizing,mitigated} (or config.workdirs.*), then writes
swap_table.csv/.md, nearest.csv, swap_profile.csv/.png, per_level.csv/.png, mitigation.csv,
trajectory.csv, correlations.csv, guidance.csv, trajectory.png, pairs.png and results.md.
"""

from jaxmem import swap_experiment
from jaxmem.cli import run_main

if __name__ == "__main__":
    run_main(swap_experiment.run, default_workdir="runs/swap", validate=swap_experiment.validate_config)
