"""Dataloaders from configs.

MMEngine: ``Runner.build_dataloader``. The samplers and collate functions live in
:mod:`fengine.dataset` (re-exported here, where fengine first had them).
"""
from __future__ import annotations

import functools
import inspect
import random
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._errors import check_int, check_keys, choices_text, suggest
from ..dataset import (COLLATE_FUNCTIONS, DefaultSampler, InfiniteSampler, default_collate,
                       pseudo_collate)
from ..dist import get_rank, get_world_size, sync_random_seed
from ..registry import DATA_SAMPLERS, DATASETS, FUNCTIONS

__all__ = ['DefaultSampler', 'InfiniteSampler', 'build_dataloader', 'default_collate',
           'pseudo_collate', 'COLLATE_FUNCTIONS', 'set_sampler_epoch']


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


# DataLoader's own arguments, read from torch: every one torch accepts (``generator``,
# ``multiprocessing_context``, ``in_order``...) is accepted here. fengine's configs for
# ``dataset``, ``sampler``, ``batch_sampler`` and ``collate_fn`` use the same names.
_LOADER_KEYS = tuple(inspect.signature(DataLoader).parameters)


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
                     what: str = 'dataloader', diff_rank_seed: bool = False) -> DataLoader:
    """A ``DataLoader`` from an instance (returned as it is) or a config dict.

    The dict takes ``DataLoader``'s arguments; ``dataset`` is a ``Dataset`` or a
    config for ``DATASETS``; ``sampler`` a sampler or a config for ``DATA_SAMPLERS``
    (default ``dict(type='DefaultSampler', shuffle=True)``; ``shuffle`` sets the default
    one's), given ``seed`` when its class takes a ``seed`` the config does not set;
    ``batch_sampler`` a batch sampler or a ``DATA_SAMPLERS`` config, built (as
    MMEngine) around the sampler with the loader's ``batch_size`` (and ``drop_last``,
    when it takes one); ``collate_fn`` a callable or a ``FUNCTIONS`` config such as
    ``dict(type='pseudo_collate')`` (its other keys are bound to the function; default
    ``default_collate``). A dataset built from a config is fully initialized here.
    Workers are seeded from the run's generator, their rank and id (:func:`seed_worker`).

    ``num_batch_per_epoch=N`` (MMEngine's debug trick) keeps only the dataset's first
    ``N * batch_size * world_size`` samples, so each pass has ``N`` batches per process.
    ``diff_rank_seed=True`` says ``seed`` differs between processes (``randomness=dict(
    diff_rank_seed=True)``): the samplers get rank 0's, so they still agree on one order
    and split it (MMEngine gives them ``None``, a random seed).

    Raises:
        TypeError: neither a ``DataLoader`` nor a dict, or an unknown key (named,
            with the accepted ones).
        ValueError: no ``dataset``, an unknown collate function, or keys that exclude
            each other (named): ``shuffle`` with ``sampler``, ``sampler`` or ``shuffle``
            with a built ``batch_sampler``.
        KeyError: a sampler or batch sampler type that is not registered (named).
    """
    if isinstance(dataloader, DataLoader):
        return dataloader
    if not isinstance(dataloader, dict):
        raise TypeError(f'{what} must be a torch DataLoader or a dict config, but got '
                        f'{type(dataloader).__name__}: {dataloader!r}')
    cfg = dict(dataloader)
    num_batches = cfg.pop('num_batch_per_epoch', None)
    _check_loader_keys(cfg, what)
    dataset = _build_dataset(cfg, what)
    if num_batches is not None:
        dataset = _first_batches(dataset, num_batches, cfg, what)
    if diff_rank_seed and seed is not None:
        seed = sync_random_seed(seed)
    _check_exclusive(cfg, what)
    _build_samplers(cfg, dataset, seed, what)
    cfg['collate_fn'] = _build_collate(cfg.pop('collate_fn', None), what)
    if cfg.get('num_workers', 0) > 0 and 'worker_init_fn' not in cfg:
        # A partial of a module-level function: picklable for spawned workers.
        cfg['worker_init_fn'] = functools.partial(seed_worker, rank=get_rank())
    return DataLoader(dataset, **cfg)


def _check_loader_keys(cfg: dict, what: str) -> None:
    check_keys(what, cfg, _LOADER_KEYS)
    if 'dataset' not in cfg:
        raise ValueError(f'{what} needs a dataset: dict(dataset=..., batch_size=...)')


def _build_dataset(cfg: dict, what: str) -> Any:
    dataset = cfg.pop('dataset')
    if isinstance(dataset, dict):
        dataset = DATASETS.build(dataset)
        if hasattr(dataset, 'full_init'):  # a lazy_init dataset loads before the workers fork
            dataset.full_init()
        return dataset
    if not isinstance(dataset, Dataset) and not hasattr(dataset, '__getitem__'):
        raise TypeError(f'{what}: dataset must be a Dataset or a dict config for DATASETS, '
                        f'but got {type(dataset).__name__}')
    return dataset


class _FirstSamples(Dataset):
    """The first ``length`` samples of a dataset; other attributes (``metainfo``) are its."""

    def __init__(self, dataset: Any, length: int) -> None:
        self.dataset = dataset
        self.length = length

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        if not -self.length <= index < self.length:
            raise IndexError(f'index {index} out of range for the first {self.length} samples')
        return self.dataset[index % self.length]

    def __len__(self) -> int:
        return self.length


