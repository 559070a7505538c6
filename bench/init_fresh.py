"""Time to a ready model in a fresh process, as a training script meets it (the headline).

Each run is a new interpreter running this file as a script, for one contender and one
preset; it records when each phase ends, from the top of the script:

1. ``torch``: ``import torch``, the same for every contender and nothing an engine can
   change (2-13 s on the shared 2-core machine);
2. ``library``: the model's own library (``import torchvision`` for the vision presets,
   which imports ``torch._dynamo``), the same for every contender too;
3. ``engine``: ``import fengine.model`` or ``import mmengine.model``;
4. the model's code (``fengine.presets`` and the benchmark's wrapper classes): the
   user's own model file, so it is timed but left out of the ready time, for both;
5. ``build``: construction (fengine: under ``torch.device('meta')``; MMEngine: on the CPU,
   PyTorch's default initialization included);
6. ``init``: ``init_weights`` (fengine: ``init_weights(seed=0, device=device)``;
   MMEngine: ``init_weights()`` then ``.to(device)``).

**ready** is phases 2, 3, 5 and 6: everything after ``import torch`` that a script pays
for a model ready on the device. The parent also times the whole process from outside
(interpreter start and exit included): **process**. Contenders take turns, each run a
fresh process; the rows hold medians.
"""
from __future__ import annotations

import time

_START = time.perf_counter()  # before anything else: the script's own imports are timed

import json  # noqa: E402
import sys  # noqa: E402

__all__ = ['CONTENDERS', 'PHASES', 'bench_fresh']

CONTENDERS = ('fengine', 'mmengine', 'fengine (built on CPU)')
PHASES = ('torch', 'library', 'engine', 'model code', 'build', 'init')
READY_PHASES = ('library', 'engine', 'build', 'init')


def _child(contender: str, preset_name: str, device_name: str) -> dict[str, float]:
    """One run; returns the seconds each phase took."""
    marks = [('start', _START)]

    def mark(name: str) -> None:
        marks.append((name, time.perf_counter()))

    import torch
    mark('torch')
    if preset_name in ('resnet50', 'vit_b_16', 'resnet18-64'):
        import torchvision  # noqa: F401
    mark('library')
    if contender == 'mmengine':
        import mmengine.model  # noqa: F401
    else:
        import fengine.model  # noqa: F401
    mark('engine')
    from bench.init_bench import CONTENDERS as BUILDERS, _sync, quiet_init_logs
    from fengine.presets import get_preset
    preset, device = get_preset(preset_name), torch.device(device_name)
    mark('model code')
    with quiet_init_logs(mmengine=contender == 'mmengine'):
        model = BUILDERS[contender](preset, device, phase=mark)
        _sync(device)
    mark('init')
    del model
    return {name: end - begin for (_, begin), (name, end) in zip(marks, marks[1:])}


def _run(python: str, contender: str, preset: str, device: str, root: str) -> tuple[dict, float]:
    """One fresh process: its phases, and its wall time measured from outside."""
    import os
    import subprocess
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [root, env.get('PYTHONPATH')]))
    start = time.perf_counter()
    done = subprocess.run([python, os.path.join(root, 'bench', 'init_fresh.py'), contender,
                           preset, device], capture_output=True, text=True, cwd=root, env=env)
    wall = time.perf_counter() - start
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f'exit status {done.returncode}']
        raise RuntimeError(lines[-1])
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def _has_mmengine(python: str) -> bool:
    import subprocess
    code = 'import importlib.util, sys; sys.exit(importlib.util.find_spec("mmengine") is None)'
    return subprocess.run([python, '-c', code], capture_output=True).returncode == 0


def bench_fresh(preset_names: list[str], device: str = 'cpu', *, repeats: int = 3,
                contenders: list[str] | None = None, python: str | None = None,
                log=print) -> list[dict]:
    """Time every contender on every preset, each run in a fresh process.

    Args:
        preset_names: Names in :data:`fengine.presets.PRESETS`.
        device: The target device.
        repeats: Fresh processes per contender and preset; rows hold medians.
        contenders: Names in :data:`CONTENDERS` (default: all).
        python: The interpreter every run uses (default: this one). MMEngine's row needs
            ``mmengine`` importable there; all contenders share it, so ``import torch``
            and the kernels are the same build for each.
        log: Called with a progress line per round.

    Returns:
        Rows as :func:`bench.init_bench.bench_init`'s, ``benchmark='fresh'``, where
        ``seconds`` is the median ready time (ratios are taken on it), plus ``phases``
        (median seconds per phase of :data:`PHASES`), ``process`` (median outside wall
        time), ``process_times`` and ``process_ratio``.
    """
    import os
    import statistics

    from .init_bench import SKIPPED, _row, _short, set_ratios
    python = python or sys.executable
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = list(CONTENDERS) if contenders is None else contenders
    mmengine = _has_mmengine(python) if 'mmengine' in names else False
    rows = []
    for preset in preset_names:
        model_rows = []
        for name in names:
            row = _row(preset, name, device, params=None)
            row.update(benchmark='fresh', phases={}, phase_times=[], process=None,
                       process_times=[], process_ratio=None,
                       note='fresh process; ready = after import torch')
            if name == 'mmengine' and not mmengine:
                row['status'] = SKIPPED
            model_rows.append(row)
        for round_ in range(repeats):  # contenders take turns, round by round
            log(f'fresh: {preset}: round {round_ + 1}/{repeats}')
            for row in model_rows:
                if row['status'] != 'ok':
                    continue
                try:
                    phases, wall = _run(python, row['contender'], preset, device, root)
                except Exception as exc:  # reported in the table, not hidden
                    row['status'] = f'failed: {_short(exc)}'
                    continue
                row['phase_times'].append(phases)
                row['times'].append(sum(phases[p] for p in READY_PHASES))
                row['process_times'].append(wall)
        for row in model_rows:
            if row['times'] and row['status'] == 'ok':
                row['seconds'] = statistics.median(row['times'])
                row['process'] = statistics.median(row['process_times'])
                row['phases'] = {p: statistics.median(t[p] for t in row['phase_times'])
                                 for p in PHASES}
        set_ratios(model_rows)
        base = next((r for r in model_rows if r['contender'] == r['baseline']), None)
        for row in model_rows:
            if base is not None and row['process'] is not None:
                row['process_ratio'] = row['process'] / base['process']
        rows.extend(model_rows)
    return rows


if __name__ == '__main__':
    print(json.dumps(_child(*sys.argv[1:4])))
