"""``CheckInvalidLossHook``: stop at a NaN or infinite loss (MMEngine's tutorial 'Hook')."""
from __future__ import annotations

from typing import Any

import torch

from .._errors import check_int
from ..registry import HOOKS
from .hook import Hook

__all__ = ['CheckInvalidLossHook']


@HOOKS.register_module()
class CheckInvalidLossHook(Hook):
    """Raise ``NonFiniteLossError`` when a training loss is NaN or infinite.

    MMEngine's tutorial 'Hook' writes this hook as its custom-hook example (and
    MMDetection ships it). The check reads the losses on the host, which waits for the
    device, so it runs every ``interval`` iterations only (MMEngine's rule). It reads
    every loss queued since the last read, not only the current one, so the error names
    the *first* iteration whose loss was not finite, as the runner's own check does when
    it logs or saves a checkpoint (the same ``NonFiniteLossError``, the same message).

    Args:
        interval: Check every ``interval`` training iterations.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 50) -> None:
        self.interval = check_int('CheckInvalidLossHook interval', interval, minimum=1,
                                  accepted='a positive int')

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        if not self.every_n_train_iters(runner, self.interval):
            return
        sync = getattr(runner.message_hub, 'sync', None)
        if callable(sync):
            # The train loop queued this and earlier iterations' log values there.
            sync()
            return
        loss = (outputs or {}).get('loss')
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            from ..runner.message_hub import NonFiniteLossError

            raise NonFiniteLossError(f'the train loss is not finite at iteration '
                                     f'{runner.iter + 1}: loss={loss.tolist()}')
