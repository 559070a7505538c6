"""Optimizer wrappers from configs (MMEngine: ``build_optim_wrapper`` and its constructor).

Importing this module registers every optimizer class of ``torch.optim`` in
``fengine.registry.OPTIMIZERS``, so ``dict(type='SGD', lr=0.01)`` builds.
"""
from __future__ import annotations

import inspect
import logging
import numbers
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.optim import Optimizer

from .._errors import choices_text, suggest
from ..logging import print_log
from ..model.wrappers import unwrap_model
from ..registry import OPTIM_WRAPPERS, OPTIMIZERS
from .amp_optim_wrapper import AmpOptimWrapper  # noqa: F401  (registers it)
from .optim_wrapper import OptimWrapper

__all__ = ['DefaultOptimWrapperConstructor', 'build_optim_wrapper',
           'register_torch_optimizers', 'TORCH_OPTIMIZERS']


def register_torch_optimizers() -> list[str]:
    """Register torch.optim's optimizers in OPTIMIZERS (MMEngine: ``register_torch_optimizers``).

    The base class ``Optimizer`` itself is left out: it cannot step. Calling this
    again registers nothing new (each name maps to the same class).

    Returns:
        The registered names.
    """
    names = []
    for name in dir(torch.optim):
        if name.startswith('_'):
            continue
        obj = getattr(torch.optim, name)
        if inspect.isclass(obj) and issubclass(obj, Optimizer) and obj is not Optimizer:
            OPTIMIZERS.register_builtin(obj, name=name)
            names.append(name)
    return names


TORCH_OPTIMIZERS = register_torch_optimizers()

# Normalization layers whose weights and biases norm_decay_mult applies to (MMEngine's
# list, plus RMSNorm where torch has it).
_NORM_TYPES: tuple[type, ...] = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm,
                                 *((nn.RMSNorm,) if hasattr(nn, 'RMSNorm') else ()))

_MULT_KEYS = ('bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult', 'dwconv_decay_mult',
              'flat_decay_mult')
