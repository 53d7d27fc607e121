"""Coverage of held-out data by the Gaussian shells around the training points.

Laurent–Massart (c = 5 by default): for z ~ N(0, I_d), P(|z|^2 - d >= 2 sqrt(c d) + 2c) <= e^-c and
P(d - |z|^2 >= 2 sqrt(c d)) <= e^-c, so the noisy copies of x_i concentrate in the shell

    S_sigma(x_i) = {y : sigma r_in <= |y - x_i| <= sigma r_out},
    r_in = sqrt(d - 2 sqrt(c d)),   r_out = sqrt(d + 2 sqrt(c d) + 2c)

(r_in = 0 when d < 4c: the lower bound is then vacuous). Coverage (paper A; docs/formulas.md)

    C_sigma = P(x + sigma z in union_i S_sigma(x_i)),   x a held-out point,

is estimated by Monte Carlo over held-out points and draws of z; each noisy query gets an exact
union-of-annuli test against every training point. The squared distances at all levels come
from the same certified terms as the concentration kernel (`empirical.scan_blocks`: two matmuls
per block on centred data, direct differences wherever the rounding-error certificate asks, e.g.
near duplicates): |x + s z - x_i|^2 = G_i + 2 s C_i + s^2 |z|^2. Every distance then errs by at
most a small multiple of a direct float32 evaluation's worst case, so only a query within that
error of a shell boundary can be classified differently from exact arithmetic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.validation import require
from jaxmem.denoisers import empirical
from jaxmem.geometry.queries import check_queries, map_query_chunks


def shell_radii(d: int, c: float = 5.0) -> tuple[float, float]:
    """(r_in, r_out) of the unit-sigma Laurent–Massart shell in dimension d (float64)."""
    require(int(d) >= 1, "d (dimension)", d, "an integer >= 1")
    require(np.isfinite(c) and c > 0, "c (shell confidence)", c, "a finite c > 0")
    root = 2.0 * np.sqrt(c * d)
    return float(np.sqrt(max(d - root, 0.0))), float(np.sqrt(d + root + 2.0 * c))


def chi2_shell_mass(d: int, c: float = 5.0) -> float:
    """Exact P(r_in^2 <= chi2_d <= r_out^2) = P(d/2, r_out^2/2) - P(d/2, r_in^2/2).

    P is the regularized lower incomplete gamma function (jax.scipy.special.gammainc, evaluated
    in float64). This is the coverage of a single training point by its own noisy copies.
    """
    r_in, r_out = shell_radii(d, c)
    with jax.enable_x64(True):
        half_d = jnp.float64(d / 2.0)
        mass = (jax.scipy.special.gammainc(half_d, jnp.float64(r_out**2 / 2.0))
                - jax.scipy.special.gammainc(half_d, jnp.float64(r_in**2 / 2.0)))
        return float(mass)


@jax.jit
def coverage_kernel(clean, noise, params, sigmas, radii) -> jax.Array:
    """Per-query union-of-annuli test at every level; clean/noise [Q, d], sigmas [L], radii (r_in, r_out).

    Returns covered [Q, L] bool: exists i with (s r_in)^2 <= |x_q + s z_q - x_i|^2 <= (s r_out)^2.
    """
    clean, noise, sigmas = clean.astype(jnp.float32), noise.astype(jnp.float32), sigmas.astype(jnp.float32)
    noise_sq = jnp.sum(noise * noise, axis=-1)[:, None]

    def fold(covered, terms, centred_points, valid):
        gram, cross = terms

        def level(args):  # one level at a time (lax.map): [Q, block] temporaries stay cache-resident
            s, covered_at_level = args
            sq_dist = gram + 2.0 * s * cross + s * s * noise_sq
            inside = (sq_dist >= jnp.square(s * radii[0])) & (sq_dist <= jnp.square(s * radii[1])) & valid
            return covered_at_level | jnp.any(inside, axis=-1)
        return jax.lax.map(level, (sigmas, covered))

    init = jnp.zeros((sigmas.shape[0], clean.shape[0]), bool)
    return empirical.scan_blocks(params, clean, fold, init, noise).T


def shell_coverage(params: dict, clean: np.ndarray, noise: np.ndarray, sigmas: np.ndarray, c: float = 5.0,
                   chunk_size: int = 1024, mesh=None) -> np.ndarray:
    """Covered indicator of each noisy query x_q + s z_q at each level s, [Q, L] bool.

    params: `empirical.make_params(train)`; clean, noise: [Q, d] (held-out points repeated per
    draw, z ~ N(0, I) shared by all levels); sigmas [L] > 0; c: Laurent–Massart constant.
    Average over queries (`queries.mean_and_standard_error`) for C_sigma and its standard error.
    """
    clean, noise = np.asarray(clean, np.float32), np.asarray(noise, np.float32)
    check_queries(params, clean, noise)
    empirical.check_sigma(sigmas, "sigmas")
    radii = np.asarray(shell_radii(clean.shape[1], c), np.float32)
    return map_query_chunks(coverage_kernel, (clean, noise), (params, np.asarray(sigmas, np.float32), radii),
                            chunk_size, mesh, name="coverage")
