"""fengine: MMEngine's model API on a functional, compiled core.

``import fengine`` does not import torch: the config, fileio, logging, registry and
utils names are plain Python and load with the package, so a command line such as
``python -m fengine.train --help`` answers at once. The subpackages that need torch
(``fengine.runner``, ``fengine.model``, ...) and ``fengine.Runner`` load on first use,
and each registry imports the modules holding fengine's own entries the first time it
looks a name up (its ``locations``).
"""
from __future__ import annotations

import importlib
from typing import Any

from . import config, fileio, logging, registry, utils
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

# Subpackages loaded on first attribute access (each imports torch).
_LAZY_MODULES = ('analysis', 'checkpoint', 'dataset', 'datasets', 'dist', 'evaluator', 'func',
                 'hooks', 'kernels', 'model', 'optim', 'presets', 'runner', 'structures',
                 'visualization')
# Names re-exported from a lazily loaded subpackage.
_LAZY_NAMES = {'Runner': 'runner'}

# As ``from mmengine import X``: the config, fileio, logging, registry and utils names.
__all__ = ['__version__', 'version_info', 'Runner', 'config', 'dist', 'evaluator', 'fileio',
           'func', 'hooks', 'logging', 'model', 'optim', 'registry', 'runner', 'utils',
           'visualization', 'Config', 'ConfigDict', 'DictAction', 'read_base', 'dump', 'load',
           'print_log', 'ManagerMeta', 'ManagerMixin', *registry.__all__]


def __getattr__(name: str) -> Any:
    # PEP 562: runs only for names the module does not have yet. Importing a
    # subpackage sets it as an attribute, so each is looked up here once.
    if name in _LAZY_MODULES:
        return importlib.import_module(f'{__name__}.{name}')
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f'{__name__}.{_LAZY_NAMES[name]}'), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))
