"""A container of one sample's annotations or predictions, with meta information.

MMEngine: ``mmengine.structures.BaseDataElement``.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import numpy as np
import torch

from .._errors import check_choice

__all__ = ['BaseDataElement']

# The two private attributes that record which attribute is which kind of field.
_FIELD_SETS = ('_metainfo_fields', '_data_fields')
_NO_DEFAULT = object()


class BaseDataElement:
    """Data fields (tensors, arrays, nested elements...) plus meta information.

    MMEngine: ``mmengine.structures.BaseDataElement``. Every field is an attribute.
    Meta information (``img_shape``, ``img_id``...) is given with ``metainfo=`` or
    :meth:`set_metainfo`; every other attribute set on the element (``el.bboxes = ...``,
    or a keyword argument) is a data field. A name is either one or the other.
    Tensor-like methods (:meth:`to`, :meth:`cpu`, :meth:`cuda`, :meth:`detach`,
    :meth:`numpy`, :meth:`to_tensor`) return a new element whose data fields are
    converted; meta information is copied as it is.

    A subclass may declare typed fields as properties whose setter calls
    ``self.set_field(value, '_name', dtype=SomeType)``; the field is then listed
    under its public name.

    Args:
        metainfo: Meta information, copied deeply.
        **kwargs: Data fields.

    Example:
        >>> import torch
        >>> from fengine.structures import BaseDataElement
        >>> element = BaseDataElement(scores=torch.tensor([0.5]), metainfo=dict(img_id=3))
        >>> element.keys(), element.metainfo_keys(), element.img_id
        (['scores'], ['img_id'], 3)
    """

    def __init__(self, *, metainfo: dict | None = None, **kwargs: Any) -> None:
        # Insertion-ordered sets (dict keys): keys() lists fields in the order set.
        self._metainfo_fields: dict[str, None] = {}
        self._data_fields: dict[str, None] = {}
        if metainfo is not None:
            self.set_metainfo(metainfo)
        if kwargs:
            self.set_data(kwargs)

    # -- setting fields ---------------------------------------------------------------
    def set_metainfo(self, metainfo: dict) -> None:
        """Add or change meta information fields (deep copies of the values).

        Raises:
            TypeError: ``metainfo`` is not a dict.
            AttributeError: A name is already a data field.
        """
        if not isinstance(metainfo, dict):
            raise TypeError(f'metainfo must be a dict, but got {type(metainfo).__name__}: '
                            f'{metainfo!r}')
        # Checked before any is set, so a refused dict leaves the element as it was.
        taken = [name for name in metainfo if name in self._data_fields]
        if taken:
            raise AttributeError(f'cannot set {taken[0]!r} as a metainfo field of '
                                 f'{type(self).__name__}: it is already a data field')
        for name, value in copy.deepcopy(metainfo).items():
            self.set_field(value, name, field_type='metainfo')

    def set_data(self, data: dict) -> None:
        """Add or change data fields, as ``setattr`` does for each item.

        Raises:
            TypeError: ``data`` is not a dict.
        """
        if not isinstance(data, dict):
            raise TypeError(f'data must be a dict, but got {type(data).__name__}: {data!r}')
        for name, value in data.items():
            setattr(self, name, value)

    def update(self, instance: BaseDataElement) -> None:
        """Copy the meta information and data fields of ``instance`` into this element.

        Raises:
            TypeError: ``instance`` is not a :class:`BaseDataElement`.
        """
        if not isinstance(instance, BaseDataElement):
            raise TypeError(f'update() takes a BaseDataElement, but got '
                            f'{type(instance).__name__}')
        self.set_metainfo(dict(instance.metainfo_items()))
        self.set_data(dict(instance.items()))

    def set_field(self, value: Any, name: str, dtype: type | tuple[type, ...] | None = None,
                  field_type: str = 'data') -> None:
        """Set ``name`` as a field of kind ``field_type`` (``'data'`` or ``'metainfo'``).

        Property setters of subclasses call it with ``dtype`` to check the value's type.

        Raises:
            ValueError: ``field_type`` is neither ``'data'`` nor ``'metainfo'``.
            TypeError: ``value`` is not an instance of ``dtype``.
            AttributeError: ``name`` is already a field of the other kind.
        """
        check_choice('field_type', field_type, ('data', 'metainfo'))
        if dtype is not None and not isinstance(value, dtype):
            expected = (' or '.join(t.__name__ for t in dtype) if isinstance(dtype, tuple)
                        else dtype.__name__)
            raise TypeError(f'{name.lstrip("_")} must be a {expected}, but got '
                            f'{type(value).__name__}: {value!r}')
        mine, other, other_kind = ((self._metainfo_fields, self._data_fields, 'data')
                                   if field_type == 'metainfo'
                                   else (self._data_fields, self._metainfo_fields, 'metainfo'))
        if name in other:
            raise AttributeError(f'cannot set {name!r} as a {field_type} field of '
                                 f'{type(self).__name__}: it is already a {other_kind} field')
        # Set first, record after: a property setter that refuses the value (or a
        # read-only attribute) leaves no field name behind.
        object.__setattr__(self, name, value)
        mine[name] = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELD_SETS:
            if name in self.__dict__:
                raise AttributeError(f'{name} is private to {type(self).__name__} and '
                                     'cannot be replaced')
            object.__setattr__(self, name, value)
            return
        self.set_field(value, name, field_type='data')

    def __delattr__(self, name: str) -> None:
        if name in _FIELD_SETS:
            raise AttributeError(f'{name} is private to {type(self).__name__} and cannot '
                                 'be deleted')
        object.__delattr__(self, name)
        self._metainfo_fields.pop(name, None)
        self._data_fields.pop(name, None)

    __delitem__ = __delattr__

    # -- reading fields ---------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when there is none (as ``dict.get``)."""
        return getattr(self, key, default)

    def pop(self, key: str, default: Any = _NO_DEFAULT) -> Any:
        """Remove the field ``key`` and return its value (as ``dict.pop``).

        Raises:
            KeyError: ``key`` is no field and no ``default`` is given (the message lists
                the fields).
        """
        if key in self._metainfo_fields or key in self._data_fields:
            value = getattr(self, key)
            delattr(self, key)
            return value
        if default is not _NO_DEFAULT:
            return default
        raise KeyError(f'{key!r} is neither a metainfo nor a data field of '
                       f'{type(self).__name__}; fields: {self.all_keys()}')

    def __contains__(self, key: str) -> bool:
        return key in self._data_fields or key in self._metainfo_fields

    def keys(self) -> list[str]:
        """The data fields' names (a property-backed field under its public name)."""
        cls = type(self)
        hidden = {'_' + key for key in self._data_fields
                  if isinstance(getattr(cls, key, None), property)}
        return [key for key in self._data_fields if key not in hidden]

    def metainfo_keys(self) -> list[str]:
        """The meta information fields' names."""
        return list(self._metainfo_fields)

    def values(self) -> list[Any]:
        """The data fields' values."""
        return [getattr(self, key) for key in self.keys()]

    def metainfo_values(self) -> list[Any]:
        """The meta information fields' values."""
        return [getattr(self, key) for key in self.metainfo_keys()]

    def all_keys(self) -> list[str]:
        """Meta information names, then data field names."""
        return self.metainfo_keys() + self.keys()

    def all_values(self) -> list[Any]:
        """Meta information values, then data field values."""
        return self.metainfo_values() + self.values()

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of the data fields."""
        for key in self.keys():
            yield key, getattr(self, key)

    def metainfo_items(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of the meta information fields."""
        for key in self.metainfo_keys():
            yield key, getattr(self, key)

    def all_items(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of the meta information, then of the data fields."""
        for key in self.all_keys():
            yield key, getattr(self, key)

    @property
    def metainfo(self) -> dict:
        """The meta information as a new dict."""
        return dict(self.metainfo_items())

    # -- copies -------------------------------------------------------------------------
    def new(self, *, metainfo: dict | None = None, **kwargs: Any) -> BaseDataElement:
        """A new element of the same class: this one's meta information and data fields,
        each replaced wholesale when given (the data values are shared, not copied)."""
        element = type(self)()
        element.set_metainfo(dict(self.metainfo_items()) if metainfo is None else metainfo)
        element.set_data(kwargs if kwargs else dict(self.items()))
        return element

    def clone(self) -> BaseDataElement:
        """A deep copy: tensors are cloned (as ``Tensor.clone``), nested elements cloned,
        other values deep-copied."""
        element = type(self)()
        element.set_metainfo(dict(self.metainfo_items()))
        element.set_data({key: _clone_value(value) for key, value in self.items()})
        return element

    # -- tensor-like conversions of the data fields -------------------------------------
    def _map_data(self, convert: Any, types: tuple[type, ...]) -> BaseDataElement:
        """A new element whose data values of ``types`` are replaced by ``convert(v)``."""
        element = self.new()
        for key, value in self.items():
            if isinstance(value, types):
                setattr(element, key, convert(value))
        return element

    def to(self, *args: Any, **kwargs: Any) -> BaseDataElement:
        """``value.to(*args, **kwargs)`` for every data value that has a ``to`` method."""
        element = self.new()
        for key, value in self.items():
            if hasattr(value, 'to') and not isinstance(value, type):
                setattr(element, key, value.to(*args, **kwargs))
        return element

    def cpu(self) -> BaseDataElement:
        """Data tensors (and nested elements) moved to the CPU."""
        return self._map_data(lambda v: v.cpu(), (torch.Tensor, BaseDataElement))

    def cuda(self) -> BaseDataElement:
        """Data tensors (and nested elements) moved to the current CUDA device."""
        return self._map_data(lambda v: v.cuda(), (torch.Tensor, BaseDataElement))

    def detach(self) -> BaseDataElement:
        """Data tensors (and nested elements) detached from the autograd graph."""
        return self._map_data(lambda v: v.detach(), (torch.Tensor, BaseDataElement))

    def numpy(self) -> BaseDataElement:
        """Data tensors as NumPy arrays (detached, on the CPU); nested elements too."""
        return self._map_data(
            lambda v: v.numpy() if isinstance(v, BaseDataElement) else v.detach().cpu().numpy(),
            (torch.Tensor, BaseDataElement))

    def to_tensor(self) -> BaseDataElement:
        """Data NumPy arrays as tensors (sharing memory); nested elements too."""
        return self._map_data(
            lambda v: v.to_tensor() if isinstance(v, BaseDataElement) else torch.from_numpy(v),
            (np.ndarray, BaseDataElement))

    def to_dict(self) -> dict:
        """All fields as one dict; nested elements become dicts too."""
        return {key: value.to_dict() if isinstance(value, BaseDataElement) else value
                for key, value in self.all_items()}

    def __repr__(self) -> str:
        return _element_repr(self)


def _clone_value(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, BaseDataElement)):
        return value.clone()
    return copy.deepcopy(value)


def _indent(text: str, spaces: int) -> str:
    """Indent every line of ``text`` but the first (it follows a ``key: `` prefix)."""
    first, *rest = text.split('\n')
    return '\n'.join([first] + [' ' * spaces + line for line in rest])


def _fields_repr(fields: dict) -> str:
    return ''.join(f'\n{key}: {_indent(_value_repr(value), 4)}' for key, value in fields.items())


def _value_repr(value: Any) -> str:
    if isinstance(value, BaseDataElement):
        return _element_repr(value)
    if isinstance(value, dict):
        return _fields_repr(value)
    return repr(value)


def _element_repr(element: BaseDataElement) -> str:
    # MMEngine's layout: two headed sections, fields indented by 4, the address last.
    body = ('\n\n    META INFORMATION' + _indent(_fields_repr(element.metainfo), 4)
            + '\n\n    DATA FIELDS' + _indent(_fields_repr(dict(element.items())), 4))
    return f'<{type(element).__name__}({body}\n) at {hex(id(element))}>'
