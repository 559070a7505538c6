"""Collate functions and the dataloader worker seeding (MMEngine: ``mmengine.dataset.utils``).

``pseudo_collate`` and ``default_collate`` are registered in ``FUNCTIONS``, so a
dataloader config names them: ``collate_fn=dict(type='pseudo_collate')``.
``COLLATE_FUNCTIONS`` is the same registry under MMEngine's older name.
"""
from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import default_collate as _torch_default_collate

from ..registry import FUNCTIONS
from ..structures import BaseDataElement

__all__ = ['COLLATE_FUNCTIONS', 'default_collate', 'pseudo_collate', 'worker_init_fn']

#: MMEngine's name for the registry of collate functions: it is ``FUNCTIONS``.
COLLATE_FUNCTIONS = FUNCTIONS


def _collate(batch: Sequence, leaf: Callable[[Sequence], Any], name: str) -> Any:
    """Transpose a batch of samples field by field; ``leaf`` turns the values of one
    field (samples that are not containers) into the batched value."""
    first = batch[0]
    if isinstance(first, (str, bytes)):
        return batch
    if isinstance(first, tuple) and hasattr(first, '_fields'):  # a namedtuple
        return type(first)(*(_collate(field, leaf, name) for field in zip(*batch)))
    if isinstance(first, Mapping):
        fields = {key: _collate([sample[key] for sample in batch], leaf, name)
                  for key in first}
        try:
            return type(first)(fields)
        except TypeError:  # a mapping type that cannot be built from a dict (defaultdict)
            return fields
    if isinstance(first, Sequence):
        sizes = {len(sample) for sample in batch}
        if len(sizes) != 1:
            raise RuntimeError(f'{name}: every sample of a batch must have the same number '
                               f'of items, but got sizes {[len(s) for s in batch]}')
        fields = [_collate(list(field), leaf, name) for field in zip(*batch)]
        if isinstance(first, tuple):
            return fields  # a list, as torch's default_collate gives for tuples
        try:
            return type(first)(fields)
        except TypeError:  # a sequence type that cannot be built from a list (range)
            return fields
    return leaf(batch)


def pseudo_collate(data_batch: Sequence) -> Any:
    """Group a batch field by field without stacking (MMEngine: ``pseudo_collate``).

    Dicts and namedtuples keep their type, lists too, tuples become lists; the values
    of each field are gathered in a list (tensors are not stacked, numbers not
    converted).

    Example:
        >>> import torch
        >>> batch = pseudo_collate([dict(img=torch.zeros(2), id=1), dict(img=torch.ones(3), id=2)])
        >>> [t.shape for t in batch['img']], batch['id']
        ([torch.Size([2]), torch.Size([3])], [1, 2])
    """
    return _collate(data_batch, list, 'pseudo_collate')


def _stack_leaves(batch: Sequence) -> Any:
    # Data elements (and strings) are per-sample objects: kept as a list.
    if isinstance(batch[0], BaseDataElement):
        return list(batch)
    return _torch_default_collate(batch)


def default_collate(data_batch: Sequence) -> Any:
    """Stack a batch field by field (MMEngine: ``default_collate``).

    As torch's ``default_collate`` (tensors stacked, NumPy arrays and numbers turned
    into tensors, tuples into lists), except that data elements such as
    :class:`~fengine.structures.InstanceData` are kept as a list of samples.

    Example:
        >>> import torch
        >>> from fengine.structures import LabelData
        >>> batch = default_collate([(torch.zeros(2), LabelData(label=1))] * 3)
        >>> batch[0].shape, len(batch[1])
        (torch.Size([3, 2]), 3)
    """
    return _collate(data_batch, _stack_leaves, 'default_collate')


FUNCTIONS.register_module(module=pseudo_collate)
FUNCTIONS.register_module(module=default_collate)


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int,
                   disable_subprocess_warning: bool = False) -> None:
    """Seed a dataloader worker from the run's seed, its rank and its id.

    MMEngine: ``mmengine.dataset.worker_init_fn``. The worker seeds ``random``, NumPy
    and torch with ``seed + rank * num_workers + worker_id``, so every worker of every
    rank draws its own stream. fengine's runner uses its own ``seed_worker``
    (see ``fengine.runner.data``), which also gives each epoch new streams; this
    function is for a ``DataLoader`` built by hand the MMEngine way, e.g.
    ``functools.partial(worker_init_fn, num_workers=2, rank=0, seed=42)``.

    Args:
        worker_id: The worker's index, ``0 <= worker_id < num_workers``.
        num_workers: The loader's number of workers.
        rank: This process's rank (0 when not distributed).
        seed: The run's seed.
        disable_subprocess_warning: Silence warnings in every worker but the first.
    """
    worker_seed = (num_workers * rank + worker_id + seed) % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    torch.manual_seed(worker_seed)
    if disable_subprocess_warning and worker_id != 0:
        warnings.simplefilter('ignore')
