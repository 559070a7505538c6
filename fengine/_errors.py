"""Helpers that make error messages name the bad value and the valid choices."""
from __future__ import annotations

import difflib
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
