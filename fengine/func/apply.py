"""Run an :class:`~fengine.func.plan.InitPlan`: as a pure function, or in place.

Values stay lazy (a recipe, or the input tensor) until something needs them, so
each parameter is generated once, by the last step that sets it, however many
``init_cfg`` entries touch it. Only opaque steps (:class:`~fengine.func.plan.Call`)
need values earlier: they run on fresh copies of their module's parameters, swapped
in for the call and swapped back after, under a per-(seed, path) random state and a
:class:`~fengine.func.track.WriteTracker`.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from dataclasses import dataclass, field
from typing import Iterator, Mapping, NamedTuple

import torch
from torch import nn

from ..logging import print_log
from .init import TensorInit
from .plan import Call, Fill, InitPlan, Load, init_plan
from .rng import fold_in
from .sample import sample_into
from .track import WriteTracker, paused, storage_ref
from .tree import ParamSpec, join_path, param_tree

__all__ = ['InitResult', 'apply_plan', 'apply_plan_', 'init_params', 'current_session']


class InitResult(NamedTuple):
    """What :func:`apply_plan` returns.

    Attributes:
        params: A new tensor for every parameter, by path.
        info: For every parameter, the report line of what set it.
        buffers: Buffers read from a ``Pretrained`` checkpoint, by path.
    """
    params: dict[str, torch.Tensor]
    info: dict[str, str]
    buffers: dict[str, torch.Tensor]


class _Value(NamedTuple):
    # 'input' (unchanged), 'fill' (a recipe), 'tensor' (computed), 'empty' (meta, unset),
    # 'rows' (a checkpoint tensor not read yet: a RowSource, for init_shards)
    kind: str
    data: object
    info: str


@dataclass
class _Session:
    """Shared by a top-level initialization and every nested ``init_weights`` inside it."""
    seed: int
    device: torch.device | None
    dtype: torch.dtype | None
    module_paths: dict[int, str]
    trackers: list[WriteTracker] = field(default_factory=list)
    initialized: list[nn.Module] = field(default_factory=list)

    def path_of(self, module: nn.Module) -> str:
        return self.module_paths.get(id(module), '')


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    'fengine_init_session', default=None)


def current_session() -> _Session | None:
    """The initialization in progress, if any (used by nested ``init_weights`` calls)."""
    return _SESSION.get()


@contextlib.contextmanager
def _activate(session: _Session) -> Iterator[None]:
    token = _SESSION.set(session)
    try:
        yield
    finally:
        _SESSION.reset(token)


def _new_session(plan: InitPlan, seed: int, device, dtype) -> _Session:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f'seed must be an int, but got {type(seed).__name__}: {seed!r}')
    return _Session(seed=seed, device=None if device is None else torch.device(device),
                    dtype=dtype,
                    module_paths={id(m): p for p, m in plan.root.named_modules()})


# -- values ------------------------------------------------------------------------
def _target(spec: ParamSpec, session: _Session, path: str) -> tuple[torch.device, torch.dtype]:
    device = session.device if session.device is not None else spec.device
    if device.type == 'meta':
        raise ValueError(f'parameter {path!r} is on the meta device; pass device=... '
                         "(e.g. device='cuda') to initialize it there.")
    return device, session.dtype or spec.dtype


def _materialize(path: str, value: _Value, spec: ParamSpec, session: _Session) -> torch.Tensor:
    if value.kind == 'empty':
        raise ValueError(f'parameter {path!r} was built on meta and nothing set it')
    device, dtype = _target(spec, session, path)
    if value.kind == 'fill':
        recipe: TensorInit = value.data  # type: ignore[assignment]
        return recipe(spec.shape, seed=session.seed, path=path, dtype=dtype, device=device)
    if value.kind == 'rows':  # opaque code needs the whole tensor
        return value.data.read().detach().to(device=device, dtype=dtype)  # type: ignore
    tensor: torch.Tensor = value.data  # type: ignore[assignment]
    if value.kind == 'input':
        return tensor.detach().to(device=device, dtype=dtype, copy=True)
    return tensor.detach().to(device=device, dtype=dtype)


def _draw_fills(fills: Mapping[str, torch.Tensor], values: Mapping[str, _Value],
                session: _Session) -> None:
    """Draw every recipe of ``values`` into its tensor in ``fills`` (path -> tensor), all
    at once: one Triton launch per dtype on CUDA, a compile decided for the whole model
    on the CPU (:func:`~fengine.func.sample.sample_into`)."""
    jobs = []
    for path, out in fills.items():
        recipe: TensorInit = values[path].data  # type: ignore[assignment]
        jobs.append((recipe.distribution(out.shape, path), fold_in(session.seed, path), out))
    sample_into(jobs)


def _load(op: Load, plan: InitPlan, rows: bool = False) -> tuple[dict, dict[str, tuple]]:
    """Read ``op``'s checkpoint; return parameter tensors and buffer targets by path.

    With ``rows`` (and a checkpoint that offers it) parameters are returned as
    :class:`~fengine.checkpoint_rows.RowSource` objects, not read yet; shapes are
    checked from the file's header all the same.
    """
    rows = rows and op.open_rows is not None
    state = op.open_rows() if rows else op.load()
    expected = op.module.state_dict(keep_vars=True)
    canonical = {id(p): path for path, p in plan.params.items()}
    params: dict[str, torch.Tensor] = {}
    buffers: dict[str, tuple] = {}
    mismatched = []
    for key, tensor in state.items():
        if key not in expected:
            continue
        target = expected[key]
        if tuple(tensor.shape) != tuple(target.shape):
            mismatched.append(f'size mismatch for {key}: copying a param with shape '
                              f'{tuple(tensor.shape)} from checkpoint, the shape in current '
                              f'model is {tuple(target.shape)}.')
        elif isinstance(target, nn.Parameter) and id(target) in canonical:
            params[canonical[id(target)]] = tensor
        elif isinstance(target, torch.Tensor):
            owner_path, _, name = key.rpartition('.')
            owner = op.module.get_submodule(owner_path)
            buffers[join_path(op.path, key)] = (owner, name, tensor.read() if rows else tensor)
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    problems = []
    if unexpected:
        problems.append('unexpected key in source state_dict: ' + ', '.join(unexpected))
    if missing:
        problems.append('missing keys in source state_dict: ' + ', '.join(missing))
    problems.extend(mismatched)
    if problems:
        print_log('The model and loaded state dict do not match exactly\n\n'
                  + '\n\n'.join(problems) + '\n', logger='current', level=logging.WARNING)
    return params, buffers


@contextlib.contextmanager
def _seeded(session: _Session, path: str) -> Iterator[None]:
    """Global RNG seeded from (seed, path) for opaque code, restored afterwards."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(fold_in(session.seed, path + '#call'))
        yield


