"""Run every benchmark of the project, print one table, save the rows as JSON.

    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh python -m bench --device cpu
    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh python -m bench --quick
    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh python -m bench --only step
    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh python -m bench --only epoch
    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh python -m bench --only bandwidth

Ratios are each row's time over its baseline's on the same model (``fengine`` for
initialization, ``fengine compiled`` for training steps and epochs, ``import torch``
for imports): above 1 is slower than the baseline. A peer that is not installed is
listed as skipped, never estimated.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import torch

from .bandwidth_bench import bench_bandwidth, bench_fill_bandwidth
from .epoch_bench import TRAIN_SIZE, VAL_SIZE, bench_epoch
from .init_bench import bench_first_call, bench_import, bench_init
from .init_fresh import bench_fresh
from .kernels_bench import FULL_NUMEL, QUICK_NUMEL, bench_kernels
from .step_bench import STEP_MODELS, WARMUP, bench_step

FULL_PRESETS = ['debug', 'resnet50', 'vit_b_16', 'gpt-125m', 'gpt-350m']
QUICK_PRESETS = ['debug']
FULL_STEP_MODELS = ['fashion-mlp', 'resnet18-64', 'gpt-125m']  # gpt-125m: CUDA only
QUICK_STEP_MODELS = ['fashion-mlp']
QUICK_STEPS = 20
STEP_ROUNDS = 10  # short blocks, many rounds: see bench/step_bench.py
QUICK_EPOCH_SIZES = (6400, 1000)  # training and validation images
# Whole-model initialization against the copy bandwidth: a 1.3B model on CUDA; run on the
# CPU only when asked for (--only bandwidth), on a smaller model.
BANDWIDTH_PRESETS = {'cuda': ['gpt-1.3b'], 'cpu': ['gpt-125m'], 'quick': ['debug']}
BENCHMARKS = ('fresh', 'init', 'first-call', 'import', 'step', 'epoch', 'kernels', 'fill',
              'bandwidth')
RESULTS = Path(__file__).resolve().parent / 'results'


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as info:
            for line in info:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when the working tree has changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root, text=True,
                               capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ('+dirty' if dirty else '')


def environment(device: torch.device) -> dict:
    """What the figures were measured on: versions, hardware, date, command."""
    return dict(
        date=datetime.date.today().isoformat(),
        host=socket.gethostname(),
        command='python -m bench ' + shlex.join(sys.argv[1:]),
        commit=_commit(),
        device=str(device),
        cpu=_cpu_model(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        gpu=torch.cuda.get_device_name(device) if device.type == 'cuda' else None,
        python=platform.python_version(),
        versions={name: _version(name) for name in
                  ('torch', 'torchvision', 'mmengine', 'fengine', 'pytest-benchmark')},
    )


def _seconds(value: float) -> str:
    return f'{value * 1e3:.1f} ms' if value < 1 else f'{value:.2f} s'


def _ratio(value: float | None) -> str:
    if value is None:
        return ''
    return f'{value:.2f}x' if value >= 0.1 else f'{value:.2g}x'  # 0.0041x, not 0.00x


def _rate(value: float | None) -> str:
    if value is None:
        return ''
    return f'{value:.1f}' if value < 100 else f'{value:.0f}'


def _mebibytes(value: int | None) -> str:
    if value is None:
        return ''
    mib = value / 2**20
    return f'{mib:.1f} MiB' if abs(mib) < 100 else f'{mib:.0f} MiB'


BASELINES = ('fengine', 'fengine compiled', 'import torch', 'fengine philox',
             'fengine init_weights', 'memory write (fill_)')
# Columns only training-step rows fill; shown when the table has such a row.
STEP_COLUMNS = (('steps/s', lambda r: _rate(r.get('steps_per_s'))),
                ('samples/s', lambda r: _rate(r.get('samples_per_s'))),
                ('compile+warm-up', lambda r: '' if r.get('warmup_seconds') is None
                 else _seconds(r['warmup_seconds'])),
                ('peak mem', lambda r: _mebibytes(r.get('peak_mem_bytes'))),
                ('after warm-up', lambda r: _mebibytes(r.get('resident_bytes'))),
                ('step rise', lambda r: _mebibytes(r.get('step_rise_bytes'))),
                ('tensors', lambda r: _mebibytes(r.get('tensor_peak_bytes'))),
                ('tensors/eager', lambda r: _ratio(r.get('tensor_ratio'))))
# Columns only fresh-process rows fill: the phases of the ready time, and the whole process.
FRESH_COLUMNS = (('engine import', lambda r: _phase(r, 'engine')),
                 ('model library', lambda r: _phase(r, 'library')),
                 ('build', lambda r: _phase(r, 'build')),
                 ('init', lambda r: _phase(r, 'init')),
                 ('process', lambda r: '' if r.get('process') is None
                  else _seconds(r['process'])),
                 ('process ratio', lambda r: _ratio(r.get('process_ratio'))))


def _phase(row: dict, name: str) -> str:
    value = (row.get('phases') or {}).get(name)
    return '' if value is None else _seconds(value)


# Columns only epoch rows fill: that epoch's training and validation, accuracy, peak RSS.
EPOCH_COLUMNS = (('train epoch', lambda r: '' if r.get('train_seconds') is None
                  else _seconds(r['train_seconds'])),
                 ('val', lambda r: '' if r.get('val_seconds') is None
                  else _seconds(r['val_seconds'])),
                 ('accuracy', lambda r: '' if r.get('accuracy') is None
                  else f"{r['accuracy']:.1%}"),
                 ('peak RSS', lambda r: _mebibytes(r.get('peak_rss_bytes'))))


def format_table(rows: list[dict]) -> str:
    """One plain-text table: benchmark, model, contender, time, range, ratio, note.

    With training-step rows it also has their steps/s, samples/s, compile and warm-up
    time and peak memory; their time is the time per step. With epoch rows, the
    epoch's training and validation time, the accuracy and the peak RSS.
    """
    extra = ((FRESH_COLUMNS if any(row['benchmark'] == 'fresh' for row in rows) else ())
             + (STEP_COLUMNS if any(row['benchmark'] == 'step' for row in rows) else ())
             + (EPOCH_COLUMNS if any(row['benchmark'] == 'epoch' for row in rows) else ()))
    header = ('benchmark', 'model', 'contender', 'time (median)', 'range (min-max)', 'ratio',
              *(name for name, _ in extra), 'note')
    lines = []
    for row in rows:
        notes = [row.get('note', '')]
        spread = ''
        if row['seconds'] is not None:
            time_text = _seconds(row['seconds'])
            if len(row['times']) > 1:
                spread = f"{_seconds(min(row['times']))}-{_seconds(max(row['times']))}"
        elif row['status'].startswith('failed'):
            time_text, notes = 'failed', [row['status'].partition(': ')[2]]
        else:
            time_text = row['status']
        ratio = _ratio(row['ratio'])
        if ratio and row['baseline'] not in BASELINES:
            ratio += '*'
            notes.insert(0, f"* vs {row['baseline']}")
        lines.append((row['benchmark'], row['model'], row['contender'], time_text, spread,
                      ratio, *(cell(row) for _, cell in extra),
                      '; '.join(n for n in notes if n)))
    columns = len(header) - 1  # the note column is left ragged
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(columns)]
    out = []
    for index, line in enumerate([header, *lines]):
        cells = [cell.ljust(width) if i < 3 else cell.rjust(width)
                 for i, (cell, width) in enumerate(zip(line, widths))]
        out.append('  '.join(cells + [line[-1]]).rstrip())
        if index == 0:
            out.append('  '.join('-' * w for w in widths) + '  ----')
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse arguments, run the benchmarks, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='target device of the initialization and step benchmarks')
    parser.add_argument('--quick', action='store_true',
                        help="smoke run: the 'debug' preset, the MLP's training step for "
                        f'{QUICK_STEPS} steps, one repeat')
    parser.add_argument('--only', nargs='+', choices=BENCHMARKS, metavar='BENCHMARK',
                        help=f'run only these benchmarks (of {", ".join(BENCHMARKS)})')
    parser.add_argument('--presets', nargs='+', metavar='NAME',
                        help=f'presets to initialize (default: {" ".join(FULL_PRESETS)}; '
                        'bandwidth: gpt-1.3b on CUDA, gpt-125m on the CPU, debug with --quick)')
    parser.add_argument('--step-models', nargs='+', metavar='NAME', choices=STEP_MODELS,
                        help='models whose training step is timed (default: '
                        f'{" ".join(FULL_STEP_MODELS)}; quick: {" ".join(QUICK_STEP_MODELS)})')
    parser.add_argument('--steps', type=int, help='timed training steps per block (default: '
                        "the model's, e.g. for the MLP "
                        f"{STEP_MODELS['fashion-mlp'].cpu_steps} on the CPU, "
                        f"{STEP_MODELS['fashion-mlp'].cuda_steps} on CUDA; quick: {QUICK_STEPS})")
    parser.add_argument('--repeats', type=int, help='timed runs per contender (default 3), '
                        f'or rounds of one block of steps each for training steps (default '
                        f'{STEP_ROUNDS}); quick: 1; the table shows their median')
    parser.add_argument('--fresh-repeats', type=int,
                        help='fresh interpreters per fresh-process, import and first-call measure '
                        '(default 3; quick: 1)')
    parser.add_argument('--python', metavar='PATH',
                        help='interpreter of the fresh-process init runs (default: this one); '
                        "MMEngine's row needs mmengine importable there")
    parser.add_argument('--epoch-size', type=int, nargs=2, metavar=('TRAIN', 'VAL'),
                        help='images of the epoch benchmark\'s training and validation '
                        f'sets (default: {TRAIN_SIZE} {VAL_SIZE}; quick: '
                        f'{" ".join(map(str, QUICK_EPOCH_SIZES))})')
    parser.add_argument('--compile-backend', metavar='NAME',
                        help="torch.compile backend of the epoch benchmark's 'fengine "
                        "compiled' (default: inductor)")
    parser.add_argument('--out', type=Path, help='JSON file to write (default: '
                        'bench/results/<hostname>-<YYYY-MM-DD>.json)')
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    presets = args.presets or (QUICK_PRESETS if args.quick else FULL_PRESETS)
    step_models = args.step_models or (QUICK_STEP_MODELS if args.quick else FULL_STEP_MODELS)
    steps = args.steps or (QUICK_STEPS if args.quick else None)
    repeats = args.repeats or (1 if args.quick else 3)
    step_rounds = args.repeats or (1 if args.quick else STEP_ROUNDS)
    fresh_repeats = args.fresh_repeats or (1 if args.quick else 3)
    epoch_size = args.epoch_size or (QUICK_EPOCH_SIZES if args.quick else (TRAIN_SIZE, VAL_SIZE))
    run = set(args.only or BENCHMARKS)
    env = environment(device)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731  progress only

    rows = []
    if 'fresh' in run:  # the headline: a ready model as a training script meets it
        rows += bench_fresh(presets, args.device, repeats=fresh_repeats, python=args.python,
                            log=log)
    if 'init' in run:
        rows += bench_init(presets, device, repeats=repeats, log=log)
    if 'first-call' in run:  # a small model, so that its one-off costs show
        rows += bench_first_call('debug', device, repeats=fresh_repeats, log=log)
    if 'import' in run:
        rows += bench_import(fresh_repeats, log=log)
    if 'step' in run:
        rows += bench_step(step_models, device, steps=steps, repeats=step_rounds, log=log)
    if 'epoch' in run:
        rows += bench_epoch(device.type, train_size=epoch_size[0], val_size=epoch_size[1],
                            compile_backend=args.compile_backend, log=log)
    kernels_numel = QUICK_NUMEL if args.quick else FULL_NUMEL
    if 'kernels' in run:  # CPU only: the fill on CUDA is the Triton kernel's job
        rows += bench_kernels(kernels_numel, repeats=repeats, log=log)
    if 'fill' in run:  # CPU: the C fill against the memory write bandwidth
        rows += bench_fill_bandwidth(kernels_numel, repeats=repeats, log=log)
    bandwidth = 'bandwidth' in run and (device.type == 'cuda' or args.only is not None)
    if bandwidth:
        bandwidth_presets = args.presets or BANDWIDTH_PRESETS[
            'quick' if args.quick else 'cuda' if device.type == 'cuda' else 'cpu']
        rows += bench_bandwidth(bandwidth_presets, device, repeats=repeats, log=log)

    print(f"\n{env['date']} on {env['host']}: {env['cpu']} ({env['cpu_count']} cores, "
          f"{env['torch_threads']} torch threads){', ' + env['gpu'] if env['gpu'] else ''}; "
          + ', '.join(f'{k} {v}' for k, v in env['versions'].items() if v))
    if 'fresh' in run:
        print(f'fresh: a ready model on {device} in a fresh process per run, median of '
              f'{fresh_repeats}; time = after import torch: the model library (torchvision), '
              'the engine import, construction and init_weights; process: the whole process '
              'timed from outside. Interpreter: ' + (args.python or sys.executable) + '.')
    if 'init' in run:
        print(f'init: time to a model ready on {device}, construction included; median of '
              f'{repeats} after 1 warm-up.')
    if run & {'first-call', 'import'}:
        print(f'first call, import: median of {fresh_repeats} fresh processes.')
    if 'step' in run:
        block = ', '.join(f'{STEP_MODELS[m].steps(device) if steps is None else steps} ({m})'
                          for m in step_models)
        memory = 'allocated' if device.type == 'cuda' else 'RSS'
        print(f'step: time per training step (forward, backward, SGD update) on {device}, '
              f'median of {step_rounds} blocks of {block} steps after {WARMUP} warm-up '
              'steps (compile+warm-up: their sum); each contender in a fresh process, '
              'contenders taking turns block by block; peak mem: high-water mark during the '
              f'timed steps over the memory before the model was built ({memory}); after '
              'warm-up: held when timing began (compiled code included); step rise: the '
              "timed steps' peak over that; tensors: tensors alive at the peak of one step.")
    if 'epoch' in run:
        print(f"epoch: the tutorial's FashionMNIST example on {device}, {epoch_size[0]} training "
              f'and {epoch_size[1]} validation synthetic images at batch 64, default hooks; '
              "each run a fresh process. 'fashion-mnist 1 epoch': runner.train() with "
              "max_epochs=1 (compilation included); 'fashion-mnist epoch 2': the second "
              'epoch (training + validation) of max_epochs=2. train epoch, val: that '
              "epoch's parts; accuracy: its validation; peak RSS: the process's high-water "
              'mark.')
    if 'kernels' in run:
        print(f'kernels: one float32 tensor of {kernels_numel:,} elements filled in place on '
              f'the CPU, median of {repeats} after 1 warm-up; fengine philox: the C loop (the '
              "note says when it is the torch operations instead); 'fengine philox "
              "(compiled)', from 2**20 elements: torch.compile of the torch operations, its "
              'compile paid before and shown in the note.')
    if 'fill' in run:
        print(f'fill: one float32 tensor of {kernels_numel:,} elements written in place on the '
              f'CPU (page faults paid before), median of {repeats} after 1 warm-up; '
              "bandwidth: bytes written over time; of write: over Tensor.fill_'s, the "
              'memory write bandwidth measured in the same run.')
    if bandwidth:
        print(f'bandwidth: a model built on meta materialized on {device}; bytes written over '
              f'time against a copy of as many bytes on the device; median of {repeats} after '
              '1 warm-up (mmengine: built on the CPU, init_weights, .to(device)).')
    print()
    print(format_table(rows))

    out = args.out or RESULTS / f"{env['host']}-{env['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp')
    tmp.write_text(json.dumps(dict(environment=env, rows=rows), indent=1) + '\n')
    tmp.replace(out)  # atomic: an interrupted run leaves the last complete file
    print(f'\nrows written to {out}')
    return rows


if __name__ == '__main__':
    main()
