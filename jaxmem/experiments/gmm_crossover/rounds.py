"""Training rounds of the crossover experiment: the first grid of each d, then the adaptive
search rounds or the refinement of the transition windows, then the rounds that bracket the
window's ends, each one grid trained and measured.

Each round lives in its own folder with checkpoints/, fingerprint.json and result.npz: an
unfinished round resumes, a finished one is read back, one of another config is refused.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxmem import io, neighbors, noise
from jaxmem.config import LATER_FIELDS
from jaxmem.validation import require
from jaxmem.data import gmm as gmm_data
from jaxmem.experiments.gmm_crossover import search
from jaxmem.experiments.gmm_crossover.evaluation import (EVAL_SEED, TRAIN_SPLIT, VAL_SPLIT, baseline_losses, eval_noise,
                                                         grid_losses, sample_grid)
from jaxmem.experiments.gmm_crossover.grids import Grid, build_grid, make_loss_and_optimizer
from jaxmem.experiments.gmm_crossover.analysis import AnalysisSettings, measured_capacity, models_of_set, summarize
from jaxmem.train import gmm_grid


def _grid_fingerprint(config, dim: int, train_sizes) -> str:
    """The config fields a grid's results depend on (a rerun with other values must not reuse them)."""
    fields = {k: config[k].to_dict() for k in ("data", "model", "training", "sampling", "eval")}
    for dotted, neutral in LATER_FIELDS.items():  # at their earlier value: as before the field existed
        group, name = dotted.split(".")
        if group in fields and fields[group].get(name) == neutral:  # the registry spans every family
            fields[group].pop(name)
    fields["data"].pop("dims")
    fields["data"]["train_sizes"] = [int(n) for n in train_sizes]
    fields["eval"].pop("model_batch")
    fields["eval"].pop("window_fallback", None)  # how the report reads the ratios, not what was measured
    for later in ("refine_points", "search_tolerance", "search_rounds", "window_rounds", "window_tolerance"):  # later rounds have their own
        fields["model"].pop(later, None)
    return json.dumps({"seed": config.seed, "dim": dim, **fields}, sort_keys=True, default=list)


MODEL_KEYS = ("K", "N", "seed", "M", "ratio", "landed_multiplicity", "train_loss", "val_loss", "variance", "skipped")


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


def train_and_evaluate(config, grid: Grid, models, params, batch, rngs, grid_dir: str, label: str) -> dict:
    """Trains one round of `grid` (checkpointed in grid_dir/checkpoints) and measures each of its G models.

    models: [G, 3] (data set, row, member) from build_grid. Returns per model g: K, N, seed, M,
    ratio (memorisation), landed_multiplicity [S] (per sample: the multiplicity of the
    training point it memorises, 0 when it memorises none), train_loss / val_loss [T] (x0
    units), variance (final s^2), skipped (non-finite steps of its training set).
    """
    dim, data_sets, draws = grid.dim, grid.data_sets, config.eval.noise_draws
    loss_fn, optimizer = make_loss_and_optimizer(config.training, grid.times)
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
    samples = np.asarray(sample_grid(trained, component_mask,
                                      jnp.broadcast_to(x_start, (num_models,) + x_start.shape),
                                      noise.vp_times(config.sampling.num_steps + 1,
                                                     config.training.t_min, config.training.t_max),
                                      config.sampling.final_denoise))
    # Tested against the distinct points; a memorised sample records the multiplicity of its point.
    tests = [neighbors.memorization_test(samples[g], data_sets[j].data.train) for g, j in enumerate(set_of_model)]
    ratio = np.array([np.mean(flags) for flags, _, _ in tests])
    landed = np.stack([np.where(flags, gmm_data.multiplicity_of(data_sets[j].data)[nearest], 0)
                       for (flags, _, nearest), j in zip(tests, set_of_model)])

    # Per-t losses (x0 units) of the trained models, train and validation.
    model_batch = config.eval.model_batch
    train_loss = grid_losses(trained, component_mask, batch["train"][row], batch["point_mask"][row],
                              eval_noise(batch["train"].shape[1], draws, dim, TRAIN_SPLIT), grid.times,
                              model_batch=model_batch)
    val = np.stack([data_set.data.val for data_set in data_sets])[set_of_model]
    val_loss = grid_losses(trained, component_mask, val, np.ones(val.shape[:2], np.float32),
                            eval_noise(val.shape[1], draws, dim, VAL_SPLIT), grid.times, model_batch=model_batch)
    of_model = [data_sets[j] for j in set_of_model]
    return dict(
        K=np.array([s.num_components for s in of_model]), N=np.array([s.num_train for s in of_model]),
        seed=np.array([s.seed_index for s in of_model]), M=component_mask.sum(axis=1), ratio=ratio,
        landed_multiplicity=landed,
        train_loss=np.asarray(train_loss), val_loss=np.asarray(val_loss),
        variance=(np.square(trained["std"]) if "std" in trained else np.exp(trained["log_var"])), skipped=np.asarray(state.skipped)[row])


