"""Exact resume: a run stopped and resumed trains bit for bit like one that never stopped.

Every run here draws random numbers where a resume could lose track of them: dropout
in the model, random noise added by the dataset to each sample, a shuffling
``DefaultSampler``, validation between epochs (its dataloader draws a worker seed),
an lr warm-up by iteration and a step schedule. The losses are read back from
``vis_data/scalars.json`` (the logger writes every iteration) and the parameters are
compared with ``torch.equal``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fengine import Runner
from fengine.hooks import Hook
from fengine.runner import find_last_checkpoint

from seed_models import FashionMnistMetric, NeuralNetwork
from test_runner import TinyImages, fresh_model

EAGER = dict(backend='aot_eager')
OPTIMIZERS = {
    'SGD': dict(type='SGD', lr=0.05, momentum=0.9),
    'Adam': dict(type='Adam', lr=1e-3),
}


class DropNet(NeuralNetwork):
    """The seed's model with dropout, so the model itself draws random numbers."""

    def __init__(self):
        super().__init__()
        self.linear_relu_stack[1] = nn.Sequential(nn.ReLU(), nn.Dropout(0.2))


class NoisyImages(TinyImages):
    """``images()`` plus fresh noise at every read: loading a batch draws random numbers."""

    def __init__(self, n: int = 80, seed: int = 0):
        super().__init__(n, seed)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x + 0.05 * torch.rand_like(x), y


def make_runner(work_dir: Path, *, compile=False, optimizer='SGD', by_epoch=True, length=4,
                resume=False, interval=1, validate=True, log_interval=1, **kwargs) -> Runner:
    """A run of ``length`` epochs (or iterations) that checkpoints every ``interval``.

    A log line averages the last ``log_interval`` losses.
    """
    # The schedules name their ``end``: by default it is max_epochs (max_iters), as in
    # MMEngine, so the shorter run that is stopped would have another schedule.
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=length)
        schedulers = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
                      dict(type='MultiStepLR', by_epoch=True, milestones=[1, 3], gamma=0.5,
                           end=100)]
    else:
        train_cfg = dict(by_epoch=False, max_iters=length)
        schedulers = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
                      dict(type='MultiStepLR', by_epoch=False, milestones=[8, 13], gamma=0.5,
                           end=100)]
    val = {}
    if validate:
        train_cfg['val_interval'] = 1 if by_epoch else 5
        val = dict(val_dataloader=dict(dataset=NoisyImages(32, seed=1), batch_size=16,
                                       sampler=dict(type='DefaultSampler', shuffle=True)),
                   val_evaluator=dict(metrics=FashionMnistMetric()))
    args = dict(
        model=fresh_model(DropNet), work_dir=work_dir,
        train_dataloader=dict(dataset=NoisyImages(80), batch_size=16,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(OPTIMIZERS[optimizer])),
        param_scheduler=schedulers, train_cfg=train_cfg,
        randomness=dict(seed=7, deterministic=True), compile=compile, resume=resume,
        default_hooks=dict(logger=dict(type='LoggerHook', interval=log_interval),
                           checkpoint=dict(type='CheckpointHook', interval=interval,
                                           by_epoch=by_epoch)),
        **val)
    args.update(kwargs)
    runner = Runner(**args)
    runner.register_hook(StartAt())
    return runner


class StartAt(Hook):
    """Records the iteration training starts at (``runner.started_at``): a resume that
    ignored its checkpoint would replay the same deterministic run from 0."""

    def before_train(self, runner) -> None:
        runner.started_at = runner.iter


def logged_losses(work_dir: Path) -> dict[int, float]:
    """``step -> loss`` from every ``scalars.json`` of the runs in ``work_dir``."""
    losses: dict[int, float] = {}
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                if record['step'] in losses:
                    assert losses[record['step']] == record['loss'], f'step {record["step"]} twice'
                losses[record['step']] = record['loss']
    return losses


