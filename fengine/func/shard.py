"""Initialize only a rank's shard of each parameter: sharded init equals unsharded init.

A parameter sharded by rows (``Shard(0)``, what FSDP2 does) keeps on each rank a block of
consecutive rows; in row-major order that block is one contiguous range of the flat
parameter, ``[start, start + local.numel())``. Philox draws element ``i`` of a parameter
from ``(key, i)`` alone (:mod:`fengine.kernels.philox`), so a rank draws its range straight
from the stream, and the shards put together are bit for bit the tensor one process draws
whole. Nothing here knows about DTensor or FSDP: the caller passes plain local tensors and
their offsets (:class:`Shard`).

Opaque steps (a user-defined ``init_weights``, ``reset_parameters`` of a module built on
``meta``, a custom registered initializer) cannot be drawn in parts: they run as in one
process, on full temporary tensors of their module's parameters (one module at a time),
and each rank keeps its rows.

A checkpoint (``Pretrained``) is opened with :func:`~fengine.checkpoint_rows.open_rows`:
shapes come from the file's header, and each rank reads only its rows of each parameter
(a safetensors slice, or the pages of a memory-mapped ``torch.save`` zip file). Only a
legacy-format ``torch.save`` file, which cannot be mapped, is read whole.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, NamedTuple

import torch

from .apply import InitResult, _activate, _new_session, _resolve
from .init import TensorInit
from .plan import InitPlan
from .rng import fold_in
from .sample import current_generator

if TYPE_CHECKING:
    from ..checkpoint_rows import RowSource

__all__ = ['Shard', 'row_shard', 'init_shards']


class Shard(NamedTuple):
    """A rank's part of one parameter.

    Attributes:
        local: The rank's rows, contiguous (written in place by :func:`init_shards`
            when passed as ``out``; only its shape, dtype and device are read otherwise).
        start: The flat (row-major) index in the full parameter of ``local``'s first
            element.
    """
    local: torch.Tensor
    start: int


def row_shard(full_shape: torch.Size | tuple[int, ...], first_row: int,
              local: torch.Tensor) -> Shard:
    """The :class:`Shard` of ``local``, the rows from ``first_row`` of a ``full_shape`` tensor.

    Raises:
        ValueError: ``local`` is not contiguous, or its shape is not a block of rows of
            ``full_shape``.
    """
    full_shape = tuple(full_shape)
    if not local.is_contiguous():
        raise ValueError('a shard must be contiguous to be one range of the flat parameter')
    rows = local.shape[0] if local.dim() else 1
    if tuple(local.shape[1:]) != full_shape[1:] or first_row + rows > (
            full_shape[0] if full_shape else 1):
        raise ValueError(f'a shard of shape {tuple(local.shape)} from row {first_row} is not '
                         f'a block of rows of a parameter of shape {full_shape}')
    return Shard(local, first_row * math.prod(full_shape[1:]))


def _draw_shard(recipe: TensorInit, shape: torch.Size, shard: Shard, *, seed: int,
                path: str, out: torch.Tensor) -> None:
    """Write elements ``[shard.start, shard.start + numel)`` of ``path``'s draw into ``out``."""
    if out.numel() == 0:
        return
    if current_generator() != 'philox':
        # A torch.Generator stream cannot start at an offset: draw whole, keep the rows.
        full = recipe(shape, seed=seed, path=path, dtype=out.dtype, device=out.device)
        out.view(-1).copy_(full.view(-1)[shard.start:shard.start + out.numel()])
        return
    from ..kernels import philox

    dist = recipe.distribution(shape, path)
    args = philox.dist_args(dist.kind, dist.args, out.dtype)
    # Low-precision parameters are drawn in float32 and rounded once, as a whole draw is.
    work = out if out.dtype in (torch.float32, torch.float64) else torch.empty(
        out.shape, dtype=torch.float32, device=out.device)
    philox.fill(work, args, fold_in(seed, path), shard.start)
    if work is not out:
        out.copy_(work)


def _rows_of(source: RowSource, shard: Shard) -> torch.Tensor:
    """The rows of ``source`` that ``shard`` holds (a 0-dim parameter: the whole)."""
    if not source.shape:
        return source.read()
    count = shard.local.shape[0] if shard.local.dim() else 1
    if count == 0 or source.row_numel == 0:
        return torch.empty(shard.local.shape, dtype=shard.local.dtype)
    first = shard.start // source.row_numel
    return source.rows(first, first + count)


def init_shards(plan: InitPlan, shards: Mapping[str, Shard], *, seed: int,
                inputs: Mapping[str, torch.Tensor] | None = None,
                out: Mapping[str, torch.Tensor] | None = None) -> InitResult:
    """Run ``plan`` for this rank's shards only: each parameter's rows as one process gets them.

    Args:
        plan: From :func:`~fengine.func.init_plan` on the model (full shapes).
        shards: Every parameter's :class:`Shard`, by path.
        seed: The seed every parameter's stream is derived from, with its path.
        inputs: The values opaque steps start from, by path: a full tensor, or a ``meta``
            one for a parameter that has no value yet. Defaults to the plan's parameters.
        out: Where to write, by path (e.g. the ``shards``' own tensors); default: new
            tensors like the shards. A parameter no step sets is not written.

    Returns:
        :class:`InitResult`: the local tensors of the parameters some step set, every
        parameter's report line (the same as in one process), and buffers read from a
        ``Pretrained`` checkpoint.

    Raises:
        KeyError: ``shards`` lacks a parameter of the plan.
    """
    missing = [p for p in plan.specs if p not in shards]
    if missing:
        raise KeyError(f'no shard given for {missing}; expected every path of '
                       f'{type(plan.root).__name__}.named_parameters()')
    device = next((s.local.device for s in shards.values()), None)
    session = _new_session(plan, seed, device, None)
    with _activate(session), torch.no_grad():
        values, buffers = _resolve(plan, dict(plan.params if inputs is None else inputs),
                                   session, rows=True)
        # Every safetensors slice is read before the first write, so a failed read leaves
        # the parameters as they were; a memory-mapped file is read as its rows are copied
        # (an error there is a fault of the mapping, not an exception).
        rows = {path: _rows_of(value.data, shards[path]) for path, value in values.items()
                if value.kind == 'rows'}
        written: dict[str, torch.Tensor] = {}
        for path, value in values.items():
            if value.kind == 'input':
                continue
            shard = shards[path]
            target = out[path] if out is not None else torch.empty_like(shard.local)
            if value.kind == 'fill':
                _draw_shard(value.data, plan.specs[path].shape, shard, seed=session.seed,
                            path=path, out=target)
            elif value.kind == 'rows':
                target.copy_(rows[path].reshape(target.shape))
                value.data.release()
            else:  # a full tensor, from a checkpoint or from opaque code
                full = value.data.detach().reshape(-1)
                target.view(-1).copy_(full[shard.start:shard.start + target.numel()])
            written[path] = target
    for module in plan.initialized + session.initialized:
        module._is_init = True
    return InitResult(written, {p: v.info for p, v in values.items()},
                      {p: t for p, (_, _, t) in buffers.items()})
