"""Training-step throughput: steps/s and samples/s, one step = forward, backward, update.

Every contender trains the same network from the same initial weights (the preset
built under ``torch.manual_seed(0)``) with ``SGD(lr=0.01, momentum=0.9)`` on the same
pre-generated synthetic batches (no data loading is timed):

- ``mmengine eager``: an ``mmengine.model.BaseModel`` subclass,
  ``model.train_step(batch, mmengine.optim.OptimWrapper(...))``.
- ``fengine eager``: the same with ``fengine.model.BaseModel`` and
  ``fengine.optim.OptimWrapper``.
- ``fengine compiled``: ``fengine.func.make_train_step(model, wrapper, compile=True)``
  (inductor, one graph for forward, backward and the SGD update), called as
  ``state, logs = step(state, batch)``. The baseline of the ratios.
- ``hand-written torch.compile loop``: a plain ``nn.Module``; forward and loss in one
  ``torch.compile``d function, then ``loss.backward(); opt.step(); opt.zero_grad()``
  in eager Python, as the ``torch.compile`` tutorial writes a training loop.

Models (:data:`STEP_MODELS`): the seed's FashionMNIST MLP at batch 64, torchvision's
ResNet-18 (10 classes) at batch 32 on 3x64x64 images, on CUDA only a GPT-2-small
shape (``gpt-125m``) at 1024 tokens in bfloat16 autocast (``AmpOptimWrapper`` for the
engines, ``torch.autocast`` in the hand-written loop), and the same GPT on the CPU in
float32 at 2 x 32 tokens (``gpt-125m-cpu-f32-32tok``).

Each contender runs in a fresh interpreter of its own (:func:`bench_step`), so its
peak memory is its own and its compile cache empty. The contenders of a model are
built one after the other; their warm-up steps are timed one by one and reported
apart as the compile and warm-up time (for eager contenders they are just first
steps). Then the contenders take turns, each timing a block of ``steps`` steps per
round while the others wait, so that a slow spell of a shared machine hits them
alike; the clock is read only after the block's last loss has been materialized
(``float(loss)``, and ``torch.cuda.synchronize`` on CUDA). Peak memory is the
high-water mark during the timed steps over what the process held before the model
was built: RSS on the CPU (``/proc/self/clear_refs`` resets the mark after
warm-up), ``torch.cuda.max_memory_allocated`` on CUDA. A compiled contender's RSS
includes what compiling left behind (the compiler's modules and caches, the compiled
code), paid once per process; so each row also says what the warm-up left resident, how
far the timed steps raised memory above that, and the tensors alive at the peak of one
step (:func:`tensor_peak`): the step's own steady-state memory.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import importlib.util
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from fengine.presets import get_preset

from .init_bench import set_ratios

__all__ = ['STEP_MODELS', 'CONTENDERS', 'BASELINE', 'WARMUP', 'StepModel', 'ContenderRun',
           'bench_step', 'run_contender', 'tensor_peak']

BASELINE = 'fengine compiled'
# Ratios fall back to this contender on a model where the baseline failed.
FALLBACK_BASELINE = 'fengine eager'
SKIPPED = 'skipped (not installed)'
LR, MOMENTUM = 0.01, 0.9
DISTINCT_BATCHES = 4  # pre-generated, cycled through
# Untimed steps first: a compiled step compiles on the first and may recompile on the
# second (fengine's does, once the optimizer has state).
WARMUP = 3
STEAL_NOTE = 0.05  # a row says how much CPU time the hypervisor took, from this share


@dataclass(frozen=True)
class StepModel:
    """A preset trained at a batch size: what one row of the step benchmark runs.

    Attributes:
        preset: Name in :data:`fengine.presets.PRESETS`.
        batch_size: Samples per step.
        num_classes: Classes of the labels (for a GPT, its vocabulary: the targets
            are next tokens).
        bf16: Train under bfloat16 autocast.
        cuda_only: Skipped on other devices (too slow on a CPU to be worth timing).
        cpu_steps: Timed steps per block on the CPU (the default of :func:`bench_step`).
        cuda_steps: The same on CUDA, where steps are much shorter.
        seq_len: For a GPT: tokens per sample (``None``: the preset's whole context).
    """
    preset: str
    batch_size: int
    num_classes: int
    bf16: bool = False
    cuda_only: bool = False
    cpu_steps: int = 50
    cuda_steps: int = 200
    seq_len: int | None = None

    def steps(self, device: torch.device) -> int:
        """The default number of timed steps per block on ``device``."""
        return self.cuda_steps if device.type == 'cuda' else self.cpu_steps


# Step counts: a block lasts about a second (on 2 CPU cores), so that many short rounds
# sample a shared machine's slow and fast spells for every contender alike.
STEP_MODELS: dict[str, StepModel] = {
    'fashion-mlp': StepModel('fashion-mlp', batch_size=64, num_classes=10, cpu_steps=200,
                             cuda_steps=1000),
    'resnet18-64': StepModel('resnet18-64', batch_size=32, num_classes=10, cpu_steps=3,
                             cuda_steps=300),
    'gpt-125m': StepModel('gpt-125m', batch_size=8, num_classes=50304, bf16=True,
                          cuda_only=True, cuda_steps=50),
    # The same 124M parameters on a CPU: float32, 2 x 32 tokens. A step still takes
    # seconds on one core: the update and the 50304-word head do not shrink with the batch.
    'gpt-125m-cpu-f32-32tok': StepModel('gpt-125m', batch_size=2, num_classes=50304,
                                        seq_len=32, cpu_steps=1, cuda_steps=50),
}
"""Model name -> how the step benchmark trains it."""


def mmengine_available() -> bool:
    """Whether MMEngine can be imported (it is the optional ``bench`` extra)."""
    return importlib.util.find_spec('mmengine') is not None


def make_batches(spec: StepModel, device: torch.device, count: int = DISTINCT_BATCHES,
                 seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` synthetic ``(inputs, labels)`` batches on ``device``, the same in every process."""
    preset = get_preset(spec.preset)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        # The preset's example input gives shape and dtype; values come from `gen`.
        like = preset.example_input(spec.batch_size, device='meta')
        if spec.seq_len is not None:
            like = like[:, :spec.seq_len]
        if like.dtype.is_floating_point:
            inputs = torch.randn(like.shape, generator=gen)
        else:  # token ids
            inputs = torch.randint(spec.num_classes, like.shape, generator=gen)
        label_shape = like.shape[:2] if not like.dtype.is_floating_point else like.shape[:1]
        labels = torch.randint(spec.num_classes, label_shape, generator=gen)
        batches.append((inputs.to(device), labels.to(device)))
    return batches


def initial_net(spec: StepModel, device: torch.device) -> nn.Module:
    """The preset's network with the initial weights every contender starts from."""
    torch.manual_seed(0)  # the same weights in every process: builds are deterministic
    return get_preset(spec.preset).build().to(device)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension (one label per image, or per token)."""
    return F.cross_entropy(logits.flatten(0, -2), labels.flatten())


def _sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)


# -- the engines' models: the plain network under each BaseModel -------------------------
@functools.cache
def _model_class(engine: str) -> type[nn.Module]:
    """The plain network under ``engine``'s ``BaseModel`` (``'fengine'`` or ``'mmengine'``)."""
    if engine == 'mmengine':
        from mmengine.model import BaseModel
    else:
        from fengine.model import BaseModel

    class Net(BaseModel):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, inputs, labels, mode='tensor'):
            logits = self.net(inputs)
            return dict(loss=classification_loss(logits, labels)) if mode == 'loss' else logits

    Net.__name__ = Net.__qualname__ = f'{engine.capitalize()}Net'
    return Net


