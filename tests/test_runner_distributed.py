"""``launcher='pytorch'`` under torchrun: two CPU processes on gloo train one model."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    sys.path.insert(0, {tests!r})
    from test_runner import images, fresh_model
    from fengine import Runner
    from fengine.evaluator import BaseMetric

    class Count(BaseMetric):
        def process(self, data, preds):
            self.results.extend(int(i) for i in data[1])  # one entry per sample
        def compute_metrics(self, results):
            return dict(samples=len(results))

    runner = Runner(
        model=fresh_model(), work_dir={work!r}, launcher='pytorch',
        train_dataloader=dict(dataset=images(128), batch_size=16,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        val_dataloader=dict(dataset=images(51, seed=1), batch_size=16,
                            sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=[dict(type='Accuracy'), Count()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)), train_cfg=dict(max_epochs=2),
        randomness=dict(seed=0))
    runner.train()
    flat = torch.cat([p.detach().flatten() for p in runner.model.parameters()])
    with open({out!r} + f'/rank{{runner.rank}}.json', 'w') as f:
        json.dump(dict(params=flat[:1000].tolist(), metrics=runner.val_loop.last_metrics,
                       world_size=runner.world_size, iters=runner.iter), f)
''')


def test_two_processes_train_identical_replicas_and_count_each_sample_once(tmp_path):
    script = tmp_path / 'train.py'
    script.write_text(SCRIPT.format(tests=str(TESTS), work=str(tmp_path / 'work'),
                                    out=str(tmp_path)))
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                '--master_addr=127.0.0.1', f'--master_port={port}', str(script)]
    result = subprocess.run(torchrun, capture_output=True, text=True, timeout=180,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1))
    assert rank0['world_size'] == rank1['world_size'] == 2
    assert rank0['iters'] == 2 * 4  # 128 samples / 2 ranks / batch 16 = 4 per epoch
    assert rank0['params'] == rank1['params']
    assert rank0['metrics'] == rank1['metrics']
    assert rank0['metrics']['samples'] == 51  # the sampler's padding sample is dropped
    # Only rank 0 writes logs and checkpoints.
    assert len(list((tmp_path / 'work').glob('*/*.log'))) == 1
    assert (tmp_path / 'work' / 'epoch_2.pth').is_file()
