"""Deterministic, seeded, class-balanced subsets and disjoint held-out splits.

Indices come from numpy's PCG64 generator seeded by `seed`, which gives the same stream on
every platform, so the same (labels, n, seed) selects the same images on every machine.
Runs save the selected indices in their workdir.
"""

from __future__ import annotations

import numpy as np

from jaxmem.validation import require


def balanced_subset(labels: np.ndarray, n: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of n examples, as close to equal per class as the data allows; sorted int64.

    Each class gets floor(n / C) examples and the remainder goes to randomly chosen classes;
    a class with too few examples gives its shortfall to the others. `exclude` indices are
    never selected. Raises ValueError when fewer than n examples are available.
    """
    labels = np.asarray(labels)
    available = np.ones(len(labels), bool)
    if exclude is not None:
        available[np.asarray(exclude, np.int64)] = False
    require(0 < n <= int(available.sum()), "N (subset size)", n,
            f"1 <= N <= {int(available.sum())} (examples available)")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[available])
    pools = [rng.permutation(np.nonzero(available & (labels == c))[0]) for c in classes]
    quota = np.zeros(len(classes), np.int64)
    remaining = n
    while remaining > 0:  # water-filling over classes; at most C rounds
        open_classes = np.nonzero(quota < [len(p) for p in pools])[0]
        share, extra = divmod(remaining, len(open_classes))
        bonus = set(rng.permutation(open_classes)[:extra].tolist())
        for c in open_classes:
            add = min(share + (c in bonus), len(pools[c]) - quota[c])
            quota[c] += add
            remaining -= add
    return np.sort(np.concatenate([p[:q] for p, q in zip(pools, quota)]))


def train_heldout_split(labels: np.ndarray, num_train: int, num_heldout: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint class-balanced (train, held-out) index sets of the given sizes."""
    train = balanced_subset(labels, num_train, seed)
    heldout = balanced_subset(labels, num_heldout, seed + 1_000_003, exclude=train)
    return train, heldout
