"""Geometry of memorization over the noise grid: concentration, coverage, MSE, regimes.

    python launch/geometry.py --config=configs/geometry.py:digits --workdir=runs/geometry
"""

from jaxmem.cli import run_main
from jaxmem.geometry import experiment

if __name__ == "__main__":
    run_main(experiment.run, default_workdir="runs/geometry", validate=experiment.check_config)
