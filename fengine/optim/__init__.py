"""Optimizer wrappers, their builders and parameter schedulers (MMEngine: ``mmengine.optim``).

Importing this package registers ``OptimWrapper``, ``AmpOptimWrapper`` in
``fengine.registry.OPTIM_WRAPPERS``, every ``torch.optim`` optimizer in
``fengine.registry.OPTIMIZERS``, the two constructors in
``OPTIM_WRAPPER_CONSTRUCTORS`` and the schedulers in ``PARAM_SCHEDULERS``.
"""
from .amp_optim_wrapper import AmpOptimWrapper
from .builder import (DefaultOptimWrapperConstructor, MultiOptimWrapperConstructor,
                      build_optim_wrapper)
from .optim_wrapper import OptimWrapper
from .optim_wrapper_dict import OptimWrapperDict
from .scheduler import (GENERIC_SCHEDULERS, MOMENTUM_SCHEDULERS, ConstantLR,
                        ConstantMomentum, ConstantParamScheduler, CosineAnnealingLR,
                        CosineAnnealingMomentum, CosineAnnealingParamScheduler,
                        CosineAnnealingWarmRestarts, CosineRestartLR, CosineRestartMomentum,
                        CosineRestartParamScheduler, ExponentialLR, ExponentialMomentum,
                        ExponentialParamScheduler, LinearLR, LinearMomentum,
                        LinearParamScheduler, MultiStepLR, MultiStepMomentum,
                        MultiStepParamScheduler, OneCycleLR, OneCycleParamScheduler,
                        ParamScheduler, PolyLR, PolyMomentum, PolynomialLR,
                        PolyParamScheduler, QuadraticWarmupLR, QuadraticWarmupMomentum,
                        QuadraticWarmupParamScheduler, StepLR, StepMomentum,
                        StepParamScheduler, build_param_schedulers, build_scheduler_from_cfg)

__all__ = ['OptimWrapper', 'AmpOptimWrapper', 'OptimWrapperDict',
           'DefaultOptimWrapperConstructor', 'MultiOptimWrapperConstructor',
           'build_optim_wrapper', 'ParamScheduler', 'build_param_schedulers',
           'build_scheduler_from_cfg',
           # learning rate
           'StepLR', 'MultiStepLR', 'CosineAnnealingLR', 'LinearLR', 'OneCycleLR',
           'ExponentialLR', 'ConstantLR', 'PolynomialLR', 'CosineAnnealingWarmRestarts',
           'PolyLR', 'CosineRestartLR', 'QuadraticWarmupLR',
           # momentum and any param-group key (generated in scheduler.py)
           *MOMENTUM_SCHEDULERS, *GENERIC_SCHEDULERS]
