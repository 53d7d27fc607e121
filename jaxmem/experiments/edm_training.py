"""Train an EDM U-Net on an image subset, sample it, measure its memorization (launch/edm_training.py).

run(config, workdir) with a configs/edm_training.py config:
  1. loads the images (jaxmem.data.load_images) and the class-balanced subset of size
     data.num_train (jaxmem.data.balanced_subset), saved as train_indices.npz
  2. trains with jaxmem.train.trainer (resumes from workdir/checkpoints; SIGTERM saves and
     raises jaxmem.train.Preempted, which the launcher answers with exit status 143 so the
     scheduler requeues the same command)
  3. samples sampling.num_samples images with the EDM Heun/Euler sampler from the EMA (or raw)
     parameters: samples.npz (samples [S, H, W, C], sigmas) and samples.png
  4. the memorization rate of the samples against the training subset (1/3 nearest-neighbour
     test, jaxmem.neighbors.memorization_rate) in summary.json
  5. with eval.quality: FID, KID and precision/recall of the samples against the training
     subset and against held-out images of the same split (jaxmem.metrics), summary["quality"]
Workdir: config.json, fingerprint.json (the training recipe: another recipe is refused; sampling
and eval may change), train_indices.npz, checkpoints/, metrics.jsonl, samples.npz, samples.png,
summary.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxmem import footprint, io, neighbors, noise, sampling
from jaxmem.validation import require, require_choice
from jaxmem.data import ImageSet, balanced_subset, check_source, load_images
from jaxmem.data.images import CLASS_COUNTS, SPLIT_SHAPES
from jaxmem.denoisers import unet
from jaxmem.experiments import sample_quality
from jaxmem.metrics import FeatureStats, extract_features, scores, weights
from jaxmem.train import Preempted, checkpoint, trainer
from jaxmem.trajectory import guided_denoiser



def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, naming the field, on configs that cannot run: every group is checked before
    any data is loaded or step trained (the data's own checks follow when it is loaded)."""
    check_source(config.data.dataset, config.data.path)
    require(config.data.num_train >= 0, "data.num_train", config.data.num_train, "0 (all) or a subset size >= 1")
    classes = CLASS_COUNTS.get(config.data.dataset)
    if config.data.dataset == "npz":
        source = load_images("npz", path=config.data.path)
        images, classes = source.images, int(source.labels.max()) + 1
        distinct = len(np.unique(images.reshape(len(images), -1), axis=0))
        require(distinct >= 2, "data.path", config.data.path, f"a file of at least 2 distinct images (it holds "
                f"{distinct}; the memorization test compares each sample's two nearest training images)")
    if config.data.dataset in SPLIT_SHAPES:
        require_choice("data.split", config.data.split, SPLIT_SHAPES[config.data.dataset])
    available, *image = footprint.image_shape(config.data)  # the npz file is checked above
    require(not available or config.data.num_train <= available, "data.num_train", config.data.num_train,
            f"0 (all) or a subset size of 1..{available} (the images {config.data.dataset} holds)")
    unet.validate_model_config(config.model)
    if available:
        check_image_shape(image, config.model)
    check_label_dim(config.model.label_dim, classes)
    resolutions = [config.model.image_size // 2**level for level in range(len(config.model.channel_mult))]
    require(set(config.model.attn_resolutions) <= set(resolutions), "model.attn_resolutions",
            tuple(config.model.attn_resolutions), f"resolutions the network has: a subset of {tuple(resolutions)} "
            "(image_size halved at each level of channel_mult)")
    require(config.model.in_channels >= 1, "model.in_channels", config.model.in_channels, "an integer >= 1")
    require(config.model.sigma_data > 0, "model.sigma_data", config.model.sigma_data, "> 0")
    trainer.validate_training_config(config, jax.device_count())
    training, optim = config.training, config.optim
    require(training.checkpoint_every_steps >= 1, "training.checkpoint_every_steps",
            training.checkpoint_every_steps, "an integer >= 1")
    checkpoint.check_keep(training.keep_checkpoints)
    require(training.checkpoint_every_seconds >= 0, "training.checkpoint_every_seconds",
            training.checkpoint_every_seconds, ">= 0 (0 = only every checkpoint_every_steps)")
    require(0 <= training.ema_rampup_ratio, "training.ema_rampup_ratio", training.ema_rampup_ratio, ">= 0")
    require(training.loss_window_weight >= 0, "training.loss_window_weight", training.loss_window_weight, ">= 0")
    require(0 <= optim.adam_b1 < 1 and 0 <= optim.adam_b2 < 1, "optim.adam_b1, optim.adam_b2",
            (optim.adam_b1, optim.adam_b2), "values in [0, 1)")
    require(optim.adam_eps > 0, "optim.adam_eps", optim.adam_eps, "> 0")
    s = config.sampling
    require(0 < s.sigma_min < s.sigma_max, "sampling.sigma_min, sampling.sigma_max", (s.sigma_min, s.sigma_max),
            "0 < sigma_min < sigma_max")
    require(s.num_steps >= 2, "sampling.num_steps", s.num_steps, "an integer >= 2")
    require(s.rho > 0, "sampling.rho", s.rho, "> 0 (EDM uses 7)")
    require_choice("sampling.solver", s.solver, sampling.EDM_SOLVERS)
    require(s.num_samples >= 1, "sampling.num_samples", s.num_samples, ">= 1")
    require(s.batch_size >= 1, "sampling.batch_size", s.batch_size, ">= 1")
    check_label_batch("sampling.batch_size", s.batch_size, config.model.label_dim)
    require(config.eval.grid_size >= 1, "eval.grid_size", config.eval.grid_size, "an integer >= 1")
    num_train = config.data.num_train or footprint.image_shape(config.data)[0]
    if config.training.batch_size > num_train:
        logging.warning("training.batch_size = %d is larger than the training set (%d images): every batch "
                        "repeats images", config.training.batch_size, num_train)
    footprint.require_fits(footprint.edm(config))


def check_image_shape(data_shape, model: ml_collections.ConfigDict) -> None:
    """Rejects data whose (H, W, C) differs from (model.image_size, model.image_size, model.in_channels)."""
    expected = unet.input_shape(model)
    require(tuple(data_shape) == expected, "model.image_size, model.in_channels",
            (model.image_size, model.in_channels),
            f"the data's image shape (H, W, C) = {tuple(data_shape)}; the network takes {expected}")


def check_label_dim(label_dim: int, classes: int) -> None:
    """A class-conditional network (model.label_dim > 0) needs a label slot for each of the data's
    `classes` (the named datasets' CLASS_COUNTS, an .npz file's largest label + 1)."""
    require(label_dim == 0 or label_dim >= classes, "model.label_dim", label_dim,
            f"0 (unconditional) or >= the {classes} classes of the data (labels 0..{classes - 1})")


def check_label_batch(field: str, batch_size: int, label_dim: int) -> None:
    """A class-conditional network samples class k mod label_dim for sample k only when every
    sampling batch is a multiple of label_dim (see sampling_denoiser)."""
    require(label_dim == 0 or batch_size % label_dim == 0, field, batch_size,
            f"a multiple of model.label_dim = {label_dim} (sample k gets class k mod label_dim)")


def load_training_set(config: ml_collections.ConfigDict) -> tuple[ImageSet, np.ndarray]:
    """(training subset, its indices into the full split)."""
    data = load_images(config.data.dataset, config.data.split, config.data.data_dir, config.data.path)
    indices = np.arange(len(data))
    if config.data.num_train:
        indices = balanced_subset(data.labels, config.data.num_train, config.data.subset_seed)
    return data.take(indices), indices


def recipe_fingerprint(config: ml_collections.ConfigDict) -> str:
    """JSON of the fields a trained network depends on: all but sampling.* and eval.* (they act
    after training, so a rerun may change them and re-sample the same checkpoints)."""
    recipe = {k: v for k, v in config.to_dict().items() if k not in ("sampling", "eval")}
    return json.dumps(recipe, sort_keys=True, default=str)


def train_model(config: ml_collections.ConfigDict, workdir: str) -> tuple[ImageSet, np.ndarray, trainer.TrainResult]:
    """Loads the training set and checks its image shape, ties the workdir to the training recipe
    (workdir/fingerprint.json: a changed recipe on a workdir with checkpoints is refused), saves
    the subset's indices and trains (resuming); raises jaxmem.train.Preempted when SIGTERM stopped
    it. `config` is checked by validate_config (the launcher's door) beforehand.

    Returns (training subset, its indices into the full split, the TrainResult). On a finished
    workdir this only restores the final checkpoint (jaxmem.experiments.denoiser_swaps reuses trained runs).
    """
    data, indices = load_training_set(config)
    # After the data's own checks, so a run stopped by bad data does not claim the workdir.
    io.check_fingerprint(os.path.join(workdir, "fingerprint.json"), recipe_fingerprint(config),
                         "the checkpoints of another training recipe")
    if jax.process_index() == 0:
        io.save_npz(os.path.join(workdir, "train_indices.npz"), indices=indices)
    result = trainer.train(config, workdir, data)
    if result.preempted:
        raise Preempted(f"training stopped by SIGTERM after saving a checkpoint in {workdir}; the same "
                        "command resumes it")
    return data, indices, result


def sampling_params(config: ml_collections.ConfigDict, result: trainer.TrainResult):
    """The parameters the config samples with: the EMA (sampling.use_ema) or the raw ones."""
    return result.state.ema_params if config.sampling.use_ema else result.state.params


def class_labels(batch: int, label_dim: int) -> jax.Array:
    """One-hot labels [batch, label_dim] of class i mod label_dim for the batch's i-th sample."""
    return jax.nn.one_hot(jnp.arange(batch) % label_dim, label_dim)


def sampling_denoiser(config: ml_collections.ConfigDict, guidance: float = 1.0) -> Callable:
    """denoise(params, x [B, H, W, C], sigma) -> x0_hat of the config's network, ready to sample.

    Unconditional networks (model.label_dim = 0) take no labels. A class-conditional network
    gets class i mod label_dim for the batch's i-th sample (so sample k has class k mod
    label_dim when sampling batches are multiples of label_dim) and classifier-free guidance of
    scale g (jaxmem.trajectory.guided_denoiser), whose unconditional branch (all-zero label,
    what label dropout trains) exists only when model.label_dropout > 0. The function is cached
    per (model config, g): one object per network, so edm_generate's compiled programs are reused
    by every call that samples the same network (reruns in one process, the swap models).
    """
    key = (io.config_json(config.model), float(guidance))
    if key not in _SAMPLING_DENOISERS:
        _SAMPLING_DENOISERS[key] = _build_sampling_denoiser(config, guidance)
    return _SAMPLING_DENOISERS[key]


_SAMPLING_DENOISERS: dict[tuple[str, float], Callable] = {}


def _build_sampling_denoiser(config: ml_collections.ConfigDict, guidance: float) -> Callable:
    """sampling_denoiser without the cache."""
    _, denoise = trainer.make_denoiser(config)
    label_dim = config.model.label_dim
    require(guidance == 1 or (label_dim > 0 and config.model.label_dropout > 0), "guidance scale g", guidance,
            "1 (no guidance) unless the network has an unconditional branch: class-conditional "
            "(model.label_dim > 0) and trained with label dropout (model.label_dropout > 0)")
    if not label_dim:
        return denoise

    def guided(params, x, sigma):
        labels = class_labels(x.shape[0], label_dim)
        unconditional = lambda y, s: denoise(params, y, s, jnp.zeros_like(labels))  # noqa: E731
        return guided_denoiser(lambda y, s: denoise(params, y, s, labels), unconditional, guidance)(x, sigma)

    return guided


def quality_summary(config: ml_collections.ConfigDict, data: ImageSet, indices: np.ndarray, samples: np.ndarray,
                    params) -> dict:
    """{"train": scores, "heldout": scores} of the samples (jaxmem.metrics.scores.COLUMNS) against
    the training subset and a class-balanced subset of up to eval.quality_heldout other images
    of the split ("heldout" absent when the subset is the whole split); cached references."""
    d = config.data
    name = d.dataset if d.dataset != "npz" else os.path.basename(d.path)
    subset = f"train_n{d.num_train}_seed{d.subset_seed}" if d.num_train else "all"
    with sample_quality.logged_warnings():
        generated = FeatureStats.of(extract_features(scores.as_uint8(samples), params, name="fid features samples"))
        out = {"train": scores.quality_scores(generated, scores.reference_of(data.images, params, name, d.split,
                                                                             subset))}
        split = load_images(d.dataset, d.split, d.data_dir, d.path)
        n = min(config.eval.quality_heldout, len(split) - len(indices))
        if n > 0:
            held = balanced_subset(split.labels, n, d.subset_seed + 1, exclude=indices)
            reference = scores.reference_of(split.images[held], params, name, d.split,
                                            f"heldout_n{n}_seed{d.subset_seed + 1}_not_{subset}")
            out["heldout"] = scores.quality_scores(generated, reference)
        else:
            logging.info("quality: no held-out images (the training subset is the whole split)")
    return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains, samples and measures memorization (and with eval.quality sample quality); returns
    the summary (also summary.json)."""
    from jaxmem.plots.samples import save_sample_grid  # imported here: pyplot costs every launcher start ~0.5 s
    if config.eval.quality:
        weights.load()  # the Inception weights exist before training, or the command that makes them
    data, indices, result = train_model(config, workdir)
    primary = jax.process_index() == 0
    denoise = sampling_denoiser(config)
    params = sampling_params(config, result)
    sigmas = noise.edm_sigmas(config.sampling.num_steps, config.sampling.sigma_min, config.sampling.sigma_max,
                              config.sampling.rho)
    samples = sampling.edm_generate(sampling.without_step(denoise), params,
                                    config.sampling.num_samples, data.shape, config.sampling.seed, sigmas,
                                    config.sampling.solver, config.sampling.batch_size,
                                    name=f"sample {io.folder_name(workdir)}")
    steps, skipped = (int(v) for v in trainer.fetch_replicated((result.state.step, result.state.skipped)))
    summary = {"steps": steps, "skipped_steps": skipped, "images_seen": steps * config.training.batch_size,
               "num_train": len(data), "num_samples": len(samples),
               "parameters": unet.count_params(params), "resumed_from": result.resumed_from,
               "rejected_checkpoints": result.rejected}
    if config.eval.memorization:
        summary["memorization_rate"] = neighbors.memorization_rate(samples, data.images)
    if config.eval.quality:
        summary["quality"] = quality_summary(config, data, indices, samples, weights.load())
    logging.info("summary: %s", summary)
    if primary:
        io.save_npz(os.path.join(workdir, "samples.npz"), samples=samples, sigmas=sigmas)
        save_sample_grid(os.path.join(workdir, "samples.png"), samples[:config.eval.grid_size],
                         title=f"{config.preset}: {summary['images_seen']:,} images")
        io.write_json(os.path.join(workdir, "summary.json"), summary)
        logging.info("results: %s and %s", os.path.join(workdir, "summary.json"), os.path.join(workdir, "samples.png"))
    return summary
