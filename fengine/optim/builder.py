"""Optimizer wrappers from configs (MMEngine: ``build_optim_wrapper`` and its constructor).

Importing this module registers every optimizer class of ``torch.optim`` in
``fengine.registry.OPTIMIZERS``, so ``dict(type='SGD', lr=0.01)`` builds.
"""
from __future__ import annotations

import inspect
import logging
import numbers
import re
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.optim import Optimizer

from .._errors import choices_text, suggest
from ..logging import print_log
from ..model.wrappers import unwrap_model
from ..registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from .amp_optim_wrapper import AmpOptimWrapper  # noqa: F401  (registers it)
from .optim_wrapper import OptimWrapper
from .optim_wrapper_dict import OptimWrapperDict

__all__ = ['DefaultOptimWrapperConstructor', 'MultiOptimWrapperConstructor',
           'build_optim_wrapper', 'register_torch_optimizers', 'TORCH_OPTIMIZERS']


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


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
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

    A subclass (a user's constructor, as in MMEngine's tutorial 'OptimWrapper') may
    take ``paramwise_cfg`` keys of its own: only this class itself rejects a key it
    does not know.

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
        >>> [group['weight_decay'] for group in wrapper.optimizer.param_groups]
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
            # A subclass (a user's constructor) defines keys of its own; the default
            # constructor itself knows all it takes.
            if key not in PARAMWISE_KEYS and type(self) is DefaultOptimWrapperConstructor:
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


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MultiOptimWrapperConstructor:
    """One optimizer wrapper per named part of a model, as an :class:`OptimWrapperDict`.

    MMEngine projects take it from MMagic/MMGeneration (``MultiOptimWrapperConstructor``):
    ``optim_wrapper=dict(constructor='MultiOptimWrapperConstructor',
    generator=dict(optimizer=dict(type='Adam', lr=2e-4)), discriminator=dict(...))``.
    Each name is the submodule to optimize (``model.generator``; a dotted path
    works too), unless its config names the parts in ``modules``: a name or a list
    of names, each a child of the model or a regular expression matched in full
    against the dotted names of its submodules. Each entry is built as
    :func:`build_optim_wrapper` builds a single config (its own ``type``,
    ``constructor`` and ``paramwise_cfg``; no ``paramwise_cfg`` with ``modules``),
    or may be a built :class:`OptimWrapper`.

    :func:`build_optim_wrapper` picks this constructor for a config without
    ``optimizer`` and ``constructor`` whose values are all configs (MMEngine asks
    for the constructor by name).

    Args:
        optim_wrapper_cfg: The configs (or wrappers) by optimizer name.
        paramwise_cfg: Must be ``None``: each entry has its own.

    Raises:
        TypeError: ``optim_wrapper_cfg`` is not a dict of dicts/wrappers.
        ValueError: ``paramwise_cfg`` is given, or ``optim_wrapper_cfg`` is a single
            optimizer's config.
        KeyError: (on call) a name or ``modules`` entry matches no submodule; the
            message lists the model's children.

    Example:
        >>> from torch import nn
        >>> model = nn.Module()
        >>> model.generator, model.discriminator = nn.Linear(4, 4), nn.Linear(4, 1)
        >>> wrappers = MultiOptimWrapperConstructor(dict(
        ...     generator=dict(optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999))),
        ...     discriminator=dict(optimizer=dict(type='SGD', lr=0.01))))(model)
        >>> sorted(wrappers.keys()), wrappers.get_lr()['generator.lr']
        (['discriminator', 'generator'], [0.0002])
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        if not isinstance(optim_wrapper_cfg, dict):
            raise TypeError(f'optim_wrapper_cfg must be a dict of configs by optimizer name, '
                            f'but got {type(optim_wrapper_cfg).__name__}: '
                            f'{optim_wrapper_cfg!r}')
        if paramwise_cfg is not None:
            raise ValueError('MultiOptimWrapperConstructor takes paramwise_cfg in each '
                             "optimizer's config, e.g. generator=dict(optimizer=..., "
                             f'paramwise_cfg=...), not for all of them; got {paramwise_cfg!r}')
        if 'optimizer' in optim_wrapper_cfg:
            raise ValueError('MultiOptimWrapperConstructor takes one config per optimizer name '
                             "(dict(generator=dict(optimizer=...), discriminator=...)), but got "
                             "a single optimizer's config (it has the key 'optimizer'); use "
                             'the default constructor for it.')
        for name, entry in optim_wrapper_cfg.items():
            if not isinstance(entry, (dict, OptimWrapper)):
                raise TypeError(f'MultiOptimWrapperConstructor: the entry {name!r} must be an '
                                'optimizer wrapper config such as dict(optimizer=dict('
                                f"type='Adam', lr=1e-4)) or an OptimWrapper, but got "
                                f'{type(entry).__name__}: {entry!r}')
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapperDict:
        """Build every entry's wrapper over its part of ``model``."""
        model = unwrap_model(model)
        wrappers = {}
        for name, entry in self.optim_wrapper_cfg.items():
            if isinstance(entry, OptimWrapper):
                wrappers[name] = entry
                continue
            cfg = dict(entry)
            modules = cfg.pop('modules', None)
            if modules is None:
                wrappers[name] = build_optim_wrapper(_submodule(model, name, name), cfg)
                print_log(f"optimizer {name!r}: the parameters of {name!r}", logger='current',
                          level=logging.DEBUG)
                continue
            if cfg.get('paramwise_cfg'):
                raise ValueError(f'optimizer {name!r}: paramwise_cfg cannot be combined with '
                                 'modules (several parts in one optimizer); give each part '
                                 'its own optimizer, or drop paramwise_cfg.')
            cfg.pop('paramwise_cfg', None)
            holder = nn.Module()  # the named parts, under one module for the constructor
            for index, module in enumerate(_modules_named(model, name, modules)):
                holder.add_module(str(index), module)
            wrappers[name] = build_optim_wrapper(holder, cfg)
        return OptimWrapperDict(**wrappers)


