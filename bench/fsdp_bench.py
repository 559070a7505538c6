"""Sharded (FSDP2) against replicated (DDP) training: memory per rank and step time, CPU.

    PYTHONPATH=$PWD python -m bench.fsdp_bench                 # 1, 2 and 4 processes
    PYTHONPATH=$PWD python -m bench.fsdp_bench --procs 1 2 --rounds 1 --steps 3

Each contender is one ``torchrun --nproc-per-node=N`` launch of this file (fresh
processes): a GPT-style model (:data:`MODEL`), AdamW, a fixed global batch split over
the ranks, the eager training step.

- ``fsdp``: built on ``meta``, ``fengine.model.FSDP(shard_modules=['Block'])``, each
  rank initializes its own shards (``FSDP.init_weights``).
- ``ddp``: built on the CPU, ``init_weights()``, ``MMDistributedDataParallel``
  (one process: the bare model).

Per contender: the model state each rank holds after a step (parameters and AdamW state,
counted from the local tensors; gradients are freed by ``zero_grad`` after each update), the peak resident memory of a rank over the timed
steps above what it held before building the model (``VmHWM`` reset after the warm-up
steps, minus ``VmRSS`` before; the largest over ranks), the time to build the model
(``fsdp``: on meta), to shard and initialize it, and the median step time (the slowest
rank's). Contenders take turns round by round (fsdp, ddp, fsdp, ddp...)
so that a slow spell of the shared machine hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# 4 layers of width 512, vocabulary 8192, 64 tokens: 16.8M parameters. A few hundred
# million do not train in reasonable time on a shared 2-core CPU machine.
MODEL = dict(vocab_size=8192, block_size=64, n_layer=4, n_head=8, n_embd=512)
GLOBAL_BATCH = 8


def _rss_peak_mb() -> float:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def _rss_mb() -> float:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def _reset_peak() -> None:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS
    except OSError:
        pass


def worker(kind: str, steps: int, warmup: int) -> None:
    import torch
    import torch.nn.functional as F
    from torch.distributed.tensor import DTensor

    from fengine import dist
    from fengine.model import FSDP, BaseModel, MMDistributedDataParallel
    from fengine.optim import OptimWrapper
    from fengine.presets import GPT, GPTConfig

    class LM(BaseModel):
        def __init__(self):
            super().__init__(init_cfg=[
                dict(type='Normal', layer=['Linear', 'Embedding'], std=0.02, bias=0),
                dict(type='Constant', layer='LayerNorm', val=1, bias=0)])
            self.net = GPT(GPTConfig(**MODEL))

        def forward(self, tokens, mode='tensor'):
            logits = self.net(tokens[:, :-1])
            return dict(loss=F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()))

    dist.init_dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    baseline_mb = _rss_mb()
    start = time.perf_counter()
    if kind == 'fsdp':
        with torch.device('meta'):
            net = LM()
        build_s = time.perf_counter() - start
        model = FSDP(net, shard_modules=['Block'])
        model.init_weights(seed=0)
    else:
        net = LM()
        build_s = time.perf_counter() - start
        net.init_weights(seed=0)
        model = MMDistributedDataParallel(net) if world > 1 else net
    init_s = time.perf_counter() - start - build_s
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    generator = torch.Generator().manual_seed(1)
    per_rank = GLOBAL_BATCH // world
    batches = [torch.randint(MODEL['vocab_size'], (GLOBAL_BATCH, MODEL['block_size'] + 1),
                             generator=generator)[rank * per_rank:(rank + 1) * per_rank]
               for _ in range(warmup + steps)]
    times = []
    for i, batch in enumerate(batches):
        if i == warmup:
            _reset_peak()
        tick = time.perf_counter()
        float(model.train_step((batch,), wrapper)['loss'])
        if i >= warmup:
            times.append(time.perf_counter() - tick)

    def local(t):
        return t.to_local() if isinstance(t, DTensor) else t
    tensors = [local(p) for p in model.parameters()] + \
        [local(p.grad) for p in model.parameters() if p.grad is not None] + \
        [local(t) for s in wrapper.optimizer.state.values() for t in s.values()
         if isinstance(t, torch.Tensor) and t.dim()]
    row = dict(rank=rank, state_mb=sum(t.numel() * t.element_size() for t in tensors) / 2**20,
               peak_steps_mb=_rss_peak_mb() - baseline_mb, build_s=build_s, init_s=init_s,
               step_s=statistics.median(times),
               params=sum(p.numel() for p in model.parameters()))
    rows = dist.all_gather_object(row)
    if rank == 0:
        print('FSDP_BENCH ' + json.dumps(rows), flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def launch(kind: str, procs: int, steps: int, warmup: int, timeout: float) -> dict:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    command = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={procs}',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}', __file__,
               '--worker', kind, '--steps', str(steps), '--warmup', str(warmup)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith('FSDP_BENCH ')), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f'{kind} on {procs} processes failed:\n{out.stdout[-2000:]}'
                           f'{out.stderr[-3000:]}')
    rows = json.loads(line.removeprefix('FSDP_BENCH '))
    return dict(kind=kind, procs=procs, params=rows[0]['params'],
                state_mb=max(r['state_mb'] for r in rows),
                peak_steps_mb=max(r['peak_steps_mb'] for r in rows),
                build_s=max(r['build_s'] for r in rows), init_s=max(r['init_s'] for r in rows),
                step_s=max(r['step_s'] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--worker', choices=('fsdp', 'ddp'), help=argparse.SUPPRESS)
    parser.add_argument('--json', type=Path, help='also write the rows here')
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup)
        return
    results: dict[tuple, list] = {}
    for _ in range(args.rounds):
        for procs in args.procs:
            for kind in ('fsdp', 'ddp'):
                row = launch(kind, procs, args.steps, args.warmup, timeout=900)
                results.setdefault((kind, procs), []).append(row)
    print(f'{"contender":<10} {"procs":>5} {"state MB/rank":>14} {"peak +RSS MB":>13} '
          f'{"build s":>8} {"init s":>7} {"step s":>7} {"step / ddp":>10}')
    table = []
    for procs in args.procs:
        medians = {}
        for kind in ('fsdp', 'ddp'):
            runs = results[(kind, procs)]
            medians[kind] = {k: statistics.median(r[k] for r in runs)
                             for k in ('state_mb', 'peak_steps_mb', 'build_s', 'init_s',
                                       'step_s')}
        for kind in ('fsdp', 'ddp'):
            m = medians[kind]
            ratio = m['step_s'] / medians['ddp']['step_s']
            print(f'{kind:<10} {procs:>5} {m["state_mb"]:>14.1f} {m["peak_steps_mb"]:>13.0f} '
                  f'{m["build_s"]:>8.2f} {m["init_s"]:>7.2f} {m["step_s"]:>7.3f} {ratio:>10.2f}')
            table.append(dict(kind=kind, procs=procs, **m, step_vs_ddp=ratio))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == '__main__':
    main()
