"""Sharded checkpoints on two ranks (torchrun, gloo, CPU): exact resume, resharding to one
process, and a rank killed in the middle of a save.

The model is sharded with torch's ``fully_shard`` by a small wrapper registered in the
scripts (``FullyShardForTest``), so the Runner builds, trains and checkpoints it as it
would any model wrapper. Each launch costs seconds, so one launch trains every scenario
and the tests read what it wrote.
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

from fengine import Runner
from fengine.runner import find_last_checkpoint
from fengine.runner.sharded_checkpoint import STATE_FILE, is_sharded_model, load_consolidated

from sharded_helpers import (assert_equal_tensors, full_params, init_single_rank_group,
                             samples, shard, tiny_net)
from test_runner_distributed import _env, _free_port, _torchrun

TESTS = Path(__file__).resolve().parent
MAX_ITERS = 8

# What every script starts with: the runner of a run that saves every 2 iterations.
PRELUDE = textwrap.dedent('''
    import os, sys, time, torch
    from torch import nn
    sys.path.insert(0, {tests!r})
    from sharded_helpers import full_params, samples, shard, tiny_net
    from fengine import Runner, dist
    from fengine.hooks import Hook
    from fengine.registry import MODEL_WRAPPERS

    @MODEL_WRAPPERS.register_module()
    class FullyShardForTest(nn.Module):
        """Shards the model with fully_shard; the steps are the model's own (eager)."""
        def __init__(self, module, **kwargs):
            super().__init__()
            self.module = shard(module)
        def train_step(self, data, optim_wrapper):
            return self.module.train_step(data, optim_wrapper)
        def val_step(self, data):
            return self.module.val_step(data)
        def test_step(self, data):
            return self.module.test_step(data)

    class StartedAt(Hook):
        def before_train(self, runner):  # where training starts: 0, or the resumed iteration
            runner.started_at = runner.iter

    def runner(work_dir, **kwargs):
        return Runner(
            model=tiny_net(), work_dir=work_dir, launcher='pytorch',
            model_wrapper_cfg=dict(type='FullyShardForTest'),
            train_dataloader=dict(dataset=samples(64), batch_size=8,
                                  sampler=dict(type='DefaultSampler', shuffle=True)),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
            param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                                  begin=0, end=6)],
            train_cfg=dict(by_epoch=False, max_iters={max_iters}), randomness=dict(seed=0),
            log_level='WARNING',
            default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                               interval=2, max_keep_ckpts=3)),
            custom_hooks=[StartedAt()], **kwargs)

    def state(run):
        optimizer = run.optim_wrapper.optimizer
        return dict(params=full_params(run.model.module), optimizer={{
            f'{{name}}.{{key}}': getattr(value, 'full_tensor', value.clone)().clone()
            for name, param in run.model.module.named_parameters()
            for key, value in optimizer.state[param].items()}})
