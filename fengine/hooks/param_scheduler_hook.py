"""``ParamSchedulerHook``: steps the learning-rate schedulers (MMEngine: ``ParamSchedulerHook``)."""
from __future__ import annotations

from typing import Any

from ..registry import HOOKS
from .hook import Hook

__all__ = ['ParamSchedulerHook']


@HOOKS.register_module()
class ParamSchedulerHook(Hook):
    """After each training iteration, steps the schedulers with ``by_epoch=False``;
    after each training epoch, those with ``by_epoch=True``."""

    priority = 'LOW'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        for scheduler in runner.param_schedulers or ():
            if not scheduler.by_epoch:
                scheduler.step()

    def after_train_epoch(self, runner) -> None:
        for scheduler in runner.param_schedulers or ():
            if scheduler.by_epoch:
                scheduler.step()
