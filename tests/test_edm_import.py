"""Importing NVlabs EDM networks (jaxmem.denoisers.edm_import, launch/import_edm.py): equality with
networks built by NVlabs's own code, the CIFAR-10-size round trip, bad input, and an imported
network as the swap experiment's generalizing model.

tests/data/edm/*.npz: three small DDPM++ networks made with NVlabs/edm's training/networks.py
(EDMPrecond around SongUNet) with random weights (std 0.2), inputs and the reference's outputs:
`param/<state_dict name>`, `input/x` [4, 3, 16, 16] NCHW, `input/sigma` (0.01, 0.5, 2, 40),
`input/class_labels` [4, 10] one-hot (conditional file only), `output/D` [4, 3, 16, 16] float32.
"""

import copy
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxmem.config import load_config
from jaxmem.denoisers import edm_import, unet
from jaxmem.experiments import denoiser_swaps
from jaxmem.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "data", "edm")
SWAP_CONFIG = os.path.join(REPO, "configs", "denoiser_swaps.py")
# float32 accuracy: the three networks agree with NVlabs's outputs (|D| up to 3.3) to a measured
# largest difference of 5.96e-7 (unconditional), 3.87e-7 (with map_augment), 5.22e-7 (class-conditional).
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def fixture(name):
    with np.load(os.path.join(FIXTURES, f"{name}.npz"), allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def exported(stored):
    """The arrays of a fixture as a user's export holds them: {state_dict name: array}."""
    return {key.removeprefix("param/"): value for key, value in stored.items() if key.startswith("param/")}


@pytest.mark.parametrize("name", ["edm_ddpmpp_uncond", "edm_ddpmpp_uncond_aug", "edm_ddpmpp_cond"])
@pytest.mark.slow
def test_imported_denoiser_reproduces_the_reference(name):
    stored = fixture(name)
    reference = json.loads(bytes(stored["meta/config_json"]).decode())
    arrays = {key.removeprefix("model."): value for key, value in exported(stored).items()}
    model = edm_import.infer_model(arrays)
    assert (model.image_size, model.in_channels, model.channels, model.channel_mult, model.num_blocks,
            model.attn_resolutions, model.label_dim, model.get("augment_dim", 0)) == (
        reference["img_resolution"], reference["img_channels"], reference["model_channels"],
        tuple(reference["channel_mult"]), reference["num_blocks"], tuple(reference["attn_resolutions"]),
        reference["label_dim"], reference["augment_dim"])
    params = edm_import.to_jaxmem(arrays, model)
    _, denoise = trainer.make_denoiser(ml_collections.ConfigDict(dict(model=model)))
    labels = jnp.asarray(stored["input/class_labels"]) if model.label_dim else None
    x = jnp.asarray(stored["input/x"]).transpose(0, 2, 3, 1)  # NCHW -> NHWC
    out = np.asarray(denoise(params, x, jnp.asarray(stored["input/sigma"]), labels)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, stored["output/D"], **TOLERANCE)
    back = edm_import.to_nvlabs(params, model)  # the inverse map gives the source back, bit for bit
    assert back.keys() == exported(stored).keys()
    assert all(np.array_equal(back[key], value) for key, value in exported(stored).items())


def test_cifar10_size_network_round_trips_exactly():
    model = copy.deepcopy(load_config(os.path.join(REPO, "configs", "edm_training.py:cifar10_50k")).model)
    with model.unlocked():
        model.augment_dim = 9  # the released CIFAR-10 networks carry the augmentation map
    abstract = unet.abstract_params(unet.network_from_config(model), unet.input_shape(model))
    assert unet.count_params(abstract) == 55_732_739 + 9 * 128
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape, np.float32), abstract)
    arrays = edm_import.to_nvlabs(params, model)
    assert all(name.startswith("model.") for name in arrays) and "model.dec.32x32_aux_conv.weight" in arrays
    assert arrays["model.enc.32x32_conv.weight"].shape == (128, 3, 3, 3)
    assert dict(edm_import.infer_model({k.removeprefix("model."): v for k, v in arrays.items()})) == dict(model)
    again = edm_import.to_jaxmem(arrays, model)
    assert jax.tree_util.tree_structure(again) == jax.tree_util.tree_structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(params)))


@pytest.fixture(scope="module")
def uncond():
    return {key.removeprefix("model."): value for key, value in exported(fixture("edm_ddpmpp_uncond")).items()}


def refused(arrays, model=None):
    with pytest.raises(edm_import.NetworkImportError) as error:
        edm_import.to_jaxmem(arrays, model or edm_import.infer_model(arrays))
    return str(error.value)


def test_missing_and_extra_tensors_are_named(uncond):
    arrays = dict(uncond)
    del arrays["dec.16x16_block1.norm1.bias"]
    arrays["enc.16x16_block7.conv0.weight"] = np.zeros((16, 16, 3, 3), np.float32)
    message = refused(arrays, edm_import.infer_model(uncond))
    assert "missing (1): model.dec.16x16_block1.norm1.bias" in message
    assert "left over (1): model.enc.16x16_block7.conv0.weight" in message


def test_shape_mismatch_against_a_given_config_names_tensor_and_shapes(uncond):
    model = edm_import.infer_model(uncond)
    model.embed_dim = 128
    # the first parameter in the tree's (sorted) order whose shape differs
    assert "tensor model.dec.16x16_block0.affine.weight has shape (16, 64); the network of the given config " \
        "needs (16, 128)" in refused(uncond, model)


@pytest.mark.parametrize("extra, architecture", [({"map_noise.freqs": np.ones(8, np.float32)}, "NCSN++"),
                                                 ({"enc.8x8_aux_skip.weight": np.ones((1,), np.float32)}, "NCSN++"),
                                                 ({"out_norm.weight": np.ones(16, np.float32)}, "ADM")])
