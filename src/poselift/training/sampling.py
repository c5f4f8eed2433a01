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


# --- one epoch's batches over several processes (poselift.training.distributed) ---------------------------
# A stage's batch_size is the global batch: each of ``world`` ranks takes a contiguous part of every batch
# (sizes differing by at most one), so the union over the ranks is the one-process batch set.

def batch_count(n: int, batch_size: int, world: int = 1) -> int:
    """Global batches an epoch of ``n`` samples makes; a last, partial batch smaller than ``world`` is dropped
    (some rank would get no sample)."""
    full, rest = divmod(n, batch_size)
    return full + int(rest > 0 and rest >= world)


def rank_part(batch: np.ndarray, rank: int = 0, world: int = 1) -> np.ndarray:
    """Rank ``rank``'s contiguous part of one global batch (indices, flags, ...): all of it alone."""
    return batch if world == 1 else np.array_split(batch, world)[rank]
