"""Checkpoints survive SIGKILL at any moment: never truncated, never mistaken, resumable.

A training process that saves after every iteration (a few MB each, so a save takes
milliseconds and the kills land inside writes too) is killed with SIGKILL at random,
seeded moments, again and again; each new process resumes from what the last one
left. After every kill the folder is checked as a user would find it.

The processes are forked from a ``forkserver`` that imported torch and fengine once,
so a start costs milliseconds instead of seconds.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fengine import Runner
from fengine.runner import find_last_checkpoint
from fengine.runner.checkpoint_io import atomic_save, is_temporary, remove_stale_temporaries

from test_runner import fresh_model, images

KILLS = 18
SEED = 20240611


def _train(work_dir: str, max_iters: int, ready=None) -> None:
    """The killed process: resume if possible, then train and save every iteration.

    ``ready`` (an Event) is set once the runner is built, just before it resumes.
    """
    torch.set_num_threads(1)  # the machine is shared; one thread is enough here
    runner = Runner(
        model=fresh_model(), work_dir=work_dir,  # NeuralNetwork: 2.7 MB of weights
        train_dataloader=DataLoader(images(64), batch_size=16),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters), resume=True,
        randomness=dict(seed=0), log_level='WARNING',
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1000),
                           checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False,
                                           max_keep_ckpts=3)))
    if ready is not None:
        ready.set()
    runner.train()


def _context():
    context = multiprocessing.get_context('forkserver')
    # torch._dynamo is imported lazily by torch.optim's first optimizer: seconds.
    context.set_forkserver_preload(['torch._dynamo', __name__])
    return context


def _check_folder(work_dir: Path) -> int | None:
    """What a user finds after a kill; returns the iteration of the last checkpoint."""
    for path in work_dir.glob('*.pth'):  # nothing truncated, whatever the moment
        assert not is_temporary(path)
        torch.load(path, weights_only=True, map_location='cpu')
    last = find_last_checkpoint(work_dir)
    if last is None:
        return None
    assert last.suffix == '.pth' and not is_temporary(last), last
    checkpoint = torch.load(last, weights_only=True, map_location='cpu')
    assert {'meta', 'state_dict', 'optimizer'} <= set(checkpoint)
    return checkpoint['meta']['iter']


def test_sigkill_at_random_moments_never_leaves_a_broken_or_mistaken_checkpoint(tmp_path):
    context = _context()
    chooser = random.Random(SEED)
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    progress: list[int] = []
    leftovers_seen = 0
    started = time.monotonic()
    for kill in range(KILLS):
        ready = context.Event()
        process = context.Process(target=_train, args=(str(work_dir), 10**6, ready))
        process.start()
        # From the moment the runner exists: resuming (reading the last checkpoint)
        # takes some ten ms, then saves of ~5 MB follow back to back. The delays are
        # counted from there so that a loaded machine still kills inside training.
        assert ready.wait(timeout=30), f'the training process of round {kill} did not start'
        time.sleep(chooser.uniform(0.0, 0.8))
        assert process.exitcode is None, (
            f'the training process of round {kill} ended by itself with exit code '
            f'{process.exitcode} (resuming failed?)')
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert process.exitcode == -signal.SIGKILL
        iteration = _check_folder(work_dir)
        if iteration is not None:
            assert not progress or iteration >= progress[-1], progress  # never goes back
            progress.append(iteration)
        leftovers_seen += sum(1 for p in work_dir.iterdir() if is_temporary(p))
    # The runs went on from each other (not a speed goal: any progress across kills).
    assert len(progress) > 1 and progress[-1] > progress[0], progress

    # Leftovers of killed writes (and one planted, older than any process here) are
    # removed by the next process's first save; other files are left alone.
    planted = work_dir / '.iter_999999.pth.abcd_123.tmp'
    planted.write_bytes(b'half a checkpoint')
    os.utime(planted, (time.time() - 3600, time.time() - 3600))
    unrelated = [work_dir / '.notes.tmp', work_dir / 'keep.tmp', work_dir / 'notes.txt']
    for path in unrelated:
        path.write_text('mine')
    time.sleep(0.3)  # the last killed process's leftovers are older than the next one
    last = progress[-1]
    process = context.Process(target=_train, args=(str(work_dir), last + 3))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == 0, process.exitcode
    # It resumed from the last checkpoint and trained 3 more iterations.
    assert _check_folder(work_dir) == last + 3
    assert find_last_checkpoint(work_dir).name == f'iter_{last + 3}.pth'
    logs = sorted(work_dir.glob('*/*.log'), key=lambda p: p.stat().st_mtime)
    assert not planted.exists()
    assert not [p.name for p in work_dir.iterdir() if is_temporary(p)]
    assert all(p.exists() for p in unrelated)
    # max_keep_ckpts=3 holds across the restarts (older files are found by name): a file
    # a kill left beyond the three is removed by the next save.
    assert sorted(p.name for p in work_dir.glob('iter_*.pth')) == sorted(
        f'iter_{last + k}.pth' for k in (1, 2, 3))
    print(f'{KILLS} kills, last iteration {last}, leftover temporaries seen after kills: '
          f'{leftovers_seen}, {time.monotonic() - started:.1f} s, {len(logs)} logs')


def test_leftover_temporaries_are_never_taken_for_checkpoints(tmp_path):
    good = atomic_save({'meta': {'iter': 1}}, tmp_path / 'iter_1.pth')
    os.utime(good, (time.time() - 60, time.time() - 60))
    for name in ('.iter_2.pth.k3j_x9ab.tmp', '.last_checkpoint.zz1234ab.tmp'):
        (tmp_path / name).write_bytes(b'\x80\x02 truncated')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))  # never renamed
    assert find_last_checkpoint(tmp_path) == good
    assert torch.load(good, weights_only=True) == {'meta': {'iter': 1}}


def test_only_stale_temporaries_of_checkpoint_io_are_removed(tmp_path):
    old = time.time() - 3600
    stale = tmp_path / '.epoch_3.pth.a1b2c3d4.tmp'
    fresh = tmp_path / '.epoch_4.pth.e5f6g7h8.tmp'  # as if another process writes it now
    other = [tmp_path / '.epoch_3.pth.tmp', tmp_path / 'epoch_3.tmp', tmp_path / 'data.tmp']
    for path in [stale, fresh, *other]:
        path.write_bytes(b'x')
    for path in [stale, *other]:
        os.utime(path, (old, old))
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert fresh.exists() and all(p.exists() for p in other)
    # atomic_save cleans up first, and its own temporary file does not survive it.
    os.utime(fresh, (old, old))
    atomic_save({'x': torch.zeros(3)}, tmp_path / 'epoch_5.pth')
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if is_temporary(p)) == []