# -- the contenders: each returns `step(batch) -> loss tensor` (not read) -----------------
Step = Callable[[Any], torch.Tensor]


def _mmengine_eager(spec: StepModel, device: torch.device, compile: dict | bool) -> Step:
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    model = _model_class('mmengine')(initial_net(spec, device)).to(device)
    optimizer = _sgd(model.parameters())
    wrapper = (AmpOptimWrapper(optimizer=optimizer, dtype=torch.bfloat16) if spec.bf16
               else OptimWrapper(optimizer))
    return lambda batch: model.train_step(batch, wrapper)['loss'].detach()


def _fengine_wrapper(model: nn.Module, spec: StepModel):
    from fengine.optim import AmpOptimWrapper, OptimWrapper

    optimizer = _sgd(model.parameters())
    return (AmpOptimWrapper(optimizer=optimizer, dtype=torch.bfloat16) if spec.bf16
            else OptimWrapper(optimizer))


def _fengine_eager(spec: StepModel, device: torch.device, compile: dict | bool) -> Step:
    model = _model_class('fengine')(initial_net(spec, device))
    wrapper = _fengine_wrapper(model, spec)
    return lambda batch: model.train_step(batch, wrapper)['loss'].detach()


def _fengine_compiled(spec: StepModel, device: torch.device, compile: dict | bool) -> Step:
    from fengine.func import make_train_step

    model = _model_class('fengine')(initial_net(spec, device))
    # compile={} is torch.compile's defaults (inductor); False (tests) runs the same
    # function uncompiled. strict: a failed compile must fail the row, not be timed
    # eagerly under this name.
    step = make_train_step(model, _fengine_wrapper(model, spec),
                           compile=compile if compile is False else (compile or True),
                           strict=True)
    state = step.state

    def run(batch):
        nonlocal state
        state, logs = step(state, batch)
        return logs['loss']
    return run


