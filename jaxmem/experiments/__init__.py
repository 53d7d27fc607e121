"""The experiments: one module or package per published result, each a protocol over the library.

One name per experiment: experiment <name> is jaxmem/experiments/<name>, run by launch/<name>.py
with the presets of configs/<name>.py (sweeps: configs/sweeps/<name>_*.py), its published
results in results/<name>/.

  gmm_crossover    "On the Edge of Memorization" (paper B): M* versus N in the GMM laboratory
  noise_regimes    "Two Calm Ends and the Wild Middle" (paper A): concentration, coverage, MSE,
                   the small / medium / large regimes
  edm_training     an EDM U-Net trained, sampled and tested for memorization
  denoiser_swaps   papers A and C: swap table, per-level rates, mitigation, trajectories
  sample_quality   FID, KID, precision / recall of an .npz of samples against an image source
  posthoc_ema      memorization against the EMA length, from one run's power-EMA snapshots
  unet_crossover   paper B's open question for U-Nets: capacity* versus N over a sweep
                   (configs/sweeps/unet_crossover_*.py, the sweep's ANALYSIS; no launcher)

Each exposes validate_config(config) and run(config, workdir) -> summary; the launchers only
parse flags and call them (jaxmem.cli.run_main).
"""

import importlib

import ml_collections

# The experiments with a launcher of their own: launch/<name>.py runs the one of configs/<name>.py.
EXPERIMENTS = ("gmm_crossover", "noise_regimes", "edm_training", "denoiser_swaps", "sample_quality", "posthoc_ema")


def validate_config(name: str, config: ml_collections.ConfigDict) -> None:
    """The validate_config of experiment `name` (a launcher's name; nothing for a launcher that
    runs no experiment of its own)."""
    if name in EXPERIMENTS:
        importlib.import_module(f"{__name__}.{name}").validate_config(config)