PARAMWISE_KEYS = ('custom_keys', *_MULT_KEYS, 'bypass_duplicate')


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class DefaultOptimWrapperConstructor:
    """Builds a wrapper, with per-parameter options (MMEngine: ``DefaultOptimWrapperConstructor``).

    Without ``paramwise_cfg`` the optimizer gets ``model.parameters()``. With it,
    every trainable parameter gets its own group whose ``lr`` and
    ``weight_decay`` are the optimizer's (``base_lr``, ``base_wd``) times these
    options:

    - ``custom_keys``: ``{key: dict(lr_mult=..., decay_mult=..., ...)}``. A
      parameter whose dotted name contains ``key`` takes that entry and no other
      rule; of several matching keys the longest wins (ties: alphabetical first).
      Every item of the entry is also copied into the group. Names are matched
      as MMEngine does, as ``f'{module_prefix}.{param_name}'`` (a top-level
      parameter reads ``'.weight'``).
    - ``bias_lr_mult``: for biases, except those of normalization layers.
    - ``norm_decay_mult``: for weights and biases of normalization layers
      (BatchNorm, InstanceNorm, GroupNorm, LayerNorm, RMSNorm).
    - ``bias_decay_mult``: for other biases.
    - ``dwconv_decay_mult``: for depthwise ``Conv2d`` parameters
      (``in_channels == groups``).
    - ``flat_decay_mult``: for other one-dimensional parameters.
    - ``bypass_duplicate``: skip (and log) a parameter shared by two modules
      instead of letting the optimizer reject the duplicate.

    The weight-decay rules apply in this order, first match only: norm, bias,
    depthwise conv, flat. Parameters with ``requires_grad=False`` are left out
    (one log line names them).

    Args:
        optim_wrapper_cfg: ``dict(optimizer=dict(type='SGD', lr=...), type=...,
            **wrapper_args)``; ``type`` defaults to ``'OptimWrapper'``.
            ``optimizer`` may also be an already built ``torch.optim.Optimizer``
            (then without ``paramwise_cfg``).
        paramwise_cfg: The options above, or ``None``.

    Raises:
        TypeError: A config is not a dict, or an option has the wrong type.
        ValueError: ``optimizer`` is missing, an option is unknown (the message
            lists the valid keys), or a multiplier has no base ``lr`` /
            ``weight_decay`` to multiply.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> constructor = DefaultOptimWrapperConstructor(
        ...     dict(optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4)),
        ...     paramwise_cfg=dict(norm_decay_mult=0.0))
        >>> wrapper = constructor(model)
        >>> [group['weight_decay'] for group in wrapper.param_groups]
        [0.0001, 0.0001, 0.0, 0.0]
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict):
            raise TypeError(f'optim_wrapper_cfg must be a dict, but got '
                            f'{type(optim_wrapper_cfg).__name__}: {optim_wrapper_cfg!r}')
        if 'optimizer' not in optim_wrapper_cfg:
            raise ValueError("an optimizer wrapper config needs the key 'optimizer', e.g. "
                             "dict(optimizer=dict(type='SGD', lr=0.01)), but got "
                             f'{optim_wrapper_cfg!r}')
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = self.optim_wrapper_cfg.pop('optimizer')
        self.paramwise_cfg = {} if paramwise_cfg is None else paramwise_cfg
        if isinstance(self.optimizer_cfg, Optimizer):
            self.base_lr = self.base_wd = None
        elif isinstance(self.optimizer_cfg, dict):
            if 'params' in self.optimizer_cfg:
                raise ValueError("the optimizer config must not set 'params': they come "
                                 'from the model (use paramwise_cfg for per-parameter '
                                 'options)')
            self.base_lr = self.optimizer_cfg.get('lr')
            self.base_wd = self.optimizer_cfg.get('weight_decay')
        else:
            raise TypeError("'optimizer' must be a dict such as dict(type='SGD', lr=0.01) "
                            'or a torch.optim.Optimizer, but got '
                            f'{type(self.optimizer_cfg).__name__}: {self.optimizer_cfg!r}')
        self._validate_paramwise_cfg()
        # Bookkeeping of one walk of add_params: parameters added, frozen ones left out.
        self._seen: set[int] = set()
        self._frozen: list[str] = []

    def _validate_paramwise_cfg(self) -> None:
        cfg = self.paramwise_cfg
        if not isinstance(cfg, dict):
            raise TypeError(f'paramwise_cfg must be None or a dict, but got '
                            f'{type(cfg).__name__}: {cfg!r}')
        if cfg and isinstance(self.optimizer_cfg, Optimizer):
            raise ValueError('paramwise_cfg needs an optimizer config, not a built '
                             'optimizer: its parameter groups are already fixed')
        for key, value in cfg.items():
            if key == 'dcn_offset_lr_mult':
                raise ValueError("paramwise_cfg 'dcn_offset_lr_mult' is not supported: it "
                                 "applies to mmcv's deformable convolutions, which fengine "
                                 f'does not have. Valid keys: {choices_text(PARAMWISE_KEYS)}.')
            if key not in PARAMWISE_KEYS:
                raise ValueError(f'unknown paramwise_cfg key {key!r}.'
                                 f'{suggest(key, PARAMWISE_KEYS)} Valid keys: '
                                 f'{choices_text(PARAMWISE_KEYS)}.')
            if key in _MULT_KEYS and not _is_real(value):
                raise TypeError(f'paramwise_cfg {key} must be a number, but got {value!r}')
        if not isinstance(cfg.get('bypass_duplicate', False), bool):
            raise TypeError('paramwise_cfg bypass_duplicate must be a bool, but got '
                            f'{cfg["bypass_duplicate"]!r}')
        custom_keys = cfg.get('custom_keys', {})
        if not isinstance(custom_keys, dict):
            raise TypeError(f'paramwise_cfg custom_keys must be a dict of name -> dict, e.g. '
                            "{'backbone': dict(lr_mult=0.1)}, but got "
                            f'{type(custom_keys).__name__}: {custom_keys!r}')
        for key, entry in custom_keys.items():
            if not isinstance(key, str) or not isinstance(entry, dict):
                raise TypeError(f'paramwise_cfg custom_keys must map a str to a dict such as '
                                f'dict(lr_mult=0.1, decay_mult=0.9), but got {key!r}: '
                                f'{entry!r}')
            for mult in ('lr_mult', 'decay_mult'):
                if mult in entry and not _is_real(entry[mult]):
                    raise TypeError(f'custom_keys[{key!r}][{mult!r}] must be a number, '
                                    f'but got {entry[mult]!r}')
            if 'lr_mult' in entry and self.base_lr is None:
                raise ValueError(f'custom_keys[{key!r}] sets lr_mult, but the optimizer '
                                 "config has no 'lr' to multiply; set it")
            if 'decay_mult' in entry and self.base_wd is None:
                raise ValueError(f'custom_keys[{key!r}] sets decay_mult, but the optimizer '
                                 "config has no 'weight_decay' to multiply; set it")
        if 'bias_lr_mult' in cfg and self.base_lr is None:
            raise ValueError("paramwise_cfg bias_lr_mult needs the optimizer config's 'lr'; "
                             'set it')
        for key in _MULT_KEYS:
            if key.endswith('decay_mult') and key in cfg and self.base_wd is None:
                raise ValueError(f"paramwise_cfg {key} needs the optimizer config's "
                                 "'weight_decay'; set it")

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '') -> None:
        """Append a group for each parameter of ``module`` and its children to ``params``.

        Args:
            params: The parameter groups so far; extended in place.
            module: The module whose parameters to add.
            prefix: ``module``'s dotted name in the model (``''`` for the model).
        """
        cfg = self.paramwise_cfg
        custom_keys = cfg.get('custom_keys', {})
        # Longest key first; among keys of one length, alphabetical order (as MMEngine).
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
        is_norm = isinstance(module, _NORM_TYPES)
        is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
        if not prefix:  # the model itself: start the bookkeeping of this walk
            self._seen = {id(p) for group in params for p in group['params']}
            self._frozen = []

        for name, param in module.named_parameters(recurse=False):
            full_name = f'{prefix}.{name}' if prefix else name
            if id(param) in self._seen:
                # Without bypass_duplicate the optimizer rejects the duplicate itself.
                if cfg.get('bypass_duplicate', False):
                    print_log(f'{full_name} is a duplicate of a parameter already added; '
                              'skipped since bypass_duplicate=True',
                              logger='current', level=logging.WARNING)
                    continue
            if not param.requires_grad:
                self._frozen.append(full_name)
                continue
            group: dict[str, Any] = {'params': [param]}
            key = next((k for k in sorted_keys if k in f'{prefix}.{name}'), None)
            if key is not None:
                entry = custom_keys[key]
                if self.base_lr is not None:
                    group['lr'] = self.base_lr * entry.get('lr_mult', 1.0)
                if self.base_wd is not None:
                    group['weight_decay'] = self.base_wd * entry.get('decay_mult', 1.0)
                group.update(entry)
            else:
                if name == 'bias' and not is_norm and 'bias_lr_mult' in cfg:
                    group['lr'] = self.base_lr * cfg['bias_lr_mult']
                if self.base_wd is not None:
                    mult = self._decay_mult(name, param, is_norm, is_dwconv)
                    if mult is not None:
                        group['weight_decay'] = self.base_wd * mult
            params.append(group)
            self._seen.add(id(param))
            # MMEngine prints these at INFO, one line per option of every parameter;
            # DEBUG keeps a large model's log readable (the groups hold the same).
            for option, value in group.items():
                if option != 'params':
                    print_log(f'paramwise_options -- {full_name}:{option}={value}',
                              logger='current', level=logging.DEBUG)

        for child_name, child in module.named_children():
            self.add_params(params, child, f'{prefix}.{child_name}' if prefix else child_name)

    def _decay_mult(self, name: str, param: nn.Parameter, is_norm: bool,
                    is_dwconv: bool) -> float | None:
        """The first weight-decay rule that applies: norm, bias, depthwise conv, flat."""
        cfg = self.paramwise_cfg
        if is_norm and 'norm_decay_mult' in cfg:
            return cfg['norm_decay_mult']
        if name == 'bias' and 'bias_decay_mult' in cfg:
            return cfg['bias_decay_mult']
        if is_dwconv and 'dwconv_decay_mult' in cfg:
            return cfg['dwconv_decay_mult']
        if param.ndim == 1 and 'flat_decay_mult' in cfg:
            return cfg['flat_decay_mult']
        return None

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer over ``model``'s parameters and wrap it."""
        model = unwrap_model(model)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        if isinstance(self.optimizer_cfg, Optimizer):
            optimizer = self.optimizer_cfg
        else:
            optimizer_cfg = dict(self.optimizer_cfg)
            if self.paramwise_cfg:
                params: list[dict] = []
                self.add_params(params, model)
                if self._frozen:
                    print_log(f'{len(self._frozen)} parameter(s) with requires_grad=False '
                              f'are not optimized: {", ".join(self._frozen)}',
                              logger='current')
                optimizer_cfg['params'] = params
            else:
                optimizer_cfg['params'] = model.parameters()
            optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


