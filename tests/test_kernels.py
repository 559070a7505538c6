"""Spec for fengine.kernels: Philox4x32-10 in torch, its transforms, and the Triton kernel.

Statistics use 1e6 draws, six standard errors and a Kolmogorov-Smirnov bound at
alpha = 1e-6; the keys are fixed, so every run sees the same draws. The Triton tests
run the kernel under ``TRITON_INTERPRET=1`` in a subprocess (CPU, small tensors) and
are skipped when Triton is not installed.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fengine.func import Distribution, fold_in, kaiming, normal, sample, trunc_normal
from fengine.func.sample import current_generator, use_generator
from fengine.kernels import dist_args, fill, philox4x32, triton_available
from fengine.kernels.native import _compiler

# Where a C compiler exists the C loop must build (a failure fails these tests); without
# one, fengine runs the torch operations and these tests have nothing to check.
needs_cc = pytest.mark.skipif(_compiler() is None, reason='no C compiler (cc, gcc, clang)')

N = 1_000_000
KS_ALPHA_1E6 = math.sqrt(-math.log(1e-6 / 2) / 2)  # D * sqrt(n) critical value, ~2.69
M32 = 0xFFFFFFFF


def philox_by_hand(ctr: list[int], key: list[int]) -> list[int]:
    """Random123's Philox4x32-10, one counter, in Python integers."""
    c, k = list(ctr), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & M32, (p0 >> 32) ^ c[3] ^ k[1], p0 & M32]
    return c


def draw(kind, args, n=N, key=fold_in(0, 'w'), dtype=torch.float32, start=0):
    return fill(torch.empty(n, dtype=dtype), dist_args(kind, args, dtype), key, start)


def cdf_normal(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2.0))


def ks_statistic(x: torch.Tensor, cdf) -> float:
    x = torch.sort(x.double().flatten()).values
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - f).max().item(), (f - (i - 1) / n).max().item())


