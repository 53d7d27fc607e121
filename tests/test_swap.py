"""Denoiser swapping: the base sampler without a window, memorization created by the swap, errors."""

import functools
import json

import numpy as np
import pytest

from jaxmem import memorization, noise, sampling
from jaxmem.experiments.denoiser_swaps import swapping
from jaxmem.denoisers import empirical, linear

SIGMAS = noise.edm_sigmas(18)


def swapped(base, donor, windows):
    """step_denoise(x, sigma, step) of the swap experiment's samplers: donor inside `windows`, base elsewhere."""
    table = swapping.window_array(windows, len(SIGMAS) - 1)
    return lambda x, sigma, step: swapping.switch_in_windows(step, table, donor, base, x, sigma)


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20, 16)).astype(np.float32)
    memorizer = functools.partial(empirical.apply, empirical.make_params(train))
    wiener = functools.partial(linear.apply, linear.make_params(train))
    start = sampling.edm_noise(1, 0, 24, (16,))
    return train, memorizer, wiener, start


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_empty_window_is_the_base_sampler(tiny, solver):
    # The same function; inside lax.cond XLA fuses the base branch differently: float32 rounding apart.
    train, memorizer, wiener, start = tiny
    base = sampling.edm_sample_steps(lambda x, sigma, step: wiener(x, sigma), start, SIGMAS, solver=solver)
    with_no_window = sampling.edm_sample_steps(swapped(wiener, memorizer, []), start, SIGMAS, solver=solver)
    np.testing.assert_allclose(np.asarray(with_no_window), np.asarray(base), rtol=1e-5, atol=1e-6)


def test_empirical_optimum_swapped_into_wiener_memorizes_over_the_whole_grid(tiny):
    train, memorizer, wiener, start = tiny

    def rate(window):
        step_denoise = swapped(wiener, memorizer, window)
        return memorization.trajectory_memorization(
            sampling.edm_sample_steps(step_denoise, start, SIGMAS, solver="euler"), train)["rate"]

    assert rate((0, 17)) == 1.0
    assert rate([]) <= 0.05
    # the donor must fire only inside the window: a window on the last step alone snaps to the data
    # (sigma_17 = 0.002), one on the first step alone does not
    assert rate((17, 17)) == 1.0 and rate((0, 0)) <= 0.05


def test_windows_in_sigma_and_the_paper_regions():
    # the paper's [0.14, 8.4] is rounded: the grid levels 6 and 13 are 8.4009 and 0.13952
    assert swapping.sigma_window(SIGMAS, 0.1395, 8.401) == swapping.PAPER_REGIONS["medium"]
    assert swapping.sigma_window(SIGMAS, 8.5, 100.0) == swapping.PAPER_REGIONS["large"]
    assert swapping.sigma_window(SIGMAS, 0.0, 0.139) == swapping.PAPER_REGIONS["small"]
    assert swapping.check_windows([(14, 17), (0, 5)], 18) == ((0, 5), (14, 17))
    regime_map = {"edm_grid": {"steps": 18}, "regimes": {
        "small": {"edm_indices": [15, 17]}, "medium": {"edm_indices": [7, 14]},
        "large": {"edm_indices": [0, 6]}, "neither": {"edm_indices": None}}}
    assert swapping.regions_from_regimes(regime_map) == {"small": (15, 17), "medium": (7, 14), "large": (0, 6)}


def test_regions_from_a_regimes_json_file(tmp_path):
    path = tmp_path / "regimes.json"
    path.write_text(json.dumps({"edm_grid": {"steps": 10}, "regimes": {"medium": {"edm_indices": [2, 5]}}}))
    assert swapping.regions_from_regimes(str(path), num_steps=10) == {"medium": (2, 5)}
    with pytest.raises(ValueError, match="edm_grid.steps"):
        swapping.regions_from_regimes(str(path))


@pytest.mark.parametrize("lo, hi, message", [(100.0, 200.0, "outside"), (0.0, 0.001, "outside"),
                                             (8.0, 8.3, "at least one grid level"), (2.0, 1.0, "lo <= hi")])
def test_bad_sigma_windows(lo, hi, message):
    with pytest.raises(ValueError, match=message):
        swapping.sigma_window(SIGMAS, lo, hi)


@pytest.mark.parametrize("windows, message", [([(0, 6), (6, 13)], "overlap"), ((5, 3), "first <= last"),
                                              ((0, 18), "first <= last"), ([(0.5, 3)], "inclusive step")])
def test_bad_index_windows(windows, message):
    with pytest.raises(ValueError, match=message):
        swapping.check_windows(windows, 18)


def test_denoisers_with_different_data_shapes_are_rejected(tiny):
    train, memorizer, wiener, start = tiny
    other = functools.partial(linear.apply, linear.make_params(np.ones((5, 12), np.float32) * np.arange(5)[:, None]))
    with pytest.raises(ValueError, match="donor denoiser does not accept data of shape"):
        swapping.check_same_shapes(wiener, other, (16,))
    with pytest.raises(ValueError, match="output shape"):
        swapping.check_same_shapes(wiener, lambda x, sigma: x[:, :8], (16,))
