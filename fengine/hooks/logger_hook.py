"""``LoggerHook``: log lines and visualizer scalars at the right moments.

MMEngine: ``mmengine.hooks.LoggerHook``. The runner's
:class:`~fengine.runner.LogProcessor` writes the lines::

    Epoch(train) [1][ 10/938]  lr: 1.0000e-03  eta: 0:01:42  time: 0.0069  data_time: 0.0015  loss: 2.3019
    Epoch(val) [1][157/157]    Accuracy: 0.7094  data_time: 0.0029  time: 0.0046

and the same numbers go to the visualizer (``vis_data/scalars.json``, TensorBoard).
Reading the losses is the only host synchronization, once per line.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .._errors import check_bool, check_int
from ..registry import HOOKS
from .hook import Hook

__all__ = ['LoggerHook']


@HOOKS.register_module()
class LoggerHook(Hook):
    """Writes a training line every ``interval`` iterations, the metrics of every
    validation and test run, to the log and to the visualizer.

    MMEngine: ``mmengine.hooks.LoggerHook``.

    Args:
        interval: Iterations between lines (training, validation and test).
        ignore_last: In an epoch whose length is not a multiple of ``interval``, skip
            the line of its last iterations. An epoch shorter than ``interval`` (or,
            in an iteration-based run, a run shorter than it) still logs its last
            iteration, so every epoch has a line.
        interval_exp_name: Iterations between ``Exp name: ...`` lines (also written
            at the end of each epoch).
        out_dir: A local folder the run's logs are copied to at the end of the run,
            into ``out_dir/<work_dir's name>/``.
        out_suffix: Which files of the run's log folder are copied (name endings).
        keep_local: Keep the local logs after copying them to ``out_dir``.
        log_metric_by_epoch: In an epoch-based run, validation scalars use the epoch
            as their step; else (and in iteration-based runs) the iteration.
        file_client_args, backend_args: MMEngine's remote storage options; fengine
            copies to local folders only, so anything but ``None`` is an error.

    Raises:
        TypeError, ValueError: a bad argument (named), or a remote ``out_dir``.
    """

    priority = 'BELOW_NORMAL'

    def __init__(self, interval: int = 10, ignore_last: bool = True,
                 interval_exp_name: int = 1000, out_dir: str | os.PathLike | None = None,
                 out_suffix: str | Sequence[str] = ('.json', '.log', '.py', 'yaml'),
                 keep_local: bool = True, file_client_args: dict | None = None,
                 log_metric_by_epoch: bool = True, backend_args: dict | None = None) -> None:
        self.interval = check_int('LoggerHook interval', interval, minimum=1,
                                  accepted='a positive int')
        self.ignore_last = check_bool('LoggerHook ignore_last', ignore_last)
        self.interval_exp_name = check_int('LoggerHook interval_exp_name', interval_exp_name,
                                           minimum=1, accepted='a positive int')
        self.keep_local = check_bool('LoggerHook keep_local', keep_local)
        self.log_metric_by_epoch = check_bool('LoggerHook log_metric_by_epoch',
                                              log_metric_by_epoch)
        for name, value in (('file_client_args', file_client_args),
                            ('backend_args', backend_args)):
            if value is not None:
                raise ValueError(f'LoggerHook: {name}={value!r} is not supported: fengine '
                                 'copies logs to a local out_dir only; remove it')
        if out_dir is not None:
            if not isinstance(out_dir, (str, os.PathLike)):
                raise TypeError(f'LoggerHook out_dir must be a str or a path, but got '
                                f'{type(out_dir).__name__}: {out_dir!r}')
            if '://' in os.fspath(out_dir):
                raise ValueError(f'LoggerHook: out_dir={os.fspath(out_dir)!r} is a remote '
                                 'location; fengine copies logs to local folders only '
                                 '(remote storage backends are not implemented)')
        if isinstance(out_suffix, str):
            out_suffix = (out_suffix,)
        if not isinstance(out_suffix, Sequence) or \
                not all(isinstance(s, str) for s in out_suffix):
            raise TypeError(f'LoggerHook out_suffix must be a str or a list of str, but got '
                            f'{out_suffix!r}')
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.out_suffix = tuple(out_suffix)
        self.json_log_path: str | None = None
        self._copy_to: Path | None = None  # out_dir/<work_dir's name>, set per run

    # -- the run ---------------------------------------------------------------------
    def before_run(self, runner) -> None:
        if self.out_dir is not None:
            self._copy_to = self.out_dir / Path(runner.work_dir).name
            runner.logger.info(f'Text logs will be copied to {self._copy_to} after the run.')
        self.json_log_path = f'{runner.timestamp}.json'

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        by_epoch = runner.train_loop.by_epoch
        end_of_epoch = by_epoch and self.end_of_epoch(runner.train_dataloader, batch_idx)
        if self.every_n_train_iters(runner, self.interval_exp_name) or end_of_epoch:
            runner.logger.info(f'Exp name: {runner.experiment_name}')
        if by_epoch:
            due = self.every_n_inner_iters(batch_idx, self.interval) or (
                end_of_epoch and (not self.ignore_last
                                  or len(runner.train_dataloader) <= self.interval))
        else:
            due = self.every_n_train_iters(runner, self.interval) or (
                self.is_last_train_iter(runner)
                and (not self.ignore_last or runner.max_iters <= self.interval))
        if not due:
            return
        tag, line = runner.log_processor.get_log_after_iter(runner, batch_idx, 'train')
        runner.logger.info(line)
        runner.visualizer.add_scalars(tag, step=runner.iter + 1, file_path=self.json_log_path)

    def after_val_iter(self, runner, batch_idx: int, data_batch: Any = None,
                       outputs: Any = None) -> None:
        if self.every_n_inner_iters(batch_idx, self.interval):
            _, line = runner.log_processor.get_log_after_iter(runner, batch_idx, 'val')
            runner.logger.info(line)

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None,
                        outputs: Any = None) -> None:
        if self.every_n_inner_iters(batch_idx, self.interval):
            _, line = runner.log_processor.get_log_after_iter(runner, batch_idx, 'test')
            runner.logger.info(line)

    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        tag, line = runner.log_processor.get_log_after_epoch(
            runner, len(runner.val_dataloader), 'val')
        runner.logger.info(line)
        if runner.train_loop_built:
            by_epoch = self.log_metric_by_epoch and runner.train_loop.by_epoch
            step = runner.epoch if by_epoch else runner.iter
        else:
            step = 0
        runner.visualizer.add_scalars(tag, step=step, file_path=self.json_log_path)

    def after_test_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        tag, line = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True)
        runner.logger.info(line)
        # As MMEngine: the test results as one JSON file in the run's log folder.
        path = Path(runner.log_dir) / (self.json_log_path or f'{runner.timestamp}.json')
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_jsonable(tag)) + '\n', encoding='utf-8')

    def after_run(self, runner) -> None:
        """Close the visualizer (its backends flush and release their files), then
        copy the logs to ``out_dir`` if one was given."""
        visualizer = getattr(runner, 'visualizer', None)
        if visualizer is not None:
            visualizer.close()
        if self._copy_to is None:
            return
        log_dir = Path(runner.log_dir)
        copied = []
        for path in sorted(p for p in log_dir.rglob('*') if p.is_file()):
            if not path.name.endswith(self.out_suffix):
                continue
            target = self._copy_to / path.relative_to(log_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(path)
            runner.logger.info(f'The file {path} has been copied to {target}.')
        if self.keep_local:
            return
        for handler in list(runner.logger.handlers):
            # A log file being removed is closed first (Windows refuses otherwise).
            if isinstance(handler, logging.FileHandler) and \
                    Path(handler.baseFilename) in copied:
                runner.logger.removeHandler(handler)
                handler.close()
        for path in copied:
            path.unlink()
        runner.logger.info(f'The local logs were removed (keep_local=False); they are in '
                           f'{self._copy_to}')


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it (MMEngine's ``_process_tags``): tensors and arrays
    become lists; what JSON cannot hold is dropped."""
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, _jsonable(v)) for k, v in value.items())
                if v is not None or value[k] is None}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value.tolist()
    return None
