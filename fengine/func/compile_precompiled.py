"""Precompiled training steps on disk: the next run of a job skips dynamo's tracing.

A warm inductor cache (:mod:`fengine.func.compile_cache`) spares the next run inductor's
code generation and C++ compilation, but dynamo still traces the step (seconds for a
small MLP on a 2-core CPU). torch's precompile (``torch.compile(fn).aot_compile``) keeps
the traced step as well: its graph, its guards and a handle on inductor's compiled code.
This module names the file of a training step in the compile cache folder, writes it
and reads it back:

- :func:`precompiled_path`: ``<cache>/precompiled/<key>.bin``, the key a hash of what the
  step is compiled for (the model's structure, the optimizer and its hyper-parameter
  names, the batch's shapes and dtypes, the compile options, torch's version);
- :func:`save_precompiled`: precompiles, serializes and writes it atomically;
- :func:`load_precompiled`: reads it back, or says why not (``None`` and a reason).

What keeps a stale file from running: the key picks the candidate, and then the step's
guards decide, as in one process (the batch's shapes, the parameters' shapes and dtypes,
the optimizer's hyper-parameters...); a file whose guards do not hold is not used and
the step compiles again. The source of every function the step traced (the model's
``forward``, the loss...) is compared with the checksums torch recorded: an edited model
file makes the file stale too.

Trust: loading a precompiled step unpickles it, and runs the compiled code it refers to,
as inductor's own cache does with its ``.so`` files. The cache folder must therefore be
the user's own: a folder or file that another user owns, or that the group or others may
write, is refused (a warning names it) and the step is compiled instead.
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .compile_cache import compile_cache_dir

__all__ = ['PRECOMPILED_FOLDER', 'precompiled_path', 'save_precompiled', 'load_precompiled',
           'untrusted_reason', 'stale_source_reason']

PRECOMPILED_FOLDER = 'precompiled'


def precompiled_path(*parts: Any) -> Path:
    """The file of a precompiled step described by ``parts`` (anything with a stable
    ``repr``), in :func:`~fengine.func.compile_cache.compile_cache_dir`.

    No MMEngine equivalent (MMEngine has no compiled training step).
    """
    digest = hashlib.sha256(repr((torch.__version__,) + parts).encode()).hexdigest()[:32]
    return compile_cache_dir() / PRECOMPILED_FOLDER / f'{digest}.bin'


def untrusted_reason(path: Path) -> str | None:
    """Why ``path`` (a file or folder) must not be loaded from, or ``None`` if it may:
    it belongs to another user, or the group or others may write it."""
    try:
        info = path.stat()
    except OSError as exc:
        return f'{path} cannot be read ({exc.strerror})'
    if hasattr(os, 'geteuid') and info.st_uid != os.geteuid():
        return f'{path} belongs to another user (uid {info.st_uid})'
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f'{path} may be written by other users (mode {stat.filemode(info.st_mode)})'
    return None


def stale_source_reason(compiled: Any) -> str | None:
    """Which traced source changed since ``compiled`` (an ``AOTCompiledFunction``) was
    made, or ``None`` when every one torch recorded is as it was."""
    from torch._dynamo.package import _hash_sourcelines
    import importlib

    for source in compiled.source_info().inlined_sources:
        try:
            module = importlib.import_module(source.module)
            checksum = _hash_sourcelines(module, source.firstlineno, source.lastlineno)
        except Exception as exc:  # noqa: BLE001 - a module gone or renamed: stale
            return f'{source.module} cannot be read ({type(exc).__name__}: {exc})'
        if checksum != source.checksum:
            return (f'{source.module} changed (lines {source.firstlineno}-'
                    f'{source.lastlineno})')
    return None


def save_precompiled(function: Callable, args: tuple, options: dict, path: Path,
                     external: dict[str, Any]) -> float:
    """Precompile ``function(*args)`` with ``torch.compile`` ``options`` and write it to
    ``path`` atomically; return the seconds it took.

    Args:
        function: A plain function (not a bound method: its ``self`` is one of ``args``,
            so that the guards see it).
        args: Example arguments; their values are not changed (nothing runs).
        options: ``torch.compile`` keyword arguments (``fullgraph`` must be true).
        path: Where to write (its folder is created, readable and writable by the user
            only).
        external: Objects the compiled step refers to that are not pickled but given
            back at load time (``{'step': train_step}``), by name.
    """
    start = time.perf_counter()
    compiled = torch.compile(function, **options).aot_compile((args, {}))
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    compiled.save_compiled_function(str(path), external_data=external)
    return time.perf_counter() - start


def load_precompiled(path: Path, external: dict[str, Any]) -> tuple[Any | None, str]:
    """Read a precompiled step; return ``(function, '')`` or ``(None, why not)``.

    ``why not`` is ``'missing'`` for a file that is not there (the normal first run);
    otherwise a sentence for a log line (untrusted folder, changed source, a file torch
    cannot read). The function checks its guards on every call.
    """
    if not path.exists():
        return None, 'missing'
    for where in (path.parent, path):
        reason = untrusted_reason(where)
        if reason is not None:
            return None, reason + '; it is not loaded (the compile cache must be yours alone)'
    try:
        with open(path, 'rb') as file:
            compiled = torch.compiler.load_compiled_function(file, external_data=external)
    except Exception as exc:  # noqa: BLE001 - another torch, a truncated file...
        return None, f'{path} cannot be loaded ({type(exc).__name__}: {exc})'
    stale = stale_source_reason(compiled)
    if stale is not None:
        return None, f'{path} is stale: {stale}'
    return compiled, ''
