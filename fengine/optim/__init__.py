"""Optimizer wrappers and their builders (MMEngine: ``mmengine.optim``).

Importing this package registers ``OptimWrapper`` and ``AmpOptimWrapper`` in
``fengine.registry.OPTIM_WRAPPERS`` and every ``torch.optim`` optimizer in
``fengine.registry.OPTIMIZERS``.
"""
from .amp_optim_wrapper import AmpOptimWrapper
from .builder import DefaultOptimWrapperConstructor, build_optim_wrapper
from .optim_wrapper import OptimWrapper

__all__ = ['OptimWrapper', 'AmpOptimWrapper', 'DefaultOptimWrapperConstructor',
           'build_optim_wrapper']
from .scheduler import (ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts,
                        ExponentialLR, LinearLR, MultiStepLR, OneCycleLR, ParamScheduler,
                        PolynomialLR, StepLR, build_param_schedulers)

__all__ += ['ParamScheduler', 'build_param_schedulers', 'StepLR', 'MultiStepLR',
            'CosineAnnealingLR', 'LinearLR', 'OneCycleLR', 'ExponentialLR', 'ConstantLR',
            'PolynomialLR', 'CosineAnnealingWarmRestarts']
