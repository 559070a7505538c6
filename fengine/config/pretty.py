"""Config values written as Python source that loads back to the same values.

MMEngine: ``Config.pretty_text`` (which formats with yapf); fengine writes the same kind
of file itself: ``key = value`` lines, ``dict(a=1)`` where the keys are identifiers, a
``{'key': value}`` literal where they are not, one item per line once a value is too
long for one line. Keys keep their order.
"""
from __future__ import annotations

import keyword
import math
from typing import Any

__all__ = ['format_config', 'is_literal']

_WIDTH = 88
_INDENT = 4


def _is_name(key: Any) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def is_literal(value: Any) -> bool:
    """Whether ``value`` is made of what a config file can write (and load back)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, dict):
        return all(is_literal(k) and is_literal(v) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(is_literal(v) for v in value)
    return False


def _scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if isinstance(value, type) or callable(value) and hasattr(value, '__qualname__'):
        # Not loadable without an import, but tells a reader what it is.
        return f'{value.__module__}.{value.__qualname__}'
    return repr(value)


def _items(value: Any) -> tuple[str, str, list[str]] | None:
    """Opening, closing and the formatted items of a container; ``None`` for a scalar."""
    if isinstance(value, dict):
        if all(_is_name(k) for k in value):
            return 'dict(', ')', [f'{k}=' for k in value]
        return '{', '}', [f'{_scalar(k)}: ' for k in value]
    if type(value) is list:
        return '[', ']', [''] * len(value)
    if type(value) is tuple:
        return '(', ')', [''] * len(value)
    return None


def _inline(value: Any) -> str:
    parts = _items(value)
    if parts is None:
        return _scalar(value)
    open_, close, prefixes = parts
    values = value.values() if isinstance(value, dict) else value
    body = ', '.join(p + _inline(v) for p, v in zip(prefixes, values))
    if type(value) is tuple and len(value) == 1:
        body += ','
    return open_ + body + close


def _format(value: Any, indent: int, used: int) -> str:
    """``value`` as source, starting ``used`` characters into a line indented ``indent``."""
    one_line = _inline(value)
    parts = _items(value)
    if parts is None or used + len(one_line) <= _WIDTH:
        return one_line
    open_, close, prefixes = parts
    values = value.values() if isinstance(value, dict) else value
    inner = indent + _INDENT
    lines = [open_]
    if not isinstance(value, dict) and all(_items(v) is None for v in value):
        # A long list of numbers or names: as many per line as fit.
        line = ''
        for item in map(_scalar, value):
            if line and inner + len(line) + len(item) + 2 > _WIDTH:
                lines.append(' ' * inner + line.rstrip())
                line = ''
            line += item + ', '
        lines.append(' ' * inner + line.rstrip())
        lines.append(' ' * indent + close)
        return '\n'.join(lines)
    for prefix, item in zip(prefixes, values):
        lines.append(' ' * inner + prefix + _format(item, inner, inner + len(prefix)) + ',')
    lines.append(' ' * indent + close)
    return '\n'.join(lines)


def format_config(values: dict) -> str:
    """A Python config file whose values are ``values``.

    Keys that cannot be Python names are set through ``globals().update(...)``, which a
    config file may do too.

    Example:
        >>> print(format_config(dict(model=dict(type='ResNet', depth=50), lr=[0.1])))
        model = dict(type='ResNet', depth=50)
        lr = [0.1]
        <BLANKLINE>
    """
    lines = []
    for key, value in values.items():
        if _is_name(key):
            lines.append(f'{key} = {_format(value, 0, len(key) + 3)}')
        else:
            text = _format({key: value}, 0, len('globals().update('))
            lines.append(f'globals().update({text})')
    return '\n'.join(lines) + '\n'
