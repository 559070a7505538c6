"""Per-instance fields of equal length (MMEngine: ``mmengine.structures.InstanceData``)."""
from __future__ import annotations

import numbers
from collections.abc import Sized
from typing import Any, Sequence

import numpy as np
import torch

from .base_data_element import _FIELD_SETS, BaseDataElement

__all__ = ['InstanceData']


class InstanceData(BaseDataElement):
    """A :class:`BaseDataElement` whose data fields all have one length: one entry per
    instance (boxes, labels, scores, masks...).

    MMEngine: ``mmengine.structures.InstanceData``. Fields can be set as items
    (``instances['labels'] = ...``) and the element indexed like a tensor's first dim:
    by an int or a slice, by a list, NumPy array or long tensor of indices, or by a
    bool tensor/array of the element's length; the result is a new ``InstanceData``.
    Tensors, arrays, lists, tuples and strings are indexed natively; any other value
    must have ``__getitem__`` and a ``cat`` method (as ``InstanceData.cat``) to be
    indexed by a tensor. :meth:`cat` concatenates elements with the same fields.

    Example:
        >>> import torch
        >>> from fengine.structures import InstanceData
        >>> instances = InstanceData(labels=torch.tensor([2, 3]), names=['cat', 'dog'])
        >>> picked = instances[instances.labels > 2]
        >>> len(picked), picked.names
        (1, ['dog'])
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELD_SETS:
            super().__setattr__(name, value)
            return
        if not isinstance(value, Sized):
            raise TypeError(f'every InstanceData field needs a length (one entry per '
                            f'instance), but {name!r} is a {type(value).__name__}: {value!r}')
        length = len(self)
        # As MMEngine: checked against a non-empty element only.
        if length > 0 and len(value) != length:
            raise ValueError(f'{name!r} has length {len(value)}, but this InstanceData '
                             f'holds {length} instances (fields: {self.keys()})')
        super().__setattr__(name, value)

    __setitem__ = __setattr__

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            return getattr(self, item)
        index = _as_index(item, len(self))
        new = type(self)(metainfo=self.metainfo)
        for key, value in self.items():
            new[key] = _take(key, value, index)
        return new

    @staticmethod
    def cat(instances_list: Sequence[InstanceData]) -> InstanceData:
        """One ``InstanceData`` holding the instances of all, in order.

        The meta information is the first element's. Tensors are joined with
        ``torch.cat``, arrays with ``np.concatenate``, lists/tuples/strings with ``+``,
        other values with their class's ``cat``.

        Raises:
            TypeError: An item is not an ``InstanceData``.
            ValueError: The list is empty, the elements' fields differ, or a field's
                value cannot be joined.
        """
        instances_list = list(instances_list)
        if not instances_list:
            raise ValueError('InstanceData.cat needs at least one InstanceData, but got '
                             'an empty list')
        for index, instances in enumerate(instances_list):
            if not isinstance(instances, InstanceData):
                raise TypeError(f'InstanceData.cat takes a list of InstanceData, but item '
                                f'{index} is a {type(instances).__name__}')
        if len(instances_list) == 1:
            return instances_list[0]
        first = instances_list[0]
        for index, instances in enumerate(instances_list[1:], 1):
            if set(instances.all_keys()) != set(first.all_keys()):
                raise ValueError(f'InstanceData.cat needs elements with the same fields, but '
                                 f'item 0 has {sorted(first.all_keys())} and item {index} '
                                 f'has {sorted(instances.all_keys())}')
        new = type(first)(metainfo=first.metainfo)
        for key in first.keys():
            new[key] = _join(key, [instances[key] for instances in instances_list])
        return new

    def __len__(self) -> int:
        """The number of instances (0 without data fields)."""
        values = self.values()
        return len(values[0]) if values else 0


def _as_index(item: Any, length: int) -> slice | torch.Tensor:
    """``item`` as a slice or a 1-D long/bool tensor over the first dim."""
    if isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
        item = int(item)
        if not -length <= item < length:
            raise IndexError(f'index {item} is out of range for an InstanceData of '
                             f'{length} instances')
        # A slice keeps the instance dim: a one-instance InstanceData, not a scalar.
        return slice(item, None, length)
    if isinstance(item, slice):
        return item
    if isinstance(item, list):
        item = np.asarray(item, dtype=np.int64 if not item else None)
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item.astype(np.int64) if item.dtype.kind in 'iu' else item)
    if not isinstance(item, torch.Tensor):
        raise TypeError(f'InstanceData can be indexed by a str, an int, a slice, a list, a '
                        f'NumPy array or a long/bool tensor, but got {type(item).__name__}')
    if item.dim() != 1:
        raise IndexError(f'InstanceData is indexed along its first dim only: an index tensor '
                         f'must be 1-D, but got shape {tuple(item.shape)}')
    if item.dtype == torch.bool:
        if len(item) != length:
            raise IndexError(f'a bool index must have one entry per instance ({length}), '
                             f'but got {len(item)}')
    elif item.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f'an index tensor must hold integers or bools, but got {item.dtype}')
    return item


def _take(key: str, value: Any, index: slice | torch.Tensor) -> Any:
    """The entries of ``value`` at ``index``, in ``value``'s own type."""
    if isinstance(index, slice):
        return value[index]
    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)]
    if isinstance(value, np.ndarray):
        return value[index.cpu().numpy()]
    positions = (index.nonzero().view(-1) if index.dtype == torch.bool else index).tolist()
    if isinstance(value, (str, list, tuple)):
        # Sequences of other types than these (a custom class) are joined with `cat`.
        return type(value)(value[p] for p in positions) if not isinstance(value, str) \
            else ''.join(value[p] for p in positions)
    if hasattr(value, '__getitem__') and callable(getattr(value, 'cat', None)):
        length = len(value)
        parts = [value[slice(p, None, length)] for p in positions] or [value[slice(None, 0)]]
        return value.cat(parts)
    raise ValueError(f'field {key!r} ({type(value).__name__}) cannot be indexed by a '
                     'tensor, list or array: it needs __getitem__ and a cat method')


def _join(key: str, values: list) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(values, dim=0)
    if isinstance(first, np.ndarray):
        return np.concatenate(values, axis=0)
    if isinstance(first, (str, list, tuple)):
        joined = first[:]
        for value in values[1:]:
            joined = joined + value
        return joined
    if callable(getattr(first, 'cat', None)):
        return first.cat(values)
    raise ValueError(f'field {key!r} ({type(first).__name__}) cannot be concatenated: it '
                     'needs a cat method')
