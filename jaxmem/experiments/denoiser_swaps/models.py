"""The models and noise regions of the swap experiment: the swap grid and its small / medium /
large windows, the memorizing, generalizing and mitigated recipes, each trained (or restored)
in its own edm workdir or read from a network imported by launch/import_edm.py (an NVlabs EDM
model), and their held-out images.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable

import ml_collections
import numpy as np

from jaxmem import noise
from jaxmem.experiments.denoiser_swaps import swapping
from jaxmem.validation import require, require_choice
from jaxmem.data import ImageSet
from jaxmem.denoisers import edm_import
from jaxmem.experiments import edm_training
from jaxmem.train import trainer

REGION_SOURCES = ("paper", "geometry", "explicit")
WINDOW_UNITS = ("index", "sigma")
REGION_NAMES = ("small", "medium", "large")


@dataclasses.dataclass
class Model:
    """A trained network: its config, training subset (and indices into the full split),
    sampling parameters, denoise(params, x, sigma) -> x0_hat, and images seen in training."""

    name: str
    config: ml_collections.ConfigDict
    train: ImageSet
    indices: np.ndarray
    params: object
    denoise: Callable
    images_seen: int

    def bound(self, guidance: float = 1.0) -> Callable:
        """denoise(x, sigma) with the parameters bound (and guidance scale g)."""
        denoise = self.denoise if guidance == 1 else edm_training.sampling_denoiser(self.config, guidance)
        return functools.partial(denoise, self.params)


def swap_grid(config: ml_collections.ConfigDict) -> np.ndarray:
    """The sampler grid [num_steps + 1] (EDM rho-grid ending in 0) of the swap table."""
    s = config.swap
    return noise.edm_sigmas(s.num_steps, s.sigma_min, s.sigma_max, s.rho)


def regions(config: ml_collections.ConfigDict, grid: np.ndarray) -> dict[str, swapping.Window]:
    """{"small", "medium", "large": inclusive step window} on the grid, validated and disjoint."""
    s, num_steps = config.swap, len(grid) - 1
    require_choice("swap.regions", s.regions, REGION_SOURCES)
    if s.regions == "paper":
        require(num_steps == noise.EDM_STEPS, "swap.num_steps", num_steps,
                f"{noise.EDM_STEPS} with swap.regions='paper' (the paper's indices are on the 18-level grid)")
        found = dict(swapping.PAPER_REGIONS)
    elif s.regions == "geometry":
        require(bool(s.regimes_path), "swap.regimes_path", s.regimes_path,
                "the regimes.json of a geometry run (launch/noise_regimes.py) when swap.regions='geometry'")
        found = swapping.regions_from_regimes(s.regimes_path, num_steps)
    else:
        require_choice("swap.windows_in", s.windows_in, WINDOW_UNITS)
        found = {}
        for name in REGION_NAMES:
            window = tuple(s.windows[name])
            if s.windows_in == "sigma":
                found[name] = swapping.sigma_window(grid, *window)
            else:
                found[name] = swapping.check_windows([window], num_steps)[0]
    missing = [name for name in REGION_NAMES if name not in found]
    require(not missing, "swap regions", sorted(found), f"all of small, medium, large on the {num_steps}-step "
            f"grid (missing: {', '.join(missing)}); give them with swap.regions='explicit'")
    swapping.check_windows(list(found.values()), num_steps)  # disjoint
    return {name: found[name] for name in REGION_NAMES}


def sigma_range(grid: np.ndarray, window: swapping.Window) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) of the levels of an inclusive step window."""
    return float(grid[window[1]]), float(grid[window[0]])


def mitigated_config(config: ml_collections.ConfigDict, grid: np.ndarray,
                     found: dict[str, swapping.Window]) -> ml_collections.ConfigDict:
    """A's config with training.loss_window = the mitigation region's sigma range, weight w.

    grid, found: the swap grid and its regions (swap_grid, regions)."""
    mitigated = copy.deepcopy(config.memorizing)
    window = found[config.mitigation.region]
    with mitigated.unlocked():
        mitigated.training.loss_window = sigma_range(grid, window)
        mitigated.training.loss_window_weight = float(config.mitigation.weight)
    return mitigated


def model_configs(config: ml_collections.ConfigDict, grid: np.ndarray,
                  found: dict[str, swapping.Window]) -> dict[str, ml_collections.ConfigDict]:
    """{"memorizing", "generalizing" (, "mitigated")}: the edm configs of the models to train."""
    configs = {"memorizing": config.memorizing, "generalizing": config.generalizing}
    if config.mitigation.enabled:
        configs["mitigated"] = mitigated_config(config, grid, found)
    return configs


IMPORTABLE = ("memorizing", "generalizing")  # the models that can be imported networks (C is trained)


def with_imported_models(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of the swap config in which each of memorizing / generalizing whose workdirs entry is
    an imported network (launch/import_edm.py) has that network's model group; its data group
    still says what the network was trained on (the memorization test's reference)."""
    resolved = copy.deepcopy(config)
    require(not (config.workdirs.mitigated and edm_import.is_imported(config.workdirs.mitigated)),
            "workdirs.mitigated", config.workdirs.mitigated, "a folder to train model C in, not an imported network")
    with resolved.unlocked():
        for name in IMPORTABLE:
            if config.workdirs[name] and edm_import.is_imported(config.workdirs[name]):
                resolved[name].model = edm_import.recorded_model(config.workdirs[name])
    return resolved


def train_or_restore(name: str, config: ml_collections.ConfigDict, folder: str) -> Model:
    """Trains model `name` in `folder` (resuming) or restores it when finished; a folder of another
    recipe is refused (edm_training.train_model). An imported network's folder is only read: its
    parameters, with the training set of config.data (config: resolved by with_imported_models)."""
    if edm_import.is_imported(folder):
        data, indices = edm_training.load_training_set(config)  # its shape checked at the door
        params, images_seen = edm_import.restore_params(folder)
        return Model(name, config, data, indices, params, edm_training.sampling_denoiser(config), images_seen)
    data, indices, result = edm_training.train_model(config, folder)
    steps = int(trainer.fetch_replicated(result.state.step))
    return Model(name, config, data, indices, edm_training.sampling_params(config, result),
                 edm_training.sampling_denoiser(config), steps * config.training.batch_size)


def model_folder(config: ml_collections.ConfigDict, workdir: str, name: str) -> str:
    """Where model `name` trains: config.workdirs.<name> (e.g. a finished launch/edm_training.py run of
    the same recipe) or <workdir>/<name>."""
    return config.workdirs[name] or os.path.join(workdir, name)


def held_out(model: Model, full: ImageSet) -> np.ndarray:
    """The images of the model's split `full` outside its training subset, [M, H, W, C] (M may be 0)."""
    keep = np.ones(len(full), bool)
    keep[model.indices] = False
    return full.images[keep]
