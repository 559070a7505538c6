"""One Triton launch that fills many parameters: a table of segments over a flat buffer.

Each segment is ``(offset, numel, kind, key)`` plus eight float32 arguments
(:class:`kernels.philox.DistArgs`). Programs are laid out over (segment, block of
counters) pairs, so a launch covers every segment at once; the values a segment gets
depend only on its key and element index (see ``philox.py`` for the counter layout), so
they do not depend on which other segments share the launch.

Importing this module imports Triton; ``kernels/__init__.py`` imports it lazily.
float64 outputs are not handled here (draw them with ``philox.fill``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from .philox import DistArgs

__all__ = ['fill_segments', 'random_words', 'BLOCK']

BLOCK = 256  # counters per program: 1024 float32 elements


@triton.jit
def _erfinv_f32(x, one_minus_x2):
    """Giles' erfinv, the same polynomials in the same order as ``philox.erfinv_f32``."""
    w = -tl.log(one_minus_x2)
    c = w - 2.5
    p = tl.full(c.shape, 2.81022636e-08, tl.float32)
    p = 3.43273939e-07 + p * c
    p = -3.5233877e-06 + p * c
    p = -4.39150654e-06 + p * c
    p = 0.00021858087 + p * c
    p = -0.00125372503 + p * c
    p = -0.00417768164 + p * c
    p = 0.246640727 + p * c
    p = 1.50140941 + p * c
    t = tl.sqrt(w) - 3.0
    q = tl.full(t.shape, -0.000200214257, tl.float32)
    q = 0.000100950558 + q * t
    q = 0.00134934322 + q * t
    q = -0.00367342844 + q * t
    q = 0.00573950773 + q * t
    q = -0.0076224613 + q * t
    q = 0.00943887047 + q * t
    q = 1.00167406 + q * t
    q = 2.83297682 + q * t
    return tl.where(w < 5.0, p, q) * x


@triton.jit
def _u24(x):
    """uint32 -> float32 on the grid k 2**-24 in [0, 1)."""
    return (x >> 8).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def _trunc(x, mean, s2, e_a, span, c_a, c_b, lo, hi):
    """Truncated normal by the inverse CDF; ``1 -+ t`` come from the erfc complements."""
    u = ((x >> 8).to(tl.float32) + 0.5) * 5.9604644775390625e-08
    t = span * u + e_a
    one_minus = span * (1.0 - u) + c_b
    one_plus = span * u + c_a
    z = _erfinv_f32(t, one_minus * one_plus) * s2 + mean
    return tl.minimum(tl.maximum(z, lo), hi)


@triton.jit
def _store(out_ptr, idx, numel, value):
    tl.store(out_ptr + idx, value.to(out_ptr.dtype.element_ty), mask=idx < numel)


