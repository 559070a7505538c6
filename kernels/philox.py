"""Philox4x32-10 and the distribution transforms, in torch operations (the reference path).

The generator is counter-based: element ``i`` of a parameter is a pure function of
(key, i), where ``key`` is the parameter's 64-bit ``fold_in(seed, path)``. Nothing
depends on how parameters are grouped into launches or how a tensor is sharded: the
elements ``[s, s + n)`` of a tensor drawn alone are the same as those of the whole.

Conventions follow Triton's ``tl.randint4x(seed, offset)`` exactly, so the Triton
kernel (``triton_init.py``) produces the same integers:

- Philox key ``(k0, k1) = (key & 0xffffffff, key >> 32)``;
- counter ``(c0, c1, c2, c3) = (ctr & 0xffffffff, ctr >> 32, 0, 0)``;
- 10 rounds of Random123's Philox4x32 (multipliers ``0xD2511F53``, ``0xCD9E8D57``,
  Weyl increments ``0x9E3779B9``, ``0xBB67AE85``).

Counter layout (one Philox call gives four 32-bit words ``x0..x3``):

- float32 (and bf16/fp16, drawn in float32 and rounded once): counter ``c`` gives
  elements ``4c .. 4c+3``. Uniform and truncated normal use one word each (``x_j`` for
  ``4c+j``); the normal uses Box-Muller on ``(x0, x1)`` for ``4c`` (cos) and ``4c+1``
  (sin), and on ``(x2, x3)`` for ``4c+2`` and ``4c+3``.
- float64: counter ``c`` gives elements ``2c, 2c+1``. A 53-bit uniform takes two words
  (``(x0, x1)`` for ``2c``, ``(x2, x3)`` for ``2c+1``); the normal is Box-Muller on the
  two 53-bit uniforms, ``2c`` cos and ``2c+1`` sin.

uint32 arithmetic is emulated in int64: a product of two words is < 2**64 and int64
multiplication wraps modulo 2**64, so the low 32 bits of ``p >> 32`` (an arithmetic
shift) are the high word of the unsigned product and ``p & 0xffffffff`` its low word.

float32 logarithms, sines and cosines are polynomials written in torch operations
(:func:`log_f32`, :func:`sincos_f32`), not ``torch.log``/``torch.sin``, and square roots
go through float64 (:func:`sqrt_f32`): PyTorch's eager kernels and inductor's generated
C++ use different math libraries and differ in the last bit, whereas plain multiplies
and adds and a float64 square root round the same in both. So the compiled CPU path
(``torch.compile`` fuses the whole chain into one loop) gives the same bits as the eager
one, and so does the C loop of ``philox_cpu.c`` (``native.py``), which :func:`fill` uses
for float32 on the CPU.
"""
from __future__ import annotations

import functools
import math
import os
import time
import warnings
from typing import Callable, NamedTuple

import torch

from . import native as _native

__all__ = ['philox4x32', 'random_words', 'DistArgs', 'dist_args', 'fill', 'erfinv_f32',
           'log_f32', 'sqrt_f32', 'sincos_f32', 'KIND_IDS', 'COMPILE_MIN_NUMEL',
           'COMPILE_WORTH_NUMEL', 'compile_fill', 'prepare_fills']

M32 = 0xFFFFFFFF
ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10

# The distribution ids the Triton kernel switches on.
KIND_IDS = {'constant': 0, 'uniform': 1, 'normal': 2, 'trunc_normal': 3}

