"""Power-function EMA of the parameters and its post-hoc reconstruction (Karras et al., "Analyzing
and Improving the Training Dynamics of Diffusion Models", 2024, section 3).

Power EMA with exponent gamma > -1, after training step t = 1, 2, ... (steps are the time unit):
    theta_hat(t) = beta(t) theta_hat(t - 1) + (1 - beta(t)) theta(t),   beta(t) = (1 - 1/t)^(gamma + 1)
(beta(1) = 0, so theta_hat(1) = theta(1)). Unrolled, step tau enters with weight
(tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1): the integral over (tau - 1, tau] of the
averaging profile
    p_{t,gamma}(x) = (gamma + 1) x^gamma / t^(gamma + 1)   on [0, t]   (0 beyond t),
so theta_hat(t) = integral of p_{t,gamma}(x) theta(ceil(x)) dx exactly, for any trajectory
theta held constant within each step. Every profile has unit mass.

Its length is sigma_rel, the profile's standard deviation relative to t:
    sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)).
sigma_rel rises from 0 (gamma -> -1) to its maximum SIGMA_REL_MAX ~ 0.300 at gamma = GAMMA_AT_MAX
= (sqrt(5) - 3) / 2 ~ -0.382 and falls back to 0 as gamma -> infinity (sigma_rel ~ 1 / gamma);
the long-training branch gamma > GAMMA_AT_MAX is the one used (gamma_from_sigma_rel).

Post-hoc reconstruction: snapshots theta_hat_i of power EMAs (gamma_i, ending at t_i) combine
into sum_i w_i theta_hat_i, whose profile is sum_i w_i p_i. The weights minimise
|sum_i w_i p_i - q|^2 in L2 over x for a target profile q = p_{t,gamma}, under sum_i w_i = 1 (the
target's mass, so the combination is an average of parameters, never a rescaling). With
    <p_{t1,g1}, p_{t2,g2}> = (g1 + 1)(g2 + 1) min(t1, t2)^(g1 + g2 + 1) / ((g1 + g2 + 1) t1^(g1+1) t2^(g2+1))
that is one small linear (KKT) system.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.validation import ConfigError, require

GAMMA_AT_MAX = (math.sqrt(5.0) - 3.0) / 2.0
SIGMA_REL_MAX = math.sqrt((GAMMA_AT_MAX + 1) / ((GAMMA_AT_MAX + 2) ** 2 * (GAMMA_AT_MAX + 3)))
# Largest relative L2 error of a reconstructed profile that solve_weights accepts by default.
MAX_RELATIVE_ERROR = 0.05


def sigma_rel_from_gamma(gamma):
    """sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))) for gamma > -1 (broadcasts)."""
    gamma = np.asarray(gamma, np.float64)
    require(bool(np.all(gamma > -1)), "gamma", gamma.tolist(), "exponents > -1 (an integrable profile)")
    return np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def gamma_from_sigma_rel(sigma_rel: float) -> float:
    """The exponent gamma > GAMMA_AT_MAX whose profile has relative standard deviation sigma_rel.

    sigma_rel in (0, SIGMA_REL_MAX ~ 0.300). The largest real root of the cubic
    sigma_rel^2 (gamma + 2)^2 (gamma + 3) - (gamma + 1) = 0.
    """
    require(0 < sigma_rel < SIGMA_REL_MAX, "sigma_rel", sigma_rel,
            f"a relative EMA length in (0, {SIGMA_REL_MAX:.4f}) (the longest power-function profile)")
    s2 = float(sigma_rel) ** 2
    # s2 (g^3 + 7 g^2 + 16 g + 12) - g - 1
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    return float(max(r.real for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r))))


def power_ema_decay(step, gamma: float) -> jax.Array:
    """beta(t) = (1 - 1/t)^(gamma + 1) of the update after step t >= 1 (float32; 0 at t = 1),
    as exp((gamma + 1) log1p(-1/t)), which keeps 1 - beta accurate for large t and gamma."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.exp((gamma + 1.0) * jnp.log1p(-1.0 / t))


def ema_sigma_rel(decays) -> float:
    """sigma_rel of any EMA from its per-step decays [T] (avg <- d_t avg + (1 - d_t) theta(t) after
    step t, e.g. the classic EMA with ramp-up): the standard deviation of its step weights
    w_t = (1 - d_t) prod_{s > t} d_s (the initial parameters at t = 0 keep prod_s d_s), step t
    counted at the middle of (t - 1, t] as the profiles do, divided by T."""
    decays = np.asarray(decays, np.float64)
    require(decays.ndim == 1 and len(decays) >= 1 and bool(np.all((decays >= 0) & (decays <= 1))), "decays",
            decays.shape, "a vector [T] of per-step decays in [0, 1]")
    later = np.append(np.cumprod(decays[::-1])[::-1][1:], 1.0)  # prod_{s > t} d_s
    weights = np.append(np.prod(decays), (1 - decays) * later)
    times = np.append(0.0, np.arange(1, len(decays) + 1) - 0.5)
    mean = weights @ times
    return float(np.sqrt(weights @ (times - mean) ** 2) / len(decays))


