"""Compile a training step in a worker thread while the main thread trains eagerly.

``torch.compile`` compiles on the thread that first calls the function, and the
training waits for it: 20-30 s for a small MLP on a 2-core CPU, more than the whole
job takes eagerly when it is bound by data loading. :class:`BackgroundCompile` makes a
worker thread call the compiled step once, on the real state, inside
:func:`~fengine.func.compile_watch.compile_only`: dynamo traces it, the backend compiles
it and the result is installed in dynamo's cache, then the compiled graph raises instead
of running, so the state is not touched. Meanwhile the main thread runs the model's
eager steps (the same math as ``compile=False``). Once the worker is done, the next step
calls the compiled function, whose guards hold for the real state: it runs without
compiling again.

Why this works with threads: dynamo's frame hook is per thread (the main thread's eager
steps are not traced), tracing reads only the tensors' metadata (fake tensors) while the
eager steps change their values in place, and inductor's C++ compilation runs in
subprocesses (``compile_threads``), outside the GIL. Dynamo's own tracing holds the GIL,
so the eager steps slow down while it runs. Measured in ``docs/benchmarks.md``.
"""
from __future__ import annotations

import atexit
import threading
import time
from typing import Callable

from ..logging import print_log
from .compile_watch import CompileOnly, compile_only, compiling_only

__all__ = ['BackgroundCompile', 'compile_in_flight', 'EagerInCompileThread',
           'refuse_eager_in_compile_thread', 'wait_for_background_compiles',
           'prepare_inductor_in_this_thread', 'is_foreign_fx_trace_error']

_in_flight: set[BackgroundCompile] = set()
_lock = threading.Lock()
_exit_wait_registered = False


class EagerInCompileThread(RuntimeError):
    """The compiled function ran eagerly in the worker (dynamo disabled, a stance set by
    ``torch.compiler.set_stance``): compiling there could not be separated from running."""


def _wait_at_exit() -> None:
    """Let a compilation still running at exit end: torch cannot interrupt one, and a
    process that exits under it may abort ('terminate called without an active
    exception') instead of exiting cleanly."""
    if compile_in_flight():
        print_log('waiting for a background compilation to end before exiting (it cannot '
                  'be interrupted)', logger='current')
        wait_for_background_compiles()


def compile_in_flight() -> bool:
    """Whether a background compilation is running in this process.

    Other compiled functions (validation steps) run eagerly meanwhile: dynamo compiles
    one frame at a time per process, so they would wait for it.
    """
    return bool(_in_flight)


def prepare_inductor_in_this_thread() -> None:
    """Run, on the calling thread, inductor's one-time ``torch.fx.symbolic_trace``.

    FX's symbolic tracing swaps ``torch.nn.Module.__call__`` for the whole process while
    it runs, and a module called meanwhile from another thread fails ('module is not
    installed as a submodule'). Inductor traces one function that way, once per process
    (``InterpreterShim._dummy_gm``, cached): done here, before the worker starts, the
    worker's compilation does not open that window while the eager steps run.
    """
    try:
        from torch._inductor.loop_body import InterpreterShim
        InterpreterShim._dummy_gm()
    except (ImportError, AttributeError):  # another torch: nothing known to warm up
        pass


def is_foreign_fx_trace_error(exc: BaseException) -> bool:
    """Whether ``exc`` is FX's error for a module called while another thread traced."""
    return isinstance(exc, NameError) and 'module is not installed as a submodule' in str(exc)


def wait_for_background_compiles(timeout: float | None = None) -> bool:
    """Block until every background compilation of this process (threads, and forked
    children: :mod:`fengine.func.compile_fork`) ended (or ``timeout`` seconds passed);
    return whether none is left. For tests and benchmarks that must not
    leave a compiling thread behind."""
    from .compile_fork import forked_compiles

    deadline = None if timeout is None else time.monotonic() + timeout
    with _lock:
        running = list(_in_flight)
    for background in running + forked_compiles():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        background.wait(left)
    return not compile_in_flight() and not forked_compiles()


class BackgroundCompile:
    """Compile ``compiled(*args)`` in a daemon thread, without running it.

    Args:
        compiled: A function compiled by ``torch.compile`` whose backend is a
            :class:`~fengine.func.compile_watch.CompileWatch`'s (so that it honours
            :func:`~fengine.func.compile_watch.compile_only`).
        args: Its arguments; kept until the compilation ends.

    Attributes:
        seconds: How long the compilation took (``None`` until it ended).
        error: What it raised, if anything but the expected stop (``None`` otherwise).
    """

    def __init__(self, compiled: Callable, args: tuple) -> None:
        self._compiled = compiled
        self._args: tuple | None = args
        self.seconds: float | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name='fengine-compile', daemon=True)

    def start(self) -> BackgroundCompile:
        global _exit_wait_registered
        with _lock:
            _in_flight.add(self)
            if not _exit_wait_registered:
                atexit.register(_wait_at_exit)
                _exit_wait_registered = True
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            with compile_only():
                self._compiled(*self._args)
            # Returning means the function ran without a watched graph: it must not have.
            self.error = EagerInCompileThread('the compiled step returned without running '
                                              'a compiled graph')
        except CompileOnly:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - start
            self._args = None  # the batch and the state are the caller's
            with _lock:
                _in_flight.discard(self)

    @property
    def done(self) -> bool:
        """Whether the worker has finished (a cheap check, made before every step)."""
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker finishes (or ``timeout`` seconds); return :attr:`done`."""
        self._thread.join(timeout)
        return self.done


def refuse_eager_in_compile_thread() -> None:
    """Raise :class:`EagerInCompileThread` when called eagerly under ``compile_only``.

    The first line of a function compiled in the background, behind
    ``torch.compiler.is_compiling()`` so that dynamo never traces it: should dynamo run
    the function eagerly in the worker instead of compiling it, it stops here, before the
    state is touched.
    """
    if compiling_only():
        raise EagerInCompileThread('dynamo ran the step eagerly instead of compiling it '
                                   '(torch.compile disabled, or a stance such as '
                                   "torch.compiler.set_stance('force_eager'))")