TWO_PI_F32 = 6.2831855  # float32(2 pi): both paths use the same rounded constant
_CHUNK = 1 << 16        # counters per step: the int64 temporaries stay in the L2 cache
# Float32 CPU fills run through the C loop (native.py: ~1-3.5 ns an element on 2 cores,
# no compile to wait for) when it can be built. Otherwise: the compiled torch-ops path
# (one compile per kind: ~20-30 s cold on 2 cores, 1-5 s with inductor's on-disk cache
# warm; ~2.5-3.5 ns an element) or the eager one (~25 ns for normal and truncated normal,
# ~6 for uniform). All give the same values. FENGINE_PHILOX_COMPILE chooses: 'auto'
# (default) compiles a kind, when there is no C loop, once a single fill or a whole
# model's fills of that kind (see prepare_fills) reach COMPILE_WORTH_NUMEL elements, where
# eager drawing would cost about as much as a warm compile; after that every fill of
# >= COMPILE_MIN_NUMEL elements of the kind runs compiled. '1' compiles every fill of
# >= COMPILE_MIN_NUMEL elements, C loop or not; '0' never compiles.
COMPILE_MIN_NUMEL = 1 << 20
COMPILE_WORTH_NUMEL = 1 << 28
COMPILE_MODES = ('auto', '1', '0')


def philox4x32(key: int, counter: torch.Tensor, rounds: int = ROUNDS):
    """Philox4x32 of ``counter`` (int64, the 64-bit offset ``(c0, c1)``; c2 = c3 = 0).

    Returns four int64 tensors holding uint32 words, as ``tl.randint4x(key, counter)``.
    """
    if not 0 <= key < 1 << 64:
        raise ValueError(f'key must be a 64-bit unsigned int, but got {key}')
    return _rounds(key & M32, key >> 32, counter, rounds)


def _rounds(k0, k1, counter: torch.Tensor, rounds: int = ROUNDS):
    """The Philox rounds; the key words are ints (eager) or 0-d int64 tensors (compiled,
    so that one graph serves every key)."""
    c0 = counter & M32
    c1 = (counter >> 32) & M32
    # Round 1 with c2 = c3 = 0: the B-products vanish.
    pa = c0 * ROUND_A
    c0, c1, c2, c3 = c1 ^ k0, None, ((pa >> 32) ^ k1) & M32, pa
    for _ in range(rounds - 1):
        k0, k1 = (k0 + KEY_A) & M32, (k1 + KEY_B) & M32
        pa = c0 * ROUND_A
        pb = c2 * ROUND_B
        # c1 and c3 hold whole 64-bit products: only their low words matter, and the
        # mask after the xor keeps exactly those.
        hi_b = pb >> 32
        hi_b ^= k0
        if c1 is not None:
            hi_b ^= c1
        hi_a = pa >> 32
        hi_a ^= c3
        hi_a ^= k1
        c0, c1, c2, c3 = hi_b.bitwise_and_(M32), pb, hi_a.bitwise_and_(M32), pa
    if c1 is None:  # rounds == 1
        c1 = torch.zeros_like(c0)
    return c0, c1 & M32, c2, c3 & M32


def random_words(key: int, start: int, count: int, device='cpu') -> torch.Tensor:
    """The ``(count, 4)`` int64 words of counters ``start .. start + count - 1``."""
    ctr = torch.arange(start, start + count, dtype=torch.int64, device=device)
    return torch.stack(philox4x32(key, ctr), dim=1)


class DistArgs(NamedTuple):
    """A distribution as the kernel sees it: a kind id and eight numbers.

    ``args`` by kind (``lo``/``hi`` are clamps inside the output dtype):

    - constant: ``(value, ...)``
    - uniform: ``(low, high - low, hi, ...)`` with ``hi`` the largest value < high
    - normal: ``(mean, std, ...)``
    - trunc_normal: ``(mean, std * sqrt(2), e_a, e_b - e_a, 1 + e_a, 1 - e_b, lo, hi)``
      with ``e_x = erf((x - mean) / (std sqrt 2))``; ``1 + e_a`` and ``1 - e_b`` are
      computed as ``erfc`` so they keep their precision in the tails.
    """
    kind: int
    args: tuple[float, ...]


def _below(x: float, dtype: torch.dtype) -> float:
    """The largest value of ``dtype`` strictly below ``x``."""
    v = torch.tensor(x, dtype=dtype)
    if float(v) >= x:
        v = torch.nextafter(v, torch.tensor(-math.inf, dtype=dtype))
    return float(v)


