"""``MessageHub``: the scalars and facts of a run, shared by the loops, hooks and model.

MMEngine: ``mmengine.logging.MessageHub``. The difference that matters: a training
step's log values arrive as tensors (possibly still being computed on the device) and
stay tensors until a log line, a checkpoint or the end of an epoch needs them; then
every waiting value of every scalar is read in ONE device-to-host copy per device
(:meth:`MessageHub.sync`). A compiled step therefore runs ahead of the host between log
lines instead of waiting for each ``loss.item()``.
"""
from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch

from .._errors import check_keys, suggest
from ..logging import print_log
from ..utils import ManagerMixin
from .history_buffer import HistoryBuffer, read_tensors

__all__ = ['MessageHub', 'NonFiniteLossError']

# The name of the hub ``get_current_instance`` creates when no run made one
# (MMEngine names it 'mmengine').
ROOT_NAME = 'fengine'


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration and the keys."""


class MessageHub(ManagerMixin):
    """Runtime facts (``update_info``) and recorded scalars (``update_scalar``).

    MMEngine: ``mmengine.logging.MessageHub``. Reach a run's hub from anywhere with
    ``MessageHub.get_current_instance()`` (the newest one; a hub named ``'fengine'``
    is created if none exists) or ``MessageHub.get_instance(name)``.

    Args:
        name: The instance's name.
        log_scalars: Scalars to start with, name -> :class:`HistoryBuffer`.
        runtime_info: Facts to start with.
        resumed_keys: Which of those are saved by :meth:`state_dict` (name -> bool;
            unnamed ones are).

    Raises:
        TypeError: a ``log_scalars`` value is not a :class:`HistoryBuffer`.
        KeyError: a ``resumed_keys`` key is neither a scalar nor a fact.

    Example:
        >>> import torch
        >>> hub = MessageHub('doc')
        >>> hub.update_scalar('train/loss', torch.tensor(2.0))  # not read yet
        >>> hub.update_scalar('train/loss', torch.tensor(1.0))
        >>> hub.get_scalar('train/loss').mean()  # one host read for both
        1.5
        >>> hub.update_info('epoch', 3)
        >>> hub.get_info('epoch')
        3
    """

    def __init__(self, name: str, log_scalars: Mapping | None = None,
                 runtime_info: Mapping | None = None,
                 resumed_keys: Mapping | None = None) -> None:
        super().__init__(name)
        self._log_scalars: OrderedDict[str, HistoryBuffer] = OrderedDict()
        self._runtime_info: OrderedDict[str, Any] = OrderedDict(_mapping(
            'runtime_info', runtime_info))
        self._resumed_keys: OrderedDict[str, bool] = OrderedDict(_mapping(
            'resumed_keys', resumed_keys))
        for key, buffer in _mapping('log_scalars', log_scalars).items():
            if not isinstance(buffer, HistoryBuffer):
                raise TypeError(f'MessageHub: log_scalars[{key!r}] must be a HistoryBuffer, '
                                f'but got {type(buffer).__name__}')
            self._adopt(key, buffer)
        for key in self._resumed_keys:
            if key not in self._log_scalars and key not in self._runtime_info:
                raise KeyError(f'MessageHub: resumed_keys names {key!r}, which is neither in '
                               'log_scalars nor in runtime_info')
        # Keys, in recording order, whose buffers hold values not read yet, with the
        # training iteration each value belongs to (for NonFiniteLossError).
        self._pending: list[tuple[str, int | None]] = []
        self._unsaved_warned: set[str] = set()

    @classmethod
    def get_current_instance(cls) -> MessageHub:
        """The newest hub; one named ``'fengine'`` is created if there is none."""
        if not cls._instance_dict:
            cls.get_instance(ROOT_NAME)
        return super().get_current_instance()

    @classmethod
    def _fresh_instance(cls, name: str) -> MessageHub:
        """A new, empty hub registered as ``name`` and made the current one.

        Two runners built in the same second get the same default name (the
        timestamp); sharing one hub would mix their scalars, so a Runner replaces an
        older hub of its name.
        """
        cls._instance_dict.pop(name, None)
        return cls.get_instance(name)

    def _adopt(self, key: str, buffer: HistoryBuffer) -> HistoryBuffer:
        buffer._reader = self.sync
        self._log_scalars[key] = buffer
        return buffer

    # -- scalars ---------------------------------------------------------------------
    def update_scalar(self, key: str, value: Any, count: int = 1, resumed: bool = True) -> None:
        """Record a value of the scalar ``key`` (e.g. ``'train/loss'``).

        A one-element tensor is kept as it is and read later, with every other waiting
        value, in one host copy (see the module). Numbers are recorded at once.

        Args:
            key: The scalar's name; a ``train/``, ``val/`` or ``test/`` prefix says
                which log lines show it.
            value: A number, a one-element tensor or array.
            count: How many samples the value stands for (``mean`` weighs by it).
            resumed: Whether :meth:`state_dict` saves the scalar.

        Raises:
            TypeError: ``value`` is not a number or tensor, or ``count`` not an int.
            ValueError: ``value`` has more than one element, or ``resumed`` differs
                from an earlier call for ``key``.
        """
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f'MessageHub.update_scalar({key!r}): count must be an int, but got '
                            f'{type(count).__name__}: {count!r}')
        if isinstance(value, (np.ndarray, np.generic)):
            if value.size != 1:
                raise ValueError(f'MessageHub.update_scalar({key!r}) takes one value, but got '
                                 f'an array of shape {value.shape}')
            value = value.item()
        self._set_resumed(key, resumed)
        buffer = self._log_scalars.get(key)
        if buffer is None:
            buffer = self._adopt(key, HistoryBuffer())
        waiting = len(buffer._pending)
        buffer.update(value, count)
        if len(buffer._pending) > waiting:
            self._pending.append((key, self._runtime_info.get('iter')))

    def update_scalars(self, log_dict: Mapping[str, Any], resumed: bool = True) -> None:
        """:meth:`update_scalar` for each item; a value may be ``dict(value=..., count=...)``.

        Raises:
            TypeError: ``log_dict`` is not a dict.
            KeyError: a dict value has no ``value`` key.
        """
        if not isinstance(log_dict, Mapping):
            raise TypeError(f'MessageHub.update_scalars takes a dict of name -> value, but got '
                            f'{type(log_dict).__name__}: {log_dict!r}')
        for key, value in log_dict.items():
            count = 1
            if isinstance(value, Mapping):
                if 'value' not in value:
                    raise KeyError(f'MessageHub.update_scalars: {key!r} is a dict without a '
                                   f"'value' key ({dict(value)!r}); use "
                                   'dict(value=..., count=...)')
                count = value.get('count', 1)
                if isinstance(count, (torch.Tensor, np.ndarray, np.generic)):
                    count = int(count.item())
                value = value['value']
            self.update_scalar(key, value, count, resumed)

    @property
    def log_scalars(self) -> OrderedDict[str, HistoryBuffer]:
        """Every scalar's :class:`HistoryBuffer`, by name (the buffers themselves)."""
        return self._log_scalars

    def get_scalar(self, key: str) -> HistoryBuffer:
        """The :class:`HistoryBuffer` of ``key``.

        Raises:
            KeyError: no scalar ``key`` was recorded (the message lists those that were).
        """
        if key not in self._log_scalars:
            raise KeyError(f'MessageHub {self.instance_name!r} has no scalar {key!r}'
                           f'{suggest(key, self._log_scalars)}; recorded: '
                           f'{list(self._log_scalars)}')
        return self._log_scalars[key]

    def history(self, key: str) -> list[float]:
        """The values of ``key``, oldest first (``[]`` if none), read from the device."""
        buffer = self._log_scalars.get(key)
        return [] if buffer is None else buffer.data[0].tolist()

    def sync(self) -> list[tuple[int | None, dict[str, float]]]:
        """Read every waiting value (one host copy per device) into its buffer.

        Returns:
            The values just read, grouped by the training iteration they were recorded
            in (``None`` outside training), as ``(iteration, {key: value})``.

        Raises:
            NonFiniteLossError: a value whose key contains ``'loss'`` is NaN or
                infinite; the message names the first such iteration and its keys.
                Nothing of that or later iterations enters the history.
        """
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        # Each buffer's waiting values, in order, matched to their (key, iteration).
        entries: list[tuple[str, int | None, Any, float]] = []
        taken: dict[str, int] = {}
        for key, iteration in pending:
            buffer = self._log_scalars.get(key)
            if buffer is None:
                continue
            index = taken.get(key, 0)
            if index < len(buffer._pending):
                value, count = buffer._pending[index]
                entries.append((key, iteration, value, count))
                taken[key] = index + 1
        for key, count in taken.items():
            buffer = self._log_scalars[key]
            buffer._pending = buffer._pending[count:]
        tensors = [value for _, _, value, _ in entries if isinstance(value, torch.Tensor)]
        read = iter(read_tensors(tensors))
        values = [(key, iteration, next(read) if isinstance(value, torch.Tensor) else value,
                   count) for key, iteration, value, count in entries]
        bad = next(((key, iteration) for key, iteration, value, _ in values
                    if 'loss' in key and not math.isfinite(value)), None)
        kept = values
        if bad is not None:
            seen_bad = False
            kept = []
            for entry in values:
                seen_bad = seen_bad or entry[1] == bad[1]
                if not seen_bad:
                    kept.append(entry)
        records: OrderedDict[int | None, dict[str, float]] = OrderedDict()
        by_key: dict[str, tuple[list[float], list[float]]] = {}
        for key, iteration, value, count in kept:
            records.setdefault(iteration, {})[key] = value
            lists = by_key.setdefault(key, ([], []))
            lists[0].append(value)
            lists[1].append(count)
        for key, (vals, counts) in by_key.items():
            self._log_scalars[key]._commit(vals, counts)
        if bad is not None:
            _raise_non_finite(bad, values)
        return list(records.items())

    # -- facts -----------------------------------------------------------------------
    def update_info(self, key: str, value: Any, resumed: bool = True) -> None:
        """Set the fact ``key`` (replacing its value).

        Raises:
            ValueError: ``resumed`` differs from an earlier call for ``key``.
        """
        self._set_resumed(key, resumed)
        self._runtime_info[key] = value

    def update_info_dict(self, info_dict: Mapping[str, Any], resumed: bool = True) -> None:
        """:meth:`update_info` for each item.

        Raises:
            TypeError: ``info_dict`` is not a dict.
        """
        if not isinstance(info_dict, Mapping):
            raise TypeError(f'MessageHub.update_info_dict takes a dict, but got '
                            f'{type(info_dict).__name__}: {info_dict!r}')
        for key, value in info_dict.items():
            self.update_info(key, value, resumed)

    def pop_info(self, key: str, default: Any = None) -> Any:
        """Remove the fact ``key`` and return its value (``default`` if absent)."""
        return self._runtime_info.pop(key, default)

    def get_info(self, key: str, default: Any = None) -> Any:
        """The fact ``key``, or ``default``."""
        return self._runtime_info.get(key, default)

    @property
    def runtime_info(self) -> OrderedDict[str, Any]:
        """Every fact, by name."""
        return self._runtime_info

    def _set_resumed(self, key: str, resumed: bool) -> None:
        if not isinstance(resumed, bool):
            raise TypeError(f'MessageHub: resumed must be a bool, but got {resumed!r}')
        known = self._resumed_keys.get(key)
        if known is None:
            self._resumed_keys[key] = resumed
        elif known != resumed:
            raise ValueError(f'MessageHub: {key!r} was recorded with resumed={known}, now with '
                             f'resumed={resumed}; one key keeps one setting')

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The resumed scalars (every kept value, after reading the waiting ones) and
        facts, and the resumed flags.

        MMEngine saves pickled buffers; here each scalar is
        ``{'data': float64 tensor, 'count': float64 tensor}`` and facts are kept only
        when they are numbers, strings, tensors or lists/dicts of them, so the state
        loads with ``torch.load(weights_only=True)``. A fact of another type is left out
        (with a warning, the first time).

        Raises:
            NonFiniteLossError: see :meth:`sync`.
        """
        self.sync()
        scalars = {}
        for key, buffer in self._log_scalars.items():
            if self._resumed_keys.get(key, True):
                values, counts = buffer.data
                scalars[key] = {'data': torch.from_numpy(values),
                                'count': torch.from_numpy(counts)}
        info = {}
        for key, value in self._runtime_info.items():
            if not self._resumed_keys.get(key, True):
                continue
            if _plain(value):
                info[key] = copy.deepcopy(value)
            elif key not in self._unsaved_warned:  # once, not at every checkpoint
                self._unsaved_warned.add(key)
                print_log(f'MessageHub: runtime info {key!r} ({type(value).__name__}) is not '
                          'saved: checkpoints hold numbers, strings, tensors and lists or '
                          'dicts of them', logger='current', level=logging.WARNING)
        return {'log_scalars': scalars, 'runtime_info': info,
                'resumed_keys': dict(self._resumed_keys)}

    def load_state_dict(self, state_dict: Mapping | MessageHub) -> None:
        """Load what :meth:`state_dict` returned, or copy another hub.

        Scalars and facts of the state replace those of the same name (MMEngine's
        rule). A state written by an older fengine (each scalar a tensor of values)
        loads too. Everything is checked before anything changes.

        Raises:
            TypeError: neither a dict nor a MessageHub, or a part of the wrong type.
            KeyError: an unknown top-level key (the accepted ones are named).
        """
        if isinstance(state_dict, MessageHub):
            state_dict.sync()
            buffers = {k: copy.deepcopy(b) for k, b in state_dict._log_scalars.items()}
            info = copy.deepcopy(dict(state_dict._runtime_info))
            resumed = dict(state_dict._resumed_keys)
        elif isinstance(state_dict, Mapping):
            check_keys('MessageHub state', state_dict,
                       ('log_scalars', 'runtime_info', 'resumed_keys'))
            buffers = {key: _buffer(key, saved)
                       for key, saved in _mapping('log_scalars', state_dict.get(
                           'log_scalars')).items()}
            info = copy.deepcopy(dict(_mapping('runtime_info', state_dict.get('runtime_info'))))
            resumed = {k: bool(v) for k, v in _mapping(
                'resumed_keys', state_dict.get('resumed_keys')).items()}
        else:
            raise TypeError(f'MessageHub.load_state_dict takes a dict or a MessageHub, but got '
                            f'{type(state_dict).__name__}')
        for key, buffer in buffers.items():
            self._pending = [p for p in self._pending if p[0] != key]
            self._adopt(key, buffer)
        self._runtime_info.update(info)
        self._resumed_keys.update(resumed)


def _mapping(what: str, value: Any) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f'MessageHub: {what} must be a dict, but got {type(value).__name__}')
    return value


def _buffer(key: str, saved: Any) -> HistoryBuffer:
    """A buffer from a saved scalar: ``{'data', 'count'}``, a tensor of values, or a buffer."""
    if isinstance(saved, HistoryBuffer):
        return copy.deepcopy(saved)
    if isinstance(saved, Mapping) and 'data' in saved:
        values, counts = saved['data'], saved.get('count')
    elif isinstance(saved, (torch.Tensor, list, tuple)):
        values, counts = saved, None
    else:
        raise TypeError(f'MessageHub state: log_scalars[{key!r}] must be a dict with data and '
                        f'count tensors, but got {type(saved).__name__}')
    values = values.tolist() if isinstance(values, torch.Tensor) else list(values)
    if counts is None:
        counts = [1] * len(values)
    counts = counts.tolist() if isinstance(counts, torch.Tensor) else list(counts)
    return HistoryBuffer(values, counts, max_length=max(len(values), 1_000_000))


def _plain(value: Any) -> bool:
    """Whether ``value`` loads with ``torch.load(weights_only=True)``."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    return False


def _raise_non_finite(bad: tuple[str, int | None], values: list) -> None:
    key, iteration = bad
    mode = key.split('/', 1)[0] if '/' in key else 'train'

    def short(name: str) -> str:
        return name.split('/', 1)[1] if name.startswith(f'{mode}/') else name

    same = {short(k): v for k, it, v, _ in values if it == iteration}
    shown = ', '.join(f'{k}={v}' for k, v in same.items() if 'loss' in k and not math.isfinite(v))
    where = f'at iteration {iteration + 1}' if iteration is not None else 'at the last update'
    raise NonFiniteLossError(
        f'the {mode} loss is not finite {where}: {shown} (all values: {same}). Training '
        'stopped before saving anything from this state; lower the learning rate, clip '
        "gradients (optim_wrapper=dict(..., clip_grad=dict(max_norm=...))) or check the data "
        'of that iteration.')
