"""Denoiser swapping along the EDM sampling grid ("Two Calm Ends and the Wild Middle", Table 1).

The sampler (jaxmem.sampling.edm_sample_steps) calls a step denoiser with the step index i of
the grid sigma_0 > ... > sigma_{n-1} > 0. A swap uses the donor network B for the calls whose
index lies inside an inclusive window [first, last] (or any of several disjoint windows) and
the base network A elsewhere:
    D_i(x) = D_B(x; sigma_i)  if first <= i <= last,   D_A(x; sigma_i)  otherwise.
With the paper's Euler sampler on the 18-level grid, the regions are large = 0-5 (sigma > 8.4),
medium = 6-13 ([0.14, 8.4]) and small = 14-17 (< 0.14); or they come from a geometry run's
regimes.json (jaxmem.geometry.regimes.regime_map).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import noise
from jaxmem.validation import require

Window = tuple[int, int]  # inclusive step indices (first, last)

PAPER_REGIONS: dict[str, Window] = {"large": (0, 5), "medium": (6, 13), "small": (14, 17)}


def _levels(sigmas) -> np.ndarray:
    """The sampler grid's positive levels [n] from a grid [n + 1] ending in 0 (or already without it)."""
    sigmas = np.asarray(sigmas, np.float64)
    require(sigmas.ndim == 1 and sigmas.size >= 2 and bool(np.all(np.diff(sigmas) < 0)), "sigmas", sigmas,
            "a decreasing EDM grid (jaxmem.noise.edm_sigmas)")
    return sigmas[:-1] if sigmas[-1] == 0 else sigmas


def sigma_window(sigmas, sigma_lo: float, sigma_hi: float) -> Window:
    """Inclusive index window of the grid levels with sigma_lo <= sigma_i <= sigma_hi.

    sigmas: the sampler grid [n + 1] (ending in 0) or its levels [n]. Raises ValueError when the
    interval is reversed, lies outside the grid, or falls between two levels (no level inside).
    """
    levels = _levels(sigmas)
    require(0 <= sigma_lo <= sigma_hi, "sigma window (lo, hi)", (sigma_lo, sigma_hi), "0 <= lo <= hi")
    require(sigma_hi >= levels[-1] and sigma_lo <= levels[0], "sigma window (lo, hi)", (sigma_lo, sigma_hi),
            f"an interval that meets the grid [{levels[-1]:.4g}, {levels[0]:.4g}] (it lies outside)")
    window = noise.edm_index_range(levels, sigma_lo, sigma_hi)
    require(window is not None, "sigma window (lo, hi)", (sigma_lo, sigma_hi),
            "an interval holding at least one grid level; levels: " + ", ".join(f"{s:.4g}" for s in levels))
    return window


def check_windows(windows: Sequence[Window] | Window, num_steps: int) -> tuple[Window, ...]:
    """Validated, sorted windows: each 0 <= first <= last < num_steps, no two overlapping.

    windows: one (first, last) pair or a sequence of pairs (empty: no swap).
    """
    if len(windows) == 2 and all(isinstance(v, int | np.integer) for v in windows):
        windows = [windows]
    checked = []
    for window in windows:
        require(len(window) == 2 and all(isinstance(v, int | np.integer) for v in window)
                and 0 <= window[0] <= window[1] < num_steps, "window", window,
                f"inclusive step indices (first, last) with 0 <= first <= last <= {num_steps - 1}")
        checked.append((int(window[0]), int(window[1])))
    checked.sort()
    for before, after in zip(checked, checked[1:]):
        require(after[0] > before[1], "windows", checked, "disjoint windows (two of them overlap)")
    return tuple(checked)


def regions_from_regimes(regimes: dict | str, num_steps: int = noise.EDM_STEPS) -> dict[str, Window]:
    """{"small" | "medium" | "large": window} from a geometry regime map (dict or regimes.json path).

    Only regimes that hold at least one level of the regime map's EDM grid are returned; that
    grid must have num_steps levels (the sampler's).
    """
    expected = "a regime map of a geometry run (its regimes.json: 'regimes' and 'edm_grid', launch/noise_regimes.py)"
    if isinstance(regimes, str):
        try:
            with open(regimes) as f:
                regimes = json.load(f)
        except (OSError, ValueError) as error:  # ValueError: not JSON, not text
            require(False, "swap.regimes_path", regimes, f"{expected}; reading it failed: {error}")
    try:
        steps = regimes["edm_grid"]["steps"]
        windows = {name: regime["edm_indices"] for name, regime in regimes["regimes"].items()}
        windows = {name: tuple(int(i) for i in w) for name, w in windows.items() if name in PAPER_REGIONS and w}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        require(False, "regime map", f"missing or malformed: {error}", expected)
    require(steps == num_steps, "regime map edm_grid.steps", steps, f"{num_steps}, the sampler's grid")
    return windows


def check_same_shapes(base: Callable, donor: Callable, data_shape: tuple[int, ...]) -> None:
    """Raises ValueError unless both denoisers map [1, *data_shape] to that shape (abstract probe)."""
    x = jax.ShapeDtypeStruct((1, *data_shape), jnp.float32)
    sigma = jax.ShapeDtypeStruct((), jnp.float32)
    for name, denoise in (("base", base), ("donor", donor)):
        try:
            out = jax.eval_shape(denoise, x, sigma)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{name} denoiser does not accept data of shape {tuple(data_shape)}: {error}") from error
        require(out.shape == x.shape, f"{name} denoiser output shape", out.shape,
                f"{x.shape}, the input's shape (denoisers with different data shapes cannot be swapped)")


def window_array(windows: Sequence[Window] | Window, num_steps: int, size: int | None = None) -> np.ndarray:
    """int32 [size, 2] of the validated windows, padded with (-1, -1) rows that match no step.

    A traced form of the windows: one compiled sampler serves every window of a table
    (see `switch_in_windows`). size: rows (default: the number of windows, at least 1).
    """
    windows = check_windows(windows, num_steps)
    size = max(len(windows), 1) if size is None else size
    require(size >= len(windows), "window array size", size, f">= {len(windows)}, the number of windows")
    out = np.full((size, 2), -1, np.int32)
    if windows:
        out[:len(windows)] = windows
    return out


def in_windows(step, windows) -> jax.Array:
    """bool scalar: step lies in one of the windows, int32 [W, 2] of inclusive (first, last)."""
    windows = jnp.asarray(windows, jnp.int32)
    return jnp.any((windows[:, 0] <= step) & (step <= windows[:, 1]))


def switch_in_windows(step, windows, donor: Callable, base: Callable, x, sigma) -> jax.Array:
    """donor(x, sigma) when `step` lies in one of the windows (int32 [W, 2], may be traced), else
    base(x, sigma): the one branch of every swapped sampler."""
    return jax.lax.cond(in_windows(step, windows), donor, base, x, sigma)
