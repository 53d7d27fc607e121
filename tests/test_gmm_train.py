"""The generic train step and the vmapped, sharded, checkpointed GMM grid trainer."""

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmem import noise, parallel
from jaxmem.config import load_config
from jaxmem.data import gmm as gmm_data
from jaxmem.denoisers import gmm as gmm_denoiser
from jaxmem.experiments import gmm_crossover as crossover
from jaxmem.train import gmm_grid
from jaxmem.train.loop import init_state, make_train_step

STEPS, CHUNK, DRAWS, DIM = 12, 4, 3, 4


def test_train_step_skips_nonfinite_gradients_and_counts_them():
    def loss_fn(params, batch, rng):
        noise_term = jax.random.normal(rng, ())
        return jnp.sum((params["w"] - batch) ** 2) * (1.0 + 0.0 * noise_term), {}

    optimizer = optax.adam(0.1)
    state = init_state({"w": jnp.ones(3)}, optimizer, jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(loss_fn, optimizer, ema_decay=0.5))
    good, metrics = step(state, jnp.zeros(3))
    assert int(good.step) == 1 and int(good.skipped) == 0 and float(metrics["finite"]) == 1.0
    assert np.all(np.asarray(good.params["w"]) < 1.0)
    np.testing.assert_allclose(good.ema_params["w"], 0.5 * 1.0 + 0.5 * good.params["w"])
    bad, metrics = step(good, jnp.array([0.0, jnp.nan, 0.0]))
    assert int(bad.step) == 2 and int(bad.skipped) == 1 and float(metrics["finite"]) == 0.0
    for new, old in zip(jax.tree_util.tree_leaves((bad.params, bad.opt_state, bad.ema_params)),
                        jax.tree_util.tree_leaves((good.params, good.opt_state, good.ema_params))):
        np.testing.assert_array_equal(new, old)


def _grid(specs):
    """specs: (N, seed, [M, ...]) per training set -> params [S, C, M_max, d], batch, rngs [S],
    padded to the largest N, M and member count (spare members repeat the set's first M)."""
    max_n = max(n for n, _, _ in specs)
    max_m, members = max(max(ms) for _, _, ms in specs), max(len(ms) for _, _, ms in specs)
    params, batch, rngs = [], [], []
    for n, seed, ms in specs:
        data = gmm_data.isotropic_gmm(DIM, 2, n, 1, seed=seed)
        train = np.zeros((max_n, DIM), np.float32)
        train[:n] = data.train
        m_row = [ms[min(c, len(ms) - 1)] for c in range(members)]
        mask = np.arange(max_m)[None, :] < np.array(m_row)[:, None]
        means = np.where(mask[..., None], train[None, :max_m], 0.0).astype(np.float32)
        params.append({"means": means, "log_var": np.full(members, np.log(1e-2), np.float32)})
        batch.append({"train": train, "point_mask": (np.arange(max_n) < n).astype(np.float32),
                      "component_mask": mask})
        rngs.append(np.asarray(jax.random.PRNGKey(seed)))
    stack = lambda trees: jax.tree_util.tree_map(lambda *x: np.stack(x), *trees)  # noqa: E731
    return stack(params), stack(batch), np.stack(rngs)


def _train(specs, estimator="iid", batch_size=0, draws=DRAWS, **kwargs):
    times = noise.vp_times(6)
    loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), draws, estimator=estimator, batch_size=batch_size)
    optimizer = optax.adam(gmm_grid.adam_schedule(STEPS, peak_lr=3e-2))
    params, batch, rngs = _grid(specs)
    state = gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optimizer, steps=STEPS,
                                chunk_steps=CHUNK, **kwargs)
    return jax.device_get(state)


SPECS = [(10, 0, [6, 3]), (6, 1, [3]), (8, 2, [2, 5])]


@pytest.fixture(scope="module")
def grid_state():
    return _train(SPECS)


