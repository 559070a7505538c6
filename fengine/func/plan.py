"""Resolve a model's ``init_cfg`` into an explicit, ordered initialization plan.

The plan follows MMEngine's ``BaseModule.init_weights`` order: a module's own
``init_cfg`` entries (``layer`` matches, then ``override``), then its children
(a child with its own ``init_cfg`` or ``init_weights`` wins over its parent),
then ``Pretrained`` entries. Each step is one of

- :class:`Fill`: pure recipes for some parameters (from ``Constant``, ``Kaiming``...);
- :class:`Load`: tensors read from a checkpoint (``Pretrained``);
- :class:`Call`: opaque code (a user-defined ``init_weights``, a custom registered
  initializer, or PyTorch's ``reset_parameters`` for a parameter built on ``meta``
  that nothing else sets), whose writes are tracked when it runs.

Resolving reads the model's structure and configs only; it writes nothing, so a bad
config raises before any parameter changes.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import torch
from torch import nn

from .._errors import choices_text, suggest
from ..logging import print_log
from .init import TensorInit
from .tree import ParamSpec, join_path

__all__ = ['InitPlan', 'PlanEntry', 'Fill', 'Load', 'Call', 'init_plan', 'config_plan',
           'initializer_plan', 'layer_names', 'normalize_init_cfg', 'is_base_init_weights']


class Fill(NamedTuple):
    """Set ``fills[path]`` from its recipe, for every path."""
    fills: dict[str, TensorInit]
    info: str
    source: str


class Load(NamedTuple):
    """Copy tensors from a checkpoint into the module at ``path``.

    ``load()`` returns the state dict with keys relative to that module.
    ``open_rows()``, where given, returns the same keys with a
    :class:`~fengine.checkpoint_rows.RowSource` each instead of a tensor: what
    :func:`~fengine.func.init_shards` reads a shard's rows from.
    """
    path: str
    module: nn.Module
    load: Callable[[], dict[str, torch.Tensor]]
    info: str
    source: str
    open_rows: Callable[[], Mapping[str, Any]] | None = None


class Call(NamedTuple):
    """Run ``fn(module)`` on the module at ``path``; what it writes is tracked."""
    path: str
    module: nn.Module
    fn: Callable[[nn.Module], None]
    info: str
    source: str


class PlanEntry(NamedTuple):
    """The last step that sets a parameter: what the report prints, and why."""
    path: str
    info: str
    source: str
    recipe: TensorInit | None


def is_base_init_weights(module: nn.Module) -> bool:
    """True when ``module.init_weights`` is fengine's own ``BaseModule.init_weights``.

    A function set on the instance (``child.init_weights = fn``) replaces the class's,
    as Python's attribute lookup (and MMEngine's chain) does.
    """
    if 'init_weights' in vars(module):
        return False
    method = getattr(type(module), 'init_weights', None)
    return bool(getattr(method, '_fengine_base_init_weights', False))


def layer_names(module: nn.Module) -> set[str]:
    """Names ``layer`` can match: the module's class and every class in its MRO.

    MMEngine matches the class and its direct bases only; fengine matches the
    whole MRO, so a subclass of a subclass of ``nn.Conv2d`` is still a ``Conv2d``.
    """
    return {cls.__name__ for cls in type(module).__mro__
            if cls not in (object, nn.Module)}


def normalize_init_cfg(init_cfg, where: str) -> list[dict]:
    """``None`` -> ``[]``, a dict -> ``[dict]``, a list of dicts as is; else ``TypeError``."""
    if init_cfg is None:
        return []
    if isinstance(init_cfg, dict):
        return [init_cfg]
    if isinstance(init_cfg, (list, tuple)):
        for index, cfg in enumerate(init_cfg):
            if not isinstance(cfg, dict):
                raise TypeError(f'{where}[{index}] must be a dict, but got '
                                f'{type(cfg).__name__}: {cfg!r}')
        return list(init_cfg)
    raise TypeError(f'{where} must be a dict or a list of dicts, but got '
                    f'{type(init_cfg).__name__}: {init_cfg!r}')


@dataclass
class InitPlan:
    """The ordered steps that initialize a model, and what each parameter ends up as.

    Attributes:
        root: The module the plan was resolved for.
        ops: The steps, in the order they apply (a later step wins).
        specs: Shape, dtype, device and ``requires_grad`` of every parameter, by path.
        params: Every parameter object, by path (tied parameters appear once).
        untouched_info: The report line for a parameter no step sets.
        initialized: The ``BaseModule`` objects whose ``init_cfg`` the plan applies.
        unmaterializable: Parameters built on meta that no step is known to set, with
            their module's class: an error, unless a checkpoint turns out to hold them.
        defaults: The steps of ``ops`` that are PyTorch's default initialization of
            parameters built on meta (skipped where a checkpoint sets all they would).
    """
    root: nn.Module
    ops: list[Fill | Load | Call]
    specs: dict[str, ParamSpec]
    params: dict[str, nn.Parameter]
    untouched_info: str
    initialized: list[nn.Module] = field(default_factory=list)
    unmaterializable: dict[str, str] = field(default_factory=dict)
    defaults: list[Call] = field(default_factory=list)

    def entries(self) -> dict[str, PlanEntry]:
        """For every parameter, the last step that sets it (as far as it is known now).

        A :class:`Load` sets only the keys its checkpoint holds and a :class:`Call`
        only what its code writes; both are known once the plan runs, so here they
        are listed as the step that may set the parameter.
        """
        entries = {path: PlanEntry(path, self.untouched_info, 'no step sets it', None)
                   for path in self.specs}
        for op in self.ops:
            if isinstance(op, Fill):
                for path, recipe in op.fills.items():
                    entries[path] = PlanEntry(path, op.info, op.source, recipe)
            else:
                for path in self.paths_under(op.path):
                    entries[path] = PlanEntry(path, op.info, op.source + ' (may set it)',
                                              None)
        return entries

    def paths_under(self, prefix: str) -> Iterator[str]:
        """Parameter paths inside the module at ``prefix``."""
        for path in self.specs:
            if not prefix or path == prefix or path.startswith(prefix + '.'):
                yield path

    def __str__(self) -> str:
        lines = [f'InitPlan for {type(self.root).__name__}: {len(self.ops)} steps, '
                 f'{len(self.specs)} parameters']
        for entry in self.entries().values():
            lines.append(f'  {entry.path} {tuple(self.specs[entry.path].shape)}: '
                         f'{entry.info}  <- {entry.source}')
        return '\n'.join(lines)


def init_plan(model: nn.Module, *, prefix: str = '', own_init_cfg: bool = False,
              unset: Iterable[str] = ()) -> InitPlan:
    """Resolve ``model``'s ``init_cfg`` (and its children's) into an :class:`InitPlan`.

    Args:
        model: Any ``nn.Module``; ``BaseModule`` descendants contribute their
            ``init_cfg``, modules with their own ``init_weights`` are called.
        prefix: The model's own path, when it is part of a larger model.
        own_init_cfg: Plan ``model``'s ``init_cfg`` and children even when its class
            overrides ``init_weights`` (what ``super().init_weights()`` does there).
        unset: Paths of parameters to plan as if built on ``meta`` (storage without
            values, e.g. allocated by ``to_empty`` after sharding): no step setting them
            means PyTorch's default, or an error.

    Raises:
        TypeError, ValueError, KeyError: a bad ``init_cfg``; the message names the
            module, the entry and the valid choices. Nothing has been changed.
    """
    resolver = _Resolver(model, prefix, unset)
    if own_init_cfg:
        resolver.visit_base_module(model, prefix)
    else:
        resolver.visit_root()
    return resolver.finish()


def config_plan(module: nn.Module, init_cfg, *, prefix: str = '') -> InitPlan:
    """The plan of ``initialize(module, init_cfg)``: the entries in their order.

    Unlike :func:`init_plan` it does not look at ``module.init_cfg`` or call any
    child's ``init_weights``; ``Pretrained`` entries apply where they stand.
    """
    resolver = _Resolver(module, prefix)
    cfgs = normalize_init_cfg(init_cfg, 'init_cfg')
    for index, cfg in enumerate(cfgs):
        resolver.expand(module, prefix, cfg, f'init_cfg[{index}]' if len(cfgs) > 1 else 'init_cfg')
    return resolver.finish()


def initializer_plan(module: nn.Module, initializer, *, prefix: str = '',
                     whole_module: bool = False, own_only: bool = False) -> InitPlan:
    """The plan of calling one built initializer on ``module``.

    Args:
        whole_module: Every submodule, not only ``layer`` matches (MMEngine's
            ``wholemodule``, set for ``override``).
        own_only: Only ``module.weight`` and ``module.bias`` (the ``*_init`` helpers).
    """
    resolver = _Resolver(module, prefix)
    source = type(initializer).__name__
    if own_only:
        resolver.fill_modules([module], initializer.layer_init(), source)
    else:
        resolver.add_initializer(initializer, module, prefix, source, whole_module,
                                 has_override=False)
    return resolver.finish()


class _Resolver:

    def __init__(self, model: nn.Module, prefix: str, unset: Iterable[str] = ()) -> None:
        self.model = model
        self.prefix = prefix
        self.unset = frozenset(unset)
        self.params = dict(model.named_parameters(prefix=prefix))
        self.canonical = {id(p): path for path, p in self.params.items()}
        self.ops: list[Fill | Load | Call] = []
        self.initialized: list[nn.Module] = []

    # -- walking the module tree, in MMEngine's order -------------------------------
    def visit_root(self) -> None:
        if is_base_init_weights(self.model):
            self.visit_base_module(self.model, self.prefix)
        elif callable(getattr(self.model, 'init_weights', None)):
            self.add_user_init(self.model, self.prefix)
        else:
            self.visit_children(self.model, self.prefix)

    def visit_children(self, module: nn.Module, path: str) -> None:
        for name, child in module.named_children():
            child_path = join_path(path, name)
            if getattr(child, 'is_init', False):
                continue
            if is_base_init_weights(child):
                self.visit_base_module(child, child_path)
            elif callable(getattr(child, 'init_weights', None)):
                self.add_user_init(child, child_path)
            else:
                # MMEngine stops at a child without init_weights; fengine looks through
                # plain containers so a BaseModule inside an nn.Sequential is not skipped.
                self.visit_children(child, child_path)

    def visit_base_module(self, module: nn.Module, path: str) -> None:
        where = f'init_cfg of {type(module).__name__}' + (f" at '{path}'" if path else '')
        cfgs = normalize_init_cfg(getattr(module, 'init_cfg', None), where)
        plain, pretrained = [], []
        for index, cfg in enumerate(cfgs):
            source = f'{where}[{index}]' if len(cfgs) > 1 else where
            (pretrained if _is_pretrained(cfg) else plain).append((cfg, source))
        for cfg, source in plain:
            self.expand(module, path, cfg, source)
        self.initialized.append(module)
        self.visit_children(module, path)
        for cfg, source in pretrained:
            self.expand(module, path, cfg, source)

    def add_user_init(self, module: nn.Module, path: str) -> None:
        name = type(module).__name__
        self.ops.append(Call(path, module, lambda m: m.init_weights(),
                             f'Initialized by user-defined `init_weights` in {name}',
                             f'user-defined init_weights of {name} at {path!r}'))

    # -- one init_cfg entry ----------------------------------------------------------
    def expand(self, module: nn.Module, path: str, cfg: dict, source: str,
               whole_module: bool = False) -> None:
        from ..model import weight_init  # noqa: F401  (registers the initializers)
        from ..registry import WEIGHT_INITIALIZERS

        cfg = copy.deepcopy(cfg)
        override = cfg.pop('override', None)
        initializer = _build(WEIGHT_INITIALIZERS, cfg, source)
        self.add_initializer(initializer, module, path, source, whole_module,
                             has_override=override is not None)
        if override is None:
            return
        cfg.pop('layer', None)
        if isinstance(override, dict):
            override = [override]
        if not isinstance(override, (list, tuple)):
            raise TypeError(f'override in {source} must be a dict or a list of dicts, but '
                            f'got {type(override).__name__}: {override!r}')
        for entry in override:
            if not isinstance(entry, dict):
                raise TypeError(f'each override in {source} must be a dict, but got '
                                f'{type(entry).__name__}: {entry!r}')
            entry = copy.deepcopy(entry)
            name = entry.pop('name', None)
            if name is None:
                raise ValueError(f'override in {source} must have the key "name" (the child '
                                 f'to re-initialize), but got {entry!r}')
            if not entry:
                entry = copy.deepcopy(cfg)  # only a name: reuse the parent's arguments
            elif 'type' not in entry:
                raise ValueError(
                    f"override '{name}' in {source} sets {sorted(entry)} but has no "
                    '"type"; give the initializer type, or only "name" to reuse the '
                    "parent's arguments.")
            initializer = _build(WEIGHT_INITIALIZERS, entry, source)
            where = f"{source} override '{name}'"
            param = _parameter(module, name)
            if param is not None:
                self.fill_parameter(initializer, param, where)
                continue
            self.add_initializer(initializer, _child(module, name, source),
                                 join_path(path, name), where, whole_module=True,
                                 has_override=False)

    def add_initializer(self, initializer, module: nn.Module, path: str, source: str,
                        whole_module: bool, has_override: bool) -> None:
        if hasattr(initializer, 'checkpoint_loader'):
            opener = getattr(initializer, 'rows_opener', None)
            self.ops.append(Load(path, module, initializer.checkpoint_loader(),
                                 initializer._get_init_info(), source,
                                 opener() if callable(opener) else None))
            return
        if not hasattr(initializer, 'layer_init'):
            # A custom registered initializer: MMEngine calls it on the module.
            initializer.wholemodule = whole_module
            info = (initializer._get_init_info() if hasattr(initializer, '_get_init_info')
                    else type(initializer).__name__)
            self.ops.append(Call(path, module, initializer, info, source))
            return
        spec = initializer.layer_init()
        modules = list(module.named_modules(prefix=path))
        if not whole_module:
            wanted = set(spec.layer)
            matched = [(p, m) for p, m in modules if layer_names(m) & wanted]
            if wanted and not matched:
                present = sorted({type(m).__name__ for _, m in modules})
                print_log(f'{source}: layer {sorted(wanted)} matched no module; the module '
                          f'types present are {", ".join(present)}.', logger='current',
                          level=logging.WARNING)
            elif not wanted and not has_override:
                print_log(f'{source} has neither "layer" nor "override", so it initializes '
                          'nothing; add layer=... (module class names) or '
                          'override=dict(name=...).', logger='current',
                          level=logging.WARNING)
            modules = matched
        self.fill_modules([m for _, m in modules], spec, source)

    def fill_parameter(self, initializer, param: nn.Parameter, source: str) -> None:
        """Set one parameter named by an ``override`` with the initializer's weight recipe.

        MMEngine's initializers reach only ``weight`` and ``bias``; naming a parameter
        is how a bare ``nn.Parameter`` (a class token, a position embedding) gets one.
        """
        if not hasattr(initializer, 'layer_init'):
            raise TypeError(f'{source} names a parameter; only initializers that are '
                            'recipes (Constant, Normal, TruncNormal, Uniform, Xavier, '
                            f'Kaiming, Caffe2Xavier) can set one, not '
                            f'{type(initializer).__name__}.')
        spec = initializer.layer_init()
        path = self.canonical[id(param)]
        spec.weight.distribution(param.shape, path)  # fans fail now, naming the path
        self.ops.append(Fill({path: spec.weight}, spec.info, source))

    def fill_modules(self, modules, spec, source: str) -> None:
        """Set ``weight`` and ``bias`` of each module from ``spec``."""
        fills: dict[str, TensorInit] = {}
        for sub in modules:
            for attr in ('weight', 'bias'):
                param = sub._parameters.get(attr)
                if param is not None:
                    fills[self.canonical[id(param)]] = getattr(spec, attr)
        for param_path, recipe in fills.items():
            recipe.distribution(self.params[param_path].shape, param_path)  # fans fail now
        self.ops.append(Fill(fills, spec.info, source))

    # -- parameters built on meta ----------------------------------------------------
    def finish(self) -> InitPlan:
        name = type(self.model).__name__
        plan = InitPlan(
            root=self.model, ops=self.ops,
            specs={p: ParamSpec(t.shape, t.dtype, t.device, t.requires_grad)
                   for p, t in self.params.items()},
            params=self.params,
            untouched_info=f'The value is the same before and after calling '
                           f'`init_weights` of {name}',
            initialized=self.initialized)
        filled = {p for op in self.ops if isinstance(op, Fill) for p in op.fills}
        meta = {p for p, t in self.params.items()
                if (t.is_meta or p in self.unset) and p not in filled}
        # Opaque steps may set what they like; whether they did is checked once they ran.
        opaque = {p for op in self.ops if isinstance(op, Call)
                  for p in plan.paths_under(op.path)}
        if not meta:
            return plan
        defaults: list[Call] = []
        for module_path, module in self.model.named_modules(prefix=self.prefix):
            own = [self.canonical[id(t)] for t in module._parameters.values()
                   if t is not None and self.canonical.get(id(t)) in meta]
            if not own:
                continue
            kind = type(module).__name__
            # nn.MultiheadAttention names its default `_reset_parameters`.
            reset = next((name for name in ('reset_parameters', '_reset_parameters')
                          if callable(getattr(module, name, None))), None)
            if reset is not None:
                defaults.append(Call(
                    module_path, module, lambda m, reset=reset: getattr(m, reset)(),
                    f'PyTorch default initialization of {kind} (`{reset}`), '
                    'materialized from meta',
                    f'{kind}.{reset} at {module_path!r}: built on meta'))
            else:
                for path in own:
                    if path not in opaque:
                        plan.unmaterializable[path] = kind
        plan.ops[:0] = defaults
        plan.defaults = defaults
        return plan


def _is_pretrained(cfg: dict) -> bool:
    kind = cfg.get('type')
    return kind == 'Pretrained' or getattr(kind, '__name__', None) == 'PretrainedInit'


def _build(registry, cfg: dict, source: str):
    try:
        return registry.build(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        raise type(exc)(f'{source}: {message}') from None


def _parameter(module: nn.Module, name: object) -> nn.Parameter | None:
    """The parameter at dotted path ``name`` under ``module``, if that is one."""
    if not isinstance(name, str):
        return None
    owner_path, _, leaf = name.rpartition('.')
    try:
        owner = module.get_submodule(owner_path)
    except AttributeError:
        return None
    return owner._parameters.get(leaf)


def _child(module: nn.Module, name: object, source: str) -> nn.Module:
    if isinstance(name, str):
        try:
            return module.get_submodule(name)
        except AttributeError:
            pass
    children = [n for n, _ in module.named_children()]
    params = [n for n, p in module._parameters.items() if p is not None]
    raise ValueError(f"override in {source} names {name!r}, but {type(module).__name__} "
                     f'has no such child or parameter.{suggest(str(name), children + params)}'
                     f' Children: {choices_text(children) or "none"}; parameters: '
                     f'{choices_text(params) or "none"}.')
