"""Compile a training step in a forked child process while the parent trains eagerly.

A compile in a worker *thread* (:mod:`fengine.func.compile_background`) shares the GIL
with the training loop: dynamo's tracing holds it for seconds, and a loop that loads
its data in the main thread (``num_workers=0``) slows down meanwhile. A forked child
has its own interpreter: it precompiles the step (:func:`~fengine.func.compile_precompiled.save_precompiled`)
on the second core, at a lower priority, writes the result into the compile cache
folder and exits; the parent only checks, before each step, whether the child has
ended (``waitpid`` without blocking), then loads the file.

The child is a copy of the trainer at its first step: it sees the real state (shapes,
hyper-parameters) and changes nothing of the parent's. It never runs the step, only
traces it with fake tensors and compiles it, so it starts no intra-op thread pool.

A child still compiling when the job ends is left to finish (logged with its pid):
what it writes is the next run's warm start.

Where fork is not safe, :func:`fork_unsafe_reason` says why and the caller keeps to the
thread: on CUDA (a forked child cannot use a CUDA context made before the fork), where
``os.fork`` does not exist (Windows), and once a child found that autograd refuses to
run in it: torch's autograd engine marks a process forked after it started its worker
threads (as some backward passes do) as unusable. The trainer forks at its first step,
before its first backward pass; a batch of a new shape later on, or a process that ran
backward passes before training, may find autograd refusing and then compiles in a
thread (logged).
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .compile_precompiled import save_precompiled

__all__ = ['ForkCompile', 'fork_unsafe_reason', 'forked_compiles', 'FORK_NICENESS',
           'AUTOGRAD_AFTER_FORK']

# The child yields the core to the parent's training loop whenever both want it.
FORK_NICENESS = 10

# What a child says when autograd refused to run in it: torch's autograd engine marks
# a process forked after it started its threads as unusable, and tracing the step's
# gradient needs it. From then on this process compiles in threads.
AUTOGRAD_AFTER_FORK = ('autograd cannot run in a child forked after this process ran a '
                       'backward pass')
_refused: str | None = None

_children: set[ForkCompile] = set()
_exit_hook_registered = False


def fork_unsafe_reason(device: torch.device) -> str | None:
    """Why the step on ``device`` cannot be compiled in a forked child, or ``None``."""
    if not hasattr(os, 'fork'):
        return 'this platform has no fork'
    if device.type != 'cpu':
        return f'the step runs on {device.type}, whose context a forked child cannot use'
    if torch.cuda.is_initialized():
        return 'CUDA is initialized in this process, and a forked child cannot use it'
    return _refused


def forked_compiles() -> list[ForkCompile]:
    """The children of this process still compiling (as far as the last look saw)."""
    return [child for child in list(_children) if not child.done]


def _leave_children() -> None:
    """At exit, leave the children still compiling to finish on their own: what they
    write is the next run's warm start. Each is named in the log (and can be killed)."""
    from ..logging import print_log

    for child in forked_compiles():
        print_log(f'a background process (pid {child.pid}) is still compiling; it finishes '
                  'on its own, niced, and the next run of this job loads what it writes '
                  f'(kill {child.pid} to stop it)', logger='current')


class ForkCompile:
    """Precompile ``function(*args)`` in a forked child; the result lands in ``path``.

    Args:
        function: The plain function to precompile (see
            :func:`~fengine.func.compile_precompiled.save_precompiled`).
        args: Its example arguments (the child's copies are used).
        options: ``torch.compile`` keyword arguments.
        path: The file the child writes.
        external: Objects referred to by name rather than pickled.

    Attributes:
        seconds: Wall time from the fork to the child's end (``None`` before).
        error: The child's error, a string with its last traceback line (``None``: none).
    """

    def __init__(self, function: Callable, args: tuple, options: dict, path: Path,
                 external: dict[str, Any]) -> None:
        self._job = (function, args, options, path, external)
        self.path = path
        self.pid: int | None = None
        self.seconds: float | None = None
        self.error: str | None = None
        self._read_fd: int | None = None
        self._start = 0.0

    def start(self) -> ForkCompile:
        global _exit_hook_registered
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        self._start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            # Off the parent's stdout and stderr: a pipe to them (a caller that waits for
            # the job's output to end) would stay open until the child ended.
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            self._child(write_fd)
        os.close(write_fd)
        self.pid, self._read_fd = pid, read_fd
        _children.add(self)
        if not _exit_hook_registered:
            atexit.register(_leave_children)
            _exit_hook_registered = True
        return self

    def _child(self, write_fd: int) -> None:
        code = 0
        try:
            os.nice(FORK_NICENESS)
            # torch's thread count stays the parent's: the step's guards record it, and
            # the child runs no kernel (it traces with fake tensors), so no thread pool.
            function, args, options, path, external = self._job
            save_precompiled(function, args, options, path, external)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            code = 1
            line = f'{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}'
            frames = traceback.extract_tb(exc.__traceback__)
            if frames:
                line += f' (at {Path(frames[-1].filename).name}:{frames[-1].lineno})'
            cause = exc
            while cause is not None:  # dynamo wraps autograd's refusal in its own errors
                if 'Autograd-and-Fork' in str(cause):
                    line = AUTOGRAD_AFTER_FORK
                cause = cause.__cause__ or cause.__context__
            try:
                os.write(write_fd, line.encode()[:4000])
            except OSError:
                pass
        finally:
            # No atexit handlers, no flushing of buffers copied from the parent.
            os._exit(code)

    @property
    def done(self) -> bool:
        """Whether the child has ended (checked without blocking, before every step)."""
        if self.pid is None:
            return True
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler): take it as ended
            pid, status = self.pid, 1 << 8
        if pid == 0:
            return False
        self._finish(status)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the child ends (or ``timeout`` seconds pass); return :attr:`done`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        """End the child now (its file is written atomically: none or a whole one)."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()

    def _finish(self, status: int) -> None:
        self.seconds = time.perf_counter() - self._start
        self.pid = None
        _children.discard(self)
        message = b''
        if self._read_fd is not None:
            try:
                message = os.read(self._read_fd, 4096)
            except OSError:
                pass
            os.close(self._read_fd)
            self._read_fd = None
        global _refused
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            self.error = message.decode(errors='replace') or f'the compile process exited with {code}'
        if self.error == AUTOGRAD_AFTER_FORK:
            _refused = AUTOGRAD_AFTER_FORK
