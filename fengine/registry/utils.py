"""Looking over the registry trees, and setting the default scope (MMEngine: ``registry.utils``)."""
from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
from typing import Any

from ..logging import print_log
from . import root
from .default_scope import DefaultScope
from .registry import Registry

__all__ = ['traverse_registry_tree', 'count_registered_modules', 'init_default_scope']

# fengine's packages that register built-ins when imported.
_REGISTERING_PACKAGES = ('fengine.datasets', 'fengine.evaluator', 'fengine.hooks',
                         'fengine.model', 'fengine.optim', 'fengine.runner',
                         'fengine.visualization')


def traverse_registry_tree(registry: Registry, verbose: bool = True) -> list[dict[str, Any]]:
    """Describe every registry of ``registry``'s tree, from its root down.

    MMEngine: ``traverse_registry_tree``.

    Returns:
        One dict per registry, depth first: ``num_modules``, ``scope``, and for each
        folder of the registered objects' modules (``'fengine/hooks'``) the names
        registered from it.
    """
    if not isinstance(registry, Registry):
        raise TypeError(f'traverse_registry_tree takes a Registry, but got '
                        f'{type(registry).__name__}: {registry!r}')
    infos = []
    for node in registry.root._walk():
        info: dict[str, Any] = dict(num_modules=len(node), scope=node.scope)
        for name, obj in node.module_dict.items():
            module = getattr(obj, '__module__', None) or '<unknown>'
            folder = '/'.join(module.split('.')[:-1]) or module
            info.setdefault(folder, []).append(name)
        if verbose:
            print_log(f"Find {len(node)} modules in {node.scope}'s {node.name!r} registry",
                      logger='current')
        infos.append(info)
    return infos


def count_registered_modules(save_path: str | os.PathLike | None = None,
                             verbose: bool = True) -> dict[str, Any]:
    """Describe every tree of fengine's root registries, after importing what fills them.

    MMEngine: ``count_registered_modules``.

    Args:
        save_path: A folder to write ``modules_statistic_results.json`` into.
        verbose: Log one line per registry and the result.

    Returns:
        ``dict(scan_date=..., registries={'MODELS': [...], ...})``, each value as
        :func:`traverse_registry_tree` returns it.
    """
    for package in _REGISTERING_PACKAGES:
        importlib.import_module(package)
    registries = {}
    for name in root.__all__:
        registry = getattr(root, name)
        registry.import_from_location()
        registries[name] = traverse_registry_tree(registry, verbose)
    scan = dict(scan_date=datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S'),
                registries=registries)
    if verbose:
        print_log(f'Finish registry analysis, got: {scan}', logger='current')
    if save_path is not None:
        path = os.path.join(os.fspath(save_path), 'modules_statistic_results.json')
        with open(path, 'w', encoding='utf-8') as file:
            json.dump(scan, file, indent=2)
        print_log(f'Result has been saved to {path}', logger='current')
    return scan


def init_default_scope(scope: str) -> None:
    """Make ``scope`` the current default scope (MMEngine: ``init_default_scope``).

    Creates the :class:`DefaultScope` instance named ``scope`` if there is none; if
    another scope is current, a new instance makes ``scope`` current, with a warning.

    Raises:
        TypeError: ``scope`` is not a str.
    """
    if not isinstance(scope, str):
        raise TypeError(f'init_default_scope takes a scope name (str), but got '
                        f'{type(scope).__name__}: {scope!r}')
    current = DefaultScope.get_current_instance()
    if current is None or not DefaultScope.check_instance_created(scope):
        DefaultScope.get_instance(scope, scope_name=scope)
        return
    if current.scope_name != scope:
        print_log(f'The current default scope {current.scope_name!r} is not {scope!r}; '
                  f'init_default_scope makes {scope!r} the current one.',
                  logger='current', level=logging.WARNING)
        # A new instance: the one named ``scope`` exists but is not the newest.
        name = f'{scope}-{datetime.datetime.now().isoformat()}'
        while DefaultScope.check_instance_created(name):
            name += '+'
        DefaultScope.get_instance(name, scope_name=scope)
