"""Rank, world size and gather helpers over ``torch.distributed`` (MMEngine: ``mmengine.dist``).

Every helper works in a plain single process, where ``torch.distributed`` was never
initialized: it then answers as rank 0 of a world of one and communicates nothing
(one ``is_initialized()`` check, no tensor copies). Launch several processes with
``torchrun`` and call ``torch.distributed.init_process_group`` (the Runner does it
for ``launcher='pytorch'``) and the same calls reduce and gather across ranks.

Example:
    >>> import torch
    >>> from fengine import dist
    >>> dist.get_rank(), dist.get_world_size(), dist.is_main_process()
    (0, 1, True)
    >>> dist.all_reduce(torch.tensor([1.0, 2.0]), op='mean')
    tensor([1., 2.])
    >>> dist.collect_results(['a', 'b', 'c'], size=2)
    ['a', 'b']
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import torch
import torch.distributed as torch_dist
from torch.utils._pytree import tree_map

from ._errors import check_choice

__all__ = [
    'init_dist', 'infer_launcher', 'is_distributed', 'get_rank', 'get_world_size',
    'get_dist_info', 'get_local_rank', 'get_local_size', 'get_backend', 'get_comm_device',
    'get_default_group', 'is_main_process', 'barrier', 'all_reduce', 'all_reduce_dict',
    'all_gather', 'gather', 'broadcast', 'broadcast_coalesced', 'all_gather_object',
    'gather_object', 'broadcast_object_list', 'collect_results', 'collect_results_cpu',
    'collect_results_gpu', 'master_only', 'sync_random_seed', 'explain_collective_error',
    'default_timeout', 'TIMEOUT_ENV'
]

F = TypeVar('F', bound=Callable[..., Any])

# 'mean' is a sum followed by a division: gloo has no AVG reduction.
_REDUCE_OPS = {
    'sum': 'SUM',
    'mean': 'SUM',
    'max': 'MAX',
    'min': 'MIN',
    'product': 'PRODUCT',
    'band': 'BAND',
    'bor': 'BOR',
    'bxor': 'BXOR',
}
COLLECT_DEVICES = ('cpu', 'gpu')
LAUNCHERS = ('pytorch',)
# What torchrun sets and init_process_group's env:// method reads.
_TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
# Seconds a collective may wait for the other ranks; the environment overrides the default.
TIMEOUT_ENV = 'FENGINE_DIST_TIMEOUT'
# Long enough for one rank to compile a step or write a large checkpoint while the others
# wait in their next collective; short enough that a rank that died on another machine, or
# hangs, stops the run within minutes instead of torch's 30 (gloo) or 10 (NCCL).
_DEFAULT_TIMEOUT_S = 600.0
_group_timeout: datetime.timedelta | None = None  # what init_dist passed, for error messages


def default_timeout() -> datetime.timedelta:
    """The collective timeout :func:`init_dist` uses: ``$FENGINE_DIST_TIMEOUT`` seconds, else 600.

    Raises:
        ValueError: the variable is set but is not a positive number of seconds.
    """
    value = os.environ.get(TIMEOUT_ENV)
    if value is None or value.strip() == '':
        return datetime.timedelta(seconds=_DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        seconds = float('nan')
    if not seconds > 0 or seconds == float('inf'):
        raise ValueError(f'the environment variable {TIMEOUT_ENV} must be a positive number of '
                         f'seconds, e.g. {TIMEOUT_ENV}=120, but got {value!r}')
    return datetime.timedelta(seconds=seconds)


def init_dist(launcher: str = 'pytorch', backend: str | None = None,
              timeout: float | datetime.timedelta | None = None, **kwargs: Any) -> None:
    """Join the process group ``torchrun`` set up (MMEngine: ``init_dist``).

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the
    environment and, with CUDA, pins this process to GPU ``LOCAL_RANK``. Does nothing
    when the default process group already exists.

    Args:
        launcher: ``'pytorch'`` (``torchrun`` / ``torch.distributed.run``).
        backend: ``'nccl'``, ``'gloo'``, ...; defaults to ``'nccl'`` when CUDA is
            available, else ``'gloo'``.
        timeout: Seconds (or a timedelta) a collective may wait for the other ranks
            before it raises; ``None``: :func:`default_timeout` (``$FENGINE_DIST_TIMEOUT``,
            else 600 s). A rank that died or hangs thus stops the others with an error
            instead of leaving them blocked (gloo raises in the waiting call; NCCL's
            watchdog aborts the process).
        **kwargs: Passed on to ``torch.distributed.init_process_group``.

    Raises:
        ValueError: ``launcher`` is not one of the choices, or ``timeout`` is not positive.
        RuntimeError: ``torch.distributed`` is unavailable, or a variable torchrun sets
            is missing (the message names them).
    """
    check_choice('launcher', launcher, LAUNCHERS)
    if is_distributed():
        return
    if not torch_dist.is_available():
        raise RuntimeError('init_dist needs torch.distributed, which this PyTorch build lacks')
    missing = [name for name in _TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise RuntimeError(f"init_dist(launcher='pytorch') reads {', '.join(_TORCHRUN_ENV)} "
                           f"from the environment, but {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not set. Start the script "
                           'with torchrun, e.g. torchrun --nproc-per-node 2 train.py')
    timeout = _checked_timeout(timeout)
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if torch.cuda.is_available() and backend == 'nccl':
        torch.cuda.set_device(get_local_rank())
    torch_dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    global _group_timeout
    _group_timeout = timeout


# How gloo and NCCL errors read: a failure to talk to the other ranks, not a bug of the
# rank that raises it.
_COMM_ERROR_MARKS = ('gloo/', 'NCCL', 'Connection closed by peer', 'Connection reset by peer',
                     'Broken pipe')


def explain_collective_error(exc: BaseException) -> RuntimeError | None:
    """A clearer error for ``exc`` when it is a failed collective; ``None`` otherwise.

    The rank that raises it is usually not the culprit: another rank died, hangs or was
    killed, and this one waited for it until the process group's timeout or found the
    connection closed. The message says so, this rank and the timeout. Raise it ``from``
    ``exc`` so the original stays in the traceback.
    """
    if not is_distributed():
        return None
    text = f'{type(exc).__name__}: {exc}'
    dist_error = getattr(torch_dist, 'DistError', None)
    if not ((dist_error is not None and isinstance(exc, dist_error))
            or (isinstance(exc, RuntimeError) and any(m in text for m in _COMM_ERROR_MARKS))):
        return None
    timeout = _group_timeout
    shown = f' (timeout {timeout}; set it with init_dist(timeout=...) or {TIMEOUT_ENV})' \
        if timeout else ''
    first = text.splitlines()[0] if text else ''
    return RuntimeError(f'rank {get_rank()} of {get_world_size()}: a collective with the other '
                        f'ranks failed{shown}. Another rank most likely died, hangs or was '
                        'killed; its log shows the first error. Original error: '
                        f'{first}')


@contextlib.contextmanager
def _explained_collective_errors(
        unless: Callable[[BaseException], bool] | None = None) -> Iterator[None]:
    """Raise :func:`explain_collective_error`'s error (``from`` the original) for a failed
    collective in the block; any other exception, or one ``unless(exc)`` is true for,
    propagates unchanged."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - explain_collective_error picks what it explains
        explained = None if unless is not None and unless(exc) else explain_collective_error(exc)
        if explained is None:
            raise
        raise explained from exc


