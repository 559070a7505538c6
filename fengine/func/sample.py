"""Draw a tensor from a distribution with its own key: the numeric core of every initializer.

A :class:`Distribution` is data (kind + arguments), so a whole model's fills are a table:
:func:`sample_into` hands the CUDA ones to one Triton launch per dtype.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
from typing import Iterator, NamedTuple, Sequence

import torch

from .rng import generator as torch_generator

__all__ = ['Distribution', 'sample', 'sample_into', 'KINDS', 'GENERATORS', 'use_generator',
           'current_generator']

KINDS = ('constant', 'normal', 'uniform', 'trunc_normal')

# ----------------------------------------------------------------- generator choice
# 'philox' (default): counter-based Philox4x32-10 (fengine.kernels): element i is a
#   function of (key, i) alone, the same integers on every device (the Triton kernel on
#   GPUs), prefix- and shard-stable; on CUDA a whole model is filled in one launch per dtype.
# 'torch': a torch.Generator seeded with the key, one tensor at a time (values differ
#   between CPU and CUDA); faster on the CPU for mid-sized models, which Philox draws
#   eagerly (GPT-125M from meta: 0.5 s against 2.4 s; docs/benchmarks.md, "Initialization").
GENERATORS = ('philox', 'torch')
GENERATOR_ENV = 'FENGINE_INIT_GENERATOR'
_GENERATOR: contextvars.ContextVar[str | None] = contextvars.ContextVar('fengine_generator',
                                                                        default=None)


def current_generator() -> str:
    """The generator draws use now: :func:`use_generator`'s, else ``$FENGINE_INIT_GENERATOR``,
    else ``'philox'``."""
    name = _GENERATOR.get()
    if name is not None:
        return name
    name = os.environ.get(GENERATOR_ENV, 'philox')
    if name not in GENERATORS:
        raise ValueError(f'{GENERATOR_ENV}={name!r} is not a generator; known: '
                         f'{", ".join(GENERATORS)}')
    return name


@contextlib.contextmanager
def use_generator(name: str) -> Iterator[None]:
    """Draw with ``name`` (one of :data:`GENERATORS`) inside the block.

    Example:
        >>> from fengine.func import normal
        >>> with use_generator('torch'):
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
        generator: ``'philox'`` or ``'torch'`` (see :data:`GENERATORS`); default:
            :func:`current_generator`.
    """
    gen = current_generator() if generator is None else _check_generator(generator)
    if gen == 'philox' and dist.kind in KINDS and dist.kind != 'constant':
        # On CUDA the Triton kernel draws it, as it does a whole model: one tensor gets the
        # same values whichever API asked for it.
        target_device = out.device if out is not None else torch.device(device)
        target_dtype = out.dtype if out is not None else dtype
        if _fused_target(target_device, target_dtype) and (out is None or out.is_contiguous()):
            if out is None:
                out = torch.empty(tuple(shape), dtype=dtype, device=target_device)
            sample_into([(dist, key, out)], generator=gen)
            return out
    return _sample_one(dist, shape, key=key, dtype=dtype, device=torch.device(device), out=out,
                       generator=gen)


def _sample_one(dist: Distribution, shape, *, key: int, dtype: torch.dtype,
                device: torch.device, out: torch.Tensor | None, generator: str) -> torch.Tensor:
    """:func:`sample` one tensor at a time (torch operations or the C loop, no Triton)."""
    if out is not None:
        drawn = _sample(dist, out.shape, key=key, dtype=out.dtype, device=out.device,
                        into=out if out.is_contiguous() else None, generator=generator)
        return drawn if drawn is out else out.copy_(drawn)
    return _sample(dist, shape, key=key, dtype=dtype, device=device, generator=generator)


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


# ------------------------------------------------------------------ many at once
def sample_into(jobs: Sequence[tuple[Distribution, int, torch.Tensor]], *,
                generator: str | None = None) -> None:
    """Fill every ``out`` of ``jobs`` (``(dist, key, out)`` rows) as
    ``sample(dist, out.shape, key=key, out=out)`` would, in as few launches as it can.

    With Philox, CUDA tensors of float32/float16/bfloat16 are filled by one Triton launch
    per (device, dtype), and the CPU fills are counted first, so a model large enough
    to make the compiled CPU path pay compiles it once up front
    (:func:`fengine.kernels.philox.prepare_fills`). Other rows are drawn one by one.
    """
    gen = current_generator() if generator is None else _check_generator(generator)
    rest = list(jobs)
    if gen == 'philox':
        from ..kernels import philox
        fused: dict[tuple[torch.device, torch.dtype], list] = {}
        cpu_numel: dict[str, int] = {}
        left = []
        for job in rest:
            dist, key, out = job
            if out.numel() and dist.kind in KINDS and _fused_launch(out):
                fused.setdefault((out.device, out.dtype), []).append(job)
                continue
            if (out.device.type == 'cpu' and dist.kind != 'constant'
                    and out.dtype != torch.float64):  # float64 is never compiled
                cpu_numel[dist.kind] = cpu_numel.get(dist.kind, 0) + out.numel()
            left.append((dist, key, out))
        for (device, dtype), group in fused.items():
            try:
                _fill_tensors([(out, _philox_args(dist, dtype), key) for dist, key, out in group])
            except Exception as exc:  # noqa: BLE001  a broken Triton: the torch-ops path
                warnings.warn(f'the one-launch Triton fill of {len(group)} {dtype} tensors on '
                              f'{device} failed ({type(exc).__name__}: {exc}); drawing them '
                              'one by one with the torch-ops Philox path instead (values '
                              'within a few ulps)', RuntimeWarning, stacklevel=2)
                left += group
        philox.prepare_fills(cpu_numel)
        rest = left
    for dist, key, out in rest:
        _sample_one(dist, out.shape, key=key, dtype=out.dtype, device=out.device, out=out,
                    generator=gen)


def _fused_launch(out: torch.Tensor) -> bool:
    """Whether ``out`` goes to the one-launch Triton fill (CUDA, Triton installed)."""
    return out.is_contiguous() and _fused_target(out.device, out.dtype)


def _fused_target(device: torch.device, dtype: torch.dtype) -> bool:
    return (device.type == 'cuda' and dtype in (torch.float32, torch.float16, torch.bfloat16)
            and _triton_installed())


def _philox_args(dist: Distribution, dtype: torch.dtype):
    from ..kernels import philox
    return philox.dist_args(dist.kind, dist.args, dtype)


def _triton_installed() -> bool:
    from ..kernels import triton_available
    return triton_available()


def _fill_tensors(group: list) -> None:
    from ..kernels import fill_tensors
    fill_tensors(group)