def _hand_written(spec: StepModel, device: torch.device, compile: dict | bool) -> Step:
    net = initial_net(spec, device)
    optimizer = _sgd(net.parameters())

    # The loop of the torch.compile tutorial: forward and loss compiled as one function
    # (AOTAutograd compiles its backward too); backward, step and zero_grad stay eager.
    # Default torch.compile options (no fullgraph), as a user would write it.
    def loss_of(inputs, labels):
        return classification_loss(net(inputs), labels)

    if compile is not False:  # False: the tests' uncompiled run of the same loop
        loss_of = torch.compile(loss_of, **compile)

    autocast = (functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
                if spec.bf16 else contextlib.nullcontext)

    def run(batch):
        with autocast():
            loss = loss_of(*batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.detach()
    return run


CONTENDERS: dict[str, Callable[[StepModel, torch.device, dict | bool], Step]] = {
    'mmengine eager': _mmengine_eager,
    'fengine eager': _fengine_eager,
    'fengine compiled': _fengine_compiled,
    'hand-written torch.compile loop': _hand_written,
}
"""Contender name -> function ``(model spec, device, compile options) -> step(batch)``.

The compile options are ``torch.compile``'s keyword arguments (``{}``: its defaults,
inductor), or ``False`` to run the compiled contenders' code without compiling (tests).
"""


# -- memory ------------------------------------------------------------------------------
def _proc_status(key: str) -> int | None:
    """A ``/proc/self/status`` field in bytes (Linux), or ``None``."""
    try:
        with open('/proc/self/status') as status:
            match = re.search(rf'^{key}:\s+(\d+) kB', status.read(), re.M)
    except OSError:
        return None
    return None if match is None else int(match.group(1)) * 1024


def _reset_peak_rss() -> bool:
    """Set the RSS high-water mark to the current RSS (Linux ``clear_refs``, value 5)."""
    try:
        with open('/proc/self/clear_refs', 'w') as refs:
            refs.write('5')
    except OSError:
        return False
    return True


def _peak_rss() -> int:
    hwm = _proc_status('VmHWM')
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == 'darwin' else maxrss * 1024  # bytes on macOS, else kB


class _Memory:
    """Peak memory of the timed steps over the memory held before the model was built.

    Also what the warm-up left resident (:attr:`resident`: compiled code and the
    compiler's own caches included) and, on the CPU, how far the timed steps raised the
    RSS above that (:meth:`rise`): the steady-state cost of a step, apart from the
    one-time cost of compiling it.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.note = ''
        self.resident: int | None = None
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.base = _proc_status('VmRSS') or _peak_rss()

    def _current(self) -> int:
        if self.device.type == 'cuda':
            return torch.cuda.memory_allocated(self.device)
        return _proc_status('VmRSS') or _peak_rss()

    def before_timing(self) -> None:
        self.resident = self._current() - self.base
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_peak_rss():
            self.note = 'peak RSS could not be reset: includes compilation'

    def peak(self) -> int:
        if self.device.type == 'cuda':
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return _peak_rss() - self.base

    def rise(self) -> int | None:
        """The peak of the timed steps over the memory held when they began."""
        return None if self.resident is None else self.peak() - self.resident


def _live_tensor_bytes(device: torch.device) -> int:
    """Bytes of every tensor storage alive in this process on ``device``, each counted once."""
    storages = {}
    for obj in gc.get_objects():
        # Parameters and plain tensors: not the compiler's fake or functional wrappers.
        if type(obj) in (torch.Tensor, nn.Parameter) and obj.device.type == device.type:
            try:
                storage = obj.untyped_storage()
            except (NotImplementedError, RuntimeError):  # torch.func's wrappers have none
                continue
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def tensor_peak(step: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes of the tensors alive during one call of ``step``: held plus allocated.

    ``torch.cuda.max_memory_allocated`` on CUDA. On the CPU, where torch keeps no such
    statistic, the tensors alive before the call (:func:`_live_tensor_bytes`) plus the
    high-water mark of the profiler's count of the bytes allocated during it (its
    allocation events carry the running total). Unlike RSS it does not see the
    allocator's caching or the compiler's own memory: the CPU analogue of the CUDA figure.
    """
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        float(step())
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    held = _live_tensor_bytes(device)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        float(step())
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    allocated = 0
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation:
            allocated = max(allocated, event.extra_fields.total_allocated)
    return held + allocated


def _cpu_times() -> list[int] | None:
    """The machine's CPU time by kind, in clock ticks (``/proc/stat``); ``None`` off Linux.

    The kinds are user, nice, system, idle, iowait, irq, softirq, steal, ...
    """
    try:
        with open('/proc/stat') as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return values if len(values) >= 8 else None


def _steal(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the machine's CPU time between two :func:`_cpu_times` readings that
    the hypervisor gave to other guests: what neighbours on a shared virtual machine
    took (0 on bare metal)."""
    if before is None or after is None:
        return None
    deltas = [b - a for a, b in zip(before[:8], after[:8])]
    total = sum(deltas)  # guest time is already counted in user time
    return deltas[7] / total if total > 0 else None


# -- one contender, in this process -------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class ContenderRun:
    """One contender on one model, built and warmed up, ready to time blocks of steps.

    Construction builds the contender and runs ``warmup`` steps, each timed on its
    own (the first one compiles, and a compiled step may compile again on the next
    calls, e.g. once the optimizer has state). :meth:`block` then times ``steps``
    steps, reading the clock only after the last step's loss is materialized
    (``float(loss)``, and a synchronize on CUDA). As in ``timeit``, the cyclic
    garbage collector is off while a block is timed.

    Args:
        model: Name in :data:`STEP_MODELS`.
        contender: Name in :data:`CONTENDERS`.
        device: Where to train.
        warmup: Untimed steps before the blocks (at least 1).
        compile: ``torch.compile`` options for a compiled contender (``{}``:
            inductor), or ``False`` to run its code uncompiled.
        measure_memory: Track peak memory (meaningful when the contender has the
            process to itself).
    """

    def __init__(self, model: str, contender: str, device: torch.device | str, *,
                 warmup: int = WARMUP, compile: dict | bool | None = None,
                 measure_memory: bool = True) -> None:
        self.device = torch.device(device)
        spec = STEP_MODELS[model]
        self.batches = make_batches(spec, self.device)
        self.memory = _Memory(self.device) if measure_memory else None
        self.step = CONTENDERS[contender](spec, self.device, compile if compile is False
                                          else dict(compile or {}))
        self.warmup_times: list[float] = []
        self.first_loss = self.last_loss = None
        before = _cpu_times()
        for index in range(max(warmup, 1)):
            _sync(self.device)
            start = time.perf_counter()
            loss = float(self.step(self.batches[index % len(self.batches)]))
            _sync(self.device)
            self.warmup_times.append(time.perf_counter() - start)
            self.first_loss = loss if self.first_loss is None else self.first_loss
        self.last_loss = loss
        self.warmup_steal = _steal(before, _cpu_times())
        self.process_peak = _peak_rss() if self.device.type != 'cuda' else None
        self.times: list[float] = []
        self._ticks = [0] * 8  # CPU ticks by kind while blocks ran (for the steal share)

    def block(self, steps: int) -> float:
        """Time ``steps`` steps; return the seconds per step."""
        if self.memory is not None and not self.times:
            self.memory.before_timing()  # the peak of the timed steps, not of compiling
        before = _cpu_times()
        _sync(self.device)
        gc.disable()
        try:
            start = time.perf_counter()
            for index in range(steps):
                loss = self.step(self.batches[index % len(self.batches)])
            self.last_loss = float(loss)  # the last step's result, materialized
            _sync(self.device)
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        after = _cpu_times()
        if before is not None and after is not None:
            self._ticks = [t + b - a for t, a, b in zip(self._ticks, before[:8], after)]
        self.times.append(elapsed / steps)
        return self.times[-1]

    def result(self) -> dict:
        """What was measured (see :func:`run_contender`)."""
        if self.device.type != 'cuda':
            self.process_peak = max(self.process_peak, _peak_rss())
        memory = self.memory
        peak = None if memory is None else memory.peak()
        rise = None if memory is None else memory.rise()
        tensors = None
        if memory is not None:  # after the timed blocks: one more step, profiled
            batch = self.batches[len(self.times) % len(self.batches)]
            tensors = tensor_peak(lambda: self.step(batch), self.device) - (
                memory.base if self.device.type == 'cuda' else 0)
        return dict(times=self.times, warmup_times=self.warmup_times,
                    first_loss=self.first_loss, last_loss=self.last_loss,
                    peak_mem_bytes=peak,
                    resident_bytes=None if memory is None else memory.resident,
                    step_rise_bytes=rise, tensor_peak_bytes=tensors,
                    mem_note='' if memory is None else memory.note,
                    process_peak_bytes=self.process_peak,
                    steal=_steal([0] * 8, self._ticks), warmup_steal=self.warmup_steal)


def run_contender(model: str, contender: str, device: torch.device | str, *, steps: int,
                  repeats: int, **kwargs) -> dict:
    """A :class:`ContenderRun` timed for ``repeats`` blocks of ``steps`` steps.

    Args:
        kwargs: :class:`ContenderRun`'s ``warmup``, ``compile``, ``measure_memory``.

    Returns:
        ``times`` (seconds per step, one per block), ``warmup_times`` (seconds of
        each warm-up step), ``first_loss`` and ``last_loss`` (a check that the
        contenders train the same thing), ``peak_mem_bytes`` (``None`` unless
        measured), ``resident_bytes`` (held after the warm-up over the baseline:
        compiled code and the compiler's caches included), ``step_rise_bytes`` (the
        timed steps' peak over what was held when they began), ``tensor_peak_bytes``
        (:func:`tensor_peak` of one more step), ``mem_note``, ``process_peak_bytes``
        (the whole process's high-water mark, compilation included; CPU only),
        ``steal`` (the share of the machine's CPU time the hypervisor gave to other
        guests while the blocks ran: what neighbours on a shared virtual machine took;
        ``None`` off Linux) and ``warmup_steal`` (the same during the warm-up steps).
    """
    run = ContenderRun(model, contender, device, **kwargs)
    for _ in range(repeats):
        run.block(steps)
    return run.result()


# -- one contender in its own process -----------------------------------------------------
_MARK = 'step-bench: '  # protocol lines on the worker's stdout start with it


def _send(message: dict) -> None:
    print(_MARK + json.dumps(message), flush=True)


def _worker(argv: list[str]) -> None:
    """``python -m bench.step_bench '<json>'``: one contender, driven over stdin/stdout.

    Builds and warms up, sends ``{'ready': ...}``, then answers each ``{"block": N}``
    line with ``{"seconds": ...}`` and ``{"finish": true}`` with the result.
    """
    args = json.loads(argv[0])
    # Load the compiler's modules in every contender before the memory baseline, so
    # that peak memory compares training (tensors, compiled code), not imports.
    modules = ['torch._dynamo', 'torch._inductor.compile_fx', 'fengine.func', 'fengine.optim']
    if args['contender'] == 'mmengine eager':
        modules += ['mmengine.model', 'mmengine.optim']
    for module in modules:
        importlib.import_module(module)
    with torch.device('meta'):
        get_preset(STEP_MODELS[args['model']].preset).build()  # imports torchvision if used
    run = ContenderRun(args['model'], args['contender'], args['device'],
                       warmup=args['warmup'], compile=args['compile'])
    _send(dict(ready=True))
    for line in sys.stdin:
        command = json.loads(line)
        if 'block' in command:
            _send(dict(seconds=run.block(command['block'])))
        else:
            _send(run.result())
            return


class WorkerError(RuntimeError):
    """A contender failed in its own interpreter; the message is its last stderr line."""


class _IsolatedRun:
    """A :class:`ContenderRun` in a fresh interpreter with an empty inductor cache.

    The process stays alive between blocks, waiting on its stdin, so that blocks of
    several contenders can take turns while each keeps its own memory.
    """

    def __init__(self, model: str, contender: str, device: torch.device, *, warmup: int,
                 compile: dict | bool) -> None:
        root = Path(__file__).resolve().parents[1]
        self.cache = tempfile.mkdtemp(prefix='fengine-step-bench-')
        # A fresh cache directory: compile times are cold, as on a user's first run, and
        # no contender reuses kernels another one compiled.
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=self.cache, TRITON_CACHE_DIR=self.cache)
        args = json.dumps(dict(model=model, contender=contender, device=str(device),
                               warmup=warmup, compile=compile))
        self.stderr = tempfile.TemporaryFile('w+')  # a file: a full pipe would block it
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'bench.step_bench', args], cwd=root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        try:
            self._read()  # built and warmed up
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK):])
        code = self.process.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().strip().splitlines() or [f'exit status {code}']
        raise WorkerError(lines[-1])

    def _ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + '\n')
        self.process.stdin.flush()
        return self._read()

    def block(self, steps: int) -> float:
        return self._ask(dict(block=steps))['seconds']

    def result(self) -> dict:
        try:
            return self._ask(dict(finish=True))
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()  # our own child, by its handle
                self.process.wait()
        self.stderr.close()
        shutil.rmtree(self.cache, ignore_errors=True)


# -- every contender on every model -------------------------------------------------------
def _row(model: str, contender: str, device: torch.device, spec: StepModel,
         steps: int) -> dict:
    return dict(benchmark='step', model=model, contender=contender, device=str(device),
                baseline=BASELINE, status='ok', seconds=None, times=[], ratio=None,
                params=None, note='', batch_size=spec.batch_size, steps=steps,
                steps_per_s=None, samples_per_s=None, warmup_seconds=None, warmup_times=[],
                peak_mem_bytes=None, resident_bytes=None, step_rise_bytes=None,
                tensor_peak_bytes=None, tensor_ratio=None, process_peak_bytes=None,
                first_loss=None,
                last_loss=None, steal=None, warmup_steal=None)


def _short(text: str, limit: int = 160) -> str:
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _failed(exc: Exception) -> str:
    if isinstance(exc, WorkerError):
        return f'failed: {_short(str(exc))}'
    return f'failed: {type(exc).__name__}: {_short(str(exc))}'


def bench_step(models: list[str], device: torch.device | str, *, steps: int | None = None,
               repeats: int = 10, warmup: int = WARMUP, contenders: list[str] | None = None,
               compile: dict | bool | None = None, isolate: bool = True,
               log: Callable[[str], None] = print) -> list[dict]:
    """Time every contender's training step on every model; one result row each.

    The contenders of a model are built and warmed up one after the other (so that
    compile times are not measured while another contender compiles), then take
    turns: every contender times one block, then every contender another..., so a
    slow spell of a shared machine falls on all of them alike.

    Args:
        models: Names in :data:`STEP_MODELS`; a ``cuda_only`` one is listed as
            skipped on other devices.
        device: ``'cpu'`` or ``'cuda'``.
        steps: Timed steps per block (default: the model's ``steps(device)``).
        repeats: Timed blocks (rounds) per contender; a row's ``seconds`` is their
            median time per step.
        warmup: Steps before timing, each timed alone; their sum is the row's
            compile and warm-up time.
        contenders: Names in :data:`CONTENDERS` (default: all).
        compile: ``torch.compile`` options for the compiled contenders (default:
            inductor), or ``False`` to run their code uncompiled (the smoke test).
        isolate: Give each contender an interpreter of its own, alive until its
            last block (its peak memory is its own, its compile cache empty).
            ``False`` runs them all in this process and reports no memory.
        log: Called with a progress line per contender and round.

    Returns:
        Rows as :func:`bench.init_bench.bench_init`'s (``benchmark='step'``,
        ``seconds`` = time per step) plus ``steps_per_s``, ``samples_per_s``,
        ``batch_size``, ``steps``, ``warmup_times`` and their sum ``warmup_seconds``
        (compilation included), ``peak_mem_bytes``, ``resident_bytes``,
        ``step_rise_bytes``, ``tensor_peak_bytes`` and ``tensor_ratio`` (over
        ``fengine eager``'s), ``process_peak_bytes``,
        ``first_loss``, ``last_loss``, ``steal`` and ``warmup_steal`` (noted in the
        row from 5%).
        ``ratio`` is the time per step over ``fengine compiled``'s on the same model
        (above 1 is slower; the inverse of the speed-up).
    """
    device = torch.device(device)
    names = list(CONTENDERS) if contenders is None else contenders
    compile = compile if compile is False else (compile or {})
    rows = []
    for model in models:
        spec = STEP_MODELS[model]
        count = steps or spec.steps(device)
        with torch.device('meta'):
            params = sum(p.numel() for p in get_preset(spec.preset).build().parameters())
        model_rows = [_row(model, name, device, spec, count) for name in names]
        runs: dict[int, Any] = {}  # row index -> its ContenderRun or _IsolatedRun
        try:
            for index, row in enumerate(model_rows):
                row['params'] = params
                if spec.cuda_only and device.type != 'cuda':
                    row['status'] = 'skipped (needs CUDA)'
                    continue
                if row['contender'] == 'mmengine eager' and not mmengine_available():
                    row['status'] = SKIPPED
                    continue
                log(f"step: {model}: {row['contender']}: build and {warmup} warm-up steps"
                    + (' in a fresh process' if isolate else ''))
                try:
                    runs[index] = (
                        _IsolatedRun(model, row['contender'], device, warmup=warmup,
                                     compile=compile) if isolate else
                        ContenderRun(model, row['contender'], device, warmup=warmup,
                                     compile=compile, measure_memory=False))
                except Exception as exc:  # reported in the table, not hidden
                    row['status'] = _failed(exc)
            for round_ in range(repeats):
                if runs:
                    log(f'step: {model}: timed round {round_ + 1}/{repeats} ({count} steps '
                        'per contender)')
                for index in list(runs):
                    try:
                        runs[index].block(count)
                    except Exception as exc:
                        model_rows[index]['status'] = _failed(exc)
                        _close(runs.pop(index))
            for index in list(runs):
                try:
                    _fill(model_rows[index], runs.pop(index).result(), spec)
                except Exception as exc:
                    model_rows[index]['status'] = _failed(exc)
        finally:
            for run in runs.values():  # after an interruption: no worker left behind
                _close(run)
        _set_ratios(model_rows)
        _set_tensor_ratios(model_rows)
        rows.extend(model_rows)
    return rows


def _close(run: Any) -> None:
    if isinstance(run, _IsolatedRun):
        run.close()


def _fill(row: dict, result: dict, spec: StepModel) -> None:
    row['times'] = result['times']
    row['seconds'] = statistics.median(result['times'])
    row['steps_per_s'] = 1 / row['seconds']
    row['samples_per_s'] = spec.batch_size / row['seconds']
    row['warmup_seconds'] = sum(result['warmup_times'])
    for key in ('warmup_times', 'peak_mem_bytes', 'resident_bytes', 'step_rise_bytes',
                'tensor_peak_bytes', 'process_peak_bytes', 'first_loss',
                'last_loss', 'steal', 'warmup_steal'):
        row[key] = result[key]
    notes = [result['mem_note']] if result['mem_note'] else []
    stolen = [f'{result[key]:.0%} in {when}' for key, when in
              (('steal', 'the timed steps'), ('warmup_steal', 'warm-up'))
              if (result[key] or 0) >= STEAL_NOTE]
    if stolen:
        notes.append('CPU time stolen by the hypervisor: ' + ', '.join(stolen))
    if not math.isfinite(result['last_loss']):
        notes.append(f"loss {result['last_loss']}")
    row['note'] = '; '.join(notes)


def _set_tensor_ratios(rows: list[dict]) -> None:
    """Each row's tensor peak over ``fengine eager``'s: the compiled step's memory goal is 1.1."""
    eager = next((r['tensor_peak_bytes'] for r in rows if r['contender'] == FALLBACK_BASELINE
                  and r['tensor_peak_bytes']), None)
    for row in rows:
        if eager and row['tensor_peak_bytes'] is not None:
            row['tensor_ratio'] = row['tensor_peak_bytes'] / eager


def _set_ratios(rows: list[dict]) -> None:
    """Each row's time per step over the baseline's: fengine compiled, or fengine eager."""
    set_ratios(rows, (BASELINE, FALLBACK_BASELINE))


if __name__ == '__main__':
    _worker(sys.argv[1:])
