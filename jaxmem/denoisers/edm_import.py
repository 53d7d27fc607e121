"""Networks of NVlabs's EDM release as jaxmem models: arrays with NVlabs's names in, a workdir out.

NVlabs's EDM CIFAR-10 networks (`edm-cifar10-32x32-uncond-vp.pkl`, `-cond-vp`) are the DDPM++
U-Net (`SongUNet`) inside EDM's preconditioning (`EDMPrecond`, sigma_data 0.5), the architecture
of jaxmem.denoisers.unet, so their weights port one to one. The pickles need NVlabs's code and
torch to load, and a pickle runs code when read, so jaxmem reads only plain arrays: the
`state_dict()` of the pickle's `ema` network saved as an `.npz` by EXPORT_COMMAND.

Names and layouts (NVlabs -> jaxmem; NVlabs's `model.` prefix is optional on reading):
  model.map_label / map_augment / map_layer0 / map_layer1 .weight [out, in]  ->  <same>/kernel [in, out]
  model.enc.<R>x<R>_conv, model.enc.<res>_{down,block<i>}, model.dec.<res>_{in0,in1,up,block<i>}
      .{norm0,conv0,affine,norm1,conv1,skip}                                ->  enc_<res>_.../<same>
      .{norm2,qkv,proj} (attention)                                          ->  .../attn/{norm,qkv,proj}
  model.dec.<R>x<R>_aux_norm, model.dec.<R>x<R>_aux_conv                     ->  out_norm, out_conv
  convolution .weight [out, in, kh, kw] -> kernel [kh, kw, in, out]; GroupNorm .weight -> scale;
  .bias -> bias (R: the image size, res: a level's resolution).
  `resample_filter` entries are buffers, not weights: they must hold DDPM++'s 2x2 box filter
  (every entry 1/4), which jaxmem's average pooling and nearest-neighbour upsampling apply.
NCSN++ (the VE models: Fourier noise embedding, residual encoder, [1, 3, 3, 1] filter) and ADM
(the ImageNet-64 model, `DhariwalUNet`) are other architectures and are refused by name.

An imported workdir (IMPORT_OWNER in experiment.json, see jaxmem.workdir) holds config.json
(`model`: the configs/edm_training.py model group of the network; `source`: file name, sha256, images
seen in training as given at import), fingerprint.json (the same record: one workdir, one import)
and checkpoints/0 (orbax, item "state" = {"params": the U-Net parameters}), read back by
`recorded_model` and `restore_params`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile

import jax
import ml_collections
import numpy as np

from jaxmem import io, parallel
from jaxmem import workdir as ownership
from jaxmem.validation import ConfigError, require
from jaxmem.denoisers import unet
from jaxmem.train.checkpoint import MIN_KEEP, Checkpointer

IMPORT_OWNER = "import_edm"  # the launcher: launch/import_edm.py
EXPORT_COMMAND = """\
import pickle, numpy as np  # in NVlabs's edm checkout and environment (the pickle needs its modules)
net = pickle.load(open('edm-cifar10-32x32-uncond-vp.pkl', 'rb'))['ema']
np.savez('edm-cifar10-32x32-uncond-vp.npz', **{k: v.cpu().numpy() for k, v in net.state_dict().items()})"""
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth")
BOX_FILTER = np.full((1, 1, 2, 2), 0.25, np.float32)  # DDPM++'s resample filter [1, 1], normalised
# Defaults of the fields the arrays do not determine: EDM's DDPM++ CIFAR-10 values.
UNSEEN_DEFAULTS = dict(attn_heads=1, dropout=0.13, label_dropout=0.0, sigma_data=0.5, dtype="float32")


class NetworkImportError(ConfigError):
    """The file or its arrays cannot be imported; the message names the file, tensor or architecture."""


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """{NVlabs name without the `model.` prefix: float32 array} of an .npz export (no pickle is read).

    Raises NetworkImportError for a missing file, a pickle (with EXPORT_COMMAND), another format,
    or non-floating arrays.
    """
    export = f"export the network's arrays in NVlabs's environment:\n{EXPORT_COMMAND}"
    require(os.path.isfile(path), "--source", path, "an existing .npz file of NVlabs-named arrays")
    if path.lower().endswith(PICKLE_SUFFIXES):
        raise NetworkImportError(f"{path} is a pickle, which jaxmem never loads (reading one runs its code); {export}")
    if not zipfile.is_zipfile(path):
        raise NetworkImportError(f"{path} is not an .npz file (a zip of .npy arrays); {export}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            raw = {name: stored[name] for name in stored.files}
    except ValueError as e:  # an object array needs pickle
        raise NetworkImportError(f"{path} holds pickled objects ({e}); {export}") from None
    arrays = {}
    for name, value in raw.items():
        if not np.issubdtype(value.dtype, np.floating):
            raise NetworkImportError(f"{path}: tensor {name} has dtype {value.dtype}, not a floating-point weight")
        arrays[name.removeprefix("model.")] = value.astype(np.float32)
    return arrays


def check_architecture(names) -> None:
    """Refuses, naming it, an NVlabs architecture other than DDPM++ (NCSN++, ADM) from tensor names
    (with or without the `model.` prefix)."""
    names = {name.removeprefix("model.") for name in names}
    if any(n.startswith(("out_norm.", "out_conv.")) for n in names):
        raise NetworkImportError("the arrays are an ADM network (DhariwalUNet, EDM's ImageNet-64 model: top-level "
                                 "out_norm/out_conv); jaxmem implements only DDPM++ (SongUNet, the CIFAR-10 *-vp models)")
    ncsn = [n for n in names if n == "map_noise.freqs" or re.search(r"_aux_(down|skip|residual|up)\.", n)]
    if ncsn:
        raise NetworkImportError(f"the arrays are an NCSN++ network (EDM's *-ve models: Fourier embedding, residual "
                                 f"encoder; e.g. model.{sorted(ncsn)[0]}); jaxmem implements only DDPM++ (the *-vp models)")


def _tensor(arrays: dict, name: str) -> np.ndarray:
    if name not in arrays:
        raise NetworkImportError(f"missing tensor model.{name} (needed to infer the network's config)")
    return arrays[name]


def infer_model(arrays: dict[str, np.ndarray], **unseen) -> ml_collections.ConfigDict:
    """The configs/edm_training.py model group of a DDPM++ network from its arrays' names and shapes.

    unseen: values of UNSEEN_DEFAULTS' fields (what the weights cannot tell) overriding them.
    """
    check_architecture(arrays)
    stems = [m for m in (re.fullmatch(r"enc\.(\d+)x\1_conv\.weight", n) for n in arrays) if m]
    if len(stems) != 1:
        raise NetworkImportError(f"expected one stem convolution model.enc.<R>x<R>_conv.weight, found "
                                 f"{len(stems)}; is this an EDM DDPM++ network's state_dict?")
    size = int(stems[0].group(1))
    channels, in_channels = arrays[stems[0].group(0)].shape[:2]
    resolutions = [size >> level for level in range(size.bit_length())
                   if f"enc.{size >> level}x{size >> level}_block0.conv0.weight" in arrays]
    mult = []
    for res in resolutions:
        width = _tensor(arrays, f"enc.{res}x{res}_block0.conv0.weight").shape[0]
        require(width % channels == 0, f"model.enc.{res}x{res}_block0.conv0.weight", width,
                f"a multiple of the stem's {channels} channels")
        mult.append(width // channels)
    embed_dim, noise_features = _tensor(arrays, "map_layer0.weight").shape
    model = dict(UNSEEN_DEFAULTS, **unseen)
    model.update(
        image_size=size, in_channels=int(in_channels), channels=int(channels), channel_mult=tuple(mult),
        num_blocks=sum(1 for n in arrays if re.fullmatch(rf"enc\.{size}x{size}_block\d+\.conv0\.weight", n)),
        attn_resolutions=tuple(r for r in resolutions if f"enc.{r}x{r}_block0.qkv.weight" in arrays),
        noise_features=int(noise_features), embed_dim=int(embed_dim),
        label_dim=int(arrays["map_label.weight"].shape[1]) if "map_label.weight" in arrays else 0)
    if "map_augment.weight" in arrays:
        model["augment_dim"] = int(arrays["map_augment.weight"].shape[1])
    return ml_collections.ConfigDict(model)


def nvlabs_name(path: tuple[str, ...], image_size: int) -> str:
    """The NVlabs state_dict name of the jaxmem parameter at `path` (module names..., leaf)."""
    *modules, leaf = path
    top = {"out_norm": f"dec.{image_size}x{image_size}_aux_norm",
           "out_conv": f"dec.{image_size}x{image_size}_aux_conv"}.get(modules[0], modules[0])
    top = _dotted(top)
    inner = [{"attn": None, "norm": "norm2"}.get(m, m) if modules[1:2] == ["attn"] else m for m in modules[1:]]
    return ".".join(["model", top, *(m for m in inner if m), {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])


def _dotted(module: str) -> str:
    """jaxmem's top-level module name -> NVlabs's: enc_16x16_block0 -> enc.16x16_block0."""
    return re.sub(r"^(enc|dec)_", r"\1.", module)


def _to_nvlabs_layout(value: np.ndarray) -> np.ndarray:
    """kernel [kh, kw, in, out] -> weight [out, in, kh, kw]; Dense kernel [in, out] -> [out, in]."""
    return {4: lambda v: v.transpose(3, 2, 0, 1), 2: lambda v: v.T}.get(value.ndim, lambda v: v)(value)


def _to_jaxmem_layout(value: np.ndarray) -> np.ndarray:
    """The inverse of _to_nvlabs_layout."""
    return {4: lambda v: v.transpose(2, 3, 1, 0), 2: lambda v: v.T}.get(value.ndim, lambda v: v)(value)


def _leaf_paths(tree) -> list[tuple[tuple[str, ...], object]]:
    """[(path of keys, leaf)] of a nested parameter dict."""
    return [(tuple(k.key for k in path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _resample_buffers(params) -> set[str]:
    """NVlabs names of the resample-filter buffers of the network's down and up blocks."""
    blocks = {path[0] for path, _ in _leaf_paths(params) if re.search(r"_(down|up)$", path[0])}
    return {f"model.{_dotted(block)}.{conv}.resample_filter" for block in blocks for conv in ("conv0", "skip")}


