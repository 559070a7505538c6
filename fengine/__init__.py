"""fengine: MMEngine's model API on a functional, compiled core."""
from . import config, fileio, func, logging, model, optim, registry, utils
from .config import Config, ConfigDict, DictAction, read_base
from .fileio import dump, load
from .logging import print_log
from .registry import (DATA_SAMPLERS, DATASETS, EVALUATOR, FUNCTIONS, HOOKS, INFERENCERS,
                       LOG_PROCESSORS, LOOPS, METRICS, MODEL_WRAPPERS, MODELS,
                       OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS,
                       RUNNER_CONSTRUCTORS, RUNNERS, STRATEGIES, TASK_UTILS, TRANSFORMS,
                       VISBACKENDS, VISUALIZERS, WEIGHT_INITIALIZERS, DefaultScope, Registry,
                       build_from_cfg, build_model_from_cfg, build_runner_from_cfg,
                       count_registered_modules, init_default_scope, traverse_registry_tree)
from .utils import ManagerMeta, ManagerMixin

__version__ = '0.1.0'
version_info = tuple(int(part) for part in __version__.split('.'))

# After __version__: the runner's checkpoints record it. Importing the runner brings
# its parts (dist, evaluator, hooks, visualization); fengine.datasets and fengine.kernels
# are imported on demand.
from . import dist, evaluator, hooks, runner, visualization  # noqa: E402
from .runner import Runner  # noqa: E402

# As ``from mmengine import X``: the config, fileio, logging, registry and utils names.
__all__ = ['__version__', 'version_info', 'Runner', 'config', 'dist', 'evaluator', 'fileio',
           'func', 'hooks', 'logging', 'model', 'optim', 'registry', 'runner', 'utils',
           'visualization', 'Config', 'ConfigDict', 'DictAction', 'read_base', 'dump', 'load',
           'print_log', 'ManagerMeta', 'ManagerMixin', *registry.__all__]
