"""The process settings of ``Runner(env_cfg=...)`` (MMEngine: ``Runner.setup_env``).

``env_cfg`` holds ``cudnn_benchmark``, ``mp_cfg=dict(mp_start_method, opencv_num_threads)``,
``dist_cfg`` (arguments of :func:`fengine.dist.init_dist`: ``backend``, ``timeout``, and
``torch.distributed.init_process_group``'s) and ``resource_limit``. MMEngine's tutorial
'Runner' also writes ``backend`` at the top level; it is read as ``dist_cfg['backend']``.
fengine adds ``num_threads``: torch's intra-op threads (see :func:`choose_num_threads`).
"""
from __future__ import annotations

import inspect
import os
import platform
import warnings
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from .._errors import check_choice, check_int, check_keys

__all__ = ['check_env_cfg', 'apply_env_cfg', 'set_multi_processing', 'raise_open_file_limit',
           'ENV_CFG_KEYS', 'usable_cores', 'busy_cores', 'default_num_threads', 'choose_num_threads',
           'dataloader_workers']

ENV_CFG_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit', 'backend',
                'num_threads')
_MP_CFG_KEYS = ('mp_start_method', 'opencv_num_threads')
# init_dist's own arguments and what it passes on to init_process_group; world_size, rank
# and init_method come from torchrun's environment.
_DIST_CFG_KEYS = ('backend', 'timeout', *(
    name for name in inspect.signature(torch_dist.init_process_group).parameters
    if name not in ('backend', 'timeout', 'world_size', 'rank', 'init_method')))
# MMEngine raises the soft limit of open files to this (DataLoader workers share tensors
# through file descriptors).
_DEFAULT_RESOURCE_LIMIT = 4096


def check_env_cfg(env_cfg: Any) -> dict:
    """``env_cfg`` as a plain dict with ``dist_cfg`` holding the top-level ``backend``.

    Changes nothing in the process.

    Raises:
        TypeError: ``env_cfg`` (or ``mp_cfg``, ``dist_cfg``) is not a dict, or has a key
            that is not read (named, with a close match and the accepted keys).
        ValueError: ``backend`` both at the top level and in ``dist_cfg``, with two values.
    """
    if env_cfg is None:
        return {}
    if not isinstance(env_cfg, dict):
        raise TypeError(f'env_cfg must be a dict such as dict(cudnn_benchmark=False, '
                        f"dist_cfg=dict(backend='nccl')), but got {type(env_cfg).__name__}: "
                        f'{env_cfg!r}')
    check_keys('env_cfg', env_cfg, ENV_CFG_KEYS)
    cfg = dict(env_cfg)
    for key, accepted in (('mp_cfg', _MP_CFG_KEYS), ('dist_cfg', _DIST_CFG_KEYS)):
        value = cfg.get(key)
        if value is None:
            cfg[key] = {}
            continue
        if not isinstance(value, dict):
            raise TypeError(f'env_cfg {key} must be a dict, but got {type(value).__name__}: '
                            f'{value!r}')
        check_keys(f'env_cfg {key}', value, accepted)
        cfg[key] = dict(value)
    if 'backend' in cfg:
        backend = cfg.pop('backend')
        dist_cfg = cfg['dist_cfg']
        if 'backend' in dist_cfg and dist_cfg['backend'] != backend:
            raise ValueError(f'env_cfg sets backend={backend!r} and dist_cfg=dict(backend='
                             f"{dist_cfg['backend']!r}): keep one (dist_cfg is MMEngine's place "
                             'for it)')
        dist_cfg['backend'] = backend
    if 'resource_limit' in cfg:
        check_int('env_cfg resource_limit', cfg['resource_limit'], minimum=1)
    if cfg.get('num_threads') is not None:
        check_int('env_cfg num_threads', cfg['num_threads'], minimum=1)
    return cfg


def set_multi_processing(mp_start_method: str | None = None,
                         opencv_num_threads: int | None = None) -> list[str]:
    """Set the start method of worker processes and OpenCV's thread count, when given.

    MMEngine: ``mmengine.utils.dl_utils.set_multi_processing``, which also sets both when
    they are not given (``'fork'``, 0); fengine leaves the process as it is then.

    Args:
        mp_start_method: ``'fork'``, ``'spawn'`` or ``'forkserver'`` (those this platform
            has); a change of an already set method warns, as MMEngine.
        opencv_num_threads: ``cv2.setNumThreads``; when OpenCV is not installed there are
            no OpenCV threads to limit, which the returned note says.

    Returns:
        Notes for the debug log (the Runner writes them once its log exists).

    Raises:
        ValueError: a start method this platform does not have, or a negative thread count.
    """
    if mp_start_method is not None:
        check_choice('env_cfg mp_cfg mp_start_method', mp_start_method,
                     mp.get_all_start_methods())
        current = mp.get_start_method(allow_none=True)
        if current is not None and current != mp_start_method:
            warnings.warn(f'the multiprocessing start method was {current!r}; env_cfg sets it '
                          f'to {mp_start_method!r}', stacklevel=2)
        mp.set_start_method(mp_start_method, force=True)
    notes = []
    if opencv_num_threads is not None:
        check_int('env_cfg mp_cfg opencv_num_threads', opencv_num_threads, minimum=0)
        try:
            import cv2
        except ImportError:
            notes.append('env_cfg mp_cfg opencv_num_threads: OpenCV is not installed, so '
                         'there are no OpenCV threads to limit')
        else:
            cv2.setNumThreads(opencv_num_threads)
    return notes


