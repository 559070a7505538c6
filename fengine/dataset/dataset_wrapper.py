"""Datasets made of other datasets: concatenated, repeated, class-balanced.

MMEngine: ``mmengine.dataset.ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset``.
They are not :class:`BaseDataset` subclasses: ``get_subset`` would be ambiguous
(take the subset of the wrapper or of each wrapped dataset?), so it raises; take
subsets of the wrapped datasets instead (their ``indices`` argument).
"""
from __future__ import annotations

import bisect
import copy
import logging
import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from torch.utils.data import ConcatDataset as _TorchConcatDataset

from .._errors import check_int
from ..logging import print_log
from ..registry import DATASETS
from .base_dataset import BaseDataset, force_full_init

__all__ = ['ClassBalancedDataset', 'ConcatDataset', 'RepeatDataset']


def _build(dataset: Any, owner: str) -> Any:
    """A dataset from a ``DATASETS`` config, or the dataset itself."""
    if isinstance(dataset, dict):
        return DATASETS.build(dataset)
    if isinstance(dataset, BaseDataset) or (hasattr(dataset, '__getitem__')
                                            and hasattr(dataset, '__len__')):
        return dataset
    raise TypeError(f'{owner} wraps datasets (a BaseDataset, another dataset or a DATASETS '
                    f'config dict), but got {type(dataset).__name__}: {dataset!r}')


def _metainfo(dataset: Any) -> dict:
    """A dataset's meta information; ``{}`` for one without (a torchvision dataset)."""
    return copy.deepcopy(getattr(dataset, 'metainfo', None) or {})


def _full_init(dataset: Any) -> None:
    if hasattr(dataset, 'full_init'):
        dataset.full_init()


def _no_subset(owner: str) -> NotImplementedError:
    return NotImplementedError(
        f'{owner} has no get_subset/get_subset_: a subset of a wrapper is ambiguous. Take '
        f'the subset of the wrapped dataset(s) (get_subset, or their indices argument) '
        f'before wrapping them in {owner}')


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


class _Wrapper:
    """What the wrappers share: their meta information, lazy first use, no subsets."""

    _metainfo: dict
    _fully_initialized: bool

    @property
    def metainfo(self) -> dict:
        """The (first) wrapped dataset's meta information (a deep copy)."""
        return copy.deepcopy(self._metainfo)

    def _ensure_initialized(self) -> None:
        if not self._fully_initialized:
            print_log(f'{type(self).__name__} is indexed before full_init(): it initializes '
                      'its datasets now; call full_init() first to control when.',
                      logger='current', level=logging.WARNING)
            self.full_init()

    def get_subset_(self, indices: Any) -> None:
        """Not supported (see the module's docstring)."""
        raise _no_subset(type(self).__name__)

    def get_subset(self, indices: Any) -> Any:
        """Not supported (see the module's docstring)."""
        raise _no_subset(type(self).__name__)


class _OneDatasetWrapper(_Wrapper):
    """A wrapper whose indices map to indices of one dataset (``_get_ori_dataset_idx``);
    its ``full_init`` initializes the dataset, then calls ``_wrap`` once."""

    dataset: Any

    def _start(self, lazy_init: bool) -> None:
        """Record the dataset's meta information now; wrap it now or at first use."""
        self._metainfo = _metainfo(self.dataset)
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def full_init(self) -> None:
        """Fully initialize the wrapped dataset and wrap it, once."""
        if self._fully_initialized:
            return
        _full_init(self.dataset)
        self._wrap()
        self._fully_initialized = True

    def _wrap(self) -> None:
        """Build the index table over the initialized dataset (each wrapper has its own)."""
        raise NotImplementedError(f'{type(self).__name__} must implement _wrap()')

    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        """The data info of index ``idx``, from the wrapped dataset."""
        return self.dataset.get_data_info(self._get_ori_dataset_idx(idx))

    def __getitem__(self, idx: int) -> Any:
        self._ensure_initialized()
        return self.dataset[self._get_ori_dataset_idx(idx)]