def run_grid(config, grid: Grid, grid_dir: str) -> dict:
    """Trains and evaluates the first round of `grid` in grid_dir; returns (and saves) the arrays.

    The baselines come first: with model.search = 'adaptive' their measured-loss crossover
    places the first round's capacities (jaxmem.search.first_round), otherwise the
    capacity_fractions of N are trained. Returned per model g: the MODEL_KEYS of
    train_and_evaluate. Per data set j: set_K, set_N, set_seed, gen_loss, mem_loss [T], pmem_M
    [J], pmem_loss [J, T] (padded with NaN beyond each set's capacities), set_multiplicity
    [N_max] (copies of each distinct point, 0-padded). Also times [T] and the fingerprint.
    """
    dim, max_n = grid.dim, max(grid.train_sizes)
    fingerprint = _grid_fingerprint(config, dim, grid.train_sizes)
    finished = _finished_or_claim(grid_dir, fingerprint, f"grid d={dim}")
    if finished is not None:
        return finished
    data_sets = grid.data_sets
    gen_loss, mem_loss, pmem_m, pmem_loss = baseline_losses(
        data_sets, eval_noise(max_n, config.eval.noise_draws, dim, TRAIN_SPLIT), grid.times,
        config.eval.crossover_points, config.eval.model_batch)
    result = dict(fingerprint=np.array(fingerprint), times=grid.times,
                  set_K=np.array([s.num_components for s in data_sets]),
                  set_N=np.array([s.num_train for s in data_sets]),
                  set_seed=np.array([s.seed_index for s in data_sets]), gen_loss=gen_loss, mem_loss=mem_loss,
                  pmem_M=pmem_m, pmem_loss=pmem_loss,
                  set_multiplicity=np.stack([np.pad(gmm_data.multiplicity_of(s.data), (0, max_n - s.num_train))
                                             for s in data_sets]))
    capacities_of_set = None
    if config.model.search == "adaptive":  # around each set's measured-loss prediction
        model = config.model
        capacities_of_set = [
            search.first_round(
                data_set.num_train,
                measured_capacity(result, j, model.search_weighting, config.training.custom_weights)[0],
                model.search_points, model.search_span)
            for j, data_set in enumerate(data_sets)]
    models = train_and_evaluate(config, grid, *build_grid(config, dim, data_sets, capacities_of_set),
                                grid_dir, f"train d={dim}")
    result.update(models)
    if jax.process_index() == 0:
        io.save_npz(os.path.join(grid_dir, "result.npz"), **result)
    return result


def refinement_capacities(settings: AnalysisSettings, dim: int, result: dict, points: int) -> list[np.ndarray]:
    """Per data set j of a grid's result (dimension `dim`): `points` (model.refine_points) untrained
    integer M values strictly inside its delta window [window_start, window_end] (summarize),
    evenly spaced (the centres of `points` equal slices of the candidates; all candidates when
    there are fewer). Empty for a set without a window (the ratio never reaches delta or 1 - delta)."""
    extra = []
    for j, row in enumerate(summarize(settings, dim, result)):
        start, end = row["window_start"], row["window_end"]
        candidates = np.arange(np.floor(start) + 1, np.ceil(end)) if np.isfinite(start + end) else np.array([])
        candidates = np.setdiff1d(candidates.astype(np.int64), result["M"][models_of_set(result, j)])
        if len(candidates) > points:
            candidates = candidates[np.rint((np.arange(points) + 0.5) * len(candidates) / points - 0.5).astype(int)]
        extra.append(candidates)
    return extra


