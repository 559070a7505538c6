"""``FSDP``: PyTorch's FSDP2 (``fully_shard``) as a model wrapper with the BaseModel steps.

MMEngine: ``mmengine.model.MMFullyShardedDataParallel`` (built on FSDP1; its arguments
that have an FSDP2 meaning are accepted under that name, see :class:`MMFullyShardedDataParallel`).

What the wrapper does, in order:

1. ``fully_shard`` on every submodule ``shard_modules`` picks (e.g. each transformer
   block), innermost first, then on the wrapped model itself. Parameters become
   ``DTensor``s sharded by rows (``Shard(0)``) over all ranks; optimizer state created
   from them is sharded the same way.
2. A model built on ``meta`` gets storage for its local shards only (``to_empty``);
   buffers get storage too and keep the values they had (buffers built on ``meta`` are
   zeros, or recomputed by ``reset_running_stats``).
3. :meth:`FSDP.init_weights` runs the model's ``init_cfg`` on the local shards
   (:func:`fengine.func.init_shards`): every rank draws only its own rows from each
   parameter's Philox stream, so the gathered parameters are bit for bit those one
   process gets from ``init_weights()``. Opaque code (a user-defined ``init_weights``,
   ``reset_parameters`` of a module built on ``meta``) runs on full temporary tensors of
   its module's parameters, and each rank keeps its rows.

Training runs through FSDP2's hooks: the eager step (``loss.backward()``, the optimizer
wrapper's clipping and update) with parameters gathered per sharded module, gradients
reduce-scattered after its backward. Between updates of an accumulation window the
gradients are not reduced (``set_requires_gradient_sync(False)``, through
:meth:`FSDP.no_sync`, which ``OptimWrapper.optim_context`` enters). After
``compile_steps()`` (``Runner(compile=...)``), the model's forward is compiled around
FSDP's hooks, which stay uncompiled (``compile_scope``).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .. import dist
from .._errors import check_bool, check_choice, check_keys, choices_text, suggest
from ..func.plan import Call, init_plan, is_base_init_weights, layer_names
from ..func.shard import init_shards, row_shard
from ..logging import print_log
from ..registry import MODEL_WRAPPERS
from .activation_checkpointing import _MARK, _checkpointed

__all__ = ['FSDP', 'MMFullyShardedDataParallel', 'FSDP_WRAPPERS', 'COMPILE_SCOPES',
           'local_numel', 'is_fsdp_config', 'parameters_on_meta']

# The names model_wrapper_cfg may give this wrapper (MMEngine's, and the short one).
FSDP_WRAPPERS = ('FSDP', 'MMFullyShardedDataParallel')

_DTYPES = {'float32': torch.float32, 'fp32': torch.float32, 'float16': torch.float16,
           'fp16': torch.float16, 'half': torch.float16, 'bfloat16': torch.bfloat16,
           'bf16': torch.bfloat16, 'float64': torch.float64}
_MIXED_PRECISION_KEYS = ('param_dtype', 'reduce_dtype', 'output_dtype', 'cast_forward_inputs')

# What compile_steps() compiles under FSDP (docs/distributed.md, "The compiled path under
# FSDP", has the measurements behind the default).
COMPILE_SCOPES = ('block', 'model')


def is_fsdp_config(model_wrapper_cfg: Any) -> bool:
    """Whether a ``model_wrapper_cfg`` selects :class:`FSDP` (by either name, or the class)."""
    kind = model_wrapper_cfg.get('type') if isinstance(model_wrapper_cfg, dict) else None
    return kind in FSDP_WRAPPERS or (isinstance(kind, type) and issubclass(kind, FSDP))


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on ``meta`` and their buffers where they are.

    Inside the block every parameter a module registers is moved to ``meta`` (its
    constructor's ``reset_parameters`` then writes nothing); buffers stay real, so the
    values constructors compute for them (a preprocessor's mean and std) are kept. The
    Runner builds a model from its config this way when it is going to shard it.
    """
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.detach().to('meta'), param.requires_grad)
        original(module, name, param)

    # A class attribute for the block only: nn.Module's own __setattr__ calls it.
    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def _dtype(key: str, value: Any) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.removeprefix('torch.') in _DTYPES:
        return _DTYPES[value.removeprefix('torch.')]
    raise ValueError(f'mixed_precision {key}={value!r} is not a dtype; use a torch.dtype or '
                     f'one of {choices_text(_DTYPES)}')


