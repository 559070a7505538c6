"""A registry: names -> classes or functions, in a tree of scopes (MMEngine: ``Registry``).

A registry maps the ``type`` strings of configs to classes and functions. Registries
form trees: a project makes children of fengine's root registries
(``Registry('model', parent=MODELS, scope='myproj')``); a child finds its own names
first, then its parent's; ``'scope.Name'`` reaches the registry of that scope anywhere
in the tree; a current :class:`~fengine.registry.DefaultScope` makes bare names resolve
in the registry of that scope first.

Two rules differ from MMEngine on purpose (see ``docs/migrating.md``):

- No frame inspection: a registry's scope is its ``scope`` argument, else the top
  package of its first location (``locations=['mmdet.models']`` -> ``'mmdet'``), else
  it has none.
- fengine's own registrations never block a user's: an entry registered by fengine
  (its object is defined in a ``fengine`` module, or it was added with
  :meth:`Registry.register_builtin`) is replaced by a user's registration of the same
  name, with an INFO line; two registrations by users still clash unless ``force=True``.
"""
from __future__ import annotations

import difflib
import importlib
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from ..logging import print_log
from ._scopes import (ROOT_SCOPE, canonical_scope, import_object, import_scope_registry,
                      missing_module)
from .default_scope import DefaultScope

__all__ = ['Registry']


def _defined_in_fengine(obj: object) -> bool:
    module = getattr(obj, '__module__', None) or ''
    return module == ROOT_SCOPE or module.startswith(ROOT_SCOPE + '.')


def _qualname(obj: object) -> str:
    name = getattr(obj, '__qualname__', None) or getattr(obj, '__name__', None)
    if name is None:
        return repr(obj)
    module = getattr(obj, '__module__', None)
    return f'{module}.{name}' if module else name


