"""Draw a tensor from a distribution with its own key: the numeric core of every initializer.

A :class:`Distribution` is data (kind + arguments), so a whole model's fills can be
listed as a table and, later, handed to one fused kernel.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, NamedTuple

import torch

from .rng import generator as torch_generator

__all__ = ['Distribution', 'sample', 'KINDS', 'GENERATORS', 'use_generator']

KINDS = ('constant', 'normal', 'uniform', 'trunc_normal')

# ----------------------------------------------------------------- generator choice
# 'philox': counter-based Philox4x32-10 (fengine.kernels), element i a function of (key, i),
#   the same integers as the fused Triton kernel, prefix- and shard-stable.
# 'torch': a torch.Generator seeded with the key (values differ between CPU and CUDA).
# The default stays 'torch' for now: Philox is faster only compiled, and its compile
# (10-30 s once per process) costs more than a whole model's initialization saves on CPU
# (GPT-125M from meta: torch 2.2 s, compiled Philox 10.7 s in a fresh process, eager
# Philox 4.7-6 s). See docs/benchmarks.md, "Kernels".
GENERATORS = ('philox', 'torch')
_GENERATOR: contextvars.ContextVar[str] = contextvars.ContextVar('fengine_generator',
                                                                 default='torch')


@contextlib.contextmanager
def use_generator(name: str) -> Iterator[None]:
    """Draw with ``name`` (one of :data:`GENERATORS`) inside the block.

    Example:
        >>> from fengine.func import normal
        >>> with use_generator('philox'):
        ...     w = normal()((4,), seed=0, path='w')
    """
    token = _GENERATOR.set(_check_generator(name))
    try:
        yield
    finally:
        _GENERATOR.reset(token)


def _check_generator(name: str) -> str:
    if name not in GENERATORS:
        raise ValueError(f'unknown generator {name!r}; known: {", ".join(GENERATORS)}')
    return name


class Distribution(NamedTuple):
    """A resolved distribution: a ``kind`` and its arguments.

    ``args`` by kind:

    - ``constant``: ``(value,)``
    - ``normal``: ``(mean, std)``
    - ``uniform``: ``(low, high)``
    - ``trunc_normal``: ``(mean, std, a, b)``
    """
    kind: str
    args: tuple[float, ...]


def _standard_cdf(x: float) -> float:
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


def _inside(bound: float, dtype: torch.dtype, upward: bool) -> float:
    """The value of ``dtype`` nearest to ``bound`` on the inner side of it.

    Rounding ``b`` to bfloat16 can land above ``b``; clamping to this instead keeps
    every value within ``[a, b]`` after the cast.
    """
    value = torch.tensor(bound, dtype=dtype)
    if (upward and float(value) < bound) or (not upward and float(value) > bound):
        value = torch.nextafter(value, torch.tensor(math.inf if upward else -math.inf,
                                                    dtype=dtype))
    return float(value)


def sample(dist: Distribution, shape: torch.Size | tuple[int, ...], *, key: int,
           dtype: torch.dtype = torch.float32, device: torch.device | str = 'cpu',
           out: torch.Tensor | None = None, generator: str | None = None) -> torch.Tensor:
    """A tensor of ``shape`` drawn from ``dist`` with the stream ``key``.

    Low-precision floats are drawn in float32 and rounded once, so bf16/fp16
    parameters get the same distribution as float32 ones. On the ``meta`` device
    the result has the right shape and no values.

    Args:
        out: Write the values into this tensor (its shape, dtype and device win) and
            return it; the values are the same as without ``out``.
        generator: ``'philox'`` or ``'torch'`` (see :data:`GENERATORS`); default: the
            one set by :func:`use_generator`.
    """
    gen = _GENERATOR.get() if generator is None else _check_generator(generator)
    if out is not None:
        drawn = _sample(dist, out.shape, key=key, dtype=out.dtype, device=out.device,
                        into=out if out.is_contiguous() else None, generator=gen)
        return drawn if drawn is out else out.copy_(drawn)
    return _sample(dist, shape, key=key, dtype=dtype, device=torch.device(device),
                   generator=gen)


def _sample(dist: Distribution, shape, *, key: int, dtype: torch.dtype,
            device: torch.device, into: torch.Tensor | None = None,
            generator: str = 'torch') -> torch.Tensor:
    if dist.kind == 'constant':
        if into is not None:
            return into.fill_(dist.args[0])
        return torch.full(tuple(shape), dist.args[0], dtype=dtype, device=device)
    if not dtype.is_floating_point:
        raise TypeError(f'cannot draw {dist.kind} values into a tensor of dtype {dtype}')
    work_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    # Drawing in place gives the values a fresh contiguous tensor would get.
    out = into if into is not None and into.dtype == work_dtype else torch.empty(
        tuple(shape), dtype=work_dtype, device=device)
    if device.type == 'meta' or out.numel() == 0:
        return out.to(dtype)
    if generator == 'philox':
        return _sample_philox(dist, out, key=key, dtype=dtype)
    gen = torch_generator(key, device)
    if dist.kind == 'normal':
        mean, std = dist.args
        out.normal_(mean, std, generator=gen)
    elif dist.kind == 'uniform':
        low, high = dist.args
        out.uniform_(low, high, generator=gen)
    elif dist.kind == 'trunc_normal':
        # Inverse-CDF sampling in one pass (no rejection loop), as torch.nn.init does.
        mean, std, a, b = dist.args
        lower = _standard_cdf((a - mean) / std)
        upper = _standard_cdf((b - mean) / std)
        out.uniform_(2 * lower - 1, 2 * upper - 1, generator=gen)
        out.erfinv_().mul_(std * math.sqrt(2.0)).add_(mean)
        return out.to(dtype).clamp_(min=_inside(a, dtype, upward=True),
                                    max=_inside(b, dtype, upward=False))
    else:
        raise ValueError(f'unknown distribution kind {dist.kind!r}; known: {", ".join(KINDS)}')
    return out.to(dtype)


# ----------------------------------------------------------------------- philox path
def _sample_philox(dist: Distribution, out: torch.Tensor, *, key: int,
                   dtype: torch.dtype) -> torch.Tensor:
    """Fill ``out`` (float32/float64, contiguous) from the Philox stream ``key``.

    The clamps of ``uniform``/``trunc_normal`` are taken inside ``dtype``, so rounding
    float32 draws to a low-precision dtype keeps them in range.
    """
    from ..kernels import philox  # fengine.kernels: the top-level kernels/ folder, installed

    if dist.kind not in KINDS:
        raise ValueError(f'unknown distribution kind {dist.kind!r}; known: {", ".join(KINDS)}')
    philox.fill(out, philox.dist_args(dist.kind, dist.args, dtype), key)
    return out.to(dtype)
