"""The crossover experiment: memorisation capacity M* versus training-set size N.

For every data dimension d one grid of models (all K, N, seeds and capacities M of that d) is
trained by jaxmem.train.gmm_grid in one compiled program. Each trained model is then sampled
with deterministic DDIM and its memorisation ratio measured with the 1/3 nearest-neighbour
test; the per-t losses (x0 units) of the trained models and of the baselines (ground truth,
fully memorising, partially memorising for a fine grid of M) give the predicted crossovers.
Per data set (d, K, N, seed) the table holds the empirical transition M_pt (ratio crosses
0.5), its delta window (ratio first reaches delta / 1 - delta) and M* predicted by the closed
form and by the measured losses for each weighting. With model.refine_points = r > 0, r more
untrained integer M values inside each window are trained as one more grid per d (the same
training and evaluation code) and M_pt and the window are recomputed from all M values. With
model.search = 'adaptive' the first grid trains a few capacities around each set's
measured-loss prediction and later rounds bisect the bracket of M_pt to model.search_tolerance
x N (jaxmem.capacity_search), each round one more vmapped grid.

Workdir:
  d<d>[_n<N>]/checkpoints/  orbax checkpoints of a grid while it trains (resumed on rerun)
  d<d>[_n<N>]/fingerprint.json  the config a grid belongs to (resuming another config fails)
  d<d>[_n<N>]/result.npz    everything measured for that grid (a rerun skips finished grids)
  d<d>[_n<N>]/refine_r<r>/  the same three for the refinement grid (model.refine_points = r > 0)
  d<d>[_n<N>]/round<k>/     the same three for round k of the adaptive search
  crossover.csv, crossover.md   one row per data set: M_pt, window, bracket, predicted M*, baseline losses
  crossover_by_n.csv            one row per (d, K, N): M_pt over seeds with a 95% interval
  models.csv                    one row per trained model: ratio, s^2, weighted train/val losses, round
  report.md                     command, versions, wall time, fit with standard errors, tables, figures
  summary.json, crossover.png, memorization_ratio.png
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxmem import capacity_search, io, neighbors, noise, sampling, theory
from jaxmem.config import require, require_choice
from jaxmem.data import gmm as gmm_data
from jaxmem.denoisers import gmm as gmm_denoiser
from jaxmem.crossover_report import (by_train_size, linear_fits, measured_capacity, model_rows, models_of_set,
                                     summarize, write_report)
from jaxmem.train import gmm_grid

DATA_MODELS = ("isotropic", "lowrank")
INITS = ("partial", "random")
SEARCHES = ("grid", "adaptive")
TEMPLATE_PIXELS = 64  # the 8x8 digit templates of the low-rank model
EVAL_SEED = 12345


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on configs the experiment cannot run."""
    data, model, training = config.data, config.model, config.training
    require_choice("data.model", data.model, DATA_MODELS)
    require(len(data.dims) >= 1 and all(int(d) >= 1 for d in data.dims), "data.dims (d)",
            tuple(data.dims), "integers >= 1")
    if data.model == "lowrank":
        require(all(int(d) % TEMPLATE_PIXELS == 0 for d in data.dims), "data.dims (d)",
                tuple(data.dims), f"multiples of {TEMPLATE_PIXELS} for data.model='lowrank' (d = 64 C)")
    require(len(data.train_sizes) >= 1 and all(int(n) >= 1 for n in data.train_sizes),
            "data.train_sizes (N)", tuple(data.train_sizes), "integers >= 1")
    require(len(data.num_components) >= 1 and all(int(k) >= 1 for k in data.num_components),
            "data.num_components (K)", tuple(data.num_components), "integers >= 1")
    smallest_n = min(int(n) for n in data.train_sizes)
    require(max(int(k) for k in data.num_components) <= smallest_n, "data.num_components (K)",
            tuple(data.num_components), f"K <= N for every N (smallest N = {smallest_n})")
    require(data.num_val >= 1, "data.num_val", data.num_val, "an integer >= 1")
    require(data.variance > 0, "data.variance (s0^2)", data.variance, "a positive float")
    fractions = tuple(model.capacity_fractions)
    require(len(fractions) >= 1 and all(f > 0 for f in fractions), "model.capacity_fractions (M/N)",
            fractions, "positive fractions")
    require(max(fractions) <= 1.0, "model.capacity_fractions (M/N)", fractions,
            f"M <= N: fractions <= 1 (M = {max(fractions)} N > N)")
    require_choice("model.init", model.init, INITS)
    require(model.init_variance > 0, "model.init_variance", model.init_variance, "a positive float")
    require(model.num_seeds >= 1, "model.num_seeds", model.num_seeds, "an integer >= 1")
    require(isinstance(model.refine_points, int) and model.refine_points >= 0, "model.refine_points",
            model.refine_points, "an integer >= 0 (0 = no refinement of the transition window)")
    require_choice("model.search", model.search, SEARCHES)
    if model.search == "adaptive":
        require(model.refine_points == 0, "model.refine_points", model.refine_points,
                "0 with model.search='adaptive' (its rounds refine the bracket themselves)")
        require(isinstance(model.search_points, int) and model.search_points >= 1, "model.search_points",
                model.search_points, "an integer >= 1 (capacities per set and round)")
        require(0 < model.search_span <= 1, "model.search_span", model.search_span, "a fraction in (0, 1]")
        require(model.search_tolerance > 0, "model.search_tolerance", model.search_tolerance,
                "a positive fraction of N (the bracket width at which the search stops)")
        require(isinstance(model.search_rounds, int) and model.search_rounds >= 0, "model.search_rounds",
                model.search_rounds, "an integer >= 0 (rounds after the first)")
        require(model.search_weighting in config.eval.weightings, "model.search_weighting",
                model.search_weighting, f"one of eval.weightings {tuple(config.eval.weightings)}")
    require(training.steps >= 1, "training.steps", training.steps, "an integer >= 1")
    require(training.chunk_steps >= 1, "training.chunk_steps", training.chunk_steps, "an integer >= 1")
    require(training.point_block >= 0, "training.point_block", training.point_block,
            "an integer >= 0 (0 = the whole batch at once)")
    require(config.eval.model_batch >= 0, "eval.model_batch", config.eval.model_batch,
            "an integer >= 0 (0 = all models at once)")
    gmm_grid.validate_estimator(training.estimator, training.noise_draws)
    require(isinstance(training.batch_size, int) and 0 <= training.batch_size <= smallest_n, "training.batch_size",
            training.batch_size, f"an integer in [0, {smallest_n}] (0 = full batch; at most the smallest N)")
    require(training.peak_lr > 0 and training.final_lr >= 0, "training.peak_lr, training.final_lr",
            (training.peak_lr, training.final_lr), "peak_lr > 0, final_lr >= 0")
    require(0 <= training.warmup_fraction < 1, "training.warmup_fraction", training.warmup_fraction,
            "a fraction in [0, 1)")
    times = _times(config)
    for field, weighting in [("training.weighting", training.weighting),
                             *[("eval.weightings", w) for w in config.eval.weightings]]:
        require_choice(field, weighting, theory.WEIGHTINGS)
        if weighting == "custom":
            theory.eps_loss_weights(times, "custom", training.custom_weights)
    require(config.sampling.num_samples >= 2, "sampling.num_samples", config.sampling.num_samples,
            "an integer >= 2")
    require(config.sampling.num_steps >= 1, "sampling.num_steps", config.sampling.num_steps,
            "an integer >= 1")
    require(config.eval.noise_draws >= 1, "eval.noise_draws", config.eval.noise_draws, "an integer >= 1")
    require(0 < config.eval.delta < 0.5, "eval.delta", config.eval.delta, "a fraction in (0, 0.5)")
    require(config.eval.crossover_points >= 2, "eval.crossover_points", config.eval.crossover_points,
            "an integer >= 2")


