"""Smoke test of the kernels benchmark: tiny sizes, eager, every row filled."""
from __future__ import annotations

from bench.__main__ import format_table
from bench.kernels_bench import BASELINE, KINDS, bench_kernels


def test_every_kind_gets_a_timed_row_per_contender_with_ratios_to_philox():
    rows = bench_kernels(4096, repeats=1, compile=False, log=lambda line: None)
    assert [(r['model'], r['contender']) for r in rows] == [
        (f'{kind} 4096', name) for kind in KINDS for name in (BASELINE, 'torch')]
    for row in rows:
        assert row['status'] == 'ok' and len(row['times']) == 1 and row['seconds'] > 0
        assert row['baseline'] == BASELINE and row['ratio'] > 0
    assert all(r['ratio'] == 1.0 for r in rows if r['contender'] == BASELINE)
    assert 'normal 4096' in format_table(rows)