class Registry:
    """Maps names to classes or functions and builds objects from configs.

    MMEngine: ``mmengine.registry.Registry``.

    Args:
        name: What the registry holds, used in messages (e.g. ``'model'``).
        build_func: Builds an object: ``build_func(cfg, registry, *args, **kwargs)``.
            Defaults to the parent's, or :func:`~fengine.registry.build_from_cfg`.
        parent: The registry this one falls back to; this one becomes its child.
        scope: The key that finds this registry in its tree (``'myproj.Name'``,
            ``_scope_='myproj'``, a default scope). Defaults to the top package of the
            first of ``locations``; without either the registry has no scope: it still
            falls back to its parent, but the tree cannot find it by scope.
        locations: Modules imported the first time the registry looks a name up, so
            that the classes they register are there (``['myproj.models']``).

    Raises:
        TypeError: an argument of the wrong type (named in the message).
        ValueError: ``scope`` is empty or holds a ``'.'``, or ``parent`` already has a
            child of that scope.

    Example:
        >>> LAYERS = Registry('layer')
        >>> @LAYERS.register_module()
        ... class Conv: ...
        >>> LAYERS.build(dict(type='Conv')).__class__.__name__
        'Conv'
        >>> CONVS = Registry('conv', parent=LAYERS, scope='convs')
        >>> CONVS.get('Conv') is LAYERS.get('Conv')
        True
    """

    def __init__(self,
                 name: str,
                 build_func: Callable[..., Any] | None = None,
                 parent: Registry | None = None,
                 scope: str | None = None,
                 locations: Sequence[str] | None = None) -> None:
        from .build_functions import build_from_cfg

        if not isinstance(name, str) or not name:
            raise TypeError(f'a registry name must be a non-empty str, but got {name!r}')
        locations = _check_locations(name, locations)
        if scope is None:
            scope = self.infer_scope(locations)
        elif not isinstance(scope, str):
            raise TypeError(f'the scope of the {name} registry must be a str or None, but got '
                            f'{type(scope).__name__}: {scope!r}')
        elif not scope or '.' in scope:
            raise ValueError(f'the scope of the {name} registry must be a non-empty name '
                             f"without '.', since 'scope.Name' splits at the first '.'; "
                             f'got {scope!r}')
        if parent is not None and not isinstance(parent, Registry):
            raise TypeError(f'the parent of the {name} registry must be a Registry, but got '
                            f'{type(parent).__name__}: {parent!r}')
        if build_func is not None and not callable(build_func):
            raise TypeError(f'build_func of the {name} registry must be callable, but got '
                            f'{build_func!r}')
        self._name = name
        self._scope = scope
        self._locations = locations
        self._imported = not locations
        self._importing = False
        self._module_dict: dict[str, Any] = {}
        # name -> the object fengine registered under it. An entry is built-in while
        # ``_module_dict[name] is _builtins[name]``, so restoring ``_module_dict`` from a
        # snapshot restores which entries are built-in as well.
        self._builtins: dict[str, Any] = {}
        self._children: dict[str, Registry] = {}
        self._unscoped_children: list[Registry] = []
        self._parent: Registry | None = None
        if parent is not None:
            parent._add_child(self)
            self._parent = parent
        self.build_func: Callable[..., Any] = (
            build_func or (parent.build_func if parent is not None else build_from_cfg))

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        """What the registry holds, e.g. ``'model'``."""
        return self._name

    @property
    def scope(self) -> str | None:
        """The key that finds this registry in its tree; ``None`` when it has none."""
        return self._scope

    @property
    def parent(self) -> Registry | None:
        """The registry this one falls back to."""
        return self._parent

    @property
    def children(self) -> dict[str, Registry]:
        """The child registries that have a scope, by scope (a copy)."""
        return dict(self._children)

    @property
    def root(self) -> Registry:
        """The registry at the top of this one's tree."""
        return self._get_root_registry()

    @property
    def module_dict(self) -> dict[str, Any]:
        """This registry's own entries by name (a copy; the parents' are not included)."""
        return dict(self._module_dict)

    @property
    def locations(self) -> tuple[str, ...]:
        """The modules imported on the first lookup."""
        return self._locations

    def __len__(self) -> int:
        return len(self._module_dict)

    def __iter__(self) -> Iterator[str]:
        return iter(self._module_dict)

    def __contains__(self, key: object) -> bool:
        """Whether :meth:`get` finds ``key`` (parents, scopes and the default scope count)."""
        if not isinstance(key, str):
            return False
        return self._find(key)[0] is not None

    def __repr__(self) -> str:
        names = ', '.join(self._module_dict) or '(empty)'
        scope = f', scope={self._scope!r}' if self._scope is not None else ''
        return f'Registry(name={self._name!r}{scope}, {len(self)} items: {names})'

    # ------------------------------------------------------------------ scopes
    @staticmethod
    def infer_scope(locations: Sequence[str]) -> str | None:
        """The scope a registry gets from its locations: the first one's top package.

        MMEngine: ``Registry.infer_scope()`` reads the package of the caller's stack
        frame; fengine reads it from the ``locations`` the registry is given, which
        is what OpenMMLab projects pass (``locations=['mmdet.models']`` -> ``'mmdet'``).

        Returns:
            The scope, or ``None`` when there are no locations.
        """
        return locations[0].split('.', 1)[0] if locations else None

    @staticmethod
    def split_scope_key(key: str) -> tuple[str | None, str]:
        """Split ``'scope.Name'`` at the first ``'.'``: ``('scope', 'Name')``.

        A key without a ``'.'`` gives ``(None, key)``.
        """
        if not isinstance(key, str):
            raise TypeError(f'a registry key must be a str, but got {type(key).__name__}: '
                            f'{key!r}')
        scope, dot, rest = key.partition('.')
        return (scope, rest) if dot else (None, key)

    def _get_root_registry(self) -> Registry:
        registry = self
        while registry._parent is not None:
            registry = registry._parent
        return registry

    def _ancestry(self) -> list[Registry]:
        """This registry, its parent, its parent's parent, ... (the bare-name search order)."""
        chain, registry = [], self
        while registry is not None:
            chain.append(registry)
            registry = registry._parent
        return chain

    def _walk(self) -> Iterator[Registry]:
        """This registry and all below it, depth first (scoped children, then unscoped)."""
        yield self
        for child in [*self._children.values(), *self._unscoped_children]:
            yield from child._walk()

    def _search_child(self, scope: str) -> Registry | None:
        """The registry of ``scope`` in this one's subtree (itself included), or ``None``."""
        wanted = canonical_scope(scope)
        for registry in self._walk():
            if registry._scope is not None and canonical_scope(registry._scope) == wanted:
                return registry
        return None

    def _add_child(self, registry: Registry) -> None:
        if registry.scope is None:
            self._unscoped_children.append(registry)
            return
        for scope, child in self._children.items():
            if canonical_scope(scope) == canonical_scope(registry.scope):
                raise ValueError(
                    f'the {self._describe()} already has a child of scope {registry.scope!r}: '
                    f'{child!r}. A parent has one child per scope; register into that '
                    'registry, or give the new one another scope.')
        self._children[registry.scope] = registry

    def _registry_of_scope(self, scope: str, import_registry: bool = True) -> Registry | None:
        """The registry of ``scope`` in this tree (this registry's subtree first).

        With ``import_registry``, a scope the tree lacks makes it import
        ``<scope>.registry``: OpenMMLab projects create their child registries there, so
        naming a scope (``default_scope='mmdet'``, ``'mmdet.RetinaNet'``) is enough to
        reach them, as in MMEngine.
        """
        if self._scope is not None and canonical_scope(self._scope) == canonical_scope(scope):
            return self
        found = self._search_child(scope) or self.root._search_child(scope)
        if found is None and import_registry and import_scope_registry(scope):
            found = self._search_child(scope) or self.root._search_child(scope)
        return found

    @contextmanager
    def switch_scope_and_registry(self, scope: str | None) -> Iterator[Registry]:
        """Make ``scope`` the default scope in the block; yield its registry in this tree.

        MMEngine: ``Registry.switch_scope_and_registry``. With ``scope=None`` the
        current default scope is kept. Yields the registry of the (new) current default
        scope in this registry's tree, or this registry when there is no default scope
        or the tree has no registry of it.

        Raises:
            TypeError: ``scope`` is not a str or None.
        """
        if scope is not None and not isinstance(scope, str):
            raise TypeError(f'a scope (_scope_) must be a str or None, but got '
                            f'{type(scope).__name__}: {scope!r}')
        with DefaultScope.overwrite_default_scope(scope):
            current = DefaultScope.get_current_instance()
            registry = self
            if current is not None:
                found = self._registry_of_scope(current.scope_name)
                if found is not None:
                    registry = found
                elif scope is not None:
                    print_log(f'scope {scope!r} has no registry in the tree of the '
                              f'{self._describe()} (scopes: {self._tree_scopes()}); the '
                              f'{self._name} registry builds with its own names and its '
                              "parents'.", logger='current', level=logging.WARNING)
            yield registry

    # ------------------------------------------------------------------ locations
    def import_from_location(self) -> None:
        """Import this registry's ``locations`` (once; later calls do nothing).

        Raises:
            ModuleNotFoundError: a location does not exist (the message names the
                registry and the location). Other errors raised while importing a
                location propagate with a note naming it.
        """
        if self._imported or self._importing:
            return
        # A location that builds from this registry while it is imported must not
        # start the imports again.
        self._importing = True
        try:
            for location in self._locations:
                try:
                    importlib.import_module(location)
                except Exception as exc:
                    if isinstance(exc, ModuleNotFoundError) and missing_module(exc, location):
                        raise ModuleNotFoundError(
                            f'the {self._describe()} cannot import its location '
                            f'{location!r}: {exc}. Check Registry(locations=...) and that '
                            'the package is on sys.path.', name=exc.name) from exc
                    if hasattr(exc, 'add_note'):  # Python 3.11+
                        exc.add_note(f'(while the {self._describe()} imported its location '
                                     f'{location!r})')
                    raise
            self._imported = True
        finally:
            self._importing = False

    # ------------------------------------------------------------------ lookups
    def get(self, key: str) -> Any:
        """Return the class or function ``key`` names.

        MMEngine: ``Registry.get``. The search, for ``key='Name'``: the registry of the
        current default scope (if this tree has one) and its parents, then this
        registry and its parents. For ``key='scope.Name'``: the registry of ``scope``
        (anywhere in the tree, ``'mmengine'`` meaning fengine's root) and its parents;
        failing that, ``key`` as an importable dotted path (``'torch.nn.ReLU'``). Each
        registry searched first imports its ``locations``.

        Raises:
            TypeError: ``key`` is not a str.
            KeyError: nothing found; the message names the registries searched, close
                names, and where else in the tree the name is registered.
        """
        if not isinstance(key, str):
            raise TypeError(f'a {self._name} registry key must be a str, but got '
                            f'{type(key).__name__}: {key!r}')
        obj, searched, notes = self._find(key)
        if obj is None:
            raise KeyError(self._missing_message(key, searched, notes))
        return obj

    def _find(self, key: str) -> tuple[Any, list[Registry], list[str]]:
        """(the object or None, the registries searched in order, notes for a miss)."""
        scope, name = self.split_scope_key(key)
        notes: list[str] = []
        if scope is None:
            chain = _unique(self._default_scope_chain(notes) + self._ancestry())
            return _lookup(chain, name), chain, notes
        obj, chain = self._find_in_scope(scope, name, import_registry=True)
        if obj is None:
            obj = import_object(key)
        if obj is None and not chain:
            notes.append(f'no registry of scope {scope!r} is in the tree of the '
                         f'{self._describe()} (scopes: {self._tree_scopes()}), and '
                         f'{key!r} is not an importable dotted path either.')
        return obj, chain, notes

    def _find_in_scope(self, scope: str, rest: str,
                       import_registry: bool) -> tuple[Any, list[Registry]]:
        """Find ``rest`` from the registry of ``scope``: (the object or None, the
        registries searched). ``rest`` may name further scopes below it
        (``'hound.little_hound.Dachshund'``); only the first scope of a key may import
        ``<scope>.registry``, so a dotted import path does not import its parts as
        scopes."""
        target = self._registry_of_scope(scope, import_registry)
        if target is None:
            return None, []
        inner, name = self.split_scope_key(rest)
        if inner is not None:
            obj, chain = target._find_in_scope(inner, name, import_registry=False)
            if chain:
                return obj, chain
        chain = target._ancestry()
        return _lookup(chain, rest), chain

    def _default_scope_chain(self, notes: list[str]) -> list[Registry]:
        current = DefaultScope.get_current_instance()
        if current is None:
            return []
        target = self._registry_of_scope(current.scope_name)
        if target is None and any(r._scope is not None for r in self.root._walk()):
            notes.append(f'The current default scope {current.scope_name!r} has no '
                         f'{self._name} registry in this tree (scopes: '
                         f'{self._tree_scopes()}), so it was not searched.')
        return target._ancestry() if target is not None else []

    def _tree_scopes(self) -> str:
        scopes = [r._scope for r in self.root._walk() if r._scope is not None]
        return ', '.join(repr(s) for s in scopes) or 'none'

    def _describe(self) -> str:
        # The scope tells registries of one tree apart; a registry alone needs no more.
        root = self.root
        if self._scope is None or not (root._children or root._unscoped_children):
            return f'{self._name} registry'
        return f'{self._name} registry (scope {self._scope!r})'

    def _missing_message(self, key: str, searched: list[Registry], notes: list[str]) -> str:
        _, name = self.split_scope_key(key)
        if not searched:
            return f'{key!r} is not in the {self._describe()}: ' + ' '.join(notes)
        where = f'the {searched[0]._describe()}'
        if len(searched) > 1:
            where += ', nor in the ' + ', the '.join(r._describe() for r in searched[1:])
        if len(searched) == 1:
            listing = ', '.join(sorted(searched[0]._module_dict)) or 'nothing yet'
        else:
            listing = '; '.join(
                f"{', '.join(sorted(r._module_dict))} ({r._scope_text()})"
                for r in searched if r._module_dict) or 'nothing yet'
        others = [r for r in self.root._walk() if all(r is not s for s in searched)]
        text = (f'{key!r} is not in {where}.{_close_names(name, searched, others)} '
                f'Registered: {listing}.')
        for registry in [r for r in others if name in r._module_dict]:
            if registry._scope is not None:
                text += (f' {name!r} is registered in the {registry._describe()}: write '
                         f"type='{registry._scope}.{name}', add _scope_='{registry._scope}' to "
                         f"the config, or make {registry._scope!r} the default scope "
                         f"(init_default_scope('{registry._scope}') or the Runner's "
                         'default_scope).')
            else:
                text += (f' {name!r} is registered in a {registry._name} registry without a '
                         'scope, which only its own build() and get() search: build from it, '
                         'or give it a scope (Registry(..., scope=...)).')
        return ' '.join([text, *notes])

    def _scope_text(self) -> str:
        return f'scope {self._scope!r}' if self._scope is not None else 'no scope'

    # ------------------------------------------------------------------ registering
    def register_module(self,
                        name: str | list[str] | None = None,
                        force: bool = False,
                        module: Any = None) -> Any:
        """Register a class or function, as a decorator or a call.

        MMEngine: ``Registry.register_module``. A name that fengine registered
        (e.g. ``Accuracy`` in ``METRICS``) is replaced with an INFO line: fengine's
        built-ins never block a user's names.

        Args:
            name: The name (or names) to register under; defaults to ``module.__name__``.
            force: Replace an object a user already registered under the same name.
            module: The object; when ``None`` a decorator is returned.

        Raises:
            KeyError: a user already registered another object under the name and
                ``force`` is False (nothing is registered).
            TypeError: ``name`` is not a str or a list of str, ``force`` is not a bool,
                or the object is not callable.
        """
        return self._register_call(name, force, module, builtin=None)

    def register_builtin(self, module: Any, name: str | list[str] | None = None) -> Any:
        """Register an object as a default that any user registration replaces.

        fengine registers its own classes with :meth:`register_module`, and they are
        recognized as built-in by their module; this is for objects defined elsewhere
        that fengine registers (torch's optimizers in ``OPTIMIZERS``). A library built
        on fengine may use it for its own defaults too.
        """
        return self._register_call(name, False, module, builtin=True)

    def _register_call(self, name: Any, force: Any, module: Any, builtin: bool | None) -> Any:
        if not isinstance(force, bool):
            raise TypeError(f'force must be a bool, but got {type(force).__name__}: {force!r}')
        if not (name is None or isinstance(name, str)
                or (isinstance(name, list) and all(isinstance(n, str) for n in name))):
            raise TypeError(f'name must be None, a str or a list of str, but got {name!r}')

        def register(obj: Any) -> Any:
            self._register(obj, name, force,
                           _defined_in_fengine(obj) if builtin is None else builtin)
            return obj

        return register(module) if module is not None else register

    def _register(self, obj: Any, name: str | list[str] | None, force: bool,
                  builtin: bool) -> None:
        if not callable(obj):
            raise TypeError(f'only classes and functions can be registered in the '
                            f'{self._describe()}, but got {obj!r}')
        names = [obj.__name__] if name is None else ([name] if isinstance(name, str) else name)
        # Check every name before registering any, so a clash registers nothing.
        plan = []
        for key in names:
            existing = self._module_dict.get(key)
            existing_builtin = key in self._module_dict and existing is self._builtins.get(key)
            if key not in self._module_dict or existing is obj or force:
                plan.append((key, 'set'))
            elif existing_builtin and not builtin:
                plan.append((key, 'replace-builtin'))
            elif builtin and not existing_builtin:
                plan.append((key, 'keep-user'))
            else:
                raise KeyError(f'{key!r} is already registered in the {self._describe()} as '
                               f'{_qualname(existing)}; pass force=True to replace it.')
        for key, action in plan:
            if builtin:
                self._builtins[key] = obj
            if action == 'keep-user':
                continue
            if action == 'replace-builtin':
                print_log(f'{key!r} in the {self._describe()} now names {_qualname(obj)}, '
                          f"in place of fengine's built-in {_qualname(self._module_dict[key])}.",
                          logger='current', level=logging.INFO)
            self._module_dict[key] = obj

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """Build an object from ``cfg``: ``build_func(cfg, self, *args, **kwargs)``.

        MMEngine: ``Registry.build``.
        """
        return self.build_func(cfg, self, *args, **kwargs)


