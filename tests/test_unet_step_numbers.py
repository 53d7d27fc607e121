"""Speed work on the U-Net must not change its numbers: the EDM loss and every gradient of a small
DDPM++ network (two levels of different widths, attention, dropout, labels with label dropout) on
a fixed batch equal, to rtol 1e-5, those the network computed before the CPU speed work (BENCHMARKS.md,
"EDM training step")
(saved in tests/data/unet_step_reference.npz with the parameters they were taken at).

Regenerate (only for a deliberate change of the network's function):
    JAXMEM_WRITE_STEP_REFERENCE=1 python -m pytest -q tests/test_unet_step_numbers.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxmem.denoisers import edm, unet

PATH = os.path.join(os.path.dirname(__file__), "data", "unet_step_reference.npz")
NETWORK = dict(channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.13,
               noise_features=8, embed_dim=32, label_dim=3, label_dropout=0.25)
SHAPE = (4, 16, 16, 3)


def _network():
    return unet.SongUNet(**NETWORK)


def _fresh_params():
    """Initialised parameters, every leaf moved by N(0, 0.05^2) so that no path (near-zero
    output convolutions, zero biases) hides from the gradient check."""
    network = _network()
    labels = jnp.zeros((1, NETWORK["label_dim"]))
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE[1:])), jnp.zeros((1,)), labels)["params"]
    flat = traverse_util.flatten_dict(params, sep="/")
    return {k: v + 0.05 * jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(1), i), v.shape)
            for i, (k, v) in enumerate(sorted(flat.items()))}


def _batch():
    images = jax.random.uniform(jax.random.PRNGKey(2), SHAPE, minval=-1.0, maxval=1.0)
    labels = jax.nn.one_hot(jnp.array([0, 2, 1, 2]), NETWORK["label_dim"])
    return {"images": images, "labels": labels}


def _loss_and_grads(flat_params):
    network = _network()
    loss_fn = edm.make_loss(edm.precondition(edm.flax_net_apply(network)))
    params = traverse_util.unflatten_dict(flat_params, sep="/")
    (loss, _), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, _batch(), jax.random.PRNGKey(3))
    return loss, traverse_util.flatten_dict(grads, sep="/")


@pytest.mark.slow
def test_loss_and_gradients_equal_the_saved_reference():
    if os.environ.get("JAXMEM_WRITE_STEP_REFERENCE"):
        params = _fresh_params()
        loss, grads = _loss_and_grads(params)
        os.makedirs(os.path.dirname(PATH), exist_ok=True)
        np.savez_compressed(PATH, loss=np.asarray(loss), **{f"param:{k}": np.asarray(v) for k, v in params.items()},
                            **{f"grad:{k}": np.asarray(v) for k, v in grads.items()})
    saved = np.load(PATH)
    params = {k[len("param:"):]: jnp.asarray(saved[k]) for k in saved.files if k.startswith("param:")}
    loss, grads = _loss_and_grads(params)
    np.testing.assert_allclose(float(loss), float(saved["loss"]), rtol=1e-5)
    assert sorted(grads) == sorted(k[len("grad:"):] for k in saved.files if k.startswith("grad:"))
    for name, grad in grads.items():
        reference = saved[f"grad:{name}"]
        # rtol 1e-5 per element; atol covers elements that cancel to ~0 (1e-5 of the leaf's scale)
        np.testing.assert_allclose(np.asarray(grad), reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max(),
                                   err_msg=name)
