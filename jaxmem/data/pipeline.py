"""Deterministic, resumable input pipeline over an in-memory ImageSet.

Epoch e visits the n images in the order of a permutation drawn from numpy's PCG64 seeded by
(seed, e) (the same on every machine), optionally x-flipping each visit with probability 1/2
from the same stream. A global batch takes the next `batch_size` entries of that order and runs
on into epoch e + 1 when the epoch ends, so batches never depend on how the run was split
into sessions: the position (epoch, offset) is all a checkpoint needs to resume exactly.

Multi-host: every process computes the same global batch indices and materialises only its
own contiguous slice of rows (rows [p B/P, (p + 1) B/P) for process p of P), which
`jax.make_array_from_process_local_data` assembles into the global, data-sharded array.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxmem.data.images import ImageSet


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the stream stands: `offset` entries of epoch `epoch`'s order were consumed."""

    epoch: int = 0
    offset: int = 0

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    @classmethod
    def from_dict(cls, values: dict) -> "Position":
        return cls(int(values["epoch"]), int(values["offset"]))


class ShuffledBatches:
    """Global batches [batch_size, H, W, C] of an ImageSet in a seeded per-epoch order.

    labels: `label_dim` > 0 adds one-hot labels [B, label_dim] float32 to each batch under
    "labels". process_index / process_count default to jax's (multi-host slicing).
    """

    def __init__(self, data: ImageSet, batch_size: int, seed: int, xflip: bool = False,
                 label_dim: int = 0, process_index: int | None = None, process_count: int | None = None):
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batch_size < 1 or batch_size % self.process_count:
            raise ValueError(f"batch_size = {batch_size} is not a positive multiple of the process count "
                             f"{self.process_count}")
        if not len(data):
            raise ValueError("data holds no images")
        if label_dim and int(data.labels.max()) >= label_dim:
            raise ValueError(f"label_dim = {label_dim} does not exceed the largest label {int(data.labels.max())} "
                             "in the data")
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.xflip, self.label_dim = xflip, label_dim

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(permutation [n] int64, flip flags [n] bool) of epoch `epoch`."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.data))
        flips = rng.random(len(self.data)) < 0.5 if self.xflip else np.zeros(len(self.data), bool)
        return order, flips

    def global_indices(self, position: Position) -> tuple[np.ndarray, np.ndarray, Position]:
        """(indices [B], flips [B], next position) of the global batch starting at `position`."""
        indices, flips = [], []
        epoch, offset, needed = position.epoch, position.offset, self.batch_size
        while needed:
            order, flip = self.epoch_order(epoch)
            take = min(needed, len(order) - offset)
            indices.append(order[offset:offset + take])
            flips.append(flip[offset:offset + take])
            offset, needed = offset + take, needed - take
            if offset == len(order):
                epoch, offset = epoch + 1, 0
        return np.concatenate(indices), np.concatenate(flips), Position(epoch, offset)

    def local_batch(self, position: Position) -> tuple[dict, Position]:
        """This process's rows of the global batch at `position`, and the next position.

        Returns ({"images": [B/P, H, W, C] float32[, "labels": [B/P, label_dim] float32]}, next).
        """
        indices, flips, following = self.global_indices(position)
        rows = self.batch_size // self.process_count
        mine = slice(self.process_index * rows, (self.process_index + 1) * rows)
        images = self.data.images[indices[mine]]
        images = np.where(flips[mine, None, None, None], images[:, :, ::-1, :], images)
        batch = {"images": images.astype(np.float32)}
        if self.label_dim:
            batch["labels"] = np.eye(self.label_dim, dtype=np.float32)[self.data.labels[indices[mine]]]
        return batch, following
