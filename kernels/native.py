"""The CPU fill as one C loop (``philox_cpu.c``), built with the system C compiler on first use.

The torch-ops path (``philox.py``) runs ~100 passes over memory per chunk; inductor fuses
them into one loop but costs 20-30 s to compile in a fresh process. This C file holds the
same arithmetic, operation by operation; it compiles in well under a second (no PyTorch
headers) and is cached, so the fused loop is there from the first parameter on.

The shared library is built once per source, compiler and platform into
``$XDG_CACHE_HOME/fengine/kernels`` (default ``~/.cache``; ``FENGINE_KERNEL_CACHE``
overrides), written to a temporary file and renamed, so concurrent processes never load a
half-written one. ``ctypes`` calls release the GIL, so a fill is split over
``torch.get_num_threads()`` Python threads. Without a C compiler, or with
``FENGINE_PHILOX_NATIVE=0``, :func:`library` returns ``None`` and the torch-ops path runs.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ['library', 'fill_f32', 'SOURCE', 'FLAGS']

SOURCE = Path(__file__).with_name('philox_cpu.c')
# -ffp-contract=off: no fused multiply-adds, whose single rounding would change the bits.
FLAGS = ('-O3', '-fPIC', '-shared', '-ffp-contract=off', '-fno-math-errno')
MIN_PER_THREAD = 1 << 16  # elements; below this a second thread costs more than it saves

_LOCK = threading.Lock()
_LIBRARY: ctypes.CDLL | None = None
_TRIED = False


def _cache_dir() -> Path:
    root = os.environ.get('FENGINE_KERNEL_CACHE')
    if root:
        return Path(root)
    return Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'fengine' / 'kernels'


def _compiler() -> str | None:
    for name in (os.environ.get('CC'), 'cc', 'gcc', 'clang'):
        if name and shutil.which(name):
            return name
    return None


def _flags() -> tuple[str, ...]:
    """FLAGS, plus 8-wide vectors where the CPU has AVX2 (the cache key holds the flags, so
    a home directory shared with an older CPU gets a build of its own)."""
    if platform.machine() in ('x86_64', 'AMD64'):
        try:
            with open('/proc/cpuinfo') as info:
                cpu_flags = next((line.split() for line in info if line.startswith('flags')), [])
        except OSError:
            cpu_flags = []
        if 'avx2' in cpu_flags:
            return FLAGS + ('-mavx2',)
    return FLAGS


def _build(compiler: str, flags: tuple[str, ...] | None = None) -> Path:
    """The shared library built with ``flags`` (default: :func:`_flags`, for this CPU)."""
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True,
                             timeout=60).stdout
    flags = _flags() if flags is None else flags
    digest = hashlib.sha256('\0'.join([SOURCE.read_text(), compiler, version, *flags,
                                       platform.machine(), sys.platform]).encode())
    target = _cache_dir() / f'philox_cpu-{digest.hexdigest()[:16]}.so'
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *flags, '-o', tmp, str(SOURCE), '-lm'],
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f'{compiler} failed: {done.stderr.strip()[-500:]}')
        os.replace(tmp, target)  # atomic: another process sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded C fill, building it on first use; ``None`` when it cannot be had."""
    global _LIBRARY, _TRIED
    if os.environ.get('FENGINE_PHILOX_NATIVE', '1') == '0':
        return None
    with _LOCK:
        if _TRIED:
            return _LIBRARY
        _TRIED = True
        compiler = _compiler()
        if compiler is None:
            warnings.warn('fengine.kernels: no C compiler (cc, gcc, clang or $CC) found; '
                          'Philox fills on the CPU run as torch operations, same values, '
                          'slower', RuntimeWarning, stacklevel=3)
            return None
        try:
            lib = _load(_build(compiler))
        except Exception as exc:  # noqa: BLE001  any build or load failure: the torch path
            warnings.warn(f'fengine.kernels: building the C Philox fill failed '
                          f'({type(exc).__name__}: {exc}); Philox fills on the CPU run as '
                          'torch operations, same values, slower', RuntimeWarning,
                          stacklevel=3)
            return None
        _LIBRARY = lib
        return lib


def _load(path: Path) -> ctypes.CDLL:
    """The built library, its functions' signatures declared (``bench/fill_ab.py`` loads
    older builds too, which have the fill only)."""
    lib = ctypes.CDLL(str(path))
    lib.fengine_philox_fill_f32.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_uint64,
        ctypes.c_void_p]
    lib.fengine_philox_fill_f32.restype = None
    if hasattr(lib, 'fengine_philox_sqrt_f32'):
        lib.fengine_philox_sqrt_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                ctypes.c_int64]
        lib.fengine_philox_sqrt_f32.restype = None
    return lib


def fill_f32(lib: ctypes.CDLL, flat: torch.Tensor, kind: int, key: int, start: int,
             args: tuple[float, ...]) -> None:
    """Elements ``start ..`` of stream ``key`` into the contiguous float32 CPU ``flat``."""
    a = (ctypes.c_float * 8)(*args)  # rounded to float32, as the torch path reads them
    n = flat.numel()
    threads = max(1, min(torch.get_num_threads(), n // MIN_PER_THREAD))
    base = flat.data_ptr()
    if threads == 1:
        lib.fengine_philox_fill_f32(base, start, n, kind, key, a)
        return
    # Slices of a multiple of 64 elements, a batch of the C loop (16 counters): where the
    # tensor starts on a counter no counter is computed twice, and each thread's stores
    # are as aligned as the tensor's (streaming stores need 32 bytes).
    step = ((n + threads - 1) // threads + 63) // 64 * 64
    bounds = list(range(0, n, step)) + [n]
    list(_pool(threads).map(lambda lo_hi: lib.fengine_philox_fill_f32(
        base + 4 * lo_hi[0], start + lo_hi[0], lo_hi[1] - lo_hi[0], kind, key, a),
        zip(bounds[:-1], bounds[1:])))


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, size, pool)


def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool for every fill of the process (a model has hundreds of parameters; starting
    threads for each would cost more than small fills take), grown when torch's thread
    count grows. A forked child (a DataLoader worker) gets a pool of its own: the parent's
    threads do not exist there, and waiting on them would hang."""
    global _POOL
    pid = os.getpid()
    with _LOCK:
        if _POOL is None or _POOL[0] != pid or _POOL[1] < threads:
            if _POOL is not None and _POOL[0] == pid:
                _POOL[2].shutdown(wait=False)
            _POOL = (pid, threads, ThreadPoolExecutor(threads, thread_name_prefix='fengine-philox'))
        return _POOL[2]