def sync_random_seed(seed: int | None = None, group: Any = None) -> int:
    """Rank 0's ``seed`` on every rank; a fresh one drawn on rank 0 when ``None``.

    MMEngine: ``sync_random_seed``. A seed each process draws for itself would give the
    ranks different initial weights and shuffle orders (so they would no longer see
    disjoint parts of the data). Not distributed: ``seed``, or a fresh one.
    """
    if seed is None:
        seed = int.from_bytes(os.urandom(4), 'little') >> 1
    if not is_distributed():
        return seed
    return int(broadcast_object_list([seed], src=0, group=group)[0])


def _mean_coalesced(tensors: list[torch.Tensor], group: Any,
                    world_size: int) -> list[torch.Tensor]:
    """The mean of each tensor over the ranks of ``group``, as new tensors: one
    all-reduce per dtype over a flat copy.

    Built on functional collectives, so it traces into a ``torch.compile`` graph (no
    host synchronization, no graph break) and also runs eagerly. ``group``: ``None``
    for the default group; ``world_size``: its size, read by the caller outside any
    compiled code.
    """
    from torch.distributed import _functional_collectives as funcol

    if group is None:
        group = torch_dist.group.WORLD
    by_dtype: dict[torch.dtype, list[int]] = {}
    for index, tensor in enumerate(tensors):
        by_dtype.setdefault(tensor.dtype, []).append(index)
    out: list[torch.Tensor] = [None] * len(tensors)  # type: ignore[list-item]
    for indices in by_dtype.values():
        flat = torch.cat([tensors[i].reshape(-1) for i in indices])
        # 'sum' then divide: gloo has no 'avg'.
        flat = funcol.all_reduce(flat, 'sum', group) / world_size
        for i, part in zip(indices, flat.split([tensors[i].numel() for i in indices])):
            out[i] = part.view_as(tensors[i])
    return out


