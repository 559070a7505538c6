"""What the Runner reads from the whole config it came from (``Runner(cfg=...)``).

In MMEngine, ``cfg`` is the whole config: the Runner's arguments, plus variables the
config file used to write them (``dataset_type``, ``data_root``, ``train_pipeline``...),
plus a few keys the Runner reads from it directly. fengine reads the same keys
(:data:`CFG_KEYS_READ`), refuses those of MMEngine features it does not implement
(:data:`CFG_KEYS_REFUSED`), refuses a key that looks like a misspelt argument or read
key, and names the remaining ones in the log as config variables that no part of the
Runner reads (MMEngine passes over them in silence).
"""
from __future__ import annotations

import difflib
import pprint
from collections.abc import Mapping
from typing import Any, Iterable

__all__ = ['CFG_KEYS_READ', 'CFG_KEYS_REFUSED', 'plain_copy', 'split_cfg', 'config_text']

# Besides the Runner's arguments: keys MMEngine's Runner reads from ``cfg``.
CFG_KEYS_READ = ('compile', 'activation_checkpointing', 'model_wrapper_cfg',
                 'find_unused_parameters', 'sync_bn', 'runner_type')

_FLEXIBLE = ("MMEngine's FlexibleRunner and its strategies (DeepSpeed, FSDP, ColossalAI) are "
             'not supported by fengine, which has one Runner')
# MMEngine keys whose feature fengine does not implement: an error that says so.
CFG_KEYS_REFUSED = {
    'efficient_conv_bn_eval': "MMEngine's efficient conv-bn evaluation (an experimental "
                              'MMCV feature) is not implemented in fengine',
    'fast_conv_bn_eval': "MMEngine's fast conv-bn evaluation (an experimental MMCV feature) "
                         'is not implemented in fengine',
    'strategy': _FLEXIBLE,
}
# A key this close to an argument or a read key is taken for a misspelling of it.
_TYPO_CUTOFF = 0.85
_TYPO_LENGTH = 2


def plain_copy(cfg: Any) -> Any:
    """``cfg`` with its dicts (any Mapping, a ``Config`` too), lists and tuples copied.

    The leaves (models, dataloaders, classes) are the same objects: a Runner trains the
    model a config holds, not a copy of it.
    """
    if isinstance(cfg, Mapping):
        if callable(getattr(cfg, 'to_dict', None)):
            cfg = cfg.to_dict()
        return {key: plain_copy(value) for key, value in cfg.items()}
    if isinstance(cfg, list):
        return [plain_copy(value) for value in cfg]
    if isinstance(cfg, tuple) and not hasattr(cfg, '_fields'):
        return tuple(plain_copy(value) for value in cfg)
    return cfg


def split_cfg(cfg: Mapping, arguments: Iterable[str]) -> tuple[dict, list[str]]:
    """The keys of ``cfg`` the Runner reads, and the names of the config variables.

    Args:
        cfg: The whole config.
        arguments: The Runner's arguments (their keys are not read from ``cfg``: the
            Runner got them as arguments), except those of :data:`CFG_KEYS_READ`.

    Returns:
        ``({key: value} for the keys of CFG_KEYS_READ, [the other keys, sorted])``.

    Raises:
        ValueError: a key of :data:`CFG_KEYS_REFUSED`, or a key that looks like a
            misspelling of an argument or a read key (named, with the close match).
    """
    arguments = [a for a in arguments if a != 'cfg']
    read, variables = {}, []
    for key, value in cfg.items():
        if key in CFG_KEYS_READ:  # compile and model_wrapper_cfg are arguments too
            read[key] = value
            continue
        if key in arguments:
            continue
        if key in CFG_KEYS_REFUSED:
            raise ValueError(f'the config sets {key!r}: {CFG_KEYS_REFUSED[key]}; remove it')
        close = [name for name in difflib.get_close_matches(
            str(key), [*arguments, *CFG_KEYS_READ], n=1, cutoff=_TYPO_CUTOFF)
            # A misspelling keeps the length; a longer name (default_hooks_cfg) is a variable.
            if abs(len(name) - len(str(key))) <= _TYPO_LENGTH]
        if close:
            raise ValueError(f'the config key {key!r} is neither a Runner argument nor a key '
                             f'the Runner reads. Did you mean {close[0]!r}?')
        variables.append(str(key))
    return read, sorted(variables)


def config_text(cfg: Any) -> str:
    """The config as the log shows it: its ``pretty_text`` (a ``Config``), else one
    ``key = value`` line per key."""
    text = getattr(cfg, 'pretty_text', None)
    if isinstance(text, str):
        return text
    return '\n'.join(f'{key} = {pprint.pformat(value, sort_dicts=False)}'
                     for key, value in cfg.items())