@DATASETS.register_module()
class ConcatDataset(_Wrapper, _TorchConcatDataset):
    """Datasets one after the other (MMEngine: ``ConcatDataset``).

    The datasets must agree on their meta information, but for the keys in
    ``ignore_keys``; the wrapper's ``metainfo`` is the first dataset's.

    Args:
        datasets: Datasets or ``DATASETS`` configs.
        lazy_init: Defer the datasets' ``full_init`` (and the index table) to the first
            use.
        ignore_keys: Meta information keys that may differ between the datasets.

    Raises:
        TypeError: An item is not a dataset or config; ``ignore_keys`` is not a str
            or a list of str; a meta key's value has another type in some dataset.
        ValueError: No datasets; a meta key is missing from a dataset or differs.
    """

    def __init__(self, datasets: Sequence[Any], lazy_init: bool = False,
                 ignore_keys: str | list[str] | None = None) -> None:
        built = [_build(dataset, 'ConcatDataset') for dataset in datasets]
        if not built:
            raise ValueError('ConcatDataset needs at least one dataset, but got none')
        self.datasets = built
        if ignore_keys is None:
            self.ignore_keys: list[str] = []
        elif isinstance(ignore_keys, str):
            self.ignore_keys = [ignore_keys]
        elif isinstance(ignore_keys, list) and all(isinstance(k, str) for k in ignore_keys):
            self.ignore_keys = list(ignore_keys)
        else:
            raise TypeError(f'ignore_keys must be a str or a list of str, but got '
                            f'{type(ignore_keys).__name__}: {ignore_keys!r}')
        self._metainfo = _metainfo(built[0])
        self._check_metainfo()
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def _check_metainfo(self) -> None:
        metas = [_metainfo(dataset) for dataset in self.datasets]
        keys = {key for meta in metas for key in meta} - set(self.ignore_keys)
        first = self._metainfo
        for index, meta in enumerate(metas):
            for key in sorted(keys, key=str):
                if key not in meta or key not in first:
                    holder = index if key not in meta else 0
                    raise ValueError(f'ConcatDataset: dataset {holder} has no meta '
                                     f'information {key!r}, which another dataset has; '
                                     f'add it, or list it in ignore_keys')
                if type(meta[key]) is not type(first[key]):
                    raise TypeError(f'ConcatDataset: meta information {key!r} is a '
                                    f'{type(meta[key]).__name__} in dataset {index} but a '
                                    f'{type(first[key]).__name__} in dataset 0')
                if not _same_value(meta[key], first[key]):
                    raise ValueError(f'ConcatDataset: meta information {key!r} of dataset '
                                     f'{index} ({meta[key]!r}) differs from dataset 0\'s '
                                     f'({first[key]!r}); list it in ignore_keys if that is '
                                     'intended')

    def full_init(self) -> None:
        """Fully initialize every dataset and build the index table, once."""
        if self._fully_initialized:
            return
        for dataset in self.datasets:
            _full_init(dataset)
        super().__init__(self.datasets)
        self._fully_initialized = True

    @force_full_init
    def _get_ori_dataset_idx(self, idx: int) -> tuple[int, int]:
        """``(dataset index, index inside it)`` of the global index ``idx``."""
        length = len(self)
        if not -length <= idx < length:
            raise IndexError(f'index {idx} is out of range for ConcatDataset of length '
                             f'{length}')
        idx %= length
        dataset_idx = bisect.bisect_right(self.cumulative_sizes, idx)
        start = self.cumulative_sizes[dataset_idx - 1] if dataset_idx else 0
        return dataset_idx, idx - start

    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        """The data info of global index ``idx``, from its dataset."""
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        return self.datasets[dataset_idx].get_data_info(sample_idx)

    @force_full_init
    def __len__(self) -> int:
        return super().__len__()

    def __getitem__(self, idx: int) -> Any:
        self._ensure_initialized()
        dataset_idx, sample_idx = self._get_ori_dataset_idx(idx)
        return self.datasets[dataset_idx][sample_idx]


