"""Geometry of memorization over the noise grid: concentration, coverage, MSE, regimes
(jaxmem.experiments.noise_regimes).

    python launch/noise_regimes.py --config=configs/noise_regimes.py:digits --workdir=runs/geometry
"""

from jaxmem.cli import run_main
from jaxmem.experiments import noise_regimes

if __name__ == "__main__":
    run_main(noise_regimes.run, default_workdir="runs/geometry", validate=noise_regimes.validate_config)
