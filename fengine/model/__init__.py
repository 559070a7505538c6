"""Modules with configurable initialization (MMEngine: ``mmengine.model``)."""
from .averaged_model import (BaseAveragedModel, ExponentialMovingAverage, MomentumAnnealingEMA,
                             StochasticWeightAverage)
from .base_model import BaseModel
from .base_module import BaseModule, ModuleDict, ModuleList, Sequential
from .data_preprocessor import BaseDataPreprocessor, ImgDataPreprocessor, stack_batch
from .weight_init import (BaseInit, Caffe2XavierInit, ConstantInit, KaimingInit, NormalInit,
                          PretrainedInit, TruncNormalInit, UniformInit, XavierInit,
                          bias_init_with_prob, caffe2_xavier_init, constant_init, initialize,
                          kaiming_init, normal_init, trunc_normal_init, uniform_init,
                          xavier_init)
from .test_time_aug import BaseTTAModel
from .fsdp import FSDP, MMFullyShardedDataParallel
from .wrappers import MMDistributedDataParallel, is_model_wrapper, unwrap_model

__all__ = [
    'BaseModule', 'BaseModel', 'BaseTTAModel', 'BaseDataPreprocessor', 'ImgDataPreprocessor',
    'stack_batch', 'Sequential', 'ModuleList', 'ModuleDict', 'initialize', 'BaseInit',
    'ConstantInit', 'XavierInit', 'NormalInit', 'TruncNormalInit', 'UniformInit',
    'KaimingInit', 'Caffe2XavierInit', 'PretrainedInit', 'constant_init', 'xavier_init',
    'normal_init', 'trunc_normal_init', 'uniform_init', 'kaiming_init', 'caffe2_xavier_init',
    'bias_init_with_prob', 'MMDistributedDataParallel', 'is_model_wrapper', 'unwrap_model',
    'BaseAveragedModel', 'ExponentialMovingAverage', 'MomentumAnnealingEMA',
    'StochasticWeightAverage', 'FSDP', 'MMFullyShardedDataParallel',
]