def _times(config) -> np.ndarray:
    return noise.vp_times(config.training.num_times, config.training.t_min, config.training.t_max)


def capacities(num_train: int, fractions) -> np.ndarray:
    """The distinct capacities M = round(f N) (at least 1), increasing."""
    return np.unique(np.maximum(1, np.rint(np.asarray(fractions) * num_train)).astype(np.int64))


def make_data(config, dim: int, num_components: int, num_train: int, seed_index: int) -> gmm_data.GMMData:
    seed = (config.seed, dim, num_components, num_train, seed_index)
    if config.data.model == "isotropic":
        return gmm_data.isotropic_gmm(dim, num_components, num_train, config.data.num_val, seed,
                                      config.data.variance)
    return gmm_data.lowrank_templates(num_components, dim // TEMPLATE_PIXELS, num_train,
                                      config.data.num_val, seed)


# --------------------------------------------------------------------------- evaluation


def x0_losses_per_time(params, mask, points, point_mask, eps, times):
    """Denoising loss in x0 units, E|x0_hat(alpha x + sigma eps, t) - x|^2 summed over dims: [T].

    points: [N, d]; point_mask: [N] float; eps: [N, R, d] noise draws shared by every t (and by
    every denoiser evaluated with the same draws: common random numbers); times: [T].
    """
    num_points, draws, dim = eps.shape

    def at_time(t):
        x_t = noise.vp_alpha(t) * points[:, None, :] + noise.vp_sigma(t) * eps
        x0_hat = gmm_denoiser.apply_x0(params, x_t.reshape(-1, dim), t, mask).reshape(eps.shape)
        per_point = jnp.mean(jnp.sum((x0_hat - points[:, None, :]) ** 2, axis=-1), axis=1)
        return jnp.sum(point_mask * per_point) / jnp.sum(point_mask)

    return jax.lax.map(at_time, jnp.asarray(times, jnp.float32))


