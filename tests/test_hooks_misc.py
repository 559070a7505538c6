"""EmptyCacheHook, SyncBuffersHook, ProfilerHook, EarlyStoppingHook, CheckInvalidLossHook."""
from __future__ import annotations

import json
import multiprocessing
import socket
import types

import pytest
import torch
from torch import nn

from fengine.hooks import (CheckInvalidLossHook, EarlyStoppingHook, EmptyCacheHook,
                           ProfilerHook, SyncBuffersHook)
from fengine.hooks import empty_cache_hook, sync_buffers_hook
from fengine.runner import NonFiniteLossError

from hook_models import Net, Scores, make_runner


# -- EmptyCacheHook ---------------------------------------------------------------------
@pytest.mark.parametrize('flags, calls', [
    (dict(), 4),                       # after each epoch: 2 train + 2 val
    (dict(before_epoch=True), 8),      # and before each
    (dict(after_epoch=False, after_iter=True), 12),  # 8 train + 4 val iterations
])
def test_empty_cache_runs_at_the_points_its_flags_name(tmp_path, monkeypatch, flags, calls):
    seen = []
    monkeypatch.setattr(empty_cache_hook, 'empty_cache', lambda: seen.append(1))
    make_runner(tmp_path, epochs=2, validate=True,
                custom_hooks=[dict(type='EmptyCacheHook', **flags)]).train()
    assert len(seen) == calls


def test_empty_cache_on_a_cpu_run_does_nothing_and_starts_no_cuda(tmp_path):
    make_runner(tmp_path, epochs=1, custom_hooks=[
        dict(type='EmptyCacheHook', before_epoch=True, after_iter=True)]).train()
    if not torch.cuda.is_available():
        assert not torch.cuda.is_initialized()


def test_empty_cache_flags_must_be_bools():
    with pytest.raises(TypeError, match=r'EmptyCacheHook after_iter must be a bool, but got 1'):
        EmptyCacheHook(after_iter=1)


# -- SyncBuffersHook --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _sync_rank(rank: int, port: int, results) -> None:
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                                         rank=rank, world_size=2)
    try:
        model = nn.BatchNorm1d(2)
        model.running_mean.fill_(float(rank))          # 0 and 1: the mean is 0.5
        model.running_var.fill_(2.0 + 2 * rank)        # 2 and 4: the mean is 3
        model.num_batches_tracked.fill_(10 + rank)     # an integer: left alone
        runner = types.SimpleNamespace(model=model)
        hook = SyncBuffersHook()
        hook.after_train_epoch(runner)
        hook.before_val_epoch(runner)  # just synchronized: not again
        results.put((rank, model.running_mean.tolist(), model.running_var.tolist(),
                     int(model.num_batches_tracked), hook.called_in_train))
    finally:
        torch.distributed.destroy_process_group()


def test_sync_buffers_averages_float_buffers_over_two_gloo_processes():
    context = multiprocessing.get_context('spawn')
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_sync_rank, args=(rank, port, results))
                 for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    got = sorted(results.get(timeout=5) for _ in processes)
    assert got == [(0, [0.5, 0.5], [3.0, 3.0], 10, False),
                   (1, [0.5, 0.5], [3.0, 3.0], 11, False)]


def test_sync_buffers_in_one_process_leaves_the_buffers_alone(tmp_path, monkeypatch):
    calls = []
    original = sync_buffers_hook.average_buffers
    monkeypatch.setattr(sync_buffers_hook, 'average_buffers',
                        lambda module: (calls.append(1), original(module)))
    runner = make_runner(tmp_path, iters=4, validate=True, val_interval=2,
                         custom_hooks=[dict(type='SyncBuffersHook')])
    runner.train()
    # Iteration-based: no epoch ends before the validations, so each syncs first
    # (2 validations), and the single train "epoch" ends once.
    assert len(calls) == 3
    before = runner.model.bn.running_mean.clone()
    sync_buffers_hook.average_buffers(runner.model)
    assert torch.equal(runner.model.bn.running_mean, before)


