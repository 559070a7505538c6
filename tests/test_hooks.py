"""The default hooks: RuntimeInfoHook, LoggerHook (on small runs and stand-in runners)
and CheckpointHook."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fengine import Runner
from fengine.hooks import CheckpointHook, LoggerHook, RuntimeInfoHook
from fengine.model import BaseModel
from fengine.runner.message_hub import MessageHub
from fengine.visualization import BaseVisBackend, TensorboardVisBackend, Visualizer

from seed_models import FashionMnistMetric, NeuralNetwork


class ClosingBackend(BaseVisBackend):
    """Records what reaches it, close() included."""

    def __init__(self, save_dir) -> None:
        super().__init__(save_dir)
        self.calls: list[str] = []

    def add_scalars(self, scalar_dict, step=0, **kwargs):
        self.calls.append('add_scalars')

    def close(self) -> None:
        self.calls.append('close')


# -- LoggerHook: closing the visualizer --------------------------------------------------
def test_logger_hook_after_run_closes_every_backend(tmp_path):
    backend = ClosingBackend(tmp_path)
    runner = SimpleNamespace(visualizer=Visualizer(vis_backends=[backend]))
    runner.visualizer.add_scalars({'loss': 1.0})

    LoggerHook().after_run(runner)

    assert backend.calls == ['add_scalars', 'close']


def test_logger_hook_after_run_releases_the_tensorboard_writer(tmp_path):
    pytest.importorskip('tensorboard')
    board = TensorboardVisBackend(tmp_path)
    runner = SimpleNamespace(visualizer=Visualizer(vis_backends=[board]))
    runner.visualizer.add_scalar('loss', 1.0, step=1)
    assert board._writer is not None  # an open event file

    LoggerHook().after_run(runner)

    assert board._writer is None


def test_logger_hook_after_run_without_a_visualizer_does_nothing():
    LoggerHook().after_run(SimpleNamespace())
    LoggerHook().after_run(SimpleNamespace(visualizer=None))


def test_a_runner_closes_its_visualizer_at_the_end_of_a_run(tmp_path):
    backend = ClosingBackend(tmp_path / 'mine')
    data = TensorDataset(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    runner = Runner(model=NeuralNetwork(), work_dir=tmp_path, visualizer=[backend],
                    val_dataloader=DataLoader(data, batch_size=4), val_cfg=dict(),
                    val_evaluator=dict(metrics=FashionMnistMetric()))
    runner.val()

    assert backend.calls[-1] == 'close'


# -- CheckpointHook: arguments checked when it is built ----------------------------------
def test_a_save_best_key_without_a_known_rule_is_refused_when_built():
    # Not after the first validation, an epoch (or more) of training later.
    with pytest.raises(ValueError, match=r"larger or smaller 'score' is better; pass "
                                         r"rule='greater' or rule='less'"):
        CheckpointHook(save_best='score')


@pytest.mark.parametrize('key, rule', [('accuracy/top1', 'greater'), ('val/loss', 'less'),
                                       ('mIoU', 'greater')])
def test_the_rule_of_a_save_best_key_is_inferred_when_built(key, rule):
    assert CheckpointHook(save_best=key).rule == rule


def test_a_given_rule_or_auto_needs_no_inference_when_built():
    assert CheckpointHook(save_best='score', rule='less').rule == 'less'
    assert CheckpointHook(save_best='auto').rule is None  # the key is known only later
    assert CheckpointHook().rule is None


@pytest.mark.parametrize('max_keep_ckpts', [-1, 1, 5])
def test_max_keep_ckpts_takes_minus_one_or_a_positive_count(max_keep_ckpts):
    assert CheckpointHook(max_keep_ckpts=max_keep_ckpts).max_keep_ckpts == max_keep_ckpts


@pytest.mark.parametrize('max_keep_ckpts', [0, -2, -10])
def test_max_keep_ckpts_of_zero_or_another_negative_is_refused(max_keep_ckpts):
    with pytest.raises(ValueError, match=r'^CheckpointHook max_keep_ckpts must be -1 \(keep '
                                         r'all\) or >= 1 \(keep the newest N\), but got '
                                         rf'{max_keep_ckpts}$'):
        CheckpointHook(max_keep_ckpts=max_keep_ckpts)


@pytest.mark.parametrize('max_keep_ckpts', [2.0, '3', True, None])
def test_max_keep_ckpts_that_is_not_an_int_is_refused(max_keep_ckpts):
    with pytest.raises(TypeError, match=r'max_keep_ckpts must be an int \(-1: keep all, or '
                                        r'N >= 1: keep the newest N\), but got '
                                        rf'{type(max_keep_ckpts).__name__}: '):
        CheckpointHook(max_keep_ckpts=max_keep_ckpts)


# -- small runs -----------------------------------------------------------------------------
class ToyModel(BaseModel):
    """One weight: a run of a few iterations takes milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, x, y, mode='tensor'):
        out = self.linear(x)
        if mode == 'loss':
            return {'loss': (out - y).pow(2).mean()}
        return out