@triton.jit
def _fill_kernel(out_ptr, block_seg_ptr, block_ctr_ptr, seg_int_ptr, seg_arg_ptr,
                 BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    seg = tl.load(block_seg_ptr + pid).to(tl.int64)
    first = tl.load(block_ctr_ptr + pid)
    offset = tl.load(seg_int_ptr + seg * 4 + 0)
    numel = tl.load(seg_int_ptr + seg * 4 + 1)
    kind = tl.load(seg_int_ptr + seg * 4 + 2)
    key = tl.load(seg_int_ptr + seg * 4 + 3)
    a0 = tl.load(seg_arg_ptr + seg * 8 + 0)
    a1 = tl.load(seg_arg_ptr + seg * 8 + 1)
    a2 = tl.load(seg_arg_ptr + seg * 8 + 2)
    a3 = tl.load(seg_arg_ptr + seg * 8 + 3)
    a4 = tl.load(seg_arg_ptr + seg * 8 + 4)
    a5 = tl.load(seg_arg_ptr + seg * 8 + 5)
    a6 = tl.load(seg_arg_ptr + seg * 8 + 6)
    a7 = tl.load(seg_arg_ptr + seg * 8 + 7)
    ctr = first + tl.arange(0, BLOCK).to(tl.int64)
    base = out_ptr + offset
    i0 = ctr * 4
    if kind == 0:
        v = tl.full((BLOCK,), 0.0, tl.float32) + a0
        _store(base, i0, numel, v)
        _store(base, i0 + 1, numel, v)
        _store(base, i0 + 2, numel, v)
        _store(base, i0 + 3, numel, v)
    else:
        x0, x1, x2, x3 = tl.randint4x(key, ctr)
        if kind == 1:  # uniform: (low, high - low, largest value < high)
            _store(base, i0, numel, tl.minimum(_u24(x0) * a1 + a0, a2))
            _store(base, i0 + 1, numel, tl.minimum(_u24(x1) * a1 + a0, a2))
            _store(base, i0 + 2, numel, tl.minimum(_u24(x2) * a1 + a0, a2))
            _store(base, i0 + 3, numel, tl.minimum(_u24(x3) * a1 + a0, a2))
        elif kind == 2:  # normal (mean, std): Box-Muller on (x0, x1) and (x2, x3)
            r = tl.sqrt(-2.0 * tl.log(_u24(x0) + 5.9604644775390625e-08))
            th = _u24(x1) * 6.2831855
            _store(base, i0, numel, (r * tl.cos(th)) * a1 + a0)
            _store(base, i0 + 1, numel, (r * tl.sin(th)) * a1 + a0)
            r = tl.sqrt(-2.0 * tl.log(_u24(x2) + 5.9604644775390625e-08))
            th = _u24(x3) * 6.2831855
            _store(base, i0 + 2, numel, (r * tl.cos(th)) * a1 + a0)
            _store(base, i0 + 3, numel, (r * tl.sin(th)) * a1 + a0)
        else:  # trunc_normal: inverse CDF in one pass (see philox.DistArgs)
            _store(base, i0, numel, _trunc(x0, a0, a1, a2, a3, a4, a5, a6, a7))
            _store(base, i0 + 1, numel, _trunc(x1, a0, a1, a2, a3, a4, a5, a6, a7))
            _store(base, i0 + 2, numel, _trunc(x2, a0, a1, a2, a3, a4, a5, a6, a7))
            _store(base, i0 + 3, numel, _trunc(x3, a0, a1, a2, a3, a4, a5, a6, a7))


def _tables(segments: Sequence[tuple[int, int, DistArgs, int]], device: torch.device):
    seg_int = torch.tensor([[off, n, d.kind, key] for off, n, d, key in segments],
                           dtype=torch.int64)
    seg_arg = torch.tensor([d.args for _, _, d, _ in segments], dtype=torch.float32)
    counters = (seg_int[:, 1] + 3) // 4
    blocks = (counters + BLOCK - 1) // BLOCK
    block_seg = torch.repeat_interleave(torch.arange(len(segments)), blocks)
    starts = torch.cumsum(blocks, 0) - blocks
    block_ctr = (torch.arange(block_seg.numel()) - starts[block_seg]) * BLOCK
    return [t.to(device) for t in (block_seg.to(torch.int32), block_ctr, seg_int, seg_arg)]


def fill_segments(out: torch.Tensor, segments: Sequence[tuple[int, int, DistArgs, int]]
                  ) -> torch.Tensor:
    """Fill ``out`` (flat, contiguous, float32/float16/bfloat16) in one launch.

    Args:
        out: The flat output buffer.
        segments: ``(offset, numel, dist_args, key)`` rows; segment ``s`` writes
            ``out[offset:offset + numel]`` with elements ``0 .. numel - 1`` of the stream
            ``key`` (a 63-bit ``fold_in`` key). ``dist_args`` must be built for ``out``'s
            dtype (``philox.dist_args(kind, args, out.dtype)``).
    """
    if out.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f'fill_segments writes float32/float16/bfloat16, not {out.dtype}')
    if not out.is_contiguous() or out.dim() != 1:
        raise ValueError('fill_segments needs a flat contiguous buffer')
    for off, n, _, key in segments:
        if off < 0 or off + n > out.numel():
            raise ValueError(f'segment [{off}, {off + n}) is outside the buffer of '
                             f'{out.numel()} elements')
        if not 0 <= key < 1 << 63:
            raise ValueError(f'segment key must be in [0, 2**63), but got {key}')
    segments = [s for s in segments if s[1] > 0]
    if not segments:
        return out
    block_seg, block_ctr, seg_int, seg_arg = _tables(segments, out.device)
    _fill_kernel[(block_seg.numel(),)](out, block_seg, block_ctr, seg_int, seg_arg,
                                       BLOCK=BLOCK)
    return out


@triton.jit
def _words_kernel(out_ptr, key, start, count, BLOCK: tl.constexpr):
    ctr = start + tl.program_id(0) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    x0, x1, x2, x3 = tl.randint4x(key, ctr)
    row = (ctr - start) * 4
    mask = ctr - start < count
    tl.store(out_ptr + row, x0.to(tl.int32, bitcast=True), mask=mask)
    tl.store(out_ptr + row + 1, x1.to(tl.int32, bitcast=True), mask=mask)
    tl.store(out_ptr + row + 2, x2.to(tl.int32, bitcast=True), mask=mask)
    tl.store(out_ptr + row + 3, x3.to(tl.int32, bitcast=True), mask=mask)


def random_words(key: int, start: int, count: int, device='cpu') -> torch.Tensor:
    """``tl.randint4x(key, start .. start + count - 1)`` as a ``(count, 4)`` int64 tensor
    of uint32 words: what ``philox.random_words`` computes, for checking the two agree."""
    out = torch.empty(count * 4, dtype=torch.int32, device=device)
    _words_kernel[(triton.cdiv(count, BLOCK),)](out, key, start, count, BLOCK=BLOCK)
    return (out.to(torch.int64) & 0xFFFFFFFF).view(count, 4)