def _map_models(fn, xs, model_batch: int):
    """fn over the leading axis of xs: all at once (vmap) when model_batch is 0, else in batches."""
    if model_batch <= 0:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=model_batch)


@functools.partial(jax.jit, static_argnames="model_batch")
def _grid_losses(params, masks, points, point_masks, eps, times, model_batch=0):
    """x0_losses_per_time of every model of a grid: [G, T]."""
    return _map_models(lambda a: x0_losses_per_time(*a, eps, times), (params, masks, points, point_masks),
                       model_batch)


@functools.partial(jax.jit, static_argnames="model_batch")
def _capacity_losses(params, masks, points, point_mask, eps, times, model_batch=0):
    """x0_losses_per_time of one set of means under several component masks: [J, T]."""
    return _map_models(lambda m: x0_losses_per_time(params, m, points, point_mask, eps, times), masks,
                       model_batch)


def _sample_grid(params, masks, x_start, times):
    """DDIM samples of every model of the grid: [G, S, d]."""
    def one_model(p, m, x):
        return sampling.ddim_sample(lambda x_t, t: gmm_denoiser.apply(p, x_t, t, m), x, times)

    return jax.jit(jax.vmap(one_model))(params, masks, x_start)


# --------------------------------------------------------------------------- one grid (one d)


def _grid_fingerprint(config, dim: int, train_sizes) -> str:
    """The config fields a grid's results depend on (a rerun with other values must not reuse them)."""
    fields = {k: config[k].to_dict() for k in ("data", "model", "training", "sampling", "eval")}
    fields["data"].pop("dims")
    fields["data"]["train_sizes"] = [int(n) for n in train_sizes]
    fields["eval"].pop("model_batch")
    for later in ("refine_points", "search_tolerance", "search_rounds"):  # later rounds have their own
        fields["model"].pop(later)
    return json.dumps({"seed": config.seed, "dim": dim, **fields}, sort_keys=True, default=list)


