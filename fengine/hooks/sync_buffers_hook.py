"""``SyncBuffersHook``: average the model's buffers over the processes (MMEngine: ``SyncBuffersHook``)."""
from __future__ import annotations

import torch

from .. import dist
from ..registry import HOOKS
from .hook import Hook

__all__ = ['SyncBuffersHook', 'average_buffers']


def average_buffers(module: torch.nn.Module) -> None:
    """Replace each floating-point buffer of ``module`` with its mean over all processes.

    One all-reduce per dtype (``fengine.dist``'s coalesced mean). Integer buffers
    (BatchNorm's ``num_batches_tracked``) count the same steps on every process and
    are left as they are. Does nothing when not distributed.
    """
    if not dist.is_distributed() or dist.get_world_size() < 2:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point() and b.numel()]
    if not buffers:
        return
    with torch.no_grad(), dist._explained_collective_errors():
        means = dist._mean_coalesced(buffers, None, dist.get_world_size())
        torch._foreach_copy_(buffers, [m.to(b.dtype) for m, b in zip(means, buffers)])


@HOOKS.register_module()
class SyncBuffersHook(Hook):
    """Average the buffers (BatchNorm's running statistics) over the processes.

    MMEngine: ``mmengine.hooks.SyncBuffersHook``. Each process of a data-parallel run
    updates its BatchNorm statistics from its own batches (DDP broadcasts rank 0's, at
    most); this averages them after each training epoch, and before a validation that
    no training epoch preceded (iteration-based training), so every process validates
    and saves the same model. Whether the run is distributed is decided when it runs,
    not when the hook is built.
    """

    priority = 'NORMAL'

    def __init__(self) -> None:
        self.called_in_train = False

    def after_train_epoch(self, runner) -> None:
        average_buffers(runner.model)
        self.called_in_train = True

    def before_val_epoch(self, runner) -> None:
        if not self.called_in_train:
            average_buffers(runner.model)
        self.called_in_train = False