def profile_inner(t1, gamma1, t2, gamma2):
    """<p_{t1,gamma1}, p_{t2,gamma2}> in L2 over [0, inf) (broadcasts; float64).

    t1, t2 > 0: end times (steps); gamma1, gamma2 > -1 with gamma1 + gamma2 > -1. Units: 1/steps.
    """
    t1, g1, t2, g2 = (np.asarray(v, np.float64) for v in (t1, gamma1, t2, gamma2))
    total = g1 + g2 + 1
    # in logs: the powers of t overflow for sharp profiles (gamma ~ 100) and long runs
    log = (np.log((g1 + 1) * (g2 + 1) / total) + total * np.log(np.minimum(t1, t2))
           - (g1 + 1) * np.log(t1) - (g2 + 1) * np.log(t2))
    return np.exp(log)


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """weights [K] (sum 1) of the snapshots, the relative L2 error |sum w_i p_i - q| / |q| of the
    combined profile, and the target (sigma_rel, gamma, end step)."""

    weights: np.ndarray
    relative_error: float
    sigma_rel: float
    gamma: float
    end_step: int


def solve_weights(snapshot_steps, snapshot_gammas, sigma_rel: float, end_step: int | None = None,
                  max_relative_error: float = MAX_RELATIVE_ERROR) -> Reconstruction:
    """Weights of the snapshots whose combined profile is closest in L2 to the target power EMA.

    snapshot_steps: [K] end steps t_i >= 1 of the stored averages; snapshot_gammas: [K] their
    exponents (one entry per stored average: a snapshot step holding two averages appears twice).
    sigma_rel: the target's length; end_step: the target's end (default: the last snapshot step).
    Raises ConfigError for an unreachable target: sigma_rel outside (0, SIGMA_REL_MAX), fewer than
    two snapshots, an end step after the last snapshot, or a best combination whose relative L2
    error exceeds max_relative_error (the snapshots cannot represent that length there).
    """
    steps = np.asarray(snapshot_steps, np.float64).reshape(-1)
    gammas = np.asarray(snapshot_gammas, np.float64).reshape(-1)
    require(steps.shape == gammas.shape, "snapshot_steps, snapshot_gammas", (steps.shape, gammas.shape),
            "arrays of equal length (one exponent per stored average)")
    require(len(steps) >= 2, "snapshots", len(steps), "at least 2 stored averages (one snapshot can only "
            "reproduce itself; train longer or store snapshots more often)")
    require(bool(np.all(steps >= 1)), "snapshot_steps", steps.tolist(), "steps >= 1")
    sigma_rel_from_gamma(gammas)  # checks gamma > -1
    gamma = gamma_from_sigma_rel(sigma_rel)
    last = int(steps.max())
    end = last if end_step is None else int(end_step)
    require(1 <= end <= last, "end_step", end, f"a step in [1, {last}] (the last snapshot; the averages after "
            "it were never stored)")
    # Inner products are homogeneous of degree -1 in time: measure time in units of `end`.
    t, te = steps / end, 1.0
    gram = profile_inner(t[:, None], gammas[:, None], t[None, :], gammas[None, :])
    rhs = profile_inner(t, gammas, te, gamma)
    k = len(t)
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k], kkt[:k, k], kkt[k, :k] = gram, 1.0, 1.0
    solution = np.linalg.lstsq(kkt, np.append(rhs, 1.0), rcond=None)[0]
    weights = solution[:k]
    target_norm2 = float(profile_inner(te, gamma, te, gamma))
    error2 = float(weights @ gram @ weights - 2 * weights @ rhs + target_norm2)
    relative_error = math.sqrt(max(error2, 0.0) / target_norm2)
    if not relative_error <= max_relative_error:
        raise ConfigError(
            f"sigma_rel = {sigma_rel:g} ending at step {end} cannot be represented by the {k} stored averages "
            f"(sigma_rel {', '.join(f'{s:.3g}' for s in sorted(set(sigma_rel_from_gamma(gammas).tolist())))}, "
            f"steps {int(steps.min())}-{last}): the best combination's profile is off by {relative_error:.3g} "
            f"(relative L2) > {max_relative_error:g}; ask for a sigma_rel nearer the tracked ones or store "
            "snapshots more often")
    return Reconstruction(weights, relative_error, float(sigma_rel), gamma, end)


def combine(weights, snapshots: list):
    """sum_k weights[k] * snapshots[k] over pytrees of identical structure (float64 accumulation
    for numpy leaves is left to numpy; jax leaves keep their dtype)."""
    require(len(weights) == len(snapshots) and len(snapshots) >= 1, "weights, snapshots",
            (len(weights), len(snapshots)), "one weight per snapshot pytree")
    return jax.tree_util.tree_map(lambda *leaves: sum(float(w) * leaf for w, leaf in zip(weights, leaves)),
                                  *snapshots)
