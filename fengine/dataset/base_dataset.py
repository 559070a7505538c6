"""Datasets described by an annotation file, and the transform pipeline.

MMEngine: ``mmengine.dataset.BaseDataset``, ``Compose``, ``force_full_init``.
"""
from __future__ import annotations

import copy
import functools
import logging
import numbers
import os
import pickle
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from .._errors import check_int
from ..logging import print_log
from ..registry import TRANSFORMS

__all__ = ['BaseDataset', 'Compose', 'force_full_init']


class Compose:
    """Apply transforms one after the other (MMEngine: ``Compose``).

    Each transform is a callable or a ``TRANSFORMS`` config (``dict(type=...)``). A
    transform that returns ``None`` drops the sample: the rest are skipped and the
    call returns ``None`` (a :class:`BaseDataset` then fetches another sample).

    Args:
        transforms: The transforms, in order; ``None`` for none.

    Raises:
        TypeError: An item is neither a dict nor callable, or a config builds
            something that is not callable.

    Example:
        >>> pipeline = Compose([lambda d: {**d, 'x': d['x'] + 1}, lambda d: {**d, 'y': 0}])
        >>> pipeline({'x': 1})
        {'x': 2, 'y': 0}
    """

    def __init__(self, transforms: Sequence[dict | Callable] | None) -> None:
        self.transforms: list[Callable] = []
        if transforms is None:
            transforms = []
        if isinstance(transforms, (dict, str)) or not isinstance(transforms, Sequence):
            raise TypeError(f'Compose takes a list of transforms (dicts or callables), but '
                            f'got {type(transforms).__name__}: {transforms!r}')
        for index, transform in enumerate(transforms):
            if isinstance(transform, dict):
                built = TRANSFORMS.build(transform)
                if not callable(built):
                    raise TypeError(f'transform {index} ({transform!r}) built a '
                                    f'{type(built).__name__}, which is not callable')
                transform = built
            elif not callable(transform):
                raise TypeError(f'transform {index} must be a callable or a TRANSFORMS config '
                                f'dict, but got {type(transform).__name__}: {transform!r}')
            self.transforms.append(transform)

    def __call__(self, data: Any) -> Any:
        for transform in self.transforms:
            data = transform(data)
            if data is None:
                return None
        return data

    def __repr__(self) -> str:
        lines = ''.join(f'\n    {transform}' for transform in self.transforms)
        return f'{type(self).__name__}({lines}\n)'


def force_full_init(method: Callable) -> Callable:
    """Decorate a dataset method so that it first calls ``full_init()`` when the dataset
    has not been fully initialized (MMEngine: ``force_full_init``)."""

    @functools.wraps(method)
    def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(obj, 'full_init'):
            raise AttributeError(f'{type(obj).__name__} has no full_init method, which '
                                 f'{method.__name__} needs')
        if not getattr(obj, '_fully_initialized', False):
            print_log(f'{type(obj).__name__}.{method.__name__} calls full_init() first: '
                      'the dataset was built with lazy_init=True; call full_init() '
                      'yourself to choose when the annotations load.',
                      logger='current', level=logging.WARNING)
            obj.full_init()
            obj._fully_initialized = True
        return method(obj, *args, **kwargs)

    return wrapper


def load_annotation_file(path: str) -> Any:
    """Read an annotation file: JSON or YAML, with :func:`fengine.fileio.load`.

    MMEngine reads pickle annotation files too; unpickling runs whatever code the file
    names, so fengine reads a pickle only when a subclass asks for it explicitly
    (override :meth:`BaseDataset.load_data_list` and call
    ``fengine.fileio.load(path, allow_pickle=True)`` for a file you trust).

    Raises:
        FileNotFoundError: There is no file at ``path``.
        ValueError: The file is neither JSON nor YAML, or not valid (named, with the
            position of the error).
    """
    import yaml

    from ..fileio import load

    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in ('.json', '.yaml', '.yml'):
        raise ValueError(f'annotation file {path!r}: only JSON (.json) and YAML (.yaml, .yml) '
                         'are read; convert it, or override load_data_list() to read your '
                         'format (a trusted pickle: fengine.fileio.load(path, '
                         'allow_pickle=True))')
    try:
        return load(path)
    # json's and YAML's errors name the line and column.
    except (ValueError, yaml.YAMLError) as exc:
        kind = 'JSON' if suffix == '.json' else 'YAML'
        raise ValueError(f'annotation file {path!r} is not valid {kind}: {exc}') from None


def _lines_of(path: str) -> list[str]:
    """The lines of a text file, without line ends (MMEngine: ``list_from_file``)."""
    with open(path, encoding='utf-8') as file:
        return [line.rstrip('\n\r') for line in file]