def to_nvlabs(params, model: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """{NVlabs state_dict name: array} of a jaxmem parameter tree (with the resample-filter buffers)."""
    arrays = {nvlabs_name(path, model.image_size): _to_nvlabs_layout(np.asarray(leaf))
              for path, leaf in _leaf_paths(params)}
    return arrays | {name: BOX_FILTER for name in _resample_buffers(params)}


def to_jaxmem(arrays: dict[str, np.ndarray], model: ml_collections.ConfigDict):
    """The jaxmem parameter tree of `model` filled from NVlabs-named arrays (`model.` prefix optional).

    Every parameter must be found with its shape and every array used (resample filters: checked to
    be DDPM++'s box filter); otherwise NetworkImportError naming the missing and left-over tensors, or
    the tensor whose shape differs (both shapes, in NVlabs's layout).
    """
    check_architecture(arrays)
    source = {f"model.{name.removeprefix('model.')}": value for name, value in arrays.items()}
    abstract = unet.abstract_params(unet.network_from_config(model), unet.input_shape(model), model.label_dim)
    filled, missing = {}, []
    for path, leaf in _leaf_paths(abstract):
        name = nvlabs_name(path, model.image_size)
        if name not in source:
            missing.append(name)
            continue
        value = source.pop(name)
        expected = tuple(_to_nvlabs_layout(np.empty(leaf.shape, np.bool_)).shape)  # a view: no data moves
        if value.shape != expected:
            raise NetworkImportError(f"tensor {name} has shape {value.shape}; the network of the given config "
                                     f"needs {expected}")
        node = filled
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = _to_jaxmem_layout(value).astype(np.float32)
    for name in sorted(_resample_buffers(abstract) & set(source)):
        value = source.pop(name)
        if value.shape != BOX_FILTER.shape or not np.allclose(value, BOX_FILTER):
            raise NetworkImportError(f"{name} is not DDPM++'s 2x2 box filter (shape {value.shape}); jaxmem's "
                                     "down/up-sampling implements only that one (NCSN++ uses [1, 3, 3, 1])")
    if missing or source:
        raise NetworkImportError(
            f"the arrays do not match the network {dict(model)}: "
            + "; ".join(f"{what} ({len(names)}): {', '.join(sorted(names)[:8])}{', ...' if len(names) > 8 else ''}"
                        for what, names in (("missing", missing), ("left over", list(source))) if names))
    return filled


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_workdir(folder: str, model: ml_collections.ConfigDict, params, source: str, sha256: str,
                  images_seen: int) -> bool:
    """Writes the imported network into `folder` (see the module docstring); False when the same
    import is already there. A folder holding another import raises ConfigError (its fingerprint)."""
    record = ml_collections.ConfigDict(dict(model=model, source=dict(
        file=os.path.basename(source), sha256=sha256, images_seen=int(images_seen))))
    io.check_fingerprint(os.path.join(folder, "fingerprint.json"), io.config_json(record),
                         "another imported network")
    checkpointer = Checkpointer(os.path.join(folder, "checkpoints"), keep=MIN_KEEP, async_save=False,
                                with_position=False)
    try:
        if 0 in checkpointer.manager.all_steps():
            return False
        checkpointer.save(0, {"params": params}, config=record.to_dict())
    finally:
        checkpointer.close()
    io.save_config(folder, record)
    return True


def is_imported(folder: str) -> bool:
    """Whether `folder` is a workdir written by the importer (its experiment.json)."""
    return os.path.isdir(folder) and ownership.owner_of(folder) == IMPORT_OWNER


def _record(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}): {folder} is an unfinished import; rerun "
                          "launch/import_edm.py on it") from None


def recorded_model(folder: str) -> ml_collections.ConfigDict:
    """The model group (configs/edm_training.py fields) of the network imported into `folder`."""
    model = _record(folder)["model"]
    return ml_collections.ConfigDict({k: tuple(v) if isinstance(v, list) else v for k, v in model.items()})


def restore_params(folder: str) -> tuple[object, int]:
    """(parameters replicated over all devices, images seen in training as recorded) of an import."""
    model = recorded_model(folder)
    mesh = parallel.make_mesh()
    abstract = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.replicated(mesh)),
        unet.abstract_params(unet.network_from_config(model), unet.input_shape(model), model.label_dim))
    checkpointer = Checkpointer(os.path.join(folder, "checkpoints"), keep=MIN_KEEP, with_position=False)
    try:
        restored = checkpointer.restore_latest({"params": abstract}, 0)
    finally:
        checkpointer.close()
    require(restored is not None, "imported workdir", folder, "a folder with the checkpoint launch/import_edm.py writes")
    return restored.state["params"], int(_record(folder)["source"]["images_seen"])
