"""The generic train step and the vmapped, sharded, checkpointed GMM grid trainer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmem import noise, parallel
from jaxmem.data import gmm as gmm_data
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
    """specs: (N, M, seed) per model -> stacked params/batch/rngs padded to the largest N and M."""
    max_n, max_m = max(n for n, _, _ in specs), max(m for _, m, _ in specs)
    params, batch, rngs = [], [], []
    for n, m, seed in specs:
        data = gmm_data.isotropic_gmm(DIM, 2, n, 1, seed=seed)
        train = np.zeros((max_n, DIM), np.float32)
        train[:n] = data.train
        means = np.zeros((max_m, DIM), np.float32)
        means[:m] = data.train[:m]
        params.append({"means": means, "log_var": np.float32(np.log(1e-2))})
        batch.append({"train": train, "point_mask": (np.arange(max_n) < n).astype(np.float32),
                      "component_mask": np.arange(max_m) < m})
        rngs.append(np.asarray(jax.random.PRNGKey(seed)))
    stack = lambda trees: jax.tree_util.tree_map(lambda *x: np.stack(x), *trees)  # noqa: E731
    return stack(params), stack(batch), np.stack(rngs)


def _train(specs, **kwargs):
    times = noise.vp_times(6)
    loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), DRAWS)
    optimizer = optax.adam(gmm_grid.adam_schedule(STEPS, peak_lr=3e-2))
    params, batch, rngs = _grid(specs)
    state = gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optimizer, steps=STEPS,
                                chunk_steps=CHUNK, **kwargs)
    return jax.device_get(state)


SPECS = [(10, 6, 0), (6, 3, 1), (8, 2, 2)]


@pytest.fixture(scope="module")
def grid_state():
    return _train(SPECS)


def test_grid_equals_each_model_alone_unpadded(grid_state):
    """vmap over models, padding of M and N and the masks change nothing."""
    assert grid_state.params["means"].shape == (3, 6, DIM) and np.all(grid_state.step == STEPS)
    for g, (n, m, seed) in enumerate(SPECS):
        alone = _train([(n, m, seed)])
        np.testing.assert_allclose(grid_state.params["means"][g, :m], alone.params["means"][0],
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(grid_state.params["log_var"][g], alone.params["log_var"][0], rtol=1e-5)
    start, _, _ = _grid(SPECS)
    # Masked components never move; trained ones do.
    np.testing.assert_array_equal(grid_state.params["means"][1, 3:], start["means"][1, 3:])
    assert not np.allclose(grid_state.params["means"][0], start["means"][0])
    assert np.all(grid_state.skipped == 0)


def test_sharded_over_8_devices_equals_one_device(grid_state):
    assert jax.device_count() == 8
    one = _train(SPECS, mesh=parallel.make_mesh(devices=jax.devices()[:1]))
    for a, b in zip(jax.tree_util.tree_leaves(grid_state.params), jax.tree_util.tree_leaves(one.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


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


def test_adam_schedule_warmup_and_decay():
    schedule = gmm_grid.adam_schedule(1000)
    assert float(schedule(0)) == 0.0
    assert float(schedule(100)) == pytest.approx(1e-3)
    assert float(schedule(550)) == pytest.approx((1e-3 + 1e-6) / 2, rel=1e-3)
    assert float(schedule(1000)) == pytest.approx(1e-6, rel=1e-3)


def test_point_blocks_give_the_same_loss_and_gradient():
    times = noise.vp_times(6)
    params, batch, rngs = _grid([(10, 6, 0)])
    params, batch = jax.tree_util.tree_map(lambda x: jnp.asarray(x[0]), (params, batch))
    whole = gmm_grid.make_gmm_loss(times, np.ones_like(times), DRAWS)
    blocked = gmm_grid.make_gmm_loss(times, np.ones_like(times), DRAWS, point_block=7)  # 30 points: 5 blocks, padded
    rng = jax.random.PRNGKey(4)
    (a, _), ga = jax.value_and_grad(whole, has_aux=True)(params, batch, rng)
    (b, _), gb = jax.value_and_grad(blocked, has_aux=True)(params, batch, rng)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for x, y in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