def toy_data(n: int, batch_size: int = 2) -> DataLoader:
    x = torch.linspace(0, 1, n).reshape(n, 1)
    return DataLoader(TensorDataset(x, 2 * x), batch_size=batch_size)


def toy_runner(tmp_path, batches=3, epochs=2, by_epoch=True, logger=None, **kwargs):
    train_cfg = dict(by_epoch=True, max_epochs=epochs) if by_epoch else \
        dict(by_epoch=False, max_iters=epochs)
    args = dict(model=ToyModel(), work_dir=tmp_path, train_dataloader=toy_data(2 * batches),
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=train_cfg,
                default_hooks=dict(checkpoint=None, logger=logger or dict(type='LoggerHook')),
                randomness=dict(seed=0))
    args.update(kwargs)
    return Runner(**args)


def scalar_lines(runner) -> list[dict]:
    path = runner.log_dir / 'vis_data' / 'scalars.json'
    return [json.loads(line) for line in path.read_text().splitlines()]


def log_text(runner) -> str:
    return (runner.log_dir / f'{runner.timestamp}.log').read_text()


# -- RuntimeInfoHook ------------------------------------------------------------------------
def test_the_runtime_info_hook_is_a_very_high_default_hook(tmp_path):
    runner = toy_runner(tmp_path)
    hooks = [h for h in runner.hooks if isinstance(h, RuntimeInfoHook)]
    assert len(hooks) == 1 and hooks[0].priority == 'VERY_HIGH'
    assert runner.hooks[0] is hooks[0]


def test_the_message_hub_holds_the_runs_state_after_training(tmp_path):
    runner = toy_runner(tmp_path)
    runner.train()
    hub = runner.message_hub
    assert (hub.get_info('epoch'), hub.get_info('iter')) == (1, 5)  # the last epoch and iter
    assert (hub.get_info('max_epochs'), hub.get_info('max_iters')) == (2, 6)
    assert hub.get_info('seed') == 0 and hub.get_info('experiment_name') == runner.experiment_name
    assert hub.get_info('loop_stage') is None  # popped after training
    assert len(hub.history('train/loss')) == 6 and hub.history('train/lr') == [0.1] * 6
    assert 'train/momentum' not in hub.log_scalars  # SGD without momentum


def test_the_dataset_meta_is_recorded_before_training():
    class Data(TensorDataset):
        metainfo = {'classes': ('a', 'b')}

    runner = SimpleNamespace(message_hub=MessageHub('meta'), epoch=0, iter=0, max_epochs=1,
                             max_iters=3, train_dataloader=DataLoader(Data(torch.ones(3))))
    RuntimeInfoHook().before_train(runner)
    assert runner.message_hub.get_info('dataset_meta') == {'classes': ('a', 'b')}
    assert runner.message_hub.get_info('loop_stage') == 'train'


def optimizer_runner(groups, name='hyper'):
    return SimpleNamespace(message_hub=MessageHub(name), iter=0,
                           optim_wrapper=SimpleNamespace(param_groups=groups))