@contextlib.contextmanager
def _tracking(session: _Session, tracker: WriteTracker) -> Iterator[None]:
    session.trackers.append(tracker)
    try:
        with tracker:
            yield
    finally:
        session.trackers.pop()


def _run_call(op: Call, values: dict[str, _Value], plan: InitPlan, session: _Session) -> None:
    """Run opaque code on fresh copies of its module's parameters; record what it wrote."""
    canonical = {id(p): path for path, p in plan.params.items()}
    slots = [(m, name, canonical[id(p)]) for m in op.module.modules()
             for name, p in m._parameters.items() if p is not None and id(p) in canonical]
    originals = [(m, name, m._parameters[name]) for m, name, _ in slots]
    fresh: dict[str, nn.Parameter] = {}
    for _, _, path in slots:
        if path in fresh:
            continue
        spec, value = plan.specs[path], values[path]
        if value.kind in ('empty',) or (value.kind == 'input' and value.data.is_meta):
            device, dtype = _target(spec, session, path)
            tensor = torch.empty(spec.shape, device=device, dtype=dtype)
        else:
            tensor = _materialize(path, value, spec, session)
        fresh[path] = nn.Parameter(tensor, requires_grad=spec.requires_grad)
    storages = {path: storage_ref(t) for path, t in fresh.items()}
    flags = {m: m._is_init for m in op.module.modules() if hasattr(m, '_is_init')}
    tracker = WriteTracker(fresh, op.info)
    results: dict[str, _Value] = {}
    try:
        for m, name, path in slots:
            m._parameters[name] = fresh[path]
        with _seeded(session, op.path), torch.no_grad(), _tracking(session, tracker):
            op.fn(op.module)
        for m, name, path in slots:
            current = m._parameters.get(name)
            if current is None:
                raise ValueError(f'{op.source} removed parameter {path!r}; initialization '
                                 'must not add, remove or replace parameters by None.')
            if current is not fresh[path] or storage_ref(current) != storages[path]:
                if tuple(current.shape) != tuple(plan.specs[path].shape):
                    raise ValueError(f'{op.source} replaced parameter {path!r} of shape '
                                     f'{tuple(plan.specs[path].shape)} with one of shape '
                                     f'{tuple(current.shape)}.')
                results[path] = _Value('tensor', current.detach(), op.info)
            elif path in tracker.written:
                results[path] = _Value('tensor', fresh[path].detach(), tracker.written[path])
            elif values[path].kind == 'fill':
                results[path] = _Value('tensor', fresh[path].detach(), values[path].info)
        known = {(id(m), name) for m, name, _ in slots}
        added = [f'{type(m).__name__}.{name}' for m in op.module.modules()
                 for name, p in m._parameters.items()
                 if p is not None and (id(m), name) not in known]
        if added:
            raise ValueError(f'{op.source} added parameters {added}; create parameters in '
                             '__init__, and only set their values in init_weights.')
        session.initialized.extend(m for m, was in flags.items() if m._is_init and not was)
    finally:
        for m, name, param in originals:
            m._parameters[name] = param
        for m, was in flags.items():
            m._is_init = was
    values.update(results)


