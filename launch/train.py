"""Train an EDM U-Net, sample it and measure memorization; rerunning the same command resumes.

    python launch/train.py --config=configs/edm.py:smoke --workdir=runs/smoke
"""

from jaxmem.cli import run_main
from jaxmem.train import edm_experiment

if __name__ == "__main__":
    run_main(edm_experiment.run, default_workdir="runs/train", validate=edm_experiment.validate_config)
