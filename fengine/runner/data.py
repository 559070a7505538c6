"""Dataloaders from configs, and the sampler that makes their order reproducible.

MMEngine: ``Runner.build_dataloader``, ``mmengine.dataset.DefaultSampler``,
``default_collate``/``pseudo_collate``.
"""
from __future__ import annotations

import functools
import random
from typing import Any, Callable, Iterator, Sized

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data import default_collate as _torch_default_collate

from .._errors import choices_text, suggest
from ..dist import get_rank, get_world_size
from ..registry import DATA_SAMPLERS, DATASETS

__all__ = ['DefaultSampler', 'build_dataloader', 'default_collate', 'pseudo_collate',
           'COLLATE_FUNCTIONS', 'set_sampler_epoch']


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


def set_sampler_epoch(dataloader: Any, epoch: int) -> bool:
    """Call ``set_epoch(epoch)`` on the loader's sampler (or batch sampler's sampler).

    ``DistributedSampler`` and :class:`DefaultSampler` derive their order from the seed
    and the epoch; without this call every epoch would see the same order.

    Returns:
        Whether a sampler took the epoch.
    """
    for sampler in (getattr(dataloader, 'sampler', None),
                    getattr(getattr(dataloader, 'batch_sampler', None), 'sampler', None)):
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
            return True
    return False


# torch's own: stack samples into batched tensors.
default_collate = _torch_default_collate


def pseudo_collate(batch: list) -> Any:
    """MMEngine's ``pseudo_collate``: group fields into lists without stacking."""
    first = batch[0]
    if isinstance(first, dict):
        return {key: pseudo_collate([sample[key] for sample in batch]) for key in first}
    if isinstance(first, (tuple, list)) and not isinstance(first, str):
        return type(first)(pseudo_collate(list(field)) for field in zip(*batch)) \
            if not hasattr(first, '_fields') else type(first)(
                *(pseudo_collate(list(field)) for field in zip(*batch)))
    return list(batch)


COLLATE_FUNCTIONS: dict[str, Callable[[list], Any]] = {
    'default_collate': default_collate,
    'pseudo_collate': pseudo_collate,
}

_LOADER_KEYS = ('dataset', 'batch_size', 'sampler', 'batch_sampler', 'num_workers',
                'collate_fn', 'pin_memory', 'drop_last', 'persistent_workers',
                'prefetch_factor', 'worker_init_fn', 'shuffle', 'timeout')


def seed_worker(worker_id: int, rank: int = 0) -> None:
    """``worker_init_fn``: distinct streams per rank; ``random`` and NumPy seeded too.

    torch seeds each worker with a base seed drawn from the main process's generator
    (so from the run's seed, new for every pass over the data) plus the worker's id.
    Every rank draws the same base seed, so the rank is mixed in here; ``random`` and
    NumPy are not seeded by torch at all (forked workers would share their state).
    """
    seed = (torch.initial_seed() + rank * 1_000_003) % 2**63
    torch.manual_seed(seed)
    random.seed(seed % 2**32)
    np.random.seed(seed % 2**32)


def build_dataloader(dataloader: DataLoader | dict, *, seed: int | None = None,
                     what: str = 'dataloader') -> DataLoader:
    """A ``DataLoader`` from an instance (returned as it is) or a config dict.

    The dict takes ``DataLoader``'s arguments; ``dataset`` is a ``Dataset`` or a
    config for ``DATASETS``; ``sampler`` a sampler or a config for ``DATA_SAMPLERS``
    (default ``dict(type='DefaultSampler', shuffle=True)``), seeded by ``seed``;
    ``collate_fn`` a callable or ``dict(type='default_collate'|'pseudo_collate')``
    (default ``default_collate``). Workers are seeded from the run's generator, their
    rank and id (:func:`seed_worker`).

    Raises:
        TypeError: neither a ``DataLoader`` nor a dict, or an unknown key (named,
            with the accepted ones).
        ValueError: no ``dataset`` or an unknown collate function.
    """
    if isinstance(dataloader, DataLoader):
        return dataloader
    if not isinstance(dataloader, dict):
        raise TypeError(f'{what} must be a torch DataLoader or a dict config, but got '
                        f'{type(dataloader).__name__}: {dataloader!r}')
    cfg = dict(dataloader)
    unknown = [k for k in cfg if k not in _LOADER_KEYS]
    if unknown:
        raise TypeError(f'{what} has unknown key(s) {unknown}'
                        f'{suggest(unknown[0], _LOADER_KEYS)}; accepted: '
                        f'{choices_text(_LOADER_KEYS)}')
    if 'dataset' not in cfg:
        raise ValueError(f'{what} needs a dataset: dict(dataset=..., batch_size=...)')
    dataset = cfg.pop('dataset')
    if isinstance(dataset, dict):
        dataset = DATASETS.build(dataset)
    elif not isinstance(dataset, Dataset) and not hasattr(dataset, '__getitem__'):
        raise TypeError(f'{what}: dataset must be a Dataset or a dict config for DATASETS, '
                        f'but got {type(dataset).__name__}')
    shuffle = cfg.pop('shuffle', None)
    sampler = cfg.pop('sampler', None)
    if 'batch_sampler' not in cfg:
        if sampler is None:
            sampler = dict(type='DefaultSampler', shuffle=True if shuffle is None else shuffle)
        if isinstance(sampler, dict):
            sampler = DATA_SAMPLERS.build(sampler, default_args=dict(dataset=dataset, seed=seed)
                                          if sampler.get('type') == 'DefaultSampler'
                                          else dict(dataset=dataset))
        cfg['sampler'] = sampler
    collate = cfg.pop('collate_fn', None) or dict(type='default_collate')
    if isinstance(collate, dict):
        name = collate.get('type')
        if name not in COLLATE_FUNCTIONS:
            raise ValueError(f'{what}: unknown collate_fn {name!r}'
                             f'{suggest(str(name), COLLATE_FUNCTIONS)}; choose one of '
                             f'{choices_text(COLLATE_FUNCTIONS)} or pass a callable')
        collate = COLLATE_FUNCTIONS[name]
    if cfg.get('num_workers', 0) > 0 and 'worker_init_fn' not in cfg:
        # A partial of a module-level function: picklable for spawned workers.
        cfg['worker_init_fn'] = functools.partial(seed_worker, rank=get_rank())
    return DataLoader(dataset, collate_fn=collate, **cfg)