def _nonfinite_window(holder: Any, device: torch.device) -> torch.Tensor:
    """``holder``'s non-finite flag of the current accumulation window, a 0-d float on ``device``.

    A plain attribute (``_nonfinite_window``), not a buffer: not in a state dict, not
    broadcast. Made (as 0) on first use and again when the device changes.
    """
    window = getattr(holder, '_nonfinite_window', None)
    if window is None or window.device != device:
        window = torch.zeros((), device=device)
        object.__setattr__(holder, '_nonfinite_window', window)
    return window


def _mean_log_vars(log_vars: dict[str, Any], window: torch.Tensor, group: Any, world_size: int,
                   *, sync: bool = True, extra: Iterable[torch.Tensor] = ()) -> dict[str, Any]:
    """Record this micro-step's non-finite flag in ``window``; on ``sync``, average over ranks.

    ``window`` (see :func:`_nonfinite_window`) stays NaN once a ``log_vars['loss']`` of the
    window was not finite. On ``sync`` (the update step) the log values that are
    floating-point single-element tensors, the ``extra`` tensors (the compiled step's
    gradients) and the window are averaged with one :func:`_mean_coalesced`; each
    ``extra`` tensor is overwritten in place with its mean, the window's mean (NaN if
    any rank saw a non-finite loss in this window) is added to every averaged value whose
    key contains ``'loss'``, and the window is reset to 0. Other log values are returned
    as they are. Traces into a ``torch.compile`` graph; ``world_size`` is read outside it.

    Returns:
        ``log_vars`` (on a micro-step that does not sync), else a new dict, same keys
        and order.
    """
    window.add_(log_vars['loss'].float() * 0)  # stays NaN once a loss was not finite
    if not sync:
        return log_vars
    extra = list(extra)
    keys = [k for k, v in log_vars.items() if isinstance(v, torch.Tensor) and
            v.is_floating_point() and v.numel() == 1]
    mean = _mean_coalesced(extra + [log_vars[k] for k in keys] + [window], group, world_size)
    for tensor, averaged in zip(extra, mean):
        tensor.copy_(averaged)
    nonfinite = mean[-1]
    window.zero_()
    averaged = {k: v + nonfinite if 'loss' in k else v
                for k, v in zip(keys, mean[len(extra):-1])}
    return {k: averaged.get(k, v) for k, v in log_vars.items()}


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and initialized (MMEngine: ``is_distributed``)."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def get_rank(group: Any = None) -> int:
    """The rank of this process in ``group`` (``None``: the default group); 0 if not distributed."""
    if not is_distributed():
        return 0
    return torch_dist.get_rank(group)


def get_world_size(group: Any = None) -> int:
    """The number of processes in ``group``; 1 when not distributed."""
    if not is_distributed():
        return 1
    return torch_dist.get_world_size(group)


