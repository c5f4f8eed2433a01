"""The data order of a training epoch, shared by the tasks that draw samples (crops) rather than windows:
a permutation seeded by (stage seed, epoch), so a resumed run sees the same order, cut to ``per_epoch``
samples (a fresh random subset each epoch; None = all)."""

from __future__ import annotations

import numpy as np


def epoch_count(n: int, per_epoch: int | None) -> int:
    """Samples an epoch draws from ``n``."""
    return n if per_epoch is None else min(n, per_epoch)


def epoch_order(n: int, seed: int, epoch: int, per_epoch: int | None) -> np.ndarray:
    """Indices into ``n`` samples for epoch ``epoch``: seeded by (seed, epoch), ``per_epoch`` of them."""
    return np.random.default_rng([seed, epoch]).permutation(n)[:epoch_count(n, per_epoch)]