def _mixed_precision(cfg: Any):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if cfg is None:
        return MixedPrecisionPolicy()
    if isinstance(cfg, MixedPrecisionPolicy):
        return cfg
    if not isinstance(cfg, dict):
        raise TypeError(f'mixed_precision must be a dict such as dict(param_dtype='
                        f"'bfloat16', reduce_dtype='float32'), but got {cfg!r}")
    check_keys('mixed_precision', cfg, _MIXED_PRECISION_KEYS)
    kwargs = {k: _dtype(k, v) for k, v in cfg.items() if k != 'cast_forward_inputs'}
    if 'cast_forward_inputs' in cfg:
        kwargs['cast_forward_inputs'] = check_bool('mixed_precision cast_forward_inputs',
                                                   cfg['cast_forward_inputs'])
    return MixedPrecisionPolicy(**kwargs)


def _shard_targets(model: nn.Module, shard_modules: Any) -> list[tuple[str, nn.Module]]:
    """The submodules ``shard_modules`` picks (class names, matched over the MRO, or a
    callable ``(name, module) -> bool``), innermost first; never the root."""
    if shard_modules is None:
        return []
    named = [(name, m) for name, m in model.named_modules() if name]
    if callable(shard_modules):
        picked = [(name, m) for name, m in named if shard_modules(name, m)]
    else:
        if isinstance(shard_modules, str):
            shard_modules = [shard_modules]
        if not isinstance(shard_modules, (list, tuple)) or not all(
                isinstance(n, str) for n in shard_modules):
            raise TypeError(f'shard_modules must be class names (a str or a list of str) or a '
                            f'callable (name, module) -> bool, but got {shard_modules!r}')
        present = sorted({n for _, m in named for n in layer_names(m)})
        unknown = [n for n in shard_modules if n not in present]
        if unknown:
            raise ValueError(f'shard_modules names {unknown}, which no submodule of '
                             f'{type(model).__name__} is{suggest(unknown[0], present)} '
                             f'Module classes present: {choices_text(present)}')
        wanted = set(shard_modules)
        picked = [(name, m) for name, m in named if layer_names(m) & wanted]
    # fully_shard must reach a module before the module that contains it.
    return picked[::-1]


def local_numel(module: nn.Module) -> int:
    """How many parameter elements this rank holds (its shards, for DTensor parameters)."""
    from torch.distributed.tensor import DTensor

    return sum((p.to_local() if isinstance(p, DTensor) else p).numel()
               for p in module.parameters())


def _first_row(param) -> int:
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh,
                                                      param.placements)
    return offset[0] if offset else 0


def _local_log_vars(log_vars: dict) -> dict:
    """Log values as plain tensors: a norm over sharded gradients is a replicated DTensor."""
    from torch.distributed.tensor import DTensor

    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in log_vars.items()}