def get_local_rank() -> int:
    """This process's rank on its machine, from ``LOCAL_RANK`` (set by ``torchrun``); 0 if unset.

    Raises:
        ValueError: ``LOCAL_RANK`` is set but is not an integer.
    """
    value = os.environ.get('LOCAL_RANK', '0')
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'the environment variable LOCAL_RANK must be an integer, but got '
                         f'{value!r}') from None


def get_local_size() -> int:
    """The number of processes on this machine; 1 when not distributed.

    MMEngine: ``get_local_size``.

    Read from ``LOCAL_WORLD_SIZE``, which ``torchrun`` sets (MMEngine needs its own
    local process group for this; fengine does not make one).

    Raises:
        RuntimeError: Distributed, but ``LOCAL_WORLD_SIZE`` is not set (not started by
            ``torchrun``).
        ValueError: ``LOCAL_WORLD_SIZE`` is not a positive integer.
    """
    if not is_distributed():
        return 1
    value = os.environ.get('LOCAL_WORLD_SIZE')
    if value is None:
        raise RuntimeError('get_local_size reads LOCAL_WORLD_SIZE, which torchrun sets, but '
                           'it is not set; start the processes with torchrun or set it')
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f'the environment variable LOCAL_WORLD_SIZE must be a positive '
                         f'integer, but got {value!r}')
    return int(value)


