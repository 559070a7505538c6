"""``ParamSchedulerHook``: steps the parameter schedulers (MMEngine: ``ParamSchedulerHook``)."""
from __future__ import annotations

from typing import Any, Iterator

from ..registry import HOOKS
from .hook import Hook

__all__ = ['ParamSchedulerHook']


def _schedulers(runner) -> Iterator[Any]:
    """Every scheduler: of a list, or of a dict of lists by optimizer name (several optimizers)."""
    schedulers = runner.param_schedulers or ()
    if isinstance(schedulers, dict):
        for inner in schedulers.values():
            yield from inner
    else:
        yield from schedulers


@HOOKS.register_module()
class ParamSchedulerHook(Hook):
    """After each training iteration, steps the schedulers with ``by_epoch=False``;
    after each training epoch, those with ``by_epoch=True``."""

    priority = 'LOW'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        for scheduler in _schedulers(runner):
            if not scheduler.by_epoch:
                scheduler.step()

    def after_train_epoch(self, runner) -> None:
        for scheduler in _schedulers(runner):
            if scheduler.by_epoch:
                scheduler.step()
