"""Spec for the C Philox fill (kernels/philox_cpu.c, kernels/native.py) beyond
tests/test_kernels.py: the float32 square root it uses, its portable build (no AVX2), and
large fills (streaming stores, thread slices, misaligned outputs). The reference is always
the torch-operations path of kernels/philox.py, bit for bit.
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from fengine.func import fold_in
from fengine.kernels import dist_args, fill
from fengine.kernels.native import _compiler

needs_cc = pytest.mark.skipif(_compiler() is None, reason='no C compiler (cc, gcc, clang)')

KINDS_AND_ARGS = [('uniform', (-1.0, 1.0)), ('normal', (0.5, 2.0)),
                  ('trunc_normal', (0.0, 1.0, -2.0, 2.0)),
                  # wide enough that some lanes need erfinv's tail polynomial, some not
                  ('trunc_normal', (0.0, 1.0, -6.0, 6.0))]


def c_sqrt(lib, x: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(x)
    lib.fengine_philox_sqrt_f32(x.data_ptr(), out.data_ptr(), x.numel())
    return out


def floats_from_bits(lo: int, hi: int) -> torch.Tensor:
    """Every float32 whose bit pattern is in [lo, hi)."""
    return torch.arange(lo, hi, dtype=torch.int64).to(torch.int32).view(torch.float32)


@needs_cc
def test_the_c_square_root_equals_the_float64_route_for_every_float32():
    from fengine.kernels import native
    lib = native.library()
    assert lib is not None, 'this machine has a C compiler: the C loop must build'
    # sqrt(4 x) = 2 sqrt(x) exactly, and the root of every positive float32 is a normal
    # number, where doubling commutes with rounding: the binades [1, 2) and [2, 4) stand
    # for every normal input. The subnormal inputs are checked one by one.
    one, four = 0x3F800000, 0x40800000
    chunk = 1 << 22
    for lo in list(range(one, four, chunk)) + list(range(0, 0x00800000, chunk)):
        x = floats_from_bits(lo, lo + chunk)
        assert torch.equal(c_sqrt(lib, x), x.double().sqrt().float()), hex(lo)
    edges = torch.tensor([0.0, -0.0, float('inf'), 3.4028235e38, 1e-45])
    assert torch.equal(c_sqrt(lib, edges), edges.double().sqrt().float())
    # and the vector body and the scalar tail agree (n not a multiple of the width)
    odd = torch.rand(13) * 50
    assert torch.equal(c_sqrt(lib, odd), odd.double().sqrt().float())


@needs_cc
@pytest.mark.parametrize('kind, args', KINDS_AND_ARGS)
def test_the_portable_build_without_avx2_gives_the_same_bits(kind, args, tmp_path,
                                                            monkeypatch):
    from fengine.kernels import native
    monkeypatch.setenv('FENGINE_KERNEL_CACHE', str(tmp_path))
    lib = native._load(native._build(native._compiler(), native.FLAGS))  # no -mavx2
    d, key = dist_args(kind, args), fold_in(3, 'portable.weight')
    for n, start in [(1, 0), (255, 1), (257, 3), (1000, 4 * (2**32 - 100) + 1), (70_001, 6)]:
        want = fill(torch.empty(n), d, key, start, compile=False, native=False)
        got = torch.empty(n)
        native.fill_f32(lib, got, d.kind, key, start, d.args)
        assert torch.equal(got, want), (n, start)
    x = torch.rand(1001) * 40
    assert torch.equal(c_sqrt(lib, x), x.double().sqrt().float())


@needs_cc
@pytest.mark.parametrize('kind, args', KINDS_AND_ARGS)
def test_large_fills_written_by_streaming_stores_keep_the_bits_at_any_alignment(kind, args):
    # One call of 2**20 + a little: from 2**20 elements the C loop streams its stores.
    # Offsets of 0, 1, 4 and 7 elements give outputs 32-, 4-, 16- and 28-byte aligned:
    # streamed (only the aligned one) or stored plainly, partial batches at both ends.
    from fengine.kernels import native
    lib = native.library()
    d, key = dist_args(kind, args), fold_in(11, 'large.weight')
    n = (1 << 20) + 77
    whole = fill(torch.empty(n + 8), d, key, 0, compile=False, native=False)  # the reference
    a = (ctypes.c_float * 8)(*d.args)
    base = torch.empty(n + 8)
    assert base.data_ptr() % 32 == 0
    for offset, start in [(0, 0), (1, 5), (4, 4), (7, 1), (0, 8)]:
        base.fill_(-7.0)
        lib.fengine_philox_fill_f32(base.data_ptr() + 4 * offset, start, n, d.kind, key, a)
        assert torch.equal(base[offset:offset + n], whole[start:start + n]), (offset, start)
        # nothing written outside the range
        assert bool((base[:offset] == -7.0).all()) and bool((base[offset + n:] == -7.0).all())


@needs_cc
def test_the_ab_bench_times_two_builds_in_turns_and_compares_their_bits():
    from bench.fill_ab import bench_fill_ab
    from fengine.kernels import native
    source = native.SOURCE.read_text()
    # a copy whose uniform is off by one step of the 2**-24 grid: other bits, same speed
    shifted = source.replace('return MUL(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 8))',
                             'return MUL(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 9))')
    shifted = shifted.replace('static inline float u24(uint32_t x) { return (float)(x >> 8)',
                              'static inline float u24(uint32_t x) { return (float)(x >> 9)')
    assert shifted != source
    lines, threads = [], torch.get_num_threads()
    rows = bench_fill_ab(source, shifted, 4096, repeats=2, log=lines.append)
    assert [r['kind'] for r in rows] == ['uniform', 'normal', 'trunc_normal'] and len(lines) == 3
    assert [r['same_bits'] for r in rows] == [False, False, True]
    for row in rows:
        assert all(len(row['times'][name]) == 2 for name in ('old', 'new', 'fill_'))
        assert row['speedup'] > 0 and row['of_write']['new'] > 0
    assert torch.get_num_threads() == threads  # one thread while timing, then back