@pytest.mark.slow
def test_grid_equals_each_model_alone_unpadded(grid_state):
    """vmap over sets, members sharing a set's draws, padding of M, N and members change nothing:
    each model equals itself trained alone (a set with one member and the same seed)."""
    assert grid_state.params["means"].shape == (3, 2, 6, DIM) and np.all(grid_state.step == STEPS)
    for s, c in [(0, 1), (1, 0)]:  # beside a larger member; in a padded row (N 6 of 10, a spare slot)
        n, seed, ms = SPECS[s]
        alone = _train([(n, seed, [ms[c]])])
        np.testing.assert_allclose(grid_state.params["means"][s, c, :ms[c]], alone.params["means"][0, 0],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grid_state.params["log_var"][s, c], alone.params["log_var"][0, 0], rtol=1e-5)
    start, _, _ = _grid(SPECS)
    # Masked components never move; trained ones do.
    np.testing.assert_array_equal(grid_state.params["means"][0, 1, 3:], start["means"][0, 1, 3:])
    assert not np.allclose(grid_state.params["means"][0, 0], start["means"][0, 0])
    assert np.all(grid_state.skipped == 0)


@pytest.mark.slow
def test_sharded_over_8_devices_equals_one_device(grid_state):
    assert jax.device_count() == 8
    one = _train(SPECS, mesh=parallel.make_mesh(devices=jax.devices()[:1]))
    for a, b in zip(jax.tree_util.tree_leaves(grid_state.params), jax.tree_util.tree_leaves(one.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_params(tmp_path, grid_state):
    class Killed(Exception):
        pass

    def kill_after_first_chunk(state, step):
        raise Killed(step)

    with pytest.raises(Killed):
        _train(SPECS, checkpoint_dir=str(tmp_path), on_chunk=kill_after_first_chunk)
    seen = []
    resumed = _train(SPECS, checkpoint_dir=str(tmp_path), on_chunk=lambda s, step: seen.append(step))
    assert seen == [2 * CHUNK, 3 * CHUNK]  # resumed after the first chunk
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(grid_state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, grid_state):
    _train(SPECS, checkpoint_dir=str(tmp_path))
    assert sorted(map(int, os.listdir(tmp_path))) == [2 * CHUNK, 3 * CHUNK]  # two kept
    for root, _, files in os.walk(tmp_path / str(3 * CHUNK)):
        for name in files:
            (Path(root) / name).write_bytes(b"not a checkpoint")
    seen = []
    resumed = _train(SPECS, checkpoint_dir=str(tmp_path), on_chunk=lambda s, step: seen.append(step))
    assert seen == [3 * CHUNK]  # the last chunk redone from the previous checkpoint
    assert os.path.isdir(str(tmp_path) + ".rejected/" + str(3 * CHUNK))
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(grid_state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_adam_schedule_warmup_and_decay():
    schedule = gmm_grid.adam_schedule(1000)
    assert float(schedule(0)) == 0.0
    assert float(schedule(100)) == pytest.approx(1e-3)
    assert float(schedule(550)) == pytest.approx((1e-3 + 1e-6) / 2, rel=1e-3)
    assert float(schedule(1000)) == pytest.approx(1e-6, rel=1e-3)


def _one_set(specs=((10, 0, [6, 4]),)):
    params, batch, _ = _grid(list(specs))
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x[0]), (params, batch))


@pytest.mark.parametrize("estimator, batch_size, point_block", [
    ("iid", 0, 0), ("stratified", 4, 0), ("antithetic", 0, 7), ("stratified_antithetic", 3, 5)])
@pytest.mark.slow
def test_loss_and_gradient_equal_a_brute_force_loop_over_the_same_draws(estimator, batch_size, point_block):
    """Every estimator, minibatch and block option: the fused, vmapped loss equals a Python loop
    over the step's points and draws through `apply`, and so do the gradients of every member."""
    times = noise.vp_times(6)
    weights = np.linspace(0.5, 2.0, 6).astype(np.float32)
    params, batch = _one_set()
    step, set_key = jnp.int32(5), jax.random.PRNGKey(9)
    batch = {**batch, "step": step, "set_key": set_key}
    rng = jax.random.PRNGKey(4)
    loss_fn = gmm_grid.make_gmm_loss(times, weights, 4, point_block=point_block, estimator=estimator,
                                     batch_size=batch_size)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)

    n = int(batch["point_mask"].sum())
    if batch_size:
        rows, valid = gmm_grid.minibatch_indices(set_key, step, n, batch["train"].shape[0], batch_size)
        points = [int(i) for i, ok in zip(rows, valid) if ok]
    else:
        points = list(range(n))

    def member_loss(p, mask):
        total = 0.0
        for i in points:
            eps, index = gmm_grid.draw_point(jax.random.fold_in(rng, i), DIM, 4, 6, estimator)
            t = jnp.asarray(times, jnp.float32)[index]
            x_t = noise.vp_alpha(t)[:, None] * batch["train"][i] + noise.vp_sigma(t)[:, None] * eps
            residual = gmm_denoiser.apply(p, x_t, t, mask) - eps
            total = total + jnp.sum(jnp.asarray(weights)[index] * jnp.sum(residual**2, axis=-1))
        return total / (len(points) * 4)

    for c in range(2):
        member = jax.tree_util.tree_map(lambda x: x[c], params)
        mask = batch["component_mask"][c]
        expected, expected_grad = jax.jit(jax.value_and_grad(member_loss))(member, mask)
        np.testing.assert_allclose(metrics["model_loss"][c], expected, rtol=2e-5)
        np.testing.assert_allclose(grads["means"][c], expected_grad["means"], rtol=1e-3,
                                   atol=1e-4 * float(np.abs(expected_grad["means"]).max()))
        np.testing.assert_allclose(grads["log_var"][c], expected_grad["log_var"], rtol=1e-3)
    np.testing.assert_allclose(loss, metrics["model_loss"].sum(), rtol=1e-6)