def _inside(bound: float, dtype: torch.dtype, upward: bool) -> float:
    """The value of ``dtype`` nearest to ``bound`` on the inner side of it."""
    v = torch.tensor(bound, dtype=dtype)
    if (upward and float(v) < bound) or (not upward and float(v) > bound):
        v = torch.nextafter(v, torch.tensor(math.inf if upward else -math.inf, dtype=dtype))
    return float(v)


def dist_args(kind: str, args: tuple[float, ...], dtype: torch.dtype = torch.float32) -> DistArgs:
    """The kernel's view of ``Distribution(kind, args)`` for an output of ``dtype``.

    Computed in float64 on the host; both paths read the same numbers.
    """
    pad = (0.0,) * 8
    if kind == 'constant':
        return DistArgs(0, (float(args[0]),) + pad[1:])
    if kind == 'uniform':
        low, high = map(float, args)
        hi = _below(high, dtype) if high > low else high
        return DistArgs(1, (low, high - low, hi) + pad[3:])
    if kind == 'normal':
        mean, std = map(float, args)
        return DistArgs(2, (mean, std) + pad[2:])
    if kind == 'trunc_normal':
        mean, std, a, b = map(float, args)
        za, zb = (a - mean) / (std * math.sqrt(2.0)), (b - mean) / (std * math.sqrt(2.0))
        e_a, e_b = math.erf(za), math.erf(zb)
        return DistArgs(3, (mean, std * math.sqrt(2.0), e_a, e_b - e_a, math.erfc(-za),
                            math.erfc(zb), _inside(a, dtype, True), _inside(b, dtype, False)))
    raise ValueError(f'unknown distribution kind {kind!r}; known: {", ".join(KIND_IDS)}')


# Cephes' logf and sinf/cosf (S. Moshier), evaluated in the order written here.
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4   # ln 2 = hi + lo, hi exact in 9 bits
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
          3.3333331174e-1)
_PIO2 = (1.5703125, 4.837512969970703125e-4, 7.549789948768648e-8)  # pi / 2 in three parts


def log_f32(x: torch.Tensor) -> torch.Tensor:
    """The natural log of positive normal float32 values, within one ulp.

    Built from bit operations, multiplies and adds only, so eager PyTorch and
    inductor's C++ give the same bits (their ``log`` kernels differ in the last bit).
    """
    bits = x.view(torch.int32)
    e = (bits >> 23) - 127
    m = ((bits & 0x7FFFFF) | 0x3F000000).view(torch.float32)  # x = m 2**(e+1), m in [0.5, 1)
    low = m < 0.70710677
    f = torch.where(low, m + m, m) - 1.0                       # exact: in [sqrt(.5)-1, sqrt(2)-1)
    e = torch.where(low, e, e + 1).to(torch.float32)
    z = f * f
    p = torch.full_like(f, _LOG_P[0])
    for coef in _LOG_P[1:]:
        p = p * f + coef
    y = f * z * p + e * _LN2_LO - 0.5 * z
    return (f + y) + e * _LN2_HI