''')

SCENARIOS = PRELUDE + textwrap.dedent('''
    class Stop(Exception):
        pass

    class Crash(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == 5:  # just after the checkpoint of iteration 4
                raise Stop

    full = runner({out!r} + '/full')
    full.train()
    assert full.model.module is not None and type(full.model).__name__ == 'FullyShardForTest'
    part = runner({out!r} + '/part')
    part.register_hook(Crash(), priority='LOWEST')
    try:
        part.train()
    except Stop:
        pass
    resumed = runner({out!r} + '/part', resume=True)
    resumed.train()
    torch.save(dict(full=state(full), resumed=state(resumed), started_at=resumed.started_at),
               {out!r} + f'/rank{{dist.get_rank()}}.pt')
''')

# Rank 1 stops inside the save of iteration 4, before writing its shards, until killed.
KILLED = PRELUDE + textwrap.dedent('''
    from torch.distributed.checkpoint import FileSystemWriter
    original, saves = FileSystemWriter.write_data, []

    def write_data(self, plan, planner):
        saves.append(1)
        if len(saves) == 2 and dist.get_rank() == 1:
            print(f'rank 1 (pid {{os.getpid()}}) is in the save of iter_4', flush=True)
            time.sleep(600)
        return original(self, plan, planner)

    FileSystemWriter.write_data = write_data
    runner({out!r}).train()
''')

RESUME = PRELUDE + textwrap.dedent('''
    run = runner({out!r}, resume=True)
    run.train()
    torch.save(dict(resumed=state(run), started_at=run.started_at),
               {out!r} + f'/resumed_rank{{dist.get_rank()}}.pt')
''')


def _script(path: Path, template: str, out: Path) -> Path:
    path.write_text(template.format(tests=str(TESTS), out=str(out), max_iters=MAX_ITERS))
    return path


def _launch(script: Path, timeout: float = 300) -> None:
    code, output, _ = _torchrun(script, timeout=timeout, FENGINE_DIST_TIMEOUT='120')
    assert code == 0, output[-6000:]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two ranks: a full run, and one stopped after iteration 4 and resumed."""
    out = tmp_path_factory.mktemp('sharded_dist')
    _launch(_script(out / 'scenarios.py', SCENARIOS, out))
    ranks = [torch.load(out / f'rank{r}.pt', weights_only=True) for r in (0, 1)]
    return dict(out=out, ranks=ranks)


def test_every_rank_writes_its_shards_and_last_checkpoint_names_the_directory(runs):
    work = runs['out'] / 'full'
    assert sorted(os.listdir(work / 'iter_8')) == [
        '.metadata', '__0_0.distcp', '__1_0.distcp', STATE_FILE, 'rank_0.pth', 'rank_1.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_8')
    # max_keep_ckpts=3 removed iter_2's directory; no temporary directory is left.
    assert sorted(p.name for p in work.glob('iter_*')) == ['iter_4', 'iter_6', 'iter_8']
    assert [p.name for p in work.iterdir() if p.name.startswith('.')] == []
    assert torch.load(work / 'iter_8' / STATE_FILE, weights_only=True)['meta']['world_size'] == 2


def test_a_two_rank_run_stopped_mid_run_resumes_bit_exactly_on_two_ranks(runs):
    for seen in runs['ranks']:
        assert seen['started_at'] == 4
        assert_equal_tensors(seen['resumed']['params'], seen['full']['params'])
        assert_equal_tensors(seen['resumed']['optimizer'], seen['full']['optimizer'])


def test_a_two_rank_checkpoint_resumes_in_one_plain_process_exactly(tmp_path, runs):
    source = runs['out'] / 'full' / 'iter_4'
    saved = load_consolidated(source)
    plain = Runner(model=tiny_net(), work_dir=tmp_path, resume=str(source),
                   train_dataloader=dict(dataset=samples(64), batch_size=16,
                                         sampler=dict(type='DefaultSampler', shuffle=True)),
                   optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
                   train_cfg=dict(by_epoch=False, max_iters=4), randomness=dict(seed=0),
                   log_level='WARNING', default_hooks=dict(checkpoint=None))
    plain.train()  # resumes at iteration 4 of 4: loads, trains nothing
    assert plain.iter == 4 and not is_sharded_model(plain.model)
    assert_equal_tensors(full_params(plain.model), saved['state_dict'])
    state = plain.optim_wrapper.optimizer.state
    for name, param in plain.model.named_parameters():
        for key, value in state[param].items():
            assert torch.equal(value, saved['optimizer']['state'][name][key]), (name, key)
    assert plain.optim_wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(
        saved['optimizer']['param_groups'][0]['lr'])


def test_a_two_rank_checkpoint_loads_into_a_model_sharded_over_one_rank(tmp_path, runs):
    source = runs['out'] / 'full' / 'iter_8'
    init_single_rank_group()
    try:
        run = Runner(model=shard(tiny_net()), work_dir=tmp_path, load_from=str(source),
                     log_level='WARNING')
        run.load_or_resume()
        assert is_sharded_model(run.model)
        assert_equal_tensors(full_params(run.model), runs['ranks'][0]['full']['params'])
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope='module')
def killed(tmp_path_factory):
    """A two-rank run whose rank 1 is killed (SIGKILL) inside the save of iteration 4."""
    out = tmp_path_factory.mktemp('killed')
    script = _script(out / 'killed.py', KILLED, out / 'work')
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}', str(script)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=_env(FENGINE_DIST_TIMEOUT='120'),
                               start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    output, pid = [], None
    try:
        while pid is None:
            line = lines.get(timeout=240)
            output.append(line)
            match = re.search(r'rank 1 \(pid (\d+)\) is in the save of iter_4', line)
            pid = int(match.group(1)) if match else None
        os.kill(pid, signal.SIGKILL)
        code = process.wait(timeout=120)
    except queue.Empty:
        pytest.fail('rank 1 never reached the save of iter_4:\n' + ''.join(output)[-4000:])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return dict(out=out, work=out / 'work', code=code)


def test_a_rank_killed_during_a_save_leaves_the_previous_checkpoint_as_the_last(killed):
    work = killed['work']
    assert killed['code'] != 0
    assert not (work / 'iter_4').exists()
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_2')
    assert find_last_checkpoint(work) == work / 'iter_2'
    # The interrupted save's hidden temporary directory (with rank 0's shards) is there,
    # and is never taken for a checkpoint.
    leftovers = [p.name for p in work.iterdir() if p.name.startswith('.iter_4.')]
    assert len(leftovers) == 1 and leftovers[0].endswith('.tmp')
    checkpoint = load_consolidated(work / 'iter_2')
    assert checkpoint['meta']['iter'] == 2


def test_the_run_resumed_after_the_kill_removes_the_leftover_and_ends_as_if_never_killed(
        killed, runs):
    work = killed['work']
    _launch(_script(killed['out'] / 'resume.py', RESUME, work))
    assert [p.name for p in work.iterdir() if p.name.startswith('.')] == []
    for rank in (0, 1):
        seen = torch.load(work / f'resumed_rank{rank}.pt', weights_only=True)
        assert seen['started_at'] == 2
        assert_equal_tensors(seen['resumed']['params'], runs['ranks'][rank]['full']['params'])
        assert_equal_tensors(seen['resumed']['optimizer'],
                             runs['ranks'][rank]['full']['optimizer'])
