"""Sample quality of an .npz of samples against an image source: FID, KID, precision/recall
(launch/sample_quality.py, jaxmem/experiments/sample_quality.py).

Presets (--config=configs/sample_quality.py:<preset>):
  default  the standard protocol: KID over 100 subsets of 1,000, precision/recall with k = 3;
           give the samples (--config.samples.path=...) and the reference (data.*)
  smoke    seconds: 64 digits as the reference, KID over 10 subsets of 32 (the tests)

Fields:
  samples  path (.npz with a `samples` or `images` array: [N, H, W(, C)], uint8 or floats in
           [-1, 1] or a declared `pixel_range`; launch/edm_training.py's samples.npz works as it is),
           key (the array's name; '' = samples, else images)
  data     dataset (jaxmem.data.DATASETS), split, data_dir (tfds), path ('npz'), num_reference
           (class-balanced reference subset; 0 = all), subset_seed. The reference's features are
           cached by dataset, split and subset (~/.cache/jaxmem/fid_reference)
  metrics  kid_subsets, kid_subset_size, neighbours (k of precision/recall), seed (KID's
           subsets), batch_size (images per network call over all devices; 0 = 8 per device on
           CPU, 128 on accelerators), weights (the converted Inception file; '' = the user cache,
           made by launch/convert_inception.py)
"""

import ml_collections

from jaxmem.config import select_preset


def default() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.samples = ml_collections.ConfigDict(dict(path=ml_collections.FieldReference(None, field_type=str), key=""))
    config.data = ml_collections.ConfigDict(dict(
        dataset="digits", split="train", data_dir=ml_collections.FieldReference(None, field_type=str),
        path=ml_collections.FieldReference(None, field_type=str), num_reference=0, subset_seed=0))
    config.metrics = ml_collections.ConfigDict(dict(
        kid_subsets=100, kid_subset_size=1000, neighbours=3, seed=0, batch_size=0, weights=""))
    return config


def smoke() -> ml_collections.ConfigDict:
    config = default()
    config.data.num_reference = 64
    config.metrics.kid_subsets = 10
    config.metrics.kid_subset_size = 32
    return config


PRESETS = {"default": default, "smoke": smoke}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return select_preset(arg, PRESETS)
