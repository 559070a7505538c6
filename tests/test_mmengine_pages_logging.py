"""MMEngine's pages 'Logging' (advanced tutorials) and 'Visualize Training Logs' (common
usage), run with ``fengine`` imports: each test does what a snippet of the page does and
checks what the page says about it."""
from __future__ import annotations

import json
import re
import types

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from fengine.logging import MessageHub
from fengine.model import BaseModel
from fengine.runner import Runner

# ``Epoch(train) [1][10/25]  lr: 1.0000e-02  eta: 0:00:00  time: 0.0019  data_time: 0.0004
# loss1: 0.8381  loss2: 0.9007  loss: 1.7388``
NUMBER = r'\d+\.\d{4}'


class ToyModel(BaseModel):
    """The page's model: two losses of one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, img, label, mode):
        feat = self.linear(img)
        loss1 = (feat - label).pow(2)
        loss2 = (feat - label).abs()
        return dict(loss1=loss1, loss2=loss2)


class ToyModelWithHub(BaseModel):
    """The page's 'custom log' model: records an intermediate loss in the message hub."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, img, label, mode):
        feat = self.linear(img)
        loss_tmp = (feat - label).abs()
        loss = loss_tmp.pow(2)
        message_hub = MessageHub.get_current_instance()
        message_hub.update_scalar('train/loss_tmp', loss_tmp.sum())
        return dict(loss=loss)


def train_dataloader() -> DataLoader:
    train_dataset = [(torch.ones(1, 1), torch.ones(1, 1))] * 50
    return DataLoader(train_dataset, batch_size=2)


def run(tmp_path, model=None, **kwargs) -> Runner:
    runner = Runner(model=model or ToyModel(), work_dir=tmp_path,
                    train_dataloader=train_dataloader(),
                    train_cfg=dict(by_epoch=True, max_epochs=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)), **kwargs)
    runner.train()
    return runner


def train_lines(runner: Runner) -> list[str]:
    log = (runner.log_dir / f'{runner.timestamp}.log').read_text()
    return [line.split(' - INFO - ', 1)[1] for line in log.splitlines()
            if ' - INFO - Epoch(train)' in line]


def logged(line: str, name: str) -> float:
    return float(re.search(rf'  {name}: ({NUMBER})', line).group(1))


def losses(runner: Runner, name: str) -> list[float]:
    return runner.message_hub.history(f'train/{name}')


# -- 'Flexible Logging System' -------------------------------------------------------------
def test_the_default_log_processor_logs_every_ten_iterations_in_the_pages_format(tmp_path):
    runner = run(tmp_path, log_processor=dict(window_size=10, by_epoch=True, custom_cfg=None,
                                              num_digits=4))
    lines = train_lines(runner)
    assert len(lines) == 2  # 25 iterations: lines at 10 and 20, the last 5 ignored
    # The total loss comes first, as MMEngine 0.10 prints it (the page shows an older
    # release's order: loss1, loss2, loss).
    for line, at in zip(lines, (10, 20)):
        assert re.fullmatch(rf'Epoch\(train\) \[1\]\[{at}/25\]  lr: 1\.0000e-02  '
                            rf'eta: 0:00:00  time: {NUMBER}  data_time: {NUMBER}  '
                            rf'loss: {NUMBER}  loss1: {NUMBER}  loss2: {NUMBER}', line), line
    # Each loss is the mean of the last window_size=10 iterations.
    loss1 = losses(runner, 'loss1')
    assert logged(lines[1], 'loss1') == pytest.approx(sum(loss1[10:20]) / 10, abs=1e-4)
    assert logged(lines[0], 'loss') == pytest.approx(
        sum(losses(runner, 'loss')[:10]) / 10, abs=1e-4)


def test_a_runner_without_a_log_processor_logs_the_same_way(tmp_path):
    lines = train_lines(run(tmp_path))
    assert [line[:24] for line in lines] == ['Epoch(train) [1][10/25] ',
                                             'Epoch(train) [1][20/25] ']


def test_custom_cfg_global_mean_replaces_loss1_by_its_mean_over_all_iterations(tmp_path):
    runner = run(tmp_path, log_processor=dict(custom_cfg=[
        dict(data_src='loss1', method_name='mean', window_size='global')]))
    lines = train_lines(runner)
    loss1 = losses(runner, 'loss1')
    assert logged(lines[1], 'loss1') == pytest.approx(sum(loss1[:20]) / 20, abs=1e-4)
    assert logged(lines[1], 'loss2') == pytest.approx(
        sum(losses(runner, 'loss2')[10:20]) / 10, abs=1e-4)


