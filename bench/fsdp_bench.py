"""Sharded (FSDP2) against replicated (DDP) training: memory per rank and step time, CPU.

    PYTHONPATH=$PWD python -m bench.fsdp_bench                 # gpt-200m, 1, 2 and 4 processes
    PYTHONPATH=$PWD python -m bench.fsdp_bench --model gpt-17m --procs 1 2 --rounds 1

Each contender is one ``torchrun --nproc-per-node=N`` launch of this file (fresh
processes): a GPT-style model (:data:`MODELS`: ``gpt-200m``, 12 blocks of GPT-2 medium's
width, 204M parameters; ``gpt-350m``, GPT-2 medium's shape, 355M; ``gpt-17m``, 16.8M),
AdamW, a fixed global batch split over the ranks, the eager training step.

Before each launch the parent estimates the memory the launch needs (:func:`estimate_gb`:
per rank the parameters, gradients, two AdamW states and the update's temporaries, DDP's
gradient buckets, FSDP's gathered modules, activations, and what a process with torch and
Gloo loaded holds) and skips it, printing why, when that exceeds ``/proc/meminfo``'s
``MemAvailable`` less a reserve for everyone else: the machine is shared, and an
out-of-memory kill there hits other people's work.

- ``fsdp``: built on ``meta``, ``fengine.model.FSDP(shard_modules=['Block'])``, each
  rank initializes its own shards (``FSDP.init_weights``).
- ``ddp``: built on the CPU, ``init_weights()``, ``MMDistributedDataParallel``
  (one process: the bare model).

Per contender: the parameter elements a rank holds, the model state each rank holds
after a step (parameters and AdamW state, counted from the local tensors; gradients are
freed by ``zero_grad`` after each update), a rank's peak resident memory over the whole
launch (``VmHWM``, the largest over ranks), the peak over the timed steps above what it
held before building the model (``VmHWM`` reset after the warm-up steps, minus ``VmRSS``
before; the largest over ranks), the time to build the model
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

# ``tokens``: the sequence length trained on; ``batch``: the global batch. The large
# models keep both small so that a step on a 2-core CPU takes seconds, not minutes.
MODELS = {
    'gpt-200m': dict(config=dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=16,
                                 n_embd=1024), tokens=32, batch=4),
    'gpt-350m': dict(config=dict(vocab_size=50304, block_size=1024, n_layer=24, n_head=16,
                                 n_embd=1024), tokens=32, batch=4),
    'gpt-17m': dict(config=dict(vocab_size=8192, block_size=64, n_layer=4, n_head=8,
                                n_embd=512), tokens=64, batch=8),
}
KINDS = ('fsdp', 'ddp')
# What a rank holds besides the model: the interpreter, torch, Gloo, allocator slack.
PROCESS_GB = 0.8
# Left to everyone else on the machine when deciding whether a launch fits.
RESERVE_GB = 2.0


def parameter_count(config: dict) -> int:
    """Parameters of :class:`fengine.presets.GPT` (the head shares the embedding's weight)."""
    v, t, n, e = (config[k] for k in ('vocab_size', 'block_size', 'n_layer', 'n_embd'))
    return v * e + t * e + n * (12 * e * e + 13 * e) + 2 * e


def estimate_gb(kind: str, procs: int, model: str) -> float:
    """What one launch needs at its peak, all ranks together, in GB (an upper estimate).

    Per rank, float32: parameters, gradients, AdamW's two states and the temporaries of
    its multi-tensor update (24 bytes a parameter; a 355M-parameter FSDP rank of 2 peaked
    at 5.0 GB, where this gives 5.7 before the margin), whole under DDP plus its gradient
    buckets (4 more; one process runs the bare model), a 1/N share under FSDP plus the
    gathered parameters and gradients of the root module (embeddings, final norm) and of
    two blocks (one prefetched); the activations of the rank's batch; :data:`PROCESS_GB`.
    Then 20% for what this misses.
    """
    spec = MODELS[model]
    c = spec['config']
    params = parameter_count(c)
    block = 12 * c['n_embd'] ** 2 + 13 * c['n_embd']
    if kind == 'ddp':
        state = params * (28 if procs > 1 else 24)
    else:
        root = params - c['n_layer'] * block
        state = params * 24 / procs + 8 * (root + 2 * block)
    tokens = spec['batch'] / procs * spec['tokens']
    per_layer = 34 * c['n_embd'] + 5 * c['n_head'] * spec['tokens']
    activations = tokens * (c['n_layer'] * per_layer + 4 * c['vocab_size']) * 4
    per_rank = (state + activations) / 1e9 + PROCESS_GB
    return 1.2 * procs * per_rank


def mem_available_gb() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in GB (NaN where there is none)."""
    with open('/proc/meminfo') as meminfo:
        for line in meminfo:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024 / 1e9
    return float('nan')


def fits(kind: str, procs: int, model: str) -> str | None:
    """``None`` if the launch fits in the memory available now, else why it does not."""
    need, available = estimate_gb(kind, procs, model), mem_available_gb()
    if need > available - RESERVE_GB:
        return (f'does not fit: needs ~{need:.1f} GB, {available:.1f} GB available '
                f'({RESERVE_GB:.0f} GB left to others)')
    return None


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


def language_model(config: dict) -> type:
    """A BaseModel class: :class:`fengine.presets.GPT` of ``config`` with its loss."""
    import torch.nn.functional as F

    from fengine.model import BaseModel
    from fengine.presets import GPT, GPTConfig

    class LM(BaseModel):
        def __init__(self):
            super().__init__(init_cfg=[
                dict(type='Normal', layer=['Linear', 'Embedding'], std=0.02, bias=0),
                dict(type='Constant', layer='LayerNorm', val=1, bias=0)])
            self.net = GPT(GPTConfig(**config))

        def forward(self, tokens, mode='tensor'):
            logits = self.net(tokens[:, :-1])
            return dict(loss=F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()))

    return LM


def worker(kind: str, model_name: str, steps: int, warmup: int) -> None:
    import torch
    from torch.distributed.tensor import DTensor

    from fengine import dist
    from fengine.model import FSDP, MMDistributedDataParallel
    from fengine.model.fsdp import local_numel
    from fengine.optim import OptimWrapper

    spec = MODELS[model_name]
    LM = language_model(spec['config'])

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
    per_rank = spec['batch'] // world
    batches = [torch.randint(spec['config']['vocab_size'], (spec['batch'], spec['tokens'] + 1),
                             generator=generator)[rank * per_rank:(rank + 1) * per_rank]
               for _ in range(warmup + steps)]
    times = []
    peak_mb = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            peak_mb = _rss_peak_mb()  # the reset below forgets it
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
               step_s=statistics.median(times), peak_mb=max(peak_mb, _rss_peak_mb()),
               params=sum(p.numel() for p in model.parameters()),
               params_rank=local_numel(model))
    rows = dist.all_gather_object(row)
    if rank == 0:
        print('FSDP_BENCH ' + json.dumps(rows), flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def launch(kind: str, procs: int, steps: int, warmup: int, timeout: float,
           model: str = 'gpt-17m') -> dict:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    command = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={procs}',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}', __file__,
               '--worker', kind, '--model', model, '--steps', str(steps),
               '--warmup', str(warmup)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith('FSDP_BENCH ')), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f'{kind} on {procs} processes failed:\n{out.stdout[-2000:]}'
                           f'{out.stderr[-3000:]}')
    rows = json.loads(line.removeprefix('FSDP_BENCH '))
    return dict(kind=kind, procs=procs, params=rows[0]['params'],
                params_rank=max(r['params_rank'] for r in rows),
                state_mb=max(r['state_mb'] for r in rows),
                peak_mb=max(r['peak_mb'] for r in rows),
                peak_steps_mb=max(r['peak_steps_mb'] for r in rows),
                build_s=max(r['build_s'] for r in rows), init_s=max(r['init_s'] for r in rows),
                step_s=max(r['step_s'] for r in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=sorted(MODELS), default='gpt-200m')
    parser.add_argument('--procs', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--kinds', nargs='+', choices=KINDS, default=list(KINDS),
                        help='the contenders (default: both)')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--steps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--worker', choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument('--json', type=Path, help='also write the rows here')
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.steps, args.warmup)
        return
    print(f'{args.model}: {parameter_count(MODELS[args.model]["config"]) / 1e6:.1f}M '
          f'parameters; estimated need per launch (all ranks): ' + ', '.join(
              f'{kind} x{procs} {estimate_gb(kind, procs, args.model):.1f} GB'
              for procs in args.procs for kind in args.kinds), flush=True)
    results: dict[tuple, list] = {}
    skipped: dict[tuple, str] = {}
    for _ in range(args.rounds):
        for procs in args.procs:
            for kind in args.kinds:
                why = fits(kind, procs, args.model)
                if why is not None:
                    print(f'skipping {kind} on {procs} processes: {why}', flush=True)
                    skipped[(kind, procs)] = why
                    continue
                tick = time.perf_counter()
                row = launch(kind, procs, args.steps, args.warmup, timeout=900,
                             model=args.model)
                print(f'{kind} on {procs} processes: {time.perf_counter() - tick:.0f} s',
                      flush=True)
                results.setdefault((kind, procs), []).append(row)
    keys = ('params_rank', 'state_mb', 'peak_mb', 'peak_steps_mb', 'build_s', 'init_s',
            'step_s')
    print(f'{"procs":>5} {"wrapper":<7} {"params/rank":>12} {"state MB/rank":>14} '
          f'{"peak RSS MB":>12} {"peak +RSS MB":>13} {"build s":>8} {"init s":>7} '
          f'{"step s":>7} {"step / ddp":>10}')
    table = []
    for procs in args.procs:
        medians = {kind: {k: statistics.median(r[k] for r in results[(kind, procs)])
                          for k in keys}
                   for kind in args.kinds if (kind, procs) in results}
        for kind in args.kinds:
            if kind not in medians:
                print(f'{procs:>5} {kind:<7} skipped: {skipped.get((kind, procs), "")}')
                table.append(dict(kind=kind, procs=procs, skipped=skipped.get((kind, procs))))
                continue
            m = medians[kind]
            ratio = m['step_s'] / medians['ddp']['step_s'] if 'ddp' in medians \
                else float('nan')
            print(f'{procs:>5} {kind:<7} {m["params_rank"] / 1e6:>11.1f}M '
                  f'{m["state_mb"]:>14.1f} {m["peak_mb"]:>12.0f} {m["peak_steps_mb"]:>13.0f} '
                  f'{m["build_s"]:>8.2f} {m["init_s"]:>7.2f} {m["step_s"]:>7.3f} '
                  f'{ratio:>10.2f}')
            table.append(dict(kind=kind, procs=procs, model=args.model, **m,
                              step_vs_ddp=ratio))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


if __name__ == '__main__':
    main()
