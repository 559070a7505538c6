"""Hooks: code the Runner calls at fixed points of a run (MMEngine: ``mmengine.hooks``)."""
from .checkpoint_hook import CheckpointHook
from .hook import PRIORITIES, Hook, get_priority
from .iter_timer_hook import IterTimerHook
from .logger_hook import LoggerHook
from .param_scheduler_hook import ParamSchedulerHook
from .runtime_info_hook import RuntimeInfoHook
from .sampler_seed_hook import DistSamplerSeedHook

__all__ = ['Hook', 'PRIORITIES', 'get_priority', 'IterTimerHook', 'LoggerHook',
           'ParamSchedulerHook', 'CheckpointHook', 'DistSamplerSeedHook',
           'RuntimeInfoHook']
