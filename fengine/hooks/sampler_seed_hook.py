"""``DistSamplerSeedHook``: a new shuffle every epoch (MMEngine: ``DistSamplerSeedHook``)."""
from __future__ import annotations

from ..registry import HOOKS
from .hook import Hook

__all__ = ['DistSamplerSeedHook']


@HOOKS.register_module()
class DistSamplerSeedHook(Hook):
    """Calls ``set_epoch(epoch)`` on the training sampler (or batch sampler's sampler).

    ``DistributedSampler`` and fengine's ``DefaultSampler`` derive their order from
    the seed and the epoch; without this call every epoch would see the same order.
    """

    priority = 'NORMAL'

    def before_train_epoch(self, runner) -> None:
        from ..runner.data import set_sampler_epoch

        set_sampler_epoch(runner.train_dataloader, runner.epoch)