def test_custom_cfg_with_a_log_name_adds_a_scalar_and_keeps_the_original(tmp_path):
    runner = run(tmp_path, log_processor=dict(custom_cfg=[
        dict(data_src='loss1', log_name='loss1_global', method_name='mean',
             window_size='global')]))
    line = train_lines(runner)[1]
    loss1 = losses(runner, 'loss1')
    assert line.endswith(f'loss1_global: {sum(loss1[:20]) / 20:.4f}')
    assert logged(line, 'loss1') == pytest.approx(sum(loss1[10:20]) / 10, abs=1e-4)


def test_custom_cfg_local_and_global_maximum(tmp_path):
    runner = run(tmp_path, log_processor=dict(custom_cfg=[
        dict(data_src='loss1', log_name='loss1_local_max', window_size=10, method_name='max'),
        dict(data_src='loss1', log_name='loss1_global_max', method_name='max',
             window_size='global')]))
    lines = train_lines(runner)
    loss1 = losses(runner, 'loss1')
    assert logged(lines[1], 'loss1_local_max') == pytest.approx(max(loss1[10:20]), abs=1e-4)
    assert logged(lines[1], 'loss1_global_max') == pytest.approx(max(loss1[:20]), abs=1e-4)
    # The loss falls: the global maximum is the first iteration's, above the local one.
    assert logged(lines[1], 'loss1_global_max') > logged(lines[1], 'loss1_local_max')


@pytest.mark.parametrize('window_size, covered', [(10, slice(10, 20)),
                                                  ('global', slice(0, 20))])
def test_the_statistic_methods_of_the_pages_table(tmp_path, window_size, covered):
    runner = run(tmp_path, log_processor=dict(custom_cfg=[
        dict(data_src='loss1', log_name=f'loss1_{name}', method_name=name,
             window_size=window_size) for name in ('mean', 'min', 'max')] + [
        dict(data_src='loss1', log_name='loss1_current', method_name='current')]))
    line = train_lines(runner)[1]
    loss1 = losses(runner, 'loss1')
    window = loss1[covered]  # the iterations of the window, up to the second line (20)
    assert logged(line, 'loss1_mean') == pytest.approx(sum(window) / len(window), abs=1e-4)
    assert logged(line, 'loss1_min') == pytest.approx(min(window), abs=1e-4)
    assert logged(line, 'loss1_max') == pytest.approx(max(window), abs=1e-4)
    assert logged(line, 'loss1_current') == pytest.approx(loss1[19], abs=1e-4)


def test_an_epoch_window_covers_the_iterations_of_this_epoch(tmp_path):
    runner = Runner(model=ToyModel(), work_dir=tmp_path, train_dataloader=train_dataloader(),
                    train_cfg=dict(by_epoch=True, max_epochs=2),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                    log_processor=dict(custom_cfg=[dict(data_src='loss1', log_name='epoch_mean',
                                                        method_name='mean',
                                                        window_size='epoch')]))
    runner.train()
    line = train_lines(runner)[3]  # epoch 2, iteration 20 of 25
    loss1 = losses(runner, 'loss1')
    assert line.startswith('Epoch(train) [2][20/25]')
    assert logged(line, 'epoch_mean') == pytest.approx(sum(loss1[25:45]) / 20, abs=1e-4)


def test_an_unknown_statistic_method_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"method_name must be one of 'current', 'max', "
                                         r"'mean', 'min', but got 'median'"):
        run(tmp_path, log_processor=dict(custom_cfg=[dict(data_src='loss1',
                                                           method_name='median')]))


# -- 'Custom log' ------------------------------------------------------------------------------
def test_a_model_records_a_custom_scalar_in_the_message_hub(tmp_path):
    runner = run(tmp_path, model=ToyModelWithHub(), log_processor=dict(custom_cfg=[
        dict(data_src='loss_tmp', window_size=10, method_name='mean')]))
    lines = train_lines(runner)
    loss_tmp = losses(runner, 'loss_tmp')
    assert len(loss_tmp) == 25  # one per iteration, read once per line
    assert re.search(rf'data_time: {NUMBER}  loss_tmp: {NUMBER}  loss: {NUMBER}$', lines[0])
    assert logged(lines[1], 'loss_tmp') == pytest.approx(sum(loss_tmp[10:20]) / 10, abs=1e-4)
    assert runner.message_hub is MessageHub.get_current_instance()


