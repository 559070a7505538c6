"""``MMDistributedDataParallel``: DDP that keeps ``train_step``/``val_step``/``test_step``.

MMEngine: ``mmengine.model.MMDistributedDataParallel``. Eagerly, the forward pass goes
through DDP's own ``forward`` (so its reducer sees it and all-reduces gradients during
backward); preprocessing, loss parsing and the update are the wrapped model's. After
``model.module.compile_steps()`` (``Runner(compile=True)``), ``train_step`` is the fused
compiled step of :mod:`fengine.func.step` built on this wrapper: it averages the
gradients itself, since DDP's hooks do not fire under ``torch.func.grad``.

On an update step both paths also average the log values over the ranks, so rank 0
logs the loss of the global batch, and a non-finite loss on any rank (in any micro-step
of the window) shows as a non-finite loss on every rank: every rank's
``MessageHub.sync`` raises ``NonFiniteLossError`` at the same log line, and rank 0 never
saves the state that followed it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from .. import dist
from ..registry import MODEL_WRAPPERS
from .fsdp import is_fsdp_config

__all__ = ['MMDistributedDataParallel', 'wrap_model', 'ddp_train_step', 'is_model_wrapper',
           'unwrap_model']


@MODEL_WRAPPERS.register_module()
class MMDistributedDataParallel(DistributedDataParallel):
    """``DistributedDataParallel`` with the BaseModel steps (MMEngine's name).

    Example (under ``torchrun``, after ``fengine.dist.init_dist()``)::

        model = MMDistributedDataParallel(net.to(device), device_ids=[device.index])
        net.compile_steps()   # optional: the fused step, synchronized by itself
        log_vars = model.train_step(batch, optim_wrapper)
    """

    def train_step(self, data: Any, optim_wrapper) -> dict[str, torch.Tensor]:
        """Preprocess, forward in ``loss`` mode, parse, update; gradients averaged over ranks.

        Compiled (the wrapped model's :meth:`~BaseModel.compile_steps` was called): one
        fused step per optimizer wrapper, made by :func:`fengine.func.make_train_step`
        on this wrapper. Otherwise DDP's eager path.
        """
        if getattr(self.module, '_compiled_steps', None) is None:
            return ddp_train_step(self, data, optim_wrapper)
        return self.module._fused_train_step(data, optim_wrapper, stepped=self)

    def val_step(self, data: Any) -> Any:
        """The wrapped model's ``val_step`` (no gradient, nothing to synchronize)."""
        return self.module.val_step(data)

    def test_step(self, data: Any) -> Any:
        return self.module.test_step(data)


def ddp_train_step(ddp: DistributedDataParallel, data: Any,
                   optim_wrapper) -> dict[str, torch.Tensor]:
    """The eager training step of a DDP-wrapped :class:`BaseModel`.

    DDP's reducer averages the gradients during ``backward`` (skipped by
    ``optim_context``'s ``no_sync`` between updates); on update steps the log values are
    averaged too (one small all-reduce), with the window's non-finite flag.
    """
    module = ddp.module
    with dist._explained_collective_errors():
        sync = optim_wrapper.should_sync()  # read before update_params counts the micro-step
        return module._eager_train_step(
            data, optim_wrapper, forward_module=ddp,
            finish_log_vars=lambda log_vars: _average_log_vars(ddp, log_vars, sync))


def _average_log_vars(ddp: DistributedDataParallel, log_vars: dict, sync: bool) -> dict:
    """Add this micro-step's non-finite flag to the window's; on ``sync``, average over ranks."""
    world_size = dist.get_world_size(ddp.process_group)
    if world_size <= 1:
        return log_vars
    window = dist._nonfinite_window(ddp, log_vars['loss'].device)
    return dist._mean_log_vars(log_vars, window, ddp.process_group, world_size, sync=sync)


def is_model_wrapper(model: Any) -> bool:
    """Whether ``model`` is a model wrapper (MMEngine: ``mmengine.model.is_model_wrapper``).

    A wrapper is an instance of torch's ``DistributedDataParallel`` (so
    :class:`MMDistributedDataParallel` too) or ``DataParallel``, or of a class registered
    in ``MODEL_WRAPPERS``. An attribute named ``module`` does not make a wrapper: a model
    may well have a child layer of that name.
    """
    # Registered wrappers, as MMEngine: a user's own wrapper built by model_wrapper_cfg.
    registered = tuple(cls for cls in MODEL_WRAPPERS.module_dict.values()
                       if isinstance(cls, type))
    return isinstance(model, (DistributedDataParallel, DataParallel) + registered)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a wrapper (see :func:`is_model_wrapper`), else ``model`` itself."""
    return model.module if is_model_wrapper(model) else model


def wrap_model(model: nn.Module, device: torch.device, /, **wrapper_cfg: Any) -> nn.Module:
    """Wrap ``model`` (already on ``device``) in a ``MODEL_WRAPPERS`` wrapper.

    The wrapper is ``wrapper_cfg['type']`` (default :class:`MMDistributedDataParallel`);
    the other keys go to its constructor, i.e. to ``DistributedDataParallel``
    (``find_unused_parameters``, ``bucket_cap_mb``, ``gradient_as_bucket_view``...).
    ``device_ids`` defaults to ``[device.index]`` on CUDA, ``None`` elsewhere. DDP's
    constructor broadcasts rank 0's parameters and buffers to every rank. For
    :class:`~fengine.model.fsdp.FSDP` (``'FSDP'``, ``'MMFullyShardedDataParallel'``)
    ``device`` is where the shards go, and ``model`` may be on ``meta``.
    """
    cfg = dict(wrapper_cfg)
    cfg.setdefault('type', 'MMDistributedDataParallel')
    if is_fsdp_config(cfg):
        cfg.setdefault('device', device)  # FSDP allocates the shards there
    else:
        cfg.setdefault('device_ids', [device.index] if device.type == 'cuda' else None)
    return MODEL_WRAPPERS.build(cfg, default_args=dict(module=model))
