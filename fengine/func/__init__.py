"""fengine's functional core: pure functions over parameter trees.

See ``fengine/func/README.md`` for the design: purity, paths, provenance.
"""
from .apply import InitResult, apply_plan, apply_plan_, init_params
from .build import skip_init
from .compile_background import compile_in_flight, wait_for_background_compiles
from .compile_cache import compile_cache_dir
from .init import (LayerInit, TensorInit, constant, kaiming, normal, trunc_normal, uniform,
                   xavier)
from .plan import Call, Fill, InitPlan, Load, PlanEntry, config_plan, init_plan
from .rng import fold_in
from .shard import Shard, init_shards, row_shard
from .sample import (GENERATORS, Distribution, current_generator, sample, sample_into,
                     use_generator)
from .step import TrainState, TrainStep, make_train_step
from .tree import ParamSpec, ParamTree, fan_in_and_fan_out, param_tree

__all__ = [
    'ParamTree', 'ParamSpec', 'param_tree', 'fan_in_and_fan_out', 'fold_in', 'Distribution',
    'sample', 'sample_into', 'GENERATORS', 'use_generator', 'current_generator', 'TensorInit',
    'LayerInit', 'constant', 'normal', 'uniform', 'trunc_normal', 'xavier', 'kaiming',
    'InitPlan', 'PlanEntry', 'Fill', 'Load', 'Call', 'init_plan', 'config_plan', 'InitResult',
    'apply_plan', 'apply_plan_', 'init_params', 'skip_init', 'TrainState', 'TrainStep',
    'make_train_step', 'Shard', 'row_shard', 'init_shards', 'compile_cache_dir',
    'compile_in_flight', 'wait_for_background_compiles'
]