def grids(config) -> list[tuple[int, tuple[int, ...], str]]:
    """(d, train sizes, folder name) of each grid: one per d, or per (d, N) when
    training.grid_per_train_size (no padding of small training sets to the largest N)."""
    sizes = tuple(int(n) for n in config.data.train_sizes)
    if config.training.grid_per_train_size:
        return [(int(d), (n,), f"d{int(d)}_n{n}") for d in config.data.dims for n in sizes]
    return [(int(d), sizes, f"d{int(d)}") for d in config.data.dims]


def make_data_sets(config, dim: int, train_sizes) -> list:
    """[(K, N, seed, GMMData)]: every data set of a grid (K x N x seed)."""
    return [(k, n, s, make_data(config, dim, k, n, s))
            for k in config.data.num_components for n in train_sizes for s in range(config.model.num_seeds)]


def build_grid(config, dim: int, data_sets, capacities_of_set=None, round_index: int = 0
               ) -> tuple[np.ndarray, dict, dict, np.ndarray]:
    """The stacked initial grid of one d: (models, params, batch, rngs).

    data_sets: make_data_sets of the grid; capacities_of_set[j]: the
    M values to train on set j (default: the capacity_fractions of N; a later round passes its
    own, possibly none for a set). Rows s of the grid are the sets with at least one M; each
    row holds C member models (C = the largest count; a shorter row repeats its first model in
    the spare slots, trained and never reported). models: [G, 3] int (data set j, row s,
    member c) of every real model, by set then M. params {"means": [S, C, M_max, d] (partial
    init: the first M training points, which are i.i.d. draws, so M distinct random points;
    'random': N(0, I)), "log_var": [S, C]}; batch {"train": [S, N_max, d], "point_mask":
    [S, N_max], "component_mask": [S, C, M_max]}; rngs [S, 2]: row s's key folds in (d,
    round_index, j), so no two sets or rounds of a d share draws.
    """
    if capacities_of_set is None:
        capacities_of_set = [capacities(n, config.model.capacity_fractions) for _, n, _, _ in data_sets]
    rows = [j for j, m_values in enumerate(capacities_of_set) if len(m_values)]
    members = max(len(capacities_of_set[j]) for j in rows)
    max_n = max(n for _, n, _, _ in data_sets)
    max_m = max(int(max(capacities_of_set[j])) for j in rows)
    m_grid = np.array([[int(capacities_of_set[j][min(c, len(capacities_of_set[j]) - 1)])
                        for c in range(members)] for j in rows])                       # [S, C]
    models = np.array([(j, s, c) for s, j in enumerate(rows) for c in range(len(capacities_of_set[j]))])
    component_mask = np.arange(max_m) < m_grid[..., None]                              # [S, C, M]
    train = np.zeros((len(rows), max_n, dim), np.float32)
    point_mask = np.zeros((len(rows), max_n), np.float32)
    for s, j in enumerate(rows):
        n, data = data_sets[j][1], data_sets[j][3]
        train[s, :n], point_mask[s, :n] = data.train, 1.0
    if config.model.init == "partial":
        means = np.broadcast_to(train[:, None, :max_m], component_mask.shape + (dim,))
    else:
        init_rng = np.random.default_rng((config.seed, dim, 7) + ((round_index,) if round_index else ()))
        means = init_rng.standard_normal(component_mask.shape + (dim,)).astype(np.float32)
    params = {"means": np.where(component_mask[..., None], means, 0.0).astype(np.float32),
              "log_var": np.full(m_grid.shape, np.log(config.model.init_variance), np.float32)}
    batch = {"train": train, "point_mask": point_mask, "component_mask": component_mask}
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1000 * dim + round_index)
    rngs = np.asarray(jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.asarray(rows)))
    return models, params, batch, rngs


