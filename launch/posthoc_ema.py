"""Memorization and sample quality against the EMA length, reconstructed after training from one
run's power-EMA snapshots (jaxmem.experiments.posthoc_ema).

    python launch/posthoc_ema.py --config=configs/posthoc_ema.py:digits --workdir=runs/posthoc_ema_digits

Trains (or resumes, or reuses) the model in <workdir>/model (or config.workdirs.model, a
launch/edm_training.py run of the same recipe), then writes posthoc_ema.csv/.md, per_level.csv,
posthoc_ema.png, report.md and summary.json.
"""

from jaxmem.cli import run_main
from jaxmem.experiments import posthoc_ema


def model_folders(config, workdir):
    """The EDM training workdir the experiment writes: it belongs to launch/edm_training.py."""
    return {posthoc_ema.model_folder(config, workdir): "edm_training"}


if __name__ == "__main__":
    run_main(posthoc_ema.run, default_workdir="runs/posthoc_ema", validate=posthoc_ema.validate_config,
             subfolders=model_folders)