def params_of(runner: Runner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def assert_same_run(full: Runner, resumed: Runner, full_dir: Path, resumed_dir: Path,
                    steps: int, log_interval: int = 1) -> None:
    expected, got = logged_losses(full_dir), logged_losses(resumed_dir)
    assert sorted(expected) == list(range(log_interval, steps + 1, log_interval))
    assert got == expected  # every logged step, exactly
    a, b = params_of(full), params_of(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f'{name} differs after resuming'
    assert resumed.optim_wrapper.get_lr() == full.optim_wrapper.get_lr()


# -- by epoch -------------------------------------------------------------------------
@pytest.mark.parametrize('optimizer', ['SGD', 'Adam'])
@pytest.mark.parametrize('compiled', [False, True], ids=['eager', 'compiled'])
def test_a_run_stopped_after_epoch_2_and_resumed_equals_the_run_of_4_epochs(
        tmp_path, optimizer, compiled):
    from torch._dynamo.utils import counters

    compile = EAGER if compiled else False
    full = make_runner(tmp_path / 'full', compile=compile, optimizer=optimizer)
    full.train()
    make_runner(tmp_path / 'part', compile=compile, optimizer=optimizer, length=2).train()
    counters.clear()
    resumed = make_runner(tmp_path / 'part', compile=compile, optimizer=optimizer,
                          resume=True)
    resumed.train()
    assert resumed.started_at == 10  # after the 2 epochs of 5 iterations of `part`
    assert resumed.epoch == 4 and resumed.iter == 20
    assert_same_run(full, resumed, tmp_path / 'full', tmp_path / 'part', 20)
    if compiled:
        # The train step and the val step: resuming (lr floats loaded, then held as
        # tensors again; the loaded optimizer state) adds no compile, and the lr schedule
        # none per step.
        assert counters['stats']['unique_graphs'] <= 3, dict(counters['stats'])
        # The lr is held as a tensor again by the compiled step, with the same bits.
        lr = resumed.optim_wrapper.optimizer.param_groups[0]['lr']
        assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32


# -- by iteration, resuming in the middle of an epoch -------------------------------------
@pytest.mark.parametrize('compiled,optimizer', [(False, 'SGD'), (True, 'Adam')],
                         ids=['eager-SGD', 'compiled-Adam'])
def test_an_iteration_based_run_resumes_mid_epoch_at_the_right_batch(
        tmp_path, compiled, optimizer):
    compile = EAGER if compiled else False
    # 5 batches per pass: checkpoints at iterations 7 and 14 are in the middle of a pass,
    # and of a log window of 3 iterations (the log line at 9 averages 7, 8 and 9).
    full = make_runner(tmp_path / 'full', compile=compile, optimizer=optimizer,
                       by_epoch=False, length=17, interval=7, log_interval=3)
    full.train()
    make_runner(tmp_path / 'part', compile=compile, optimizer=optimizer, by_epoch=False,
                length=7, interval=7, log_interval=3).train()
    assert find_last_checkpoint(tmp_path / 'part').name == 'iter_7.pth'
    meta = torch.load(tmp_path / 'part' / 'iter_7.pth', weights_only=True)['meta']
    assert meta['dataloader_position'] == 2 and 'pass_rng' in meta
    resumed = make_runner(tmp_path / 'part', compile=compile, optimizer=optimizer,
                          by_epoch=False, length=17, interval=7, log_interval=3, resume=True)
    resumed.train()
    assert resumed.started_at == 7
    assert resumed.iter == 17
    assert_same_run(full, resumed, tmp_path / 'full', tmp_path / 'part', 17, log_interval=3)


def test_an_epoch_based_run_resumes_from_an_iteration_checkpoint_mid_epoch(tmp_path):
    def runner(folder, **kwargs):
        return make_runner(tmp_path / folder, length=3, default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=7, by_epoch=False)), **kwargs)

    full = runner('full')
    full.train()
    part = runner('part')
    stop_after = 7

    class Stop(Exception):
        pass

    def stop(runner, **kwargs):  # a crash right after the checkpoint of iteration 7
        if runner.iter + 1 == stop_after:
            raise Stop

    crash = Hook()
    crash.after_train_iter = stop
    part.register_hook(crash, priority='LOWEST')
    with pytest.raises(Stop):
        part.train()
    resumed = runner('part', resume=True)
    resumed.train()
    assert resumed.started_at == 7
    assert_same_run(full, resumed, tmp_path / 'full', tmp_path / 'part', 15)


