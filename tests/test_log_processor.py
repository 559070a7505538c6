"""Spec for ``LogProcessor`` (MMEngine: ``mmengine.runner.LogProcessor``): its lines,
its scalars and its checks of ``custom_cfg``."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fengine.registry import LOG_PROCESSORS
from fengine.runner import HistoryBuffer, LogProcessor, MessageHub


def loop(by_epoch: bool, length: int):
    return SimpleNamespace(by_epoch=by_epoch, dataloader=[None] * length)


def stub_runner(by_epoch=True, train_len=25, max_epochs=1, epoch=0, iteration=9,
                val_len=4, test_len=3, trained=True, eta=12.0):
    """What LogProcessor reads from a runner, with a message hub of known scalars."""
    hub = MessageHub(f'processor_{id(object())}')
    train_loop = loop(by_epoch, train_len) if trained else None
    runner = SimpleNamespace(
        message_hub=hub, _train_loop=train_loop, train_loop=train_loop,
        val_loop=loop(True, val_len), test_loop=loop(True, test_len),
        epoch=epoch, iter=iteration, max_epochs=max_epochs,
        max_iters=max_epochs * train_len, device=torch.device('cpu'))
    if eta is not None:
        hub.update_info('eta', eta)
    return runner


def record_train(hub, losses, lr=0.01):
    for step, loss in enumerate(losses):
        hub.update_info('iter', step)
        hub.update_scalar('train/lr', lr)
        hub.update_scalar('train/data_time', 0.001)
        hub.update_scalar('train/time', 0.002)
        hub.update_scalar('train/loss', torch.tensor(float(loss)))
        hub.update_scalar('train/acc', float(step))


# -- training lines ---------------------------------------------------------------------
def test_a_training_line_has_mmengines_format():
    runner = stub_runner()
    record_train(runner.message_hub, range(10))
    tag, line = LogProcessor().get_log_after_iter(runner, batch_idx=9, mode='train')
    assert line == ('Epoch(train) [1][10/25]  lr: 1.0000e-02  eta: 0:00:12  time: 0.0020  '
                    'data_time: 0.0010  loss: 4.5000  acc: 9.0000')
    assert tag == dict(lr=0.01, data_time=pytest.approx(0.001), time=pytest.approx(0.002),
                       loss=4.5, acc=9.0, epoch=1, iter=10)


def test_losses_are_averaged_over_the_window_and_other_scalars_show_their_last_value():
    runner = stub_runner()
    record_train(runner.message_hub, range(10))
    tag, _ = LogProcessor(window_size=4).get_log_after_iter(runner, 9, 'train')
    assert tag['loss'] == (6 + 7 + 8 + 9) / 4  # matches mean_pattern
    assert tag['acc'] == 9.0  # does not: the last value


def test_the_epoch_and_batch_are_right_aligned():
    runner = stub_runner(train_len=250, max_epochs=12, epoch=2)
    record_train(runner.message_hub, [1.0])
    _, line = LogProcessor().get_log_after_iter(runner, batch_idx=9, mode='train')
    assert line.startswith('Epoch(train)  [3][ 10/250]  lr: ')


def test_an_iteration_based_run_logs_iter_lines():
    runner = stub_runner(by_epoch=False, train_len=10, max_epochs=100, iteration=41)
    record_train(runner.message_hub, [1.0])
    tag, line = LogProcessor().get_log_after_iter(runner, batch_idx=1, mode='train')
    assert line.startswith('Iter(train) [  42/1000]  lr: 1.0000e-02  eta: ')
    assert 'epoch' not in tag and tag['iter'] == 42


def test_by_epoch_given_wins_over_the_training_loop():
    runner = stub_runner(by_epoch=False)
    record_train(runner.message_hub, [1.0])
    _, line = LogProcessor(by_epoch=True).get_log_after_iter(runner, 9, 'train')
    assert line.startswith('Epoch(train) [1][10/25]')


def test_without_an_eta_the_times_are_shown_with_the_other_scalars():
    runner = stub_runner(eta=None)
    record_train(runner.message_hub, [1.0])
    _, line = LogProcessor().get_log_after_iter(runner, 0, 'train')
    assert 'eta' not in line and 'time: 0.0020' in line and 'data_time: 0.0010' in line


def test_num_digits_sets_the_digits_shown():
    runner = stub_runner()
    record_train(runner.message_hub, [1.0 / 3])
    _, line = LogProcessor(num_digits=2).get_log_after_iter(runner, 0, 'train')
    assert 'lr: 1.00e-02' in line and 'loss: 0.33' in line


def test_log_with_hierarchy_prefixes_the_scalars_but_not_the_line():
    runner = stub_runner()
    record_train(runner.message_hub, [2.0])
    tag, line = LogProcessor(log_with_hierarchy=True).get_log_after_iter(runner, 0, 'train')
    assert {'train/lr', 'train/loss', 'train/time'} <= set(tag)
    assert 'loss: 2.0000' in line and 'train/loss' not in line


def test_a_custom_mean_pattern_chooses_what_is_averaged():
    runner = stub_runner()
    record_train(runner.message_hub, range(4))
    tag, _ = LogProcessor(mean_pattern=r'.*acc.*').get_log_after_iter(runner, 3, 'train')
    assert tag['acc'] == 1.5 and tag['loss'] == 3.0


def test_validation_iteration_lines_show_the_progress():
    runner = stub_runner(epoch=1)
    runner.message_hub.update_scalar('val/time', 0.5)
    runner.message_hub.update_scalar('val/data_time', 0.25)
    _, line = LogProcessor().get_log_after_iter(runner, batch_idx=1, mode='val')
    assert line == 'Epoch(val) [1][2/4]    eta: 0:00:12  time: 0.5000  data_time: 0.2500  '


def test_a_bad_mode_names_the_choices():
    with pytest.raises(ValueError, match=r"mode must be one of 'test', 'train', 'val', but got "
                                         r"'training'"):
        LogProcessor().get_log_after_iter(stub_runner(), 0, 'training')


# -- custom_cfg ---------------------------------------------------------------------------
def test_custom_cfg_replaces_a_scalar_or_adds_one_by_log_name():
    runner = stub_runner(iteration=9)
    record_train(runner.message_hub, range(10))
    processor = LogProcessor(window_size=2, custom_cfg=[
        dict(data_src='loss', method_name='mean', window_size='global'),
        dict(data_src='loss', log_name='loss_max', method_name='max', window_size=3),
        dict(data_src='acc', log_name='acc_min', method_name='min', window_size='epoch'),
        dict(data_src='loss', log_name='loss_now', method_name='current')])
    tag, line = processor.get_log_after_iter(runner, batch_idx=4, mode='train')
    assert tag['loss'] == 4.5  # global: every iteration so far
    assert tag['loss_max'] == 9.0
    assert tag['acc_min'] == 5.0  # the last 5 iterations (batch_idx 4 of the epoch)
    assert tag['loss_now'] == 9.0
    assert line.endswith('loss: 4.5000  acc: 9.0000  loss_max: 9.0000  acc_min: 5.0000  '
                         'loss_now: 9.0000')


def test_a_registered_statistic_can_be_used_in_custom_cfg():
    def spread(self, window_size=None):
        return self.max(window_size) - self.min(window_size)

    HistoryBuffer.register_statistics(spread)
    try:
        runner = stub_runner()
        record_train(runner.message_hub, [1.0, 5.0, 2.0])
        processor = LogProcessor(custom_cfg=[dict(data_src='loss', log_name='loss_spread',
                                                  method_name='spread', window_size=3)])
        tag, _ = processor.get_log_after_iter(runner, 2, 'train')
        assert tag['loss_spread'] == 4.0
    finally:
        del HistoryBuffer._statistics_methods['spread']


@pytest.mark.parametrize('custom_cfg, error, message', [
    ({'data_src': 'loss'}, TypeError, r'custom_cfg must be a list of dicts'),
    (['loss'], TypeError, r"custom_cfg\[0\] must be a dict, but got str: 'loss'"),
    ([dict(method_name='mean')], ValueError, r"custom_cfg\[0\] .* has no 'data_src'"),
    ([dict(data_src='loss')], ValueError, r"custom_cfg\[0\] .* has no 'method_name'"),
    ([dict(data_src='loss', method_name='avg')], ValueError,
     r"custom_cfg\[0\] method_name must be one of 'current', 'max', 'mean', 'min', but got "
     r"'avg'"),
    ([dict(data_src='loss', method_name='mean', window_size='all')], ValueError,
     r"custom_cfg\[0\] window_size must be a positive int, 'global' or 'epoch', but got 'all'"),
    ([dict(data_src='loss', method_name='mean', window_size=0)], ValueError,
     r'window_size must be a positive int'),
    ([dict(data_src='loss', method_name='current', window_size=10)], ValueError,
     r"method_name='current' takes no window_size"),
    ([dict(data_src='loss', method_name='mean', windowsize=10)], TypeError,
     r"custom_cfg\[0\] has unknown key\(s\) \['windowsize'\] Did you mean 'window_size'"),
    ([dict(data_src='loss', method_name='mean'), dict(data_src='loss', method_name='max')],
     ValueError, r"custom_cfg\[1\] .* writes 'loss', which custom_cfg\[0\] writes already"),
    ([dict(data_src='a', log_name='x', method_name='mean'),
      dict(data_src='b', log_name='x', method_name='max')],
     ValueError, r"writes 'x', which custom_cfg\[0\] writes already"),
])
def test_a_bad_custom_cfg_is_refused_naming_the_entry(custom_cfg, error, message):
    with pytest.raises(error, match=message):
        LogProcessor(custom_cfg=custom_cfg)


def test_an_epoch_window_needs_epoch_based_logging():
    with pytest.raises(ValueError, match=r"window_size='epoch' needs by_epoch=True"):
        LogProcessor(by_epoch=False, custom_cfg=[dict(data_src='loss', method_name='mean',
                                                      window_size='epoch')])
    # Following an iteration-based loop, it is refused when the line is made.
    runner = stub_runner(by_epoch=False)
    record_train(runner.message_hub, [1.0])
    processor = LogProcessor(custom_cfg=[dict(data_src='loss', method_name='mean',
                                              window_size='epoch')])
    with pytest.raises(ValueError, match=r"window_size='epoch' needs epoch-based logging"):
        processor.get_log_after_iter(runner, 0, 'train')


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(window_size=0), ValueError, 'LogProcessor window_size must be a positive int'),
    (dict(by_epoch='yes'), TypeError, "LogProcessor by_epoch must be a bool, but got 'yes'"),
    (dict(num_digits=-1), ValueError, r'LogProcessor num_digits must be an int >= 0'),
    (dict(log_with_hierarchy=1), TypeError, 'log_with_hierarchy must be a bool'),
    (dict(mean_pattern='(loss'), ValueError, r"mean_pattern '\(loss' is not a valid regular"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        LogProcessor(**kwargs)


# -- epoch lines ----------------------------------------------------------------------------
def test_a_validation_line_shows_this_runs_metrics_then_the_mean_times():
    runner = stub_runner(epoch=2, max_epochs=3)
    hub = runner.message_hub
    for value in (0.5, 0.9):  # two validations: the line shows the last one
        hub.update_scalar('val/accuracy', value)
        hub.update_scalar('val/Avg_loss', value * 2)
    for t in (0.1, 0.1, 0.2, 0.2):  # as IterTimerHook records them
        hub.update_scalar('val/data_time', t / 2)
        hub.update_scalar('val/time', t)
    tag, line = LogProcessor().get_log_after_epoch(runner, 4, 'val')
    assert line == ('Epoch(val) [2][4/4]    accuracy: 0.9000  Avg_loss: 1.8000  '
                    'data_time: 0.0750  time: 0.1500')
    assert tag == dict(accuracy=0.9, Avg_loss=1.8, data_time=pytest.approx(0.075),
                       time=pytest.approx(0.15))


def test_a_test_line_has_no_epoch_and_can_return_non_scalar_results():
    runner = stub_runner(trained=False)
    hub = runner.message_hub
    hub.update_scalar('test/accuracy', 0.75)
    hub.update_info('test/confusion', np.eye(2, dtype=int))
    tag, line = LogProcessor().get_log_after_epoch(runner, 3, 'test', with_non_scalar=True)
    assert line.startswith('Epoch(test) [3/3]    accuracy: 0.7500  confusion: \n[[1 0]\n [0 1]]')
    assert tag['accuracy'] == 0.75 and np.array_equal(tag['confusion'], np.eye(2))
    tag, _ = LogProcessor().get_log_after_epoch(runner, 3, 'test')
    assert 'confusion' not in tag


def test_a_validation_outside_training_is_epoch_zero():
    runner = stub_runner(trained=False)
    runner.message_hub.update_scalar('val/accuracy', 0.5)
    _, line = LogProcessor().get_log_after_epoch(runner, 4, 'val')
    assert line.startswith('Epoch(val) [0][4/4]    accuracy: 0.5000')


def test_an_iteration_based_validation_line():
    runner = stub_runner(by_epoch=False)
    runner.message_hub.update_scalar('val/accuracy', 0.5)
    _, line = LogProcessor().get_log_after_epoch(runner, 4, 'val')
    assert line == 'Iter(val) [4/4]    accuracy: 0.5000'


def test_the_epoch_line_mode_must_be_val_or_test():
    with pytest.raises(ValueError, match=r"mode must be one of 'test', 'val', but got 'train'"):
        LogProcessor().get_log_after_epoch(stub_runner(), 4, 'train')


# -- building -----------------------------------------------------------------------------
def test_the_log_processor_is_registered_and_built_by_the_runner(tmp_path):
    from fengine import Runner
    from seed_models import NeuralNetwork

    assert LOG_PROCESSORS.get('LogProcessor') is LogProcessor
    runner = Runner(model=NeuralNetwork(), work_dir=tmp_path,
                    log_processor=dict(window_size=20, num_digits=2))
    assert isinstance(runner.log_processor, LogProcessor)
    assert (runner.log_processor.window_size, runner.log_processor.num_digits) == (20, 2)
    mine = LogProcessor()
    assert runner.build_log_processor(mine) is mine
    assert runner.build_log_processor(dict(type='LogProcessor', by_epoch=False)).by_epoch is False
    with pytest.raises(TypeError, match='log_processor must be a LogProcessor or a dict'):
        runner.build_log_processor(['window_size'])
    with pytest.raises(TypeError, match=re.escape("unexpected keyword argument 'window'")):
        Runner(model=NeuralNetwork(), work_dir=tmp_path, log_processor=dict(window=3))


@pytest.mark.cuda
def test_on_cuda_a_line_shows_the_peak_memory_since_the_last_line():
    runner = stub_runner()
    runner.device = torch.device('cuda', torch.cuda.current_device())
    record_train(runner.message_hub, [1.0])
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device=runner.device)
    del block  # freed, but part of the peak
    tag, line = LogProcessor().get_log_after_iter(runner, 0, 'train')
    assert tag['memory'] >= 64 and f'memory: {tag["memory"]}  loss: ' in line
    tag, _ = LogProcessor().get_log_after_iter(runner, 0, 'train')
    assert tag['memory'] < 64  # the first line reset the peak
