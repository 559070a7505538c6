"""Compiling that does not cost the user time: the cache folder, the log lines, the
background compile and its switch to compiled steps."""
from __future__ import annotations

import copy
import logging
import os
import threading

import pytest
import torch
from torch import nn

from fengine.func import compile_cache, make_train_step
from fengine.func.compile_background import (BackgroundCompile, EagerInCompileThread,
                                             compile_in_flight)
from fengine.func.compile_cache import COMPILE_CACHE_ENV, compile_cache_dir, use_compile_cache
from fengine.func.compile_watch import CompileOnly
from fengine.optim import OptimWrapper
from test_func_step import MLP, GraphBreaking, batches

AOT = dict(backend='aot_eager')


OPTIMIZERS = {
    'SGD with momentum': lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    'Adam': lambda params: torch.optim.Adam(params, lr=1e-3),
}


def twins(model_cls=MLP, optimizer='SGD with momentum'):
    torch.manual_seed(0)
    eager = model_cls()
    other = copy.deepcopy(eager)
    make = OPTIMIZERS[optimizer]
    return (eager, OptimWrapper(make(eager.parameters())),
            other, OptimWrapper(make(other.parameters())))


def relative(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def assert_close_models(a, b, tol=1e-5):
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert relative(y, x) <= tol, name


# -- the cache folder -------------------------------------------------------------------
@pytest.fixture
def clean_cache_env(monkeypatch):
    for name in ('TORCHINDUCTOR_CACHE_DIR', COMPILE_CACHE_ENV, 'XDG_CACHE_HOME'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(compile_cache, '_announced', set())
    return monkeypatch


def test_the_cache_folder_defaults_to_fengine_s_folder_in_the_user_cache(clean_cache_env,
                                                                          tmp_path):
    clean_cache_env.setenv('HOME', str(tmp_path))
    assert compile_cache_dir() == tmp_path / '.cache' / 'fengine' / 'compile'
    clean_cache_env.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert compile_cache_dir() == tmp_path / 'xdg' / 'fengine' / 'compile'


def test_fengine_compile_cache_moves_the_folder(clean_cache_env, tmp_path):
    clean_cache_env.setenv(COMPILE_CACHE_ENV, str(tmp_path / 'mine'))
    assert compile_cache_dir() == tmp_path / 'mine'


def test_a_torchinductor_cache_dir_the_user_set_is_kept(clean_cache_env, tmp_path):
    clean_cache_env.setenv(COMPILE_CACHE_ENV, str(tmp_path / 'mine'))
    clean_cache_env.setenv('TORCHINDUCTOR_CACHE_DIR', str(tmp_path / 'torch'))
    assert compile_cache_dir() == tmp_path / 'torch'


def test_torch_s_own_default_in_the_variable_does_not_count_as_the_user_s(clean_cache_env,
                                                                          tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    clean_cache_env.setenv('TORCHINDUCTOR_CACHE_DIR', default_cache_dir())
    clean_cache_env.setenv(COMPILE_CACHE_ENV, str(tmp_path / 'mine'))
    assert compile_cache_dir() == tmp_path / 'mine'


def test_using_the_cache_points_inductor_at_it_and_says_so_once(clean_cache_env, tmp_path,
                                                                  fengine_log):
    clean_cache_env.setenv(COMPILE_CACHE_ENV, str(tmp_path / 'mine'))
    assert use_compile_cache() == tmp_path / 'mine'
    use_compile_cache()
    assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(tmp_path / 'mine')
    assert (tmp_path / 'mine').is_dir()
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    assert cache_dir() == str(tmp_path / 'mine')
    lines = [m for m in fengine_log.messages() if 'compiled steps are cached in' in m]
    assert lines == [f'compiled steps are cached in {tmp_path / "mine"}, so the next run of '
                     f'this job compiles faster (set {COMPILE_CACHE_ENV} to move it)']


def test_a_cache_folder_that_cannot_be_made_leaves_torch_s_default_and_warns(
        clean_cache_env, tmp_path, fengine_log):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    clean_cache_env.setenv(COMPILE_CACHE_ENV, str(blocker / 'compile'))
    use_compile_cache()
    assert 'TORCHINDUCTOR_CACHE_DIR' not in os.environ
    warning, = fengine_log.messages(logging.WARNING)
    assert f'the compile cache folder {blocker / "compile"} cannot be created' in warning
    assert COMPILE_CACHE_ENV in warning


def test_an_inductor_step_uses_the_cache_and_an_aot_eager_one_leaves_the_variable(
        clean_cache_env, tmp_path):
    clean_cache_env.setenv(COMPILE_CACHE_ENV, str(tmp_path / 'mine'))
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    make_train_step(model, wrapper, compile=AOT)
    assert os.environ.get('TORCHINDUCTOR_CACHE_DIR') != str(tmp_path / 'mine')
    make_train_step(model, wrapper, compile=True)  # compiles nothing before its first call
    assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == str(tmp_path / 'mine')


# -- the log lines ----------------------------------------------------------------------
def test_compiling_in_the_foreground_logs_start_end_and_a_recompile_with_dynamo_s_reason(
        fengine_log):
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    step = make_train_step(model, wrapper, compile=AOT, strict=True)
    state = step.state
    for batch in batches(3):
        state, _ = step(state, batch)
    small = batches(1, size=8)[0]
    state, _ = step(state, small)
    state, _ = step(state, small)
    lines = [m for m in fengine_log.messages() if 'the training step of MLP' in m]
    assert lines[0] == ('compiling the training step of MLP (backend aot_eager) at its step 1, '
                        'this takes a while the first time')
    assert lines[1].startswith('compiled the training step of MLP in ')
    assert lines[1].endswith(' s: 1 graph, 0 recompiles')
    assert lines[2].startswith('recompiled the training step of MLP at its step 4 in ')
    assert '(2 graphs, 1 recompile), because: ' in lines[2]
    assert 'size mismatch at index 0. expected 16, actual 8' in lines[2]
    assert len(lines) == 3  # the second small batch compiles nothing
    assert step._watch.graphs == 2 and step._watch.recompiles == 1


def test_the_validation_step_logs_its_compile_and_the_part_after_its_graph_break(fengine_log):
    class Predicting(MLP):
        def forward(self, x, y, mode='tensor'):
            out = self.net(x)
            if mode == 'predict':
                return out.argmax(1), nn.functional.cross_entropy(out, y).item()
            return super().forward(x, y, mode)

    model = Predicting().compile_steps(AOT)
    model.val_step(batches(1)[0])
    model.val_step(batches(1)[0])
    lines = [m for m in fengine_log.messages() if 'validation/test step of Predicting' in m]
    assert lines[0].startswith('compiling the validation/test step of Predicting (backend '
                               'aot_eager) at its step 1')
    assert lines[1].startswith('compiled the validation/test step of Predicting in ')
    assert lines[1].endswith('2 graphs, 0 recompiles')
    assert len(lines) == 2


def test_the_background_option_must_be_a_bool_or_where_it_runs():
    model = MLP()
    with pytest.raises(ValueError, match="compile option 'background' must be True, False, "
                                         "'process' or 'thread', but got 'proces'. Did you "
                                         "mean 'process'"):
        model.compile_steps(dict(backend='aot_eager', background='proces'))


@pytest.mark.parametrize('key', ['precompiled', 'keep_faster'])
def test_the_precompiled_and_keep_faster_options_must_be_bools(key):
    with pytest.raises(TypeError, match=f"compile option '{key}' must be True or False, but "
                                        "got 'no'"):
        MLP().compile_steps(dict(backend='aot_eager', **{key: 'no'}))


# -- compiling in the background --------------------------------------------------------
@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
def test_a_run_that_switches_to_compiled_steps_matches_an_all_eager_run(fengine_log, optimizer):
    eager, eager_wrapper, model, wrapper = twins(optimizer=optimizer)
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'), strict=True)
    data = batches(8)
    state = step.state
    for index, batch in enumerate(data):
        expected = eager.train_step(batch, eager_wrapper)
        state, got = step(state, batch)
        assert relative(got['loss'], expected['loss']) <= 1e-5, index
        if index == 0:  # step 1 ran eagerly and started the compile; let it finish here
            assert step._background.wait(120)  # (when is a matter of timing otherwise)
    assert step._background is None and not step._fell_back
    assert_close_models(eager, model)
    assert step._watch.graphs == 1 and step._watch.recompiles == 0  # the switch compiled nothing
    lines = [m for m in fengine_log.messages() if 'the training step of MLP' in m]
    assert lines[0] == ('compiling the training step of MLP (backend aot_eager) at its step 1, '
                        'in a background thread; eager steps run until it is ready')
    assert lines[1].startswith('compiled the training step of MLP in ')
    assert lines[1].endswith(' s: 1 graph, 0 recompiles; compiled steps from its step 2 on '
                             '(eager before)')
    assert len(lines) == 2


def test_a_batch_of_a_new_shape_is_compiled_in_the_background_too(fengine_log):
    eager, eager_wrapper, model, wrapper = twins()
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'), strict=True)
    state = step.state
    # The batch of 8 comes twice: its first time runs eagerly without compiling (the last
    # batch of a one-epoch run), its second time starts the compilation.
    data = batches(2) + batches(2, size=8, seed=2) + batches(2, seed=3)
    for index, batch in enumerate(data):
        expected = eager.train_step(batch, eager_wrapper)
        state, got = step(state, batch)
        assert relative(got['loss'], expected['loss']) <= 1e-5, index
        if step._background is not None:
            assert step._background.wait(120)
    assert_close_models(eager, model)
    assert step._watch.graphs == 2 and step._watch.recompiles == 1
    lines = [m for m in fengine_log.messages() if 'the training step of MLP' in m]
    assert lines[1].endswith('compiled steps from its step 2 on (eager before)')
    assert lines[2].startswith('recompiled the training step of MLP in the background from '
                               'its step 4 in ')
    assert ('(2 graphs, 1 recompile); compiled steps again from its step 5 on, because: '
            in lines[2])
    assert 'size mismatch at index 0. expected 16, actual 8' in lines[2]
    assert len(lines) == 3  # the last two batches ran compiled, without compiling


def test_background_steps_leave_grad_as_the_compiled_step_does_none_after_an_sgd_update():
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'))
    state, _ = step(step.state, batches(1)[0])  # eager, while the worker compiles
    assert all(p.grad is None for p in model.parameters())
    assert step._background.wait(120)
    state, _ = step(state, batches(1)[0])  # compiled
    assert all(p.grad is None for p in model.parameters())


def test_an_optimizer_that_reads_grad_keeps_the_same_buffers_through_the_switch():
    model = MLP()
    wrapper = OptimWrapper(torch.optim.RMSprop(model.parameters(), lr=0.01))
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'))
    state, _ = step(step.state, batches(1)[0])
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and not g.any() for g in grads)  # zeroed, not set to None
    assert step._background.wait(120)
    state, _ = step(state, batches(1)[0])
    assert [p.grad for p in model.parameters()] == grads  # the same buffers


def test_an_eager_step_that_met_another_thread_s_fx_trace_runs_again(monkeypatch):
    from fengine.func.compile_background import prepare_inductor_in_this_thread

    prepare_inductor_in_this_thread()  # inductor's own trace, done on this thread
    eager, eager_wrapper, model, wrapper = twins()
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'))
    real, calls = model._eager_train_step, []

    def meets_a_trace_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise NameError('module is not installed as a submodule')
        return real(*args, **kwargs)

    monkeypatch.setattr(model, '_eager_train_step', meets_a_trace_once)
    batch = batches(1)[0]
    expected = eager.train_step(batch, eager_wrapper)
    _, got = step(step.state, batch)
    assert len(calls) == 2 and relative(got['loss'], expected['loss']) <= 1e-6
    assert_close_models(eager, model)
    monkeypatch.setattr(model, '_eager_train_step', lambda *a, **k: {}[0])
    with pytest.raises(KeyError):  # any other error is the model's own
        step._eager_while_compiling(batch)


def test_a_step_that_cannot_compile_in_the_background_falls_back_to_eager_with_a_warning(
        fengine_log):
    eager, eager_wrapper, model, wrapper = twins(GraphBreaking)
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'))
    state = step.state
    for index, batch in enumerate(batches(4)):
        expected = eager.train_step(batch, eager_wrapper)
        state, got = step(state, batch)
        assert relative(got['loss'], expected['loss']) <= 1e-5
        if index == 0:
            assert step._background.wait(120)
    assert step._fell_back
    assert_close_models(eager, model)
    warning, = fengine_log.messages(logging.WARNING)
    assert 'compiling the training step of GraphBreaking failed, so it runs eagerly' in warning


def test_strict_raises_the_background_compile_error_at_the_switch():
    model = GraphBreaking()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'), strict=True)
    state, _ = step(step.state, batches(1)[0])
    assert step._background.wait(120)
    with pytest.raises(torch._dynamo.exc.Unsupported):
        step(state, batches(1)[0])


def test_a_stance_that_runs_eagerly_stops_the_worker_before_it_touches_the_state(fengine_log):
    eager, eager_wrapper, model, wrapper = twins()
    step = make_train_step(model, wrapper, compile=dict(AOT, background='thread'))
    state = step.state
    with torch.compiler.set_stance('force_eager'):
        for index, batch in enumerate(batches(3)):
            expected = eager.train_step(batch, eager_wrapper)
            state, got = step(state, batch)
            assert relative(got['loss'], expected['loss']) <= 1e-5
            if index == 0 and step._background is not None:  # not ended at once
                assert step._background.wait(120)
    assert_close_models(eager, model)
    warning, = fengine_log.messages(logging.WARNING)
    assert 'dynamo ran the step eagerly instead of compiling it' in warning
    assert 'called in the foreground from now on' in warning


def test_validation_runs_eagerly_while_a_background_compile_is_in_flight():
    release = threading.Event()

    def compiling(*args):
        release.wait(60)
        raise CompileOnly

    model = MLP().compile_steps(AOT)
    background = BackgroundCompile(compiling, ()).start()
    try:
        assert compile_in_flight()
        out = model.val_step(batches(1)[0])
        assert out.shape == (16, 10)
        assert model._compiled_steps['eval'].func.__self__.graphs == 0  # not compiled
    finally:
        release.set()
    assert background.wait(60) and background.error is None
    assert not compile_in_flight()
    model.val_step(batches(1)[0])
    assert model._compiled_steps['eval'].func.__self__.graphs == 1


def test_a_worker_whose_function_returns_without_compiling_reports_it():
    background = BackgroundCompile(lambda: None, ()).start()
    assert background.wait(60)
    assert isinstance(background.error, EagerInCompileThread)


def test_deterministic_algorithms_compile_in_the_foreground_by_default():
    torch.use_deterministic_algorithms(True)  # as conftest.py leaves every test
    assert MLP().compile_steps(AOT)._compiled_steps['options']['background'] is False
    assert MLP().compile_steps(dict(AOT, background=True))._compiled_steps['options'][
        'background'] is True


def test_the_runner_compiles_in_the_background_by_default(tmp_path, fengine_log):
    from torch.utils.data import DataLoader, TensorDataset

    torch.use_deterministic_algorithms(False)  # conftest.py's, which would keep it in front

    from fengine.evaluator import BaseMetric
    from fengine.runner import Runner

    class Count(BaseMetric):
        def process(self, data_batch, predictions):
            self.results.append(len(predictions))

        def compute_metrics(self, results):
            return dict(seen=sum(results))

    data = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))
    runner = Runner(MLP(), work_dir=str(tmp_path), train_dataloader=DataLoader(data, 16),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
                    val_dataloader=DataLoader(data, 16), val_cfg=dict(),
                    val_evaluator=dict(metrics=Count()), compile=AOT)
    runner.train()
    text = fengine_log.text
    assert ('compiling the training step of MLP (backend aot_eager) at its step 1, in a '
            'background process') in text
    assert 'torch intra-op threads: ' in text
