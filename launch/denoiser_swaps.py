"""Memorization of trained networks: swap table, per-level rates, mitigation, trajectories
(jaxmem.experiments.denoiser_swaps).

    python launch/denoiser_swaps.py --config=configs/denoiser_swaps.py:digits --workdir=runs/swap_digits

Trains (or resumes, or reuses) the memorizing, generalizing and mitigated models in
<workdir>/{memorizing,generalizing,mitigated} (or config.workdirs.*; memorizing and generalizing
may name a network imported by launch/import_edm.py), then writes
swap_table.csv/.md, nearest.csv, swap_profile.csv/.png, per_level.csv/.png, mitigation.csv,
trajectory.csv, correlations.csv, guidance.csv, trajectory.png, pairs.png and results.md.
"""

from jaxmem.cli import run_main
from jaxmem.denoisers import edm_import
from jaxmem.experiments import denoiser_swaps
from jaxmem.experiments.denoiser_swaps.models import model_folder


def model_folders(config, workdir):
    """The EDM training workdirs the swap experiment writes: each belongs to launch/edm_training.py. The
    folder of a network imported by launch/import_edm.py is only read, so it is not claimed."""
    names = ["memorizing", "generalizing"] + (["mitigated"] if config.mitigation.enabled else [])
    folders = [model_folder(config, workdir, name) for name in names]
    return {folder: "edm" for folder in folders if not edm_import.is_imported(folder)}


if __name__ == "__main__":
    run_main(denoiser_swaps.run, default_workdir="runs/swap", validate=denoiser_swaps.validate_config,
             subfolders=model_folders)