def _resolve(plan: InitPlan, inputs: Mapping[str, torch.Tensor], session: _Session,
             rows: bool = False) -> tuple[dict[str, _Value], dict[str, tuple]]:
    """Every parameter's final value (lazy where possible), and buffers to load.

    With ``rows``, parameters from checkpoints that can be read in parts are ``'rows'``
    values: the caller reads the rows it needs.
    """
    # Checkpoints are read first: a missing or corrupt file fails before anything runs.
    loaded = {id(op): _load(op, plan, rows) for op in plan.ops if isinstance(op, Load)}
    from_checkpoints = {path for params, _ in loaded.values() for path in params}
    unmaterializable = {p: kind for p, kind in plan.unmaterializable.items()
                        if p not in from_checkpoints}
    if unmaterializable:
        listed = ', '.join(f'{p!r} ({kind})' for p, kind in unmaterializable.items())
        raise ValueError(
            f'parameters built on meta have no value and nothing in the plan sets them: '
            f'{listed}. Their modules have no reset_parameters(); set them from init_cfg '
            "(a bare parameter: override=dict(name='<its path>') on an entry such as "
            "dict(type='TruncNormal', std=0.02, ...)), or build the model on a real device.")
    # A default initialization whose every parameter a checkpoint then sets, and that no
    # user code could read in between, would only be overwritten: skip it (on meta it
    # would allocate its module's full parameters).
    defaults = {id(op) for op in plan.defaults}
    read_by_code = {p for op in plan.ops if isinstance(op, Call) and id(op) not in defaults
                    for p in plan.paths_under(op.path)}
    skipped = {id(op) for op in plan.defaults
               if set(plan.paths_under(op.path)) <= from_checkpoints - read_by_code}
    values = {path: _Value('input', inputs[path], plan.untouched_info) for path in plan.specs}
    buffers: dict[str, tuple] = {}
    for op in plan.ops:
        if isinstance(op, Fill):
            for path, recipe in op.fills.items():
                values[path] = _Value('fill', recipe, op.info)
        elif isinstance(op, Load):
            params, op_buffers = loaded[id(op)]
            kind = 'rows' if rows and op.open_rows is not None else 'tensor'
            for path, tensor in params.items():
                values[path] = _Value(kind, tensor, op.info)
            buffers.update(op_buffers)
        elif id(op) not in skipped:
            _run_call(op, values, plan, session)
    unset = [p for p, v in values.items()
             if v.kind == 'empty' or (v.kind == 'input' and v.data.is_meta
                                      and session.device is not None)]
    if unset:
        raise ValueError(f'parameters built on meta were not set by any step: {unset}')
    return values, buffers


