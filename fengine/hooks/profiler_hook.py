"""``ProfilerHook``: ``torch.profiler`` over the first iterations or epoch (MMEngine: ``ProfilerHook``)."""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .._errors import check_bool, check_choice, check_int, check_keys
from ..dist import is_main_process
from ..registry import HOOKS
from .hook import Hook

__all__ = ['ProfilerHook']

TRACE_TYPES = ('log_trace', 'tb_trace')


def _accepted(function: Callable, skip: int = 0) -> list[str]:
    return list(inspect.signature(function).parameters)[skip:]


@HOOKS.register_module()
class ProfilerHook(Hook):
    """Profile the first training iterations (or the first epoch) with ``torch.profiler``.

    MMEngine: ``mmengine.hooks.ProfilerHook``. The profiler starts in ``before_run``,
    steps after each training iteration and stops after ``profile_times`` iterations
    (``by_epoch=False``) or after the first epoch; then the trace goes where
    ``on_trace_ready`` and ``json_trace_path`` say. A run that ends earlier stops it in
    ``after_run``. Runs without training (``runner.val()``/``test()``) are not profiled.

    Args:
        by_epoch: Profile the first epoch (``profile_times`` must be 1) or the first
            ``profile_times`` iterations.
        profile_times: How many epochs (1) or iterations to profile.
        activity_with_cpu: Record CPU activity.
        activity_with_cuda: Record CUDA kernels (skipped, with a warning, without CUDA).
        schedule: Arguments of ``torch.profiler.schedule`` (``wait``, ``warmup``,
            ``active``, ``repeat``, ``skip_first``): which steps are recorded.
        on_trace_ready: A function of the profiler, or ``dict(type='log_trace', ...)``
            (the table of ``key_averages().table(...)`` into the log; other keys are its
            arguments: ``sort_by``, ``row_limit``...) or ``dict(type='tb_trace', ...)``
            (TensorBoard traces by ``torch.profiler.tensorboard_trace_handler``; its
            ``dir_name`` defaults to ``<log_dir>/tf_tracing_logs`` and a relative one is
            under the run's log folder; ``worker_name``, ``use_gzip``).
        record_shapes, profile_memory, with_stack, with_flops: As ``torch.profiler.profile``.
        json_trace_path: Also write a Chrome trace (``chrome://tracing``, Perfetto) to this
            file; a relative path is under ``work_dir``. Written by the main process.

    Raises:
        ValueError: ``profile_times`` < 1, or > 1 with ``by_epoch``; an unknown trace
            ``type``; ``profile_times`` beyond the run's length (at ``before_run``).
        TypeError: unknown keys of ``schedule`` or ``on_trace_ready``, or a flag that
            is not a bool.
    """

    priority = 'VERY_LOW'

    def __init__(self, *, by_epoch: bool = True, profile_times: int = 1,
                 activity_with_cpu: bool = True, activity_with_cuda: bool = False,
                 schedule: dict | None = None,
                 on_trace_ready: Callable | dict | None = None, record_shapes: bool = False,
                 profile_memory: bool = False, with_stack: bool = False,
                 with_flops: bool = False, json_trace_path: str | os.PathLike | None = None
                 ) -> None:
        if not torch.autograd.kineto_available():
            raise RuntimeError('ProfilerHook needs a torch build with Kineto (torch.profiler); '
                               'this one has none')
        self.by_epoch = check_bool('ProfilerHook by_epoch', by_epoch)
        self.profile_times = check_int('ProfilerHook profile_times', profile_times, minimum=1,
                                       accepted='a positive int')
        if by_epoch and profile_times > 1:
            raise ValueError(f'ProfilerHook by_epoch=True profiles one epoch (profile_times=1), '
                             f'but got profile_times={profile_times}; profiling slows training '
                             'down: profile one epoch, or pass by_epoch=False to profile '
                             'that many iterations')
        self.activities = []
        if check_bool('ProfilerHook activity_with_cpu', activity_with_cpu):
            self.activities.append(torch.profiler.ProfilerActivity.CPU)
        self.activity_with_cuda = check_bool('ProfilerHook activity_with_cuda',
                                             activity_with_cuda)
        if schedule is not None:
            if not isinstance(schedule, dict):
                raise TypeError(f'ProfilerHook schedule must be a dict of '
                                f'torch.profiler.schedule arguments, but got {schedule!r}')
            check_keys('ProfilerHook schedule', schedule, _accepted(torch.profiler.schedule))
            self.schedule = torch.profiler.schedule(**schedule)
        else:
            self.schedule = None
        if isinstance(on_trace_ready, dict):
            trace = dict(on_trace_ready)
            if 'type' not in trace:
                raise ValueError(f"ProfilerHook on_trace_ready needs a 'type', one of "
                                 f'{TRACE_TYPES}, but got {on_trace_ready!r}')
            kind = trace.pop('type')
            check_choice('ProfilerHook on_trace_ready type', kind, TRACE_TYPES)
            from torch.autograd.profiler_util import EventList

            accepted = (_accepted(EventList.table, skip=1) if kind == 'log_trace'
                        else _accepted(torch.profiler.tensorboard_trace_handler))
            check_keys(f'ProfilerHook on_trace_ready (type={kind!r})', trace, accepted)
        elif on_trace_ready is not None and not callable(on_trace_ready):
            raise TypeError(f'ProfilerHook on_trace_ready must be a function, a dict with type '
                            f'{TRACE_TYPES} or None, but got {on_trace_ready!r}')
        self.on_trace_ready = on_trace_ready
        self.record_shapes = check_bool('ProfilerHook record_shapes', record_shapes)
        self.profile_memory = check_bool('ProfilerHook profile_memory', profile_memory)
        self.with_stack = check_bool('ProfilerHook with_stack', with_stack)
        self.with_flops = check_bool('ProfilerHook with_flops', with_flops)
        self.json_trace_path = json_trace_path
        self.profiler: torch.profiler.profile | None = None
        self._closed = True

    def _trace_handler(self, runner) -> Callable | None:
        if not isinstance(self.on_trace_ready, dict):
            return self.on_trace_ready
        trace = dict(self.on_trace_ready)
        kind = trace.pop('type')
        if kind == 'log_trace':
            def log_table(profile) -> None:
                runner.logger.info('\n' + profile.key_averages().table(**trace))
            return log_table
        folder = Path(trace.get('dir_name', 'tf_tracing_logs'))
        trace['dir_name'] = os.fspath(folder if folder.is_absolute()
                                      else Path(runner.log_dir) / folder)
        runner.logger.info(f'ProfilerHook writes TensorBoard traces to {trace["dir_name"]}')
        return torch.profiler.tensorboard_trace_handler(**trace)

    def before_run(self, runner) -> None:
        if not runner.train_loop_built:
            return
        most = runner.max_epochs if self.by_epoch else runner.max_iters
        if self.profile_times > most:
            raise ValueError(f'ProfilerHook profile_times={self.profile_times} is more than the '
                             f'run has ({most} {"epochs" if self.by_epoch else "iterations"})')
        activities = list(self.activities)
        if self.activity_with_cuda:
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            else:
                runner.logger.warning('ProfilerHook activity_with_cuda=True, but CUDA is not '
                                      'available: only CPU activity is profiled')
        self.profiler = torch.profiler.profile(
            activities=activities, schedule=self.schedule,
            on_trace_ready=self._trace_handler(runner), record_shapes=self.record_shapes,
            profile_memory=self.profile_memory, with_stack=self.with_stack,
            with_flops=self.with_flops)
        self.profiler.__enter__()
        self._closed = False
        runner.logger.info('ProfilerHook: the profiler is recording')

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        if self._closed:
            return
        self.profiler.step()
        if not self.by_epoch and runner.iter + 1 >= self.profile_times:
            self._export(runner)

    def after_train_epoch(self, runner) -> None:
        if not self._closed:
            self._export(runner)

    def after_run(self, runner) -> None:
        if not self._closed:
            self._export(runner)

    def _export(self, runner) -> None:
        self._closed = True
        self.profiler.__exit__(None, None, None)
        if self.json_trace_path is None or not is_main_process():
            return
        path = Path(self.json_trace_path).expanduser()
        if not path.is_absolute():
            path = Path(runner.work_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.profiler.export_chrome_trace(os.fspath(path))
        except RuntimeError as exc:
            # A schedule whose cycle had not ended when profiling stopped has no trace.
            runner.logger.log(logging.WARNING, f'ProfilerHook could not write {path}: {exc}')
            return
        runner.logger.info(f'ProfilerHook wrote the Chrome trace {path}')
