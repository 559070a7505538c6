"""Helpers that make error messages name the bad value and the valid choices."""
from __future__ import annotations

import difflib
import numbers
from typing import Iterable


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``''``."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.6)
    if not close:
        return ''
    return ' Did you mean ' + ' or '.join(repr(c) for c in close) + '?'


def choices_text(choices: Iterable[str]) -> str:
    """``'a', 'b', 'c'`` for a message."""
    return ', '.join(repr(c) for c in sorted(choices))


def check_choice(what: str, value: object, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` naming ``what``, the bad value, the choices and a close match."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f'{what} must be one of {choices_text(choices)}, but got '
                         f'{value!r}.{suggest(str(value), choices)}')


def check_keys(what: str, keys: Iterable[str], accepted: Iterable[str]) -> None:
    """Raise ``TypeError`` naming ``what``'s unknown keys, a close match and the accepted keys.

    Example: ``train_dataloader has unknown key(s) ['batchsize'] Did you mean
    'batch_size'?; accepted: 'batch_size', 'dataset', ...``.
    """
    accepted = list(accepted)
    unknown = [k for k in keys if k not in accepted]
    if unknown:
        raise TypeError(f'{what} has unknown key(s) {unknown}'
                        f'{suggest(unknown[0], accepted)}; accepted: '
                        f'{choices_text(accepted)}')


def check_int(name: str, value: object, minimum: int | None = None, *,
              accepted: str | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a bool) >= ``minimum``.

    ``True`` is rejected: ``interval=True`` is a mistake, not 1. Integers that are not
    ``int`` (a numpy integer) are accepted and returned as ``int``.

    Args:
        name: The argument as the message names it, e.g. ``'LoggerHook interval'``.
        value: The value to check.
        minimum: The smallest value accepted; ``None``: no bound.
        accepted: What the message says is accepted, e.g. ``'a positive int'``. Given,
            every bad value raises ``ValueError: <name> must be <accepted>, but got
            <value>``; else a non-integer raises ``TypeError`` naming its type and too
            small a one ``ValueError`` naming ``minimum``.
    """
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if is_int and (minimum is None or value >= minimum):
        return int(value)
    if accepted is not None:
        raise ValueError(f'{name} must be {accepted}, but got {value!r}')
    if not is_int:
        raise TypeError(f'{name} must be an int, but got {type(value).__name__}: {value!r}')
    raise ValueError(f'{name} must be >= {minimum}, but got {value}')


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False``; else raise ``TypeError`` naming it.

    ``1`` or ``'yes'`` is rejected: a flag given a non-bool is most likely a mistake.
    """
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be a bool, but got {value!r}')
    return value
