"""``DictAction``: ``--cfg-options a.b=1 c=[1,2]`` for argparse (MMEngine: ``DictAction``)."""
from __future__ import annotations

import argparse
import copy
from typing import Any, Sequence

__all__ = ['DictAction', 'parse_value']

_PAIRS = {'[': ']', '(': ')'}


def _scalar(text: str) -> Any:
    """MMEngine's rules: int, else float, else true/false (any case), None, else str."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower() in ('true', 'false'):
        return text.lower() == 'true'
    if text == 'None':
        return None
    return text


def _unquote(text: str) -> str | None:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
        return text[1:-1]
    return None


def _split(text: str) -> list[str]:
    """Split at the commas outside brackets and quotes; raise on unbalanced brackets."""
    parts, depth, quote, start = [], [], None, 0
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
        elif char in '\'"':
            quote = char
        elif char in _PAIRS:
            depth.append(_PAIRS[char])
        elif char in ')]':
            if not depth or depth.pop() != char:
                raise ValueError(f'unbalanced {char!r} at position {index}')
        elif char == ',' and not depth:
            parts.append(text[start:index])
            start = index + 1
    if quote:
        raise ValueError(f'the quote {quote} is never closed')
    if depth:
        raise ValueError(f'{depth[-1]!r} is missing')
    parts.append(text[start:])
    return parts


def parse_value(text: str) -> Any:
    """One ``--cfg-options`` value (MMEngine: ``DictAction._parse_iterable``).

    ``[a,b]`` is a list, ``(a,b)`` a tuple, ``a,b`` a list, nested at will; each element
    is an int, a float, a bool (``true``/``false`` in any case), ``None`` or a str.
    A value in matching quotes is a str as written (``'1'`` is the string ``'1'``),
    unless it is a bracketed list or tuple (``"[1,2]"``, the quotes a shell passes on).

    Raises:
        ValueError: Unbalanced brackets or quotes.

    Example:
        >>> parse_value('[(1,2),(3,4)]'), parse_value('a,b'), parse_value('None')
        ([(1, 2), (3, 4)], ['a', 'b'], None)
    """
    text = text.strip()
    inner = _unquote(text)
    if inner is not None:
        stripped = inner.strip()
        if stripped[:1] in _PAIRS and stripped[-1:] == _PAIRS[stripped[:1]]:
            return parse_value(stripped)
        return inner
    if text[:1] in _PAIRS and text[-1:] == _PAIRS[text[:1]]:
        parts = _split(text[1:-1])
        if not parts[-1].strip():  # '()' or a trailing comma: '(d,)'
            parts.pop()
        elements = [parse_value(p) for p in parts]
        return tuple(elements) if text[0] == '(' else elements
    parts = _split(text)
    if len(parts) > 1:
        # A trailing comma ('a,') gives a one-element list, as in MMEngine.
        if not parts[-1].strip():
            parts.pop()
        return [parse_value(p) for p in parts]
    return _scalar(text)


class DictAction(argparse.Action):
    """Collect ``KEY=VALUE`` arguments into a dict (MMEngine: ``mmengine.config.DictAction``).

    Use with ``nargs='+'``; each argument is split at its first ``=``; the value is read
    by :func:`parse_value`. Repeating the option adds to the same dict. A malformed
    argument stops argparse with a message naming it.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> _ = parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        >>> parser.parse_args(['--cfg-options', 'a.b=1', 'c=[1,2]', 'd=(3,4)']).cfg_options
        {'a.b': 1, 'c': [1, 2], 'd': (3, 4)}
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        options = copy.copy(getattr(namespace, self.dest, None) or {})
        if isinstance(values, str):
            values = [values]
        for item in values or []:
            key, sep, text = item.partition('=')
            if not sep or not key.strip():
                raise argparse.ArgumentError(
                    self, f'{item!r} is not KEY=VALUE (e.g. optim_wrapper.optimizer.lr=0.01)')
            try:
                options[key.strip()] = parse_value(text)
            except ValueError as exc:
                raise argparse.ArgumentError(self, f'cannot read {item!r}: {exc}') from None
        setattr(namespace, self.dest, options)
