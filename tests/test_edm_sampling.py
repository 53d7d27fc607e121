"""EDM Euler/Heun samplers: ODE accuracy, step indices, determinism, memorization with the empirical optimum."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import neighbors, noise, sampling
from jaxmem.data import load_images
from jaxmem.denoisers import empirical

SD = 0.5


def test_heun_and_euler_solve_the_gaussian_probability_flow():
    # For data N(0, sd^2 I) the optimal denoiser is D = sd^2 / (s^2 + sd^2) x, and the
    # probability-flow ODE dx/ds = x s / (s^2 + sd^2) ends at x_T sd / sqrt(sigma_max^2 + sd^2).
    def gaussian_denoiser(x, sigma):
        return x * SD**2 / (sigma**2 + SD**2)

    z = np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32)

    def relative_error(solver, steps):
        sigmas = noise.edm_sigmas(steps)
        exact = z * sigmas[0] * SD / np.sqrt(sigmas[0] ** 2 + SD**2)
        sample = sampling.edm_sample_steps(lambda x, s, i: gaussian_denoiser(x, s), z, sigmas, solver)
        return float(np.max(np.abs(np.asarray(sample) - exact) / np.abs(exact)))

    # Heun is second order (4x the steps: ~16x smaller error), Euler first order (~4x).
    assert relative_error("heun", 18) < 0.1 and relative_error("heun", 72) < relative_error("heun", 18) / 8
    assert relative_error("euler", 72) > relative_error("euler", 18) / 8
    assert relative_error("heun", 72) < relative_error("euler", 72) / 10


@pytest.mark.parametrize("solver,calls", [("euler", 18), ("heun", 35)])
def test_step_index_reaches_the_denoiser(solver, calls):
    seen = []

    def record_calls(x, sigma, step):  # a constant denoiser: the sampler's result is D of the last step
        seen.append(step)
        return jnp.full_like(x, 1.0) * step

    out = sampling.edm_sample_steps(record_calls, np.ones((2, 3), np.float32), noise.edm_sigmas(18), solver)
    np.testing.assert_allclose(out, 17.0, rtol=1e-5)
    assert len(seen) == (2 if solver == "heun" else 1) + 1  # traced once in the scan body, once for the last step


def test_generate_is_deterministic_per_seed_and_independent_of_batching():
    def shrink(params, x, sigma, step):
        return params * x / (1.0 + sigma**2)

    sigmas = noise.edm_sigmas(6)
    first = sampling.edm_generate(shrink, 0.5, 20, (4, 4, 1), seed=3, sigmas=sigmas, batch_size=8)
    again = sampling.edm_generate(shrink, 0.5, 20, (4, 4, 1), seed=3, sigmas=sigmas, batch_size=16)
    other = sampling.edm_generate(shrink, 0.5, 20, (4, 4, 1), seed=4, sigmas=sigmas, batch_size=8)
    assert first.shape == (20, 4, 4, 1) and np.all(np.isfinite(first))
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(first - other)) > 0.1


@pytest.mark.parametrize("solver", sampling.EDM_SOLVERS)
def test_sampler_with_the_empirical_optimum_returns_training_points(solver):
    train = load_images("digits").images[:12]
    params = empirical.make_params(train, block_size=8)
    samples = sampling.edm_generate(lambda p, x, sigma, step: empirical.apply(p, x, sigma), params, 16,
                                    train.shape[1:], seed=0, sigmas=noise.edm_sigmas(18), solver=solver,
                                    batch_size=16)
    assert neighbors.memorization_rate(samples, train) == 1.0
    nearest = np.min(np.linalg.norm(samples.reshape(16, 1, -1) - train.reshape(1, 12, -1), axis=-1), axis=1)
    assert np.all(nearest < 1e-3)
