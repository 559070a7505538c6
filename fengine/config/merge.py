"""The ``_base_`` merge: a child config's dict laid over its base's, as a pure function.

MMEngine: ``Config._merge_a_into_b``. Neither argument is modified; the result shares
no dict or list with them (values that are not dicts or lists are shared).
"""
from __future__ import annotations

from typing import Any

__all__ = ['DELETE_KEY', 'merge_into']

#: A dict of the child holding ``_delete_=True`` replaces its base's dict instead of
#: being merged into it.
DELETE_KEY = '_delete_'


def _take_delete(value: dict, where: str) -> tuple[dict, bool]:
    """``value`` without ``_delete_``, and whether it asked to replace the base."""
    if DELETE_KEY not in value:
        return value, False
    flag = value[DELETE_KEY]
    if not isinstance(flag, bool):
        raise TypeError(f'{where}: {DELETE_KEY} must be True or False, but got {flag!r}')
    return {k: v for k, v in value.items() if k != DELETE_KEY}, flag


def _fresh(value: Any) -> Any:
    """A copy of the dicts and lists in ``value``, with every ``_delete_`` flag dropped
    (it has nothing to replace where there is no base value)."""
    if isinstance(value, dict):
        value, _ = _take_delete(value, 'config')
        return {k: _fresh(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_fresh(v) for v in value)
    return value


def _path(prefix: str, key: Any) -> str:
    return f'{prefix}.{key}' if prefix else str(key)


def merge_into(child: dict, base: dict | list, allow_list_keys: bool = False) -> dict | list:
    """Return ``base`` with ``child`` laid over it (MMEngine: ``Config._merge_a_into_b``).

    Rules: a key of ``child`` whose value is a dict is merged into the base's dict of
    the same key, recursively, unless that dict has ``_delete_=True``, which replaces
    the base's value; any other value replaces the base's value. With
    ``allow_list_keys``, a key made of digits (``'0'``) addresses an element of a base
    list. ``_delete_`` never reaches the result.

    Args:
        child: The values that win.
        base: The values inherited (a dict, or a list when a digit key reaches it).
        allow_list_keys: Let digit keys index base lists (``--cfg-options a.0.b=1``).

    Returns:
        A new dict (or list): ``base``'s keys in their order, then ``child``'s new keys.

    Raises:
        TypeError: A dict of ``child`` meets a base value that is not a dict (nor a
            list addressed by index), naming the key and both types.
        IndexError: A digit key is past the end of the base list.

    Example:
        >>> merge_into(dict(opt=dict(lr=0.1)), dict(opt=dict(type='SGD', lr=0.02)))
        {'opt': {'type': 'SGD', 'lr': 0.1}}
        >>> merge_into(dict(opt=dict(_delete_=True, lr=0.1)), dict(opt=dict(type='SGD')))
        {'opt': {'lr': 0.1}}
    """
    return _merge(child, base, allow_list_keys, '')


def _merge(child: dict, base: dict | list, allow_list_keys: bool, _prefix: str) -> dict | list:
    if isinstance(base, list):
        merged_list = [_fresh(v) for v in base]
        for key, value in child.items():
            where = _path(_prefix, key)
            if not (isinstance(key, str) and key.isdigit()):
                raise TypeError(f'{where}: the base value at {_prefix or "the top"} is a list, '
                                f'so its keys must be indices such as 0, but got {key!r}')
            index = int(key)
            if index >= len(base):
                raise IndexError(f'{where}: index {index} is past the end of the base list '
                                 f'(length {len(base)}): {base!r}')
            merged_list[index] = _merge_value(value, base[index], allow_list_keys, where)
        return merged_list
    merged = {k: _fresh(v) for k, v in base.items()}
    for key, value in child.items():
        where = _path(_prefix, key)
        if key in base:
            merged[key] = _merge_value(value, base[key], allow_list_keys, where)
        else:
            merged[key] = _fresh(value)
    return merged


def _merge_value(value: Any, base_value: Any, allow_list_keys: bool, where: str) -> Any:
    if not isinstance(value, dict):
        return _fresh(value)
    value, replace = _take_delete(value, where)
    if replace:
        return _fresh(value)
    if isinstance(base_value, dict) or (allow_list_keys and isinstance(base_value, list)):
        return _merge(value, base_value, allow_list_keys, where)
    raise TypeError(
        f'{where}: the config gives a dict {value!r}, but the base value is a '
        f'{type(base_value).__name__} ({base_value!r}), so the two cannot be merged. '
        f'Add {DELETE_KEY}=True to the dict to replace the base value.')