def test_lr_and_momentum_of_the_first_group_are_recorded_per_iteration():
    runner = optimizer_runner([{'lr': 0.5, 'betas': (0.9, 0.999)}, {'lr': 0.25}])
    hook = RuntimeInfoHook()
    hook.before_train_iter(runner, 0)
    runner.optim_wrapper.param_groups[0]['lr'] = 0.4
    hook.before_train_iter(runner, 1)
    assert runner.message_hub.history('train/lr') == [0.5, 0.4]
    assert runner.message_hub.history('train/momentum') == [0.9, 0.9]


def test_a_tensor_lr_is_recorded_without_reading_it_and_copied_only_when_it_changes(
        monkeypatch):
    lr = torch.tensor(0.5)
    runner = optimizer_runner([{'lr': lr, 'momentum': torch.tensor(0.9)}], 'tensor_lr')
    hook = RuntimeInfoHook()
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, 'item', lambda t: reads.append('item'))
    monkeypatch.setattr(torch.Tensor, 'tolist', lambda t: reads.append('tolist') or original(t))
    hook.before_train_iter(runner, 0)
    hook.before_train_iter(runner, 1)
    lr.fill_(0.25)  # a scheduler changes it in place
    hook.before_train_iter(runner, 2)
    assert reads == []
    pending = [value.untyped_storage().data_ptr()
               for value, _ in runner.message_hub.get_scalar('train/lr')._pending]
    assert pending[0] == pending[1] != pending[2]  # one copy per value the lr took
    assert runner.message_hub.history('train/lr') == [0.5, 0.5, 0.25]
    assert reads == ['tolist']  # every waiting value, in one read


def test_several_optimizers_record_their_lr_by_name():
    wrappers = {'generator': SimpleNamespace(param_groups=[{'lr': 0.1, 'momentum': 0.5}]),
                'discriminator': SimpleNamespace(param_groups=[{'lr': 0.2, 'momentum': 0}])}
    runner = SimpleNamespace(message_hub=MessageHub('gan'), iter=0,
                             optim_wrapper=SimpleNamespace(optim_wrappers=wrappers))
    RuntimeInfoHook().before_train_iter(runner, 0)
    assert set(runner.message_hub.log_scalars) == {
        'train/generator.lr', 'train/generator.momentum', 'train/discriminator.lr'}


def test_the_step_outputs_are_recorded_as_train_scalars_without_reading_them(monkeypatch):
    runner = SimpleNamespace(message_hub=MessageHub('outputs'))
    monkeypatch.setattr(torch.Tensor, 'item', lambda t: pytest.fail('read on the host'))
    RuntimeInfoHook().after_train_iter(runner, 0, outputs={
        'loss': torch.tensor(1.5), 'per_class': torch.tensor([1.0, 3.0]), 'acc': 0.5,
        'note': 'text'})
    assert set(runner.message_hub.log_scalars) == {'train/loss', 'train/per_class', 'train/acc'}
    assert runner.message_hub.history('train/per_class') == [2.0]  # a mean


def test_metrics_go_to_the_hub_as_scalars_or_facts_and_the_stage_comes_back():
    runner = SimpleNamespace(message_hub=MessageHub('metrics'))
    hook = RuntimeInfoHook()
    runner.message_hub.update_info('loop_stage', 'train')
    hook.before_val(runner)
    assert runner.message_hub.get_info('loop_stage') == 'val'
    hook.after_val_epoch(runner, metrics={'accuracy': torch.tensor(0.75),
                                          'confusion': torch.eye(2)})
    hook.after_val(runner)
    assert runner.message_hub.get_info('loop_stage') == 'train'
    assert runner.message_hub.history('val/accuracy') == [0.75]
    assert torch.equal(runner.message_hub.get_info('val/confusion'), torch.eye(2))
    hook.before_test(runner)
    hook.after_test_epoch(runner, metrics={'accuracy': 0.5})
    hook.after_test(runner)
    assert runner.message_hub.history('test/accuracy') == [0.5]
    assert runner.message_hub.get_info('loop_stage') is None