def baseline_losses(config, data_sets, eps, times) -> tuple[np.ndarray, ...]:
    """Per-t x0-unit training losses of the baselines of each data set, with the noise draws `eps`.

    Returns gen [S, T] (ground truth; NaN without an isotropic GMM), mem [S, T] (all N points,
    s^2 = 0), pmem_M [S, J] and pmem [S, J, T]: the partially memorising denoiser with the
    first M training points (one fixed subset for every t) for J capacities from 1 to N
    (NaN-padded where a smaller N has fewer distinct capacities).
    """
    num_points, model_batch = config.eval.crossover_points, config.eval.model_batch
    max_n = eps.shape[0]
    gen = np.full((len(data_sets), len(times)), np.nan)
    mem = np.zeros((len(data_sets), len(times)))
    pmem_m = np.full((len(data_sets), num_points), np.nan)
    pmem = np.full((len(data_sets), num_points, len(times)), np.nan)
    for j, (_, n, _, data) in enumerate(data_sets):  # a handful of data sets per grid
        points = np.zeros((max_n, data.dim), np.float32)
        points[:n] = data.train
        point_mask = (np.arange(max_n) < n).astype(np.float32)
        if data.variance is not None:
            truth = jax.tree_util.tree_map(lambda x: x[None], gmm_denoiser.ground_truth_params(data.means, data.variance))
            gen[j] = _grid_losses(truth, np.ones((1, data.means.shape[0]), bool), points[None],
                                  point_mask[None], eps, times)[0]
        m_values = np.unique(np.rint(np.linspace(1, n, num_points)).astype(np.int64))
        masks = np.arange(max_n)[None, :] < m_values[:, None]
        losses = np.asarray(_capacity_losses(gmm_denoiser.memorizing_params(points), masks, points, point_mask,
                                             eps, times, model_batch=model_batch))
        pmem_m[j, :len(m_values)], pmem[j, :len(m_values)], mem[j] = m_values, losses, losses[-1]
    return gen, mem, pmem_m, pmem


MODEL_KEYS = ("K", "N", "seed", "M", "ratio", "train_loss", "val_loss", "variance", "skipped")


def _finished_or_claim(grid_dir: str, fingerprint: str, label: str) -> dict | None:
    """The stored arrays of a finished grid (None if unfinished; then its fingerprint is written).

    Fails when the folder's result or checkpoints belong to another config.
    """
    result_path = os.path.join(grid_dir, "result.npz")
    if os.path.exists(result_path):
        with np.load(result_path) as f:
            stored = str(f["fingerprint"])
            require(stored == fingerprint, f"{result_path} (config)", "a finished grid of another config",
                    "the same config as the run that wrote it; use a new --workdir")
            logging.info("%s already finished: %s", label, result_path)
            return {k: f[k] for k in f.files}
    # checkpoints of an unfinished grid: resume only the same config
    io.check_fingerprint(os.path.join(grid_dir, "fingerprint.json"), fingerprint, "checkpoints of another config")
    return None


def _eval_noise(config, num_points: int, dim: int, split: int) -> jax.Array:
    """The evaluation noise draws [num_points, eval.noise_draws, d] of a split (1 train, 2 val),
    shared by every model and baseline of a d (common random numbers)."""
    return jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(EVAL_SEED), split),
                             (num_points, config.eval.noise_draws, dim))


def make_loss_and_optimizer(config) -> tuple:
    """(loss_fn, optimizer) of the training config (jaxmem.train.gmm_grid.make_gmm_loss, Adam schedule)."""
    times, training = _times(config), config.training
    loss_fn = gmm_grid.make_gmm_loss(
        times, theory.eps_loss_weights(times, training.weighting, training.custom_weights),
        training.noise_draws, training.point_block, training.estimator, training.batch_size)
    optimizer = optax.adam(gmm_grid.adam_schedule(training.steps, training.peak_lr, training.final_lr,
                                                  training.warmup_fraction))
    return loss_fn, optimizer


