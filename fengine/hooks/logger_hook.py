"""``LoggerHook``: a log line every few iterations and after every validation.

MMEngine: ``LoggerHook`` (with its ``LogProcessor``). Lines look like MMEngine's::

    Epoch(train) [1][ 10/938]  lr: 1.0000e-03  eta: 0:01:42  time: 0.0069  data_time: 0.0015  memory: 412  loss: 2.3019
    Epoch(val) [1][157/157]    Accuracy: 0.7094  Avg_loss: 0.7972  data_time: 0.0029  time: 0.0046

and the same numbers go to the visualizer (``vis_data/scalars.json``, TensorBoard).
Reading the losses (and the first param group's lr) is the only host
synchronization, once per ``interval``.
"""
from __future__ import annotations

import datetime
import resource
import statistics
import sys
from typing import Any

import torch

from .._errors import check_int
from ..registry import HOOKS
from ..visualization.backends import _is_one_element
from .hook import Hook

__all__ = ['LoggerHook']


def _format(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f'{value:.4f}'
    return f'{value:.4e}'


def _memory_mb(device: torch.device) -> int:
    """Peak CUDA memory allocated since the last line, or the process's peak RSS, in MB."""
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return int(peak / 2**20)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss_kb / 1024) if sys.platform != 'darwin' else int(rss_kb / 2**20)


@HOOKS.register_module()
class LoggerHook(Hook):
    """Writes training lines every ``interval`` iterations and the metrics of every
    validation and test run, to the log and to the visualizer.

    Args:
        interval: Training iterations between lines (values are averaged over them).
        ignore_last: Skip the line for the last iterations of an epoch that do not
            fill an interval (MMEngine's default).
        log_metric_by_epoch: Validation scalars use the epoch as their step in an
            epoch-based run (MMEngine's default); else the iteration.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self, interval: int = 10, ignore_last: bool = True,
                 log_metric_by_epoch: bool = True) -> None:
        self.interval = check_int('LoggerHook interval', interval, minimum=1,
                                  accepted='a positive int')
        self.ignore_last = ignore_last
        self.log_metric_by_epoch = log_metric_by_epoch

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        if runner.train_loop.by_epoch:
            due = self.every_n_inner_iters(batch_idx, self.interval) or (
                not self.ignore_last and self.end_of_epoch(runner.train_dataloader, batch_idx))
        else:
            due = self.every_n_train_iters(runner, self.interval)
        if not due:
            return
        runner.message_hub.sync()
        self._log_train(runner, batch_idx)

    def _log_train(self, runner, batch_idx: int) -> None:
        hub = runner.message_hub
        window = self.interval
        times = hub.history('train/time')
        scalars: dict[str, float] = {}
        # Only the first group's lr is shown (as MMEngine's default LogProcessor does);
        # get_lr() would float() every group, one device sync each for tensor lrs.
        groups = runner.optim_wrapper.param_groups
        if isinstance(groups, dict):  # an OptimWrapperDict: its first optimizer's
            groups = next(iter(groups.values()))
        scalars['lr'] = float(groups[0]['lr'])
        if runner.train_loop.by_epoch:
            head = (f'Epoch(train) [{runner.epoch + 1}]'
                    f'[{batch_idx + 1:>{len(str(len(runner.train_dataloader)))}}'
                    f'/{len(runner.train_dataloader)}]')
        else:
            width = len(str(runner.max_iters))
            head = f'Iter(train) [{runner.iter + 1:>{width}}/{runner.max_iters}]'
        remaining = runner.max_iters - runner.iter - 1
        # The median of recent iterations: the first ones include compilation, and
        # one 30 s compile would otherwise dominate the estimate for a long time.
        recent = times[-10 * window:]
        eta = statistics.median(recent) * remaining if recent else 0.0
        scalars['time'] = hub.mean('train/time', window) or 0.0
        scalars['data_time'] = hub.mean('train/data_time', window) or 0.0
        scalars['memory'] = _memory_mb(runner.device)
        losses = {key.split('/', 1)[1]: hub.mean(key, window)
                  for key in hub.keys('train/') if key not in ('train/time', 'train/data_time')}
        parts = [head, f'lr: {scalars["lr"]:.4e}',
                 f'eta: {datetime.timedelta(seconds=int(eta))}',
                 f'time: {_format(scalars["time"])}', f'data_time: {_format(scalars["data_time"])}',
                 f'memory: {int(scalars["memory"])}']
        parts += [f'{key}: {_format(value)}' for key, value in losses.items()]
        runner.logger.info('  '.join(parts))
        scalars.update(losses)
        scalars.update(epoch=runner.epoch + 1, iter=runner.iter + 1)
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        hub.trim()

    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        self._log_eval(runner, 'val', metrics or {})

    def after_run(self, runner) -> None:
        """Close the visualizer, so its backends flush and release their files
        (TensorBoard's event writer), as MMEngine's ``LoggerHook.after_run`` does."""
        visualizer = getattr(runner, 'visualizer', None)
        if visualizer is not None:
            visualizer.close()

    def after_test_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        self._log_eval(runner, 'test', metrics or {})

    def _log_eval(self, runner, mode: str, metrics: dict[str, Any]) -> None:
        hub = runner.message_hub
        loop = runner.val_loop if mode == 'val' else runner.test_loop
        n = len(loop.dataloader)
        timing = {'data_time': hub.mean(f'{mode}/data_time', n) or 0.0,
                  'time': hub.mean(f'{mode}/time', n) or 0.0}
        shown = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        if mode == 'val' and runner.train_loop_built and runner.train_loop.by_epoch:
            head = f'Epoch({mode}) [{runner.epoch}][{n}/{n}]'
        elif mode == 'val' and runner.train_loop_built:
            head = f'Iter({mode}) [{n}/{n}]'
        else:
            head = f'Epoch({mode}) [{n}/{n}]'
        parts = [head] + [f'{k}: {_format(v)}' for k, v in shown.items()]
        parts += [f'{k}: {_format(v)}' for k, v in timing.items()]
        runner.logger.info(parts[0] + '    ' + '  '.join(parts[1:]))
        if mode == 'val' and runner.train_loop_built:
            step = runner.epoch if (self.log_metric_by_epoch and runner.train_loop.by_epoch) \
                else runner.iter
        else:
            step = 0
        runner.visualizer.add_scalars({**shown, **timing}, step=step)


def _is_number(value: Any) -> bool:
    """A metric the log line shows: a number (not a bool), or one in a tensor or array."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            or _is_one_element(value))