def bracketing_capacities(result: dict, points: int, tolerance_fraction: float, levels) -> list[np.ndarray]:
    """Per data set j: the untried M values search.next_round places around the first crossing of
    each of `levels` by its ratio(M), united (empty once every level is bracketed to
    tolerance_fraction x N, or the ratio at a trained M = N stays below it)."""
    extra = []
    for j, n in enumerate(result["set_N"]):
        of_set = models_of_set(result, j)
        m, ratio = result["M"][of_set], result["ratio"][of_set]
        rounds = [search.next_round(m, ratio, int(n), points, tolerance_fraction * int(n), level) for level in levels]
        extra.append(functools.reduce(np.union1d, rounds).astype(np.int64))
    return extra


def search_capacities(result: dict, points: int, tolerance_fraction: float) -> list[np.ndarray]:
    """The next adaptive round: `points` (model.search_points) capacities around the 0.5 crossing,
    to tolerance_fraction (model.search_tolerance) x N."""
    return bracketing_capacities(result, points, tolerance_fraction, (0.5,))


def window_capacities(result: dict, delta: float, points: int, tolerance_fraction: float) -> list[np.ndarray]:
    """The next window round: `points` (model.search_points) capacities around both ends of the
    delta window (the first crossings of delta and 1 - delta, eval.delta) to tolerance_fraction
    (model.window_tolerance) x N, training M = N where no trained M reached 1 - delta."""
    return bracketing_capacities(result, points, tolerance_fraction, (delta, 1.0 - delta))


def later_rounds(config, settings: AnalysisSettings, grid: Grid, grid_dir: str, first: dict) -> dict:
    """The first round's result (run_grid) joined with the later rounds of `grid` (`settings`:
    AnalysisSettings.of(config), which places the refinement and window rounds).

    Stages, in order, each a sequence of rounds that ends early once a round has nothing to
    train: model.search = 'adaptive' runs up to model.search_rounds rounds of
    search_capacities (folders grid_dir/round<k>); model.refine_points = r > 0 runs one round of
    refinement_capacities inside the delta windows (folder grid_dir/refine_r<r>);
    model.window_rounds = w > 0 then runs up to w rounds of window_capacities, which bracket
    both ends of each set's delta window (folders grid_dir/window<k>). Each round is one more
    grid of the same d and N (same data, initialisation, training and evaluation) with its own
    checkpoints, fingerprint and result.npz: resumed when unfinished, skipped when finished.
    Returns `first` with every round's models appended to the per-model arrays (MODEL_KEYS),
    `round` [G'] (0 = the first grid, then 1, 2, ... across stages) and `refinement` (round > 0).
    """
    model, dim = config.model, grid.dim
    stages = []  # (the folders of its rounds, the next round's capacities from the joined result)
    if model.search == "adaptive":
        stages.append(([f"round{i}" for i in range(1, model.search_rounds + 1)],
                       lambda joined: search_capacities(joined, model.search_points, model.search_tolerance)))
    elif model.refine_points > 0:
        stages.append(([f"refine_r{model.refine_points}"],
                       lambda joined: refinement_capacities(settings, dim, joined, model.refine_points)))
    if model.window_rounds > 0:
        stages.append(([f"window{i}" for i in range(1, model.window_rounds + 1)],
                       lambda joined: window_capacities(joined, settings.delta, model.search_points,
                                                        model.window_tolerance)))
    joined = {**first, "round": np.zeros(len(first["M"]), np.int64)}
    k = 0
    for folders, next_capacities in stages:
        for folder in folders:
            extra = next_capacities(joined)
            if not any(len(m) for m in extra):
                break
            k += 1
            round_dir = os.path.join(grid_dir, folder)
            fingerprint = json.dumps(dict(grid=str(first["fingerprint"]), round=folder, M=[m.tolist() for m in extra]),
                                     sort_keys=True)
            done = _finished_or_claim(round_dir, fingerprint, f"{folder} d={dim}")
            if done is None:
                done = train_and_evaluate(config, grid, *build_grid(config, dim, grid.data_sets, extra, k),
                                          round_dir, f"{folder} d={dim}")
                if jax.process_index() == 0:
                    io.save_npz(os.path.join(round_dir, "result.npz"), fingerprint=np.array(fingerprint), **done)
            joined.update({key: np.concatenate([joined[key], done[key]]) for key in MODEL_KEYS})
            joined["round"] = np.concatenate([joined["round"], np.full(len(done["M"]), k)])
    joined["refinement"] = joined["round"] > 0
    return joined