def _train_and_evaluate(config, dim: int, data_sets, models, params, batch, rngs, grid_dir: str,
                        label: str) -> dict:
    """Trains one grid (checkpointed in grid_dir/checkpoints) and measures each of its G models.

    models: [G, 3] (data set, row, member) from build_grid. Returns per model g: K, N, seed, M,
    ratio (memorisation), train_loss / val_loss [T] (x0 units), variance (final s^2), skipped
    (non-finite steps of its training set).
    """
    times = _times(config)
    loss_fn, optimizer = make_loss_and_optimizer(config)
    set_of_model, row, member = models.T
    logging.info("%s: %d models (%d data sets x up to %d, M <= %d, N <= %d), %d steps", label, len(models),
                 len(rngs), batch["component_mask"].shape[1], batch["component_mask"].shape[2],
                 batch["train"].shape[1], config.training.steps)
    state = gmm_grid.train_grid(params, batch, rngs, loss_fn=loss_fn, optimizer=optimizer,
                                steps=config.training.steps, chunk_steps=config.training.chunk_steps,
                                checkpoint_dir=os.path.join(grid_dir, "checkpoints"), name=label)
    trained = jax.tree_util.tree_map(lambda x: np.asarray(x)[row, member], jax.device_get(state.params))
    component_mask = batch["component_mask"][row, member]                                   # [G, M]
    num_models = len(models)

    # Memorisation ratio from deterministic DDIM samples (same starting noise for every model).
    x_start = jax.random.normal(jax.random.PRNGKey(EVAL_SEED), (config.sampling.num_samples, dim))
    samples = np.asarray(_sample_grid(trained, component_mask,
                                      jnp.broadcast_to(x_start, (num_models,) + x_start.shape),
                                      noise.vp_times(config.sampling.num_steps + 1,
                                                     config.training.t_min, config.training.t_max)))
    ratio = np.array([neighbors.memorization_rate(samples[g], data_sets[j][3].train)
                      for g, j in enumerate(set_of_model)])

    # Per-t losses (x0 units) of the trained models, train and validation.
    model_batch = config.eval.model_batch
    train_loss = _grid_losses(trained, component_mask, batch["train"][row], batch["point_mask"][row],
                              _eval_noise(config, batch["train"].shape[1], dim, 1), times, model_batch=model_batch)
    val = np.stack([data.val for _, _, _, data in data_sets])[set_of_model]
    val_loss = _grid_losses(trained, component_mask, val, np.ones(val.shape[:2], np.float32),
                            _eval_noise(config, val.shape[1], dim, 2), times, model_batch=model_batch)
    return dict(
        K=np.array([data_sets[j][0] for j in set_of_model]), N=np.array([data_sets[j][1] for j in set_of_model]),
        seed=np.array([data_sets[j][2] for j in set_of_model]), M=component_mask.sum(axis=1), ratio=ratio,
        train_loss=np.asarray(train_loss), val_loss=np.asarray(val_loss),
        variance=np.exp(np.asarray(trained["log_var"])), skipped=np.asarray(state.skipped)[row])


