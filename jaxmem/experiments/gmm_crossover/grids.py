"""The grids of the crossover experiment: data sets, capacities and the stacked initial models.

A grid is every model of one data dimension d (or one (d, N) with
training.grid_per_train_size): S training sets (K x N x seed) x C member capacities M, trained
together by jaxmem.train.gmm_grid. `grids_of` describes each grid once (a Grid: d, its N, its
folder, the time grid and its DataSets); `build_grid` stacks their initial parameters, batches
and keys; `make_loss_and_optimizer` is the training config's loss and optimizer
(training.optimizer) on a grid's times.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import noise, theory
from jaxmem.data import gmm as gmm_data
from jaxmem.train import gmm_grid

TEMPLATE_PIXELS = 64  # the 8x8 digit templates of the low-rank model
REPLICATION_SALT = 2  # appended to a data set's seed for its multiplicities
RANDOM_INIT_SALT = 7  # (seed, d, RANDOM_INIT_SALT[, round]) seeds model.init='random' means
ROUND_KEYS_PER_DIM = 1000  # a grid's training key: fold_in(PRNGKey(seed), ROUND_KEYS_PER_DIM d + round)


def times_of(config) -> np.ndarray:
    """The training and evaluation times t [T] (jaxmem.noise.vp_times of training.num_times, t_min, t_max)."""
    return noise.vp_times(config.training.num_times, config.training.t_min, config.training.t_max)


def capacities(num_train: int, fractions) -> np.ndarray:
    """The distinct capacities M = round(f N) (at least 1), increasing."""
    return np.unique(np.maximum(1, np.rint(np.asarray(fractions) * num_train)).astype(np.int64))


def make_data(config, dim: int, num_components: int, num_train: int, seed_index: int) -> gmm_data.GMMData:
    """One data set of the config's data model (N distinct points), with its multiplicities
    (data.replication: the same points, each stored m_i times; seeded apart from the points)."""
    data_config = config.data
    seed = (config.seed, dim, num_components, num_train, seed_index)
    if data_config.model == "isotropic":
        data = gmm_data.isotropic_gmm(dim, num_components, num_train, data_config.num_val, seed,
                                      data_config.variance)
    elif data_config.model == "subspace":
        data = gmm_data.subspace_gmm(dim, data_config.rank, num_components, num_train, data_config.num_val, seed,
                                     data_config.variance, data_config.off_variance)
    else:
        data = gmm_data.lowrank_templates(num_components, dim // TEMPLATE_PIXELS, num_train, data_config.num_val,
                                          seed, data_config.rank or None)
    if data_config.replication == "none":
        return data
    return gmm_data.replicate(data, replication_counts(config, dim, num_components, num_train, seed_index))


def replication_counts(config, dim: int, num_components: int, num_train: int, seed_index: int) -> np.ndarray:
    """[N] copies of each distinct point of one data set (data.replication; seeded apart from the points)."""
    data_config = config.data
    seed = (config.seed, dim, num_components, num_train, seed_index, REPLICATION_SALT)
    return gmm_data.multiplicities(num_train, data_config.replication, data_config.replicated_fraction,
                                   data_config.copies, data_config.zipf_exponent, seed)


class DataSet(NamedTuple):
    """One training set of a grid: K components, N distinct points, its seed index and its data."""

    num_components: int
    num_train: int
    seed_index: int
    data: gmm_data.GMMData


@dataclasses.dataclass(frozen=True)
class Grid:
    """One grid of the experiment: dimension d, its training sizes N, its folder in the workdir,
    the training and evaluation times [T] (times_of) and, made on first use (a finished grid
    needs none), its data sets (make_data_sets)."""

    dim: int
    train_sizes: tuple[int, ...]
    folder: str
    times: np.ndarray
    make_data_sets: Callable[[], list[DataSet]] = dataclasses.field(repr=False, compare=False)

    @functools.cached_property
    def data_sets(self) -> list[DataSet]:
        """Every data set of the grid, K x N x seed in that order."""
        return self.make_data_sets()


def grids_of(config) -> list[Grid]:
    """The grids of the config: one per d, or per (d, N) when training.grid_per_train_size (no
    padding of small training sets to the largest N); folders d<d> or d<d>_n<N>."""
    sizes, times = tuple(int(n) for n in config.data.train_sizes), times_of(config)
    if config.training.grid_per_train_size:
        layout = [(int(d), (n,), f"d{int(d)}_n{n}") for d in config.data.dims for n in sizes]
    else:
        layout = [(int(d), sizes, f"d{int(d)}") for d in config.data.dims]
    return [Grid(dim, train_sizes, folder, times, functools.partial(make_data_sets, config, dim, train_sizes))
            for dim, train_sizes, folder in layout]


def make_data_sets(config, dim: int, train_sizes) -> list[DataSet]:
    """Every data set of a grid of dimension `dim`, K x N x seed in that order."""
    return [DataSet(k, n, s, make_data(config, dim, k, n, s))
            for k in config.data.num_components for n in train_sizes for s in range(config.model.num_seeds)]


def build_grid(config, dim: int, data_sets, capacities_of_set=None, round_index: int = 0
               ) -> tuple[np.ndarray, dict, dict, np.ndarray]:
    """The stacked initial grid of one d: (models, params, batch, rngs).

    data_sets: the grid's DataSets (make_data_sets); capacities_of_set[j]: the
    M values to train on set j (default: the capacity_fractions of N; a later round passes its
    own, possibly none for a set). Rows s of the grid are the sets with at least one M; each
    row holds C member models (C = the largest count; a shorter row repeats its first model in
    the spare slots, trained and never reported). models: [G, 3] int (data set j, row s,
    member c) of every real model, by set then M. params {"means": [S, C, M_max, d] (partial
    init: the first M training points, which are i.i.d. draws, so M distinct random points; the
    stored copies of replicated points follow the N distinct ones (gmm_data.training_rows);
    'replicated_first': the M distinct points of highest multiplicity, point order among equals;
    'random': N(0, I)), "log_var": [S, C] = log init_variance, or with training.optimizer='paper'
    "std": [S, C] = sqrt(init_variance)}; batch {"train": [S, N_max, d], "point_mask":
    [S, N_max], "component_mask": [S, C, M_max]}; rngs [S, 2]: row s's key folds in (d,
    round_index, j), so no two sets or rounds of a d share draws.
    """
    if capacities_of_set is None:
        capacities_of_set = [capacities(data_set.num_train, config.model.capacity_fractions)
                             for data_set in data_sets]
    rows = [j for j, m_values in enumerate(capacities_of_set) if len(m_values)]
    members = max(len(capacities_of_set[j]) for j in rows)
    rows_of_set = [gmm_data.training_rows(data_set.data) for data_set in data_sets]  # stored rows, copies included
    max_n = max(len(r) for r in rows_of_set)
    max_m = max(int(max(capacities_of_set[j])) for j in rows)
    m_grid = np.array([[int(capacities_of_set[j][min(c, len(capacities_of_set[j]) - 1)])
                        for c in range(members)] for j in rows])                       # [S, C]
    models = np.array([(j, s, c) for s, j in enumerate(rows) for c in range(len(capacities_of_set[j]))])
    component_mask = np.arange(max_m) < m_grid[..., None]                              # [S, C, M]
    train = np.zeros((len(rows), max_n, dim), np.float32)
    point_mask = np.zeros((len(rows), max_n), np.float32)
    for s, j in enumerate(rows):
        n = len(rows_of_set[j])
        train[s, :n], point_mask[s, :n] = rows_of_set[j], 1.0
    if config.model.init in ("partial", "replicated_first"):
        first = train[:, :max_m].copy()
        if config.model.init == "replicated_first":  # the most replicated distinct points first
            for s, j in enumerate(rows):
                data = data_sets[j].data
                order = gmm_data.most_replicated_first(data)[:max_m]
                first[s, :len(order)] = data.train[order]
        means = np.broadcast_to(first[:, None], component_mask.shape + (dim,))
    else:
        round_salt = (round_index,) if round_index else ()
        init_rng = np.random.default_rng((config.seed, dim, RANDOM_INIT_SALT) + round_salt)
        means = init_rng.standard_normal(component_mask.shape + (dim,)).astype(np.float32)
    params = {"means": np.where(component_mask[..., None], means, 0.0).astype(np.float32)}
    if gmm_grid.variance_parameter(config.training.optimizer) == "std":  # the authors' s (s^2 = init_variance)
        params["std"] = np.full(m_grid.shape, np.sqrt(config.model.init_variance), np.float32)
    else:
        params["log_var"] = np.full(m_grid.shape, np.log(config.model.init_variance), np.float32)
    batch = {"train": train, "point_mask": point_mask, "component_mask": component_mask}
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), ROUND_KEYS_PER_DIM * dim + round_index)
    rngs = np.asarray(jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.asarray(rows)))
    return models, params, batch, rngs


def grid_shapes(config, dim: int, train_sizes, sets_multiple: int = 1) -> tuple[dict, dict, jax.ShapeDtypeStruct]:
    """The shapes `build_grid` gives a grid of the capacity_fractions, without making its data:
    (params, batch, rngs) as jax.ShapeDtypeStructs, the set axis padded to a multiple of
    `sets_multiple` (the device count). For compiling the grid for a target (compile_check)."""
    sizes = [int(n) for n in train_sizes]
    m_values = [capacities(n, config.model.capacity_fractions) for n in sizes]
    sets = len(config.data.num_components) * len(sizes) * config.model.num_seeds
    sets = -(-sets // sets_multiple) * sets_multiple
    members, max_m = max(len(m) for m in m_values), int(max(m.max() for m in m_values))
    max_n = max(int(replication_counts(config, dim, k, n, s).sum()) for k in config.data.num_components for n in sizes
                for s in range(config.model.num_seeds))
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    params = {"means": f32(sets, members, max_m, dim),
              gmm_grid.variance_parameter(config.training.optimizer): f32(sets, members)}
    batch = {"train": f32(sets, max_n, dim), "point_mask": f32(sets, max_n),
             "component_mask": jax.ShapeDtypeStruct((sets, members, max_m), jnp.bool_)}
    return params, batch, jax.ShapeDtypeStruct((sets, 2), jnp.uint32)


def make_loss_and_optimizer(training, times) -> tuple:
    """(loss_fn, optimizer) of the training group `training` (config.training) on the time grid
    `times` [T] (times_of; a Grid's times): jaxmem.train.gmm_grid.make_gmm_loss and
    make_optimizer (training.optimizer on the Adam schedule)."""
    loss_fn = gmm_grid.make_gmm_loss(
        times, theory.eps_loss_weights(times, training.weighting, training.custom_weights),
        training.noise_draws, training.point_block, training.estimator, training.batch_size)
    optimizer = gmm_grid.make_optimizer(training.optimizer, training.steps, training.peak_lr, training.final_lr,
                                        training.warmup_fraction, training.adam_b2)
    return loss_fn, optimizer