# -- ProfilerHook -----------------------------------------------------------------------
def test_profiler_writes_a_chrome_trace_of_the_first_iterations_into_work_dir(tmp_path):
    runner = make_runner(tmp_path, iters=4, custom_hooks=[
        dict(type='ProfilerHook', by_epoch=False, profile_times=2,
             json_trace_path='trace.json')])
    runner.train()
    trace = json.loads((tmp_path / 'trace.json').read_text())
    steps = [e for e in trace['traceEvents'] if e.get('name') == 'Optimizer.step#SGD.step']
    assert len(steps) == 2  # closed after profile_times iterations, of 4


def test_profiler_tb_trace_writes_under_the_log_folder(tmp_path):
    runner = make_runner(tmp_path, epochs=1, custom_hooks=[
        dict(type='ProfilerHook', on_trace_ready=dict(type='tb_trace'))])
    runner.train()
    assert list((tmp_path / runner.timestamp / 'tf_tracing_logs').glob('*.pt.trace.json'))


def test_profiler_log_trace_puts_the_table_in_the_log(tmp_path, fengine_log):
    make_runner(tmp_path, iters=2, custom_hooks=[dict(
        type='ProfilerHook', by_epoch=False, profile_times=1,
        on_trace_ready=dict(type='log_trace', sort_by='cpu_time_total', row_limit=5))]).train()
    assert 'Self CPU time total' in fengine_log.text


def test_profiler_with_a_schedule_records_the_active_steps(tmp_path):
    make_runner(tmp_path, iters=4, custom_hooks=[dict(
        type='ProfilerHook', by_epoch=False, profile_times=3, json_trace_path='t.json',
        schedule=dict(wait=1, warmup=0, active=2))]).train()
    names = {e.get('name') for e in json.loads((tmp_path / 't.json').read_text())['traceEvents']}
    assert {'ProfilerStep#1', 'ProfilerStep#2'} <= names and 'ProfilerStep#0' not in names


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(profile_times=2), ValueError, r'by_epoch=True profiles one epoch'),
    (dict(profile_times=0), ValueError, r'profile_times must be a positive int, but got 0'),
    (dict(on_trace_ready=dict(type='chrome')), ValueError,
     r"on_trace_ready type must be one of 'log_trace', 'tb_trace', but got 'chrome'"),
    (dict(on_trace_ready=dict(type='log_trace', sortby='x')), TypeError,
     r"has unknown key\(s\) \['sortby'\] Did you mean 'sort_by'"),
    (dict(schedule=dict(wait=1, active=1, warm_up=1)), TypeError,
     r"ProfilerHook schedule has unknown key\(s\) \['warm_up'\] Did you mean 'warmup'"),
    (dict(on_trace_ready='tb_trace'), TypeError, r'on_trace_ready must be a function'),
])
def test_profiler_arguments_are_checked_when_built(kwargs, error, message):
    with pytest.raises(error, match=message):
        ProfilerHook(**kwargs)


def test_profiler_refuses_more_profile_times_than_the_run_has(tmp_path):
    runner = make_runner(tmp_path, iters=2, custom_hooks=[
        dict(type='ProfilerHook', by_epoch=False, profile_times=3)])
    with pytest.raises(ValueError, match=r'profile_times=3 is more than the run has '
                                         r'\(2 iterations\)'):
        runner.train()


# -- EarlyStoppingHook ------------------------------------------------------------------
def stopped_at(tmp_path, scores, epochs=8, **hook) -> int:
    runner = make_runner(tmp_path, epochs=epochs, validate=True,
                         val_evaluator=Scores([dict(accuracy=s) for s in scores]),
                         custom_hooks=[dict(type='EarlyStoppingHook', monitor='accuracy',
                                            **hook)])
    runner.train()
    return runner.epoch


def test_early_stopping_stops_after_patience_validations_without_improvement(tmp_path):
    assert stopped_at(tmp_path, [50, 60, 60.05, 59, 58, 70, 70, 70], patience=3) == 5


def test_min_delta_sets_what_counts_as_an_improvement(tmp_path):
    slow = [50, 51, 51.2, 51.4, 51.6, 51.8, 52, 52.2]  # 0.2 better at each validation
    assert stopped_at(tmp_path / 'a', slow, patience=2, min_delta=1.5) == 3
    assert stopped_at(tmp_path / 'b', slow, patience=2, min_delta=0.1) == 8