def test_without_a_custom_cfg_a_custom_loss_is_still_averaged_by_the_mean_pattern(tmp_path):
    # The page says an unconfigured custom scalar shows its last value; that holds for
    # names outside mean_pattern. 'loss_tmp' matches it ('loss'), so MMEngine (and
    # fengine) average it over window_size.
    runner = run(tmp_path, model=ToyModelWithHub())
    line = train_lines(runner)[1]
    loss_tmp = losses(runner, 'loss_tmp')
    assert logged(line, 'loss_tmp') == pytest.approx(sum(loss_tmp[10:20]) / 10, abs=1e-4)


class ToyModelWithNorm(ToyModel):
    def forward(self, img, label, mode):
        MessageHub.get_current_instance().update_scalar('train/feat_norm',
                                                        self.linear.weight.norm())
        return super().forward(img, label, mode)


def test_without_a_custom_cfg_another_custom_scalar_shows_its_last_value(tmp_path):
    runner = run(tmp_path, model=ToyModelWithNorm())
    line = train_lines(runner)[1]
    assert logged(line, 'feat_norm') == pytest.approx(losses(runner, 'feat_norm')[19],
                                                      abs=1e-4)


# -- 'Export the debug log' ------------------------------------------------------------------
def test_log_level_debug_exports_debug_lines_to_the_work_dirs_log(tmp_path):
    runner = run(tmp_path, log_level='DEBUG')
    log = (runner.log_dir / f'{runner.timestamp}.log').read_text()
    debug = [line for line in log.splitlines() if ' - fengine - DEBUG - ' in line]
    assert debug, log[:2000]
    assert any('log processor: LogProcessor(' in line for line in debug)


def test_at_the_default_level_the_log_has_no_debug_lines(tmp_path):
    runner = run(tmp_path)
    assert ' - DEBUG - ' not in (runner.log_dir / f'{runner.timestamp}.log').read_text()


# -- 'Visualize Training Logs' -----------------------------------------------------------------
def test_tensorboard_in_one_line_records_the_training_scalars(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runner = run(tmp_path, visualizer=dict(type='Visualizer', vis_backends=[
        dict(type='TensorboardVisBackend')]))
    (events,) = {p.parent for p in runner.log_dir.rglob('events.out.tfevents.*')}
    board = EventAccumulator(str(events))
    board.Reload()
    assert {'loss', 'loss1', 'loss2', 'lr', 'time', 'data_time'} <= set(board.Tags()['scalars'])
    assert [e.step for e in board.Scalars('loss')] == [10, 20]


def test_the_local_backend_writes_the_same_scalars_as_json(tmp_path):
    runner = run(tmp_path)
    lines = [json.loads(x) for x in
             (runner.log_dir / 'vis_data' / 'scalars.json').read_text().splitlines()]
    assert [x['step'] for x in lines] == [10, 20]
    assert lines[0]['loss'] == pytest.approx(sum(losses(runner, 'loss')[:10]) / 10)


@pytest.mark.parametrize('backend, package', [
    ('WandbVisBackend', 'wandb'), ('MLflowVisBackend', 'mlflow'),
    ('ClearMLVisBackend', 'clearml'), ('NeptuneVisBackend', 'neptune'),
    ('DVCLiveVisBackend', 'dvclive'), ('AimVisBackend', 'aim')])
def test_a_tracker_backend_without_its_package_is_refused_naming_it(
        tmp_path, backend, package, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ImportError, match=rf'{backend} needs the {package} package \(pip '
                                          rf'install {package}\)'):
        Runner(model=ToyModel(), work_dir=tmp_path, visualizer=dict(
            type='Visualizer', vis_backends=[dict(type=backend,
                                                  init_kwargs=dict(project='toy-example'))]))


def test_a_tracker_backend_with_its_package_is_refused_as_not_implemented(tmp_path,
                                                                          monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: types.SimpleNamespace()
                        if name == 'wandb' else real(name, *a))
    with pytest.raises(NotImplementedError, match='fengine does not implement WandbVisBackend'):
        Runner(model=ToyModel(), work_dir=tmp_path, visualizer=dict(
            type='Visualizer', vis_backends=[dict(type='WandbVisBackend')]))
