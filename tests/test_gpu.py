"""Checks that need an accelerator, at the sizes the experiments run (`pytest -m gpu`; the
`pytest` stage of launch/gpu_check.py). Skipped on a CPU backend.

On an accelerator run them with the backend visible: conftest.py defaults JAX_PLATFORMS to cpu
when the variable is unset, so set it (empty selects the default backend):
    JAX_PLATFORMS= python3 -m pytest -m gpu tests/test_gpu.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from jaxmem import noise, parallel
from jaxmem.config import load_config
from jaxmem.denoisers import empirical, unet
from jaxmem.geometry import concentration
from jaxmem.neighbors import knn
from jaxmem.train import trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() == "cpu", reason="needs an accelerator (GPU or TPU)")]

KNN_SIZE = (2_048, 50_000, 3_072)  # queries, training points, d: CIFAR-sized, CIFAR-10's training set
GEOMETRY_SIZE = (10_000, 50_000, 3_072, 2_048, 256)  # Q, N, d, block, queries of the one-block slice
# The CIFAR-10 U-Net's layers (32x32x3, attention at 16x16, dropout), narrowed so each dtype compiles in seconds.
UNET_OVERRIDES = dict(channels=32, num_blocks=1)
UNET_BATCH = 64


def _float64_top2(queries: np.ndarray, train: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices [Q, 2] in float64 (ties broken by the lower index)."""
    train64 = train.astype(np.float64)
    sqnorm = np.einsum("nd,nd->n", train64, train64)
    out_d, out_i = [], []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk].astype(np.float64)
        sq = np.einsum("qd,qd->q", q, q)[:, None] - 2.0 * q @ train64.T + sqnorm[None, :]
        order = np.lexsort((np.broadcast_to(np.arange(len(train)), sq.shape), sq), axis=1)[:, :2]
        out_i.append(order)
        out_d.append(np.take_along_axis(sq, order, axis=1))
    return np.concatenate(out_d), np.concatenate(out_i)


def test_sharded_knn_over_the_devices_matches_float64_brute_force():
    num_queries, num_train, dim = KNN_SIZE
    rng = np.random.default_rng(0)
    train = rng.standard_normal((num_train, dim), dtype=np.float32)
    queries = rng.standard_normal((num_queries, dim), dtype=np.float32)
    near = rng.choice(num_train, num_queries // 8, replace=False)  # memorized-like samples: the expansion's worst case
    queries[:len(near)] = train[near] + 1e-3 * rng.standard_normal((len(near), dim), dtype=np.float32)
    mesh = parallel.make_mesh()
    assert mesh.size == jax.device_count() and mesh.devices.flat[0].platform != "cpu"

    distances, indices = knn(queries, train, k=2, mesh=mesh)
    reference_sq, reference_idx = _float64_top2(queries, train)
    np.testing.assert_array_equal(indices, reference_idx)
    np.testing.assert_allclose(distances, np.sqrt(np.maximum(reference_sq, 0.0)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(indices[:len(near), 0], near)


def test_bf16_unet_train_step_is_finite_and_close_to_float32():
    config = load_config(os.path.join(REPO, "configs", "edm_training.py") + ":cifar10_1k")
    config.model.update(**UNET_OVERRIDES)
    config.training.batch_size = UNET_BATCH
    shape = unet.input_shape(config.model)
    images = jax.random.uniform(jax.random.PRNGKey(1), (UNET_BATCH, *shape), minval=-1.0, maxval=1.0)
    results = {}
    for dtype in ("float32", "bfloat16"):
        config.model.dtype = dtype
        program = trainer.build_program(config, shape)
        state = program.init(jax.random.PRNGKey(0))  # float32 parameters, the same for both dtypes
        batch = {"images": jax.device_put(images, program.batch_sharding["images"])}
        state, metrics = program.step(state, batch)
        results[dtype] = (float(metrics["loss"]), float(metrics["finite"]), state.params)
    (loss32, finite32, params32), (loss16, finite16, params16) = results["float32"], results["bfloat16"]
    assert finite32 == finite16 == 1.0 and np.isfinite([loss32, loss16]).all()
    assert abs(loss16 - loss32) <= 0.05 * abs(loss32), (loss16, loss32)
    leaves32, leaves16 = jax.tree_util.tree_leaves(params32), jax.tree_util.tree_leaves(params16)
    assert all(a.dtype == b.dtype == jnp.float32 for a, b in zip(leaves32, leaves16))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves16)


def test_blocked_concentration_at_full_size_is_memory_bounded_and_matches_one_block():
    num_queries, num_train, dim, block, num_slice = GEOMETRY_SIZE
    key = jax.random.PRNGKey(0)
    train = np.asarray(jax.random.uniform(key, (num_train, dim), jnp.float32, -1.0, 1.0))
    source = jnp.arange(num_queries, dtype=jnp.int32) % num_train
    clean = jnp.asarray(train)[source]
    z = jax.random.normal(jax.random.fold_in(key, 1), (num_queries, dim), jnp.float32)
    sigmas = jnp.asarray(noise.log_sigmas(40), jnp.float32)

    blocked = empirical.make_params(train, block)
    compiled = concentration.concentration_kernel.lower(clean, z, source, blocked, sigmas).compile()
    temp_bytes = compiled.memory_analysis().temp_size_in_bytes
    assert temp_bytes < num_queries * num_train * 4, temp_bytes  # under one [Q, N] float32 matrix
    result = compiled(clean, z, source, blocked, sigmas)

    one_block = empirical.make_params(train, num_train)
    reference = concentration.concentration_kernel(clean[:num_slice], z[:num_slice], source[:num_slice], one_block,
                                                   sigmas)
    for field in concentration.CONCENTRATION_FIELDS:
        np.testing.assert_allclose(np.asarray(result[field][:num_slice]), np.asarray(reference[field]),
                                   rtol=1e-4, atol=1e-5, err_msg=field)