# -- the two ways to run a plan ------------------------------------------------------
def apply_plan(plan: InitPlan, params: Mapping[str, torch.Tensor] | None = None, *,
               seed: int, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> InitResult:
    """Run ``plan`` as a pure function: a parameter tree in, a new one out.

    Args:
        plan: From :func:`~fengine.func.init_plan`.
        params: The input tree (path -> tensor); defaults to the model's parameters.
            Parameters no step sets are copied from it.
        seed: The seed every parameter's random stream is derived from, with its path.
        device: Where the new tensors go (required for parameters on ``meta``).
        dtype: The dtype of the new tensors (defaults to each parameter's own).

    Returns:
        :class:`InitResult` with new tensors; the model is left as it was.
    """
    session = _new_session(plan, seed, device, dtype)
    inputs = dict(plan.params if params is None else params)
    missing = [p for p in plan.specs if p not in inputs]
    if missing:
        raise KeyError(f'the parameter tree lacks {missing}; expected the paths of '
                       f'{type(plan.root).__name__}.named_parameters()')
    with _activate(session):
        values, buffers = _resolve(plan, inputs, session)
        out = {}
        for path, value in values.items():
            spec = plan.specs[path]
            if value.kind == 'fill':
                device, dtype = _target(spec, session, path)
                out[path] = torch.empty(spec.shape, dtype=dtype, device=device)
            else:
                out[path] = _materialize(path, value, spec, session)
        _draw_fills({p: t for p, t in out.items() if values[p].kind == 'fill'}, values, session)
    return InitResult(out, {p: v.info for p, v in values.items()},
                      {p: t for p, (_, _, t) in buffers.items()})


def init_params(model: nn.Module, *, seed: int, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Fresh initialized parameters for ``model``, without changing the model.

    Equivalent to ``apply_plan(init_plan(model), seed=seed, ...).params``: the result
    can be passed to ``torch.func.functional_call(model, params, args)``. Works on a
    model built under ``torch.device('meta')``: pass ``device=`` and nothing is
    allocated anywhere else.

    Example:
        >>> import torch
        >>> from fengine.model import BaseModule
        >>> from fengine.func import init_params
        >>> class Net(BaseModule):
        ...     def __init__(self):
        ...         super().__init__(init_cfg=dict(type='Kaiming', layer='Linear'))
        ...         self.fc = torch.nn.Linear(4, 2)
        >>> with torch.device('meta'):
        ...     net = Net()
        >>> params = init_params(net, seed=0, device='cpu')
        >>> params['fc.weight'].device, net.fc.weight.device
        (device(type='cpu'), device(type='meta'))
    """
    return apply_plan(init_plan(model), param_tree(model), seed=seed, device=device,
                      dtype=dtype).params


def apply_plan_(plan: InitPlan, *, seed: int | None = None,
                device: torch.device | str | None = None) -> dict[str, str]:
    """Run ``plan`` in place on its model; return, per parameter, what set it.

    Parameters on ``meta`` are materialized on ``device``; so are their module's
    buffers (BatchNorm statistics through ``reset_running_stats``). Every checkpoint
    is read and every user-defined ``init_weights`` has run before the first
    parameter is written, so a failure leaves the model as it was.
    """
    outer = current_session()
    session = outer if outer is not None else _new_session(
        plan, torch.initial_seed() if seed is None else seed, device, None)
    with _activate(session):
        values, buffers = _resolve(plan, plan.params, session)
        infos = {p: v.info for p, v in values.items()}
        slots = _param_slots(plan.root)
        with paused(), torch.no_grad():
            new_values: dict[str, torch.Tensor] = {}
            fills: dict[str, torch.Tensor] = {}
            for path, value in values.items():
                if value.kind == 'input':
                    continue
                param = plan.params[path]
                if value.kind == 'fill':
                    if not param.is_meta and session.dtype is None:
                        fills[path] = param  # drawn straight into it: no second copy
                        continue
                    device, dtype = _target(plan.specs[path], session, path)
                    fills[path] = torch.empty(param.shape, dtype=dtype, device=device)
                    new_values[path] = fills[path]
                else:
                    new_values[path] = _materialize(path, value, plan.specs[path], session)
            _draw_fills(fills, values, session)
            for path, tensor in new_values.items():
                param = plan.params[path]
                if param.is_meta:
                    new = nn.Parameter(tensor, requires_grad=param.requires_grad)
                    for module, name in slots[id(param)]:
                        module._parameters[name] = new
                else:
                    param.copy_(tensor)
            for path, (owner, name, tensor) in buffers.items():
                buffer = owner._buffers[name]
                if buffer.is_meta:
                    owner._buffers[name] = tensor.to(session.device).to(buffer.dtype)
                else:
                    buffer.copy_(tensor)
        if outer is None and session.device is not None:
            _materialize_buffers(plan.root, session.device)
    for tracker in session.trackers:
        for path, value in values.items():
            if value.kind != 'input':
                tracker.mark([path], value.info)
    # Nested runs leave flags to the enclosing Call, which restores or reports them.
    for module in plan.initialized + (session.initialized if outer is None else []):
        module._is_init = True
    return infos


def _param_slots(root: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    slots: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in root.modules():
        for name, param in module._parameters.items():
            if param is not None:
                slots.setdefault(id(param), []).append((module, name))
    return slots


def _materialize_buffers(root: nn.Module, device: torch.device) -> None:
    """Give buffers built on meta real storage; recompute the ones PyTorch knows how to."""
    left = []
    for module_path, module in root.named_modules():
        meta = [name for name, b in module._buffers.items() if b is not None and b.is_meta]
        if not meta:
            continue
        for name in meta:
            module._buffers[name] = torch.zeros_like(module._buffers[name], device=device)
        if callable(getattr(module, 'reset_running_stats', None)):
            module.reset_running_stats()
        else:
            left.extend(join_path(module_path, name) for name in meta)
    if left:
        print_log(f'buffers built on meta were set to zeros, since fengine cannot '
                  f'recompute them: {", ".join(left)}. Set them after init_weights(), or '
                  'build the model on a real device.', logger='current',
                  level=logging.WARNING)