def sqrt_f32(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root (through float64: exact for float32).

    Eager ``torch.sqrt`` on float32 is not correctly rounded on every CPU build (one
    value in seven off by an ulp here); inductor's is. Through float64 both agree.
    """
    return x.double().sqrt().float()


def sincos_f32(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sin t, cos t)`` of float32 ``t`` in ``[-100, 100]``, within one float32 eps.

    One Cody-Waite reduction by pi/2 serves both; bit-identical eager and compiled.
    """
    q = torch.round(t * 0.63661975)   # the nearest multiple of pi / 2
    r = t - q * _PIO2[0] - q * _PIO2[1] - q * _PIO2[2]   # q _PIO2[0] and the first
    z = r * r                                            # difference are exact
    s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
    c = (((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2)
         * z * z - 0.5 * z + 1.0)
    j = q.to(torch.int32)
    odd = (j & 1) == 1
    sin, cos = torch.where(odd, c, s), torch.where(odd, s, c)
    return (torch.where((j & 2) == 2, -sin, sin),
            torch.where(((j + 1) & 2) == 2, -cos, cos))


def erfinv_f32(x: torch.Tensor, one_minus_x2: torch.Tensor | None = None) -> torch.Tensor:
    """Giles' single-precision erfinv ("Approximating the erfinv function", GPU Gems 2010).

    ``one_minus_x2`` (``(1 - x)(1 + x)``), when given, is used instead of recomputing it
    from ``x``: computed from complements it keeps its precision where ``|x| -> 1``.
    The Triton kernel evaluates the same polynomials in the same order.
    """
    if one_minus_x2 is None:
        one_minus_x2 = (1.0 - x) * (1.0 + x)
    w = -log_f32(one_minus_x2)
    c = w - 2.5
    p = torch.full_like(c, 2.81022636e-08)
    for coef in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                 -0.00125372503, -0.00417768164, 0.246640727, 1.50140941):
        p = coef + p * c
    t = sqrt_f32(w) - 3.0
    q = torch.full_like(t, -0.000200214257)
    for coef in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                 -0.0076224613, 0.00943887047, 1.00167406, 2.83297682):
        q = coef + q * t
    return torch.where(w < 5.0, p, q) * x


def _uniform24(x: torch.Tensor, half: bool = False) -> torch.Tensor:
    """A float32 on the grid ``k 2**-24`` in [0, 1) (``half``: ``(k + 1/2) 2**-24``)."""
    k = (x >> 8).to(torch.float32)
    return (k + 0.5 if half else k) * (2.0 ** -24)


def _uniform53(hi: torch.Tensor, lo: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    k = ((hi >> 5) << 26) | (lo >> 6)
    return (k.to(torch.float64) + offset) * (2.0 ** -53)


def _transform32(d: DistArgs, x, a=None) -> torch.Tensor:
    """The ``(n, 4)`` float32 values of counters with words ``x = (x0, x1, x2, x3)``.

    ``a``: the eight float32 arguments, as floats (eager) or a float32 tensor (compiled,
    so that one graph serves every std and bound); default: from ``d``.
    """
    if a is None:
        a = torch.tensor(d.args, dtype=torch.float32).tolist()  # the float32 numbers the kernel reads
    if d.kind == 1:
        low, span, hi = a[0], a[1], a[2]
        u = torch.stack([_uniform24(w) for w in x], dim=1)
        return torch.clamp_max(u * span + low, hi)
    if d.kind == 2:
        mean, std = a[0], a[1]
        cols = []
        for w1, w2 in ((x[0], x[1]), (x[2], x[3])):
            u1 = _uniform24(w1) + 2.0 ** -24  # (0, 1]: log stays finite
            r = sqrt_f32(-2.0 * log_f32(u1))
            sin, cos = sincos_f32(_uniform24(w2) * TWO_PI_F32)
            cols += [r * cos, r * sin]
        return torch.stack(cols, dim=1) * std + mean
    if d.kind == 3:
        mean, s2, e_a, span, c_a, c_b, lo, hi = (a[i] for i in range(8))
        u = torch.stack([_uniform24(w, half=True) for w in x], dim=1)
        t = span * u + e_a
        one_minus = span * (1.0 - u) + c_b   # 1 - t from 1 - e_b: exact in the upper tail
        one_plus = span * u + c_a            # 1 + t from 1 + e_a: exact in the lower tail
        z = erfinv_f32(t, one_minus * one_plus)
        return torch.clamp(z * s2 + mean, lo, hi)
    raise ValueError(f'kind id {d.kind} has no random transform')


def _transform64(d: DistArgs, x) -> torch.Tensor:
    """The ``(n, 2)`` float64 values of counters with words ``x``."""
    a = d.args
    if d.kind == 1:
        low, span, hi = a[:3]
        u = torch.stack([_uniform53(x[0], x[1]), _uniform53(x[2], x[3])], dim=1)
        return torch.clamp_max_(u.mul_(span).add_(low), hi)
    if d.kind == 2:
        mean, std = a[:2]
        u1 = _uniform53(x[0], x[1], 1.0)
        r = torch.sqrt(-2.0 * torch.log(u1))
        theta = _uniform53(x[2], x[3]) * (2 * math.pi)
        return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1).mul_(std).add_(mean)
    if d.kind == 3:
        mean, s2, e_a, span, _, _, lo, hi = a
        u = torch.stack([_uniform53(x[0], x[1], 0.5), _uniform53(x[2], x[3], 0.5)], dim=1)
        return u.mul_(span).add_(e_a).erfinv_().mul_(s2).add_(mean).clamp_(lo, hi)
    raise ValueError(f'kind id {d.kind} has no random transform')


