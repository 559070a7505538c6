"""Compiling in a forked child, precompiled steps kept for the next run, and keep_faster."""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
import types

import pytest
import torch

from fengine.func import make_train_step
from fengine.func.compile_fork import ForkCompile, fork_unsafe_reason
from fengine.func.compile_precompiled import (PRECOMPILED_FOLDER, load_precompiled,
                                              stale_source_reason, untrusted_reason)
from fengine.optim import OptimWrapper
from test_compile import AOT, assert_close_models, relative, twins
from test_func_step import MLP, GraphBreaking, batches

PROCESS = dict(AOT, background='process')


def in_a_fresh_process(test):
    """Run ``test`` in a fresh interpreter (a pytest of its own): torch's autograd refuses
    to run in a child forked after a backward pass, which earlier tests in this process
    ran; a training job forks at its first step, before any."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get('FENGINE_TEST_FRESH') == test.__name__:
            return test(*args, **kwargs)
        done = subprocess.run(
            [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
             f'{__file__}::{test.__name__}'], env=dict(os.environ, FENGINE_TEST_FRESH=test.__name__),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert done.returncode == 0, done.stdout[-4000:]
    return wrapper


def run(step, data, eager=None, eager_wrapper=None):
    """Step through ``data`` (comparing with ``eager`` when given; the step goes first, so
    that it forks before any backward pass), letting a background compile end after the
    step that started it."""
    state = step.state
    for index, batch in enumerate(data):
        state, got = step(state, batch)
        expected = None if eager is None else eager.train_step(batch, eager_wrapper)
        if expected is not None:
            assert relative(got['loss'], expected['loss']) <= 1e-5, index
        if step._background is not None:
            assert step._background.wait(300)
    return state


def files(folder):
    return sorted((folder / PRECOMPILED_FOLDER).glob('*.bin'))


def training_lines(log, name='MLP'):
    return [m for m in log.messages() if f'the training step of {name}' in m]


@pytest.fixture(autouse=True)
def _forks_allowed(monkeypatch):
    """A child of an earlier test in this process may have found autograd refusing to run
    after the fork, which turns forks off for the process (compile_fork.py)."""
    from fengine.func import compile_fork

    monkeypatch.setattr(compile_fork, '_refused', None)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / 'compile-cache'  # conftest.py points FENGINE_COMPILE_CACHE here


@in_a_fresh_process
def test_a_step_compiled_in_a_background_process_switches_and_matches_eager(fengine_log,
                                                                            cache):
    eager, eager_wrapper, model, wrapper = twins()
    step = make_train_step(model, wrapper, compile=PROCESS, strict=True)
    run(step, batches(5), eager, eager_wrapper)
    assert_close_models(eager, model)
    assert len(files(cache)) == 1  # what the child wrote, for the next run
    lines = training_lines(fengine_log)
    assert lines[0] == ('compiling the training step of MLP (backend aot_eager) at its step 1, '
                        'in a background process; eager steps run until it is ready')
    assert lines[1].startswith('compiled the training step of MLP in ')
    assert lines[1].endswith('1 graph, 0 recompiles; compiled steps from its step 2 on '
                             '(eager before)')
    assert len(lines) == 2
    assert step._precompiled and step._compiled_times  # step 2 on ran the precompiled graph


@in_a_fresh_process
def test_the_next_run_loads_the_precompiled_step_at_its_first_step(fengine_log, cache):
    _, _, first, first_wrapper = twins()
    run(make_train_step(first, first_wrapper, compile=PROCESS), batches(2))
    fengine_log.records.clear()
    eager, eager_wrapper, model, wrapper = twins()  # a new process would build the same
    step = make_train_step(model, wrapper, compile=PROCESS, strict=True)
    run(step, batches(4, seed=5), eager, eager_wrapper)
    assert_close_models(eager, model)
    lines = training_lines(fengine_log)
    assert len(lines) == 1, lines  # nothing compiled
    assert lines[0].startswith('loaded the training step of MLP, precompiled, from '
                               f'{cache / PRECOMPILED_FOLDER}')
    assert lines[0].endswith('compiled steps from its step 1 on')
    assert step._background is None and len(step._compiled_times) == 4


@in_a_fresh_process
def test_a_precompiled_step_whose_guards_do_not_hold_is_compiled_again(fengine_log, cache):
    def sgd(nesterov):
        torch.manual_seed(0)
        model = MLP()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                                    nesterov=nesterov)
        return model, OptimWrapper(optimizer)

    run(make_train_step(*sgd(False), compile=PROCESS), batches(2))
    fengine_log.records.clear()
    # The same structure and hyper-parameter names (the same file), another update rule.
    model, wrapper = sgd(True)
    eager, eager_wrapper = sgd(True)
    step = make_train_step(model, wrapper, compile=PROCESS, strict=True)
    run(step, batches(3), eager, eager_wrapper)
    assert_close_models(eager, model)
    lines = training_lines(fengine_log)
    assert lines[0].startswith('the training step of MLP is compiled again, as its precompiled '
                               "graph does not fit this call: L['state'].optimizer."
                               "param_groups[0]['nesterov']")
    # In a process, or in a thread where autograd refuses to run in a child forked now.
    assert lines[1] in ('compiling the training step of MLP (backend aot_eager) at its step 1, '
                        'in a background process; eager steps run until it is ready',
                        'compiling the training step of MLP in a background process failed '
                        '(autograd cannot run in a child forked after this process ran a '
                        'backward pass); it compiles in a background thread instead')
    assert lines[2].startswith('compiled the training step of MLP in ')
    assert len(lines) == 3


@in_a_fresh_process
def test_a_precompiled_file_in_a_folder_others_may_write_is_refused(fengine_log, cache):
    run(make_train_step(*twins()[2:], compile=PROCESS), batches(2))
    folder = cache / PRECOMPILED_FOLDER
    folder.chmod(0o777)
    fengine_log.records.clear()
    step = make_train_step(*twins()[2:], compile=dict(PROCESS, background='thread'))
    run(step, batches(2))
    warning, = fengine_log.messages(logging.WARNING)
    assert warning.startswith('the training step of MLP is compiled again, as its precompiled '
                              f'file is not used: {folder} may be written by other users '
                              '(mode drwxrwxrwx); it is not loaded (the compile cache must be '
                              'yours alone)')
    assert not step._precompiled


def test_each_intra_op_thread_count_has_a_precompiled_file_of_its_own(cache):
    # dynamo guards on torch's thread count, which fengine's default takes from the load
    model = MLP()
    step = make_train_step(model, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)),
                           compile=PROCESS)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = step._precompiled_file(step.state, ('kind',))
        torch.set_num_threads(2)
        two = step._precompiled_file(step.state, ('kind',))
    finally:
        torch.set_num_threads(threads)
    assert one != two and one.parent == two.parent


def test_untrusted_reason_names_another_owner_and_group_write(tmp_path):
    target = tmp_path / 'file'
    target.write_bytes(b'')
    target.chmod(0o600)
    assert untrusted_reason(target) is None
    target.chmod(0o620)
    assert untrusted_reason(target) == (f'{target} may be written by other users '
                                        '(mode -rw--w----)')
    assert 'cannot be read' in untrusted_reason(tmp_path / 'missing')


def test_a_precompiled_step_of_an_edited_source_is_stale(tmp_path):
    source = types.SimpleNamespace(module='fengine.func.step', firstlineno=1, lastlineno=3,
                                   checksum='0' * 64)
    compiled = types.SimpleNamespace(source_info=lambda: types.SimpleNamespace(
        inlined_sources=[source]))
    assert stale_source_reason(compiled) == 'fengine.func.step changed (lines 1-3)'
    source.module = 'fengine.no_such_module'
    assert stale_source_reason(compiled).startswith(
        'fengine.no_such_module cannot be read (ModuleNotFoundError')


def test_a_missing_file_is_not_an_error(tmp_path):
    assert load_precompiled(tmp_path / 'none.bin', {}) == (None, 'missing')


@in_a_fresh_process
def test_a_step_the_child_cannot_precompile_compiles_in_a_thread_and_falls_back(fengine_log,
                                                                                 cache):
    eager, eager_wrapper, model, wrapper = twins(GraphBreaking)
    step = make_train_step(model, wrapper, compile=PROCESS)
    run(step, batches(4), eager, eager_wrapper)
    assert_close_models(eager, model)
    warnings = fengine_log.messages(logging.WARNING)
    assert warnings[0].startswith('compiling the training step of GraphBreaking in a '
                                  'background process failed (')
    assert warnings[0].endswith('); it compiles in a background thread instead')
    assert 'compiling the training step of GraphBreaking failed, so it runs eagerly' in \
        warnings[1]
    assert step._fell_back and not files(cache)


def test_a_fork_child_reports_its_error_in_one_line_and_writes_nothing(tmp_path):
    def fails(*args):
        raise ValueError('no graph here')

    child = ForkCompile(fails, (), {'backend': 'eager', 'fullgraph': True},
                        tmp_path / 'x.bin', {}).start()
    assert child.wait(120)
    # Dynamo's error for the exception it traced; its first line and where it was raised.
    assert child.error.startswith('Unsupported: Observed exception (at convert_frame.py:')
    assert not (tmp_path / 'x.bin').exists()


def test_fork_is_refused_off_the_cpu_with_the_reason():
    assert fork_unsafe_reason(torch.device('cpu')) is None
    assert fork_unsafe_reason(torch.device('meta')) == ('the step runs on meta, whose context '
                                                         'a forked child cannot use')


@in_a_fresh_process
def test_validation_runs_eagerly_while_the_training_step_compiles_in_a_process():
    model = MLP().compile_steps(PROCESS)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.train_step(batches(1)[0], wrapper)
    step = model._compiled_steps['train']['step']
    assert step._background is not None and step.eval_waits
    model.val_step(batches(1)[0])
    assert model._compiled_steps['eval'].func.__self__.graphs == 0  # not compiled
    assert step._background.wait(300)


def test_on_the_cpu_validation_stays_eager_with_background_compile_and_compiles_without():
    for background, compiled_graphs in ((True, 0), (False, 1)):
        model = MLP().compile_steps(dict(AOT, background=background))
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        model.train_step(batches(1)[0], wrapper)
        step = model._compiled_steps['train']['step']
        if step._background is not None:
            assert step._background.wait(300)
        model.train_step(batches(1, seed=2)[0], wrapper)
        assert step.eval_waits is bool(background)
        model.val_step(batches(1)[0])
        assert model._compiled_steps['eval'].func.__self__.graphs == compiled_graphs


# -- keep_faster ------------------------------------------------------------------------
def test_keep_faster_goes_back_to_eager_steps_when_they_are_faster(fengine_log):
    eager, eager_wrapper, model, wrapper = twins()
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'))
    state = run(step, batches(2), eager, eager_wrapper)  # eager, then compiled
    # As if timed: 20 compiled steps of 2 ms, 20 eager ones of 1 ms.
    step._compiled_times = [0.002] * 20
    step._eager_times = [0.001] * 20
    step._judge_speed()
    assert step._prefer_eager and step.eval_waits
    line = training_lines(fengine_log)[-1]
    assert line == ('the training step of MLP runs eager steps from its step 3 on, as they are '
                    'faster (2.00 ms per compiled step, 1.00 ms per eager one; '
                    'compile=dict(keep_faster=False) keeps the compiled ones)')
    graphs = step._watch.graphs
    for batch in batches(3, seed=4):
        expected = eager.train_step(batch, eager_wrapper)
        state, got = step(state, batch)
        assert relative(got['loss'], expected['loss']) <= 1e-5
    assert_close_models(eager, model)
    assert step._watch.graphs == graphs


def test_keep_faster_keeps_compiled_steps_that_are_faster_and_says_so(fengine_log):
    step = make_train_step(*twins()[2:], compile=dict(AOT, background='thread'))
    run(step, batches(2))
    step._compiled_times = [0.001] * 20
    step._eager_times = [0.002] * 20
    step._judge_speed()
    assert not step._prefer_eager and not step._keep_faster
    assert training_lines(fengine_log)[-1] == (
        'the training step of MLP keeps its compiled steps (1.00 ms per compiled step, '
        '2.00 ms per eager one)')


@in_a_fresh_process
def test_a_precompiled_first_step_times_eager_steps_after_twenty_compiled_ones(fengine_log):
    run(make_train_step(*twins()[2:], compile=PROCESS), batches(2))
    step = make_train_step(*twins()[2:], compile=PROCESS)
    run(step, batches(45))
    assert len(step._compiled_times) == 20 and len(step._eager_times) == 20
    assert not step._keep_faster  # decided, one way or the other
    assert any('per compiled step' in line for line in training_lines(fengine_log))


def test_without_keep_faster_nothing_is_timed():
    step = make_train_step(*twins()[2:], compile=dict(AOT, background='thread',
                                                      keep_faster=False))
    run(step, batches(3))
    assert step._eager_times == [] and step._compiled_times == []


def test_a_child_still_compiling_at_exit_is_left_to_finish_and_named(monkeypatch, tmp_path,
                                                                     fengine_log):
    from fengine.func import compile_fork

    monkeypatch.setattr(compile_fork, 'save_precompiled', lambda *args: time.sleep(60))
    child = ForkCompile(len, (), {}, tmp_path / 'x.bin', {}).start()
    try:
        compile_fork._leave_children()
        line, = fengine_log.messages()
        assert line == (f'a background process (pid {child.pid}) is still compiling; it '
                        'finishes on its own, niced, and the next run of this job loads what '
                        f'it writes (kill {child.pid} to stop it)')
    finally:
        child.stop()
    assert child.done and child.error == 'the compile process exited with -9'


def test_a_child_forked_after_a_backward_pass_that_autograd_refuses_turns_forks_off(
        tmp_path):
    from fengine.func import compile_fork

    model = MLP()
    model(*batches(1)[0], mode='loss')['loss'].backward()  # the engine is started
    step = make_train_step(model, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)),
                           compile=PROCESS)
    args = (step,) + step._compile_args(step.state, batches(1)[0])
    child = ForkCompile(type(step)._step, args, step._precompile_options, tmp_path / 'x.bin',
                        {'step': step}).start()
    assert child.wait(300)
    if child.error is None:  # this backward pass left autograd usable in a child
        assert (tmp_path / 'x.bin').exists()
        return
    assert child.error == compile_fork.AUTOGRAD_AFTER_FORK
    assert fork_unsafe_reason(torch.device('cpu')) == compile_fork.AUTOGRAD_AFTER_FORK
