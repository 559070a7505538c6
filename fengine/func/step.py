"""One compiled graph per training step: forward, backward, clipping and the optimizer update.

:func:`make_train_step` turns a :class:`~fengine.model.BaseModel` and its optimizer
wrapper into a :class:`TrainStep`; calling it on ``(state, batch)`` returns
``(state, log_vars)``. Inside one ``torch.compile(fullgraph=True)`` graph:

1. the data preprocessor and ``forward(mode='loss')`` run through
   ``torch.func.functional_call`` on the state's parameter and buffer trees;
2. ``torch.func.grad_and_value`` gives the gradients (buffers are passed as an
   explicit argument, so BatchNorm may update its statistics);
3. on update steps the gradients are clipped and applied with torch.optim's own math:
   for torch's ``SGD``, ``Adam`` and ``AdamW`` straight from the backward, through the
   functions their ``step()`` calls (``_grad_update.py``); for other optimizers through
   their ``step()``, which reads ``.grad``. Micro-steps of an accumulation window add
   their gradients into ``.grad``.

Two details keep it one graph. ``Optimizer.step`` is wrapped by
``_use_grad_for_differentiable``, which calls ``torch._dynamo.graph_break()``
unconditionally (https://github.com/pytorch/pytorch/issues/104053); the step calls the
undecorated function under ``no_grad`` instead. And dynamo refuses an optimizer step
when a parameter has a pending attribute mutation, so where ``.grad`` is needed (an
optimizer that reads it, an accumulation window) its buffers are created outside the
graph and written in place inside it.

Two more keep it *one compile* (``_optim_state.py``). Before the first compiled call
the optimizer's state is created as its first step would create it (else the second
call sees new state and recompiles), and float learning rates (and Adam's ``betas[0]``,
SGD's ``momentum``) become 0-d tensors that schedulers write in place (else each new
value is a recompile, and the ninth a hard error). ``OptimWrapper.get_lr()`` still reads floats.

fp16 loss scaling (an enabled ``GradScaler``) is part of the graph too
(``_loss_scale.py``): the loss is scaled by the scaler's scale tensor, the gradients
unscaled and checked with the scaler's own op, and the update runs unconditionally and
is selected away with ``torch.where`` where they overflowed, so no host sync decides it.
That can only undo state that existed before the update: as long as the optimizer's state
is not complete before its first step (``init_state_`` says so: SGD with dampening, an
optimizer without ``_init_group`` such as a user's own), steps run eagerly through the
optimizer wrapper, whose scaler does not call ``optimizer.step()`` on inf gradients.

Memory, and what ``.grad`` holds: with ``SGD``, ``Adam`` or ``AdamW`` a step holds what an
eager step with ``zero_grad(set_to_none=True)`` holds: the parameters, the optimizer
state and, until the update, the gradients. No ``.grad`` is kept between steps: after an
update every ``.grad`` is ``None``, as after MMEngine's ``OptimWrapper.update_params``;
within an accumulation window ``.grad`` holds the sum of the window's (scaled) gradients
so far, as in eager, and the update frees it. Other optimizers read ``.grad``: their
steps keep one persistent ``.grad`` buffer per parameter (zero after each update), that
is the gradients once more.

The state is *donated*: its tensors are updated in place and the same state is
returned, as with buffer donation in JAX; keep using the returned one.

When the step is compiled is decided here too: on the first call (the default of
:func:`make_train_step`), or in a worker thread while the first calls run eagerly
(``background=True``, the default of ``BaseModel.compile_steps``; see
``compile_background.py``). Every compilation is logged (``compile_watch.py``), and
inductor's output is cached on disk between runs (``compile_cache.py``).

Data parallel (``DistributedDataParallel``, or ``group=`` a process group of more than
one rank): DDP's reducer hooks never fire under ``torch.func.grad``, so the step
synchronizes itself. On an update step, after this micro-step's gradients are added to
the window's and before clipping, loss scaling's inf check and the update, the gradients and
the log values are averaged over the ranks with one functional all-reduce per dtype
(``torch.distributed._functional_collectives``, traced into the same graph). On the
other micro-steps of an accumulation window nothing is communicated, as DDP's
``no_sync``. Every rank therefore clips the same gradients, takes the same update and logs
the global mean loss. The log values also carry a flag that a loss of an earlier
micro-step of the window was not finite on some rank, so that a NaN anywhere shows in
rank 0's log (and stops the run before a checkpoint, see ``MessageHub.sync``). Buffers
are broadcast from rank 0 before each step when DDP's ``forward_sync_buffers`` (formerly
``broadcast_buffers``) is set, as DDP's forward does. The all-reduce waits for the whole
backward: unlike DDP's buckets it does not overlap with it.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import operator
import statistics
import time
import types
from typing import Any, Iterable, Iterator, NamedTuple

import torch
from torch import nn
from torch.func import functional_call, grad_and_value
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_flatten, tree_map

from .. import dist as _dist
from .._errors import suggest
from ..logging import print_log
from ._cpu_inductor import cpu_training_options
from ._grad_update import grad_update
from ._loss_scale import ready_scaler_, restorable, skippable_update_, unscale_, update_scale_
from ._optim_state import hold_hyperparams_, init_state_, optimizer_update, release_hyperparams_
from .compile_background import (BackgroundCompile, EagerInCompileThread,
                                 is_foreign_fx_trace_error, prepare_inductor_in_this_thread,
                                 refuse_eager_in_compile_thread)
from .compile_cache import use_compile_cache
from .compile_fork import AUTOGRAD_AFTER_FORK, ForkCompile, fork_unsafe_reason
from .compile_precompiled import load_precompiled, precompiled_path
from .compile_watch import CompileWatch

__all__ = ['TrainState', 'TrainStep', 'make_train_step', 'compile_options', 'compile_method']


class _Layout(NamedTuple):
    """What a call derives from the state's structure, kept until it changes.

    Made by :meth:`TrainStep._layout`, which checks it on every call (the parameters and,
    under data parallel, the buffers by identity; the optimizer's ``state`` dict by
    identity, which ``Optimizer.load_state_dict`` replaces; the parameters' device, which
    ``model.to()`` changes in place) and drops it whenever ``init_state_`` runs.
    """
    params: tuple[torch.Tensor, ...]
    device: torch.device  # the parameters'
    optimizer_state: Any  # the ``optimizer.state`` it was made for
    buffers: tuple[torch.Tensor, ...]  # every buffer (checked only under data parallel)
    nonempty_buffers: list[torch.Tensor]  # those DDP's forward broadcasts
    # ``restorable()`` for fp16 loss scaling, where the optimizer updates its state in
    # place (torch.optim's, with ``_init_group``); ``None``: made again on every update.
    restore: list[torch.Tensor] | None


class TrainState(NamedTuple):
    """What a training step reads and updates.

    Attributes:
        params: Trainable parameters by path (the model's own tensors).
        frozen: Parameters with ``requires_grad=False``, by path.
        buffers: Buffers by path (BatchNorm statistics...).
        optimizer: The ``torch.optim`` optimizer over ``params``, with its state.
    """
    params: dict[str, torch.Tensor]
    frozen: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer


def compile_options(compile: bool | dict) -> dict | None:
    """``True`` -> defaults, a dict -> ``torch.compile`` options, ``False`` -> ``None``.

    Besides ``torch.compile``'s own options, the dict may hold:

    - ``background``: compile the training step while eager steps run: ``'process'``
      (a forked child, :mod:`fengine.func.compile_fork`; on CUDA or without fork, a
      thread), ``'thread'`` (a worker thread, :mod:`fengine.func.compile_background`),
      ``True`` (``'process'``) or ``False`` (the first step waits for the compile);
    - ``precompiled`` (default ``True``): keep the compiled step in the compile cache
      folder and load it in the next run, without tracing again
      (:mod:`fengine.func.compile_precompiled`); needed by ``'process'``;
    - ``keep_faster`` (default ``True``): on CPU, after a background compile, time
      compiled steps against eager ones and keep the faster, logged with both times.
    """
    if not isinstance(compile, (bool, dict)) and compile is not None:
        raise TypeError(f'compile must be a bool or a dict of torch.compile options, but '
                        f'got {type(compile).__name__}: {compile!r}')
    if compile is False or compile is None:
        return None
    options = {} if compile is True else dict(compile)
    # Graph breaks inside a training step mean extra host round trips and a split
    # backward; fail loudly (and fall back to eager, unless strict) instead.
    options.setdefault('fullgraph', True)
    background = options.get('background', False)
    if not isinstance(background, bool) and background not in BACKGROUND_MODES:
        raise ValueError(f"compile option 'background' must be True, False, 'process' or "
                         f"'thread', but got {background!r}."
                         f"{suggest(str(background), BACKGROUND_MODES)}")
    for key in ('precompiled', 'keep_faster'):
        if key in options and not isinstance(options[key], bool):
            raise TypeError(f'compile option {key!r} must be True or False, but got '
                            f'{options[key]!r}')
    return options


# Keys of a compile dict that fengine reads and torch.compile does not get.
FENGINE_COMPILE_KEYS = ('background', 'precompiled', 'keep_faster')
# Where a background compile runs: a forked child (where fork is safe, see
# compile_fork.py), or a worker thread (compile_background.py). True picks the process.
BACKGROUND_MODES = ('process', 'thread')
# keep_faster: compiled steps timed, after the switch, against the eager ones (CPU only).
_TIMED_STEPS = 20  # of each kind before deciding
_WARMUP_STEPS = 3  # the first ones of each kind, left out (caches, allocator)


# Attempts of an eager step that meets another thread's FX tracing (_eager_while_compiling).
_FX_RETRIES = 100

# Numbers the code copies of compile_method.
_COPIES = itertools.count()


def compile_method(method, options: dict, watch: CompileWatch | None = None):
    """``torch.compile`` a bound method with a compile cache of its own.

    Dynamo keys its cache on the code object and allows ``recompile_limit`` (8) entries
    per code object. Every model's step shares one method's code, so the ninth model in
    a process would hit the limit (a hard error under ``fullgraph=True``). A copy of the
    code object gives each bound method its own cache. The copy also gets a name of its
    own: dynamo keeps what it learnt about input shapes (automatic dynamic shapes) by
    file, line and name, so a model stepped with batches of 16 after another model's
    batches of 8 would otherwise be traced with a symbolic batch size, which some ops
    under ``torch.func.grad`` (dropout) cannot take.

    With a ``watch``, the backend reports to it (graph counts, log lines, compiling in a
    background thread: see :class:`~fengine.func.compile_watch.CompileWatch`); with an
    inductor backend, compiled code is cached in fengine's compile cache folder
    (:mod:`fengine.func.compile_cache`).
    """
    function = method.__func__
    code = function.__code__.replace(co_name=f'{function.__code__.co_name}_{next(_COPIES)}')
    own = types.FunctionType(code, function.__globals__,
                             function.__name__, function.__defaults__, function.__closure__)
    own.__kwdefaults__ = function.__kwdefaults__
    kwargs = {k: v for k, v in options.items() if k not in FENGINE_COMPILE_KEYS}
    if kwargs.get('backend', 'inductor') == 'inductor':
        use_compile_cache()
    if watch is not None:
        watch.code_name = code.co_name
        kwargs = watch.torch_compile_kwargs(kwargs)
    return torch.compile(types.MethodType(own, method.__self__), **kwargs)


class TrainStep:
    """A training step compiled as one graph (see the module docstring).

    Args:
        model: A :class:`~fengine.model.BaseModel`, or a ``DistributedDataParallel``
            around one (its ``module`` is stepped and its process group synchronizes the
            gradients, see the module docstring).
        optim_wrapper: Its :class:`~fengine.optim.OptimWrapper` (clipping, accumulation
            and AMP settings are read from it).
        compile: ``True``, ``False`` (run the same function eagerly) or a dict of
            ``torch.compile`` options (``backend``, ``mode``...; ``mode='reduce-overhead'``
            replays the step as a CUDA graph on CUDA when shapes are static), which may
            add ``background=True``: the first call starts a worker thread that compiles
            the step, the calls run the model's eager step until it is ready, then the
            compiled one (:mod:`fengine.func.compile_background`; not under data
            parallel nor with fp16 loss scaling, which compile on the first call).
            Compilations are logged (:mod:`fengine.func.compile_watch`). With inductor
            and parameters on the CPU, fengine adds ``options={'layout_optimization':
            False}`` unless given (:mod:`fengine.func._cpu_inductor` says why).
        strict: Raise when compilation fails instead of warning and running eagerly.
        group: A ``torch.distributed`` process group to average the gradients over, for
            a model that is not wrapped in DDP (``None``: the DDP wrapper's group, or no
            synchronization). With more than one rank, the parameters and buffers are
            broadcast from rank 0 once, here, as DDP's constructor does.

    Raises:
        NotImplementedError: On a call, with fp16 loss scaling, while the optimizer's state
            can only appear in its first update (see the module docstring) and either
            ``strict`` is set or ``group`` is given without a DDP wrapper (such steps run
            eagerly, which only DDP can synchronize).

    A compiled step changes the optimizer's param groups in place on its first call:
    float ``lr`` (and Adam's ``betas[0]``, SGD's ``momentum``) become 0-d float32 tensors
    on the parameters' device; Adam-like groups with ``foreach=True`` get ``capturable=True`` (CUDA) or
    ``foreach=False`` (CPU), which torch.optim requires for tensor hyper-parameters. If
    compilation fails and the step falls back to eager, the floats are put back.
    """

    def __init__(self, model: nn.Module, optim_wrapper, *, compile: bool | dict = True,
                 strict: bool = False, group: Any = None) -> None:
        self.ddp = model if isinstance(model, DistributedDataParallel) else None
        if self.ddp is not None:
            model = self.ddp.module
            group = self.ddp.process_group if group is None else group
        self.model = model
        world_size = _dist.get_world_size(group) if group is not None else 1
        # Data parallel: the gradients are averaged over this group inside the step.
        self.group = group if world_size > 1 else None
        self.world_size = world_size
        # The buffers DDP's forward would broadcast from rank 0 (empty ones carry nothing);
        # `forward_sync_buffers` is the newer name of `broadcast_buffers`.
        forward_sync = self.ddp is not None and getattr(
            self.ddp, 'forward_sync_buffers', getattr(self.ddp, 'broadcast_buffers', True))
        self._broadcast_buffers = self.group is not None and forward_sync
        if self.group is not None and self.ddp is None:
            # What DDP's constructor does: rank 0's parameters and buffers on every rank.
            _dist.broadcast_coalesced([*model.parameters(), *model.buffers()], src=0,
                                      group=self.group)
        if not hasattr(optim_wrapper, 'optimizer'):
            raise TypeError(f'a compiled training step updates one optimizer, but got a '
                            f'{type(optim_wrapper).__name__} of several; a model trained with '
                            'several optimizers overrides train_step and calls each wrapper '
                            '(it runs eagerly; see fengine.optim.OptimWrapperDict).')
        self.optim_wrapper = optim_wrapper
        self.strict = strict
        optimizer = optim_wrapper.optimizer
        self._optimizer_step = optimizer_update(optimizer)
        # The update from gradient tensors, without .grad buffers (None: it needs them).
        self._grad_update = grad_update(optimizer)
        self._fell_back = False
        self._scales: dict[tuple, torch.Tensor] = {}
        self._held: dict = {}  # the 0-d tensors that replace float lrs (_optim_state.py)
        self._state_ready = False
        self._cached_layout: _Layout | None = None  # see _layout
        scaler = getattr(optim_wrapper, 'loss_scaler', None)
        # fp16 loss scaling is part of the graph (see _loss_scale.py), with the scaler's
        # own tensors; bf16 autocast needs no scaler.
        self._scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self._static_scale = getattr(optim_wrapper, 'static_loss_scale', None)
        self._warned_lazy_state = False
        # fengine's inductor choices for a step on the CPU (see _cpu_inductor.py).
        options = cpu_training_options(compile_options(compile), model.parameters())
        self._watch = None if options is None else CompileWatch(
            f'the training step of {type(model).__name__}', options)
        self._compiled = None if options is None else compile_method(self._step, options,
                                                                     self._watch)
        # Compiling without running (compile_background.py) needs one graph; data
        # parallel and fp16 loss scaling keep to the foreground.
        self._background_wanted = bool(
            options is not None and options.get('background') and options['fullgraph']
            and self.group is None and self._scaler is None)
        self._background: BackgroundCompile | ForkCompile | None = None
        self._on_cpu = all(param.device.type == 'cpu' for param in model.parameters())
        self._background_from = 0  # the step at which it began
        background = options.get('background') if options is not None else False
        self._fork_wanted = self._background_wanted and background in (True, 'process')
        self._precompiled_wanted = bool(self._background_wanted
                                        and options.get('precompiled', True))
        # torch.compile's own arguments, unwatched: precompile needs the bare backend.
        self._precompile_options = None if options is None else {
            k: v for k, v in options.items() if k not in FENGINE_COMPILE_KEYS}
        self._precompiled: dict[tuple, Any] = {}  # kind -> precompiled step (loaded)
        self._keep_faster = bool(self._background_wanted and options.get('keep_faster', True))
        self._eager_times: list[float] = []  # seconds of eager steps (keep_faster)
        self._compiled_times: list[float] = []
        self._prefer_eager = False  # keep_faster found the compiled steps slower
        self._background_kind: tuple | None = None  # what a ForkCompile compiles for
        self._fork_explained = False
        self._precompiled_refused: set[tuple] = set()  # kinds whose file was looked at
        # Kinds of call (_signature) compiled for, and those seen once and run eagerly.
        self._kinds_compiled: set[tuple] = set()
        self._kinds_seen: set[tuple] = set()

    @property
    def eval_waits(self) -> bool:
        """Whether validation steps should run eagerly now: the training step compiles in
        the background (a process, or a thread), it went back to eager steps because they
        were faster (``keep_faster``), or it runs on the CPU with background compile on:
        compiling the validation step then costs more than it can save."""
        if not self._background_wanted:
            return False
        # On the CPU the validation step's foreground compile (7-13 s for the tutorial's
        # MLP, a recompile for the last, shorter batch included) costs more than the
        # eager validation steps of a run take, and nothing runs meanwhile.
        return self._background is not None or self._prefer_eager or self._on_cpu

    @property
    def state(self) -> TrainState:
        """The model's and optimizer's current state, as trees."""
        params, frozen = {}, {}
        for name, param in self.model.named_parameters():
            (params if param.requires_grad else frozen)[name] = param
        return TrainState(params, frozen, dict(self.model.named_buffers()),
                          self.optim_wrapper.optimizer)

    # -- the function that is compiled -----------------------------------------------
    def _step(self, state: TrainState, data: Any, scale: torch.Tensor, update: bool,
              restore: list[torch.Tensor] | None = None,
              window: torch.Tensor | None = None,
              accumulated: bool = False) -> dict[str, torch.Tensor]:
        if not torch.compiler.is_compiling():
            refuse_eager_in_compile_thread()  # see compile_background.py
        model, wrapper, scaler = self.model, self.optim_wrapper, self._scaler
        with wrapper.optim_context(model):
            data = model.data_preprocessor(data, True)

        def loss_of(params, fixed):
            with wrapper.optim_context(model):
                losses = _forward(model, {**params, **fixed[0]}, fixed[1], data)
            loss, log_vars = model.parse_losses(losses)
            loss = loss * scale
            if scaler is not None:  # GradScaler.scale(loss)
                loss = loss * scaler._scale.to(device=loss.device)
            return loss, log_vars

        detached = {k: v.detach() for k, v in state.params.items()}
        grads, (_, log_vars) = grad_and_value(loss_of, has_aux=True)(
            detached, (state.frozen, state.buffers))
        log_vars = {k: v.detach() for k, v in log_vars.items()}
        params = list(state.params.values())
        # Without .grad (see _grad_update.py) an update reads this micro-step's gradients
        # as they come out of the backward; .grad holds what earlier micro-steps of an
        # accumulation window added up (None when there were none).
        direct = update and self._grad_update is not None
        with torch.no_grad():
            # ``accumulated`` (whether .grad holds earlier micro-steps) is an argument, not
            # read from .grad here: a trace in a background thread must not depend on
            # .grad buffers that the eager steps meanwhile create and free.
            grads = [grads[name] if direct and not accumulated
                     else param.grad.add_(grads[name]) for name, param in state.params.items()]
            if window is not None:  # data parallel
                # On update steps, the gradients and the log values are averaged over
                # the ranks (DDP's all-reduce), with the window's non-finite flag.
                log_vars = _dist._mean_log_vars(log_vars, window, self.group,
                                                self.world_size, sync=update, extra=grads)
            if update:
                if direct:
                    def clip() -> dict:
                        return wrapper.clip_grad_tensors(grads)

                    def optimizer_step() -> None:
                        self._grad_update(state.optimizer, dict(zip(params, grads)))
                else:  # the optimizer and clip_grads read .grad (which `grads` are)
                    def clip() -> dict:
                        return wrapper.clip_grads(params)

                    def optimizer_step() -> None:
                        self._optimizer_step(state.optimizer)
                if scaler is None:
                    log_vars.update(clip())
                    optimizer_step()
                else:  # AmpOptimWrapper.step: unscale, clip, step unless inf, update
                    found_inf = unscale_(scaler, grads)
                    log_vars.update(clip())
                    skippable_update_(optimizer_step, restore, found_inf)
                    update_scale_(scaler, found_inf, self._static_scale)
                if not direct:
                    for param in params:
                        param.grad.zero_()
        return log_vars

    # -- calling it ------------------------------------------------------------------
    def __call__(self, state: TrainState, data: Any) -> tuple[TrainState, dict]:
        """Run one step on ``data``; return the (updated) state and the log values."""
        if self._lazy_fp16_state(state):
            if self.ddp is not None:
                from ..model.wrappers import ddp_train_step

                return state, ddp_train_step(self.ddp, data, self.optim_wrapper)
            return state, self.model._eager_train_step(data, self.optim_wrapper)
        precompiled = None
        if self._background_wanted and not self._fell_back:
            if self._prefer_eager or self._eager_needed():
                self._watch.calls += 1
                return state, self._eager_while_compiling(data)
            if self._background is not None and self._background.done:
                self._end_background(state)
            if self._background_wanted and not self._fell_back:
                # A batch of a new shape (the shorter last batch of an epoch) or kind of
                # update (accumulation) would recompile in the foreground: it runs eagerly
                # and, from its second time on, compiles in the background (the last
                # batch of a one-epoch run is not worth a compilation). A kind with a
                # precompiled step runs it, even while another kind compiles.
                kind = _signature(data, self.optim_wrapper.should_sync())
                precompiled = self._precompiled.get(kind)
                if precompiled is not None and not self._fits(precompiled, state, data, kind):
                    precompiled = None
                if precompiled is None and self._background is not None:
                    self._watch.calls += 1  # compiling: eager steps meanwhile
                    return state, self._eager_while_compiling(data)
                if precompiled is None and kind not in self._kinds_compiled:
                    self._watch.calls += 1
                    if not self._kinds_compiled or kind in self._kinds_seen:
                        self._kinds_compiled.add(kind)
                        precompiled = self._load_precompiled(state, data, kind)
                        if precompiled is None:
                            self._start_background(state, data, kind)
                    else:
                        self._kinds_seen.add(kind)
                    if precompiled is None:
                        return state, self._eager_while_compiling(data)
                    self._watch.calls -= 1  # counted again below
        compiled = self._compiled is not None and not self._fell_back
        step = self._compiled if compiled else self._step
        if precompiled is not None:
            step = functools.partial(precompiled, self)
        if compiled:
            # A float lr is guarded by value: each scheduled change would recompile.
            hold_hyperparams_(state.optimizer, self._held)
        if (compiled or self._grad_update is not None) and not self._state_ready:
            # State that the first update creates would recompile the second call. What
            # cannot be created here (init_state_ returns False) costs that one recompile.
            # Adam's update without .grad (_grad_update.py) reads its state, never creates it.
            with _lent_grads(state.params.values()):
                init_state_(state.optimizer)
            self._cached_layout = None  # it may have created state tensors
            self._state_ready = True
        layout = self._layout(state)
        if self._scaler is not None:
            ready_scaler_(self._scaler, layout.device)
        factor, update = self.optim_wrapper.next_micro_step()
        accumulated = self._accumulated(state, update)
        if self._grad_update is None or not update:
            # Buffers the graph adds the gradients into, created outside it (see the module
            # docstring): for an optimizer that reads .grad, and for an accumulation window.
            for param in state.params.values():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
        scale = self._scale(factor, layout.device)
        restore = None
        if self._scaler is not None and update:
            restore = layout.restore
            if restore is None:
                restore = restorable(state.optimizer, list(layout.params))
        window = None
        if self.group is not None:
            # 0 while every loss of the window is finite, NaN for good after one is not.
            window = _dist._nonfinite_window(self, layout.device)
            buffers = layout.nonempty_buffers
            if self._broadcast_buffers and buffers:  # as DDP's forward: BatchNorm statistics
                with _dist._explained_collective_errors():
                    _dist.broadcast_coalesced(buffers, src=0, group=self.group)
        try:
            # A failed collective is explained; a compile error falls back to eager below.
            with _dist._explained_collective_errors(
                    unless=lambda exc: self.group is None or _is_compile_error(exc)):
                args = (state, data, scale, update, restore, window, accumulated)
                timed = compiled and self._timing_compiled()
                start = time.perf_counter() if timed else 0.0
                log_vars = self._watch.call(step, *args) if compiled else step(*args)
                if timed:
                    self._compiled_times.append(time.perf_counter() - start)
                    self._judge_speed()
        except Exception as exc:  # noqa: BLE001 - dynamo and backends raise many types
            if not compiled or self.strict or not _is_compile_error(exc):
                raise
            self._fall_back(state, exc)
            log_vars = self._step(state, data, scale, update, restore, window, accumulated)
        if update:
            # torch's LRScheduler wraps optimizer.step to set this flag; the update above
            # bypasses that wrapper, and the scheduler would warn it ran before any update.
            state.optimizer._opt_called = True
            if self._grad_update is not None:
                # As zero_grad(set_to_none=True) after an eager update: the sum of an
                # accumulation window is spent, and its buffers freed.
                for param in state.params.values():
                    param.grad = None
        return state, log_vars

    def _fall_back(self, state: TrainState, exc: BaseException) -> None:
        """Run eagerly from now on, after compiling failed with ``exc``; say so."""
        self._fell_back = True
        release_hyperparams_(state.optimizer, self._held)  # eager optimizers want floats
        print_log(f'compiling the training step of {type(self.model).__name__} failed, '
                  f'so it runs eagerly from now on: {type(exc).__name__}: '
                  f'{str(exc).splitlines()[0] if str(exc) else ""} (pass strict=True to '
                  'raise instead).', logger='current', level=logging.WARNING)

    def _accumulated(self, state: TrainState, update: bool) -> bool:
        """For an update from the gradients themselves (``_grad_update.py``): whether
        ``.grad`` holds what earlier micro-steps of the window added up. (Always ``False``
        where ``_step`` does not ask: one compiled variant, not two.)"""
        return (update and self._grad_update is not None
                and any(param.grad is not None for param in state.params.values()))

    # -- compiling in the background (compile_background.py) -------------------------
    def _start_background(self, state: TrainState, data: Any, kind: tuple) -> None:
        """Ready the state as the first compiled call would, and compile in a forked
        child (where it is safe) or a worker thread."""
        args = self._compile_args(state, data, clone=True)
        self._background_from = self._watch.calls
        unsafe = fork_unsafe_reason(self._layout(state).device) if self._fork_wanted else ''
        if self._fork_wanted and self._precompiled_wanted and unsafe is None:
            if not self._watch.started:
                self._watch.log_start(background='process')
            self._background_kind = kind
            self._background = ForkCompile(TrainStep._step, (self,) + args,
                                           self._precompile_options,
                                           self._precompiled_file(state, kind),
                                           {'step': self}).start()
            return
        if unsafe and not self._fork_explained:
            self._fork_explained = True
            print_log(f'{self._watch.what} compiles in a background thread, not a process: '
                      f'{unsafe}', logger='current')
        if self._watch.backend_name == 'inductor':
            prepare_inductor_in_this_thread()
        if not self._watch.started:
            self._watch.log_start(background=True)
        self._background = BackgroundCompile(self._compiled, args).start()

    def _compile_args(self, state: TrainState, data: Any, clone: bool = False) -> tuple:
        """Ready the state as the first compiled call would; the arguments of a compiled
        call on ``data`` (a clone of it with ``clone``), without ``self``."""
        # Traced for this micro-step's kind of update; the other kind (accumulation)
        # compiles when it first comes, as without a background compile.
        update = self.optim_wrapper.should_sync()
        if self._grad_update is None or not update:
            for param in state.params.values():
                if param.grad is None:  # the buffers the graph adds into (see __call__)
                    param.grad = torch.zeros_like(param)
        # The trace must see what every compiled call sees (see __call__), or the first
        # compiled call would compile again.
        hold_hyperparams_(state.optimizer, self._held)
        if not self._state_ready:
            with _lent_grads(state.params.values()):
                init_state_(state.optimizer)
            self._cached_layout = None
            self._state_ready = True
        device = self._layout(state).device
        if clone:  # the eager step preprocesses `data` meanwhile; the trace gets its own
            data = tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, data)
        return (state, data, self._scale(1, device), update, None, None,
                self._accumulated(state, update))

    # -- precompiled steps (compile_precompiled.py, compile_fork.py) ------------------
    def _precompiled_file(self, state: TrainState, kind: tuple):
        """The file of this step's precompiled graph for ``kind`` of call."""
        optimizer = state.optimizer
        groups = [sorted(k for k in group if k != 'params') for group in optimizer.param_groups]
        params = [(name, tuple(p.shape), p.dtype) for name, p in state.params.items()]
        return precompiled_path(
            'train_step', type(self.model).__module__, type(self.model).__qualname__,
            repr(self.model), params, sorted(state.frozen), sorted(state.buffers),
            type(optimizer).__module__, type(optimizer).__qualname__, groups,
            sorted(self._precompile_options.items(), key=lambda item: item[0]), kind,
            self._grad_update is not None,
            # dynamo guards on the intra-op thread count, which fengine's default takes
            # from the machine's load: one file per count, so that neither evicts the other.
            torch.get_num_threads())

    def _load_precompiled(self, state: TrainState, data: Any, kind: tuple) -> Any:
        """The precompiled step for ``kind`` from an earlier run, if there is one that
        fits this call (its guards hold); logged either way."""
        if not self._precompiled_wanted or kind in self._precompiled_refused:
            return None
        self._precompiled_refused.add(kind)  # one look per kind; a compile replaces it
        path = self._precompiled_file(state, kind)
        start = time.perf_counter()
        compiled, why = load_precompiled(path, {'step': self})
        if compiled is None:
            if why != 'missing':
                print_log(f'{self._watch.what} is compiled again, as its precompiled '
                          f'file is not used: {why}',
                          logger='current', level=logging.WARNING)
            return None
        compiled.disable_guard_check()  # checked by _fits, before anything runs
        self._precompiled[kind] = compiled
        if not self._fits(compiled, state, data, kind):
            return None
        self._watch.graphs += 1
        self._watch.started = True
        print_log(f'loaded {self._watch.what}, precompiled, from {path} in '
                  f'{time.perf_counter() - start:.1f} s; compiled steps from its step '
                  f'{self._watch.calls} on', logger='current')
        return compiled

    def _fits(self, compiled: Any, state: TrainState, data: Any, kind: tuple) -> bool:
        """Whether the guards of a precompiled step hold for this call; if not, the step
        is dropped (logged with dynamo's reason) and ``kind`` compiles again."""
        args = (self,) + self._compile_args(state, data)
        if compiled.guard_check(*args):
            return True
        reason = compiled._artifacts.guard_manager.check_verbose(compiled.prepare_f_locals(*args))
        parts = getattr(reason, 'verbose_code_parts', None) or [str(reason)]
        del self._precompiled[kind]
        self._kinds_compiled.discard(kind)
        self._kinds_seen.add(kind)  # compiles in the background at once
        print_log(f'{self._watch.what} is compiled again, as its precompiled graph does '
                  f'not fit this call: {str(parts[0]).split("  #")[0].strip()}',
                  logger='current')
        return False

    # -- keep_faster: compiled steps timed against eager ones -------------------------
    def _timing_compiled(self) -> bool:
        """Whether this compiled call is timed (keep_faster, on the CPU only: timing a
        CUDA step would need a host sync)."""
        if not self._keep_faster:
            return False
        layout = self._cached_layout
        if layout is None or layout.device.type != 'cpu':
            self._keep_faster = False
            return False
        return len(self._compiled_times) < _TIMED_STEPS

    def _eager_needed(self) -> bool:
        """Whether eager steps must be timed before deciding (a precompiled step loaded
        at the first step leaves none to compare with)."""
        return (self._keep_faster and len(self._compiled_times) >= _TIMED_STEPS
                and len(self._eager_times) < _TIMED_STEPS)

    def _judge_speed(self) -> None:
        """Once both kinds of step were timed: keep the compiled steps, or go back to
        eager steps for good when they are faster; logged with both times."""
        if len(self._compiled_times) < _TIMED_STEPS or len(self._eager_times) < _TIMED_STEPS:
            return
        self._keep_faster = False  # decided once
        compiled = statistics.median(self._compiled_times[_WARMUP_STEPS:])
        eager = statistics.median(self._eager_times[_WARMUP_STEPS:])
        times = f'{compiled * 1e3:.2f} ms per compiled step, {eager * 1e3:.2f} ms per eager one'
        if compiled <= eager:
            print_log(f'{self._watch.what} keeps its compiled steps ({times})',
                      logger='current')
            return
        self._prefer_eager = True
        print_log(f'{self._watch.what} runs eager steps from its step '
                  f'{self._watch.calls + 1} on, as they are faster ({times}; '
                  "compile=dict(keep_faster=False) keeps the compiled ones)", logger='current')

    def _eager_while_compiling(self, data: Any) -> dict[str, torch.Tensor]:
        """The model's eager step (``compile=False``'s), with ``.grad`` as the compiled
        step leaves it.

        An optimizer that reads ``.grad`` keeps its buffers (``zero_grad(set_to_none=False)``):
        the worker's trace reads the buffers the compiled step adds into, so they must
        exist whenever it looks. An update from the gradients themselves
        (``_grad_update.py``) frees them after each update, as the compiled step does;
        its trace reads ``.grad`` only for the end of an accumulation window.

        A module called while the worker runs FX's symbolic tracing fails (see
        :func:`~fengine.func.compile_background.prepare_inductor_in_this_thread`); that
        forward pass is run again. It failed at a module call, before any gradient or
        update; only normalization statistics updated before that call see the batch
        twice.
        """
        free = self._grad_update is not None
        attempts = 0
        while True:
            try:
                if not self._keep_faster:
                    return self.model._eager_train_step(data, self.optim_wrapper,
                                                         zero_kwargs=dict(set_to_none=free))
                start = time.perf_counter()
                log_vars = self.model._eager_train_step(data, self.optim_wrapper,
                                                        zero_kwargs=dict(set_to_none=free))
                # The latest ones: the first steps of a run are slower (allocator, caches).
                self._eager_times = self._eager_times[-4 * _TIMED_STEPS:]
                self._eager_times.append(time.perf_counter() - start)
                self._judge_speed()
                return log_vars
            except NameError as exc:
                attempts += 1
                if not is_foreign_fx_trace_error(exc) or attempts >= _FX_RETRIES:
                    raise
                time.sleep(0.01)  # the window is one short trace

    def _end_background(self, state: TrainState) -> None:
        """Take the worker's result: switch to the compiled step, or fall back, or go on
        compiling in the foreground (an error of the model itself shows there)."""
        background, self._background = self._background, None
        error = background.error
        if isinstance(background, ForkCompile):
            self._end_fork(state, background)
            return
        if error is None:
            self._watch.settle(background.seconds, background_from=self._background_from)
        elif isinstance(error, EagerInCompileThread):
            self._background_wanted = False
            print_log(f'{error}; the training step of {type(self.model).__name__} is called '
                      'in the foreground from now on', logger='current', level=logging.WARNING)
        elif isinstance(error, Exception) and _is_compile_error(error):
            if self.strict:
                raise error
            self._fall_back(state, error)
        else:  # the model's own error: the compiled call in the foreground meets it
            self._background_wanted = False

    def _end_fork(self, state: TrainState, child: ForkCompile) -> None:
        """Load what the child precompiled, from the next step on; if it failed, compile
        in a thread instead (dynamo's error, if any, shows there)."""
        kind = self._background_kind
        compiled, why = None, child.error
        if why is None:
            compiled, why = load_precompiled(child.path, {'step': self})
        if compiled is None:
            self._fork_wanted = False
            self._kinds_compiled.discard(kind)
            self._kinds_seen.add(kind)
            print_log(f'compiling {self._watch.what} in a background process failed '
                      f'({why}); it compiles in a background thread instead',
                      logger='current', level=logging.INFO if why == AUTOGRAD_AFTER_FORK
                      else logging.WARNING)
            return
        compiled.disable_guard_check()  # checked by _fits, before anything runs
        self._precompiled[kind] = compiled
        self._watch.graphs += 1
        self._watch.log_end(child.seconds, switch_step=self._watch.calls + 1)

    def _lazy_fp16_state(self, state: TrainState) -> bool:
        """Whether this fp16 step must run eagerly through the wrapper: incomplete state.

        A skipped fp16 update puts back the tensors that existed before it (``restorable``),
        so every state tensor the optimizer's step reads must exist before it; state that
        the step creates would survive the skip, inf/NaN, and poison the next update.
        ``init_state_`` creates what it can and says whether that is all of it. Until it
        is, the step runs through the wrapper, whose ``GradScaler`` does not call
        ``optimizer.step()`` on inf gradients; the first update that runs creates the
        state, and the following calls take the compiled step. (A stateless optimizer
        without ``_init_group`` is never seen as complete, and always runs eagerly.)
        """
        if self._scaler is None or self._state_ready:
            return False
        # init_state_ creates state for the parameters with a .grad, lent it here.
        with _lent_grads(state.params.values()):
            self._state_ready = init_state_(state.optimizer)
        self._cached_layout = None  # it may have created state tensors
        if self._state_ready:
            return False
        optimizer = state.optimizer
        message = (f'the training step of {type(self.model).__name__} uses fp16 loss scaling '
                   f'with {type(optimizer).__name__}, whose state only its first update '
                   'creates (SGD with dampening != 0, or an optimizer without torch.optim\'s '
                   '_init_group), which the compiled step could not undo on inf gradients; '
                   'it runs eagerly through the optimizer wrapper until an update has created '
                   'the state. Use dampening=0, or bf16 autocast, which needs no scaler.')
        if self.strict:
            raise NotImplementedError(message)
        if self.group is not None and self.ddp is None:
            raise NotImplementedError(message.replace('it runs eagerly', 'it would run '
                                      'eagerly') + ' Without a DDP wrapper that eager step '
                                      'could not synchronize the gradients over `group`.')
        if not self._warned_lazy_state:
            self._warned_lazy_state = True
            print_log(message, logger='current', level=logging.WARNING)
        return True

    def _layout(self, state: TrainState) -> _Layout:
        """The parameters, their device, the buffers to broadcast and the fp16 restore list.

        Walking every parameter's optimizer state (``restorable``) and filtering the buffers
        on every call is host work per step; it is done once and redone only when what it
        depends on changes (see :class:`_Layout`). The cached restore list holds the very
        tensors a fresh one would, in the same order.
        """
        layout = self._cached_layout
        if (layout is not None and layout.optimizer_state is state.optimizer.state
                and _same_tensors(layout.params, state.params.values())
                and next(iter(layout.params)).device == layout.device
                and (self.group is None
                     or _same_tensors(layout.buffers, state.buffers.values()))):
            return layout
        params = tuple(state.params.values())
        buffers = tuple(state.buffers.values())
        optimizer = state.optimizer
        # Only torch.optim's optimizers are known to update their state tensors in place,
        # so that the list stays right; another one's may replace them in its step.
        restore = (restorable(optimizer, list(params))
                   if self._scaler is not None and self._state_ready
                   and hasattr(optimizer, '_init_group') else None)
        layout = _Layout(params=params, device=next(iter(params)).device,
                         optimizer_state=optimizer.state, buffers=buffers,
                         nonempty_buffers=[b for b in buffers if b.numel()], restore=restore)
        self._cached_layout = layout
        return layout

    def _scale(self, factor: int, device: torch.device) -> torch.Tensor:
        """``1 / factor`` as a 0-d tensor, so a new factor is a new value, not a recompile."""
        key = (factor, device)
        if key not in self._scales:
            self._scales[key] = torch.tensor(1.0 / factor, device=device)
        return self._scales[key]


def _forward(model: nn.Module, params: dict, buffers: dict, data: Any) -> Any:
    if isinstance(data, dict):
        return functional_call(model, (params, buffers), (), {**data, 'mode': 'loss'})
    if isinstance(data, (list, tuple)):
        return functional_call(model, (params, buffers), tuple(data), {'mode': 'loss'})
    raise TypeError(f'a batch must be a dict or a tuple/list, but the data preprocessor '
                    f'returned {type(data).__name__}')


@contextlib.contextmanager
def _lent_grads(params: Iterable[torch.Tensor]) -> Iterator[None]:
    """Zero ``.grad`` for the ``params`` that have none, taken back (``None``) on exit.

    ``init_state_`` creates the optimizer state of the parameters with a ``.grad``.
    """
    lent = [p for p in params if p.grad is None]
    for param in lent:
        param.grad = torch.zeros_like(param)
    try:
        yield
    finally:
        for param in lent:
            param.grad = None


def _signature(data: Any, update: bool) -> tuple:
    """What of a call a new compilation depends on, as far as it can be told cheaply:
    the batch's tensors' shapes, dtypes and devices, and whether the call updates."""
    leaves = [(tuple(x.shape), x.dtype, x.device) for x in tree_flatten(data)[0]
              if isinstance(x, torch.Tensor)]
    return (tuple(leaves), update)


def _same_tensors(cached: tuple[torch.Tensor, ...], tensors) -> bool:
    """Whether ``tensors`` (an iterable of known length) are the ``cached`` ones, in order."""
    return len(cached) == len(tensors) and all(map(operator.is_, cached, tensors))


def _is_compile_error(exc: Exception) -> bool:
    """True for failures of dynamo or a backend, not for errors in the user's model."""
    module = type(exc).__module__ or ''
    return module.startswith(('torch._dynamo', 'torch._inductor', 'torch.fx'))


def make_train_step(model: nn.Module, optim_wrapper, *, compile: bool | dict = True,
                    strict: bool = False, group: Any = None) -> TrainStep:
    """A :class:`TrainStep` for ``model``: call it as ``state, logs = step(state, batch)``.

    ``model`` may be a ``DistributedDataParallel`` around a BaseModel: the step then
    averages the gradients over its process group (see :class:`TrainStep`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fengine.model import BaseModel
        >>> from fengine.optim import OptimWrapper
        >>> from fengine.func import make_train_step
        >>> class Net(BaseModel):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(4, 2)
        ...     def forward(self, x, y, mode='tensor'):
        ...         return dict(loss=nn.functional.cross_entropy(self.fc(x), y))
        >>> net = Net()
        >>> wrapper = OptimWrapper(torch.optim.SGD(net.parameters(), lr=0.1))
        >>> step = make_train_step(net, wrapper, compile=dict(backend='eager'))
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as console:  # the log lines
        ...     state, logs = step(step.state, (torch.randn(8, 4), torch.randint(0, 2, (8,))))
        >>> 'compiled the training step of Net' in console.getvalue()
        True
        >>> sorted(logs)
        ['loss']
    """
    return TrainStep(model, optim_wrapper, compile=compile, strict=strict, group=group)
