"""The compiled path under FSDP2, side by side: what works, compile time, step time, memory.

    PYTHONPATH=$PWD python -m bench.fsdp_compile_bench                  # inductor and aot_eager
    PYTHONPATH=$PWD python -m bench.fsdp_compile_bench --backends aot_eager --rounds 1

Each contender is one ``torchrun --nproc-per-node=2`` launch (fresh processes, Gloo, one
thread per rank, an empty inductor cache folder of its own: a user's first run) training
:data:`MODEL` (a small GPT) for :data:`STEPS` AdamW steps on a global batch of 8, built on
``meta`` and sharded with ``fengine.model.FSDP(shard_modules=['Block'])``:

- ``eager``: no compilation (the reference the others are compared with).
- ``block``: ``compile_steps()`` with ``compile_scope='block'``: each block's forward
  compiled on its own (FSDP2's hooks outside the compiled code).
- ``model``: ``compile_scope='model'``: the whole model's forward (loss included) compiled;
  dynamo splits it at every FSDP2 hook.
- ``fused``: fengine's one-graph training step (``fengine.func.make_train_step``:
  ``torch.func.grad`` and the AdamW update in one graph) over the sharded model.

Per contender: whether it worked (an exception is printed with its first line), whether
its losses equal eager's within a relative 1e-5, the first step's time minus the median
step time ("compile s"), how many graphs dynamo made, the median of the remaining steps
(the slowest rank's), and the peak resident memory of a rank over the whole run above
what it held before building the model (the largest over ranks). Contenders take turns
round by round.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fsdp_bench import _free_port, _rss_mb, _rss_peak_mb, language_model

# 4 blocks of width 128, vocabulary 1024, 64 tokens: 1.06M parameters, so that a cold
# inductor compile of every contender fits in minutes on a shared 2-core machine.
MODEL = dict(vocab_size=1024, block_size=64, n_layer=4, n_head=4, n_embd=128)
STEPS, GLOBAL_BATCH = 10, 8
VARIANTS = ('eager', 'block', 'model', 'fused')
ROOT = Path(__file__).resolve().parents[1]


def worker(variant: str, backend: str) -> None:
    import torch

    from fengine import dist
    from fengine.func import make_train_step
    from fengine.model import FSDP
    from fengine.optim import OptimWrapper

    LM = language_model(MODEL)

    dist.init_dist()
    rank, world = dist.get_rank(), dist.get_world_size()
    baseline_mb = _rss_mb()
    with torch.device('meta'):
        net = LM()
    if variant in ('block', 'model'):
        net.compile_steps(dict(backend=backend, background=False), strict=True)
    model = FSDP(net, shard_modules=['Block'],
                 compile_scope='model' if variant == 'model' else 'block')
    model.init_weights(seed=0)
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    generator = torch.Generator().manual_seed(1)
    per_rank = GLOBAL_BATCH // world
    batches = [torch.randint(MODEL['vocab_size'], (GLOBAL_BATCH, MODEL['block_size'] + 1),
                             generator=generator)[rank * per_rank:(rank + 1) * per_rank]
               for _ in range(STEPS)]
    row: dict = dict(rank=rank, error=None, losses=[], times=[])
    try:
        if variant == 'fused':
            step = make_train_step(model.module, wrapper, compile=dict(backend=backend),
                                   strict=True)
        for batch in batches:
            tick = time.perf_counter()
            if variant == 'fused':
                log_vars = step(step.state, (batch,))[1]
            else:
                log_vars = model.train_step((batch,), wrapper)
            loss = log_vars['loss']
            loss = loss.full_tensor() if hasattr(loss, 'full_tensor') else loss
            if variant == 'fused':  # the eager step averages the logged loss over the ranks
                loss = loss.detach().clone()
                torch.distributed.all_reduce(loss)
                loss = loss / world
            row['losses'].append(float(loss))
            row['times'].append(time.perf_counter() - tick)
    except Exception as error:  # noqa: BLE001 - the bench reports what failed, and how
        lines = [ln for ln in str(error).splitlines() if ln.strip()]
        row['error'] = f'{type(error).__name__}: {lines[0] if lines else ""}'[:300]
    row['peak_mb'] = _rss_peak_mb() - baseline_mb
    row['graphs'] = torch._dynamo.utils.counters['stats']['unique_graphs']
    rows = dist.all_gather_object(row)
    if rank == 0:
        print('FSDP_COMPILE_BENCH ' + json.dumps(rows), flush=True)


def launch(variant: str, backend: str, timeout: float) -> dict:
    cache = tempfile.mkdtemp(prefix='fsdp-compile-bench-')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'TORCHINDUCTOR_CACHE_DIR': cache}
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}', '-m',
               'bench.fsdp_compile_bench', '--worker', variant, '--backends', backend]
    try:
        # The repository root, where ``-m bench.fsdp_compile_bench`` resolves.
        out = subprocess.run(command, capture_output=True, text=True, env=env,
                             timeout=timeout, cwd=ROOT)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    line = next((ln for ln in out.stdout.splitlines()
                 if ln.startswith('FSDP_COMPILE_BENCH ')), None)
    if line is None:
        tail = (out.stdout + out.stderr).strip().splitlines()
        return dict(variant=variant, backend=backend, error='launch failed: ' +
                    ' | '.join(tail[-3:])[:400], losses=[])
    rows = json.loads(line.removeprefix('FSDP_COMPILE_BENCH '))
    errors = [r['error'] for r in rows if r['error']]
    result = dict(variant=variant, backend=backend, error=errors[0] if errors else None,
                  losses=rows[0]['losses'], peak_mb=max(r['peak_mb'] for r in rows),
                  graphs=rows[0]['graphs'])
    if not errors:
        slowest = [max(ts) for ts in zip(*(r['times'] for r in rows))]
        result['step_s'] = statistics.median(slowest[1:])
        result['compile_s'] = slowest[0] - result['step_s']
    return result


def _matches(losses: list, reference: list) -> bool:
    return len(losses) == len(reference) > 0 and all(
        abs(a - b) <= 1e-5 * abs(b) for a, b in zip(losses, reference))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backends', nargs='+', default=['inductor', 'aot_eager'],
                        choices=('inductor', 'aot_eager', 'eager'))
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--rounds', type=int, default=1)
    parser.add_argument('--worker', choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument('--json', help='also write the rows to this file')
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.backends[0])
        return
    variants = ['eager'] + [v for v in args.variants if v != 'eager']
    results: dict[tuple, list] = {}
    for _ in range(args.rounds):
        for backend in args.backends:
            for variant in variants:
                if variant == 'eager' and backend != args.backends[0]:
                    continue  # eager does not depend on the backend
                results.setdefault((variant, backend), []).append(
                    launch(variant, backend, timeout=1200))
    reference = results[('eager', args.backends[0])][0]['losses']
    print(f'{"variant":<7} {"backend":<10} {"works":<6} {"= eager":<8} {"compile s":>9} '
          f'{"graphs":>6} {"step s":>7} {"peak MB":>8}  error')
    table = []
    for (variant, backend), runs in results.items():
        ok = [r for r in runs if not r['error']]
        row = dict(variant=variant, backend='-' if variant == 'eager' else backend,
                   works=bool(ok), error=None if ok else runs[0]['error'],
                   equal=bool(ok) and all(_matches(r['losses'], reference) for r in ok))
        for key in ('compile_s', 'graphs', 'step_s', 'peak_mb'):
            row[key] = statistics.median(r[key] for r in ok) if ok and key in ok[0] \
                else float('nan')
        table.append(row)
        print(f'{row["variant"]:<7} {row["backend"]:<10} {str(row["works"]):<6} '
              f'{str(row["equal"]):<8} {row["compile_s"]:>9.2f} {row["graphs"]:>6.0f} '
              f'{row["step_s"]:>7.3f} '
              f'{row["peak_mb"]:>8.0f}  {row["error"] or ""}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(table, f, indent=1)


if __name__ == '__main__':
    main()
