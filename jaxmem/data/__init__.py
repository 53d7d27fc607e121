"""Data: image sources (offline bundled, tfds, .npz), seeded subsets, synthetic GMMs."""

from jaxmem.data.images import DATASETS, ImageSet, check_source, load_images
from jaxmem.data.subsets import balanced_subset, train_heldout_split

__all__ = ["DATASETS", "ImageSet", "check_source", "load_images", "balanced_subset", "train_heldout_split"]
