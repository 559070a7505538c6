"""``RuntimeInfoHook``: the run's state in the message hub (MMEngine: ``RuntimeInfoHook``).

Code without the runner at hand (a model, a metric, a scheduler) reads the epoch,
iteration, learning rate or the last metrics from
``MessageHub.get_current_instance()``. Nothing here reads a value from the device:
tensors (losses, a compiled step's learning rate) are handed to the hub as they are
and read with the next log line.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..registry import HOOKS
from ..visualization.backends import _is_one_element
from .hook import Hook

__all__ = ['RuntimeInfoHook']


def _is_scalar(value: Any) -> bool:
    """A number (not a bool), or a one-element tensor or array: what the hub records
    as a scalar and the visualizer writes as a number."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            or _is_one_element(value))


@HOOKS.register_module()
class RuntimeInfoHook(Hook):
    """Keeps the run's state in ``runner.message_hub``.

    MMEngine: ``mmengine.hooks.RuntimeInfoHook`` (one of the default hooks). Facts
    (``runtime_info``): ``cfg``, ``seed``, ``experiment_name``, ``fengine_version``,
    ``epoch``, ``iter``, ``max_epochs``, ``max_iters``, ``loop_stage``,
    ``dataset_meta`` (the training dataset's ``metainfo``), and the non-scalar
    results of validation and test as ``val/<name>``, ``test/<name>``. Scalars:
    ``train/lr`` and ``train/momentum`` (``momentum``, or Adam's ``betas[0]``; none
    for a plain SGD) of the first parameter group (one per optimizer,
    ``train/<name>.lr``, with several), the training step's log values as
    ``train/<key>``, and the scalar metrics as ``val/<name>`` and ``test/<name>``.

    A log value that is a tensor of several elements is recorded as its mean; one
    that is not a number (a string) is left out.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.last_loop_stage: str | None = None
        # name -> (the tensor last seen, its in-place version, the copy recorded):
        # an lr tensor that did not change is recorded without another copy.
        self._copies: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def before_run(self, runner) -> None:
        from .. import __version__

        cfg = getattr(runner, 'cfg', None)
        runner.message_hub.update_info_dict(dict(
            cfg=getattr(cfg, 'pretty_text', None) or (None if cfg is None else repr(cfg)),
            seed=runner.seed, experiment_name=runner.experiment_name,
            fengine_version=__version__))
        self.last_loop_stage = None

    def before_train(self, runner) -> None:
        hub = runner.message_hub
        hub.update_info_dict(dict(loop_stage='train', epoch=runner.epoch, iter=runner.iter,
                                  max_epochs=runner.max_epochs, max_iters=runner.max_iters))
        metainfo = getattr(getattr(runner.train_dataloader, 'dataset', None), 'metainfo', None)
        if metainfo is not None:
            hub.update_info('dataset_meta', metainfo)

    def after_train(self, runner) -> None:
        runner.message_hub.pop_info('loop_stage')

    def before_train_epoch(self, runner) -> None:
        runner.message_hub.update_info('epoch', runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        hub = runner.message_hub
        hub.update_info('iter', runner.iter)
        for name, value in _hyper_parameters(runner.optim_wrapper).items():
            hub.update_scalar(f'train/{name}', self._unchanged_copy(name, value))

    def _unchanged_copy(self, name: str, value: Any) -> Any:
        """``value``, or for a tensor a copy of it as it is now.

        A compiled step's lr is a tensor that schedulers change in place; the hub
        reads values later, so it gets a copy, made only when the tensor changed.
        """
        if not isinstance(value, torch.Tensor):
            return value
        seen = self._copies.get(name)
        if seen is not None and seen[0] is value and seen[1] == value._version:
            return seen[2]
        copied = value.detach().clone()
        self._copies[name] = (value, value._version, copied)
        return copied

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        if not outputs:
            return
        hub = runner.message_hub
        for key, value in outputs.items():
            if isinstance(value, torch.Tensor) and value.numel() > 1:
                value = value.detach().float().mean()
            elif isinstance(value, np.ndarray) and value.size > 1:
                value = float(value.mean())
            elif not _is_scalar(value):
                continue
            hub.update_scalar(f'train/{key}', value)

    def before_val(self, runner) -> None:
        self.last_loop_stage = runner.message_hub.get_info('loop_stage')
        runner.message_hub.update_info('loop_stage', 'val')

    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        self._record_metrics(runner, 'val', metrics)

    def after_val(self, runner) -> None:
        # A validation inside training goes back to the training stage.
        if self.last_loop_stage == 'train':
            runner.message_hub.update_info('loop_stage', 'train')
            self.last_loop_stage = None
        else:
            runner.message_hub.pop_info('loop_stage')

    def before_test(self, runner) -> None:
        runner.message_hub.update_info('loop_stage', 'test')

    def after_test(self, runner) -> None:
        runner.message_hub.pop_info('loop_stage')

    def after_test_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        self._record_metrics(runner, 'test', metrics)

    @staticmethod
    def _record_metrics(runner, mode: str, metrics: dict[str, Any] | None) -> None:
        for key, value in (metrics or {}).items():
            if _is_scalar(value):
                runner.message_hub.update_scalar(f'{mode}/{key}', value)
            else:
                runner.message_hub.update_info(f'{mode}/{key}', value)


def _hyper_parameters(optim_wrapper: Any) -> dict[str, Any]:
    """``lr`` and ``momentum`` of the first parameter group of each optimizer, as they
    are held (a float, or a compiled step's 0-d tensor: not read here).

    MMEngine's ``optim_wrapper.get_lr()`` turns every group's lr into a float, which
    for a tensor on the GPU waits for the device.
    """
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
    if isinstance(wrappers, dict):
        named = [(f'{name}.', wrapper) for name, wrapper in wrappers.items()]
    else:
        named = [('', optim_wrapper)]
    values: dict[str, Any] = {}
    for prefix, wrapper in named:
        groups = getattr(wrapper, 'param_groups', None)
        if not groups:
            continue
        group = groups[0]
        values[f'{prefix}lr'] = group['lr']
        momentum = group['betas'][0] if 'betas' in group else group.get('momentum')
        # SGD without momentum holds momentum=0: nothing worth a scalar per iteration.
        if isinstance(momentum, torch.Tensor) or momentum:
            values[f'{prefix}momentum'] = momentum
    return values
