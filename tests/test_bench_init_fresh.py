"""The fresh-process init benchmark and the fill-bandwidth benchmark run and keep their books.

Timings are not checked, only that the rows hold what the table and the JSON promise; the
figures come from ``python -m bench --only fresh fill``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is a package of the checkout, not of the install

from bench import bandwidth_bench, init_fresh  # noqa: E402
from bench.__main__ import format_table  # noqa: E402


def test_the_child_times_every_phase_of_a_fengine_run_in_a_fresh_process():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / 'bench' / 'init_fresh.py'), 'fengine',
                           'debug', 'cpu'], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    phases = json.loads(done.stdout.splitlines()[-1])
    assert list(phases) == list(init_fresh.PHASES)
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases['torch'] > phases['build']  # import torch is the big fixed cost


def canned(monkeypatch, ready: dict[str, list[float]], walls: dict[str, list[float]]):
    """Replace the fresh processes by canned phases: each run's ready time split evenly."""
    calls = []

    def run(python, contender, preset, device, root):
        index = sum(1 for c in calls if c == (contender, preset))
        calls.append((contender, preset))
        share = ready[contender][index] / len(init_fresh.READY_PHASES)
        phases = {p: share if p in init_fresh.READY_PHASES else 1.0 for p in init_fresh.PHASES}
        return phases, walls[contender][index]

    monkeypatch.setattr(init_fresh, '_run', run)
    monkeypatch.setattr(init_fresh, '_has_mmengine', lambda python: True)
    return calls


def test_rows_hold_median_ready_and_process_times_with_ratios_to_fengine(monkeypatch):
    calls = canned(monkeypatch, ready={'fengine': [1.0, 3.0, 2.0], 'mmengine': [8.0, 6.0, 7.0]},
                   walls={'fengine': [5.0, 4.0, 6.0], 'mmengine': [10.0, 12.0, 11.0]})
    rows = init_fresh.bench_fresh(['debug'], repeats=3, contenders=['fengine', 'mmengine'],
                                  log=lambda line: None)
    # Contenders take turns: fengine, mmengine, fengine, mmengine...
    assert [c for c, _ in calls] == ['fengine', 'mmengine'] * 3
    fengine, mmengine = rows
    assert fengine['seconds'] == pytest.approx(2.0) and mmengine['seconds'] == pytest.approx(7.0)
    assert mmengine['ratio'] == pytest.approx(3.5) and mmengine['baseline'] == 'fengine'
    assert fengine['process'] == 5.0 and mmengine['process_ratio'] == pytest.approx(11 / 5)
    assert fengine['phases']['torch'] == 1.0
    assert fengine['phases']['init'] == pytest.approx(0.5)
    table = format_table(rows)
    assert 'process ratio' in table and 'engine import' in table and '3.50x' in table


def test_mmengine_missing_from_the_interpreter_is_reported_as_skipped(monkeypatch):
    canned(monkeypatch, ready={'fengine': [1.0]}, walls={'fengine': [2.0]})
    monkeypatch.setattr(init_fresh, '_has_mmengine', lambda python: False)
    rows = init_fresh.bench_fresh(['debug'], repeats=1, contenders=['fengine', 'mmengine'],
                                  log=lambda line: None)
    assert rows[1]['status'] == 'skipped (not installed)' and rows[1]['seconds'] is None
    assert 'skipped (not installed)' in format_table(rows)


def test_a_failing_fresh_run_is_reported_with_its_error(monkeypatch):
    canned(monkeypatch, ready={'fengine': [1.0]}, walls={'fengine': [2.0]})

    def broken(python, contender, preset, device, root):
        raise RuntimeError('ModuleNotFoundError: No module named mmengine')

    monkeypatch.setattr(init_fresh, '_run', broken)
    rows = init_fresh.bench_fresh(['debug'], repeats=1, contenders=['mmengine'],
                                  log=lambda line: None)
    assert rows[0]['status'] == 'failed: ModuleNotFoundError: No module named mmengine'


def test_the_fill_rows_hold_their_bandwidth_as_a_fraction_of_the_memory_write():
    rows = bandwidth_bench.bench_fill_bandwidth(1 << 16, repeats=1, log=lambda line: None)
    assert [r['contender'] for r in rows] == [bandwidth_bench.WRITE, 'philox uniform',
                                               'philox normal', 'philox trunc_normal']
    write = rows[0]
    for row in rows:
        assert row['status'] == 'ok' and row['bytes'] == 4 << 16
        assert row['bandwidth'] == pytest.approx(row['bytes'] / row['seconds'])
        assert row['of_write'] == pytest.approx(row['bandwidth'] / write['bandwidth'])
        assert row['ratio'] == pytest.approx(row['seconds'] / write['seconds'])
    assert 'of write' in rows[1]['note']
