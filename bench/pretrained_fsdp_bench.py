"""Peak memory per rank of ``Pretrained`` under FSDP: whole-file reads against row reads.

Run: ``PYTHONPATH=$PWD python bench/pretrained_fsdp_bench.py [--mib 160] [--repeats 3]``.

A model of ``Block``s (one ``Linear`` each) is built on ``meta``, sharded over 2 CPU ranks
(Gloo) with :class:`fengine.model.FSDP` and initialized with
``init_cfg=dict(type='Pretrained', checkpoint=...)`` from a ``.pth`` and a ``.safetensors``
file of about ``--mib`` MiB. Each launch is a fresh ``torchrun`` of two processes; the
contenders take turns (whole, rows, whole, rows, ...). Each rank reports its peak resident
memory (``ru_maxrss``) and its resident memory just before ``init_weights``; the table
gives the medians over repeats of the larger rank's figures.

``whole`` is what fengine did before row reads: every rank reads the whole checkpoint
(``load_checkpoint_file``) and copies its rows out. ``rows`` is the default now: each rank
reads only its rows (a safetensors slice, or the pages of a memory-mapped zip file).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1024  # one Block: a 1024 x 1024 Linear and its bias, 4 MiB in float32


def _model(blocks: int):
    import torch
    from torch import nn

    from fengine.model import BaseModel

    class Block(nn.Module):

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(WIDTH, WIDTH)

        def forward(self, x):
            return self.fc(x)

    class Net(BaseModel):

        def __init__(self, init_cfg=None) -> None:
            super().__init__(init_cfg=init_cfg)
            self.blocks = nn.ModuleList(Block() for _ in range(blocks))

        def forward(self, x, mode='tensor'):
            for block in self.blocks:
                x = block(x)
            return x

    return Net, torch


def _rss_mib() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def rank_main(checkpoint: str, mode: str, blocks: int, out: str) -> None:
    """One rank: shard the model, load the checkpoint, report memory."""
    Net, torch = _model(blocks)
    from fengine import dist
    from fengine.model import FSDP, PretrainedInit

    if mode == 'whole':
        # fengine before row reads: no row opener, so the Load step reads the whole file.
        PretrainedInit.rows_opener = lambda self: None
    dist.init_dist()
    with torch.device('meta'):
        net = Net(init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    model = FSDP(net, shard_modules=['Block'])
    before = _rss_mib()
    model.init_weights(seed=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Spot check: the first block's bias is the checkpoint's (loaded, not left empty).
    bias = model.module.blocks[0].fc.bias.full_tensor()
    ok = bool(torch.equal(bias, torch.arange(WIDTH, dtype=torch.float32)))
    rank = dist.get_rank()
    Path(out, f'rank{rank}.json').write_text(json.dumps(dict(before=before, peak=peak, ok=ok)))


def _write_checkpoints(folder: Path, mib: int) -> tuple[int, dict[str, str]]:
    import torch
    from safetensors.torch import save_file

    blocks = max(1, round(mib * 2**20 / (4 * (WIDTH * WIDTH + WIDTH))))
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i in range(blocks):
        state[f'blocks.{i}.fc.weight'] = torch.randn(WIDTH, WIDTH, generator=gen)
        state[f'blocks.{i}.fc.bias'] = torch.arange(WIDTH, dtype=torch.float32)
    paths = {'pth': str(folder / 'model.pth'), 'safetensors': str(folder / 'model.safetensors')}
    torch.save(state, paths['pth'])
    save_file(state, paths['safetensors'])
    return blocks, paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _launch(checkpoint: str, mode: str, blocks: int, folder: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=folder))
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}', __file__, '--rank-of',
               checkpoint, '--mode', mode, '--blocks', str(blocks), '--out', str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f'{mode} on {checkpoint} failed:\n{done.stdout[-3000:]}'
                           f'{done.stderr[-3000:]}')
    ranks = [json.loads((out / f'rank{r}.json').read_text()) for r in (0, 1)]
    if not all(r['ok'] for r in ranks):
        raise RuntimeError(f'{mode} on {checkpoint} loaded wrong values')
    return dict(peak=max(r['peak'] for r in ranks), before=max(r['before'] for r in ranks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mib', type=int, default=160, help='checkpoint size (MiB)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--rank-of', help=argparse.SUPPRESS)
    parser.add_argument('--mode', help=argparse.SUPPRESS)
    parser.add_argument('--blocks', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_of:
        rank_main(args.rank_of, args.mode, args.blocks, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        blocks, paths = _write_checkpoints(folder, args.mib)
        size = os.path.getsize(paths['pth']) / 2**20
        print(f'{blocks} blocks, checkpoint {size:.0f} MiB, 2 ranks, peak RSS of the larger '
              f'rank (median of {args.repeats})')
        results = {(fmt, mode): [] for fmt in paths for mode in ('whole', 'rows')}
        for _ in range(args.repeats):
            for fmt, path in paths.items():
                for mode in ('whole', 'rows'):
                    results[fmt, mode].append(_launch(path, mode, blocks, folder))
        print(f'{"format":12} {"mode":6} {"before init":>12} {"peak":>10} {"peak - before":>14}')
        for (fmt, mode), runs in results.items():
            before = statistics.median(r['before'] for r in runs)
            peak = statistics.median(r['peak'] for r in runs)
            growth = statistics.median(r['peak'] - r['before'] for r in runs)
            print(f'{fmt:12} {mode:6} {before:10.0f} MiB {peak:6.0f} MiB {growth:10.0f} MiB')


if __name__ == '__main__':
    main()
