"""``HistoryBuffer``: the recorded values of one scalar and their statistics.

MMEngine: ``mmengine.logging.HistoryBuffer``. A value may be a one-element tensor that
the device is still computing; it is kept as it is and read when a statistic is first
asked for. A buffer that belongs to a :class:`~fengine.runner.MessageHub` asks the hub
to read all of its waiting tensors at once, so a log line costs one host sync however
many scalars it shows.
"""
from __future__ import annotations

import math
import warnings
from array import array
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from .._errors import check_int, choices_text, suggest

__all__ = ['HistoryBuffer']

# MMEngine's default bound on the values a buffer keeps.
MAX_LENGTH = 1_000_000


def read_tensors(tensors: Sequence[torch.Tensor]) -> list[float]:
    """The values of one-element tensors as floats, with one ``.tolist()`` per device."""
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        by_device[tensor.device].append(index)
    values: list[float] = [0.0] * len(tensors)
    for indices in by_device.values():
        read = torch.stack([tensors[i].detach().float().reshape(()) for i in indices]).tolist()
        for i, value in zip(indices, read):
            values[i] = value
    return values


class HistoryBuffer:
    """The values (with their counts) recorded for one scalar, oldest first.

    MMEngine: ``mmengine.logging.HistoryBuffer``. Statistics are ``mean``, ``min``,
    ``max`` and ``current``; more can be added with :meth:`register_statistics` and
    called by name with :meth:`statistics`.

    Args:
        log_history: Values to start with.
        count_history: Their counts (how many samples each value stands for; ``mean``
            divides the sum of values by the sum of counts).
        max_length: How many values are kept; older ones are forgotten.

    Raises:
        ValueError: the two histories differ in length, or ``max_length`` is not a
            positive int.

    Example:
        >>> buffer = HistoryBuffer()
        >>> buffer.update(1.0)
        >>> buffer.update(3.0)
        >>> buffer.mean(), buffer.max(), buffer.current()
        (2.0, 3.0, 3.0)
        >>> buffer.statistics('min')
        1.0
    """

    _statistics_methods: dict[str, Callable[..., Any]] = {}

    def __init__(self, log_history: Sequence = (), count_history: Sequence = (),
                 max_length: int = MAX_LENGTH) -> None:
        self.max_length = check_int('HistoryBuffer max_length', max_length, minimum=1,
                                    accepted='a positive int')
        log_history, count_history = list(log_history), list(count_history)
        if len(log_history) != len(count_history):
            raise ValueError(f'HistoryBuffer: log_history has {len(log_history)} values but '
                             f'count_history has {len(count_history)}; give one count per value')
        if len(log_history) > max_length:
            warnings.warn(f'HistoryBuffer: {len(log_history)} values given but max_length is '
                          f'{max_length}; the oldest are dropped', stacklevel=2)
            log_history, count_history = log_history[-max_length:], count_history[-max_length:]
        # MMEngine's buffers keep ints as ints (a count metric shows as 8, not 8.0000).
        self._ints = all(_is_int(v) for v in log_history)
        self._values = array('d', (_number('log_history', v) for v in log_history))
        self._counts = array('d', (_number('count_history', c) for c in count_history))
        # (value, count) recorded but not read yet: tensors, and numbers that came after one.
        self._pending: list[tuple[Any, float]] = []
        # Set by a MessageHub: reads the pending values of every buffer of the hub at once.
        self._reader: Callable[[], Any] | None = None

    # -- recording -----------------------------------------------------------------------
    def update(self, log_val: Any, count: int | float = 1) -> None:
        """Record a value: a number, or a one-element tensor (read later, see the module).

        Raises:
            TypeError: ``log_val`` is neither a number nor a tensor, or ``count`` is
                not a number.
            ValueError: ``log_val`` is a tensor of more than one element.
        """
        count = _number('count', count)
        self._ints = self._ints and _is_int(log_val)
        if isinstance(log_val, torch.Tensor):
            if log_val.numel() != 1:
                raise ValueError(f'HistoryBuffer.update takes one value, but got a tensor of '
                                 f'shape {tuple(log_val.shape)}; record its mean or sum')
            self._pending.append((log_val.detach(), count))
            return
        value = _number('log_val', log_val)
        if self._pending:  # keep the order of the values
            self._pending.append((value, count))
        else:
            self._append([value], [count])

    def _append(self, values: Iterable[float], counts: Iterable[float]) -> None:
        self._values.extend(values)
        self._counts.extend(counts)
        extra = len(self._values) - self.max_length
        if extra > 0:
            del self._values[:extra]
            del self._counts[:extra]

    def _commit(self, values: list[float], counts: list[float]) -> None:
        """Take read pending values (the MessageHub's :meth:`sync` calls this)."""
        self._append(values, counts)

    def _read_own(self) -> None:
        pending, self._pending = self._pending, []
        tensors = [v for v, _ in pending if isinstance(v, torch.Tensor)]
        read = iter(read_tensors(tensors))
        self._append([next(read) if isinstance(v, torch.Tensor) else v for v, _ in pending],
                     [c for _, c in pending])

    def _materialize(self) -> None:
        if not self._pending:
            return
        if self._reader is not None:
            self._reader()
        if self._pending:
            self._read_own()

    # -- reading -------------------------------------------------------------------------
    @property
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(values, counts)`` as float64 arrays, oldest first."""
        self._materialize()
        return (np.array(self._values, dtype=np.float64),
                np.array(self._counts, dtype=np.float64))

    def __len__(self) -> int:
        return len(self._values) + len(self._pending)

    def _window(self, window_size: int | None, what: str) -> int:
        self._materialize()
        if not self._values:
            raise ValueError(f'HistoryBuffer.{what}: no value recorded yet; call update first')
        if window_size is None:
            return len(self._values)
        return check_int(f'HistoryBuffer.{what} window_size', window_size, minimum=1,
                         accepted='a positive int or None')

    def mean(self, window_size: int | None = None) -> float:
        """The sum of the last ``window_size`` values over the sum of their counts (all
        values when ``None`` or more than recorded)."""
        window = self._window(window_size, 'mean')
        return math.fsum(self._values[-window:]) / math.fsum(self._counts[-window:])

    def max(self, window_size: int | None = None) -> int | float:
        """The largest of the last ``window_size`` values (all when ``None``)."""
        window = self._window(window_size, 'max')
        return self._typed(max(self._values[-window:]))

    def min(self, window_size: int | None = None) -> int | float:
        """The smallest of the last ``window_size`` values (all when ``None``)."""
        window = self._window(window_size, 'min')
        return self._typed(min(self._values[-window:]))

    def current(self) -> int | float:
        """The value recorded last (an int while every value recorded was one).

        Raises:
            ValueError: nothing was recorded yet.
        """
        self._window(None, 'current')
        return self._typed(self._values[-1])

    def _typed(self, value: float) -> int | float:
        return int(value) if self._ints else value

    # -- statistics by name ----------------------------------------------------------------
    @classmethod
    def register_statistics(cls, method: Callable[..., Any]) -> Callable[..., Any]:
        """Add ``method(buffer, *args, **kwargs)`` as a statistic named after it.

        Raises:
            ValueError: a statistic of that name exists already.
        """
        name = method.__name__
        if name in cls._statistics_methods or name in _BUILT_IN:
            raise ValueError(f'HistoryBuffer: a statistic named {name!r} is registered '
                             'already; give the function another name')
        cls._statistics_methods[name] = method
        return method

    def statistics(self, method_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the statistic ``method_name`` (``'mean'``, ``'min'``, ``'max'``,
        ``'current'`` or a registered one).

        Raises:
            KeyError: no statistic of that name (the message lists them).
        """
        method = _BUILT_IN.get(method_name) or self._statistics_methods.get(method_name)
        if method is None:
            names = [*_BUILT_IN, *self._statistics_methods]
            raise KeyError(f'HistoryBuffer has no statistic {method_name!r}'
                           f'{suggest(method_name, names)}; registered: {choices_text(names)}')
        return method(self, *args, **kwargs)

    # -- copying and pickling ------------------------------------------------------------
    def __getstate__(self) -> dict:
        self._materialize()
        state = dict(self.__dict__)
        state['_reader'] = None  # the hub is not part of the buffer
        return state

    def __repr__(self) -> str:
        # Reads nothing from the device: a repr must not synchronize (or raise).
        return f'HistoryBuffer({len(self)} values, max_length={self.max_length})'


_BUILT_IN: dict[str, Callable[..., Any]] = {
    'mean': HistoryBuffer.mean, 'min': HistoryBuffer.min, 'max': HistoryBuffer.max,
    'current': HistoryBuffer.current}


def _is_int(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() and not value.is_complex()
    return isinstance(value, (int, np.integer)) or (
        isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.integer))


def _number(what: str, value: Any) -> float:
    """``value`` as a float: a Python or NumPy number, or a one-element array."""
    if isinstance(value, (np.ndarray, np.generic)) and value.size == 1:
        value = value.item()
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f'HistoryBuffer: {what} must be a number, but got '
                    f'{type(value).__name__}: {value!r}')