@MODEL_WRAPPERS.register_module()
class FSDP(nn.Module):
    """Shard a model's parameters, gradients and optimizer state over all ranks (FSDP2).

    MMEngine: ``mmengine.model.MMFullyShardedDataParallel`` (the differences are listed in
    ``docs/migrating.md``, "FSDP"). Selected with ``Runner(..., launcher='pytorch',
    model_wrapper_cfg=dict(type='FSDP', shard_modules=['Block']))``.

    Args:
        module: The model (a :class:`~fengine.model.BaseModel`), on ``meta`` (nothing
            allocated but each rank's shards) or on a device.
        shard_modules: The submodules that get their own ``fully_shard``: class names
            (matched over each class's MRO, as ``init_cfg``'s ``layer``) or a callable
            ``(name, module) -> bool``. Their parameters are gathered just for their
            forward and backward; the rest is gathered with the root. The root is always
            sharded.
        reshard_after_forward: Free the gathered parameters after each sharded
            module's forward (gathered again for backward): less memory, more traffic.
        mixed_precision: ``dict(param_dtype=..., reduce_dtype=..., output_dtype=...,
            cast_forward_inputs=...)`` (dtypes or names such as ``'bfloat16'``): FSDP2's
            ``MixedPrecisionPolicy``. The sharded parameters and optimizer state stay in
            their own dtype.
        cpu_offload: Keep the shards, gradients and optimizer step on the CPU
            (FSDP2's ``CPUOffloadPolicy``); for CUDA training.
        device: Where the shards live (default: the current CUDA device, else the CPU).
        compile_scope: What ``compile_steps()`` (``Runner(compile=...)``) compiles.
            ``'model'`` (the default): the wrapped model's forward, the loss included,
            which dynamo splits at every FSDP2 hook (torch always runs those hooks
            uncompiled): each sharded module's forward becomes a graph of its own,
            compiled once and shared by all modules of the same class and shapes,
            and the code around them is compiled where dynamo can resume after a
            hook (not inside a loop over the blocks, which then runs uncompiled).
            ``'block'``: only the forward of each module ``shard_modules`` picks,
            each compiled on its own (one compilation per module). Either way the
            backward runs through autograd with FSDP2's hooks, and the update through
            the optimizer wrapper. ``docs/distributed.md`` has the measurements.

    Example (under ``torchrun``, after ``fengine.dist.init_dist()``)::

        with torch.device('meta'):
            net = MyGPT()
        model = FSDP(net, shard_modules=['Block'])
        model.init_weights(seed=0)     # each rank draws its own shards only
        log_vars = model.train_step(batch, optim_wrapper)
    """

    def __init__(self, module: nn.Module, shard_modules: Any = None,
                 reshard_after_forward: bool = True, mixed_precision: dict | None = None,
                 cpu_offload: bool = False, device: torch.device | str | None = None,
                 compile_scope: str = 'model') -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

        super().__init__()
        reshard_after_forward = check_bool('reshard_after_forward', reshard_after_forward)
        check_choice('FSDP compile_scope', compile_scope, COMPILE_SCOPES)
        offload = OffloadPolicy()
        if check_bool('cpu_offload', cpu_offload):
            offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
        policy = _mixed_precision(mixed_precision)
        if device is None:
            device = torch.device('cuda', torch.cuda.current_device()) \
                if torch.cuda.is_available() else torch.device('cpu')
        device = torch.device(device)
        targets = _shard_targets(module, shard_modules)
        if not torch.distributed.is_initialized():  # checked after the arguments
            raise RuntimeError('FSDP needs a process group: launch with torchrun and pass '
                               "launcher='pytorch' to the Runner, or call "
                               'fengine.dist.init_dist() first')
        self.sharded_modules = [name for name, _ in targets[::-1]]
        # Paths of the parameters without values (built on meta): init_weights sets them.
        self._unset = {path for path, p in module.named_parameters() if p.is_meta}
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        options = dict(mesh=mesh, reshard_after_forward=reshard_after_forward,
                       mp_policy=policy, offload_policy=offload)
        for _, sub in targets:
            fully_shard(sub, **options)
        fully_shard(module, **options)
        self.module = module
        self.process_group = mesh.get_group()
        self.compile_scope = compile_scope
        self._compiled_blocks = False
        if self._unset or any(b.is_meta for b in module.buffers()):
            self._materialize(device)
        elif not cpu_offload:
            module.to(device)

    # -- storage and initialization --------------------------------------------------
    def _materialize(self, device: torch.device) -> None:
        """Storage for the local shards; buffers keep their values (or get PyTorch's)."""
        kept = {id(b): b.detach().clone() for b in self.module.buffers() if not b.is_meta}
        owners = [(m, name, id(b)) for m in self.module.modules()
                  for name, b in m._buffers.items() if b is not None]
        self.module.to_empty(device=device)
        reset = set()
        with torch.no_grad():
            for owner, name, key in owners:
                buffer = owner._buffers[name]
                if key in kept:
                    buffer.copy_(kept[key])
                elif buffer.numel():
                    buffer.zero_()
                    reset.add(owner)
        left = []
        for owner in reset:
            if callable(getattr(owner, 'reset_running_stats', None)):
                owner.reset_running_stats()
            else:
                left.append(type(owner).__name__)
        if left:
            print_log(f'buffers built on meta in {sorted(set(left))} were set to zeros, since '
                      'fengine cannot recompute them; build those modules with real buffers.',
                      logger='current', level=logging.WARNING)

    def init_weights(self, *, seed: int | None = None) -> None:
        """Initialize the local shards from the model's ``init_cfg`` (MMEngine: ``init_weights``).

        The values are those of ``module.init_weights(seed=seed)`` in one process, bit
        for bit for float32 (every rank draws only its rows of each parameter's Philox
        stream). The per-parameter report is logged once, by rank 0, as in one process.
        Opaque code (a user-defined ``init_weights``, ``reset_parameters``) runs on full
        temporary tensors of its module's parameters; so each rank briefly holds that
        module's full parameters. Collective: every rank must call it.

        Args:
            seed: As for ``BaseModule.init_weights``; defaults to ``torch.initial_seed()``
                (the same on every rank after ``Runner(randomness=...)``).
        """
        from torch.distributed.tensor import DTensor

        module = self.module
        if getattr(module, '_is_init', False):
            print_log(f'init_weights of {type(module).__name__} has been called more than '
                      'once; it changes nothing the second time.', logger='current',
                      level=logging.WARNING)
            return
        plan = init_plan(module, unset=self._unset, own_init_cfg=is_base_init_weights(module))
        opaque = {p for op in plan.ops if isinstance(op, Call) for p in plan.paths_under(op.path)}
        shards, inputs, locals_ = {}, {}, {}
        for path, param in plan.params.items():
            local = param.to_local() if isinstance(param, DTensor) else param.data
            first = _first_row(param) if isinstance(param, DTensor) else 0
            shards[path] = row_shard(param.shape, first, local)
            locals_[path] = local
            if path in self._unset:
                inputs[path] = torch.empty(param.shape, dtype=param.dtype, device='meta')
            elif path in opaque and isinstance(param, DTensor):
                inputs[path] = param.full_tensor()  # opaque code may read its values
            else:
                inputs[path] = local
        result = init_shards(plan, shards, seed=torch.initial_seed() if seed is None else seed,
                             inputs=inputs, out=locals_)
        for path, tensor in result.buffers.items():
            owner_path, _, name = path.rpartition('.')
            module.get_submodule(owner_path)._buffers[name].copy_(tensor)
        self._unset = set()
        if dist.get_rank() == 0 and callable(getattr(module, '_dump_init_info', None)):
            module._dump_init_info(result.info)

    # -- the steps -------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients without reducing them (FSDP2's ``set_requires_gradient_sync``)."""
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    def train_step(self, data: Any, optim_wrapper) -> dict[str, torch.Tensor]:
        """Preprocess, forward in ``loss`` mode through FSDP2's hooks, parse, update.

        After ``module.compile_steps()``, the forward is compiled as ``compile_scope``
        says (once, on the first step). On update steps the log values are averaged over the
        ranks, as under :class:`~fengine.model.wrappers.MMDistributedDataParallel`; the
        gradient norm of clipping is the norm of the whole (sharded) gradient.
        """
        from .wrappers import _average_log_vars

        self._compile_blocks()
        with dist._explained_collective_errors():
            sync = optim_wrapper.should_sync()  # read before update_params counts it
            return _local_log_vars(self.module._eager_train_step(
                data, optim_wrapper, forward_module=self,
                finish_log_vars=lambda log_vars: _average_log_vars(self, log_vars, sync)))

    def val_step(self, data: Any) -> Any:
        """The wrapped model's eager ``val_step`` (compiled sharded submodules included)."""
        self._compile_blocks()
        with torch.no_grad():
            return self.module._eval_step(data)

    def test_step(self, data: Any) -> Any:
        return self.val_step(data)

    def _compile_blocks(self) -> None:
        """Compile what ``compile_scope`` names, once ``compile_steps()`` was called."""
        compiled = getattr(self.module, '_compiled_steps', None)
        if compiled is None or self._compiled_blocks:
            return
        options = compiled['options']
        if self.compile_scope == 'model':
            # FSDP2's hooks are dynamo-disabled: each one splits the forward, so fullgraph
            # cannot hold; the blocks' own forwards become separate graphs.
            _compile_forward(self.module, {**options, 'fullgraph': False})
            self._compiled_blocks = True
            return
        if not self.sharded_modules:
            print_log('compile: FSDP compiles the forward of each module shard_modules picks, '
                      'and shard_modules picks none, so training runs eagerly; set '
                      "shard_modules (e.g. ['Block']), or compile_scope='model'.",
                      logger='current', level=logging.WARNING)
        for name in self.sharded_modules:
            _compile_forward(self.module.get_submodule(name), options)
        self._compiled_blocks = True


