"""Functions that build objects from configs (MMEngine: ``mmengine.registry.build_functions``).

A registry's ``build`` calls its ``build_func(cfg, registry, *args, **kwargs)``;
:func:`build_from_cfg` is the default, ``MODELS`` uses :func:`build_model_from_cfg`
and ``RUNNERS`` :func:`build_runner_from_cfg`.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..utils.manager import ManagerMixin
from .registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ['build_from_cfg', 'build_model_from_cfg', 'build_runner_from_cfg']


def build_from_cfg(cfg: Mapping, registry: Registry,
                   default_args: Mapping | None = None) -> Any:
    """Build an object from a config (MMEngine: ``build_from_cfg``).

    ``cfg['type']`` (or ``default_args['type']``) is a registered name, a
    ``'scope.Name'``, a dotted import path, or a class/function itself; the other
    keys, on top of ``default_args``, are its keyword arguments. ``_scope_`` makes
    that scope the default scope while the object is built. A
    :class:`~fengine.utils.ManagerMixin` class is built with ``get_instance``, so
    the object is reachable by its ``name`` afterwards.

    Args:
        cfg: A dict, ``ConfigDict`` or any mapping with ``type``.
        registry: Where ``type`` names are looked up (with the current default scope).
        default_args: Arguments ``cfg`` does not set.

    Raises:
        TypeError: ``cfg``/``default_args`` is not a mapping, ``registry`` not a
            :class:`Registry`, ``type`` neither a str nor callable, or the arguments do
            not fit the constructor (the message lists the accepted ones).
        KeyError: no ``type``, or a ``type`` that is not registered (the message lists
            close names).

    Example:
        >>> LAYERS = Registry('layer')
        >>> @LAYERS.register_module()
        ... def pair(a, b=2):
        ...     return (a, b)
        >>> build_from_cfg(dict(type='pair', a=1), LAYERS)
        (1, 2)
    """
    args = _merged_args(cfg, registry, default_args)
    scope = args.pop('_scope_', None)
    # The scope stays current while the object is built (its own builds resolve in it);
    # the name is looked up as Registry.get does: the current scope's registry first,
    # then this registry and its parents.
    with registry.switch_scope_and_registry(scope):
        obj_cls = resolve_type(args.pop('type'), registry)
        return _instantiate(obj_cls, args, cfg)


def build_model_from_cfg(cfg: Mapping | list, registry: Registry,
                         default_args: Mapping | None = None) -> nn.Module:
    """Build a model; a list of configs builds a :class:`fengine.model.Sequential` of them.

    MMEngine: ``build_model_from_cfg`` (the build function of ``MODELS``).
    """
    if isinstance(cfg, list):
        # Imported here: fengine.model imports the registry, not the other way round.
        from ..model import Sequential
        return Sequential(*[build_from_cfg(c, registry, default_args) for c in cfg])
    return build_from_cfg(cfg, registry, default_args)


def build_runner_from_cfg(cfg: Mapping, registry: Registry) -> Any:
    """Build a runner with its class's ``from_cfg`` (MMEngine: ``build_runner_from_cfg``).

    ``runner_type`` (a registered name or a class, default ``'Runner'``) picks the
    class; it and ``_scope_`` are not passed on. The build function of ``RUNNERS``.

    Raises:
        TypeError: ``cfg`` is not a mapping, ``runner_type`` neither a str nor a class,
            or the class has no ``from_cfg``.
        KeyError: ``runner_type`` is not registered.
    """
    _check_cfg(cfg, registry)
    scope = cfg.get('_scope_')
    runner_type = cfg.get('runner_type', 'Runner')
    args = _without(cfg, ('_scope_', 'runner_type'))
    with registry.switch_scope_and_registry(scope) as scoped:
        if isinstance(runner_type, str):
            runner_cls = scoped.get(runner_type)
        elif inspect.isclass(runner_type):
            runner_cls = runner_type
        else:
            raise TypeError(f'runner_type must be a registered name or a class, but got '
                            f'{type(runner_type).__name__}: {runner_type!r}')
        if not callable(getattr(runner_cls, 'from_cfg', None)):
            raise TypeError(f'runner_type {runner_cls!r} has no from_cfg(cfg) to build it '
                            'from a config; subclass fengine.runner.Runner')
        return runner_cls.from_cfg(args)


def _check_cfg(cfg: Any, registry: Any) -> None:
    if not isinstance(registry, Registry):
        raise TypeError(f'registry must be a fengine Registry, but got '
                        f'{type(registry).__name__}: {registry!r}')
    if not isinstance(cfg, Mapping):
        raise TypeError(f'a {registry.name} config must be a dict (or another mapping, such '
                        f'as a Config), but got {type(cfg).__name__}: {cfg!r}')


def _merged_args(cfg: Any, registry: Any, default_args: Any) -> dict:
    _check_cfg(cfg, registry)
    if default_args is not None and not isinstance(default_args, Mapping):
        raise TypeError(f'default_args must be a dict or None, but got '
                        f'{type(default_args).__name__}: {default_args!r}')
    args = dict(default_args or {})
    args.update(cfg)
    if 'type' not in args:
        defaults = f' and default_args {dict(default_args)!r}' if default_args else ''
        raise KeyError(f'a {registry.name} config needs the key "type", but got '
                       f'{dict(cfg)!r}{defaults}')
    return args


def resolve_type(obj_type: Any, registry: Registry) -> Any:
    """The class or function a config's ``type`` names: looked up as ``registry.get``
    does when it is a str, used as it is when it is callable."""
    if isinstance(obj_type, str):
        return registry.get(obj_type)
    if callable(obj_type):
        return obj_type
    raise TypeError(f'"type" in a {registry.name} config must be a registered name, a '
                    f'class or a function, but got {type(obj_type).__name__}: {obj_type!r}')


def _instantiate(obj_cls: Any, args: dict, cfg: Mapping) -> Any:
    try:
        signature = inspect.signature(obj_cls)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**args)
        except TypeError as exc:
            accepted = [p for p in signature.parameters
                        if signature.parameters[p].kind in (
                            inspect.Parameter.KEYWORD_ONLY,
                            inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            raise TypeError(f'cannot build {getattr(obj_cls, "__name__", obj_cls)} '
                            f'from {dict(cfg)!r}: {exc}. Accepted arguments: '
                            f'{", ".join(accepted) or "none"}.') from None
    if inspect.isclass(obj_cls) and issubclass(obj_cls, ManagerMixin):
        if 'name' not in args:
            raise TypeError(f'{obj_cls.__name__} instances are reached by name '
                            f'({obj_cls.__name__}.get_instance(name)), so its config needs '
                            f"'name', but got {dict(cfg)!r}")
        return obj_cls.get_instance(**args)
    return obj_cls(**args)


def _without(cfg: Mapping, keys: tuple[str, ...]) -> Mapping:
    """``cfg`` itself when it has none of ``keys`` (a Config stays a Config, with its
    text for the log), else a dict of the other items (``cfg`` is never changed)."""
    if not any(k in cfg for k in keys):
        return cfg
    return {k: v for k, v in cfg.items() if k not in keys}
