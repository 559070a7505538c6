"""Log lines for compiled steps: when compilation starts, when it ends, every recompile.

:class:`CompileWatch` sits between ``torch.compile`` and its backend (inductor,
``aot_eager``, a user's callable). It counts the graphs the backend receives, and reads
dynamo's own record of each compiled frame (``torch._dynamo.utils``'s compilation
metrics: seconds, the reason of a recompile) to write through the ``fengine`` logger:

- ``compiling the training step of Net (backend inductor) at its step 1``;
- ``compiled the training step of Net in 21.3 s: 1 graph, 0 recompiles``;
- ``recompiled the training step of Net at its step 938 in 4.2 s (2 graphs, 1 recompile),
  because: tensor 'data[0]' size mismatch at index 0. expected 64, actual 32``.

It also lets a thread compile without running what it compiled (:func:`compile_only`),
which is how :mod:`fengine.func.compile_background` compiles the real training step in
a worker thread while the main thread keeps training eagerly.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

import torch

from ..logging import print_log

__all__ = ['CompileWatch', 'CompileOnly', 'compile_only', 'compiling_only']

_local = threading.local()


class CompileOnly(Exception):
    """Raised instead of running a freshly compiled graph inside :func:`compile_only`."""


@contextlib.contextmanager
def compile_only() -> Iterator[None]:
    """In this thread, watched graphs are compiled and cached but raise :class:`CompileOnly`
    instead of running; their inputs are left untouched."""
    _local.compile_only = True
    try:
        yield
    finally:
        _local.compile_only = False


def compiling_only() -> bool:
    """Whether this thread is inside :func:`compile_only`."""
    return getattr(_local, 'compile_only', False)


def _plural(count: int, word: str) -> str:
    return f'{count} {word}' if count == 1 else f'{count} {word}s'


class _WatchedBackend:
    """A ``torch.compile`` backend that counts graphs and honours :func:`compile_only`."""

    def __init__(self, inner: Any, watch: CompileWatch) -> None:
        self.inner = inner
        self.watch = watch
        # Dynamo names the backend in its messages and guards by this attribute.
        self.compiler_name = getattr(inner, 'compiler_name', 'watched')
        self.dynamic = getattr(inner, 'dynamic', None)

    def __call__(self, graph_module: torch.fx.GraphModule, example_inputs: list) -> Callable:
        compiled = self.inner(graph_module, example_inputs)
        self.watch.graphs += 1

        def run(*args: Any) -> Any:
            if compiling_only():
                raise CompileOnly
            return compiled(*args)

        return run

    def get_compiler_config(self) -> Any:
        getter = getattr(self.inner, 'get_compiler_config', None)
        return getter() if getter is not None else None

    def reset(self) -> None:
        reset = getattr(self.inner, 'reset', None)
        if reset is not None:
            reset()


def _inner_backend(backend: Any, mode: str | None, options: dict | None,
                   dynamic: bool | None) -> Any:
    """The backend object ``torch.compile`` itself would make from these arguments.

    ``torch._TorchCompileInductorWrapper`` and ``torch._TorchCompileWrapper`` are what
    ``torch.compile`` builds (they apply ``mode`` and inductor's ``options``); made here
    so that :class:`_WatchedBackend` can stand between dynamo and them.
    """
    if backend == 'inductor':
        return torch._TorchCompileInductorWrapper(mode, options, dynamic)
    return torch._TorchCompileWrapper(backend, mode, options, dynamic)


class CompileWatch:
    """Counts and logs the compilations of one compiled function.

    Args:
        what: How the log lines name the function, e.g. ``'the training step of Net'``.
        options: The ``torch.compile`` options it is compiled with (``backend`` names it
            in the lines).

    Attributes:
        graphs: Graphs the backend received so far.
        recompiles: Compilations after the first (dynamo's cache misses).
        calls: Calls through :meth:`call`.
        seconds: Seconds spent compiling, as dynamo measured them.
    """

    def __init__(self, what: str, options: dict) -> None:
        self.what = what
        backend = options.get('backend', 'inductor')
        self.backend_name = backend if isinstance(backend, str) else getattr(
            backend, '__name__', type(backend).__name__)
        self.graphs = 0
        self.recompiles = 0
        self.calls = 0
        self.seconds = 0.0
        self.code_name: str | None = None  # set by compile_method
        self._frames = 0  # frames dynamo compiled for this function
        self._seen_graphs = 0
        self._seen_metrics: set[int] = set()
        self.started = False  # the start line was written

    # -- wiring ------------------------------------------------------------------------
    def torch_compile_kwargs(self, options: dict) -> dict:
        """``torch.compile`` keyword arguments that compile as ``options`` do, watched."""
        kwargs = dict(options)
        inner_options = kwargs.pop('options', None)
        guard_filter_fn = None
        if isinstance(inner_options, dict) and 'guard_filter_fn' in inner_options:
            # torch.compile reads it from `options` itself, whatever the backend.
            inner_options = dict(inner_options)
            guard_filter_fn = inner_options.pop('guard_filter_fn')
        inner = _inner_backend(kwargs.pop('backend', 'inductor'), kwargs.pop('mode', None),
                               inner_options, kwargs.get('dynamic'))
        kwargs['backend'] = _WatchedBackend(inner, self)
        if guard_filter_fn is not None:
            kwargs['options'] = {'guard_filter_fn': guard_filter_fn}
        return kwargs

    # -- calling -----------------------------------------------------------------------
    def call(self, compiled: Callable, *args: Any) -> Any:
        """``compiled(*args)``, with the log lines of any compilation it caused."""
        self.calls += 1
        if not self.started:
            self.log_start()
        start = time.perf_counter()
        try:
            return compiled(*args)
        finally:
            if self.graphs != self._seen_graphs:
                self.settle(time.perf_counter() - start)

    def log_start(self, background: bool | str = False) -> None:
        """The line that says compilation starts (at the coming call); ``background``:
        ``True`` (a thread), ``'process'`` or ``False`` (this call waits)."""
        self.started = True
        where = ('this takes a while the first time' if not background else
                 f"in a background {'process' if background == 'process' else 'thread'}; "
                 'eager steps run until it is ready')
        print_log(f'compiling {self.what} (backend {self.backend_name}) at its step '
                  f'{max(self.calls, 1)}, {where}', logger='current')

    def settle(self, seconds: float, background_from: int | None = None) -> list:
        """Read dynamo's records of the frames compiled since the last look, and log them.

        Args:
            seconds: How long the compilation took, as the user waited for it (the
                call's time in the foreground, the worker's in the background).
            background_from: The step at which a background compilation began (``None``:
                this call compiled in the foreground); its result is used from the
                coming step on.

        Returns:
            The new records (dynamo's ``CompilationMetrics``), oldest first.
        """
        self._seen_graphs = self.graphs
        records = self._new_records()
        if not records:
            return records
        first = self._frames == 0
        self._frames += len(records)
        self.seconds += seconds
        if any(getattr(r, 'fail_reason', None) for r in records):
            return records  # the caller reports the failure (it falls back to eager)
        switch = None if background_from is None else self.calls + 1
        if first:
            self.log_end(seconds, switch_step=switch)
            return records
        reasons = [r.recompile_reason for r in records if getattr(r, 'recompile_reason', None)]
        self.recompiles += len(reasons)
        where = (f'at its step {self.calls}' if background_from is None else
                 f'in the background from its step {background_from}')
        counts = f'{_plural(self.graphs, "graph")}, {_plural(self.recompiles, "recompile")}'
        line = (f'recompiled {self.what} {where} in {seconds:.1f} s ({counts})'
                if reasons else  # a part after a graph break, reached for the first time
                f'compiled another part of {self.what} {where} in {seconds:.1f} s ({counts})')
        if switch is not None:
            line += f'; compiled steps again from its step {switch} on'
        print_log(line + (f', because: {reasons[0]}' if reasons else ''), logger='current')
        return records

    def log_end(self, seconds: float, switch_step: int | None = None) -> None:
        """The line that says compilation ended: seconds, graphs, recompiles."""
        line = (f'compiled {self.what} in {seconds:.1f} s: {_plural(self.graphs, "graph")}, '
                f'{_plural(self.recompiles, "recompile")}')
        if switch_step is not None:
            line += f'; compiled steps from its step {switch_step} on (eager before)'
        print_log(line, logger='current')

    def _new_records(self) -> list:
        try:
            from torch._dynamo.utils import get_compilation_metrics
        except ImportError:  # an older torch: no records, the counts still hold
            return []
        new = []
        for record in get_compilation_metrics():
            if id(record) in self._seen_metrics:
                continue
            if _is_frame_of(record, self.code_name):
                self._seen_metrics.add(id(record))
                new.append(record)
        return new


def _is_frame_of(record: Any, code_name: str | None) -> bool:
    """Whether dynamo's ``record`` is of ``code_name``'s frame or a frame resumed after one
    of its graph breaks (named ``torch_dynamo_resume_in_<code_name>_at_<line>``)."""
    name = getattr(record, 'co_name', None)
    if code_name is None or name is None:
        return False
    return name == code_name or f'_in_{code_name}_at_' in name

