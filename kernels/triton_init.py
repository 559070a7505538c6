"""One Triton launch that fills many parameters: a table of segments.

The segments lie in one flat buffer (:func:`fill_segments`) or are separate tensors of
one dtype, addressed from the lowest one (:func:`fill_tensors`).

Each segment is ``(offset, numel, kind, key)`` plus eight float32 arguments
(:class:`kernels.philox.DistArgs`). Programs are laid out over (segment, block of
counters) pairs, so a launch covers every segment at once; a program finds its segment by
a binary search over the segments' first programs, so the tables the host builds and
copies hold one row per segment, not one per program. The values a segment gets
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

__all__ = ['fill_segments', 'fill_tensors', 'random_words', 'BLOCK']

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
def _fill_kernel(out_ptr, seg_start_ptr, n_segments, seg_int_ptr, seg_arg_ptr,
                 BLOCK: tl.constexpr, SEARCH_STEPS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    # The segment of this program: the last s with seg_start[s] <= pid (binary search
    # over the per-segment first program; the table stays one row per segment).
    lo = pid * 0
    hi = lo + n_segments
    for _ in tl.static_range(SEARCH_STEPS):
        mid = (lo + hi) // 2
        right = tl.load(seg_start_ptr + mid) <= pid
        lo = tl.where(right, mid, lo)
        hi = tl.where(right, hi, mid)
    seg = lo
    first = (pid - tl.load(seg_start_ptr + seg)) * BLOCK
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
    if kind == 0:
        v0 = tl.full((BLOCK,), 0.0, tl.float32) + a0
        v1 = v0
        v2 = v0
        v3 = v0
    else:
        x0, x1, x2, x3 = tl.randint4x(key, ctr)
        if kind == 1:  # uniform: (low, high - low, largest value < high)
            v0 = tl.minimum(_u24(x0) * a1 + a0, a2)
            v1 = tl.minimum(_u24(x1) * a1 + a0, a2)
            v2 = tl.minimum(_u24(x2) * a1 + a0, a2)
            v3 = tl.minimum(_u24(x3) * a1 + a0, a2)
        elif kind == 2:  # normal (mean, std): Box-Muller on (x0, x1) and (x2, x3)
            r = tl.sqrt(-2.0 * tl.log(_u24(x0) + 5.9604644775390625e-08))
            th = _u24(x1) * 6.2831855
            v0 = (r * tl.cos(th)) * a1 + a0
            v1 = (r * tl.sin(th)) * a1 + a0
            r = tl.sqrt(-2.0 * tl.log(_u24(x2) + 5.9604644775390625e-08))
            th = _u24(x3) * 6.2831855
            v2 = (r * tl.cos(th)) * a1 + a0
            v3 = (r * tl.sin(th)) * a1 + a0
        else:  # trunc_normal: inverse CDF in one pass (see philox.DistArgs)
            v0 = _trunc(x0, a0, a1, a2, a3, a4, a5, a6, a7)
            v1 = _trunc(x1, a0, a1, a2, a3, a4, a5, a6, a7)
            v2 = _trunc(x2, a0, a1, a2, a3, a4, a5, a6, a7)
            v3 = _trunc(x3, a0, a1, a2, a3, a4, a5, a6, a7)
    # Elements 4c .. 4c+3 of counter c side by side: one contiguous, coalesced store.
    values = tl.interleave(tl.interleave(v0, v2), tl.interleave(v1, v3))
    idx = first * 4 + tl.arange(0, 4 * BLOCK).to(tl.int64)
    if out_ptr.dtype.element_ty == tl.bfloat16:
        # Round to nearest even by hand, as torch's .to(bfloat16) does: Triton's
        # interpreter truncates instead, so the cast would differ between it and a GPU.
        bits = values.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        tl.store(out_ptr.to(tl.pointer_type(tl.uint16)) + offset + idx, bits.to(tl.uint16),
                 mask=idx < numel)
    else:
        tl.store(out_ptr + offset + idx, values.to(out_ptr.dtype.element_ty), mask=idx < numel)


def _tables(segments: Sequence[tuple[int, int, DistArgs, int]], device: torch.device):
    """The number of programs and, per segment, its first program, its ints and its eight
    float32 arguments (on ``device``)."""
    seg_int = torch.tensor([[off, n, d.kind, key] for off, n, d, key in segments],
                           dtype=torch.int64)
    seg_arg = torch.tensor([d.args for _, _, d, _ in segments], dtype=torch.float32)
    blocks = ((seg_int[:, 1] + 3) // 4 + BLOCK - 1) // BLOCK
    seg_start = torch.zeros(len(segments) + 1, dtype=torch.int64)
    torch.cumsum(blocks, 0, out=seg_start[1:])
    programs = int(seg_start[-1])
    return programs, [t.to(device) for t in (seg_start, seg_int, seg_arg)]


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in _DTYPES:
        raise TypeError(f'the Triton fill writes float32/float16/bfloat16, not {dtype}')


def _check_key(key: int) -> None:
    if not 0 <= key < 1 << 63:
        raise ValueError(f'segment key must be in [0, 2**63), but got {key}')


def _launch(base: torch.Tensor, segments: list[tuple[int, int, DistArgs, int]]) -> None:
    segments = [s for s in segments if s[1] > 0]
    if not segments:
        return
    programs, (seg_start, seg_int, seg_arg) = _tables(segments, base.device)
    # Steps of the binary search, rounded up to a multiple of 8 so that models of up to 255
    # segments share one compiled kernel, up to 65535 a second (extra steps change nothing).
    steps = -(-len(segments).bit_length() // 8) * 8
    _fill_kernel[(programs,)](base, seg_start, len(segments), seg_int, seg_arg, BLOCK=BLOCK,
                              SEARCH_STEPS=steps)


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
    _check_dtype(out.dtype)
    if not out.is_contiguous() or out.dim() != 1:
        raise ValueError('fill_segments needs a flat contiguous buffer')
    for off, n, _, key in segments:
        if off < 0 or off + n > out.numel():
            raise ValueError(f'segment [{off}, {off + n}) is outside the buffer of '
                             f'{out.numel()} elements')
        _check_key(key)
    _launch(out, list(segments))
    return out


def fill_tensors(jobs: Sequence[tuple[torch.Tensor, DistArgs, int]]) -> None:
    """Fill every tensor of ``jobs`` (``(tensor, dist_args, key)`` rows) in one launch.

    The tensors are separate allocations (a model's parameters) of one dtype on one
    device, each contiguous. Segment offsets are taken from the lowest address, so the
    kernel addresses them all from one base pointer; each tensor gets what
    :func:`fill_segments` would write into it alone.
    """
    jobs = [job for job in jobs if job[0].numel() > 0]
    if not jobs:
        return
    first = jobs[0][0]
    _check_dtype(first.dtype)
    for tensor, _, key in jobs:
        if tensor.dtype != first.dtype or tensor.device != first.device:
            raise ValueError(f'fill_tensors needs one dtype and device, but got '
                             f'{first.dtype} on {first.device} and {tensor.dtype} on '
                             f'{tensor.device}')
        if not tensor.is_contiguous():
            raise ValueError('fill_tensors needs contiguous tensors')
        _check_key(key)
    size = first.element_size()
    base = min((job[0] for job in jobs), key=torch.Tensor.data_ptr)
    segments = []
    for tensor, d, key in jobs:
        distance = tensor.data_ptr() - base.data_ptr()
        if distance % size:  # cannot happen with PyTorch's allocators; checked anyway
            raise ValueError('fill_tensors needs tensors aligned to their element size')
        segments.append((distance // size, tensor.numel(), d, key))
    _launch(base, segments)


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
