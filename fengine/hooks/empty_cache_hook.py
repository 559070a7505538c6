"""``EmptyCacheHook``: give cached, unused GPU memory back (MMEngine: ``EmptyCacheHook``)."""
from __future__ import annotations

from typing import Any

import torch

from .._errors import check_bool
from ..registry import HOOKS
from .hook import Hook

__all__ = ['EmptyCacheHook']


def empty_cache() -> None:
    """``torch.cuda.empty_cache()`` when CUDA is in use; nothing on the CPU.

    ``is_initialized()``, not ``is_available()``: a process that never touched the GPU
    has no cache, and asking would create a CUDA context.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@HOOKS.register_module()
class EmptyCacheHook(Hook):
    """Release the caching allocator's unused GPU memory at chosen points.

    MMEngine: ``mmengine.hooks.EmptyCacheHook``. The points are those of training,
    validation and test alike. Emptying the cache does not free memory that tensors
    use; it lets other processes (or a fragmented allocator) have the rest, at the
    cost of allocating it again later: after every iteration it slows training down.

    Args:
        before_epoch: Before each epoch.
        after_epoch: After each epoch.
        after_iter: After each iteration.
    """

    priority = 'NORMAL'

    def __init__(self, before_epoch: bool = False, after_epoch: bool = True,
                 after_iter: bool = False) -> None:
        self._do_before_epoch = check_bool('EmptyCacheHook before_epoch', before_epoch)
        self._do_after_epoch = check_bool('EmptyCacheHook after_epoch', after_epoch)
        self._do_after_iter = check_bool('EmptyCacheHook after_iter', after_iter)

    def _before_epoch(self, runner, mode: str = 'train') -> None:
        if self._do_before_epoch:
            empty_cache()

    def _after_epoch(self, runner, mode: str = 'train') -> None:
        if self._do_after_epoch:
            empty_cache()

    def _after_iter(self, runner, batch_idx: int, data_batch: Any = None,
                    outputs: Any = None, mode: str = 'train') -> None:
        if self._do_after_iter:
            empty_cache()
