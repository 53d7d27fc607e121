"""Train an EDM U-Net, sample it and measure memorization (jaxmem.experiments.edm_training);
rerunning the same command resumes.

    python launch/edm_training.py --config=configs/edm_training.py:smoke --workdir=runs/smoke
"""

from jaxmem.cli import run_main
from jaxmem.experiments import edm_training

if __name__ == "__main__":
    run_main(edm_training.run, default_workdir="runs/edm", validate=edm_training.validate_config)
