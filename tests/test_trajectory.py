"""Trajectory decomposition, the ideal memorizer schedule, overestimation and guidance."""

import jax
import numpy as np
import pytest

from jaxmem import noise, trajectory
from jaxmem.sampling import edm_sample_steps, edm_trajectory


def _orthogonal_to(vectors, rows):
    """rows [S, d] with their components along vectors [S, k, d] removed (Gram-Schmidt via QR)."""
    basis = np.linalg.qr(np.swapaxes(vectors, 1, 2))[0]  # [S, d, k]
    return rows - np.einsum("sdk,sk->sd", basis, np.einsum("sdk,sd->sk", basis, rows))


def test_decomposition_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    steps, samples, d = 4, 5, 64
    target, start = rng.normal(size=(2, samples, d))
    a, b = rng.normal(size=(2, steps, samples))
    residual = np.stack([_orthogonal_to(np.stack([target, start], 1), rng.normal(size=(samples, d)))
                         for _ in range(steps)])
    latents = a[..., None] * target + b[..., None] * start + residual
    out = trajectory.decompose(latents.reshape(steps, samples, 8, 8), target.reshape(samples, 8, 8),
                               start.reshape(samples, 8, 8))
    np.testing.assert_allclose(out["target_coef"], a, atol=1e-4)
    np.testing.assert_allclose(out["noise_coef"], b, atol=1e-4)
    np.testing.assert_allclose(out["residual_norm"], np.linalg.norm(residual, axis=-1), rtol=1e-4)


def test_ideal_memorizer_follows_the_euler_steps_and_has_no_deviation():
    rng = np.random.default_rng(1)
    sigmas = noise.edm_sigmas(18)
    target, start = rng.normal(size=(2, 3, 16))
    a, b = trajectory.ideal_schedule(sigmas)
    latents = a[:, None, None] * target + b[:, None, None] * start  # [19, 3, 16]
    # Euler with D == x*: x_{i+1} = x_i + (s_{i+1} - s_i) (x_i - x*) / s_i, from x_0 = s_0 n
    np.testing.assert_allclose(latents[0], sigmas[0] * start)
    euler = latents[:-1] + (sigmas[1:] - sigmas[:-1])[:, None, None] * (latents[:-1] - target) / sigmas[:-1, None, None]
    np.testing.assert_allclose(euler, latents[1:], atol=1e-9)
    deviation = trajectory.schedule_deviation(trajectory.decompose(latents, target, start), sigmas)
    np.testing.assert_allclose(deviation["target_excess"], 0.0, atol=1e-3)
    np.testing.assert_allclose(deviation["noise_deficit"], 0.0, atol=1e-3)


def test_overestimation_coefficient():
    rng = np.random.default_rng(2)
    mean, target = rng.normal(size=(1, 8)), rng.normal(size=(2, 8))
    offset = target - mean
    scale = np.array([[1.0, 2.0], [0.5, 3.0]])  # [T, S]
    sideways = _orthogonal_to(offset[:, None, :], rng.normal(size=(2, 8)))
    estimates = mean + scale[..., None] * offset + sideways
    np.testing.assert_allclose(trajectory.overestimation(estimates, target, mean[0]), scale, rtol=1e-5)


def test_guidance_combines_branches_and_needs_an_unconditional_one():
    def conditional(x, sigma):
        return x + 1.0

    def unconditional(x, sigma):
        return x

    x = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(trajectory.guided_denoiser(conditional, unconditional, 3.0)(x, 1.0), 3.0)
    assert trajectory.guided_denoiser(conditional, None, 1.0) is conditional
    with pytest.raises(ValueError, match="unconditional branch"):
        trajectory.guided_denoiser(conditional, None, 2.0)
    with pytest.raises(ValueError, match="guidance scale"):
        trajectory.guided_denoiser(conditional, unconditional, float("nan"))


def test_bad_inputs():
    target = np.ones((2, 4))
    with pytest.raises(ValueError, match="collinear"):
        trajectory.decompose(np.ones((3, 2, 4)), target, 2 * target)
    with pytest.raises(ValueError, match="shapes"):
        trajectory.decompose(np.ones((3, 2, 5)), target, target)
    with pytest.raises(ValueError, match="shapes"):
        trajectory.overestimation(np.ones((3, 2, 4)), target, np.zeros(5))
    with pytest.raises(ValueError, match="sigmas"):
        trajectory.ideal_schedule(np.array([1.0, 2.0]))


def test_ideal_memorizer_trajectory_follows_the_schedule():
    """D == x* under the EDM flow: every latent is (1 - sigma/sigma_max) x* + sigma n, exactly."""
    rng = np.random.default_rng(7)
    target = rng.normal(size=(3, 16)).astype(np.float32)
    start = rng.normal(size=(3, 16)).astype(np.float32)
    sigmas = noise.edm_sigmas(18)
    memorizer = lambda x, sigma, index: jax.numpy.broadcast_to(target, x.shape)  # noqa: E731
    for solver in ("euler", "heun"):
        latents, estimates = edm_trajectory(memorizer, start, sigmas, solver)
        assert latents.shape == (19, 3, 16) and estimates.shape == (18, 3, 16)
        np.testing.assert_array_equal(latents[-1], edm_sample_steps(memorizer, start, sigmas, solver))
        parts = trajectory.decompose(latents[:-1], target, start)
        ideal_a, ideal_b = trajectory.ideal_schedule(sigmas[:-1])
        np.testing.assert_allclose(parts["target_coef"], np.broadcast_to(ideal_a[:, None], (18, 3)), atol=2e-5)
        np.testing.assert_allclose(parts["noise_coef"], np.broadcast_to(ideal_b[:, None], (18, 3)), rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(latents[-1], target, atol=1e-5)