def build_optim_wrapper(model: nn.Module, cfg: dict | OptimWrapper) -> OptimWrapper:
    """Build an optimizer wrapper for ``model`` from a config (MMEngine: ``build_optim_wrapper``).

    Args:
        model: The model to optimize (a DDP/DataParallel wrapper is unwrapped).
        cfg: An :class:`OptimWrapper`, returned as it is, or a dict:
            ``optimizer`` (an ``OPTIMIZERS`` config such as
            ``dict(type='SGD', lr=0.01)``), ``type`` (an ``OPTIM_WRAPPERS`` name or
            class; default ``'OptimWrapper'``), the wrapper's own arguments
            (``accumulative_counts``, ``clip_grad``, ``loss_scale``, ``dtype``),
            ``paramwise_cfg`` (see :class:`DefaultOptimWrapperConstructor`) and
            ``constructor`` (a class called as
            ``constructor(optim_wrapper_cfg=..., paramwise_cfg=...)(model)``;
            default :class:`DefaultOptimWrapperConstructor`).

    Raises:
        TypeError: ``cfg`` is neither a dict nor an OptimWrapper, or
            ``constructor`` is not a class.
        KeyError: An unknown optimizer or wrapper ``type`` (the message lists close
            names), or a ``constructor`` name other than
            ``'DefaultOptimWrapperConstructor'`` (fengine has no constructor
            registry: pass the class).

    Example:
        >>> from torch import nn
        >>> wrapper = build_optim_wrapper(nn.Linear(2, 1),
        ...                               dict(optimizer=dict(type='SGD', lr=1e-3)))
        >>> type(wrapper).__name__, wrapper.get_lr()
        ('OptimWrapper', {'lr': [0.001]})
    """
    if isinstance(cfg, OptimWrapper):
        return cfg
    if not isinstance(cfg, dict):
        raise TypeError(f'an optimizer wrapper config must be a dict such as '
                        "dict(optimizer=dict(type='SGD', lr=0.01)) or an OptimWrapper, but "
                        f'got {type(cfg).__name__}: {cfg!r}')
    cfg = dict(cfg)
    constructor: Any = cfg.pop('constructor', DefaultOptimWrapperConstructor)
    paramwise_cfg = cfg.pop('paramwise_cfg', None)
    if isinstance(constructor, str):
        if constructor != DefaultOptimWrapperConstructor.__name__:
            raise KeyError(f'unknown optimizer wrapper constructor {constructor!r}.'
                           f'{suggest(constructor, [DefaultOptimWrapperConstructor.__name__])}'
                           " fengine has no constructor registry: pass the class itself, "
                           "e.g. constructor=MyConstructor; the only name understood is "
                           "'DefaultOptimWrapperConstructor'.")
        constructor = DefaultOptimWrapperConstructor
    elif not callable(constructor):
        raise TypeError(f'constructor must be a class (or the name '
                        "'DefaultOptimWrapperConstructor'), but got "
                        f'{type(constructor).__name__}: {constructor!r}')
    build: Callable[[nn.Module], OptimWrapper] = constructor(
        optim_wrapper_cfg=cfg, paramwise_cfg=paramwise_cfg)
    return build(model)