def run_grid(config, dim: int, train_sizes, grid_dir: str) -> dict:
    """Trains and evaluates the first grid of dimension `dim` and the given N; returns (and saves) the arrays.

    The baselines come first: with model.search = 'adaptive' their measured-loss crossover
    places the first round's capacities (jaxmem.capacity_search.first_round), otherwise the
    capacity_fractions of N are trained. Returned per model g: the MODEL_KEYS of
    _train_and_evaluate. Per data set j: set_K, set_N, set_seed, gen_loss, mem_loss [T], pmem_M
    [J], pmem_loss [J, T] (padded with NaN beyond each set's capacities). Also times [T] and
    the fingerprint.
    """
    fingerprint = _grid_fingerprint(config, dim, train_sizes)
    finished = _finished_or_claim(grid_dir, fingerprint, f"grid d={dim}")
    if finished is not None:
        return finished
    times = _times(config)
    data_sets = make_data_sets(config, dim, train_sizes)
    gen_loss, mem_loss, pmem_m, pmem_loss = baseline_losses(
        config, data_sets, _eval_noise(config, max(train_sizes), dim, 1), times)
    result = dict(fingerprint=np.array(fingerprint), times=times,
                  set_K=np.array([k for k, _, _, _ in data_sets]), set_N=np.array([n for _, n, _, _ in data_sets]),
                  set_seed=np.array([s for _, _, s, _ in data_sets]), gen_loss=gen_loss, mem_loss=mem_loss,
                  pmem_M=pmem_m, pmem_loss=pmem_loss)
    capacities_of_set = None
    if config.model.search == "adaptive":  # around each set's measured-loss prediction
        model = config.model
        capacities_of_set = [
            capacity_search.first_round(
                n, measured_capacity(result, j, model.search_weighting, config.training.custom_weights)[0],
                model.search_points, model.search_span)
            for j, (_, n, _, _) in enumerate(data_sets)]
    models = _train_and_evaluate(config, dim, data_sets, *build_grid(config, dim, data_sets, capacities_of_set),
                                 grid_dir, f"train d={dim}")
    result.update(models)
    io.save_npz(os.path.join(grid_dir, "result.npz"), **result)
    return result


def refinement_capacities(config, dim: int, result: dict) -> list[np.ndarray]:
    """Per data set j of a grid's result: the model.refine_points untrained integer M values
    strictly inside its delta window [window_start, window_end], evenly spaced (the centres of
    refine_points equal slices of the candidates; all candidates when there are fewer).
    Empty for a set without a window (the ratio never reaches delta or 1 - delta)."""
    points = config.model.refine_points
    extra = []
    for j, row in enumerate(summarize(config, dim, result)):
        start, end = row["window_start"], row["window_end"]
        candidates = np.arange(np.floor(start) + 1, np.ceil(end)) if np.isfinite(start + end) else np.array([])
        candidates = np.setdiff1d(candidates.astype(np.int64), result["M"][models_of_set(result, j)])
        if len(candidates) > points:
            candidates = candidates[np.rint((np.arange(points) + 0.5) * len(candidates) / points - 0.5).astype(int)]
        extra.append(candidates)
    return extra


def search_capacities(config, result: dict) -> list[np.ndarray]:
    """Per data set j: the next adaptive round's untried M values (empty once its bracket is
    narrower than model.search_tolerance x N, or there is no transition up to M = N)."""
    model, extra = config.model, []
    for j, n in enumerate(result["set_N"]):
        of_set = models_of_set(result, j)
        extra.append(capacity_search.next_round(result["M"][of_set], result["ratio"][of_set], int(n),
                                                model.search_points, model.search_tolerance * int(n)))
    return extra


