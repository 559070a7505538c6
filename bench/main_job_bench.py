"""The README's main job, eager against compiled, cold and warm compile caches.

    PYTHONPATH=$PWD python -m bench.main_job_bench --epochs 1 --repeats 2

Each run is ``examples/fashion_mnist.py --data synthetic --seed 0`` (the tutorial's MLP,
60000/10000 synthetic images) in a fresh interpreter, as a user starts it. Contenders:

- ``eager``: ``--no-compile``;
- ``compiled, process``: the default ``compile`` (inductor): the first step forks a child
  that precompiles the training step into the cache folder while eager steps run; the
  parent loads it when the child ends, and the next run loads it at its first step;
  ``keep_faster`` times compiled steps against eager ones and keeps the faster;
- ``compiled, thread``: ``background='thread', precompiled=False, keep_faster=False``, a
  worker thread compiles while eager steps run (the default before the process);
- ``compiled, foreground``: ``background=False``: the first step waits for the compile.

The options are set by this script (``BaseModel.compile_steps`` patched in the run).

Each compiled contender runs twice in a row on one cache folder of its own
(``FENGINE_COMPILE_CACHE``, ``TORCHINDUCTOR_CACHE_DIR`` unset): ``cold`` (empty folder)
then ``warm`` (what the cold run left). A repeat runs every contender once, in the
order of :data:`CONTENDERS`, so a slow spell of the machine hits them all; the table
shows medians.

Columns: ``wall``: from starting the interpreter to its exit (imports, data, training,
validation); ``ratio``: ``wall`` over eager's; ``to compiled``: from the line that says
compilation starts (the first step) to the line that says the compiled step is ready;
``switch at``: the step from which compiled steps ran. The load (``os.getloadavg``) is
printed with every run: figures taken under load say so.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / 'examples' / 'fashion_mnist.py'
# compile options of each contender (None: --no-compile)
OPTIONS = {'compiled, process': {},
           'eager': None,
           'compiled, thread': dict(background='thread', precompiled=False, keep_faster=False),
           'compiled, foreground': dict(background=False)}
CONTENDERS = tuple(OPTIONS)
_MARKS = {'compiling the training step': 'compile_start',
          'compiled the training step': 'compile_end',
          'loaded the training step': 'compile_end'}


def _worker(args: dict) -> None:
    """One run of the example in this interpreter; times of the compile lines to ``out``."""
    import importlib.util
    import re

    marks: dict = {}

    class Marks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith('torch intra-op threads'):
                marks['threads'] = message.split(' (')[0].rsplit(' ', 1)[-1]
            if ' per compiled step, ' in message:  # keep_faster's decision
                marks['keep_faster'] = ('eager' if 'runs eager steps' in message else
                                        'compiled') + ' (' + message.split(' (', 1)[1]
            for prefix, key in _MARKS.items():
                if message.startswith(prefix) and key not in marks:
                    marks[key] = time.time()
                    found = re.search(r'from its step (\d+)', message)
                    if found:
                        marks['switch_step'] = int(found.group(1))
                    found = re.search(r'in ([\d.]+) s', message)
                    if found and key == 'compile_end':
                        marks['compile_seconds'] = float(found.group(1))

    from fengine.logging import get_logger
    get_logger().addHandler(Marks())
    if args['options']:
        from fengine.model import BaseModel
        compile_steps = BaseModel.compile_steps

        def with_options(self, compile=True, **kwargs):
            options = dict(compile) if isinstance(compile, dict) else {}
            return compile_steps(self, {**options, **args['options']}, **kwargs)

        BaseModel.compile_steps = with_options
    sys.path.insert(0, str(EXAMPLE.parent))
    spec = importlib.util.spec_from_file_location('fashion_mnist_example', EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    metrics = example.main(args['argv'])
    from fengine.func.compile_fork import forked_compiles
    left = forked_compiles()  # still compiling: they end on their own after this exit
    if left:
        marks['child_left'] = left[0].pid
    marks['accuracy'] = float(metrics.get('synthetic/Accuracy', metrics.get('Accuracy', 0)))
    Path(args['out']).write_text(json.dumps(marks))


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


def run_once(contender: str, cache: str | None, epochs: int, scratch: Path) -> dict:
    """Run the example once in a fresh interpreter; return its times."""
    out = scratch / 'marks.json'
    out.unlink(missing_ok=True)
    argv = ['--data', 'synthetic', '--seed', '0', '--epochs', str(epochs),
            '--work-dir', str(scratch / 'work_dir')]
    if contender == 'eager':
        argv.append('--no-compile')
    env = {k: v for k, v in os.environ.items() if k != 'TORCHINDUCTOR_CACHE_DIR'}
    env['CUDA_VISIBLE_DEVICES'] = ''
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    if cache is not None:
        env['FENGINE_COMPILE_CACHE'] = cache
    spec = json.dumps(dict(argv=argv, out=str(out), options=OPTIONS[contender]))
    load = os.getloadavg()[0]
    start = time.time()
    done = subprocess.run([sys.executable, '-m', 'bench.main_job_bench', '--worker', spec],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall = time.time() - start
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f'{contender} failed (exit {done.returncode}):\n'
                           + '\n'.join(done.stdout.splitlines()[-20:]))
    marks = json.loads(out.read_text())
    # A compile child the run left (it ends on its own) would take the next run's CPU
    # and write its warm start late: wait for it, outside the run's wall time.
    child_after = None
    if marks.get('child_left'):
        waited = time.time()
        while _alive(marks['child_left']):
            time.sleep(0.2)
        child_after = time.time() - waited
    # From the line that says compilation starts (or, for a precompiled step loaded at
    # the first step, the load's own seconds) to the line that says it is ready.
    to_compiled = (marks['compile_end'] - marks['compile_start']
                   if 'compile_end' in marks and 'compile_start' in marks
                   else marks.get('compile_seconds'))
    shutil.rmtree(scratch / 'work_dir', ignore_errors=True)
    return dict(wall=wall, to_compiled=to_compiled, switch_step=marks.get('switch_step'),
                compile_seconds=marks.get('compile_seconds'), accuracy=marks.get('accuracy'),
                threads=marks.get('threads'), keep_faster=marks.get('keep_faster'),
                child_after=child_after,
                load=load, load_after=os.getloadavg()[0])


def bench(epochs: int = 1, repeats: int = 2, log=print,
          contenders: tuple[str, ...] = CONTENDERS) -> list[dict]:
    """Each contender ``repeats`` times, interleaved; one row per (contender, cache)."""
    runs: dict[tuple[str, str], list[dict]] = {}
    scratch = Path(tempfile.mkdtemp(prefix='fengine-main-job-'))
    try:
        for repeat in range(repeats):
            for contender in contenders:
                caches = ['-'] if contender == 'eager' else ['cold', 'warm']
                folder = scratch / f'cache-{repeat}-{contender.split(", ")[-1]}'
                for cache in caches:
                    result = run_once(contender, None if cache == '-' else str(folder),
                                      epochs, scratch)
                    runs.setdefault((contender, cache), []).append(result)
                    log(f'repeat {repeat + 1}: {contender} ({cache}): wall '
                        f'{result["wall"]:.1f} s, to compiled {result["to_compiled"]}, '
                        f'switch at {result["switch_step"]}, accuracy {result["accuracy"]:.3f}, '
                        f'threads {result["threads"]}, keep_faster {result["keep_faster"]}, '
                        f'child left ended {result["child_after"]} s after, '
                        f'load {result["load"]:.1f} -> {result["load_after"]:.1f}')
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    eager = (statistics.median(r['wall'] for r in runs[('eager', '-')])
             if ('eager', '-') in runs else float('nan'))
    rows = []
    for (contender, cache), results in runs.items():
        wall = statistics.median(r['wall'] for r in results)
        to_compiled = [r['to_compiled'] for r in results if r['to_compiled'] is not None]
        rows.append(dict(contender=contender, cache=cache, wall=wall,
                         walls=[r['wall'] for r in results], ratio=wall / eager,
                         to_compiled=statistics.median(to_compiled) if to_compiled else None,
                         switch_steps=[r['switch_step'] for r in results],
                         loads=[round(r['load'], 2) for r in results]))
    return rows


def table(rows: list[dict]) -> str:
    lines = ['| contender | cache | wall (median) | runs | ratio to eager | to compiled | '
             'switch at | load (1 min) |', '|---|---|---:|---|---:|---:|---|---|']
    for row in rows:
        runs = ', '.join(f'{w:.1f}' for w in row['walls'])
        to_compiled = '' if row['to_compiled'] is None else f"{row['to_compiled']:.1f} s"
        switch = ', '.join(str(s) for s in row['switch_steps'] if s is not None)
        loads = ', '.join(str(v) for v in row['loads'])
        lines.append(f"| {row['contender']} | {row['cache']} | {row['wall']:.1f} s | {runs} | "
                     f"{row['ratio']:.2f}x | {to_compiled} | {switch} | {loads} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=1, help='epochs per run (default 1)')
    parser.add_argument('--repeats', type=int, default=2, help='rounds of every contender')
    parser.add_argument('--out', help='write the rows as JSON here')
    parser.add_argument('--contenders', nargs='+', choices=CONTENDERS, default=list(CONTENDERS),
                        help='which to run (default: all; ratios need eager)')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return
    rows = bench(args.epochs, args.repeats, contenders=tuple(args.contenders))
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