# -- tensor learning rates in checkpoints ---------------------------------------------
def test_a_compiled_run_writes_float_lrs_and_a_tensor_lr_checkpoint_resumes_eager_or_compiled(
        tmp_path):
    make_runner(tmp_path / 'compiled', compile=EAGER, length=1, validate=False).train()
    path = tmp_path / 'compiled' / 'epoch_1.pth'
    checkpoint = torch.load(path, weights_only=True)
    groups = checkpoint['optimizer']['param_groups']
    assert all(type(g['lr']) is float for g in groups)  # noqa: E721 - not a tensor
    # A checkpoint with the compiled step's 0-d float32 tensors (as optimizer.state_dict()
    # gives them) reads the same: the floats it holds are exactly those tensors' values.
    for group in groups:
        group['lr'] = torch.tensor(group['lr'], dtype=torch.float32)
    tensor_path = tmp_path / 'tensor_lr.pth'
    torch.save(checkpoint, tensor_path)

    finals = {}
    for name, compile, source in [('eager-float', False, path),
                                  ('eager-tensor', False, tensor_path),
                                  ('compiled-float', EAGER, path),
                                  ('compiled-tensor', EAGER, tensor_path)]:
        runner = make_runner(tmp_path / name, compile=compile, length=2, validate=False,
                             resume=str(source))
        runner.train()
        assert runner.started_at == 5 and runner.iter == 10
        lr = runner.optim_wrapper.optimizer.param_groups[0]['lr']
        # Eager steps keep floats; compiled ones hold a float32 tensor again.
        assert isinstance(lr, torch.Tensor) == bool(compile), (name, lr)
        finals[name] = params_of(runner)
    for a, b in [('eager-float', 'eager-tensor'), ('compiled-float', 'compiled-tensor')]:
        for key in finals[a]:
            assert torch.equal(finals[a][key], finals[b][key]), (a, b, key)


# -- bad checkpoints --------------------------------------------------------------------
def _trained(tmp_path: Path) -> Path:
    make_runner(tmp_path / 'good', length=1, validate=False).train()
    return tmp_path / 'good' / 'epoch_1.pth'


def _state(runner: Runner):
    optimizer = runner.optim_wrapper.optimizer
    return (params_of(runner),
            {id_: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
             for id_, s in enumerate(optimizer.state.values())},
            [dict((k, v) for k, v in g.items() if k != 'params') for g in optimizer.param_groups])


def _assert_same_state(before, after):
    (p0, s0, g0), (p1, s1, g1) = before, after
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    assert s0.keys() == s1.keys()
    for i in s0:
        for k, v in s0[i].items():
            assert torch.equal(v, s1[i][k]) if isinstance(v, torch.Tensor) else v == s1[i][k]
    assert g0 == g1