def raise_open_file_limit(limit: int) -> None:
    """Raise the soft limit of open files to ``limit`` (never above the hard limit, never
    lowering it), as MMEngine does for DataLoader workers. Nothing on Windows."""
    if platform.system() == 'Windows':
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(limit, soft)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def apply_env_cfg(env_cfg: dict) -> list[str]:
    """Apply a :func:`check_env_cfg` result's process settings (not ``dist_cfg``).

    Returns:
        Notes for the debug log (see :func:`set_multi_processing`).
    """
    if env_cfg.get('cudnn_benchmark'):
        torch.backends.cudnn.benchmark = True
    notes = set_multi_processing(**env_cfg.get('mp_cfg', {}))
    raise_open_file_limit(env_cfg.get('resource_limit', _DEFAULT_RESOURCE_LIMIT))
    return notes


# -- torch's intra-op threads ------------------------------------------------------------
_THREAD_VARIABLES = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def dataloader_workers(dataloader: Any) -> int:
    """``num_workers`` of a ``DataLoader`` or of a dataloader config dict (0 if absent)."""
    workers = (dataloader.get('num_workers', 0) if isinstance(dataloader, dict)
               else getattr(dataloader, 'num_workers', 0))
    return workers if isinstance(workers, int) and workers > 0 else 0


def busy_cores() -> int:
    """Cores other processes keep busy: the 1-minute load average less this process's
    running thread, rounded (0 where the platform has no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0
    return max(0, round(load - 1))


def default_num_threads(workers: int = 0, processes: int = 1, busy: int = 0) -> int:
    """One intra-op thread per core left to this process: its share of the usable cores
    (``processes`` training processes on this machine) less its DataLoader workers and
    less the cores other work keeps ``busy``, at least 1.

    Torch starts with one thread per core, and its threads wait for each other at every
    operation: when a DataLoader worker (a process of its own) or other work takes a
    core from one of them, every operation waits for that thread's next turn. On a
    2-core machine with other work running, an epoch of the tutorial's MLP took over
    ten times longer with 2 threads than with 1 (``docs/benchmarks.md``).
    """
    return max(1, usable_cores() // max(1, processes) - workers - busy)


def choose_num_threads(num_threads: int | None = None, workers: int = 0) -> str:
    """Set torch's intra-op threads, unless the user chose them; say what was done.

    In order: ``num_threads`` (``env_cfg``) is set as given; ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` in the environment, or a thread count other than torch's start
    value of one per usable core (``torch.set_num_threads`` called before), is left as
    it is; otherwise :func:`default_num_threads` is set (``LOCAL_WORLD_SIZE`` processes,
    as ``torchrun`` sets it; :func:`busy_cores` from the load average).

    Returns:
        A line for the log: the count, and why.
    """
    hint = ('env_cfg=dict(num_threads=N), OMP_NUM_THREADS or torch.set_num_threads '
            'choose another')
    if num_threads is not None:
        torch.set_num_threads(check_int('env_cfg num_threads', num_threads, minimum=1))
        return f'torch intra-op threads: {num_threads} (env_cfg num_threads)'
    for variable in _THREAD_VARIABLES:
        if os.environ.get(variable):
            return (f'torch intra-op threads: {torch.get_num_threads()} ({variable}='
                    f'{os.environ[variable]})')
    current, cores = torch.get_num_threads(), usable_cores()
    if current != cores:
        return f'torch intra-op threads: {current} (set before the Runner was built)'
    processes = int(os.environ.get('LOCAL_WORLD_SIZE', '1') or 1)
    busy = busy_cores()
    chosen = default_num_threads(workers, processes, busy)
    if chosen != current:
        torch.set_num_threads(chosen)
    shared = f' shared by {processes} processes' if processes > 1 else ''
    return (f'torch intra-op threads: {chosen} ({cores} usable cores{shared}, {workers} '
            f'DataLoader workers, {busy} busy with other work; {hint})')