def get_dist_info(group: Any = None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group``; ``(0, 1)`` when not distributed.

    MMEngine: ``get_dist_info``.
    """
    return get_rank(group), get_world_size(group)


def get_default_group() -> Any:
    """The default process group; ``None`` when not distributed.

    MMEngine: ``get_default_group``.
    """
    if not is_distributed():
        return None
    return torch_dist.distributed_c10d._get_default_group()


def get_backend(group: Any = None) -> str | None:
    """The backend of ``group`` as a lower-case string (``'gloo'``, ``'nccl'``...); ``None``
    when not distributed (MMEngine: ``get_backend``)."""
    if not is_distributed():
        return None
    return str(torch_dist.get_backend(group if group is not None else get_default_group()))


def get_comm_device(group: Any = None) -> torch.device:
    """Where the tensors of a collective on ``group`` must be: this rank's GPU for NCCL, the
    CPU for gloo, MPI or no process group (MMEngine: ``get_comm_device``)."""
    if get_backend(group) == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def infer_launcher() -> str:
    """How this process was started, from the environment (MMEngine: ``infer_launcher``).

    ``'pytorch'`` when ``WORLD_SIZE`` is set (``torchrun``), ``'slurm'`` with
    ``SLURM_NTASKS``, ``'mpi'`` with ``OMPI_COMM_WORLD_LOCAL_RANK``, else ``'none'``.
    Only ``'pytorch'`` can be given to :func:`init_dist`.
    """
    for variable, launcher in (('WORLD_SIZE', 'pytorch'), ('SLURM_NTASKS', 'slurm'),
                               ('OMPI_COMM_WORLD_LOCAL_RANK', 'mpi')):
        if variable in os.environ:
            return launcher
    return 'none'


def is_main_process(group: Any = None) -> bool:
    """Whether this process is rank 0 (always True when not distributed)."""
    return get_rank(group) == 0


def barrier(group: Any = None) -> None:
    """Wait until every process of ``group`` gets here; a no-op when not distributed."""
    if is_distributed():
        torch_dist.barrier(group)


def all_reduce(tensor: torch.Tensor, op: str = 'sum', group: Any = None) -> torch.Tensor:
    """Reduce ``tensor`` across ranks in place and return it (MMEngine: ``all_reduce``).

    Args:
        tensor: The tensor, the same shape on every rank; overwritten with the result.
        op: ``'sum'``, ``'mean'`` (sum divided by the world size), ``'max'``, ``'min'``,
            ``'product'``, or the bitwise ``'band'``, ``'bor'``, ``'bxor'`` (integer and
            bool tensors).
        group: The process group; ``None`` for the default one.

    Returns:
        ``tensor`` itself. Unchanged when not distributed.

    Raises:
        ValueError: ``op`` is not one of the choices.
        TypeError: ``op='mean'`` on a tensor that is not floating point (the mean would
            not fit in it).
    """
    op_name = op.lower() if isinstance(op, str) else op
    check_choice('all_reduce op', op_name, _REDUCE_OPS)
    # Checked in one process too, so a script fails the same way before it is launched
    # on several.
    if op_name == 'mean' and not (tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"all_reduce(op='mean') writes the mean into the tensor in place, so it "
                        f'needs a floating-point tensor, but got dtype {tensor.dtype}. Convert '
                        "it first, e.g. tensor.float(), or use op='sum'.")
    if not is_distributed():
        return tensor
    torch_dist.all_reduce(tensor, op=getattr(torch_dist.ReduceOp, _REDUCE_OPS[op_name]),
                          group=group)
    if op_name == 'mean':
        tensor.div_(get_world_size(group))
    return tensor


def all_reduce_dict(data: dict[str, torch.Tensor], op: str = 'sum',
                    group: Any = None) -> None:
    """Reduce every tensor of ``data`` across ranks; each value is replaced by its result.

    MMEngine: ``all_reduce_dict``. Every rank must hold the same keys with tensors of
    the same shapes; they travel as one flat tensor per dtype, in sorted key order.
    Unchanged when not distributed.

    Args:
        data: Names to tensors.
        op: As :func:`all_reduce`.
        group: The process group; ``None`` for the default one.

    Raises:
        TypeError: ``data`` is not a dict of tensors (the message names the key), or
            ``op='mean'`` for an integer tensor.
        ValueError: ``op`` is not one of the choices.
    """
    if not isinstance(data, dict):
        raise TypeError(f'all_reduce_dict expects a dict of tensors, but got '
                        f'{type(data).__name__}')
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f'all_reduce_dict expects a dict of tensors, but {key!r} is '
                            f'{type(value).__name__}: {value!r}')
    keys = sorted(data)
    if not is_distributed():
        for key in keys:  # checks op against each dtype, as a distributed run would
            all_reduce(data[key], op=op)
        return
    by_dtype: dict[torch.dtype, list[str]] = {}
    for key in keys:
        by_dtype.setdefault(data[key].dtype, []).append(key)
    for same_dtype in by_dtype.values():
        flat = torch.cat([data[k].reshape(-1) for k in same_dtype])
        all_reduce(flat, op=op, group=group)
        for key, part in zip(same_dtype, flat.split([data[k].numel() for k in same_dtype])):
            data[key] = part.view_as(data[key])


def all_gather(data: torch.Tensor, group: Any = None) -> list[torch.Tensor]:
    """Every rank's ``data``, in rank order, on every rank (MMEngine: ``all_gather``).

    ``data`` must have the same shape and dtype on every rank. The results are on
    ``data``'s device, whatever device the backend communicates on.

    Returns:
        ``[data_rank0, data_rank1, ...]``; ``[data]`` when not distributed.
    """
    world_size = get_world_size(group)
    if world_size == 1:
        return [data]
    comm = get_comm_device(group)
    gathered = [torch.empty_like(data, device=comm) for _ in range(world_size)]
    torch_dist.all_gather(gathered, data.to(comm), group=group)
    return [t.to(data.device) for t in gathered]


def gather(data: torch.Tensor, dst: int = 0, group: Any = None) -> list[torch.Tensor]:
    """Every rank's ``data``, in rank order, on rank ``dst`` only (MMEngine: ``gather``).

    Returns:
        The list on ``dst``, ``[]`` on the other ranks; ``[data]`` when not distributed.
    """
    world_size = get_world_size(group)
    if world_size == 1:
        return [data]
    comm = get_comm_device(group)
    is_dst = get_rank(group) == dst
    gathered = [torch.empty_like(data, device=comm) for _ in range(world_size)] if is_dst \
        else None
    torch_dist.gather(data.to(comm), gathered, dst=dst, group=group)
    return [t.to(data.device) for t in gathered] if gathered is not None else []


def _checked_timeout(timeout: Any) -> datetime.timedelta:
    """``timeout`` (seconds or a timedelta; None: :func:`default_timeout`), checked."""
    if timeout is None:
        return default_timeout()
    if not isinstance(timeout, datetime.timedelta):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f'init_dist timeout must be seconds (a number) or a '
                            f'datetime.timedelta, but got {type(timeout).__name__}: '
                            f'{timeout!r}')
        timeout = datetime.timedelta(seconds=timeout)
    if not timeout.total_seconds() > 0:
        raise ValueError(f'init_dist timeout must be positive, but got {timeout}')
    return timeout


def broadcast(tensor: torch.Tensor, src: int = 0, group: Any = None) -> torch.Tensor:
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor`` in place and return it.

    Unchanged when not distributed (MMEngine: ``broadcast``).
    """
    if is_distributed():
        torch_dist.broadcast(tensor, src=src, group=group)
    return tensor


def broadcast_coalesced(tensors: list[torch.Tensor], src: int = 0, group: Any = None,
                        bucket_bytes: int = 256 * 2**20) -> list[torch.Tensor]:
    """Copy rank ``src``'s ``tensors`` into every rank's, in place, a few buckets at a time.

    What ``DistributedDataParallel`` does with the parameters at construction and with
    the buffers before each forward: far fewer collectives than one per tensor. Returns
    ``tensors``; unchanged when not distributed.
    """
    if is_distributed() and tensors:
        if group is None:
            group = torch_dist.distributed_c10d._get_default_group()
        with torch.no_grad():
            torch_dist._broadcast_coalesced(group, list(tensors), bucket_bytes, src)
    return tensors


def all_gather_object(obj: Any, group: Any = None) -> list[Any]:
    """Gather a picklable object from every rank, in rank order (MMEngine: ``all_gather_object``).

    Returns:
        ``[obj_rank0, obj_rank1, ...]``; ``[obj]`` when not distributed.
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size(group)
    torch_dist.all_gather_object(gathered, obj, group=group)
    return gathered


def gather_object(data: Any, dst: int = 0, group: Any = None) -> list[Any] | None:
    """Gather a picklable object from every rank on rank ``dst`` (MMEngine: ``gather_object``).

    Returns:
        ``[obj_rank0, obj_rank1, ...]`` on ``dst``, ``None`` on the other ranks;
        ``[data]`` when not distributed.
    """
    if not is_distributed():
        return [data]
    gathered: list[Any] | None = [None] * get_world_size(group) \
        if get_rank(group) == dst else None
    torch_dist.gather_object(data, gathered, dst=dst, group=group)
    return gathered


def broadcast_object_list(objects: list[Any], src: int = 0, group: Any = None) -> list[Any]:
    """Replace every rank's ``objects`` items with rank ``src``'s, in place; return the list.

    Unchanged when not distributed (MMEngine: ``broadcast_object_list``).
    """
    if is_distributed():
        torch_dist.broadcast_object_list(objects, src=src, group=group)
    return objects


def _to_cpu(data: Any) -> Any:
    return tree_map(lambda x: x.cpu() if isinstance(x, torch.Tensor) else x, data)


def collect_results(results: list, size: int, device: str = 'cpu',
                    tmpdir: str | os.PathLike | None = None) -> list | None:
    """Gather every rank's results into one list in dataset order (MMEngine: ``collect_results``).

    ``DistributedSampler`` deals sample ``i`` to rank ``i % world_size`` at position
    ``i // world_size`` and pads the last round with repeated samples so that every
    rank gets as many. This undoes that: it interleaves the ranks' lists rank by rank
    (rank 0's first item, rank 1's first item, ..., rank 0's second item, ...) and
    truncates to ``size``, which drops the padding.

    Args:
        results: This rank's results, one item per sample.
        size: The number of samples in the dataset.
        device: ``'cpu'`` moves tensors in ``results`` to the CPU before they are
            sent; ``'gpu'`` sends them as they are.
        tmpdir: Only with ``'cpu'``: a folder every rank can reach, where each rank
            writes its results as a pickle file for rank 0 to read (MMEngine's
            ``'cpu'`` mode, which keeps large results out of GPU memory under NCCL).
            The files go into a new subfolder that rank 0 removes afterwards; the
            folder itself and anything else in it are left alone. ``None``: results
            travel through ``torch.distributed.all_gather_object`` (no shared folder
            needed, unlike MMEngine's default).

    Returns:
        The ordered list of ``size`` items (fewer if fewer were gathered) on the main
        process; ``None`` on every other rank, as in MMEngine. Not distributed:
        ``results[:size]``.

    Raises:
        ValueError: ``device`` is not ``'cpu'`` or ``'gpu'``, or ``tmpdir`` is given
            with ``'gpu'``.
        TypeError: ``results`` is not a list, or ``size`` is not an int.
        FileNotFoundError: On rank 0, a rank's file is missing from ``tmpdir`` (the
            folder is not shared between the machines).
    """
    check_choice('collect_results device', device, COLLECT_DEVICES)
    if tmpdir is not None and device != 'cpu':
        raise ValueError(f"collect_results tmpdir={str(tmpdir)!r} is used only with "
                         f"device='cpu', but got device={device!r}")
    if not isinstance(results, list):
        raise TypeError(f'collect_results expects results as a list, but got '
                        f'{type(results).__name__}')
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f'collect_results expects size as an int, but got '
                        f'{type(size).__name__}: {size!r}')
    if not is_distributed():
        return results[:size]
    if device == 'cpu':
        results = _to_cpu(results)
    if tmpdir is not None:
        parts = _exchange_through_files(results, Path(tmpdir))
    else:
        parts = all_gather_object(results)
    if parts is None or not is_main_process():
        return None
    # Ranks may hold unequal counts (a sampler without padding); take what each has.
    ordered = [item for round_ in itertools.zip_longest(*parts, fillvalue=_MISSING)
               for item in round_ if item is not _MISSING]
    return ordered[:size]


_MISSING = object()


def _exchange_through_files(results: list, tmpdir: Path) -> list[list] | None:
    """Each rank pickles ``results`` into a fresh subfolder of ``tmpdir``; rank 0 reads
    them all (its own run's files, written a moment ago) and removes the subfolder.

    Returns every rank's list on rank 0, ``None`` elsewhere.
    """
    rank, world_size = get_dist_info()
    folder = [None]
    if rank == 0:
        tmpdir.mkdir(parents=True, exist_ok=True)
        folder = [tempfile.mkdtemp(prefix='collect_results_', dir=tmpdir)]
    broadcast_object_list(folder, src=0)
    part = Path(folder[0]) / f'part_{rank}.pkl'
    with open(part, 'wb') as file:
        pickle.dump(results, file)
    barrier()
    if rank != 0:
        return None
    parts = []
    for other in range(world_size):
        path = Path(folder[0]) / f'part_{other}.pkl'
        if not path.exists():
            raise FileNotFoundError(f'collect_results: rank {other} wrote no {path.name} into '
                                    f'{folder[0]}; tmpdir must be a folder every rank shares '
                                    '(the same file system on every machine)')
        with open(path, 'rb') as file:
            parts.append(pickle.load(file))
    shutil.rmtree(folder[0])
    return parts


def collect_results_cpu(result_part: list, size: int,
                        tmpdir: str | os.PathLike | None = None) -> list | None:
    """:func:`collect_results` with ``device='cpu'`` (MMEngine: ``collect_results_cpu``)."""
    return collect_results(result_part, size, 'cpu', tmpdir=tmpdir)


def collect_results_gpu(result_part: list, size: int) -> list | None:
    """:func:`collect_results` with ``device='gpu'`` (MMEngine: ``collect_results_gpu``)."""
    return collect_results(result_part, size, 'gpu')


def master_only(func: F) -> F:
    """Run ``func`` on the main process only; other ranks get ``None`` (MMEngine: ``master_only``).

    Example:
        >>> @master_only
        ... def save():
        ...     return 'saved'
        >>> save()
        'saved'
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if is_main_process():
            return func(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]

