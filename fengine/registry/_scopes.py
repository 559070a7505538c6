"""Scope names, and the modules that naming a scope or a dotted path imports."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ['ROOT_SCOPE', 'SCOPE_ALIASES', 'canonical_scope', 'import_object',
           'import_scope_registry', 'missing_module']

#: The scope of fengine's root registries.
ROOT_SCOPE = 'fengine'
#: Scope names that mean another scope. Configs of MMEngine projects name the root
#: registries' scope ``'mmengine'`` (``type='mmengine.RReLU'``, ``_scope_='mmengine'``,
#: ``default_scope='mmengine'``); a config is data, not an import, so renaming imports
#: does not reach it.
SCOPE_ALIASES = {'mmengine': ROOT_SCOPE}


def canonical_scope(scope: str | None) -> str | None:
    """``scope`` with an alias replaced by the scope it means."""
    return SCOPE_ALIASES.get(scope, scope) if scope is not None else None


def missing_module(exc: ModuleNotFoundError, module: str) -> bool:
    """Whether ``exc`` says ``module`` itself (or a package above it) does not exist,
    rather than a module that ``module`` imports."""
    return exc.name is not None and (module == exc.name or module.startswith(exc.name + '.'))


def import_scope_registry(scope: str) -> bool:
    """Import ``<scope>.registry`` if there is one; whether it was imported."""
    scope = canonical_scope(scope)
    if not scope.isidentifier():
        return False
    module = f'{scope}.registry'
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if missing_module(exc, module):
            return False
        raise
    return True


def import_object(path: str) -> Any:
    """The callable a dotted path names (``'torch.nn.ReLU'``), or ``None``.

    MMEngine configs written with lazy imports name classes by path; a path under
    ``mmengine`` names the same object under ``fengine``.
    """
    parts = path.split('.')
    if parts[0] in SCOPE_ALIASES:
        parts[0] = SCOPE_ALIASES[parts[0]]
    if not all(p.isidentifier() for p in parts):
        return None
    for split in range(len(parts) - 1, 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if missing_module(exc, module_name):
                continue
            raise
        for attr in parts[split:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        return obj if obj is not None and callable(obj) else None
    return None
