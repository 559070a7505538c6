"""Samplers that give every rank its own part of the data, reproducibly.

MMEngine: ``mmengine.dataset.DefaultSampler``, ``InfiniteSampler``.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Sized

import torch
from torch.utils.data import Sampler

from ..dist import get_rank, get_world_size
from ..registry import DATA_SAMPLERS

__all__ = ['DefaultSampler', 'InfiniteSampler']


@DATA_SAMPLERS.register_module()
class DefaultSampler(Sampler[int]):
    """Shuffled (or sequential) indices, the same for a (seed, epoch) on every machine.

    MMEngine: ``DefaultSampler``. Under ``torch.distributed`` each rank takes every
    ``world_size``-th index, so the ranks see disjoint parts of the data; with
    ``round_up`` the indices are padded by repetition to a multiple of the world size.

    Args:
        dataset: The dataset (only its length is used).
        shuffle: Shuffle with ``torch.randperm`` seeded by ``seed + epoch``.
        seed: The shuffle seed (default: the runner's seed, else 0).
        round_up: Pad so every rank gets the same number of indices.
    """

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int | None = None,
                 round_up: bool = True) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self.round_up = round_up
        self.rank, self.world_size = get_rank(), get_world_size()
        self.epoch = 0
        total = len(dataset)
        if round_up:
            self.num_samples = -(-total // self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = -(-(total - self.rank) // self.world_size)
            self.total_size = total

    def __iter__(self) -> Iterator[int]:
        total = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(total, generator=generator).tolist()
        else:
            indices = list(range(total))
        if self.round_up and self.total_size > total:
            indices = (indices * (self.total_size // total + 1))[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Called by :class:`~fengine.hooks.DistSamplerSeedHook` before every epoch."""
        self.epoch = epoch


@DATA_SAMPLERS.register_module()
class InfiniteSampler(Sampler[int]):
    """An endless stream of indices, for iteration-based training.

    MMEngine: ``InfiniteSampler``. The stream is one pass over the data after another
    (each pass a new permutation of a generator seeded once with ``seed``, or in
    order); rank ``r`` of ``w`` takes every ``w``-th index from the ``r``-th. The
    stream is made once: a new ``iter()`` continues where the last one stopped (also
    after the last iterator was dropped), so a dataloader iterator re-created over the
    same sampler does not repeat the first batches.

    Args:
        dataset: The dataset (only its length is used).
        shuffle: Permute every pass.
        seed: The generator's seed (default: the runner's seed, else 0).
    """

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int | None = None) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self.rank, self.world_size = get_rank(), get_world_size()
        self.size = len(dataset)
        if self.size == 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset, but its length is 0')
        self.indices = self._indices_of_rank()

    def _infinite_indices(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=generator).tolist()
            else:
                yield from range(self.size)

    def _indices_of_rank(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self.rank, None, self.world_size)

    def __iter__(self) -> Iterator[int]:
        # next() rather than `yield from`: closing this iterator (a dataloader's iterator
        # being dropped) must not close the shared stream.
        while True:
            yield next(self.indices)

    def __len__(self) -> int:
        """The dataset's length (the stream itself has no end)."""
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Does nothing: the stream has no epochs (MMEngine's behaviour)."""