@pytest.mark.parametrize('damage', ['truncated', 'garbage', 'empty'])
@pytest.mark.parametrize('how', ['resume', 'load_from'])
def test_a_corrupt_checkpoint_is_a_clear_error_and_changes_nothing(tmp_path, damage, how):
    good = _trained(tmp_path)
    data = good.read_bytes()
    bad = tmp_path / f'{damage}.pth'
    bad.write_bytes({'truncated': data[:len(data) // 2], 'garbage': b'\x00not a checkpoint' * 50,
                     'empty': b''}[damage])
    # A runner mid-training (model and optimizer state present) loads the bad file.
    runner = make_runner(tmp_path / 'run', length=1, validate=False)
    runner.train()
    before = _state(runner)
    with pytest.raises(RuntimeError, match=rf"{bad.name}.*(corrupt|truncated)"):
        if how == 'resume':
            runner.resume(bad)
        else:
            runner.load_checkpoint(bad)
    _assert_same_state(before, _state(runner))


def test_a_checkpoint_of_another_optimizer_setup_changes_nothing(tmp_path):
    good = _trained(tmp_path)
    checkpoint = torch.load(good, weights_only=True)
    first = checkpoint['optimizer']['state'][0]
    first['momentum_buffer'] = first['momentum_buffer'][:3]  # wrong shape
    bad = tmp_path / 'bad_optimizer.pth'
    torch.save(checkpoint, bad)
    runner = make_runner(tmp_path / 'run', length=1, validate=False)
    runner.train()
    before = _state(runner)
    with pytest.raises(RuntimeError, match=r"bad_optimizer.pth.*momentum_buffer.*shape"):
        runner.resume(bad)
    _assert_same_state(before, _state(runner))


@pytest.mark.parametrize('batch_size,skip,length', [(32, 4, 3), (8, -3, 10)],
                         ids=['skip-past-the-end', 'negative-skip'])
def test_a_mid_epoch_checkpoint_of_another_batch_size_is_refused_before_anything_changes(
        tmp_path, batch_size, skip, length):
    # 5 batches an epoch: the checkpoint of iteration 7 is after batch 2 of epoch 1.
    make_runner(tmp_path / 'src', length=2, validate=False, default_hooks=dict(
        checkpoint=dict(type='CheckpointHook', interval=7, by_epoch=False))).train()
    path = tmp_path / 'src' / 'iter_7.pth'
    # The same run with another batch size: iteration 7 - 1 epoch of `length` batches.
    runner = make_runner(tmp_path / 'run', length=1, validate=False, train_dataloader=dict(
        dataset=NoisyImages(80), batch_size=batch_size,
        sampler=dict(type='DefaultSampler', shuffle=True)))
    runner.train()
    before, counters = _state(runner), (runner.epoch, runner.iter)
    losses = list(runner.message_hub.history('train/loss'))
    rng = torch.get_rng_state()
    message = (rf"^checkpoint '.*iter_7\.pth' was written at iteration 7 \(epoch 1\), after "
               rf"batch 2 of its pass over the training data: resuming would skip {skip} "
               rf"batches of the training dataloader, which has {length} batches now")
    with pytest.raises(ValueError, match=message):
        runner.resume(path)
    _assert_same_state(before, _state(runner))
    assert (runner.epoch, runner.iter) == counters
    assert runner.message_hub.history('train/loss') == losses
    assert torch.equal(torch.get_rng_state(), rng)
    # Given to a new run, it fails the same way before training starts.
    resumed = make_runner(tmp_path / 'run2', length=2, validate=False, resume=str(path),
                          train_dataloader=dict(dataset=NoisyImages(80), batch_size=batch_size))
    with pytest.raises(ValueError, match=message):
        resumed.train()
    assert resumed.iter == 0


@pytest.mark.parametrize('how', ['resume', 'load_from'])
def test_a_corrupt_checkpoint_given_to_the_runner_fails_before_training_starts(tmp_path, how):
    bad = tmp_path / 'broken.pth'
    bad.write_bytes(_trained(tmp_path).read_bytes()[:1000])
    runner = make_runner(tmp_path / 'run', length=1, validate=False, **{how: str(bad)})
    initial = params_of(runner)
    with pytest.raises(RuntimeError, match=r'broken.pth.*(corrupt|truncated)'):
        runner.train()
    assert runner.iter == 0
    for key, value in params_of(runner).items():
        assert torch.equal(value, initial[key]), key


def test_validating_before_training_does_not_use_up_the_resume(tmp_path):
    make_runner(tmp_path, length=2).train()
    resumed = make_runner(tmp_path, length=4, resume=True)
    metrics = resumed.val()  # with the checkpoint's weights
    assert metrics == resumed.val_loop.last_metrics
    before = params_of(resumed)
    resumed.train()  # then the whole resume: optimizer, schedulers, counters
    assert resumed.started_at == 10 and resumed.iter == 20
    stored = torch.load(tmp_path / 'epoch_2.pth', weights_only=True)['state_dict']
    assert all(torch.equal(before[k], stored[k]) for k in before)


def test_resume_true_with_a_dangling_pointer_falls_back_to_the_newest_checkpoint(tmp_path):
    make_runner(tmp_path, length=2, validate=False).train()
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_9.pth'))  # deleted file
    assert find_last_checkpoint(tmp_path).name == 'epoch_2.pth'
    resumed = make_runner(tmp_path, length=3, validate=False, resume=True)
    resumed.train()
    assert resumed.started_at == 10  # from epoch_2.pth
    assert resumed.epoch == 3 and resumed.iter == 15


def test_resume_true_with_load_from_resumes_from_load_from(tmp_path):
    full = make_runner(tmp_path / 'full', length=3, validate=False)
    full.train()
    make_runner(tmp_path / 'part', length=2, validate=False).train()
    # MMEngine's rule: resume=True and load_from=X resume from X (here, in another
    # work_dir with no checkpoint of its own).
    resumed = make_runner(tmp_path / 'resumed', length=3, validate=False, resume=True,
                          load_from=str(tmp_path / 'part' / 'epoch_2.pth'))
    resumed.train()
    assert resumed.started_at == 10 and resumed.epoch == 3 and resumed.iter == 15
    expected = {step: loss for step, loss in logged_losses(tmp_path / 'full').items()
                if step > 10}
    assert logged_losses(tmp_path / 'resumed') == expected
    a, b = params_of(full), params_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_path_and_another_load_from_are_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"resume='a.pth' and load_from='b.pth' name "
                                         r"different checkpoints"):
        make_runner(tmp_path, resume='a.pth', load_from='b.pth')