def _compile_forward(sub: nn.Module, options: dict) -> None:
    """Replace ``sub.forward`` by a compiled copy, keeping its activation checkpointing."""
    from ..func.step import compile_method

    checkpointed = getattr(sub.forward, _MARK, False)
    inner = sub.forward.__wrapped__ if checkpointed else sub.forward
    # A code copy per module: dynamo allows 8 cache entries per code object.
    forward: Callable = compile_method(inner, options)
    sub.forward = _checkpointed(forward) if checkpointed else forward


_MMENGINE_KEYS = ('sharding_strategy', 'cpu_offload', 'mixed_precision', 'use_orig_params',
                  'device_id')
_MMENGINE_REFUSED = {
    'auto_wrap_policy': "use shard_modules=[class names] (FSDP2 shards the modules it is "
                        'applied to; there is no wrap policy)',
    'process_group': 'FSDP shards over all ranks of the default process group',
    'backward_prefetch': 'FSDP2 prefetches by itself',
    'forward_prefetch': 'FSDP2 prefetches by itself',
    'limit_all_gathers': 'FSDP2 has no such limit',
    'ignored_modules': 'not implemented: every parameter is sharded',
    'param_init_fn': "fengine initializes the shards from init_cfg (FSDP.init_weights)",
    'sync_module_states': 'not needed: every rank draws the same values from the seed',
}
_STRATEGIES = {'FULL_SHARD': True, 'SHARD_GRAD_OP': False}


