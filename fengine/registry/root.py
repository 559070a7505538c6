"""The root registries, one per kind of thing a config can name (MMEngine's set).

All have the scope ``'fengine'`` (configs may also call it ``'mmengine'``). A
downstream project makes children of these (``Registry('model', parent=MODELS,
scope='myproj')``) so its names are found first and fengine's after.
"""
from .build_functions import build_model_from_cfg, build_runner_from_cfg
from ._scopes import ROOT_SCOPE
from .registry import Registry

__all__ = [
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'STRATEGIES', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'OPTIMIZERS', 'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS',
    'METRICS', 'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS', 'LOG_PROCESSORS',
    'INFERENCERS', 'FUNCTIONS',
]

# `locations` name the modules holding fengine's own entries: `import fengine` does not
# import them (they need torch); a registry's first lookup does.
RUNNERS = Registry('runner', build_func=build_runner_from_cfg, scope=ROOT_SCOPE,
                   locations=['fengine.runner'])
RUNNER_CONSTRUCTORS = Registry('runner constructor', scope=ROOT_SCOPE)
LOOPS = Registry('loop', scope=ROOT_SCOPE, locations=['fengine.runner'])
HOOKS = Registry('hook', scope=ROOT_SCOPE, locations=['fengine.hooks'])
STRATEGIES = Registry('strategy', scope=ROOT_SCOPE)
DATASETS = Registry('dataset', scope=ROOT_SCOPE,
                    locations=['fengine.datasets', 'fengine.dataset'])
DATA_SAMPLERS = Registry('data sampler', scope=ROOT_SCOPE, locations=['fengine.dataset'])
TRANSFORMS = Registry('transform', scope=ROOT_SCOPE)
MODELS = Registry('model', build_func=build_model_from_cfg, scope=ROOT_SCOPE,
                  locations=['fengine.model'])
MODEL_WRAPPERS = Registry('model wrapper', scope=ROOT_SCOPE, locations=['fengine.model'])
WEIGHT_INITIALIZERS = Registry('weight initializer', scope=ROOT_SCOPE, locations=['fengine.model'])
OPTIMIZERS = Registry('optimizer', scope=ROOT_SCOPE, locations=['fengine.optim'])
OPTIM_WRAPPERS = Registry('optimizer wrapper', scope=ROOT_SCOPE, locations=['fengine.optim'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', scope=ROOT_SCOPE,
                                      locations=['fengine.optim'])


def _build_scheduler(cfg, registry, *args, **kwargs):
    # MMEngine's build function for schedulers (convert_to_iter_based); it lives with
    # the schedulers, imported on use since fengine.optim imports this module.
    from ..optim.scheduler import build_scheduler_from_cfg

    return build_scheduler_from_cfg(cfg, registry, *args, **kwargs)


PARAM_SCHEDULERS = Registry('parameter scheduler', build_func=_build_scheduler,
                            scope=ROOT_SCOPE, locations=['fengine.optim'])
METRICS = Registry('metric', scope=ROOT_SCOPE, locations=['fengine.evaluator'])
EVALUATOR = Registry('evaluator', scope=ROOT_SCOPE, locations=['fengine.evaluator'])
TASK_UTILS = Registry('task util', scope=ROOT_SCOPE)
VISUALIZERS = Registry('visualizer', scope=ROOT_SCOPE, locations=['fengine.visualization'])
VISBACKENDS = Registry('visualization backend', scope=ROOT_SCOPE,
                       locations=['fengine.visualization'])
LOG_PROCESSORS = Registry('log processor', scope=ROOT_SCOPE, locations=['fengine.runner'])
INFERENCERS = Registry('inferencer', scope=ROOT_SCOPE)
FUNCTIONS = Registry('function', scope=ROOT_SCOPE, locations=['fengine.dataset'])