# ------------------------------------------------------------------- the generator
def test_philox_matches_random123s_known_answers():
    assert philox_by_hand([0] * 4, [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox_by_hand([M32] * 4, [M32, M32]) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6,
                                                     0x6D5451FD]
    assert philox_by_hand([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344],
                          [0xA4093822, 0x299F31D0]) == [0xD16CFE09, 0x94FDCCEB, 0x5001E420,
                                                        0x24126EA1]


@pytest.mark.parametrize('key', [0, 1, fold_in(3, 'a.weight'), 2**63 - 1, 2**64 - 1])
def test_torch_philox_gives_the_words_of_the_reference_for_every_counter(key):
    ctr = [0, 1, 2**31, 2**32 - 1, 2**32, 2**40 + 12345, 2**63 - 1]
    words = philox4x32(key, torch.tensor(ctr))
    for i, c in enumerate(ctr):
        want = philox_by_hand([c & M32, c >> 32, 0, 0], [key & M32, key >> 32])
        assert [int(w[i]) for w in words] == want, (key, c)


@pytest.mark.parametrize('kind, args', [('uniform', (-1.0, 2.0)), ('normal', (0.5, 2.0)),
                                        ('trunc_normal', (0.0, 1.0, -2.0, 2.0))])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_a_slice_drawn_alone_equals_that_slice_of_the_whole_tensor(kind, args, dtype):
    whole = draw(kind, args, n=10_001, dtype=dtype)
    assert torch.equal(draw(kind, args, n=5000, dtype=dtype), whole[:5000])
    for start, n in [(5000, 5001), (1237, 3333), (3, 1), (9999, 2)]:
        assert torch.equal(draw(kind, args, n=n, dtype=dtype, start=start),
                           whole[start:start + n]), (start, n)


def test_chunks_longer_than_the_internal_step_are_seamless():
    whole = draw('normal', (0.0, 1.0), n=300_001)
    assert torch.equal(draw('normal', (0.0, 1.0), n=100_000, start=200_001), whole[200_001:])


# ------------------------------------------------------------------- distributions
def test_uniform_is_in_a_to_b_with_uniform_moments_and_cdf():
    a, b = -1.0, 3.0
    x = draw('uniform', (a, b)).double()
    assert x.min() >= a and x.max() < b
    assert abs(x.mean().item() - 1.0) < 6 * (b - a) / math.sqrt(12 * N)
    assert abs(x.std().item() - (b - a) / math.sqrt(12)) < 6 * (b - a) / math.sqrt(12 * 2 * N)
    assert ks_statistic(x, lambda t: (t - a) / (b - a)) < KS_ALPHA_1E6 / math.sqrt(N)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_normal_has_its_moments_and_cdf(dtype):
    mean, std = 0.5, 2.0
    x = draw('normal', (mean, std), dtype=dtype).double()
    assert abs(x.mean().item() - mean) < 6 * std / math.sqrt(N)
    assert abs(x.std().item() - std) < 6 * std / math.sqrt(2 * N)
    assert ks_statistic(x, lambda t: cdf_normal((t - mean) / std)) < KS_ALPHA_1E6 / math.sqrt(N)


@pytest.mark.parametrize('mean, std, a, b', [(0.0, 1.0, -2.0, 2.0), (0.5, 1.0, -1.0, 3.0),
                                             (0.0, 1.0, 0.0, 5.0), (0.0, 1.0, 2.5, 4.0),
                                             (0.0, 0.02, -0.04, 0.04)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_trunc_normal_respects_its_bounds_exactly_and_has_the_truncated_cdf(mean, std, a, b,
                                                                           dtype):
    x = draw('trunc_normal', (mean, std, a, b), dtype=dtype)
    assert x.min().item() >= a and x.max().item() <= b
    lo, hi = cdf_normal(torch.tensor((a - mean) / std, dtype=torch.float64)), cdf_normal(
        torch.tensor((b - mean) / std, dtype=torch.float64))

    def cdf(t):
        return ((cdf_normal((t - mean) / std) - lo) / (hi - lo)).clamp(0, 1)

    assert ks_statistic(x, cdf) < KS_ALPHA_1E6 / math.sqrt(N)
    # Moments from the textbook formulas.
    alpha, beta = (a - mean) / std, (b - mean) / std
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    z = float(hi - lo)
    want_mean = mean + std * (phi(alpha) - phi(beta)) / z
    want_std = std * math.sqrt(1 + (alpha * phi(alpha) - beta * phi(beta)) / z
                               - ((phi(alpha) - phi(beta)) / z) ** 2)
    x = x.double()
    assert abs(x.mean().item() - want_mean) < 6 * want_std / math.sqrt(N)
    assert abs(x.std().item() - want_std) < 6 * want_std / math.sqrt(2 * N) * 1.5


def test_trunc_normal_in_bfloat16_stays_inside_the_bounds_after_rounding():
    x = draw('trunc_normal', (0.0, 1.0, -0.3, 0.3), n=100_000, dtype=torch.bfloat16)
    assert x.min().item() >= -0.3 and x.max().item() <= 0.3


def test_constant_is_the_value_everywhere():
    assert torch.equal(draw('constant', (0.25,), n=10), torch.full((10,), 0.25))


@pytest.mark.parametrize('kind, args', [('uniform', (-1.0, 1.0)), ('normal', (0.0, 1.0)),
                                        ('trunc_normal', (0.0, 1.0, -2.0, 2.0))])
def test_streams_with_different_keys_are_uncorrelated(kind, args):
    one = draw(kind, args, key=fold_in(0, 'a.weight')).double()
    two = draw(kind, args, key=fold_in(0, 'b.weight')).double()
    assert abs(torch.corrcoef(torch.stack([one, two]))[0, 1].item()) < 6 / math.sqrt(N)
    # Neighbouring elements of one stream (the 4 words of a counter) too.
    assert abs(torch.corrcoef(torch.stack([one[:-1], one[1:]]))[0, 1].item()) < 6 / math.sqrt(N)


def test_the_giles_erfinv_is_within_a_few_ulps_of_torch_erfinv():
    from fengine.kernels.philox import erfinv_f32
    x = torch.linspace(-0.999999, 0.999999, 200_001, dtype=torch.float32)
    want = torch.erfinv(x.double())
    rel = ((erfinv_f32(x).double() - want).abs() / want.abs().clamp_min(1e-30))
    assert rel.max().item() < 2e-6


def test_the_polynomial_log_is_within_an_ulp_of_the_float64_log():
    from fengine.kernels.philox import log_f32
    x = torch.cat([torch.arange(1, 1 << 20, dtype=torch.float32) * 2.0 ** -20,
                   torch.logspace(-30, 30, 100_001, dtype=torch.float32)])
    want = torch.log(x.double())
    err = (log_f32(x).double() - want).abs() / want.abs().clamp_min(1e-30)
    assert (err / torch.finfo(torch.float32).eps).max().item() < 1.0


def test_sincos_is_within_an_eps_of_the_float64_sine_and_cosine_over_a_turn():
    from fengine.kernels.philox import TWO_PI_F32, sincos_f32
    t = torch.arange(0, 1 << 20, dtype=torch.float32) * 2.0 ** -20 * TWO_PI_F32
    sin, cos = sincos_f32(t)
    eps = torch.finfo(torch.float32).eps
    assert (sin.double() - torch.sin(t.double())).abs().max().item() < eps
    assert (cos.double() - torch.cos(t.double())).abs().max().item() < eps


def test_sqrt_f32_is_correctly_rounded():
    from fengine.kernels.philox import sqrt_f32
    x = torch.rand(100_000) * 30
    assert torch.equal(sqrt_f32(x), x.double().sqrt().float())


@pytest.mark.parametrize('kind, args', [('uniform', (-1.0, 2.0)), ('normal', (0.5, 2.0)),
                                        ('trunc_normal', (0.0, 1.0, -2.0, 2.0))])
def test_the_compiled_fill_gives_the_bits_of_the_eager_fill(kind, args):
    # One inductor compile per kind (~5-30 s on 2 cores); the point of the test.
    from fengine.kernels import philox
    d, key = dist_args(kind, args), fold_in(5, 'big.weight')
    for n, start in [(40_000, 0), (10_001, 3), (5, 2)]:
        want = fill(torch.empty(n), d, key, start, compile=False, native=False)
        got = torch.empty(n)
        # The compiled path itself, not its fallback (a failed compile warns and draws the
        # same bits eagerly, which would pass the comparison).
        assert philox._fill_compiled(got, d, key, start) is True, (n, start)
        assert torch.equal(got, want), (n, start)
    assert d.kind in philox._COMPILED and d.kind not in philox._FAILED


@pytest.fixture
def compile_calls(monkeypatch):
    """The compiled fills requested (none run), from a clean slate of compiled kinds."""
    from fengine.kernels import philox
    calls = []
    monkeypatch.setattr(philox, '_fill_compiled', lambda *a: calls.append(a) or False)
    monkeypatch.setattr(philox, '_COMPILED', {})
    monkeypatch.setattr(philox, '_FAILED', set())
    monkeypatch.setattr(philox, 'COMPILE_MIN_NUMEL', 1000)
    monkeypatch.setattr(philox, 'COMPILE_WORTH_NUMEL', 5000)
    return calls


def test_with_compile_1_float32_fills_from_the_threshold_up_run_compiled(monkeypatch,
                                                                        compile_calls):
    monkeypatch.setenv('FENGINE_PHILOX_COMPILE', '1')
    draw('normal', (0.0, 1.0), n=999)
    draw('normal', (0.0, 1.0), n=999, dtype=torch.float64)
    draw('normal', (0.0, 1.0), n=1000, dtype=torch.float64)
    assert compile_calls == []
    draw('normal', (0.0, 1.0), n=1000)
    assert len(compile_calls) == 1
    monkeypatch.setenv('FENGINE_PHILOX_COMPILE', '0')
    draw('normal', (0.0, 1.0), n=100_000)
    assert len(compile_calls) == 1


@needs_cc
def test_auto_compiles_a_kind_once_a_fill_or_a_models_total_makes_it_pay(monkeypatch,
                                                                         compile_calls):
    from fengine.kernels import native, philox
    monkeypatch.delenv('FENGINE_PHILOX_COMPILE', raising=False)
    assert native.library() is not None
    draw('normal', (0.0, 1.0), n=10_000)        # with the C loop, nothing is compiled
    philox.prepare_fills({'normal': 10**9})
    assert compile_calls == []
    monkeypatch.setattr(native, 'library', lambda: None)  # as without a C compiler
    compiled = []
    monkeypatch.setattr(philox, 'compile_fill', compiled.append)
    draw('normal', (0.0, 1.0), n=4999)          # above the minimum, below the worth
    assert compile_calls == []
    draw('normal', (0.0, 1.0), n=5000)          # one fill worth a compile on its own
    assert len(compile_calls) == 1
    # A model of many mid-sized tensors: counted together, compiled once up front.
    philox.prepare_fills({'trunc_normal': 3000, 'uniform': 6000, 'constant': 10**9})
    assert compiled == ['uniform']
    monkeypatch.setenv('FENGINE_PHILOX_COMPILE', '0')
    philox.prepare_fills({'uniform': 10**9})
    assert compiled == ['uniform']


def test_a_model_s_fills_are_counted_together_for_the_compile(monkeypatch, compile_calls):
    from fengine.kernels import philox
    from fengine.func.sample import sample_into
    monkeypatch.delenv('FENGINE_PHILOX_COMPILE', raising=False)
    totals = []
    monkeypatch.setattr(philox, 'prepare_fills', totals.append)
    outs = [torch.empty(2000) for _ in range(3)]
    sample_into([(Distribution('normal', (0.0, 1.0)), i, out) for i, out in enumerate(outs)]
                + [(Distribution('constant', (1.0,)), 9, torch.empty(10))])
    assert totals == [{'normal': 6000}]
    for i, out in enumerate(outs):
        assert torch.equal(out, draw('normal', (0.0, 1.0), n=2000, key=i))


KINDS_AND_ARGS = [('uniform', (-1.0, 2.0)), ('uniform', (0.0, 1.0)), ('normal', (0.1, 2.0)),
                  ('normal', (0.0, 0.02)), ('trunc_normal', (0.0, 1.0, -2.0, 2.0)),
                  ('trunc_normal', (0.5, 1.0, 0.0, 5.0)), ('trunc_normal', (0.0, 0.02, -0.04, 0.1))]


@needs_cc
@pytest.mark.parametrize('kind, args', KINDS_AND_ARGS)
def test_the_c_loop_gives_the_bits_of_the_torch_operations(kind, args):
    from fengine.kernels import native
    assert native.library() is not None, 'this machine has a C compiler: the C loop must build'
    d, key = dist_args(kind, args), fold_in(7, 'c.weight')
    # Slices at every alignment, batch edges (64 counters), one split over threads, and
    # counters whose high word changes inside a batch (the vectorized Philox's 64-bit count).
    for n, start in [(1, 0), (3, 5), (255, 1), (256, 0), (257, 3), (1000, 2), (300_001, 7),
                     (1000, 4 * (2**32 - 100) + 1)]:
        want = fill(torch.empty(n), d, key, start, compile=False, native=False)
        got = torch.empty(n)
        version = got._version
        fill(got, d, key, start, compile=False)
        assert torch.equal(got, want), (n, start)
        assert got._version > version  # autograd sees the write, as of an in-place op


@needs_cc
def test_a_forked_child_gets_a_thread_pool_of_its_own(monkeypatch):
    # The parent's pool threads do not survive fork(); a child reusing the pool would hang.
    # (Forking here for real would test libgomp: torch's OpenMP can hang in a forked child.)
    from fengine.kernels import native
    first = native._pool(2)
    monkeypatch.setattr(native, '_POOL', native._POOL)  # the process's pool, back after
    assert native._pool(2) is first and native._pool(1) is first
    monkeypatch.setattr(native.os, 'getpid', lambda: -1)  # as seen from a forked child
    child = native._pool(2)
    assert child is not first and native._pool(2) is child
    d = dist_args('normal', (0.0, 1.0))
    assert torch.equal(fill(torch.empty(1 << 18), d, 5),
                       fill(torch.empty(1 << 18), d, 5, native=False))


def test_without_a_c_compiler_the_torch_operations_run_with_a_warning(monkeypatch, tmp_path):
    from fengine.kernels import native
    monkeypatch.setattr(native, '_TRIED', False)
    monkeypatch.setattr(native, '_LIBRARY', None)
    monkeypatch.setattr(native, '_compiler', lambda: None)
    with pytest.warns(RuntimeWarning, match='no C compiler'):
        assert native.library() is None
    d = dist_args('normal', (0.0, 1.0))
    assert torch.equal(fill(torch.empty(999), d, 3),
                       fill(torch.empty(999), d, 3, compile=False, native=False))
    monkeypatch.setattr(native, '_TRIED', False)
    monkeypatch.setenv('FENGINE_PHILOX_NATIVE', '0')
    monkeypatch.setattr(native, '_compiler', lambda: 'cc')
    assert native.library() is None and native._TRIED is False  # off: not even tried


@needs_cc
def test_a_failed_c_build_is_a_warning_and_a_new_cache_is_built_atomically(monkeypatch,
                                                                          tmp_path):
    from fengine.kernels import native
    monkeypatch.setenv('FENGINE_KERNEL_CACHE', str(tmp_path))
    monkeypatch.setattr(native, '_TRIED', False)
    monkeypatch.setattr(native, '_LIBRARY', None)
    monkeypatch.setattr(native, 'FLAGS', native.FLAGS + ('-fno-such-flag',))
    with pytest.warns(RuntimeWarning, match='building the C Philox fill failed'):
        assert native.library() is None
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind
    monkeypatch.setattr(native, 'FLAGS', native.FLAGS[:-1])
    monkeypatch.setattr(native, '_TRIED', False)
    assert native.library() is not None
    assert [p.suffix for p in tmp_path.iterdir()] == ['.so']


def test_a_bad_compile_mode_is_named_with_the_choices(monkeypatch):
    monkeypatch.setenv('FENGINE_PHILOX_COMPILE', 'yes')
    with pytest.raises(ValueError, match="FENGINE_PHILOX_COMPILE='yes'.*valid: auto, 1, 0"):
        fill(torch.empty(1 << 21), dist_args('normal', (0.0, 1.0)), 0)


def test_a_failed_compile_falls_back_to_the_eager_values_with_a_warning(monkeypatch):
    from fengine.kernels import philox

    def broken(kind):
        def run(*args):
            raise RuntimeError('no C++ compiler')
        return run

    monkeypatch.setattr(philox, '_compiled', broken)
    monkeypatch.setattr(philox, '_FAILED', set())
    d = dist_args('uniform', (0.0, 1.0))
    with pytest.warns(RuntimeWarning, match='no C[+][+] compiler'):
        got = fill(torch.empty(100), d, 7, compile=True)
    assert torch.equal(got, fill(torch.empty(100), d, 7, compile=False, native=False))


# ------------------------------------------------------------------- integration
def test_sample_with_philox_draws_what_kernels_fill_draws():
    dist = Distribution('trunc_normal', (0.0, 1.0, -2.0, 2.0))
    got = sample(dist, (64, 32), key=fold_in(1, 'fc.weight'), generator='philox')
    want = fill(torch.empty(64, 32), dist_args(*dist), fold_in(1, 'fc.weight'))
    assert torch.equal(got, want)


def test_initializers_draw_from_philox_by_default_and_torch_on_request(monkeypatch):
    monkeypatch.delenv('FENGINE_INIT_GENERATOR', raising=False)
    std = math.sqrt(2.0 / 32)
    philox_values = draw('normal', (0.0, std), n=64 * 32,
                         key=fold_in(0, 'fc.weight')).view(64, 32)
    assert current_generator() == 'philox'
    assert torch.equal(kaiming(mode='fan_in')((64, 32), seed=0, path='fc.weight'),
                       philox_values)
    torch_values = torch.empty(64, 32).normal_(0.0, std, generator=torch.Generator()
                                               .manual_seed(fold_in(0, 'fc.weight')))
    with use_generator('torch'):
        assert torch.equal(kaiming(mode='fan_in')((64, 32), seed=0, path='fc.weight'),
                           torch_values)
    monkeypatch.setenv('FENGINE_INIT_GENERATOR', 'torch')
    assert torch.equal(kaiming(mode='fan_in')((64, 32), seed=0, path='fc.weight'),
                       torch_values)
    with use_generator('philox'):  # the block wins over the environment
        assert torch.equal(kaiming(mode='fan_in')((64, 32), seed=0, path='fc.weight'),
                           philox_values)


def test_a_bad_generator_in_the_environment_is_named_with_the_choices(monkeypatch):
    monkeypatch.setenv('FENGINE_INIT_GENERATOR', 'mt19937')
    with pytest.raises(ValueError, match="FENGINE_INIT_GENERATOR='mt19937'.*philox, torch"):
        normal()((4,), seed=0, path='w')


def test_philox_initializers_are_prefix_stable_across_shapes():
    with use_generator('philox'):
        small = normal()((4,), seed=0, path='x')
        big = normal()((400,), seed=0, path='x')
        other = normal()((400,), seed=0, path='y')
    assert torch.equal(small, big[:4]) and not torch.equal(small, other[:4])


def test_philox_float64_initializers_use_the_full_mantissa():
    with use_generator('philox'):
        w = trunc_normal()((256, 256), seed=0, path='w', dtype=torch.float64)
    assert not torch.equal(w, w.float().double())


def test_an_unknown_generator_is_named_with_the_choices():
    with pytest.raises(ValueError, match="unknown generator 'mt'; known: philox, torch"):
        sample(Distribution('normal', (0.0, 1.0)), (2,), key=0, generator='mt')


def test_importing_fengine_does_not_import_triton():
    code = 'import sys, fengine, fengine.func, fengine.kernels; print("triton" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == 'False'


# ------------------------------------------------------------------- triton kernel
needs_triton = pytest.mark.skipif(not triton_available(),
                                  reason='triton is not installed')

_INTERPRETED = textwrap.dedent('''
    import json, os, sys
    os.environ['TRITON_INTERPRET'] = '1'  # before triton is imported
    import torch
    from fengine.kernels import dist_args, fill
    from fengine.kernels import philox, triton_init
    result = {}
    keys = [(0, 0), (2**63 - 1, 2**40 - 7), (123456789012345, 5)]
    result['words'] = all(torch.equal(philox.random_words(k, s, 300),
                                      triton_init.random_words(k, s, 300)) for k, s in keys)
    specs = [('constant', (0.5,)), ('uniform', (-1.0, 2.0)), ('normal', (0.1, 2.0)),
             ('trunc_normal', (0.0, 1.0, -2.0, 2.0)), ('trunc_normal', (0.5, 1.0, 0.0, 5.0)),
             ('uniform', (0.0, 1.0))]
    sizes = [7, 1000, 1027, 4096, 3, 2500]
    for dtype in (torch.float32, torch.bfloat16):
        segs, off = [], 0
        for i, ((kind, args), n) in enumerate(zip(specs, sizes)):
            segs.append((off, n, dist_args(kind, args, dtype), 12345 + i * 99991))
            off += n + 5
        together = torch.full((off,), float('nan'), dtype=dtype)
        triton_init.fill_segments(together, segs)
        rows = []
        for j, (o, n, d, key) in enumerate(segs):
            alone = torch.full((n,), float('nan'), dtype=dtype)
            triton_init.fill_segments(alone, [(0, n, d, key)])
            ref = fill(torch.empty(n, dtype=dtype), d, key)
            got = together[o:o + n]
            ulps = ((got.float() - ref.float()).abs()
                    / torch.finfo(dtype).eps / ref.float().abs().clamp_min(1.0)).max().item()
            rows.append(dict(kind=d.kind, grouping=torch.equal(alone, got), ulps=ulps,
                             gaps=bool(together[o + n:o + n + 5].isnan().all())))
        result[str(dtype)] = rows
        # The same segments as separate tensors (a model's parameters), in one launch.
        tensors = [torch.full((n,), float('nan'), dtype=dtype) for n in sizes]
        triton_init.fill_tensors([(t, d, key) for t, (_, _, d, key) in zip(tensors, segs)])
        result['tensors ' + str(dtype)] = all(
            torch.equal(t, together[o:o + n]) for t, (o, n, _, _) in zip(tensors, segs))

    # A whole model built on meta, materialized through the one-launch path (on the CPU
    # here, as on CUDA) against the torch-ops Philox path, one tensor at a time.
    import importlib
    from fengine.func import init_params
    fsample = importlib.import_module('fengine.func.sample')  # the module, not the function
    from fengine.presets import get_preset
    from fengine.model import BaseModule

    class Model(BaseModule):
        def __init__(self):
            preset = get_preset('debug')
            super().__init__(preset.init_cfg + [dict(type='TruncNormal', std=0.02,
                                                     layer='Embedding')])
            self.net = preset.build()

    with torch.device('meta'):
        model = Model()
    one_by_one = init_params(model, seed=3, device='cpu')
    launches = []
    fsample._fused_launch = lambda out: out.dtype in (torch.float32, torch.bfloat16)
    fsample._fill_tensors = (lambda group: launches.append(len(group))
                             or triton_init.fill_tensors(group))
    fused = init_params(model, seed=3, device='cpu')
    bf16 = init_params(model, seed=3, device='cpu', dtype=torch.bfloat16)
    result['model'] = dict(
        launches=list(launches), params=len(one_by_one),
        max_rel=max(((fused[p] - one_by_one[p]).abs() / one_by_one[p].abs().clamp_min(1e-3))
                    .max().item() for p in one_by_one),
        bf16_differ=sum(int((bf16[p] != one_by_one[p].bfloat16()).sum()) for p in one_by_one),
        bf16_max_rel=max(((bf16[p].float() - one_by_one[p]).abs()
                          / one_by_one[p].abs().clamp_min(1e-3)).max().item()
                         for p in one_by_one),
        numel=sum(t.numel() for t in one_by_one.values()))
    # One tensor asked for alone (the functional API) takes the same kernel.
    fsample._fused_target = lambda device, dtype: True
    from fengine.func import fold_in, normal
    alone = normal(std=0.02)((300,), seed=3, path='x')
    kernel = torch.empty(300)
    triton_init.fill_tensors([(kernel, dist_args('normal', (0.0, 0.02)), fold_in(3, 'x'))])
    result['alone'] = dict(equal=torch.equal(alone, kernel), launches=len(launches))
    print(json.dumps(result))
''')


@pytest.fixture(scope='module')
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET='1')
    out = subprocess.run([sys.executable, '-c', _INTERPRETED], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_triton
def test_triton_randint4x_gives_the_same_integers_as_the_torch_philox(interpreted):
    assert interpreted['words'] is True


@needs_triton
@pytest.mark.parametrize('dtype', ['torch.float32', 'torch.bfloat16'])
def test_one_launch_fills_every_segment_as_the_torch_path_does(interpreted, dtype):
    for row in interpreted[dtype]:
        # constant bit for bit; uniform within one rounding (a fused multiply-add on a
        # GPU, or a bf16 tie); transcendental transforms within a few ulps.
        assert row['ulps'] <= {0: 0, 1: 1}.get(row['kind'], 4), row
        assert row['grouping'], row   # the same values alone as in a shared launch
        assert row['gaps'], row       # nothing written between segments


@needs_triton
@pytest.mark.parametrize('dtype', ['torch.float32', 'torch.bfloat16'])
def test_separate_tensors_filled_in_one_launch_get_their_segment_values(interpreted, dtype):
    assert interpreted['tensors ' + dtype] is True


@needs_triton
def test_a_meta_model_is_materialized_in_one_launch_per_dtype_with_the_torch_path_values(
        interpreted):
    model = interpreted['model']
    assert model['launches'] == [model['params'], model['params']]  # float32, then bf16
    # Within a few float32 ulps of the torch-ops path (relative, values >= 1e-3 in size).
    assert model['max_rel'] <= 4 * torch.finfo(torch.float32).eps, model
    # bf16 drawn in float32 and rounded once: the rounded float32 values, except where a
    # few-ulp difference straddles a bf16 rounding boundary (then one bf16 ulp apart).
    assert model['bf16_differ'] <= model['numel'] * 1e-3, model
    assert model['bf16_max_rel'] <= torch.finfo(torch.bfloat16).eps, model


# ------------------------------------------------------------------- on a GPU
# The bound a model initialized on the CPU and on a GPU must meet, relative to the value
# (values under 1e-3 in size: absolute 1e-9). Under the interpreter the fill is within 4
# float32 ulps (4.8e-7); the bound is 1e-6.
CPU_GPU_RTOL = 1e-6


def _meta_gpt():
    from fengine.model import BaseModule
    from fengine.presets import get_preset

    class Model(BaseModule):
        def __init__(self):
            preset = get_preset('debug')
            super().__init__(preset.init_cfg + [
                dict(type='TruncNormal', std=0.02, layer='Embedding'),
                dict(type='Kaiming', layer='Linear', distribution='uniform')])
            self.net = preset.build()

    with torch.device('meta'):
        return Model()


@pytest.mark.cuda
@pytest.mark.skipif(not triton_available(), reason='triton is not installed')
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_a_model_initialized_on_a_gpu_matches_the_cpu_within_the_bound(dtype):
    import importlib
    from fengine.func import init_params
    fsample = importlib.import_module('fengine.func.sample')
    model = _meta_gpt()
    assert fsample._fused_launch(torch.empty(1, device='cuda', dtype=dtype))  # Triton's path
    cpu = init_params(model, seed=11, device='cpu', dtype=dtype)
    gpu = init_params(model, seed=11, device='cuda', dtype=dtype)
    eps = torch.finfo(dtype).eps
    for path, want in cpu.items():
        got = gpu[path].cpu().float()
        rel = ((got - want.float()).abs() / want.float().abs().clamp_min(1e-3)).max().item()
        # float32: the bound; bf16: one bf16 rounding apart at most.
        assert rel <= (CPU_GPU_RTOL if dtype == torch.float32 else eps), (path, rel)


@pytest.mark.cuda
@pytest.mark.skipif(not triton_available(), reason='triton is not installed')
def test_a_gpu_model_is_drawn_in_one_launch_per_dtype(monkeypatch):
    import importlib
    from fengine.func import init_params
    fsample = importlib.import_module('fengine.func.sample')
    launches = []
    original = fsample._fill_tensors
    monkeypatch.setattr(fsample, '_fill_tensors',
                        lambda group: launches.append(len(group)) or original(group))
    model = _meta_gpt()
    params = init_params(model, seed=0, device='cuda')
    assert launches == [len(params)]
    one = init_params(model, seed=0, device='cuda')  # the same values again
    assert all(torch.equal(params[p], one[p]) for p in params)


@pytest.mark.cuda
@pytest.mark.skipif(not triton_available(), reason='triton is not installed')
def test_the_gpu_fill_has_the_moments_and_bounds_of_its_distribution():
    from fengine.kernels import fill_tensors
    n = 1_000_000
    outs = [torch.empty(n, device='cuda') for _ in range(3)]
    fill_tensors([(outs[0], dist_args('normal', (0.0, 1.0)), 1),
                  (outs[1], dist_args('uniform', (-1.0, 2.0)), 2),
                  (outs[2], dist_args('trunc_normal', (0.0, 1.0, -2.0, 2.0)), 3)])
    normal, uniform, trunc = (t.cpu() for t in outs)
    assert abs(normal.mean().item()) < 5e-3 and abs(normal.std().item() - 1) < 5e-3
    assert ks_statistic(normal, cdf_normal) < 2e-3
    assert uniform.min() >= -1.0 and uniform.max() < 2.0
    assert trunc.min() >= -2.0 and trunc.max() <= 2.0


@needs_triton
def test_one_tensor_drawn_alone_on_the_gpu_path_takes_the_same_kernel(interpreted):
    assert interpreted['alone'] == dict(equal=True, launches=3)


def test_a_failed_triton_fill_falls_back_to_the_torch_path_with_a_warning(monkeypatch):
    import importlib
    fsample = importlib.import_module('fengine.func.sample')

    def broken(group):
        raise RuntimeError('no GPU driver')

    monkeypatch.setattr(fsample, '_fused_target', lambda device, dtype: True)
    monkeypatch.setattr(fsample, '_fill_tensors', broken)
    with pytest.warns(RuntimeWarning, match='Triton fill of 1 torch.float32 tensors on cpu '
                                            'failed.*no GPU driver'):
        got = normal(std=0.02)((300,), seed=3, path='x')
    assert torch.equal(got, draw('normal', (0.0, 0.02), n=300, key=fold_in(3, 'x')))