# -- LoggerHook: when lines are written ----------------------------------------------------
def test_an_epoch_shorter_than_the_interval_still_logs_its_last_iteration(tmp_path):
    pytest.importorskip('tensorboard')
    runner = toy_runner(tmp_path, batches=3, epochs=2, visualizer=dict(vis_backends=[
        dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]))
    runner.train()
    log = log_text(runner)
    assert 'Epoch(train) [1][3/3]  lr: 1.0000e-01' in log
    assert 'Epoch(train) [2][3/3]  lr: 1.0000e-01' in log
    losses = [line for line in scalar_lines(runner) if 'loss' in line]
    assert [line['step'] for line in losses] == [3, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (runner.log_dir / 'vis_data').rglob('events.out.*')}
    board = EventAccumulator(str(events))
    board.Reload()
    assert 'loss' in board.Tags()['scalars']
    assert [e.step for e in board.Scalars('loss')] == [3, 6]


@pytest.mark.parametrize('ignore_last, steps', [(True, [2, 4, 7, 9]),
                                                (False, [2, 4, 5, 7, 9, 10])])
def test_ignore_last_skips_the_incomplete_interval_at_the_end_of_an_epoch(
        tmp_path, ignore_last, steps):
    runner = toy_runner(tmp_path, batches=5, epochs=2, logger=dict(
        type='LoggerHook', interval=2, ignore_last=ignore_last))
    runner.train()
    assert [line['step'] for line in scalar_lines(runner) if 'loss' in line] == steps


def test_an_iteration_based_run_shorter_than_the_interval_logs_its_last_iteration(tmp_path):
    runner = toy_runner(tmp_path, batches=3, epochs=4, by_epoch=False)
    runner.train()
    assert 'Iter(train) [4/4]  lr: 1.0000e-01' in log_text(runner)
    assert [line['step'] for line in scalar_lines(runner) if 'loss' in line] == [4]


def test_the_experiment_name_is_logged_every_interval_exp_name_and_each_epoch_end(tmp_path):
    runner = toy_runner(tmp_path, batches=3, epochs=2, logger=dict(
        type='LoggerHook', interval=1, interval_exp_name=2), experiment_name='toy')
    runner.train()
    # Iterations 2, 3 (end of epoch 1), 4 and 6 (also the end of epoch 2).
    assert log_text(runner).count('Exp name: toy') == 4


def test_training_lines_and_scalars_have_mmengines_keys(tmp_path):
    runner = toy_runner(tmp_path, batches=2, epochs=1, logger=dict(type='LoggerHook',
                                                                   interval=1))
    runner.train()
    line = [x for x in log_text(runner).splitlines() if 'Epoch(train) [1][2/2]' in x][0]
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\]  lr: 1\.0000e-01  eta: 0:00:00  '
                     r'time: \d\.\d{4}  data_time: \d\.\d{4}  loss: \d\.\d{4}$', line), line
    assert set(scalar_lines(runner)[-1]) == {'lr', 'time', 'data_time', 'loss', 'epoch',
                                             'iter', 'step'}
    same = runner.log_dir / 'vis_data' / f'{runner.timestamp}.json'  # MMEngine's copy
    assert same.read_text() == (runner.log_dir / 'vis_data' / 'scalars.json').read_text()


