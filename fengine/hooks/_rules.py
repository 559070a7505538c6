"""Whether a larger or a smaller metric is better, from its name (MMEngine's rule).

Shared by :class:`~fengine.hooks.CheckpointHook` (``save_best``) and
:class:`~fengine.hooks.EarlyStoppingHook` (``monitor``).
"""
from __future__ import annotations

from typing import Iterable, Sequence

RULES = ('greater', 'less')
# MMEngine's default key lists (CheckpointHook and EarlyStoppingHook).
GREATER_KEYS = ('acc', 'top', 'AR@', 'auc', 'precision', 'mAP', 'mDice', 'mIoU', 'mAcc', 'aAcc')
LESS_KEYS = ('loss',)
# Tried only where MMEngine's lists tell nothing (MMEngine raises there).
_MORE_GREATER = ('f1', 'recall', 'psnr', 'ssim')
_MORE_LESS = ('error', 'err', 'mae', 'mse', 'rmse', 'fid')


def _match(key: str, greater: Iterable[str], less: Iterable[str]) -> str | None:
    """MMEngine's order: an exact name (greater, then less), then a part of the name."""
    key = key.lower()
    greater = {k.lower() for k in greater}
    less = {k.lower() for k in less}
    if key in greater:
        return 'greater'
    if key in less:
        return 'less'
    if any(k in key for k in greater):
        return 'greater'
    if any(k in key for k in less):
        return 'less'
    return None


def infer_rule(key: str, greater_keys: Sequence[str] | None = None,
               less_keys: Sequence[str] | None = None, *, owner: str = 'CheckpointHook',
               argument: str = 'save_best') -> str:
    """``'greater'`` or ``'less'`` for the metric ``key``.

    With the default lists (``greater_keys``/``less_keys`` ``None``) a few more names
    are known than MMEngine's lists hold (``f1``, ``recall``, ``psnr``, ``ssim``;
    ``error``, ``mae``, ``mse``, ``fid``), tried only after them, so every key MMEngine
    infers gets MMEngine's rule.

    Raises:
        ValueError: the rule cannot be told from the name.
    """
    defaults = greater_keys is None and less_keys is None
    rule = _match(key, GREATER_KEYS if greater_keys is None else greater_keys,
                  LESS_KEYS if less_keys is None else less_keys)
    if rule is None and defaults:
        rule = _match(key, _MORE_GREATER, _MORE_LESS)
    if rule is None:
        raise ValueError(f'{owner} {argument}: cannot tell whether a larger or smaller {key!r} '
                         f"is better; pass rule='greater' or rule='less' to {owner}")
    return rule
