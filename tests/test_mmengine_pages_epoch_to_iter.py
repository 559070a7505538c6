"""MMEngine's page 'EpochBasedTraining to IterBasedTraining', run with ``fengine`` imports.

The page's CIFAR-10 job is shrunk to small tensors and a small CNN; each test takes one
of the page's configurations and checks what the page says it changes.
"""
from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import SGD
from torch.utils.data import DataLoader, TensorDataset

from fengine.evaluator import BaseMetric
from fengine.model import BaseModel
from fengine.runner import Runner


class MMResNet50(BaseModel):
    def __init__(self):
        super().__init__()
        # The page's torchvision resnet50, shrunk for two CPU cores.
        self.resnet = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, imgs, labels, mode):
        x = self.resnet(imgs)
        if mode == 'loss':
            return {'loss': F.cross_entropy(x, labels)}
        elif mode == 'predict':
            return x, labels


class Accuracy(BaseMetric):
    default_prefix = 'cifar'

    def process(self, data_batch, data_samples):
        score, gt = data_samples
        self.results.append({'batch_size': len(gt),
                             'correct': (score.argmax(dim=1) == gt).sum().cpu()})

    def compute_metrics(self, results):
        total_correct = sum(item['correct'] for item in results)
        total_size = sum(item['batch_size'] for item in results)
        return dict(accuracy=100 * total_correct / total_size)


def loader(size: int, shuffle: bool) -> DataLoader:
    data = TensorDataset(torch.randn(size, 3, 32, 32), torch.randint(0, 10, (size,)))
    return DataLoader(data, batch_size=4, shuffle=shuffle)


def build(tmp_path, train_cfg, default_hooks, log_processor, param_scheduler):
    return Runner(
        model=MMResNet50(), work_dir=tmp_path, train_dataloader=loader(16, True),
        optim_wrapper=dict(optimizer=dict(type=SGD, lr=0.1, momentum=0.9)),
        param_scheduler=param_scheduler, train_cfg=train_cfg, log_processor=log_processor,
        default_hooks=default_hooks, val_dataloader=loader(8, False), val_cfg=dict(),
        val_evaluator=dict(type=Accuracy), randomness=dict(seed=0))


def lrs_by_iteration(runner) -> list[float]:
    """The lr of each training iteration, as the run's scalars.json recorded it."""
    lines = (runner.log_dir / 'vis_data' / 'scalars.json').read_text().splitlines()
    return [record['lr'] for record in map(json.loads, lines) if 'lr' in record]


def test_the_epoch_based_configuration_trains_by_epoch(tmp_path, fengine_log):
    runner = build(
        tmp_path, train_cfg=dict(by_epoch=True, max_epochs=4, val_interval=2),
        default_hooks=dict(logger=dict(type='LoggerHook', log_metric_by_epoch=True,
                                       interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=True)),
        log_processor=dict(by_epoch=True),
        param_scheduler=dict(type='MultiStepLR', milestones=[2, 3], by_epoch=True))
    runner.train()

    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_2.pth', 'epoch_4.pth']
    assert re.search(r'Epoch\(train\) \[1\]\[4/4\]', fengine_log.text)
    assert re.search(r'Epoch\(val\) \[2\]\[2/2\]', fengine_log.text)
    # 4 iterations per epoch; the lr drops after epochs 2 and 3.
    lrs = lrs_by_iteration(runner)
    assert lrs == pytest.approx([0.1] * 8 + [0.01] * 4 + [0.001] * 4)


def test_the_iteration_based_configuration_trains_by_iteration(tmp_path, fengine_log):
    # The page's four steps, with 16 iterations instead of 10000.
    runner = build(
        tmp_path, train_cfg=dict(by_epoch=False, max_iters=16, val_interval=8),
        default_hooks=dict(logger=dict(type='LoggerHook', log_metric_by_epoch=False,
                                       interval=1),
                           checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8)),
        log_processor=dict(by_epoch=False),
        param_scheduler=dict(type='MultiStepLR', milestones=[8, 12], by_epoch=False))
    runner.train()

    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_16.pth', 'iter_8.pth']
    assert re.search(r'Iter\(train\) \[ ?1/16\]', fengine_log.text)
    assert re.search(r'Iter\(val\) \[2/2\]', fengine_log.text)
    assert not re.search(r'Epoch\(train\)', fengine_log.text)
    lrs = lrs_by_iteration(runner)
    assert lrs == pytest.approx([0.1] * 8 + [0.01] * 4 + [0.001] * 4)


# A warmup over the first two epochs (8 iterations), given in epochs. MMEngine's linear
# schedule reaches its end factor at the last step of [begin, end): step 7 per
# iteration, step 1 per epoch.
PER_ITERATION = [0.1 * (0.5 + 0.5 * step / 7) for step in range(8)] + [0.1] * 8
PER_EPOCH = [0.05] * 4 + [0.1] * 12


@pytest.mark.parametrize('convert, lrs', [(True, PER_ITERATION), (False, PER_EPOCH)])
def test_convert_to_iter_based_steps_an_epoch_schedule_every_iteration(tmp_path, convert, lrs):
    runner = build(
        tmp_path, train_cfg=dict(by_epoch=True, max_epochs=4),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=4)),
        log_processor=dict(by_epoch=True),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, begin=0, end=2,
                             convert_to_iter_based=convert))
    runner.train()

    assert lrs_by_iteration(runner) == pytest.approx(lrs)
