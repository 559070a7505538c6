"""examples/train_a_gan.py: two optimizers with their own schedules, trained, saved, resumed."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'train_a_gan.py'


@pytest.fixture(scope='module')
def gan():
    spec = importlib.util.spec_from_file_location('train_a_gan', EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules['train_a_gan'] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop('train_a_gan', None)


ARGS = ['--num-samples', '32', '--batch-size', '8']


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_one_epoch_updates_both_networks_and_schedules_each_optimizer(gan, tmp_path):
    torch.manual_seed(0)
    runner = gan.build_runner(str(tmp_path), num_samples=32, batch_size=8)
    before = snapshot(runner.model)
    runner.train()
    after = snapshot(runner.model)
    for part in ('generator', 'discriminator'):
        changed = [n for n in before if n.startswith(part) and not torch.equal(before[n], after[n])]
        assert changed, f'the {part} did not train'
    # 4 iterations of the generator's LinearLR warm-up (0.1 -> 1 over 9 steps) and the
    # discriminator's ConstantLR (0.5 until step 9).
    lrs = runner.optim_wrapper.get_lr()
    assert lrs['generator.lr'] == [pytest.approx(1e-4 * (0.1 + 0.9 * 4 / 9))]
    assert lrs['discriminator.lr'] == [pytest.approx(0.5e-4)]
    checkpoint = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert sorted(checkpoint['optimizer']) == ['discriminator', 'generator']
    assert {name: [s['type'] for s in states]
            for name, states in checkpoint['param_schedulers'].items()} == {
        'generator': ['LinearLR'], 'discriminator': ['ConstantLR']}


def test_a_resumed_run_continues_both_optimizers_and_their_schedules(gan, tmp_path):
    gan.main(['--work-dir', str(tmp_path), '--epochs', '1', *ARGS])
    runner = gan.main(['--work-dir', str(tmp_path), '--epochs', '2', '--resume', *ARGS])
    assert runner.iter == 8
    assert {name: [s.global_step for s in inner]
            for name, inner in runner.param_schedulers.items()} == {
        'generator': [8], 'discriminator': [8]}
    adam_steps = runner.optim_wrapper['generator'].optimizer.state_dict()['state'][0]['step']
    assert adam_steps == 8  # the first epoch's 4 updates came back from the checkpoint
    assert runner.optim_wrapper.get_lr()['generator.lr'] == [
        pytest.approx(1e-4 * (0.1 + 0.9 * 8 / 9))]


def test_the_wrappers_built_by_hand_as_on_mmengines_page_train(gan, tmp_path):
    runner = gan.main(['--work-dir', str(tmp_path), '--by-hand', *ARGS])
    assert runner.iter == 4
    assert runner.param_schedulers == []
    assert runner.optim_wrapper.get_lr() == {'generator.lr': [1e-4], 'discriminator.lr': [1e-4]}
