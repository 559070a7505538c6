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
    iteration, data included) in the runner's message hub, and the estimated time
    left as the fact ``eta`` (seconds).

    MMEngine: ``mmengine.hooks.IterTimerHook``. With compiled steps the host runs ahead
    of the device, so single iteration times show launch time; their mean over a log
    interval is the throughput. The training ``eta`` leaves out the first iteration
    timed in a run (MMEngine counts it): it includes compiling the step, which would
    otherwise dominate the estimate for a long time.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._train_seconds = 0.0  # after the first timed training iteration
        self._train_timed = 0
        self._eval_seconds = 0.0

    def before_train(self, runner) -> None:
        self._train_seconds, self._train_timed = 0.0, 0

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        self._last = time.perf_counter()
        if mode != 'train':
            self._eval_seconds = 0.0

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
        seconds = now - self._last
        self._last = now
        hub = runner.message_hub
        hub.update_scalar(f'{mode}/time', seconds)
        if mode == 'train':
            self._train_timed += 1
            if self._train_timed > 1:
                self._train_seconds += seconds
            mean = self._train_seconds / (self._train_timed - 1) if self._train_timed > 1 \
                else seconds
            hub.update_info('eta', mean * (runner.max_iters - runner.iter - 1))
        else:
            self._eval_seconds += seconds
            loader = runner.val_dataloader if mode == 'val' else runner.test_dataloader
            left = len(loader) - batch_idx - 1
            hub.update_info('eta', self._eval_seconds / (batch_idx + 1) * left)
