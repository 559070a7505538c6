"""Drawing initial values on the CPU: fengine's Philox fill against PyTorch's generators.

Each row fills one float32 tensor of ``numel`` elements (100M by default, 1M with
``--quick``) in place:

- ``fengine philox`` (the baseline): :func:`fengine.kernels.fill` as initializers call it:
  counter-based Philox4x32-10 plus the transform in one C loop (``kernels/philox_cpu.c``,
  built with the system compiler in well under a second, then cached), split over the
  torch threads.
- ``fengine philox (compiled)``: the same values from the torch-ops path compiled by
  ``torch.compile`` into one loop (the path used where no C compiler is found); the
  compile is paid before the timed calls and reported apart, in ``compile_seconds``.
- ``torch``: ``Tensor.normal_``, ``torch.nn.init.trunc_normal_`` or ``Tensor.uniform_``
  with the default ``torch.Generator`` (Mersenne Twister).

The contenders take turns round by round after one untimed warm-up call each; the
median of ``repeats`` is shown. Ratios: a row's time over ``fengine philox``'s.
"""
from __future__ import annotations

import statistics
from typing import Callable

import torch

from fengine.func import fold_in
from fengine.kernels import native, philox

from .init_bench import set_ratios, time_call

__all__ = ['KINDS', 'BASELINE', 'COMPILED', 'bench_kernels']

BASELINE = 'fengine philox'
COMPILED = 'fengine philox (compiled)'
FULL_NUMEL = 100_000_000
QUICK_NUMEL = 1_000_000

# kind -> (fengine's arguments, torch's fill of a tensor with the same distribution)
KINDS: dict[str, tuple[tuple[float, ...], Callable[[torch.Tensor], object]]] = {
    'normal': ((0.0, 1.0), lambda t: t.normal_(0.0, 1.0)),
    'trunc_normal': ((0.0, 1.0, -2.0, 2.0),
                     lambda t: torch.nn.init.trunc_normal_(t, 0.0, 1.0, -2.0, 2.0)),
    'uniform': ((-1.0, 1.0), lambda t: t.uniform_(-1.0, 1.0)),
}


def _label(numel: int) -> str:
    return f'{numel // 1_000_000}M' if numel % 1_000_000 == 0 else str(numel)


def bench_kernels(numel: int = FULL_NUMEL, *, repeats: int = 3, kinds: list[str] | None = None,
                  compile: bool | None = None,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Time each kind's fill by each contender; one row per (kind, contender).

    Args:
        numel: Elements of the float32 tensor filled.
        repeats: Timed calls per contender; ``seconds`` is their median.
        kinds: Names in :data:`KINDS` (default: all).
        compile: Time the compiled contender (default: for ``numel >=
            COMPILE_MIN_NUMEL``).
    """
    device = torch.device('cpu')
    out = torch.empty(numel)
    key = fold_in(0, 'bench.weight')
    rows = []
    for kind in kinds or list(KINDS):
        args, torch_fill = KINDS[kind]
        d = philox.dist_args(kind, args)
        use_compile = (numel >= philox.COMPILE_MIN_NUMEL) if compile is None else compile
        compile_seconds = philox.compile_fill(kind) if use_compile else None
        path = 'C loop' if native.library() is not None else 'torch ops, eager'
        fns = {BASELINE: lambda: philox.fill(out, d, key, compile=False),
               COMPILED: lambda: philox.fill(out, d, key, compile=True),
               'torch': lambda: torch_fill(out)}
        notes = {BASELINE: path,
                 COMPILED: f'compile {compile_seconds or 0:.1f} s once, not timed'}
        kind_rows = []
        for contender in fns:
            if contender == COMPILED and not use_compile:
                continue
            kind_rows.append(dict(
                benchmark='kernels', model=f'{kind} {_label(numel)}', contender=contender,
                device='cpu', baseline=BASELINE, status='ok', seconds=None, times=[],
                ratio=None, params=numel, note=notes.get(contender, ''),
                compile_seconds=compile_seconds if contender == COMPILED else None))
        for round_ in range(-1, repeats):  # round -1: the warm-up calls
            log(f'kernels: {kind}: ' + ('warm-up' if round_ < 0 else
                                        f'timed round {round_ + 1}/{repeats}'))
            for row in kind_rows:
                row['times'] += time_call(fns[row['contender']], device,
                                          repeats=0 if round_ < 0 else 1,
                                          warmup=1 if round_ < 0 else 0)
        for row in kind_rows:
            row['seconds'] = statistics.median(row['times'])
        set_ratios(kind_rows, (BASELINE,))
        rows.extend(kind_rows)
    return rows
