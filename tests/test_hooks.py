"""The default hooks on small stand-in runners: LoggerHook and CheckpointHook."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fengine import Runner
from fengine.hooks import CheckpointHook, LoggerHook
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


# -- LoggerHook: reading the lr ----------------------------------------------------------
class CountingLr:
    """An lr that counts how often it is read (a 0-d CUDA tensor syncs on each read)."""

    def __init__(self, value: float, reads: list) -> None:
        self.value, self.reads = value, reads

    def __float__(self) -> float:
        self.reads.append(self.value)
        return self.value


def logging_runner(param_groups, visualizer):
    hub = MessageHub()
    hub.update_scalar('train/time', 0.5)
    hub.update_scalar('train/data_time', 0.1)
    return SimpleNamespace(
        message_hub=hub, optim_wrapper=SimpleNamespace(param_groups=param_groups),
        train_loop=SimpleNamespace(by_epoch=False), epoch=0, iter=0, max_iters=10,
        device=torch.device('cpu'), logger=logging.getLogger('test_hooks'),
        visualizer=visualizer)


def test_logger_hook_reads_only_the_first_param_groups_lr(tmp_path):
    reads: list = []
    groups = [{'lr': CountingLr(0.5, reads)}, {'lr': CountingLr(0.25, reads)},
              {'lr': CountingLr(0.125, reads)}]
    backend = ClosingBackend(tmp_path)
    seen = []
    backend.add_scalars = lambda scalar_dict, step=0, **kwargs: seen.append(scalar_dict)
    runner = logging_runner(groups, Visualizer(vis_backends=[backend]))

    LoggerHook(interval=1).after_train_iter(runner, batch_idx=0)

    assert reads == [0.5]  # one read, of group 0 alone
    assert seen[0]['lr'] == 0.5


def test_logger_hook_reads_a_tensor_lr_as_a_float(tmp_path):
    backend = ClosingBackend(tmp_path)
    seen = []
    backend.add_scalars = lambda scalar_dict, step=0, **kwargs: seen.append(scalar_dict)
    runner = logging_runner([{'lr': torch.tensor(0.5)}], Visualizer(vis_backends=[backend]))

    LoggerHook(interval=1).after_train_iter(runner, batch_idx=0)

    assert type(seen[0]['lr']) is float and seen[0]['lr'] == 0.5


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
