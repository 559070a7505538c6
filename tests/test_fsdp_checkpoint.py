"""The FSDP wrapper and sharded checkpoints together, as a user runs them: a Runner with
``model_wrapper_cfg=dict(type='FSDP')`` and the CheckpointHook on two ranks (torchrun,
gloo, CPU) saves DCP directories, resumes from one bit-exactly, and its checkpoint
resumes in one plain process.

The FSDP tests (``test_fsdp.py``) turn checkpoints off and the sharded-checkpoint tests
(``test_sharded_checkpoint_dist.py``) shard with ``fully_shard`` directly; this file is
where the two meet. One launch runs every two-rank scenario.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from fengine.runner.sharded_checkpoint import is_sharded_checkpoint

from fsdp_models import TinyGPT
from test_runner_distributed import _torchrun

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent('''
    import os, sys, torch
    from pathlib import Path
    from torch.utils.data import TensorDataset
    sys.path.insert(0, {tests!r})
    from fengine import MODELS, Runner
    from fsdp_models import TinyGPT, token_batches

    MODELS.register_module('CheckpointedTinyGPT', module=TinyGPT, force=True)
    OUT = Path({out!r})
    TOKENS = torch.cat([b for (b,) in token_batches(8, 4)])


    def run(work_dir, max_iters, resume=False, launcher='pytorch', batch_size=2):
        runner = Runner(
            model=dict(type='CheckpointedTinyGPT'), work_dir=str(work_dir),
            launcher=launcher, model_wrapper_cfg=dict(type='FSDP', shard_modules=['Block']),
            train_dataloader=dict(dataset=TensorDataset(TOKENS), batch_size=batch_size,
                                  sampler=dict(type='DefaultSampler', shuffle=False)),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2),
                               clip_grad=dict(max_norm=1.0)),
            train_cfg=dict(by_epoch=False, max_iters=max_iters), randomness=dict(seed=3),
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                               interval=2, max_keep_ckpts=2)),
            resume=resume, log_level='WARNING')
        runner.train()
        params = {{name: p.full_tensor() if hasattr(p, 'full_tensor') else p.detach()
                  for name, p in runner.model.module.named_parameters()}}
        return dict(params=params, losses=runner.message_hub.history('train/loss'))


    if __name__ == '__main__':
        seen = dict(whole=run(OUT / 'whole', 6), first=run(OUT / 'stopped', 4),
                    resumed=run(OUT / 'stopped', 6, resume=True))
        if int(os.environ['RANK']) == 0:
            torch.save(seen, OUT / 'seen.pt')
''')


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp('fsdp_checkpoint')
    script = out / 'train.py'
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(out)))
    code, output, _ = _torchrun(script, timeout=300, FENGINE_DIST_TIMEOUT='120')
    assert code == 0, output[-6000:]
    return dict(out=out, seen=torch.load(out / 'seen.pt', weights_only=True))


def test_the_checkpoint_hook_writes_sharded_directories_and_keeps_the_newest_two(runs):
    stopped = runs['out'] / 'stopped'
    assert is_sharded_checkpoint(stopped / 'iter_4') and is_sharded_checkpoint(stopped / 'iter_6')
    assert not (stopped / 'iter_2').exists()  # max_keep_ckpts=2
    assert (stopped / 'last_checkpoint').read_text().strip().endswith('iter_6')


def test_an_fsdp_run_resumed_from_its_checkpoint_ends_as_the_run_never_stopped(runs):
    whole, resumed = runs['seen']['whole'], runs['seen']['resumed']
    assert resumed['losses'][-2:] == whole['losses'][-2:]
    for name, value in whole['params'].items():
        assert torch.equal(resumed['params'][name], value), name


def test_a_two_rank_fsdp_checkpoint_resumes_in_one_process(runs, tmp_path):
    from fengine import MODELS, Runner
    from torch.utils.data import TensorDataset
    from fsdp_models import token_batches

    work_dir = tmp_path / 'one'
    work_dir.mkdir()
    shutil.copytree(runs['out'] / 'stopped' / 'iter_4', work_dir / 'iter_4')
    MODELS.register_module('CheckpointedTinyGPT', module=TinyGPT, force=True)
    try:
        tokens = torch.cat([b for (b,) in token_batches(8, 4)])
        runner = Runner(
            model=dict(type='CheckpointedTinyGPT'), work_dir=str(work_dir),
            model_wrapper_cfg=dict(type='FSDP', shard_modules=['Block']),
            train_dataloader=dict(dataset=TensorDataset(tokens), batch_size=4,
                                  sampler=dict(type='DefaultSampler', shuffle=False)),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2),
                               clip_grad=dict(max_norm=1.0)),
            train_cfg=dict(by_epoch=False, max_iters=6), randomness=dict(seed=3),
            default_hooks=dict(checkpoint=None), resume=str(work_dir / 'iter_4'),
            log_level='WARNING')
        runner.train()
        assert runner.iter == 6
        whole = runs['seen']['whole']['params']
        # One process sums the global batch in another order than two ranks do.
        for name, param in runner.model.named_parameters():
            torch.testing.assert_close(param.detach(), whole[name], rtol=1e-4, atol=1e-4)
    finally:
        MODELS.module_dict.pop('CheckpointedTinyGPT', None)
