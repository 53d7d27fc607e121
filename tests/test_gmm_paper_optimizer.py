"""The authors' optimizer, draws, sampler and window as options of the GMM laboratory."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxmem import noise, sampling
from jaxmem.config import load_config
from jaxmem.data import gmm as gmm_data
from jaxmem.denoisers import gmm as gmm_denoiser
from jaxmem.experiments import gmm_crossover as crossover
from jaxmem.experiments.gmm_crossover import analysis
from jaxmem.train import gmm_grid

DIM, DRAWS, STEPS = 4, 5, 10
CONFIG = "configs/gmm_crossover.py"


def _load(preset):
    from tests.conftest import REPO

    return load_config(os.path.join(REPO, CONFIG) + f":{preset}")


def _one_set(n=10, m_values=(6, 4), std=1e-3, seed=0):
    """One training set of n points with members of M = m_values components on its first points,
    s = std: params {"means": [C, M, d], "std": [C]}, batch, rng (a set axis of 1 in front)."""
    data = gmm_data.isotropic_gmm(DIM, 2, n, 1, seed=seed)
    max_m = max(m_values)
    mask = np.arange(max_m)[None, :] < np.array(m_values)[:, None]
    means = np.where(mask[..., None], data.train[None, :max_m], 0.0).astype(np.float32)
    params = {"means": means[None], "std": np.full((1, len(m_values)), std, np.float32)}
    batch = {"train": data.train[None], "point_mask": np.ones((1, n), np.float32), "component_mask": mask[None]}
    return params, batch, np.asarray(jax.random.PRNGKey(seed))[None]


@pytest.mark.slow
def test_paper_optimizer_equals_a_direct_optax_chain_on_the_same_draws():
    """A few steps of the grid trainer with training.optimizer='paper' and the 'iid_shared_t'
    draws equal, member by member, a direct implementation: autodiff of the loss through `apply`
    on the step's draws and optax.chain(clip_by_global_norm(1e9), adam(schedule, 0.9, 0.999,
    1e-8), ema(0.99, debias=True)) applied to {means, s} of each model alone."""
    times = noise.vp_times(6)
    params, batch, rngs = _one_set(std=0.3)
    loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), DRAWS, estimator="iid_shared_t")
    optimizer = gmm_grid.make_optimizer("paper", STEPS, peak_lr=3e-2)
    state = jax.device_get(gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optimizer,
                                               steps=STEPS, chunk_steps=4))

    schedule = optax.join_schedules([optax.linear_schedule(0.0, 3e-2, 1), optax.linear_schedule(3e-2, 1e-6, 9)],
                                    boundaries=[1])
    direct = optax.chain(optax.clip_by_global_norm(1e9), optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8),
                         optax.ema(0.99, debias=True))
    train, set_key = jnp.asarray(batch["train"][0]), jnp.asarray(rngs[0])

    def member_loss(p, mask, step_rng):
        total = 0.0
        for i in range(train.shape[0]):
            eps, index = gmm_grid.draw_point(jax.random.fold_in(step_rng, i), DIM, DRAWS, 6, "iid_shared_t")
            assert len(set(np.asarray(index).tolist())) == 1  # one t per point, shared by its draws
            t = jnp.asarray(times, jnp.float32)[index]
            x_t = noise.vp_alpha(t)[:, None] * train[i] + noise.vp_sigma(t)[:, None] * eps
            total = total + jnp.sum((gmm_denoiser.apply(p, x_t, t, mask) - eps) ** 2)
        return total / (train.shape[0] * DRAWS)

    for c in range(2):
        p = {"means": jnp.asarray(params["means"][0, c]), "std": jnp.asarray(params["std"][0, c])}
        mask = jnp.asarray(batch["component_mask"][0, c])
        opt_state = direct.init(p)
        for step in range(STEPS):
            grads = jax.grad(member_loss)(p, mask, jax.random.fold_in(set_key, step))  # the train step's rng
            updates, opt_state = direct.update(grads, opt_state, p)
            p = optax.apply_updates(p, updates)
        np.testing.assert_allclose(state.params["std"][0, c], p["std"], rtol=2e-4)
        np.testing.assert_allclose(state.params["means"][0, c], p["means"], rtol=2e-4, atol=2e-5)
        assert abs(float(p["std"]) - 0.3) > 1e-3  # the steps moved s


def test_paper_chain_is_not_plain_adam():
    """The ema of the updates is extra momentum: two updates of the chain differ from Adam's."""
    def two_updates(opt):
        params = {"std": jnp.zeros(3)}
        state = opt.init(params)
        for g in (jnp.array([1.0, -2.0, 0.5]), jnp.array([-1.0, 3.0, -0.5])):
            updates, state = opt.update({"std": g}, state, params)
        return np.asarray(updates["std"])

    schedule = gmm_grid.adam_schedule(100)
    assert not np.allclose(two_updates(gmm_grid.make_optimizer("paper", 100)), two_updates(optax.adam(schedule)))
    np.testing.assert_allclose(two_updates(gmm_grid.make_optimizer("jaxmem", 100)), two_updates(optax.adam(schedule)))