def later_rounds(config, dim: int, train_sizes, grid_dir: str, first: dict) -> dict:
    """The first grid's result joined with the grids of later rounds.

    Rounds: model.search = 'adaptive' runs up to model.search_rounds rounds of
    search_capacities (folder grid_dir/round<k>); model.refine_points = r > 0 runs one round of
    refinement_capacities inside the delta windows (folder grid_dir/refine_r<r>). Each round is
    one more grid of the same d and N (same data, initialisation, training and evaluation) with
    its own checkpoints, fingerprint and result.npz: resumed when unfinished, skipped when
    finished. Returns `first` with every round's models appended to the per-model arrays
    (MODEL_KEYS), `round` [G'] (0 = the first grid) and `refinement` (round > 0).
    """
    if config.model.search == "adaptive":
        plan = [(f"round{k}", lambda joined: search_capacities(config, joined))
                for k in range(1, config.model.search_rounds + 1)]
    elif config.model.refine_points > 0:
        plan = [(f"refine_r{config.model.refine_points}", lambda joined: refinement_capacities(config, dim, joined))]
    else:
        plan = []
    joined = {**first, "round": np.zeros(len(first["M"]), np.int64)}
    data_sets = None
    for k, (folder, next_capacities) in enumerate(plan, start=1):
        extra = next_capacities(joined)
        if not any(len(m) for m in extra):
            break
        round_dir = os.path.join(grid_dir, folder)
        fingerprint = json.dumps(dict(grid=str(first["fingerprint"]), round=folder, M=[m.tolist() for m in extra]),
                                 sort_keys=True)
        done = _finished_or_claim(round_dir, fingerprint, f"{folder} d={dim}")
        if done is None:
            data_sets = data_sets or make_data_sets(config, dim, train_sizes)
            done = _train_and_evaluate(config, dim, data_sets, *build_grid(config, dim, data_sets, extra, k),
                                       round_dir, f"{folder} d={dim}")
            io.save_npz(os.path.join(round_dir, "result.npz"), fingerprint=np.array(fingerprint), **done)
        joined.update({key: np.concatenate([joined[key], done[key]]) for key in MODEL_KEYS})
        joined["round"] = np.concatenate([joined["round"], np.full(len(done["M"]), k)])
    joined["refinement"] = joined["round"] > 0
    return joined


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs the sweep into `workdir`; returns the summary (fit, predictions, file paths)."""
    from jaxmem.plots import crossover as crossover_plots

    validate_config(config)
    started = time.perf_counter()
    rows, models, ratio_curves = [], [], []
    for dim, train_sizes, folder in grids(config):
        grid_dir = os.path.join(workdir, folder)
        result = later_rounds(config, dim, train_sizes, grid_dir, run_grid(config, dim, train_sizes, grid_dir))
        rows += summarize(config, dim, result)
        models += model_rows(config, dim, result)
        ratio_curves.append(dict(d=dim, K=result["K"], N=result["N"], M=result["M"], ratio=result["ratio"]))
    for row in rows:
        logging.info("d=%d K=%d N=%d seed=%d: M_pt=%.1f window=[%.1f, %.1f], %d models", row["d"], row["K"],
                     row["N"], row["seed"], row["M_pt"], row["window_start"], row["window_end"], row["models"])

    fit = linear_fits([r["N"] for r in rows], [r["M_pt"] for r in rows])
    predicted = {key: linear_fits([r["N"] for r in rows], [r[key] for r in rows])["slope"]
                 for key in rows[0] if key.startswith("Mstar_")}
    pooled = by_train_size(rows)
    paths = dict(table_csv=io.write_csv(os.path.join(workdir, "crossover.csv"), rows),
                 table_md=io.write_text(os.path.join(workdir, "crossover.md"), io.markdown_table(rows)),
                 by_n_csv=io.write_csv(os.path.join(workdir, "crossover_by_n.csv"), pooled),
                 models_csv=io.write_csv(os.path.join(workdir, "models.csv"), models))
    paths["crossover_png"] = crossover_plots.save_crossover(os.path.join(workdir, "crossover.png"), rows, fit,
                                                            pooled)
    paths["ratio_png"] = crossover_plots.save_ratio_curves(os.path.join(workdir, "memorization_ratio.png"),
                                                           ratio_curves)
    summary = dict(fit=fit, predicted_slopes=predicted, rows=rows, by_N=pooled, files=paths)
    devices = f"{jax.devices()[0].device_kind} x{jax.device_count()}"
    paths["report_md"] = write_report(os.path.join(workdir, "report.md"), config, summary,
                                      time.perf_counter() - started, devices)
    io.write_json(os.path.join(workdir, "summary.json"), summary)
    logging.info("M*/N slope: %.3f +- %.3f (intercept %.2f, R^2 %.4f, %d points); through the origin %.3f; "
                 "predicted slopes: %s", fit["slope"], fit["slope_se"], fit["intercept"], fit["r2"], fit["points"],
                 fit["slope_origin"], ", ".join(f"{k}={v:.3f}" for k, v in predicted.items()))
    logging.info("report: %s; figures: %s and %s", paths["report_md"], paths["crossover_png"], paths["ratio_png"])
    return summary