def fill(out: torch.Tensor, d: DistArgs, key: int, start: int = 0, *,
         compile: bool | None = None, native: bool | None = None) -> torch.Tensor:
    """Write elements ``start .. start + out.numel() - 1`` of the stream ``key`` into ``out``.

    ``out`` is a contiguous float tensor; float16/bfloat16 are drawn in float32 and
    rounded once. Returns ``out``.

    Args:
        compile: Run the torch operations compiled (``torch.compile``, one fused loop).
            ``None`` (default): for float32 on the CPU with at least
            :data:`COMPILE_MIN_NUMEL` elements, when the compile pays
            (``FENGINE_PHILOX_COMPILE``, see :func:`prepare_fills`). The values are the
            same either way; a compile that fails falls back to the eager path with a
            warning.
        native: When not compiled, run a float32 CPU fill through the C loop
            (``native.py``) if it can be built: ``None`` (default) or ``True``; ``False``
            runs the torch operations (the reference the C loop is tested against).
    """
    if not out.is_contiguous():
        raise ValueError('fill needs a contiguous output tensor')
    flat = out.view(-1)
    n = flat.numel()
    if d.kind == 0:
        return out.fill_(d.args[0])
    if n == 0 or out.device.type == 'meta':
        return out
    if not 0 <= key < 1 << 64:
        raise ValueError(f'key must be a 64-bit unsigned int, but got {key}')
    cpu32 = out.dtype == torch.float32 and out.device.type == 'cpu'
    if compile is None:
        compile = n >= COMPILE_MIN_NUMEL and cpu32 and _compile_wanted(d.kind, n)
    if compile and d.kind in (1, 2, 3) and _fill_compiled(flat, d, key, start):
        return out
    # Inside a graph being traced, the torch operations are traced into it instead.
    if cpu32 and native is not False and not torch.compiler.is_compiling():
        lib = _native.library()
        if lib is not None:
            _native.fill_f32(lib, flat, d.kind, key, start, d.args)
            # Written through a raw pointer: tell autograd the tensor changed, as an
            # in-place op would.
            torch.autograd.graph.increment_version(out)
            return out
    per = 2 if out.dtype == torch.float64 else 4
    transform = _transform64 if per == 2 else _transform32
    first, last = start // per, (start + n - 1) // per   # counters covering the range
    for c in range(first, last + 1, _CHUNK):
        count = min(_CHUNK, last + 1 - c)
        ctr = torch.arange(c, c + count, dtype=torch.int64, device=out.device)
        vals = transform(d, philox4x32(key, ctr)).view(-1)
        lo = max(start, c * per)                         # element range of this chunk
        hi = min(start + n, (c + count) * per)
        flat[lo - start:hi - start].copy_(vals[lo - c * per:hi - c * per])
    return out


# ------------------------------------------------------------------ the compiled path
def _compile_mode() -> str:
    mode = os.environ.get('FENGINE_PHILOX_COMPILE', 'auto')
    if mode not in COMPILE_MODES:
        raise ValueError(f'FENGINE_PHILOX_COMPILE={mode!r} is not a valid choice; '
                         f'valid: {", ".join(COMPILE_MODES)}')
    return mode


