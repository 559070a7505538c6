"""Registries that map config names to classes (MMEngine: ``mmengine.registry``).

Deliberately thin: one flat name table per registry, explicit imports, no scopes
and no frame inspection. A miss names the registry, the missing name and the
closest registered names.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterator

from .._errors import suggest

__all__ = ['Registry', 'build_from_cfg']


class Registry:
    """A name -> class (or function) table (MMEngine: ``Registry``).

    Args:
        name: What the registry holds, used in messages (e.g. ``'weight initializer'``).
        build_func: Builds an object from a config; defaults to :func:`build_from_cfg`.

    Example:
        >>> LAYERS = Registry('layer')
        >>> @LAYERS.register_module()
        ... class Conv: ...
        >>> LAYERS.build(dict(type='Conv')).__class__.__name__
        'Conv'
    """

    def __init__(self, name: str, build_func: Callable[..., Any] | None = None) -> None:
        self.name = name
        self._module_dict: dict[str, Any] = {}
        self._build_func = build_func or build_from_cfg

    @property
    def module_dict(self) -> dict[str, Any]:
        """The registered objects by name (a copy)."""
        return dict(self._module_dict)

    def __len__(self) -> int:
        return len(self._module_dict)

    def __contains__(self, name: object) -> bool:
        return name in self._module_dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._module_dict)

    def __repr__(self) -> str:
        names = ', '.join(self._module_dict) or '(empty)'
        return f'Registry(name={self.name!r}, {len(self)} items: {names})'

    def get(self, name: str) -> Any:
        """Return the object registered under ``name``.

        Raises:
            KeyError: ``name`` is not registered; the message lists close names.
        """
        try:
            return self._module_dict[name]
        except KeyError:
            raise KeyError(self._missing_message(name)) from None

    def _missing_message(self, name: object) -> str:
        close = suggest(str(name), self._module_dict)
        registered = ', '.join(sorted(self._module_dict)) or 'nothing yet'
        return (f'{name!r} is not in the {self.name} registry.{close} '
                f'Registered: {registered}.')

    def register_module(self,
                        name: str | list[str] | None = None,
                        force: bool = False,
                        module: Any = None) -> Any:
        """Register a class or function, as a decorator or a call.

        Args:
            name: The name (or names) to register under; defaults to ``module.__name__``.
            force: Replace an object already registered under the same name.
            module: The object; when ``None`` a decorator is returned.

        Raises:
            KeyError: The name is taken and ``force`` is False.
            TypeError: ``name`` is not a str or a list of str.
        """
        if not isinstance(force, bool):
            raise TypeError(f'force must be a bool, but got {type(force).__name__}')
        if not (name is None or isinstance(name, str)
                or (isinstance(name, list) and all(isinstance(n, str) for n in name))):
            raise TypeError(
                f'name must be None, a str or a list of str, but got {name!r}')

        def _register(obj: Any) -> Any:
            if not callable(obj):
                raise TypeError(f'only classes and functions can be registered in the '
                                f'{self.name} registry, but got {obj!r}')
            names = [obj.__name__] if name is None else (
                [name] if isinstance(name, str) else name)
            for key in names:
                if not force and key in self._module_dict and self._module_dict[key] is not obj:
                    raise KeyError(f'{key!r} is already registered in the {self.name} '
                                   f'registry as {self._module_dict[key]!r}; pass '
                                   'force=True to replace it.')
            for key in names:
                self._module_dict[key] = obj
            return obj

        if module is not None:
            return _register(module)
        return _register

    def build(self, cfg: dict, *args: Any, **kwargs: Any) -> Any:
        """Build an object from ``cfg`` (a dict with ``type``)."""
        return self._build_func(cfg, self, *args, **kwargs)


def build_from_cfg(cfg: dict, registry: Registry, default_args: dict | None = None) -> Any:
    """Build an object from a config dict (MMEngine: ``build_from_cfg``).

    ``cfg['type']`` is a registered name or a class/function; the remaining keys,
    on top of ``default_args``, are passed as keyword arguments.

    Raises:
        TypeError: ``cfg`` is not a dict, or ``type`` is neither a str nor callable,
            or the arguments do not fit the constructor (the message names them).
        KeyError: ``type`` is missing or not registered (the message lists close names).
    """
    if not isinstance(cfg, dict):
        raise TypeError(f'a {registry.name} config must be a dict, but got '
                        f'{type(cfg).__name__}: {cfg!r}')
    args = dict(default_args or {})
    args.update(cfg)
    if 'type' not in args:
        raise KeyError(f'a {registry.name} config needs the key "type", but got {cfg!r}')
    obj_type = args.pop('type')
    if isinstance(obj_type, str):
        obj_cls = registry.get(obj_type)
    elif callable(obj_type):
        obj_cls = obj_type
    else:
        raise TypeError(f'"type" in a {registry.name} config must be a str or a class, '
                        f'but got {type(obj_type).__name__}: {obj_type!r}')
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
                            f'from {cfg!r}: {exc}. Accepted arguments: '
                            f'{", ".join(accepted) or "none"}.') from None
    return obj_cls(**args)