def _submodule(model: nn.Module, path: str, name: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        children = [child for child, _ in model.named_children()]
        raise KeyError(f'optimizer {name!r}: {type(model).__name__} has no submodule {path!r} '
                       f'to optimize.{suggest(path, children)} Its children: '
                       f'{choices_text(children)}; or name the parts with '
                       "modules=['...'].") from None


def _modules_named(model: nn.Module, name: str, modules: Any) -> list[nn.Module]:
    """The children named in ``modules``, or the submodules whose dotted name fully matches."""
    patterns = [modules] if isinstance(modules, str) else modules
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f'optimizer {name!r}: modules must be a name or a list of names, but '
                        f'got {modules!r}')
    found: list[nn.Module] = []
    for pattern in patterns:
        children = dict(model.named_children())
        if pattern in children:
            matched = [children[pattern]]
        else:
            matched = [module for path, module in model.named_modules()
                       if path and re.fullmatch(pattern, path)]
        if not matched:
            raise KeyError(f'optimizer {name!r}: modules entry {pattern!r} matches no '
                           f'submodule of {type(model).__name__}; its children: '
                           f'{choices_text(children)}.')
        found += [module for module in matched if all(module is not m for m in found)]
    return found


# Keys of one wrapper's config: a config with any of them is not one by optimizer name.
_SINGLE_KEYS = ('optimizer', 'constructor', 'type', 'paramwise_cfg', 'clip_grad',
                'accumulative_counts', 'loss_scale', 'dtype')


def _dict_of_wrappers(cfg: dict) -> bool:
    """Whether ``cfg`` lists optimizers by name (none of one wrapper's keys, all dicts)."""
    return (bool(cfg) and not any(key in cfg for key in _SINGLE_KEYS)
            and all(isinstance(v, (dict, OptimWrapper)) for v in cfg.values()))


def build_optim_wrapper(model: nn.Module, cfg: dict | OptimWrapper) -> OptimWrapper:
    """Build an optimizer wrapper for ``model`` from a config (MMEngine: ``build_optim_wrapper``).

    Args:
        model: The model to optimize (a DDP/DataParallel wrapper is unwrapped).
        cfg: An :class:`OptimWrapper` (or :class:`OptimWrapperDict`), returned as it
            is, or a dict: ``optimizer`` (an ``OPTIMIZERS`` config such as
            ``dict(type='SGD', lr=0.01)``), ``type`` (an ``OPTIM_WRAPPERS`` name or
            class; default ``'OptimWrapper'``), the wrapper's own arguments
            (``accumulative_counts``, ``clip_grad``, ``loss_scale``, ``dtype``),
            ``paramwise_cfg`` (see :class:`DefaultOptimWrapperConstructor`) and
            ``constructor`` (an ``OPTIM_WRAPPER_CONSTRUCTORS`` name or a class, called
            as ``constructor(optim_wrapper_cfg=..., paramwise_cfg=...)(model)``;
            default ``'DefaultOptimWrapperConstructor'``). A custom constructor gets
            ``paramwise_cfg`` as it is: the keys it understands are its own. Several
            optimizers: a dict of such configs (or of built wrappers) by name, built
            by :class:`MultiOptimWrapperConstructor` into an :class:`OptimWrapperDict`.

    Raises:
        TypeError: ``cfg`` is neither a dict nor an OptimWrapper, or
            ``constructor`` is neither a name nor callable.
        KeyError: An unknown optimizer, wrapper or constructor name (the message
            lists close names).

    Example:
        >>> from torch import nn
        >>> wrapper = build_optim_wrapper(nn.Linear(2, 1),
        ...                               dict(optimizer=dict(type='SGD', lr=1e-3)))
        >>> type(wrapper).__name__, wrapper.get_lr()
        ('OptimWrapper', {'lr': [0.001]})
    """
    if isinstance(cfg, OptimWrapper):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f'an optimizer wrapper config must be a dict such as '
                        "dict(optimizer=dict(type='SGD', lr=0.01)) or an OptimWrapper, but "
                        f'got {type(cfg).__name__}: {cfg!r}')
    cfg = dict(cfg)
    if _dict_of_wrappers(cfg):
        if all(isinstance(v, OptimWrapper) for v in cfg.values()):
            return OptimWrapperDict(**cfg)
        return MultiOptimWrapperConstructor(cfg)(model)
    constructor: Any = cfg.pop('constructor', 'DefaultOptimWrapperConstructor')
    paramwise_cfg = cfg.pop('paramwise_cfg', None)
    if not isinstance(constructor, str) and not callable(constructor):
        raise TypeError(f'constructor must be a class or a name in OPTIM_WRAPPER_CONSTRUCTORS '
                        "(such as 'DefaultOptimWrapperConstructor'), but got "
                        f'{type(constructor).__name__}: {constructor!r}')
    if constructor == 'MultiOptimWrapperConstructor' or constructor is MultiOptimWrapperConstructor:
        return MultiOptimWrapperConstructor(cfg, paramwise_cfg)(model)
    build: Callable[[nn.Module], OptimWrapper] = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type=constructor, optim_wrapper_cfg=cfg, paramwise_cfg=paramwise_cfg))
    return build(model)
