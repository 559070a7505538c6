"""``LogProcessor``: the log lines and visualizer scalars of a run, from its message hub.

MMEngine: ``mmengine.runner.LogProcessor``, with the same line format::

    Epoch(train) [1][ 10/938]  lr: 1.0000e-03  eta: 0:01:42  time: 0.0069  data_time: 0.0015  loss: 2.3019
    Epoch(val) [1][157/157]    Accuracy: 0.7094  data_time: 0.0029  time: 0.0046

Reading the hub's scalars reads every value still on the device in one host copy
(see :class:`~fengine.runner.MessageHub`), so a log line costs one synchronization.
"""
from __future__ import annotations

import copy
import datetime
import re
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .._errors import check_bool, check_choice, check_int, check_keys
from ..registry import LOG_PROCESSORS
from .history_buffer import HistoryBuffer

__all__ = ['LogProcessor']

_MODES = ('train', 'val', 'test')
_CFG_KEYS = ('data_src', 'log_name', 'method_name', 'window_size')


@LOG_PROCESSORS.register_module()
class LogProcessor:
    """Turns the runner's message hub into log lines and visualizer scalars.

    MMEngine: ``mmengine.runner.LogProcessor`` (``Runner(log_processor=dict(...))``).
    A scalar whose name matches ``mean_pattern`` (losses, times, gradient norms) is
    shown as its mean over the last ``window_size`` iterations; any other (the
    learning rate, a metric) as its last value. ``custom_cfg`` changes that per scalar.

    Args:
        window_size: Iterations the default means cover.
        by_epoch: ``True``: ``Epoch(train) [e][i/n]`` lines; ``False``:
            ``Iter(train) [i/N]``. ``None`` (the default) follows the training loop
            (MMEngine's default is ``True`` whatever the loop; see the migration notes).
        custom_cfg: A list of ``dict(data_src=<scalar name without its train/ prefix>,
            method_name='mean'|'min'|'max'|'current'|<registered statistic>,
            window_size=<int>|'global'|'epoch', log_name=<shown name>)``. Without
            ``log_name`` the result replaces ``data_src`` in the line; with it, it
            is shown in addition. ``'global'`` covers every iteration so far,
            ``'epoch'`` the iterations of the current epoch.
        num_digits: Digits after the point of the values shown.
        log_with_hierarchy: The visualizer gets ``train/loss``, ``val/accuracy``, ...
            instead of ``loss``, ``accuracy``.
        mean_pattern: A regular expression; matching scalars are averaged.

    Raises:
        TypeError, ValueError: a bad argument or ``custom_cfg`` entry (named, with
            the accepted values).

    Example:
        >>> processor = LogProcessor(custom_cfg=[
        ...     dict(data_src='loss', log_name='loss_max', method_name='max',
        ...          window_size='global')])
        >>> processor.window_size
        10
    """

    def __init__(self, window_size: int = 10, by_epoch: bool | None = None,
                 custom_cfg: list[dict] | None = None, num_digits: int = 4,
                 log_with_hierarchy: bool = False,
                 mean_pattern: str = r'.*(loss|time|data_time|grad_norm).*') -> None:
        self.window_size = check_int('LogProcessor window_size', window_size, minimum=1,
                                     accepted='a positive int')
        if by_epoch is not None:
            check_bool('LogProcessor by_epoch', by_epoch)
        self.by_epoch = by_epoch
        self.num_digits = check_int('LogProcessor num_digits', num_digits, minimum=0,
                                    accepted='an int >= 0')
        self.log_with_hierarchy = check_bool('LogProcessor log_with_hierarchy',
                                             log_with_hierarchy)
        if not isinstance(mean_pattern, str):
            raise TypeError(f'LogProcessor mean_pattern must be a regular expression string, '
                            f'but got {type(mean_pattern).__name__}: {mean_pattern!r}')
        try:
            self.mean_pattern = re.compile(mean_pattern)
        except re.error as exc:
            raise ValueError(f'LogProcessor mean_pattern {mean_pattern!r} is not a valid '
                             f'regular expression: {exc}') from None
        self.custom_cfg = _check_custom_cfg(custom_cfg, by_epoch)

    def __repr__(self) -> str:
        return (f'LogProcessor(window_size={self.window_size}, by_epoch={self.by_epoch}, '
                f'custom_cfg={self.custom_cfg}, num_digits={self.num_digits}, '
                f'log_with_hierarchy={self.log_with_hierarchy}, '
                f'mean_pattern={self.mean_pattern.pattern!r})')

    # -- the two kinds of line -----------------------------------------------------------
    def get_log_after_iter(self, runner, batch_idx: int, mode: str) -> tuple[dict, str]:
        """The scalars and the line after iteration ``batch_idx`` of ``mode``.

        Args:
            runner: The runner.
            batch_idx: The batch's index in its pass over the dataloader.
            mode: ``'train'``, ``'val'`` or ``'test'``.

        Returns:
            ``(tag, line)``: the scalars for the visualizer and the log line.
        """
        check_choice('LogProcessor mode', mode, _MODES)
        by_epoch = self._by_epoch(runner)
        parsed = self._parse_window_size(runner, batch_idx, self.custom_cfg, by_epoch)
        log_tag = self._collect_scalars(parsed, runner, mode)
        tag = copy.copy(log_tag) if not self.log_with_hierarchy else \
            self._collect_scalars(parsed, runner, mode, reserve_prefix=True)
        lr_parts = []
        for key, value in tag.items():
            if key.endswith('lr'):
                short = _remove_prefix(key, f'{mode}/')
                log_tag.pop(short, None)
                lr_parts.append(f'{short}: {value:.{self.num_digits}e}')
        train_built = _train_loop_built(runner)
        if by_epoch:
            length = self._dataloader_len(runner, mode)
            current = str(batch_idx + 1).rjust(len(str(length)))
            if mode in ('train', 'val'):
                epoch = self._epoch(runner, mode)
                epoch_str = f'[{epoch}]'
                if train_built:  # right-aligned under the widest epoch number
                    epoch_str = epoch_str.rjust(len(str(runner.max_epochs)) + 3)
                tag['epoch'] = epoch
                line = f'Epoch({mode}){epoch_str}[{current}/{length}]  '
            else:
                line = f'Epoch({mode}) [{current}/{length}]  '
        elif mode == 'train':
            current = str(runner.iter + 1).rjust(len(str(runner.max_iters)))
            line = f'Iter({mode}) [{current}/{runner.max_iters}]  '
        else:
            length = self._dataloader_len(runner, mode)
            line = f'Iter({mode}) [{str(batch_idx + 1).rjust(len(str(length)))}/{length}]  '
        tag['iter'] = runner.iter + 1 if train_built else 0
        line += ' '.join(lr_parts) + '  '
        eta = runner.message_hub.get_info('eta')
        if 'time' in log_tag and 'data_time' in log_tag and eta is not None:
            line += (f'eta: {datetime.timedelta(seconds=int(eta))}  '
                     f'time: {log_tag.pop("time"):.{self.num_digits}f}  '
                     f'data_time: {log_tag.pop("data_time"):.{self.num_digits}f}  ')
        memory = _max_memory_mb(getattr(runner, 'device', None))
        if memory is not None:
            line += f'memory: {memory}  '
            tag['memory'] = memory
        if mode in ('train', 'val'):
            items = []
            for name, value in log_tag.items():
                if mode == 'val' and not name.startswith('val/loss'):
                    continue
                items.append(f'{name}: {self._format(value)}')
            line += '  '.join(items)
        return tag, line

    def get_log_after_epoch(self, runner, batch_idx: int, mode: str,
                            with_non_scalar: bool = False) -> tuple[dict, str]:
        """The scalars and the line after a validation or test run.

        The metrics are shown as computed by this run (their last value), the times
        as their mean over the run, and ``custom_cfg`` entries as configured.

        Args:
            runner: The runner.
            batch_idx: The number of batches of the run (MMEngine passes the
                dataloader's length).
            mode: ``'val'`` or ``'test'``.
            with_non_scalar: Also return the run's non-scalar results (the hub's
                ``runtime_info`` under ``<mode>/``) in the tag.

        Returns:
            ``(tag, line)``.
        """
        check_choice('LogProcessor.get_log_after_epoch mode', mode, ('val', 'test'))
        length = self._dataloader_len(runner, mode)
        if self._by_epoch(runner):
            if mode == 'val':
                line = f'Epoch({mode}) [{self._epoch(runner, mode)}][{length}/{length}]  '
            else:
                line = f'Epoch({mode}) [{length}/{length}]  '
        else:
            line = f'Iter({mode}) [{length}/{length}]  '
        cfg = copy.deepcopy(self.custom_cfg)
        custom_keys = [_remove_prefix(c['data_src'], f'{mode}/') for c in cfg]
        for key in ('time', 'data_time'):
            if key not in custom_keys:
                cfg.append(dict(data_src=key, method_name='mean', window_size=length))
        parsed = self._parse_window_size(runner, length - 1, cfg, True)
        scalars = self._collect_scalars(parsed, runner, mode, self.log_with_hierarchy,
                                        smooth=False)
        non_scalars = self._collect_non_scalars(runner, mode)
        tag: OrderedDict[str, Any] = OrderedDict()
        times: OrderedDict[str, Any] = OrderedDict()
        for key, value in scalars.items():
            if _remove_prefix(key, f'{mode}/') in ('time', 'data_time'):
                times[key] = value
            else:
                tag[key] = value
        items = []
        for name, value in [*tag.items(), *non_scalars.items(), *times.items()]:
            if isinstance(value, (torch.Tensor, np.ndarray)):
                value = f'\n{value}\n'  # on lines of their own
            items.append(f'{name}: {self._format(value)}')
        line += '  ' + '  '.join(items)
        if with_non_scalar:
            tag.update(non_scalars)
        tag.update(times)
        return dict(tag), line

    # -- pieces ------------------------------------------------------------------------
    def _format(self, value: Any) -> str:
        if isinstance(value, float):
            return f'{value:.{self.num_digits}f}'
        return str(value)

    def _by_epoch(self, runner) -> bool:
        if self.by_epoch is not None:
            return self.by_epoch
        loop = getattr(runner, '_train_loop', None)
        return True if loop is None or isinstance(loop, dict) else bool(loop.by_epoch)

    def _collect_scalars(self, custom_cfg: list[dict], runner, mode: str,
                         reserve_prefix: bool = False, smooth: bool = True) -> OrderedDict:
        """The ``mode/`` scalars of the hub, each by its default statistic (a mean over
        ``window_size`` when ``smooth`` and it matches ``mean_pattern``, else its last
        value), then the ``custom_cfg`` entries."""
        prefix = f'{mode}/'
        buffers: OrderedDict[str, HistoryBuffer] = OrderedDict(
            (key if reserve_prefix else key[len(prefix):], buffer)
            for key, buffer in runner.message_hub.log_scalars.items()
            if key.startswith(prefix) and len(buffer))
        tag: OrderedDict[str, Any] = OrderedDict()
        for key, buffer in buffers.items():
            if smooth and self.mean_pattern.search(key) is not None:
                tag[key] = buffer.mean(self.window_size)
            else:
                tag[key] = buffer.current()
        for cfg in custom_cfg:
            cfg = dict(cfg)
            data_src = cfg.pop('data_src')
            log_name = cfg.pop('log_name', data_src)
            if reserve_prefix:
                data_src, log_name = prefix + data_src, prefix + log_name
            if data_src in buffers:
                tag[log_name] = buffers[data_src].statistics(**cfg)
        return tag

    def _collect_non_scalars(self, runner, mode: str) -> OrderedDict:
        prefix = f'{mode}/'
        return OrderedDict(
            (key if self.log_with_hierarchy else key[len(prefix):], value)
            for key, value in runner.message_hub.runtime_info.items() if key.startswith(prefix))

    @staticmethod
    def _parse_window_size(runner, batch_idx: int, custom_cfg: list[dict],
                           by_epoch: bool) -> list[dict]:
        """``custom_cfg`` with ``'global'`` and ``'epoch'`` windows turned into counts."""
        parsed = copy.deepcopy(custom_cfg)
        for cfg in parsed:
            window = cfg.get('window_size')
            if window == 'epoch':
                if not by_epoch:
                    raise ValueError(
                        f"LogProcessor custom_cfg {custom_cfg!r}: window_size='epoch' needs "
                        'epoch-based logging, but this run logs by iteration; use an int '
                        "or 'global'")
                cfg['window_size'] = batch_idx + 1
            elif window == 'global':
                cfg['window_size'] = runner.iter + 1
        return parsed

    @staticmethod
    def _epoch(runner, mode: str) -> int:
        if mode == 'train':
            return runner.epoch + 1
        # A validation inside training runs after the epoch counter moved on; one
        # outside training has no epoch.
        return runner.epoch if _train_loop_built(runner) else 0

    @staticmethod
    def _dataloader_len(runner, mode: str) -> int:
        loop = {'train': 'train_loop', 'val': 'val_loop', 'test': 'test_loop'}[mode]
        return len(getattr(runner, loop).dataloader)