def test_resume_finds_checkpoints_of_a_relative_out_dir_from_another_directory(
        tmp_path, monkeypatch):
    def runner(length, cwd, **kwargs):
        monkeypatch.chdir(cwd)
        return make_runner(tmp_path / 'work', length=length, validate=False, default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1, out_dir='ck')), **kwargs)

    (tmp_path / 'first').mkdir()
    (tmp_path / 'second').mkdir()
    runner(2, tmp_path / 'first').train()
    # out_dir/<last part of work_dir>, as MMEngine's CheckpointHook.
    written = tmp_path / 'first' / 'ck' / 'work' / 'epoch_2.pth'
    pointer = (tmp_path / 'work' / 'last_checkpoint').read_text().strip()
    assert Path(pointer).is_absolute() and Path(pointer) == written.resolve()
    monkeypatch.chdir(tmp_path / 'second')
    assert find_last_checkpoint(tmp_path / 'work') == written.resolve()
    resumed = runner(3, tmp_path / 'second', resume=True)
    resumed.train()
    assert resumed.started_at == 10 and resumed.iter == 15


class Diverging(NeuralNetwork):
    """Its loss is NaN from the 4th forward pass on."""

    calls = 0

    def forward(self, img, label, mode='tensor'):
        out = super().forward(img, label, mode)
        if mode == 'loss':
            type(self).calls += 1
            if type(self).calls >= 4:
                out['loss'] = out['loss'] * float('nan')
        return out


class BreakWeights(Hook):
    """A broken update with a finite loss: a weight becomes NaN after iteration 4."""

    priority = 'NORMAL'  # before the CheckpointHook (VERY_LOW)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == 4:
            with torch.no_grad():
                runner.model.linear_relu_stack[4].bias[3] = float('nan')


@pytest.mark.parametrize('broken', ['loss', 'weights'])
def test_a_nan_state_is_never_written_and_last_checkpoint_stays_good(tmp_path, broken):
    from fengine.runner import NonFiniteLossError

    if broken == 'loss':
        model, hooks = fresh_model(type('Div', (Diverging,), dict(calls=0))), []
    else:
        model, hooks = fresh_model(), [BreakWeights()]
    runner = make_runner(tmp_path, model=model, by_epoch=False, length=10, validate=False,
                         custom_hooks=hooks, default_hooks=dict(
                             logger=dict(type='LoggerHook', interval=5),
                             checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)))
    expected = (r'loss is not finite at iteration 4: loss=nan' if broken == 'loss' else
                r'after iteration 4 in linear_relu_stack.4.bias; checkpoint iter_4.pth was '
                r'not written')
    with pytest.raises(NonFiniteLossError, match=expected):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == [
        'iter_1.pth', 'iter_2.pth', 'iter_3.pth']
    assert find_last_checkpoint(tmp_path).name == 'iter_3.pth'
    state = torch.load(tmp_path / 'iter_3.pth', weights_only=True)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
