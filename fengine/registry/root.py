"""The root registries, one per kind of thing a config can name (MMEngine's set).

A downstream project makes children of these (``Registry('model', parent=MODELS,
scope='myproj')``) so its names are found first and fengine's after.
"""
from .registry import Registry

__all__ = [
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'STRATEGIES', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS',
    'METRICS', 'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS', 'LOG_PROCESSORS',
    'INFERENCERS', 'FUNCTIONS',
]

RUNNERS = Registry('runner')
RUNNER_CONSTRUCTORS = Registry('runner constructor')
LOOPS = Registry('loop')
HOOKS = Registry('hook')
STRATEGIES = Registry('strategy')
DATASETS = Registry('dataset')
DATA_SAMPLERS = Registry('data sampler')
TRANSFORMS = Registry('transform')
MODELS = Registry('model')
MODEL_WRAPPERS = Registry('model wrapper')
WEIGHT_INITIALIZERS = Registry('weight initializer')
OPTIMIZERS = Registry('optimizer')
OPTIM_WRAPPERS = Registry('optimizer wrapper')
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor')


def _build_scheduler(cfg, registry, *args, **kwargs):
    # MMEngine's build function for schedulers (convert_to_iter_based); it lives with
    # the schedulers, imported on use since fengine.optim imports this module.
    from ..optim.scheduler import build_scheduler_from_cfg

    return build_scheduler_from_cfg(cfg, registry, *args, **kwargs)


PARAM_SCHEDULERS = Registry('parameter scheduler', build_func=_build_scheduler)
METRICS = Registry('metric')
EVALUATOR = Registry('evaluator')
TASK_UTILS = Registry('task util')
VISUALIZERS = Registry('visualizer')
VISBACKENDS = Registry('visualization backend')
LOG_PROCESSORS = Registry('log processor')
INFERENCERS = Registry('inferencer')
FUNCTIONS = Registry('function')
