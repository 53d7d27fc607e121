"""The experiments: one module or package per published result, each a protocol over the library.

  gmm_crossover    "On the Edge of Memorization" (paper B): M* versus N in the GMM laboratory
                   (configs/crossover.py, launch/crossover.py)
  noise_regimes    "Two Calm Ends and the Wild Middle" (paper A): concentration, coverage, MSE,
                   the small / medium / large regimes (configs/geometry.py, launch/geometry.py)
  edm_training     an EDM U-Net trained, sampled and tested for memorization (configs/edm.py,
                   launch/edm.py)
  denoiser_swaps   papers A and C: swap table, per-level rates, mitigation, trajectories
                   (configs/swap.py, launch/swap.py)
  unet_crossover   paper B's open question for U-Nets: capacity* versus N over a sweep
                   (configs/sweeps/unet_crossover_*.py, the sweep's ANALYSIS)

Each exposes validate_config(config) and run(config, workdir) -> summary; the launchers only
parse flags and call them (jaxmem.cli.run_main).
"""

import importlib

import ml_collections

# The experiment each config family's launcher runs (launch/<family>.py, configs/<family>.py).
EXPERIMENT_OF_FAMILY = {"crossover": "gmm_crossover", "geometry": "noise_regimes", "edm": "edm_training",
                        "swap": "denoiser_swaps", "quality": "sample_quality"}


def validate_config(family: str, config: ml_collections.ConfigDict) -> None:
    """The validate_config of the experiment of config family `family` (nothing for a family
    without one)."""
    if family in EXPERIMENT_OF_FAMILY:
        importlib.import_module(f"{__name__}.{EXPERIMENT_OF_FAMILY[family]}").validate_config(config)
