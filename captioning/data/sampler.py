"""A sampler whose order is a function of (seed, epoch) alone, so that a resumed run sees the data
an uninterrupted run would have seen.

Each element is ``(index, epoch)``: datasets draw their per-item randomness (e.g. which captions
of an image) from :func:`item_rng` of (seed, epoch, index), never from a global stream, so the
result does not depend on DataLoader workers or on what ran before. A run resumed from a
mid-epoch checkpoint calls :meth:`EpochSampler.resume` and the next iteration starts at the
first batch not yet trained on.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of one item in one epoch."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index])


class EpochSampler(Sampler[tuple[int, int]]):
    """``(index, epoch)`` pairs of this process's share of ``indices``.

    With ``shuffle`` the order is a permutation drawn from a generator seeded by (seed, epoch);
    without, the given order. Across ``world`` processes the list is padded (repeating its start)
    to a multiple of ``world`` and process ``rank`` takes every ``world``-th element from
    ``rank``, as ``torch.utils.data.DistributedSampler`` does.
    """

    def __init__(self, indices: Sequence[int], seed: int, shuffle: bool, rank: int = 0, world: int = 1):
        if not indices:
            raise ValueError("EpochSampler needs at least one index")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in 0..{world - 1}")
        self.indices = list(indices)
        self.seed, self.shuffle, self.rank, self.world = seed, shuffle, rank, world
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch."""
        self.epoch = epoch

    def resume(self, epoch: int, items_done: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``items_done`` items."""
        if not 0 <= items_done <= len(self):
            raise ValueError(f"cannot skip {items_done} items of an epoch of {len(self)}")
        self.epoch, self._skip = epoch, items_done

    def order(self, epoch: int) -> list[int]:
        """This process's indices of ``epoch``, in order (no skipping)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(len(self.indices), generator=g).tolist()
            ordered = [self.indices[i] for i in perm]
        else:
            ordered = list(self.indices)
        padded = ordered + ordered[: (-len(ordered)) % self.world]
        return padded[self.rank :: self.world]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        for index in self.order(epoch)[skip:]:
            yield index, epoch
