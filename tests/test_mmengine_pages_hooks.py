"""MMEngine's pages 'Hook', 'Setting the Frequency of Logging, Checkpoint Saving, and
Validation' and 'Resume Training', run with fengine.

Each test does what a snippet of the page does, on a tiny model and data (one
iteration per epoch, so that the pages' 20-epoch and 10000-iteration examples run in
seconds), and checks what the page says happens. Snippets that need another area of
fengine are left out here: ``LoggerHook(interval=20)`` (logging) and
``RuntimeInfoHook`` (logging; used below only where it is registered).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from fengine.evaluator import BaseMetric
from fengine.hooks import PRIORITIES, EMAHook, Hook, get_priority
from fengine.model import StochasticWeightAverage
from fengine.registry import HOOKS
from fengine.runner import Runner

from hook_models import Scores, data, make_runner

ONE_BATCH = dict(dataset=data(8), batch_size=8)  # one iteration per epoch


def names(folder: Path, pattern: str = '*.pth') -> list[str]:
    return sorted((p.name for p in folder.glob(pattern)),
                  key=lambda n: (len(n), n))


@pytest.fixture
def fresh_hooks():
    """The page's own hook classes are registered on HOOKS for one test only."""
    saved = dict(HOOKS._module_dict)
    yield HOOKS
    HOOKS._module_dict.clear()
    HOOKS._module_dict.update(saved)


# -- 'Hook': built-in hooks, priorities, default and custom hooks ---------------------
def test_the_priority_list_of_the_page():
    assert PRIORITIES == dict(HIGHEST=0, VERY_HIGH=10, HIGH=30, ABOVE_NORMAL=40, NORMAL=50,
                              BELOW_NORMAL=60, LOW=70, VERY_LOW=90, LOWEST=100)


def test_default_and_custom_hooks_have_the_priorities_of_the_pages_tables(tmp_path):
    default_hooks = dict(
        timer=dict(type='IterTimerHook'),
        sampler_seed=dict(type='DistSamplerSeedHook'),
        logger=dict(type='LoggerHook'),
        param_scheduler=dict(type='ParamSchedulerHook'),
        checkpoint=dict(type='CheckpointHook', interval=1),
    )
    if 'RuntimeInfoHook' in HOOKS:
        default_hooks['runtime_info'] = dict(type='RuntimeInfoHook')
    custom_hooks = [dict(type='EmptyCacheHook'), dict(type='EMAHook'),
                    dict(type='SyncBuffersHook')]
    runner = make_runner(tmp_path, epochs=1, train_dataloader=ONE_BATCH)
    runner = Runner(model=runner.model, work_dir=tmp_path, train_dataloader=ONE_BATCH,
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    train_cfg=dict(by_epoch=True, max_epochs=1),
                    default_hooks=default_hooks, custom_hooks=custom_hooks)
    runner.train()
    table = dict(RuntimeInfoHook=10, IterTimerHook=50, DistSamplerSeedHook=50, LoggerHook=60,
                 ParamSchedulerHook=70, CheckpointHook=90, EMAHook=50, EmptyCacheHook=50,
                 SyncBuffersHook=50)
    got = {type(h).__name__: get_priority(h.priority) for h in runner.hooks}
    assert got == {k: v for k, v in table.items() if k in got} and len(got) >= 8
    order = [get_priority(h.priority) for h in runner.hooks]
    assert order == sorted(order)  # a smaller number is called earlier
    assert (tmp_path / 'epoch_1.pth').is_file()


def test_checkpoint_every_5_of_20_epochs(tmp_path):
    make_runner(tmp_path, epochs=20, train_dataloader=ONE_BATCH,
                checkpoint=dict(type='CheckpointHook', interval=5, by_epoch=True)).train()
    assert names(tmp_path) == ['epoch_5.pth', 'epoch_10.pth', 'epoch_15.pth', 'epoch_20.pth']