@pytest.mark.slow
def test_std_parameter_gives_the_log_var_model_and_its_gradient():
    """{means, std = s} is the model {means, log_var = log s^2}, for s and -s alike (the model
    sees s^2 only), and the fused loss's gradient w.r.t. s is autodiff's through `apply`."""
    params, batch, _ = _one_set(std=0.2)
    means, mask = jnp.asarray(params["means"][0, 0]), jnp.asarray(batch["component_mask"][0, 0])
    x = jax.random.normal(jax.random.PRNGKey(1), (7, DIM))
    t = jnp.linspace(0.1, 0.9, 7)
    eps = jax.random.normal(jax.random.PRNGKey(2), (7, DIM))
    weights = jnp.linspace(0.5, 1.5, 7)
    as_log_var = gmm_denoiser.apply({"means": means, "log_var": jnp.log(jnp.float32(0.04))}, x, t, mask)
    for s in (0.2, -0.2):
        np.testing.assert_allclose(gmm_denoiser.apply({"means": means, "std": jnp.float32(s)}, x, t, mask),
                                   as_log_var, rtol=1e-5, atol=1e-6)
    p = {"means": means, "std": jnp.float32(0.2)}
    fused = jax.grad(gmm_denoiser.weighted_eps_loss)(p, x, t, eps, weights, mask.astype(jnp.float32))
    brute = jax.grad(lambda q: jnp.sum(weights * jnp.sum((gmm_denoiser.apply(q, x, t, mask) - eps) ** 2, -1)))(p)
    np.testing.assert_allclose(fused["std"], brute["std"], rtol=1e-4)
    np.testing.assert_allclose(fused["means"], brute["means"], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_s_stays_positive_below_m_equal_n_and_only_s_squared_matters_at_m_equal_n():
    """From the paper's start (means on M training points, s = 1e-3): for M < N the loss falls as
    s grows, so the chain moves s up, away from 0, and s > 0 at every checkpoint of a 300-step
    run. For M = N the optimum is s^2 = 0 and Adam's normalised steps (~lr, not shrinking with
    the gradient) carry s across 0: nothing keeps s itself positive (as in the authors' code), and
    nothing needs to, since the model and the loss see s^2 only (the chain is sign-equivariant:
    -s follows the mirrored path)."""
    times = noise.vp_times(26)
    params, batch, rngs = _one_set(n=12, m_values=(3, 6, 9, 12), std=1e-3)
    loss_fn = gmm_grid.make_gmm_loss(times, np.ones_like(times), 4, estimator="iid_shared_t")
    optimizer = gmm_grid.make_optimizer("paper", 300)
    seen = []
    state = gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optimizer, steps=300,
                                chunk_steps=50, on_chunk=lambda s, step: seen.append(np.asarray(s.params["std"])[0]))
    seen = np.stack(seen)                                             # [chunks, members]
    assert np.all(seen[:, :3] > 1e-3)                                 # M < N: positive and grown
    assert np.all(np.abs(seen[:, 3]) < seen[:, :3].min(axis=1))      # M = N: s stays near its optimum 0

    # the sign of s is invisible: the mirrored start gives the mirrored s (hence the same s^2)
    mirrored = gmm_grid.train_grid({**params, "std": -params["std"]}, batch, rngs, loss_fn=loss_fn,
                                   optimizer=optimizer, steps=300, chunk_steps=50)
    np.testing.assert_allclose(np.asarray(mirrored.params["std"]), -np.asarray(state.params["std"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mirrored.params["means"]), np.asarray(state.params["means"]), rtol=1e-5)


def test_iid_shared_t_draws_one_time_per_point():
    eps, index = gmm_grid.draw_point(jax.random.PRNGKey(3), DIM, 100, 26, "iid_shared_t")
    assert eps.shape == (100, DIM) and len(set(np.asarray(index).tolist())) == 1
    # and the times differ between points (keys)
    others = {int(gmm_grid.draw_point(jax.random.PRNGKey(k), DIM, 2, 26, "iid_shared_t")[1][0]) for k in range(20)}
    assert len(others) > 3


def test_ddim_without_the_final_denoising_step_returns_x_at_t_min():
    """final_denoise=False returns x at times[0]; one more denoising of it gives the default's output."""
    times = noise.vp_times(26)
    means = jnp.asarray(gmm_data.isotropic_gmm(DIM, 3, 3, 1, seed=0).train)
    params = gmm_denoiser.make_params(means, 0.1)
    denoiser = lambda x, t: gmm_denoiser.apply(params, x, t)  # noqa: E731
    x_start = jax.random.normal(jax.random.PRNGKey(0), (5, DIM))
    x_last = sampling.ddim_sample(denoiser, x_start, times, final_denoise=False)
    clean = sampling.ddim_sample(denoiser, x_start, times)
    t0 = jnp.float32(times[0])
    np.testing.assert_allclose(clean, (x_last - noise.vp_sigma(t0) * denoiser(x_last, t0)) / noise.vp_alpha(t0),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(x_last, clean, rtol=0, atol=1e-7)


def test_window_falls_back_to_the_first_and_last_capacity():
    m, ratio = np.array([10, 20, 30, 40]), np.array([0.0, 0.05, 0.4, 0.7])
    assert analysis.transition_window(m, ratio, 0.1) == pytest.approx((20 + 10 * 0.05 / 0.35, float("nan")),
                                                                     nan_ok=True)
    assert analysis.transition_window(m, ratio, 0.1, "capacities")[1] == 40.0
    low = np.array([0.0, 0.0, 0.02, 0.05])
    assert np.isnan(analysis.transition_window(m, low, 0.1)[0])
    assert analysis.transition_window(m, low, 0.1, "capacities") == (10.0, 40.0)


def test_presets_paper_and_anchor_full_use_the_authors_protocol_and_the_others_do_not_change():
    from jaxmem.experiments.gmm_crossover import rounds

    paper = _load("paper")
    crossover.validate_config(paper)
    assert paper.training.optimizer == "paper" and paper.training.estimator == "iid_shared_t"
    assert paper.training.noise_draws == 100 and paper.training.steps == 50_000 and paper.training.batch_size == 0
    assert (paper.training.peak_lr, paper.training.final_lr, paper.training.warmup_fraction,
            paper.training.adam_b2) == (1e-3, 1e-6, 0.1, 0.999)
    assert paper.model.init_variance == 1e-6  # s = 1e-3, the authors' start
    assert paper.sampling.num_steps == 25 and paper.sampling.final_denoise is False
    assert paper.eval.window_fallback == "capacities"
    anchor = _load("anchor_full")
    crossover.validate_config(anchor)
    assert anchor.training.optimizer == "paper"
    for preset in ("smoke", "demo", "scale", "anchor_cheap", "curve", "minibatch_check", "large_n", "replication",
                   "replication_rates", "subspace"):
        config = _load(preset)
        assert config.training.optimizer == "jaxmem" and config.sampling.final_denoise is True
        assert config.eval.window_fallback == "nan"
        fields = json.loads(rounds._grid_fingerprint(config, int(config.data.dims[0]), tuple(config.data.train_sizes)))
        assert "optimizer" not in fields["training"] and "final_denoise" not in fields["sampling"]
        assert "window_fallback" not in fields["eval"]
    fields = json.loads(rounds._grid_fingerprint(anchor, 50, (200,)))
    assert fields["training"]["optimizer"] == "paper"


@pytest.mark.parametrize("field, value, message", [
    ("training.optimizer", "sgd", r"training.optimizer = 'sgd'.*'jaxmem', 'paper'"),
    ("eval.window_fallback", "zero", r"eval.window_fallback = 'zero'.*'nan', 'capacities'"),
])
def test_bad_new_fields_name_the_field(field, value, message):
    config = _load("smoke")
    group, name = field.split(".")
    with config.unlocked():
        config[group][name] = value
    with pytest.raises(ValueError, match=message):
        crossover.validate_config(config)


def test_paper_grid_starts_at_s_equal_sqrt_init_variance():
    from jaxmem.experiments.gmm_crossover.grids import build_grid, grid_shapes, make_data_sets

    config = _load("smoke")
    with config.unlocked():
        config.training.optimizer = "paper"
    data_sets = make_data_sets(config, 6, (8,))
    _, params, _, _ = build_grid(config, 6, data_sets)
    assert set(params) == {"means", "std"}
    np.testing.assert_allclose(params["std"], np.sqrt(config.model.init_variance))
    shapes, _, _ = grid_shapes(config, 6, (8,))
    assert set(shapes) == {"means", "std"} and shapes["std"].shape == params["std"].shape