def _train_loop_built(runner) -> bool:
    loop = getattr(runner, '_train_loop', None)
    return loop is not None and not isinstance(loop, dict)


def _remove_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text


def _max_memory_mb(device: Any) -> int | None:
    """Peak CUDA memory allocated since the last call, in MB; ``None`` off CUDA
    (MMEngine shows memory only on CUDA)."""
    if not isinstance(device, torch.device) or device.type != 'cuda':
        return None
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return int(peak // 2**20)


def _check_custom_cfg(custom_cfg: Any, by_epoch: bool | None) -> list[dict]:
    """A checked copy of ``custom_cfg`` (MMEngine asserts; these are errors that name
    the entry and the accepted values)."""
    if custom_cfg is None:
        return []
    if not isinstance(custom_cfg, (list, tuple)):
        raise TypeError(f'LogProcessor custom_cfg must be a list of dicts such as '
                        f"[dict(data_src='loss', method_name='mean', window_size='global')], "
                        f'but got {type(custom_cfg).__name__}: {custom_cfg!r}')
    names: dict[str, str] = {}
    checked = []
    for index, cfg in enumerate(custom_cfg):
        where = f'LogProcessor custom_cfg[{index}]'
        if not isinstance(cfg, dict):
            raise TypeError(f'{where} must be a dict, but got {type(cfg).__name__}: {cfg!r}')
        for key in ('data_src', 'method_name'):
            if key not in cfg:
                raise ValueError(f'{where} {cfg!r} has no {key!r}; e.g. '
                                 "dict(data_src='loss', method_name='mean', window_size=100)")
        method = cfg['method_name']
        methods = ['mean', 'min', 'max', 'current', *HistoryBuffer._statistics_methods]
        check_choice(f'{where} method_name', method, methods)
        if method in ('mean', 'min', 'max', 'current'):
            check_keys(where, cfg, _CFG_KEYS)
        window = cfg.get('window_size')
        if method == 'current' and window is not None:
            raise ValueError(f"{where} {cfg!r}: method_name='current' takes no window_size "
                             '(it is the last value)')
        if window is not None and window not in ('global', 'epoch'):
            check_int(f'{where} window_size', window, minimum=1,
                      accepted="a positive int, 'global' or 'epoch'")
        if window == 'epoch' and by_epoch is False:
            raise ValueError(f"{where} {cfg!r}: window_size='epoch' needs by_epoch=True "
                             '(this LogProcessor logs by iteration); use an int or '
                             "'global'")
        log_name = cfg.get('log_name', cfg['data_src'])
        if log_name in names:
            raise ValueError(
                f'{where} {cfg!r} writes {log_name!r}, which custom_cfg[{names[log_name]}] '
                'writes already; give one of them a different log_name (without log_name '
                'an entry replaces its data_src, which only one entry may do)')
        names[log_name] = str(index)
        checked.append(dict(cfg))
    return checked