def test_stopping_threshold_stops_as_soon_as_it_is_beaten(tmp_path):
    assert stopped_at(tmp_path, [50, 80, 95, 96, 97, 98, 99, 99],
                      stopping_threshold=90) == 3


def test_a_non_finite_metric_stops_unless_check_finite_is_false(tmp_path):
    nan = float('nan')
    assert stopped_at(tmp_path / 'a', [50, nan, 60, 61, 62, 63, 64, 65]) == 2
    assert stopped_at(tmp_path / 'b', [50, nan, 60, 61, 62, 63, 64, 65],
                      check_finite=False) == 8


def test_a_less_rule_is_inferred_for_a_loss(tmp_path):
    hook = EarlyStoppingHook(monitor='val/loss')
    assert hook.rule == 'less' and hook.min_delta == -0.1
    assert EarlyStoppingHook(monitor='top1').rule == 'greater'


def test_an_iteration_based_run_stops_before_its_next_iteration(tmp_path):
    runner = make_runner(tmp_path, iters=12, validate=True, val_interval=2,
                         val_evaluator=Scores([dict(accuracy=50)] * 6), custom_hooks=[
                             dict(type='EarlyStoppingHook', monitor='accuracy', patience=2)])
    runner.train()
    assert runner.iter == 6  # validations at 2 (best), 4, 6 (no improvement twice)


def test_a_missing_monitor_warns_or_with_strict_raises(tmp_path, fengine_log):
    runner = make_runner(tmp_path / 'b', epochs=1, validate=True,
                         val_evaluator=Scores([dict(acc=1.0)]), custom_hooks=[
                             dict(type='EarlyStoppingHook', monitor='accuracy')])
    runner.train()
    assert "monitor='accuracy' is not among the validation metrics 'acc'" in fengine_log.text
    runner = make_runner(tmp_path / 'c', epochs=1, validate=True,
                         val_evaluator=Scores([dict(acc=1.0)]), custom_hooks=[
                             dict(type='EarlyStoppingHook', monitor='accuracy', strict=True)])
    with pytest.raises(KeyError, match=r"monitor='accuracy' is not among the validation "
                                       r"metrics 'acc'; fix monitor, or pass strict=False"):
        runner.train()


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(monitor='score'), ValueError, r"EarlyStoppingHook monitor: cannot tell whether a "
                                        r"larger or smaller 'score' is better"),
    (dict(monitor='acc', rule='max'), ValueError,
     r"rule must be one of 'greater', 'less', but got 'max'"),
    (dict(monitor='acc', patience=0), ValueError, r'patience must be a positive int'),
    (dict(monitor='acc', min_delta=-1), ValueError, r'min_delta must be a number >= 0'),
])
def test_early_stopping_arguments_are_checked_when_built(kwargs, error, message):
    with pytest.raises(error, match=message):
        EarlyStoppingHook(**kwargs)


# -- CheckInvalidLossHook ---------------------------------------------------------------
class NanFrom(Net):
    """Its loss is NaN from the ``at``-th forward pass (1-based) on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x, y, mode='tensor'):
        out = super().forward(x, y, mode)
        if mode == 'loss':
            self.calls += 1
            if self.calls >= self.at:
                out['loss'] = out['loss'] * float('nan')
        return out


def test_check_invalid_loss_names_the_first_bad_iteration_at_its_next_check(
        tmp_path, monkeypatch):
    from fengine.runner.message_hub import MessageHub

    reads = []
    original = MessageHub.sync
    monkeypatch.setattr(MessageHub, 'sync', lambda self: (reads.append(1), original(self))[1])
    runner = make_runner(tmp_path, iters=20, model=NanFrom(at=3), custom_hooks=[
        dict(type='CheckInvalidLossHook', interval=4)])
    with pytest.raises(NonFiniteLossError, match=r'the train loss is not finite at '
                                                 r'iteration 3: loss=nan'):
        runner.train()
    assert runner.iter == 3  # found at the check after iteration 4 (0-based 3)
    assert len(reads) == 1  # one host read, every 4 iterations, not one per iteration


def test_check_invalid_loss_interval_must_be_positive():
    with pytest.raises(ValueError, match=r'CheckInvalidLossHook interval must be a positive '
                                         r'int, but got 0'):
        CheckInvalidLossHook(interval=0)