def test_checkpoint_every_5_iterations(tmp_path):
    make_runner(tmp_path, iters=10, train_dataloader=ONE_BATCH,
                checkpoint=dict(type='CheckpointHook', interval=5, by_epoch=False)).train()
    assert names(tmp_path) == ['iter_5.pth', 'iter_10.pth']


def test_max_keep_ckpts_2_keeps_epochs_15_and_20(tmp_path):
    make_runner(tmp_path, epochs=20, train_dataloader=ONE_BATCH, checkpoint=dict(
        type='CheckpointHook', interval=5, max_keep_ckpts=2)).train()
    assert names(tmp_path) == ['epoch_15.pth', 'epoch_20.pth']


def test_save_best_auto_judges_by_the_first_metric(tmp_path):
    make_runner(tmp_path, epochs=3, train_dataloader=ONE_BATCH, validate=True,
                val_evaluator=Scores([{'top-1': 1.0, 'loss': 3.0}, {'top-1': 3.0, 'loss': 9.0},
                                      {'top-1': 2.0, 'loss': 1.0}]),
                checkpoint=dict(type='CheckpointHook', save_best='auto')).train()
    assert names(tmp_path, 'best_*') == ['best_top-1_epoch_2.pth']


def test_save_best_top_1_with_rule_greater(tmp_path):
    make_runner(tmp_path, epochs=3, train_dataloader=ONE_BATCH, validate=True,
                val_evaluator=Scores([{'top-1': 3.0}, {'top-1': 1.0}, {'top-1': 2.0}]),
                checkpoint=dict(type='CheckpointHook', save_best='top-1',
                                rule='greater')).train()
    assert names(tmp_path, 'best_*') == ['best_top-1_epoch_1.pth']


def test_out_dir_changes_where_checkpoints_go(tmp_path):
    make_runner(tmp_path / 'work_dir', epochs=5, train_dataloader=ONE_BATCH, checkpoint=dict(
        type='CheckpointHook', interval=5, out_dir=str(tmp_path / 'directory'))).train()
    assert names(tmp_path / 'directory' / 'work_dir') == ['epoch_5.pth']


def test_published_keys_give_publishable_best_and_last_checkpoints(tmp_path):
    make_runner(tmp_path, epochs=2, train_dataloader=ONE_BATCH, validate=True,
                val_evaluator=Scores([dict(accuracy=0.5), dict(accuracy=0.7)]),
                checkpoint=dict(type='CheckpointHook', interval=1, save_best='accuracy',
                                rule='less', published_keys=['meta', 'state_dict'])).train()
    published = names(tmp_path, '*-*.pth')
    # rule='less': the best accuracy is the smaller one, of epoch 1.
    assert [p.rsplit('-', 1)[0] for p in published] == ['epoch_2', 'best_accuracy_epoch_1']
    for name in published:
        digest = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()[:8]
        assert name.endswith(f'-{digest}.pth')
        checkpoint = torch.load(tmp_path / name, weights_only=True)
        assert sorted(checkpoint) == ['meta', 'state_dict']


@pytest.mark.parametrize('interval, epochs', [(1, [5, 6, 7, 8, 9, 10]), (2, [5, 7, 9, 10])])
def test_save_begin_5_of_10_epochs(tmp_path, interval, epochs):
    make_runner(tmp_path, epochs=10, train_dataloader=ONE_BATCH, checkpoint=dict(
        type='CheckpointHook', interval=interval, save_begin=5)).train()
    # The page lists 5, 7, 9 for interval=2; epoch 10 is save_last's (on by default).
    assert names(tmp_path) == [f'epoch_{e}.pth' for e in epochs]


def test_param_scheduler_iter_timer_and_sampler_seed_hooks_need_no_configuration(tmp_path):
    lrs = []

    class Lr(Hook):
        def before_train_epoch(self, runner):
            lrs.append(runner.optim_wrapper.get_lr()['lr'][0])

    runner = make_runner(tmp_path, epochs=2, train_dataloader=ONE_BATCH, custom_hooks=[Lr()],
                         param_scheduler=dict(type='MultiStepLR', milestones=[1], gamma=0.1))
    runner.train()
    names_ = [type(h).__name__ for h in runner.hooks]
    assert {'ParamSchedulerHook', 'IterTimerHook', 'DistSamplerSeedHook'} <= set(names_)
    assert lrs == [0.1, pytest.approx(0.01)]  # stepped after the first epoch


