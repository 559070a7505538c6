"""``IterTimerHook``: data-loading and iteration times (MMEngine: ``IterTimerHook``)."""
from __future__ import annotations

import time
from typing import Any

from ..registry import HOOKS
from .hook import Hook

__all__ = ['IterTimerHook']


@HOOKS.register_module()
class IterTimerHook(Hook):
    """Records ``<mode>/data_time`` (waiting for the batch) and ``<mode>/time`` (the whole
    iteration, data included) in the runner's message hub.

    With compiled steps the host runs ahead of the device, so single iteration times
    show launch time; their mean over a log interval is the throughput.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        self._last = time.perf_counter()

    def after_val(self, runner) -> None:
        # A validation inside an iteration-based run must not count as the next
        # training iteration's time (no before_train_epoch resets the clock there).
        self._last = time.perf_counter()

    def _before_iter(self, runner, batch_idx: int, data_batch: Any = None,
                     mode: str = 'train') -> None:
        runner.message_hub.update_scalar(f'{mode}/data_time', time.perf_counter() - self._last)

    def _after_iter(self, runner, batch_idx: int, data_batch: Any = None,
                    outputs: Any = None, mode: str = 'train') -> None:
        now = time.perf_counter()
        runner.message_hub.update_scalar(f'{mode}/time', now - self._last)
        self._last = now