@pytest.mark.parametrize("estimator", gmm_grid.ESTIMATORS)
def test_estimators_are_unbiased(estimator):
    """One component (eps_hat linear in eps): the exact expected loss over t uniform on the grid
    and eps ~ N(0, I) is closed form; the mean of 400 one-step estimates (R = 4) lies within 3
    standard errors of it."""
    times = noise.vp_times(6)
    weights = np.linspace(0.5, 2.0, 6)
    x = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)
    mu, variance = np.array([0.5, 0.0, -1.0, 1.0], np.float32), 0.3
    params = {"means": jnp.asarray(mu)[None, None], "log_var": jnp.log(jnp.full((1,), variance, jnp.float32))}
    batch = {"train": jnp.asarray(x), "point_mask": jnp.ones(1), "component_mask": jnp.ones((1, 1), bool),
             "step": jnp.int32(0), "set_key": jax.random.PRNGKey(0)}
    loss_fn = gmm_grid.make_gmm_loss(times, weights, 4, estimator=estimator)
    draws = jax.jit(jax.vmap(lambda k: loss_fn(params, batch, k)[0]))(
        jax.random.split(jax.random.PRNGKey(1), 400))
    t = np.asarray(times, np.float64)
    alpha, sigma = np.sqrt(1 - t**2), t
    v = alpha**2 * variance + sigma**2
    exact_t = (sigma * alpha / v) ** 2 * np.sum((x[0] - mu) ** 2) + (sigma**2 / v - 1) ** 2 * DIM
    exact = np.mean(weights * exact_t)
    draws = np.asarray(draws, np.float64)
    assert abs(draws.mean() - exact) < 3 * draws.std(ddof=1) / np.sqrt(draws.size)


@pytest.mark.slow
def test_minibatch_of_the_whole_set_equals_full_batch():
    full = _train([(10, 0, [6, 3])])
    batched = _train([(10, 0, [6, 3])], batch_size=10)
    for a, b in zip(jax.tree_util.tree_leaves(full.params), jax.tree_util.tree_leaves(batched.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_minibatches_visit_every_point_once_per_epoch():
    key = jax.random.PRNGKey(3)
    for epoch in range(2):
        seen = []
        for step in range(epoch * 3, epoch * 3 + 3):  # n = 7, B = 3: 3 batches per epoch
            rows, valid = gmm_grid.minibatch_indices(key, jnp.int32(step), jnp.int32(7), 9, 3)
            seen += [int(r) for r, ok in zip(rows, valid) if ok]
        assert sorted(seen) == list(range(7))


@pytest.mark.parametrize("estimator, draws, message", [
    ("sobol", 4, r"training.estimator = 'sobol'.*'iid', 'stratified'"),
    ("antithetic", 3, r"training.noise_draws = 3.*even"),
])
def test_bad_estimator_names_the_field(estimator, draws, message):
    config = load_config("configs/gmm_crossover.py:smoke")
    config.training.estimator, config.training.noise_draws = estimator, draws
    with pytest.raises(ValueError, match=message):  # at the door
        crossover.validate_config(config)
    with pytest.raises(ValueError, match=rf"make_gmm_loss needs an estimator .* got '{estimator}', {draws}, 0"):
        gmm_grid.make_gmm_loss(noise.vp_times(6), np.ones(6), draws, estimator=estimator)