def test_ema_hook_validates_with_the_average_and_takes_other_ema_types(tmp_path):
    runner = make_runner(tmp_path, epochs=2, validate=True, custom_hooks=[dict(type='EMAHook')])
    runner.train()
    runner = make_runner(tmp_path, epochs=1, custom_hooks=[
        dict(type='EMAHook', ema_type='StochasticWeightAverage')])
    runner.train()
    hook = [h for h in runner.hooks if isinstance(h, EMAHook)][0]
    assert isinstance(hook.ema_model, StochasticWeightAverage)
    assert hook.ema_model.steps.item() == 4


def test_empty_cache_hook_after_epoch(tmp_path):
    make_runner(tmp_path, epochs=2, custom_hooks=[
        dict(type='EmptyCacheHook', after_epoch=True)]).train()


def test_sync_buffers_hook_in_a_single_process_run(tmp_path):
    runner = make_runner(tmp_path, epochs=1, custom_hooks=[dict(type='SyncBuffersHook')])
    runner.train()
    assert runner.epoch == 1


def test_profiler_hook_with_tb_trace_saves_under_work_dir_timestamp(tmp_path):
    runner = make_runner(tmp_path, epochs=1, custom_hooks=[
        dict(type='ProfilerHook', on_trace_ready=dict(type='tb_trace'))])
    runner.train()
    assert list((tmp_path / runner.timestamp / 'tf_tracing_logs').iterdir())


def test_the_custom_check_invalid_loss_hook_of_the_page(tmp_path, fresh_hooks):
    # The page's class, registered as the page does (replacing fengine's own hook of
    # that name for this test).
    @fresh_hooks.register_module(force=True)
    class CheckInvalidLossHook(Hook):
        def __init__(self, interval=50):
            self.interval = interval
            self.checked = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if self.every_n_train_iters(runner, self.interval):
                self.checked.append(runner.iter)
                if not torch.isfinite(outputs['loss']):
                    raise FloatingPointError('loss become infinite or NaN!')

    custom_hooks = [dict(type='CheckInvalidLossHook', interval=2, priority='ABOVE_NORMAL')]
    runner = make_runner(tmp_path, iters=6, custom_hooks=custom_hooks)
    runner.train()
    hook = [h for h in runner.hooks if isinstance(h, CheckInvalidLossHook)][0]
    assert hook.checked == [1, 3, 5] and hook.priority == 'ABOVE_NORMAL'

    class Early(CheckInvalidLossHook):
        priority = 'ABOVE_NORMAL'  # set when defining the class

    runner = make_runner(tmp_path / 'b', iters=2, custom_hooks=[Early(interval=1)])
    names_ = [type(h).__name__ for h in runner.hooks]
    assert names_.index('Early') < names_.index('LoggerHook' if 'LoggerHook' in names_
                                                  else 'ParamSchedulerHook')


def test_fengines_check_invalid_loss_hook_takes_the_pages_config(tmp_path):
    runner = make_runner(tmp_path, iters=4, custom_hooks=[
        dict(type='CheckInvalidLossHook', interval=50)])
    runner.train()
    assert runner.iter == 4


# -- 'Setting the Frequency of Logging, Checkpoint Saving, and Validation' -------------
class Count(BaseMetric):
    def __init__(self, calls):
        super().__init__()
        self.calls = calls

    def process(self, data_batch, data_samples) -> None:
        self.results.append(0)

    def compute_metrics(self, results) -> dict:
        self.calls.append(1)
        return dict(accuracy=1.0)


