"""``MMDistributedDataParallel``: DDP that keeps ``train_step``/``val_step``/``test_step``.

MMEngine: ``mmengine.model.MMDistributedDataParallel``. The forward pass goes through
DDP's own ``forward`` (so its reducer sees it and all-reduces gradients during
backward); preprocessing, loss parsing and the update are the wrapped model's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .base_model import BaseModel

__all__ = ['MMDistributedDataParallel', 'wrap_model']


class MMDistributedDataParallel(DistributedDataParallel):
    """``DistributedDataParallel`` with the BaseModel steps (MMEngine's name)."""

    # Unpacks a batch into ``self(...)``: DDP's forward, so its reducer sees the pass.
    _run_forward = BaseModel._run_forward

    def train_step(self, data: Any, optim_wrapper) -> dict[str, torch.Tensor]:
        """Preprocess, forward through DDP in ``loss`` mode, parse, update."""
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, True)
            losses = self._run_forward(data, mode='loss')
        loss, log_vars = self.module.parse_losses(losses)
        optim_wrapper.update_params(loss)
        log_vars.update(getattr(optim_wrapper, 'log_vars', None) or {})
        return log_vars

    def val_step(self, data: Any) -> Any:
        """The wrapped model's ``val_step`` (no gradient, nothing to synchronize)."""
        return self.module.val_step(data)

    def test_step(self, data: Any) -> Any:
        return self.module.test_step(data)


def wrap_model(model: nn.Module, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` in :class:`MMDistributedDataParallel` on ``device``."""
    device_ids = [device.index] if device.type == 'cuda' else None
    return MMDistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)