@MODEL_WRAPPERS.register_module()
class MMFullyShardedDataParallel(FSDP):
    """MMEngine's wrapper name over :class:`FSDP`, taking the arguments of it that map.

    MMEngine: ``mmengine.model.MMFullyShardedDataParallel`` (FSDP1). Mapped:
    ``sharding_strategy`` (``'FULL_SHARD'`` -> ``reshard_after_forward=True``,
    ``'SHARD_GRAD_OP'`` -> ``False``), ``cpu_offload`` (a bool or
    ``dict(offload_params=...)``), ``mixed_precision`` (``param_dtype``,
    ``reduce_dtype``; FSDP1's ``buffer_dtype`` has no FSDP2 meaning), ``use_orig_params``
    (FSDP2 always keeps the original parameters: only ``True``), ``device_id``. Others
    are refused by name, saying what to do instead; fengine's own ``shard_modules``,
    ``device`` and ``compile_scope`` may be given too (``device_id`` wins over ``device``).
    """

    def __init__(self, module: nn.Module, shard_modules: Any = None,
                 device: torch.device | str | None = None, compile_scope: str = 'model',
                 **kwargs: Any) -> None:
        for key in kwargs:
            if key in _MMENGINE_REFUSED:
                raise ValueError(f'MMFullyShardedDataParallel: {key!r} is not supported '
                                 f'({_MMENGINE_REFUSED[key]})')
        check_keys('MMFullyShardedDataParallel arguments', kwargs, _MMENGINE_KEYS)
        args: dict[str, Any] = dict(device=device)
        strategy = kwargs.get('sharding_strategy', 'FULL_SHARD')
        strategy = getattr(strategy, 'name', strategy)  # torch's ShardingStrategy enum
        if strategy not in _STRATEGIES:
            raise ValueError(f'sharding_strategy={strategy!r} has no FSDP2 equivalent here; '
                             f'choose one of {choices_text(_STRATEGIES)}')
        args['reshard_after_forward'] = _STRATEGIES[strategy]
        offload = kwargs.get('cpu_offload', False)
        if isinstance(offload, dict):
            check_keys('cpu_offload', offload, ('offload_params',))
            offload = offload.get('offload_params', False)
        args['cpu_offload'] = bool(getattr(offload, 'offload_params', offload))
        precision = kwargs.get('mixed_precision')
        if precision is not None:
            if not isinstance(precision, dict):
                precision = {k: getattr(precision, k) for k in ('param_dtype', 'reduce_dtype',
                                                                'buffer_dtype')
                             if getattr(precision, k, None) is not None}
            if precision.get('buffer_dtype') is not None:
                raise ValueError("mixed_precision 'buffer_dtype' has no FSDP2 equivalent "
                                 '(buffers keep their dtype); remove it')
            check_keys('mixed_precision', precision, ('param_dtype', 'reduce_dtype',
                                                      'buffer_dtype'))
            args['mixed_precision'] = {k: v for k, v in precision.items()
                                       if k != 'buffer_dtype'}
        if kwargs.get('use_orig_params', True) is not True:
            raise ValueError('use_orig_params=False has no FSDP2 equivalent: FSDP2 always '
                             'keeps the original parameters (as DTensors); remove it')
        if kwargs.get('device_id') is not None:
            device_id = kwargs['device_id']
            args['device'] = torch.device('cuda', device_id) if isinstance(device_id, int) \
                else torch.device(device_id)
        super().__init__(module, shard_modules=shard_modules, compile_scope=compile_scope,
                         **args)