@pytest.mark.parametrize('train_cfg, validations', [
    (dict(by_epoch=True, max_epochs=5, val_interval=1), 5),
    (dict(by_epoch=True, max_epochs=5), 5),   # val_interval defaults to 1 epoch
    (dict(by_epoch=False, max_iters=100, val_interval=20), 5),
])
def test_val_interval_counts_epochs_or_iterations(tmp_path, train_cfg, validations):
    calls = []
    runner = Runner(model=make_runner(tmp_path, epochs=1).model, work_dir=tmp_path,
                    train_dataloader=ONE_BATCH, train_cfg=train_cfg,
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001, momentum=0.9)),
                    val_dataloader=ONE_BATCH, val_cfg=dict(), val_evaluator=Count(calls),
                    default_hooks=dict(logger=None, checkpoint=None))
    runner.train()
    assert len(calls) == validations


def test_val_interval_of_an_iteration_based_run_defaults_to_1000(tmp_path):
    runner = Runner(model=make_runner(tmp_path, epochs=1).model, work_dir=tmp_path,
                    train_dataloader=ONE_BATCH, train_cfg=dict(by_epoch=False, max_iters=10000),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001, momentum=0.9)),
                    val_dataloader=ONE_BATCH, val_cfg=dict(), val_evaluator=Count([]))
    assert runner.train_loop.val_interval == 1000


def test_checkpoint_interval_2_epochs_and_by_epoch_false_in_iterations(tmp_path):
    make_runner(tmp_path / 'e', epochs=5, train_dataloader=ONE_BATCH,
                checkpoint=dict(type='CheckpointHook', interval=2)).train()
    assert names(tmp_path / 'e') == ['epoch_2.pth', 'epoch_4.pth', 'epoch_5.pth']
    # The page's interval=500 of 10000 iterations, scaled down by 100.
    make_runner(tmp_path / 'i', iters=10, train_dataloader=ONE_BATCH,
                checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5)).train()
    assert names(tmp_path / 'i') == ['iter_5.pth', 'iter_10.pth']


# -- 'Resume Training' ------------------------------------------------------------------
def test_resume_true_continues_from_the_latest_checkpoint_in_work_dir(tmp_path):
    make_runner(tmp_path, epochs=2, checkpoint=dict(type='CheckpointHook', interval=1)).train()
    runner = make_runner(tmp_path, epochs=3, resume=True,
                         checkpoint=dict(type='CheckpointHook', interval=1))
    runner.train()
    assert runner.epoch == 3 and runner.iter == 12  # epochs 1-2 were not trained again
    saved = torch.load(tmp_path / 'epoch_3.pth', weights_only=True)
    assert saved['meta']['epoch'] == 3 and 'optimizer' in saved


def test_resume_true_without_a_checkpoint_starts_a_new_training(tmp_path):
    runner = make_runner(tmp_path, epochs=1, resume=True)
    runner.train()
    assert runner.iter == 4


def test_resume_with_load_from_continues_from_that_checkpoint(tmp_path):
    make_runner(tmp_path, epochs=3, checkpoint=dict(type='CheckpointHook', interval=1)).train()
    runner = make_runner(tmp_path / 'again', epochs=3, resume=True,
                         load_from=str(tmp_path / 'epoch_2.pth'))
    runner.train()
    assert runner.iter == 12
    first = torch.load(tmp_path / 'epoch_3.pth', weights_only=True)['state_dict']
    assert all(torch.equal(first[k], v) for k, v in runner.model.state_dict().items())


def test_load_from_alone_loads_the_weights_and_trains_from_the_start(tmp_path):
    make_runner(tmp_path, epochs=1, checkpoint=dict(type='CheckpointHook', interval=1)).train()
    runner = make_runner(tmp_path / 'fine_tune', epochs=1,
                         load_from=str(tmp_path / 'epoch_1.pth'))
    loaded = []

    class Start(Hook):
        def before_train(self, runner):
            loaded.append((runner.iter, runner.model.fc.weight.detach().clone()))

    runner.register_hook(Start())
    runner.train()
    saved = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['state_dict']
    assert loaded[0][0] == 0 and torch.equal(loaded[0][1], saved['fc.weight'])
