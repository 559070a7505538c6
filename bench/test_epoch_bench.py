"""Smoke test of the end-to-end epoch benchmark, on tiny data (not in the default test run).

    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh python -m pytest bench/test_epoch_bench.py

It runs the seed's example for one epoch of 256 training and 128 validation images
under every contender, each in its own process as ``python -m bench`` does (the
compiled one with the ``aot_eager`` backend, which skips inductor's code generation),
and checks that the rows are complete. About 30 s on 2 cores. The figures themselves
come from ``python -m bench --only epoch``; see docs/benchmarks.md.
"""
from __future__ import annotations

import math

import pytest

from bench import epoch_bench
from bench.__main__ import format_table
from bench.epoch_bench import BASELINE, CONTENDERS, bench_epoch, run_contender

TRAIN, VAL = 256, 128


@pytest.fixture(scope='module')
def rows() -> list[dict]:
    return bench_epoch('cpu', train_size=TRAIN, val_size=VAL, second_epoch=False,
                       compile_backend='aot_eager', log=lambda line: None)


def test_every_contender_has_a_row_with_a_finite_time_and_accuracy(rows) -> None:
    assert [row['contender'] for row in rows] == list(CONTENDERS)
    for row in rows:
        if row['status'] == epoch_bench.SKIPPED:  # MMEngine is the optional bench extra
            assert row['contender'] == 'mmengine runner' and not epoch_bench.mmengine_available()
            continue
        assert row['status'] == 'ok', row
        assert row['benchmark'] == 'epoch' and row['model'] == 'fashion-mnist 1 epoch'
        for key in ('seconds', 'train_seconds', 'val_seconds', 'build_seconds'):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        # train() covers the epoch's training and the validation after it.
        assert row['seconds'] >= row['train_seconds'] + row['val_seconds']
        assert 0 <= row['accuracy'] <= 1 and math.isfinite(row['val_loss'])
        assert row['params'] == 669_706  # the seed's MLP
        assert row['peak_rss_bytes'] > 0 and row['compile_fell_back'] is False


def test_the_ratios_are_taken_against_fengine_compiled(rows) -> None:
    baseline = next(row for row in rows if row['contender'] == BASELINE)
    assert baseline['ratio'] == pytest.approx(1.0)
    for row in rows:
        if row['seconds'] is not None:
            assert row['baseline'] == BASELINE
            assert row['ratio'] == pytest.approx(row['seconds'] / baseline['seconds'])


def test_fengine_eager_and_compiled_learn_the_same(rows) -> None:
    eager, compiled = (next(r for r in rows if r['contender'] == name)
                       for name in ('fengine eager', 'fengine compiled'))
    assert compiled['accuracy'] == pytest.approx(eager['accuracy'], abs=2 / VAL)


def test_the_table_shows_the_epoch_columns(rows) -> None:
    table = format_table(rows)
    header = table.splitlines()[0]
    for column in ('train epoch', 'val', 'accuracy', 'peak RSS'):
        assert column in header
    assert 'fashion-mnist 1 epoch' in table


def test_a_missing_peer_is_reported_as_skipped(monkeypatch) -> None:
    monkeypatch.setattr(epoch_bench, 'mmengine_available', lambda: False)
    [row] = bench_epoch('cpu', train_size=TRAIN, val_size=VAL, second_epoch=False,
                        contenders=['mmengine runner'], log=lambda line: None)
    assert row['status'] == 'skipped (not installed)'
    assert row['seconds'] is None and row['ratio'] is None
    assert 'skipped (not installed)' in format_table([row])


def test_a_two_epoch_run_times_each_epoch() -> None:
    result = run_contender('fengine eager', epochs=2, train_size=TRAIN, val_size=VAL)
    assert len(result['train_seconds']) == len(result['val_seconds']) == 2
    assert len(result['epoch_seconds']) == 2
    assert sum(result['epoch_seconds']) <= result['seconds']


def test_an_unknown_contender_names_the_choices() -> None:
    with pytest.raises(ValueError, match='fengine compiled'):
        run_contender('fengine fused', train_size=TRAIN, val_size=VAL)
