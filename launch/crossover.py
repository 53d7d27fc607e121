"""Crossover M* versus N of the GMM memorisation laboratory.

    python launch/crossover.py --config=configs/crossover.py:demo --workdir=runs/demo
"""

from jaxmem.cli import run_main
from jaxmem import crossover

if __name__ == "__main__":
    run_main(crossover.run, default_workdir="runs/crossover", validate=crossover.validate_config)
