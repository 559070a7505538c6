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

import datetime
import functools
import os
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as torch_dist
from torch.utils._pytree import tree_map

from ._errors import check_choice

__all__ = [
    'init_dist', 'is_distributed', 'get_rank', 'get_world_size', 'get_local_rank',
    'is_main_process', 'barrier', 'all_reduce', 'broadcast', 'all_gather_object', 'broadcast_object_list',
    'collect_results', 'master_only'
]

F = TypeVar('F', bound=Callable[..., Any])

# 'mean' is a sum followed by a division: gloo has no AVG reduction.
_REDUCE_OPS = {
    'sum': 'SUM',
    'mean': 'SUM',
    'max': 'MAX',
    'min': 'MIN',
    'product': 'PRODUCT',
}
COLLECT_DEVICES = ('cpu', 'gpu')
LAUNCHERS = ('pytorch',)
# What torchrun sets and init_process_group's env:// method reads.
_TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


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
        timeout: Seconds (or a timedelta) a collective may wait; torch's default if ``None``.
        **kwargs: Passed on to ``torch.distributed.init_process_group``.

    Raises:
        ValueError: ``launcher`` is not one of the choices.
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
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if torch.cuda.is_available() and backend == 'nccl':
        torch.cuda.set_device(get_local_rank())
    if timeout is not None and not isinstance(timeout, datetime.timedelta):
        timeout = datetime.timedelta(seconds=timeout)
    if timeout is not None:
        kwargs['timeout'] = timeout
    torch_dist.init_process_group(backend=backend, **kwargs)


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
        op: ``'sum'``, ``'mean'`` (sum divided by the world size), ``'max'``, ``'min'`` or
            ``'product'``.
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
    if not is_distributed():
        return tensor
    if op_name == 'mean' and not (tensor.is_floating_point() or tensor.is_complex()):
        raise TypeError(f"all_reduce(op='mean') writes the mean into the tensor in place, so it "
                        f'needs a floating-point tensor, but got dtype {tensor.dtype}. Convert '
                        "it first, e.g. tensor.float(), or use op='sum'.")
    torch_dist.all_reduce(tensor, op=getattr(torch_dist.ReduceOp, _REDUCE_OPS[op_name]),
                          group=group)
    if op_name == 'mean':
        tensor.div_(get_world_size(group))
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0, group: Any = None) -> torch.Tensor:
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor`` in place and return it.

    Unchanged when not distributed (MMEngine: ``broadcast``).
    """
    if is_distributed():
        torch_dist.broadcast(tensor, src=src, group=group)
    return tensor


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


def broadcast_object_list(objects: list[Any], src: int = 0, group: Any = None) -> list[Any]:
    """Replace every rank's ``objects`` items with rank ``src``'s, in place; return the list.

    Unchanged when not distributed (MMEngine: ``broadcast_object_list``).
    """
    if is_distributed():
        torch_dist.broadcast_object_list(objects, src=src, group=group)
    return objects


def _to_cpu(data: Any) -> Any:
    return tree_map(lambda x: x.cpu() if isinstance(x, torch.Tensor) else x, data)


def collect_results(results: list, size: int, device: str = 'cpu') -> list | None:
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
            pickled and sent; ``'gpu'`` sends them as they are (both go through
            ``torch.distributed.all_gather_object``, so no shared temporary
            directory is needed, unlike MMEngine's ``'cpu'`` mode).

    Returns:
        The ordered list of ``size`` items (fewer if fewer were gathered) on the main
        process; ``None`` on every other rank, as in MMEngine. Not distributed:
        ``results[:size]``.

    Raises:
        ValueError: ``device`` is not ``'cpu'`` or ``'gpu'``.
        TypeError: ``results`` is not a list, or ``size`` is not an int.
    """
    check_choice('collect_results device', device, COLLECT_DEVICES)
    if not isinstance(results, list):
        raise TypeError(f'collect_results expects results as a list, but got '
                        f'{type(results).__name__}')
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f'collect_results expects size as an int, but got '
                        f'{type(size).__name__}: {size!r}')
    if not is_distributed():
        return results[:size]
    parts = all_gather_object(_to_cpu(results) if device == 'cpu' else results)
    if not is_main_process():
        return None
    ordered: list = []
    # Ranks may hold unequal counts (a sampler without padding); take what each has.
    for position in range(max(len(part) for part in parts)):
        ordered.extend(part[position] for part in parts if position < len(part))
    return ordered[:size]


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