def evaluated_runner(tmp_path, **kwargs):
    from fengine.evaluator import BaseMetric

    class Count(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(len(data_samples))

        def compute_metrics(self, results):
            return {'count': sum(results)}

    return toy_runner(tmp_path, val_dataloader=toy_data(8), val_cfg=dict(),
                      val_evaluator=Count(), test_dataloader=toy_data(8), test_cfg=dict(),
                      test_evaluator=Count(), train_cfg=kwargs.pop('train_cfg', dict(
                          by_epoch=True, max_epochs=2, val_interval=1)), **kwargs)


def test_validation_logs_progress_every_interval_and_its_metrics(tmp_path):
    runner = evaluated_runner(tmp_path, logger=dict(type='LoggerHook', interval=2))
    runner.train()
    log = log_text(runner)
    assert 'Epoch(val) [1][2/4]    eta: ' in log
    assert 'Epoch(val) [2][4/4]    count: 8  data_time: ' in log
    val = [line for line in scalar_lines(runner) if 'count' in line]
    assert [line['step'] for line in val] == [1, 2]  # by epoch


def test_log_metric_by_epoch_false_uses_the_iteration_as_the_step(tmp_path):
    runner = evaluated_runner(tmp_path, logger=dict(type='LoggerHook',
                                                    log_metric_by_epoch=False))
    runner.train()
    assert [x['step'] for x in scalar_lines(runner) if 'count' in x] == [3, 6]


def test_a_test_run_logs_its_metrics_and_writes_them_as_json(tmp_path):
    runner = evaluated_runner(tmp_path)
    runner.test()
    assert 'Epoch(test) [4/4]    count: 8  data_time: ' in log_text(runner)
    results = json.loads((runner.log_dir / f'{runner.timestamp}.json').read_text())
    assert results['count'] == 8 and set(results) == {'count', 'data_time', 'time'}


# -- LoggerHook: copying the logs ------------------------------------------------------------
@pytest.mark.parametrize('keep_local', [True, False])
def test_logs_are_copied_to_out_dir_at_the_end_of_the_run(tmp_path, keep_local):
    out = tmp_path / 'elsewhere'
    runner = toy_runner(tmp_path / 'work' / 'exp', logger=dict(
        type='LoggerHook', out_dir=str(out), keep_local=keep_local))
    runner.train()
    copied = out / 'exp'
    log_name = f'{runner.timestamp}.log'
    assert 'Epoch(train) [2][3/3]' in (copied / log_name).read_text()
    assert (copied / 'vis_data' / 'scalars.json').is_file()
    assert (runner.log_dir / log_name).exists() is keep_local


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(interval=0), ValueError, 'LoggerHook interval must be a positive int, but got 0'),
    (dict(ignore_last='no'), TypeError, "LoggerHook ignore_last must be a bool, but got 'no'"),
    (dict(interval_exp_name=-5), ValueError, 'interval_exp_name must be a positive int'),
    (dict(keep_local=None), TypeError, 'LoggerHook keep_local must be a bool'),
    (dict(out_dir=3), TypeError, 'LoggerHook out_dir must be a str or a path, but got int'),
    (dict(out_dir='s3://bucket/logs'), ValueError,
     r"out_dir='s3://bucket/logs' is a remote location; fengine copies logs to local folders"),
    (dict(out_dir='logs', backend_args=dict(backend='petrel')), ValueError,
     r"backend_args=\{'backend': 'petrel'\} is not supported"),
    (dict(file_client_args=dict(backend='disk')), ValueError, 'file_client_args='),
    (dict(out_suffix=['.log', 3]), TypeError, 'out_suffix must be a str or a list of str'),
])
def test_bad_logger_hook_arguments_are_refused_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        LoggerHook(**kwargs)


def test_a_compiled_run_reads_the_device_once_per_log_line(tmp_path, monkeypatch):
    runner = toy_runner(tmp_path, batches=6, epochs=1, compile=dict(backend='aot_eager'),
                        logger=dict(type='LoggerHook', interval=3),
                        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    reads = []
    for name in ('item', 'tolist', '__float__', '__bool__', '__int__'):
        original = getattr(torch.Tensor, name)

        def counted(tensor, *args, _original=original, _name=name, **kwargs):
            # Float values only: the DataLoader draws its integer base seed on the host.
            if tensor.is_floating_point():
                reads.append((runner.iter, _name))
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    runner.train()
    # Iterations 3 and 6 write a line (index 2 and 5): one read each, of the losses,
    # the lr and the momentum of three iterations at once.
    assert reads == [(2, 'tolist'), (5, 'tolist')]
    assert runner.message_hub.history('train/momentum') == pytest.approx([0.9] * 6)