def _check_locations(name: str, locations: Sequence[str] | None) -> tuple[str, ...]:
    if locations is None:
        return ()
    if isinstance(locations, str) or not isinstance(locations, (list, tuple)):
        raise TypeError(f'locations of the {name} registry must be a list of module names, '
                        f'but got {type(locations).__name__}: {locations!r}')
    for location in locations:
        if not isinstance(location, str) or not location:
            raise TypeError(f'locations of the {name} registry must be module names (str), '
                            f'but got {location!r} in {locations!r}')
    return tuple(locations)


def _close_names(name: str, searched: list[Registry], others: list[Registry]) -> str:
    """``" Did you mean 'X'?"`` over the names searched and, written ``'scope.X'``, the
    names of the other scoped registries of the tree; or ``''``."""
    shown = {n: n for r in searched for n in r._module_dict}
    for registry in others:
        if registry._scope is not None:
            for n in registry._module_dict:
                shown.setdefault(n, f'{registry._scope}.{n}')
    close = difflib.get_close_matches(name, list(shown), n=3, cutoff=0.6)
    if not close:
        return ''
    return ' Did you mean ' + ' or '.join(repr(shown[c]) for c in close) + '?'


def _unique(registries: list[Registry]) -> list[Registry]:
    seen: list[Registry] = []
    for registry in registries:
        if all(registry is not s for s in seen):
            seen.append(registry)
    return seen


def _lookup(chain: list[Registry], name: str) -> Any:
    for registry in chain:
        registry.import_from_location()
        if name in registry._module_dict:
            return registry._module_dict[name]
    return None
