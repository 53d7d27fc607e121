"""Crossover M* versus N of the GMM memorisation laboratory (jaxmem.experiments.gmm_crossover).

    python launch/gmm_crossover.py --config=configs/gmm_crossover.py:demo --workdir=runs/demo
"""

from jaxmem.cli import run_main
from jaxmem.experiments import gmm_crossover

if __name__ == "__main__":
    run_main(gmm_crossover.run, default_workdir="runs/crossover", validate=gmm_crossover.validate_config)