def test_other_architectures_are_refused_by_name(uncond, extra, architecture):
    with pytest.raises(edm_import.NetworkImportError, match=re.escape(f"an {architecture} network")):
        edm_import.infer_model(dict(uncond, **extra))


def test_a_resample_filter_other_than_ddpmpp_is_refused(uncond):
    ncsn = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32)[None, None] / 64
    message = refused(dict(uncond, **{"enc.8x8_down.conv0.resample_filter": ncsn}))
    assert "model.enc.8x8_down.conv0.resample_filter is not DDPM++'s 2x2 box filter" in message


def test_pickles_and_object_arrays_are_refused_with_the_export_command(tmp_path):
    for path in (tmp_path / "edm-cifar10-32x32-uncond-vp.pkl", tmp_path / "net.npz"):
        if path.suffix == ".pkl":
            path.write_bytes(b"\x80\x04N.")
        else:
            np.savez(path, weights=np.array([{"a": 1}], dtype=object))
        with pytest.raises(edm_import.NetworkImportError) as error:
            edm_import.read_arrays(str(path))
        assert "pickle" in str(error.value) and "['ema']" in str(error.value) and "np.savez" in str(error.value)


def launch(*args, script="import_edm.py"):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def smoke_swap_config():
    config = copy.deepcopy(load_config(f"{SWAP_CONFIG}:smoke"))
    config.unlock()
    config.mitigation.enabled = False  # the fewest programs to compile: no model C, no profile, no guidance
    config.swap.profile = False
    config.trajectory.guidance_scales = (1.0,)
    return config


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """An 8x8x1 network (the swap smoke preset's generalizing architecture, with an augmentation
    map) exported under NVlabs's names and imported by the launcher: (workdir, source, params)."""
    folder = tmp_path_factory.mktemp("import")
    model = copy.deepcopy(smoke_swap_config().generalizing.model)
    model.augment_dim = 9
    params = unet.network_from_config(model).init(jax.random.PRNGKey(3), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))
    params = jax.tree_util.tree_map(np.asarray, params["params"])
    source = str(folder / "digits-net.npz")
    np.savez(source, **edm_import.to_nvlabs(params, model))
    out = launch(f"--source={source}", f"--workdir={folder / 'imported'}")
    assert out.returncode == 0, out.stderr
    assert "imported" in out.stdout and "parameters" in out.stdout
    return str(folder / "imported"), source, params


@pytest.mark.slow
def test_launcher_writes_a_workdir_that_restores_the_network(imported):
    workdir, source, params = imported
    with open(os.path.join(workdir, "experiment.json")) as f:
        assert json.load(f)["experiment"] == edm_import.IMPORT_OWNER
    with open(os.path.join(workdir, "config.json")) as f:
        record = json.load(f)
    with open(source, "rb") as f:
        assert record["source"] == {"file": "digits-net.npz", "sha256": hashlib.sha256(f.read()).hexdigest(),
                                    "images_seen": 0}
    assert record["model"]["augment_dim"] == 9 and record["model"]["image_size"] == 8
    restored, images_seen = edm_import.restore_params(workdir)
    assert images_seen == 0
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(restored),
                                                      jax.tree_util.tree_leaves(params)))


@pytest.mark.slow
def test_launcher_reruns_quietly_and_refuses_other_sources_and_bad_input(imported, tmp_path):
    workdir, source, _ = imported
    again = launch(f"--source={source}", f"--workdir={workdir}")
    assert again.returncode == 0 and "already imported" in again.stdout, again.stderr
    other = tmp_path / "other.npz"
    arrays = dict(np.load(source))
    arrays["model.map_layer0.bias"] = arrays["model.map_layer0.bias"] + 1  # another network of the same shape
    np.savez(other, **arrays)
    out = launch(f"--source={other}", f"--workdir={workdir}")
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "another imported network" in out.stderr
    pickle = tmp_path / "edm-cifar10-32x32-uncond-vp.pkl"
    pickle.write_bytes(b"\x80\x04N.")
    out = launch(f"--source={pickle}", f"--workdir={tmp_path / 'new'}")
    assert out.returncode == 2 and "error: " in out.stderr and "state_dict()" in out.stderr
    assert not (tmp_path / "new").exists()
    edm_owned = tmp_path / "edm_run"
    edm_owned.mkdir()
    (edm_owned / "experiment.json").write_text('{"experiment": "edm"}')  # the training launcher's former name
    out = launch(f"--source={source}", f"--workdir={edm_owned}")
    assert out.returncode == 2 and "belongs to a edm_training run" in out.stderr and "launch/edm_training.py" in out.stderr
    assert sorted(os.listdir(edm_owned)) == ["experiment.json"]
    assert launch("--help").returncode == 0


@pytest.mark.slow
def test_swap_experiment_takes_an_imported_generalizing_model(imported, tmp_path):
    workdir, _, params = imported
    config = smoke_swap_config()
    config.workdirs.generalizing = workdir
    spec = importlib.util.spec_from_file_location("swap_launcher", os.path.join(REPO, "launch", "denoiser_swaps.py"))
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    assert os.path.abspath(workdir) not in map(os.path.abspath, launcher.model_folders(config, str(tmp_path)))
    before = sorted(os.listdir(workdir))
    summary = denoiser_swaps.run(config, str(tmp_path))
    assert sorted(os.listdir(workdir)) == before  # only read
    assert {"B alone", "B in A: medium", "A in B: medium"} <= set(summary["rates"])
    with open(os.path.join(tmp_path, "results.md")) as f:
        assert f"| generalizing | digits | 256 | {unet.count_params(params)} | 0 |" in f.read()