def _join(prefix: str, path: str) -> str:
    return os.path.join(prefix, path) if prefix else path


class BaseDataset(Dataset):
    """A dataset read from an annotation file in MMEngine's format (MMEngine:
    ``BaseDataset``).

    The file holds a dict with ``metainfo`` (a dict about the dataset, e.g.
    ``classes``) and ``data_list`` (one raw dict per sample, or per group of samples).
    The dataset's meta information merges three sources, highest first: the
    ``metainfo`` argument, the class attribute ``METAINFO``, the file's ``metainfo``.
    Loading (:meth:`full_init`) runs :meth:`load_data_list` (which calls
    :meth:`parse_data_info` on each raw dict), :meth:`filter_data`, keeps
    ``indices``, and serializes the list into one NumPy byte array (workers then share
    it instead of copying a list of dicts). Indexing returns ``pipeline(data_info)``.

    Args:
        ann_file: The annotation file, relative to ``data_root`` unless absolute.
        metainfo: Meta information overriding ``METAINFO`` and the file's. A str value
            that names an existing file is replaced by the file's lines.
        data_root: The folder ``ann_file`` and ``data_prefix`` are relative to.
        data_prefix: ``{key: folder}``: :meth:`parse_data_info` joins each folder
            (itself joined to ``data_root``) to the raw dict's ``key`` entry.
        filter_cfg: Kept as ``self.filter_cfg`` for a subclass's :meth:`filter_data`.
        indices: Keep only these samples: an int ``n`` keeps the first ``n`` (the last
            ``-n`` when negative), a sequence keeps those positions.
        serialize_data: Hold the list serialized (see above).
        pipeline: Transforms (callables or ``TRANSFORMS`` configs) for :class:`Compose`.
        test_mode: A sample the pipeline drops (``None``) is an error, not refetched.
        lazy_init: Do not load the annotations now; the first :meth:`full_init`,
            ``len()``, indexing or ``get_*`` call does.
        max_refetch: In training, how many other random samples to try when the
            pipeline drops one.

    Raises:
        TypeError: ``metainfo`` is not a mapping, a ``data_prefix`` value is not a
            str, or ``indices`` is not an int or a sequence of ints.
        ValueError: ``max_refetch`` is negative.
    """

    METAINFO: dict = dict()
    _fully_initialized: bool = False

    def __init__(self,
                 ann_file: str | os.PathLike | None = '',
                 metainfo: Mapping | None = None,
                 data_root: str | os.PathLike | None = '',
                 data_prefix: dict | None = None,
                 filter_cfg: dict | None = None,
                 indices: int | Sequence[int] | None = None,
                 serialize_data: bool = True,
                 pipeline: Sequence[dict | Callable] | None = None,
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 max_refetch: int = 1000) -> None:
        self.ann_file = os.fspath(ann_file) if ann_file else ''
        self._metainfo = self._load_metainfo(copy.deepcopy(metainfo))
        self.data_root = os.fspath(data_root) if data_root else ''
        self.data_prefix = copy.copy(dict(img_path='') if data_prefix is None else data_prefix)
        self.filter_cfg = copy.deepcopy(filter_cfg)
        self._indices = _check_indices(indices)
        self.serialize_data = serialize_data
        self.test_mode = test_mode
        self.max_refetch = check_int('max_refetch', max_refetch, minimum=0)
        self.data_list: list[dict] = []
        self.data_bytes: np.ndarray
        self.data_address: np.ndarray
        self._join_prefix()
        self.pipeline = Compose(pipeline)
        if not lazy_init:
            self.full_init()

    # -- meta information and paths ---------------------------------------------------
    @classmethod
    def _load_metainfo(cls, metainfo: Mapping | None = None) -> dict:
        """``METAINFO`` updated with ``metainfo`` (a file name value read as its lines)."""
        merged = copy.deepcopy(cls.METAINFO)
        if metainfo is None:
            return merged
        if not isinstance(metainfo, Mapping):
            raise TypeError(f'metainfo must be a dict (or another mapping), but got '
                            f'{type(metainfo).__name__}: {metainfo!r}')
        for key, value in metainfo.items():
            merged[key] = _lines_of(value) if isinstance(value, str) and os.path.isfile(value) \
                else value
        return merged

    @property
    def metainfo(self) -> dict:
        """The dataset's meta information (a deep copy)."""
        return copy.deepcopy(self._metainfo)

    def _join_prefix(self) -> None:
        """Make ``ann_file`` and the ``data_prefix`` folders relative to ``data_root``."""
        if self.ann_file and not os.path.isabs(self.ann_file) and self.data_root:
            self.ann_file = os.path.join(self.data_root, self.ann_file)
        for key, prefix in self.data_prefix.items():
            if not isinstance(prefix, str):
                raise TypeError(f'data_prefix[{key!r}] must be a str (a folder), but got '
                                f'{type(prefix).__name__}: {prefix!r}')
            if self.data_root and not os.path.isabs(prefix):
                self.data_prefix[key] = os.path.join(self.data_root, prefix)

    # -- loading ------------------------------------------------------------------------
    def full_init(self) -> None:
        """Load, filter, subset and serialize the annotations, once.

        A failure leaves the dataset as it was (not initialized, same meta information).
        """
        if self._fully_initialized:
            return
        saved_metainfo = copy.deepcopy(self._metainfo)
        try:
            self.data_list = self.load_data_list()
            self.data_list = self.filter_data()
            if self._indices is not None:
                self.data_list = self._get_unserialized_subset(
                    _positions(self._indices, len(self.data_list), type(self).__name__))
            if self.serialize_data:
                self.data_bytes, self.data_address = self._serialize_data()
        except BaseException:
            self._metainfo, self.data_list = saved_metainfo, []
            raise
        self._fully_initialized = True

    def load_data_list(self) -> list[dict]:
        """Read ``ann_file`` and parse every raw dict of its ``data_list``.

        The file's ``metainfo`` fills in keys the dataset does not have yet. Override
        this to read annotations in another format; return one dict per sample.

        Raises:
            ValueError: No ``ann_file``, or the file is not a dict with ``metainfo``
                and ``data_list``.
            TypeError: ``parse_data_info`` returned something else than a dict or a
                list of dicts.
        """
        if not self.ann_file:
            raise ValueError(f'{type(self).__name__} has no ann_file: pass ann_file=..., '
                             'or override load_data_list() to build the samples')
        annotations = load_annotation_file(self.ann_file)
        if not isinstance(annotations, dict):
            raise ValueError(f'annotation file {self.ann_file!r} must hold a dict with '
                             f'"metainfo" and "data_list", but holds a '
                             f'{type(annotations).__name__}')
        missing = [key for key in ('metainfo', 'data_list') if key not in annotations]
        if missing:
            raise ValueError(f'annotation file {self.ann_file!r} has no {missing}; it must '
                             f'hold "metainfo" and "data_list", but its keys are '
                             f'{list(annotations)}')
        for key, value in annotations['metainfo'].items():
            self._metainfo.setdefault(key, value)
        data_list: list[dict] = []
        for raw_data_info in annotations['data_list']:
            data_info = self.parse_data_info(raw_data_info)
            if isinstance(data_info, dict):
                data_list.append(data_info)
            elif isinstance(data_info, list) and all(isinstance(d, dict) for d in data_info):
                data_list.extend(data_info)
            else:
                raise TypeError(f'{type(self).__name__}.parse_data_info must return a dict '
                                f'or a list of dicts, but returned {data_info!r}')
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict | list[dict]:
        """One raw dict of the file as a sample's data info (or a list of samples).

        By default each ``data_prefix`` folder is joined to the entry of the same key.

        Raises:
            KeyError: The raw dict lacks a ``data_prefix`` key.
        """
        for key, prefix in self.data_prefix.items():
            if key not in raw_data_info:
                raise KeyError(f'data_prefix has the key {key!r}, but the sample '
                               f'{raw_data_info!r} has no {key!r}; its keys are '
                               f'{list(raw_data_info)}. Set data_prefix to the path keys '
                               'of your annotations (data_prefix={} for none)')
            raw_data_info[key] = _join(prefix, raw_data_info[key])
        return raw_data_info

    def filter_data(self) -> list[dict]:
        """Return the samples of ``self.data_list`` to keep (all; a subclass may use
        ``self.filter_cfg``)."""
        return self.data_list

    def get_cat_ids(self, idx: int) -> list[int]:
        """The category ids of sample ``idx``; :class:`ClassBalancedDataset` needs it.

        Raises:
            NotImplementedError: Always, unless a subclass implements it.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement get_cat_ids(idx) '
                                  '(the category ids of a sample) to be used here')

    # -- access -------------------------------------------------------------------------
    @force_full_init
    def get_data_info(self, idx: int) -> dict:
        """A copy of sample ``idx``'s data info, with ``sample_idx`` (its non-negative
        position) added."""
        length = len(self)
        if not -length <= idx < length:
            raise IndexError(f'index {idx} is out of range for {type(self).__name__} of '
                             f'length {length}')
        if self.serialize_data:
            start = 0 if idx % length == 0 else self.data_address[idx % length - 1].item()
            end = self.data_address[idx % length].item()
            data_info = pickle.loads(memoryview(self.data_bytes[start:end]))
        else:
            data_info = copy.deepcopy(self.data_list[idx])
        data_info['sample_idx'] = idx % length
        return data_info

    def prepare_data(self, idx: int) -> Any:
        """``pipeline(get_data_info(idx))``."""
        return self.pipeline(self.get_data_info(idx))

    def __getitem__(self, idx: int) -> Any:
        if not self._fully_initialized:
            print_log(f'{type(self).__name__} is indexed before full_init(): it loads its '
                      'annotations now; call full_init() first to control when.',
                      logger='current', level=logging.WARNING)
            self.full_init()
        if self.test_mode:
            data = self.prepare_data(idx)
            if data is None:
                raise RuntimeError(f'the pipeline dropped sample {idx} (returned None) in '
                                   'test mode, where every sample must be kept')
            return data
        for _ in range(self.max_refetch + 1):
            data = self.prepare_data(idx)
            if data is not None:
                return data
            idx = self._rand_another()
        raise RuntimeError(f'the pipeline dropped (returned None for) {self.max_refetch + 1} '
                           'samples in a row; check the data paths and the pipeline, or '
                           'raise max_refetch')

    def _rand_another(self) -> int:
        return int(np.random.randint(0, len(self)))

    @force_full_init
    def __len__(self) -> int:
        return len(self.data_address) if self.serialize_data else len(self.data_list)

    # -- subsets ------------------------------------------------------------------------
    @force_full_init
    def get_subset_(self, indices: int | Sequence[int]) -> None:
        """Keep only ``indices`` (see the class's ``indices`` argument), in place."""
        positions = _positions(indices, len(self), type(self).__name__)
        if self.serialize_data:
            self.data_bytes, self.data_address = self._get_serialized_subset(positions)
        else:
            self.data_list = self._get_unserialized_subset(positions)

    @force_full_init
    def get_subset(self, indices: int | Sequence[int]) -> BaseDataset:
        """A copy of the dataset holding only ``indices``; this one is unchanged."""
        positions = _positions(indices, len(self), type(self).__name__)
        subset = self._copy_without_annotation()
        if self.serialize_data:
            subset.data_bytes, subset.data_address = self._get_serialized_subset(positions)
        else:
            subset.data_list = copy.deepcopy(self._get_unserialized_subset(positions))
        return subset

    def _get_unserialized_subset(self, indices: int | Sequence[int]) -> list[dict]:
        if isinstance(indices, int):
            return self.data_list[:indices] if indices >= 0 else self.data_list[indices:]
        return [self.data_list[i] for i in indices]

    def _get_serialized_subset(self, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
        ends = self.data_address
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        pieces = [self.data_bytes[starts[i]:ends[i]] for i in positions]
        data_bytes = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
        data_address = np.cumsum([len(piece) for piece in pieces], dtype=np.int64)
        return data_bytes, data_address

    def _serialize_data(self) -> tuple[np.ndarray, np.ndarray]:
        """``data_list`` pickled into one byte array, with each sample's end offset."""
        pieces = [np.frombuffer(pickle.dumps(info, protocol=4), dtype=np.uint8)
                  for info in self.data_list]
        data_address = np.cumsum([len(piece) for piece in pieces], dtype=np.int64)
        data_bytes = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8)
        # The list is dropped: the byte array is the one copy workers share. Reference
        # counting frees the dicts at once; a full gc.collect() would cost ~0.5 s a dataset.
        self.data_list.clear()
        return data_bytes, data_address

    def _copy_without_annotation(self, memo: dict | None = None) -> BaseDataset:
        """A deep copy of everything but the annotations."""
        memo = {} if memo is None else memo
        other = type(self).__new__(type(self))
        memo[id(self)] = other
        for key, value in self.__dict__.items():
            if key not in ('data_list', 'data_address', 'data_bytes'):
                other.__dict__[key] = copy.deepcopy(value, memo)
        other.data_list = []
        return other


def _positions(indices: Any, length: int, owner: str) -> list[int]:
    """The non-negative positions that ``indices`` (see ``BaseDataset``) selects."""
    indices = _check_indices(indices)
    if isinstance(indices, int):
        return list(range(min(indices, length)) if indices >= 0
                    else range(max(length + indices, 0), length))
    out_of_range = [i for i in indices if not -length <= i < length]
    if out_of_range:
        raise IndexError(f'indices {out_of_range} are out of range for {owner} of length '
                         f'{length}')
    return [i % length for i in indices]


def _check_indices(indices: Any) -> int | list[int] | None:
    if indices is None:
        return None
    if isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
        return int(indices)
    if isinstance(indices, (Sequence, np.ndarray)) and not isinstance(indices, str) and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in indices):
        return [int(i) for i in indices]
    raise TypeError(f'indices must be an int or a sequence of ints, but got '
                    f'{type(indices).__name__}: {indices!r}')
