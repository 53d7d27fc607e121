"""Memorization and sample quality against the EMA length, reconstructed after training from one run's
power-EMA snapshots (launch/posthoc_ema.py, jaxmem/experiments/posthoc_ema.py).

Presets (--config=configs/posthoc_ema.py:<preset>):
  smoke    the swap smoke's memorizing U-Net, 6 steps with snapshots every 2, three EMA lengths, 16
           samples each (the tests)
  digits   the memorizing model of configs/denoiser_swaps.py:digits (32 8x8 digits, 4,000 steps, a snapshot of
           both power EMAs every 50 steps), 10 EMA lengths from 0.01 to 0.25, 512 samples each
  mnist    the memorizing model of configs/denoiser_swaps.py:mnist (100 MNIST digits), the same lengths

Fields:
  model      a complete configs/edm_training.py config, trained with power-EMA snapshots
             (model.training.snapshot_every_steps > 0); its sampling group (solver, num_steps,
             sigma_min, sigma_max, rho, num_samples, seed, batch_size) samples every EMA length from
             the same starting noise
  workdirs   model: where the model trains ('' = <workdir>/model); point it at a finished
             launch/edm_training.py run of the same recipe to reuse it (a different recipe is refused)
  posthoc    sigma_rels (the relative EMA lengths to reconstruct, each in (0, 0.30)), end_step (the
             step the reconstructed averages end at; 0 = the last snapshot), max_relative_error (the
             largest relative L2 error of a reconstructed averaging profile accepted; a length the
             snapshots cannot represent is refused before any sampling)
  per_level  num_queries (training images denoised in one step at every level of the sampling
             grid; 0 = no per-level profile), seed, chunk_size
  eval       level (confidence of the Wilson intervals)
  quality    enabled (FID, KID, precision/recall of every row; needs the Inception weights: python
             launch/convert_inception.py; off in smoke), num_samples (per row, 0 = all),
             num_reference (images of the model's data split scored against, a class-balanced
             subset; 0 = the whole split), reference_seed, kid_subsets, kid_subset_size, batch_size
             (network batch over all devices; 0 = auto)
"""

import copy
import os

import ml_collections

from jaxmem.config import load_config, select_preset

SWAP_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "denoiser_swaps.py")
SIGMA_RELS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.10, 0.13, 0.16, 0.20, 0.25)


def _base(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model
    config.workdirs = ml_collections.ConfigDict(dict(model=""))
    config.posthoc = ml_collections.ConfigDict(dict(sigma_rels=SIGMA_RELS, end_step=0, max_relative_error=0.05))
    config.per_level = ml_collections.ConfigDict(dict(num_queries=256, seed=0, chunk_size=256))
    config.eval = ml_collections.ConfigDict(dict(level=0.95))
    config.quality = ml_collections.ConfigDict(dict(
        enabled=True, num_samples=0, num_reference=0, reference_seed=0, kid_subsets=100, kid_subset_size=1000,
        batch_size=0))
    return config


def _memorizing(swap_preset: str) -> ml_collections.ConfigDict:
    """An unlocked copy of the memorizing model of configs/denoiser_swaps.py:<swap_preset>."""
    model = copy.deepcopy(load_config(f"{SWAP_CONFIG}:{swap_preset}").memorizing)
    model.unlock()
    return model


def digits() -> ml_collections.ConfigDict:
    config = _base(_memorizing("digits"))
    config.model.sampling.update(num_samples=512, batch_size=512)
    return config


def mnist() -> ml_collections.ConfigDict:
    config = _base(_memorizing("mnist"))
    config.model.sampling.update(num_samples=512, batch_size=256)
    return config


def smoke() -> ml_collections.ConfigDict:
    config = _base(_memorizing("smoke"))
    config.model.model.update(label_dim=0, label_dropout=0.0)
    config.model.sampling.update(num_samples=16, batch_size=16)
    config.posthoc.update(sigma_rels=(0.05, 0.08, 0.10), max_relative_error=0.5)
    config.per_level.update(num_queries=8, chunk_size=8)
    config.quality.enabled = False  # the Inception at 299 x 299 costs more than the smoke test itself
    return config


PRESETS = {"digits": digits, "mnist": mnist, "smoke": smoke}


def get_config(arg=None) -> ml_collections.ConfigDict:
    return select_preset(arg, PRESETS)