def _compile_wanted(kind: int, numel: int) -> bool:
    """Whether a float32 CPU fill of ``numel`` (>= COMPILE_MIN_NUMEL) should run compiled."""
    mode = _compile_mode()
    # Inside a graph being traced, the eager ops are traced into it instead.
    if mode == '0' or kind in _FAILED or torch.compiler.is_compiling():
        return False
    if mode == '1':
        return True
    if _native.library() is not None:  # the C loop: as fast, and no compile to pay
        return False
    return kind in _COMPILED or numel >= COMPILE_WORTH_NUMEL


def prepare_fills(numel_by_kind: dict[str, int]) -> None:
    """Compile the CPU fill of each kind whose total (elements about to be drawn as
    float32 on the CPU, e.g. a whole model's) makes the compile worth it.

    With ``FENGINE_PHILOX_COMPILE=auto`` that is a total of :data:`COMPILE_WORTH_NUMEL`
    where the C loop cannot be built (with it, nothing is compiled); the fills then run
    compiled one by one (each of >= :data:`COMPILE_MIN_NUMEL`).
    """
    for kind, numel in numel_by_kind.items():
        d_kind = KIND_IDS[kind]
        if d_kind and numel >= COMPILE_WORTH_NUMEL and _compile_wanted(d_kind, numel):
            compile_fill(kind)


def _fill32_body(kind: int, out2d: torch.Tensor, first: torch.Tensor, k0: torch.Tensor,
                 k1: torch.Tensor, args: torch.Tensor) -> None:
    """Counters ``first .. first + len(out2d) - 1`` into the float32 ``(n, 4)`` ``out2d``.

    Every per-call number is a tensor, so one graph (dynamic in ``n``) serves every
    parameter: Python ints and floats would be specialized and recompile per key.
    """
    ctr = torch.arange(out2d.shape[0], dtype=torch.int64, device=out2d.device) + first
    vals = _transform32(DistArgs(kind, ()), _rounds(k0, k1, ctr), args)
    out2d.copy_(vals)


_COMPILED: dict[int, Callable] = {}
_FAILED: set[int] = set()


def _compiled(kind: int) -> Callable:
    if kind not in _COMPILED:
        # dynamic=True: one graph for every size; fullgraph=True: a graph break is a bug.
        _COMPILED[kind] = torch.compile(functools.partial(_fill32_body, kind), dynamic=True,
                                        fullgraph=True)
    return _COMPILED[kind]


def _fill_compiled(flat: torch.Tensor, d: DistArgs, key: int, start: int) -> bool:
    """Fill ``flat`` (float32, CPU) with the compiled transform; False if it cannot."""
    if d.kind in _FAILED:
        return False
    n = flat.numel()
    first, last = start // 4, (start + n - 1) // 4
    count = last + 1 - first
    aligned = start % 4 == 0 and n % 4 == 0
    target = flat.view(-1, 4) if aligned else torch.empty(count, 4, dtype=torch.float32)
    args = torch.tensor(d.args, dtype=torch.float32)
    try:
        _compiled(d.kind)(target, torch.tensor(first), torch.tensor(key & M32),
                          torch.tensor(key >> 32), args)
    except Exception as exc:  # noqa: BLE001  any compiler failure: the eager path instead
        _FAILED.add(d.kind)
        warnings.warn(f'fengine.kernels.philox: compiling the kind {d.kind} fill failed '
                      f'({type(exc).__name__}: {exc}); using the eager path, same values',
                      RuntimeWarning, stacklevel=3)
        return False
    if not aligned:
        flat.copy_(target.view(-1)[start - first * 4:start - first * 4 + n])
    return True


def compile_fill(kind: str) -> float:
    """Compile the float32 fill of ``kind`` now (if not yet); the seconds it took.

    Lets a benchmark or a training script pay the compile up front instead of on its
    first large parameter. Returns 0.0 when already compiled.
    """
    d = dist_args(kind, {'uniform': (0.0, 1.0), 'normal': (0.0, 1.0),
                         'trunc_normal': (0.0, 1.0, -2.0, 2.0)}[kind])
    if d.kind in _COMPILED:
        return 0.0
    begin = time.perf_counter()
    _fill_compiled(torch.empty(COMPILE_MIN_NUMEL), d, 0, 0)
    return time.perf_counter() - begin