def _first_batches(dataset: Any, num_batches: Any, cfg: dict, what: str) -> Any:
    """``dataset`` cut to ``num_batches`` batches per process (see :func:`build_dataloader`)."""
    num_batches = check_int(f'{what} num_batch_per_epoch', num_batches, minimum=1,
                            accepted='a positive int')
    batch_sampler = cfg.get('batch_sampler')
    batch_size = cfg.get('batch_size', batch_sampler.get('batch_size', 1)
                         if isinstance(batch_sampler, dict) else 1)
    length = num_batches * batch_size * get_world_size()
    return dataset if length >= len(dataset) else _FirstSamples(dataset, length)


def _check_exclusive(cfg: dict, what: str) -> None:
    """Refuse keys of which one would be ignored (torch ignores or rejects them too)."""
    given = {k for k in ('shuffle', 'sampler', 'batch_sampler') if cfg.get(k) is not None}
    if {'shuffle', 'sampler'} <= given:
        raise ValueError(f"{what}: 'shuffle' and 'sampler' are both given, but the sampler "
                         f"decides the order: set shuffle in the sampler's config (e.g. "
                         f"dict(type='DefaultSampler', shuffle={cfg['shuffle']!r})), or "
                         "drop 'sampler'")
    built = 'batch_sampler' in given and not isinstance(cfg['batch_sampler'], dict)
    for key in ('sampler', 'shuffle'):
        if built and key in given:
            raise ValueError(f"{what}: {key!r} and 'batch_sampler' are both given, but a "
                             f"built batch_sampler ({type(cfg['batch_sampler']).__name__}) "
                             f"has its own sampler: drop {key!r}, or give batch_sampler as "
                             'a DATA_SAMPLERS config (dict(type=...)), built around the '
                             'sampler')


def _build_samplers(cfg: dict, dataset: Any, seed: int | None, what: str) -> None:
    """Replace the sampler configs of ``cfg`` by samplers (see :func:`build_dataloader`)."""
    shuffle = cfg.pop('shuffle', None)
    sampler = cfg.pop('sampler', None)
    batch_sampler = cfg.get('batch_sampler')
    if batch_sampler is not None and not isinstance(batch_sampler, dict):
        return  # built by the user, with its own sampler (_check_exclusive)
    if sampler is None:
        sampler = dict(type='DefaultSampler', shuffle=True if shuffle is None else shuffle)
    if isinstance(sampler, dict):
        sampler = _build_sampler(sampler, dataset, seed, what)
    if batch_sampler is None:
        cfg['sampler'] = sampler
    else:
        cfg['batch_sampler'] = _build_batch_sampler(batch_sampler, sampler, cfg, what)


def _build_sampler(sampler_cfg: dict, dataset: Any, seed: int | None, what: str) -> Any:
    defaults: dict[str, Any] = dict(dataset=dataset)
    # Any sampler that takes a seed (a DefaultSampler given as a class, a subclass, a
    # user's own) follows the run's, unless its config sets one.
    if seed is not None and _takes(_sampler_class(sampler_cfg, 'sampler', what), 'seed'):
        defaults['seed'] = seed
    return DATA_SAMPLERS.build(sampler_cfg, default_args=defaults)


def _build_batch_sampler(batch_sampler_cfg: dict, sampler: Any, cfg: dict, what: str) -> Any:
    """Build a batch sampler around ``sampler``; it takes over the loader's batching keys.

    DataLoader refuses ``batch_size`` and ``drop_last`` next to a ``batch_sampler``, so
    they go to the batch sampler when it takes them (and stay, to be refused by torch,
    when it does not).
    """
    cls = _sampler_class(batch_sampler_cfg, 'batch_sampler', what)
    defaults: dict[str, Any] = dict(sampler=sampler)
    for key, default in (('batch_size', 1), ('drop_last', False)):
        if _takes(cls, key):
            defaults[key] = cfg.pop(key, default)
    return DATA_SAMPLERS.build(batch_sampler_cfg, default_args=defaults)


def _sampler_class(sampler_cfg: dict, key: str, what: str) -> Any:
    """The class a ``DATA_SAMPLERS`` config names, or an error naming the loader's key."""
    kind = sampler_cfg.get('type')
    if kind is None:
        raise KeyError(f'{what}: the {key} config needs the key "type" (a DATA_SAMPLERS '
                       f'name or a class), but got {sampler_cfg!r}; registered: '
                       f'{choices_text(DATA_SAMPLERS)}')
    if not isinstance(kind, str):
        return kind
    try:
        return DATA_SAMPLERS.get(kind)
    except KeyError as exc:
        raise KeyError(f'{what}: {key} type {exc.args[0]}') from None


def _takes(factory: Any, name: str) -> bool:
    """Whether calling ``factory`` accepts the keyword ``name`` (``**kwargs`` does)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               or p.kind is p.VAR_KEYWORD for p in parameters)


def _build_collate(collate: Any, what: str) -> Callable[[list], Any]:
    """A collate function from a callable or a ``FUNCTIONS`` config (MMEngine's rule:
    the config's other keys are bound with ``functools.partial``)."""
    collate = collate or dict(type='default_collate')
    if not isinstance(collate, dict):
        return collate
    collate = dict(collate)
    name = collate.pop('type', None)
    if callable(name):
        function = name
    elif name in FUNCTIONS:
        function = FUNCTIONS.get(name)
    else:
        raise ValueError(f'{what}: unknown collate_fn {name!r}{suggest(str(name), FUNCTIONS)}; '
                         f'choose one of {choices_text(FUNCTIONS)} (the FUNCTIONS registry), '
                         'or pass a callable')
    return functools.partial(function, **collate) if collate else function