@DATASETS.register_module()
class RepeatDataset(_OneDatasetWrapper):
    """A dataset repeated ``times`` times (MMEngine: ``RepeatDataset``): an epoch of it
    is ``times`` epochs of the dataset, with less per-epoch overhead.

    Args:
        dataset: A dataset or a ``DATASETS`` config.
        times: How many times (a positive int).
        lazy_init: Defer the dataset's ``full_init`` to the first use.
    """

    def __init__(self, dataset: Any, times: int, lazy_init: bool = False) -> None:
        self.dataset = _build(dataset, 'RepeatDataset')
        self.times = check_int('RepeatDataset times', times, minimum=1)
        self._start(lazy_init)

    def _wrap(self) -> None:
        self._ori_len = len(self.dataset)

    @force_full_init
    def _get_ori_dataset_idx(self, idx: int) -> int:
        length = len(self)
        if not -length <= idx < length:
            raise IndexError(f'index {idx} is out of range for RepeatDataset of length '
                             f'{length}')
        return idx % self._ori_len

    @force_full_init
    def __len__(self) -> int:
        return self.times * self._ori_len


@DATASETS.register_module()
class ClassBalancedDataset(_OneDatasetWrapper):
    """Samples of rare categories repeated (MMEngine: ``ClassBalancedDataset``).

    The repeat-factor sampling of LVIS: with ``f(c)`` the fraction of samples that
    contain category ``c``, category ``c`` gets ``r(c) = max(1, sqrt(t / f(c)))`` for
    ``t = oversample_thr``, and a sample appears ``ceil(max r(c))`` times over its
    categories (once when it has none). The wrapped dataset must implement
    ``get_cat_ids(idx)``.

    Args:
        dataset: A dataset or a ``DATASETS`` config.
        oversample_thr: Categories rarer than this fraction are oversampled.
        lazy_init: Defer the dataset's ``full_init`` and the repeat factors to the
            first use.
    """

    def __init__(self, dataset: Any, oversample_thr: float, lazy_init: bool = False) -> None:
        self.dataset = _build(dataset, 'ClassBalancedDataset')
        if isinstance(oversample_thr, bool) or not isinstance(oversample_thr, (int, float)):
            raise TypeError(f'oversample_thr must be a number, but got '
                            f'{type(oversample_thr).__name__}: {oversample_thr!r}')
        self.oversample_thr = oversample_thr
        self._start(lazy_init)

    def _wrap(self) -> None:
        factors = self._get_repeat_factors(self.dataset, self.oversample_thr)
        self.repeat_indices = [index for index, factor in enumerate(factors)
                               for _ in range(math.ceil(factor))]

    def _get_repeat_factors(self, dataset: Any, repeat_thr: float) -> list[float]:
        """Each sample's repeat factor (see the class docstring)."""
        if not hasattr(dataset, 'get_cat_ids'):
            raise TypeError(f'ClassBalancedDataset needs a dataset with get_cat_ids(idx), '
                            f'but {type(dataset).__name__} has none')
        num_samples = len(dataset)
        cat_ids = [set(dataset.get_cat_ids(idx)) for idx in range(num_samples)]
        counts: defaultdict = defaultdict(int)
        for ids in cat_ids:
            for cat_id in ids:
                counts[cat_id] += 1
        category_repeat = {cat_id: max(1.0, math.sqrt(repeat_thr / (count / num_samples)))
                           for cat_id, count in counts.items()}
        return [max(category_repeat[cat_id] for cat_id in ids) if ids else 1.0
                for ids in cat_ids]

    @force_full_init
    def _get_ori_dataset_idx(self, idx: int) -> int:
        return self.repeat_indices[idx]

    @force_full_init
    def get_cat_ids(self, idx: int) -> list[int]:
        """The category ids of index ``idx``, from the wrapped dataset."""
        return self.dataset.get_cat_ids(self._get_ori_dataset_idx(idx))

    @force_full_init
    def __len__(self) -> int:
        return len(self.repeat_indices)
