"""The kernels benchmark: a smoke test, and its pytest-benchmark variants.

The smoke test runs tiny sizes, eager, and checks every row is filled. The
pytest-benchmark variants (:func:`test_fill`) time each kind's fill by each contender:

    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh \\
        python -m pytest bench/test_kernels_bench.py --benchmark-only --benchmark-disable-gc

``FENGINE_BENCH_KERNELS_NUMEL`` picks the elements of the float32 tensor filled
(default: 1M, which keeps the bench suite quick; ``100000000`` for the figures of
``python -m bench``). From ``COMPILE_MIN_NUMEL`` elements on, the compiled torch-ops path
is timed too, its compile paid before the timed rounds (its seconds are in
``extra_info['compile_seconds']``). Each kind is its own group. For the one table with
ratios, and the JSON record, run ``python -m bench`` instead.
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.__main__ import format_table
from bench.kernels_bench import BASELINE, COMPILED, KINDS, QUICK_NUMEL, bench_kernels
from fengine.func import fold_in
from fengine.kernels import philox

NUMEL = int(os.environ.get('FENGINE_BENCH_KERNELS_NUMEL', QUICK_NUMEL))
# The compiled contender only at full size: its compile (20-30 s cold) would dominate.
CONTENDERS = (BASELINE, 'torch') + ((COMPILED,) if NUMEL >= philox.COMPILE_MIN_NUMEL else ())


def test_every_kind_gets_a_timed_row_per_contender_with_ratios_to_philox():
    rows = bench_kernels(4096, repeats=1, compile=False, log=lambda line: None)
    assert [(r['model'], r['contender']) for r in rows] == [
        (f'{kind} 4096', name) for kind in KINDS for name in (BASELINE, 'torch')]
    for row in rows:
        assert row['status'] == 'ok' and len(row['times']) == 1 and row['seconds'] > 0
        assert row['baseline'] == BASELINE and row['ratio'] > 0
    assert all(r['ratio'] == 1.0 for r in rows if r['contender'] == BASELINE)
    assert 'normal 4096' in format_table(rows)


@pytest.mark.parametrize('contender', CONTENDERS)
@pytest.mark.parametrize('kind', list(KINDS))
def test_fill(benchmark, kind: str, contender: str) -> None:
    args, torch_fill = KINDS[kind]
    out = torch.empty(NUMEL)
    d = philox.dist_args(kind, args)
    key = fold_in(0, 'bench.weight')
    compile_seconds = None
    if contender == COMPILED:
        compile_seconds = philox.compile_fill(kind)  # paid here, not timed

    def run() -> None:
        if contender == 'torch':
            torch_fill(out)
        else:
            philox.fill(out, d, key, compile=contender == COMPILED)

    benchmark.group = f'kernels {kind} {NUMEL} on cpu'
    benchmark.extra_info.update(kind=kind, numel=NUMEL, contender=contender, device='cpu',
                                compile_seconds=compile_seconds)
    benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
