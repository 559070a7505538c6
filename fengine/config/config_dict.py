"""``ConfigDict``: a dict whose keys read and write as attributes (MMEngine: ``ConfigDict``)."""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from .._errors import suggest

__all__ = ['ConfigDict']


def _wrap(value: Any) -> Any:
    """Plain dicts (at any depth in lists and tuples) become :class:`ConfigDict`.

    Instances of other dict subclasses are the user's and stay as they are (as MMEngine).
    """
    if type(value) in (dict, OrderedDict):
        return ConfigDict(value)
    if type(value) in (list, tuple):
        return type(value)(_wrap(v) for v in value)
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_unwrap(v) for v in value)
    return value


class ConfigDict(dict):
    """A ``dict`` whose keys are also attributes (MMEngine: ``mmengine.config.ConfigDict``).

    Nested plain dicts, also inside lists and tuples, become ``ConfigDict`` when stored,
    so ``cfg.model.backbone.depth`` works at any depth. Reading a missing key as an
    attribute raises ``AttributeError`` naming the key and close ones; as an item,
    ``KeyError``. Dict methods win over keys of the same name (``cfg.items`` is the
    method; read such a key as ``cfg['items']``).

    Example:
        >>> cfg = ConfigDict(model=dict(type='ResNet', depth=50))
        >>> cfg.model.depth
        50
        >>> cfg.model.depth = 101
        >>> cfg.to_dict()
        {'model': {'type': 'ResNet', 'depth': 101}}
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.update(*args, **kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _wrap(value))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Set keys from a mapping or pairs, and keyword arguments (nothing is merged)."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``dict.setdefault``, storing a plain dict ``default`` as a ``ConfigDict``."""
        if key not in self:
            self[key] = default
        return self[key]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            pass
        if name.startswith('__') and name.endswith('__'):
            raise AttributeError(name)  # protocol lookups (copy, pickle) must fail plainly
        keys = [k for k in self if isinstance(k, str)]
        raise AttributeError(f'the config has no key {name!r}.{suggest(name, keys)} '
                             f'Keys: {", ".join(map(repr, keys)) or "none"}')

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f'the config has no key {name!r}') from None

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {k for k in self if isinstance(k, str)})

    def copy(self) -> ConfigDict:
        """A shallow copy, as a ``ConfigDict``."""
        return type(self)(self)

    __copy__ = copy

    def __deepcopy__(self, memo: dict) -> ConfigDict:
        other = type(self)()
        memo[id(self)] = other
        for key, value in self.items():
            dict.__setitem__(other, copy.deepcopy(key, memo), copy.deepcopy(value, memo))
        return other

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))

    def to_dict(self) -> dict:
        """The same tree with plain ``dict`` everywhere (lists and tuples kept)."""
        return _unwrap(self)
