"""Initialization throughput: time to a model that is ready on the target device.

For each preset (:mod:`fengine.presets`), every contender builds the model and
initializes it from the preset's ``init_cfg``, construction included, in the same
process:

- ``fengine``: construct under ``torch.device('meta')`` inside a fengine
  ``BaseModule``, then ``init_weights(seed=0, device=device)``: each parameter is
  created once, on the target device, drawn from the default counter-based Philox
  generator (on CUDA: one Triton launch per dtype for the whole model).
- ``fengine (torch generator)``: the same with ``use_generator('torch')``: each
  parameter drawn by a ``torch.Generator`` of its own, one tensor at a time.
- ``fengine (built on CPU)``: construct on the CPU (PyTorch's default
  initialization runs), ``init_weights(seed=0)``, then ``.to(device)``; it shows how
  much of the difference comes from skipping the default initialization.
- ``mmengine``: the same on the CPU with ``mmengine.model.BaseModule``.
- ``torch.nn.init loop``: construct on the CPU, one hand-written pass over the
  modules with ``torch.nn.init``, then ``.to(device)``.

:func:`bench_first_call` times the first such call in a fresh process, and
:func:`bench_import` what ``import fengine`` (and ``import mmengine.model``) adds
to ``import torch``. A contender that is not installed is reported as skipped,
never estimated; one that raises is reported as failed, with its error.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import importlib.util
import logging
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

import fengine.logging as flog
from fengine.func import use_generator
from fengine.model import BaseModule
from fengine.presets import Preset, get_preset

__all__ = ['CONTENDERS', 'BASELINE', 'torch_init_loop', 'time_call', 'take_turns',
           'bench_init', 'bench_first_call', 'bench_import', 'mmengine_available']

BASELINE = 'fengine'
# Ratios fall back to this contender on a model where the baseline failed.
FALLBACK_BASELINE = 'fengine (built on CPU)'
SKIPPED = 'skipped (not installed)'


def mmengine_available() -> bool:
    """Whether MMEngine can be imported (it is the optional ``bench`` extra)."""
    return importlib.util.find_spec('mmengine') is not None


# -- the models ----------------------------------------------------------------------
class FengineModel(BaseModule):
    """A preset's model under a fengine ``BaseModule`` carrying the preset's ``init_cfg``.

    Plus its ``param_init_cfg`` (bare parameters such as ViT's class token), which a
    model built on meta needs and MMEngine's initializers cannot express.
    """

    def __init__(self, preset: Preset) -> None:
        super().__init__(preset.init_cfg + preset.param_init_cfg)
        self.net = preset.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@functools.cache
def _mmengine_model_class() -> type[nn.Module]:
    """The same wrapper over ``mmengine.model.BaseModule`` (imported on first use)."""
    from mmengine.model import BaseModule as MMBaseModule

    class MMEngineModel(MMBaseModule):
        def __init__(self, preset: Preset) -> None:
            super().__init__(preset.init_cfg)
            self.net = preset.build()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    return MMEngineModel


# What each initializer name does, written with torch.nn.init as a user would by hand.
_TORCH_INIT: dict[str, Callable[[torch.Tensor, dict], object]] = {
    'Constant': lambda w, c: nn.init.constant_(w, c['val']),
    'Normal': lambda w, c: nn.init.normal_(w, c.get('mean', 0), c.get('std', 1)),
    'TruncNormal': lambda w, c: nn.init.trunc_normal_(w, c.get('mean', 0), c.get('std', 1),
                                                      c.get('a', -2), c.get('b', 2)),
    'Uniform': lambda w, c: nn.init.uniform_(w, c.get('a', 0), c.get('b', 1)),
    'Kaiming': lambda w, c: nn.init.kaiming_normal_(
        w, a=c.get('a', 0), mode=c.get('mode', 'fan_out'),
        nonlinearity=c.get('nonlinearity', 'relu')),
    'Xavier': lambda w, c: nn.init.xavier_normal_(w, gain=c.get('gain', 1)),
}


def torch_init_loop(model: nn.Module, init_cfg: list[dict]) -> None:
    """One pass over the modules, setting ``weight`` and ``bias`` with ``torch.nn.init``.

    Each ``init_cfg`` entry applies to modules whose class (or a base class) is in its
    ``layer``; a later entry wins, as in MMEngine and fengine. Only the entries the
    presets use are supported: no ``override``, no ``Pretrained``, and Kaiming and
    Xavier in their normal variants.
    """
    entries = [(cfg, {cfg['layer']} if isinstance(cfg['layer'], str) else set(cfg['layer']))
               for cfg in init_cfg]
    with torch.no_grad():
        for module in model.modules():
            names = {cls.__name__ for cls in type(module).__mro__}
            for cfg, layers in entries:
                if not names & layers:
                    continue
                if getattr(module, 'weight', None) is not None:
                    _TORCH_INIT[cfg['type']](module.weight, cfg)
                if getattr(module, 'bias', None) is not None:
                    nn.init.constant_(module.bias, cfg.get('bias', 0))


# -- the contenders: each returns a model ready on `device` -----------------------------
# Each calls `phase('build')` between construction and initialization, for the fresh-process
# benchmark (bench/init_fresh.py), which times the two apart.
def _no_phase(name: str) -> None:
    pass


def _fengine(preset: Preset, device: torch.device, phase=_no_phase) -> nn.Module:
    with torch.device('meta'):
        model = FengineModel(preset)
    phase('build')
    model.init_weights(seed=0, device=device)
    return model


def _fengine_torch_generator(preset: Preset, device: torch.device,
                             phase=_no_phase) -> nn.Module:
    with use_generator('torch'):
        return _fengine(preset, device, phase)


def _fengine_cpu(preset: Preset, device: torch.device, phase=_no_phase) -> nn.Module:
    model = FengineModel(preset)
    phase('build')
    model.init_weights(seed=0)
    return model.to(device)


def _mmengine(preset: Preset, device: torch.device, phase=_no_phase) -> nn.Module:
    model = _mmengine_model_class()(preset)
    phase('build')
    model.init_weights()
    return model.to(device)


def _torch_loop(preset: Preset, device: torch.device, phase=_no_phase) -> nn.Module:
    model = preset.build()
    phase('build')
    torch_init_loop(model, preset.init_cfg)
    return model.to(device)


CONTENDERS: dict[str, Callable[..., nn.Module]] = {
    'fengine': _fengine,
    'fengine (torch generator)': _fengine_torch_generator,
    'fengine (built on CPU)': _fengine_cpu,
    'mmengine': _mmengine,
    'torch.nn.init loop': _torch_loop,
}
"""Contender name -> ``fn(preset, device, phase=...)`` building and initializing a preset
on a device, calling ``phase('build')`` when construction is done."""


@contextlib.contextmanager
def quiet_init_logs(mmengine: bool | None = None) -> Iterator[None]:
    """Drop the per-parameter INFO lines of both init reports while timing.

    Both engines log one INFO line per parameter after ``init_weights``; printing
    thousands of lines would be what is measured. Raising the ``fengine`` logger and
    MMEngine's current ``MMLogger`` to WARNING makes ``logger.info`` return at its
    level check (the message string is still built, by both engines alike), and
    keeps warnings visible. ``mmengine=False`` leaves MMEngine alone (a fresh process
    timing fengine must not import it); the default: whenever it is installed.
    """
    loggers = [flog.get_logger()]
    if mmengine_available() if mmengine is None else mmengine:
        from mmengine.logging import MMLogger
        loggers.append(MMLogger.get_current_instance())
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, *, repeats: int,
              warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, after ``warmup`` untimed calls.

    The device is synchronized before the clock starts and before it stops, so
    queued kernels are counted. As in ``timeit``, the cyclic garbage collector is
    off while the clock runs: a full collection takes ~0.3 s once torch._dynamo is
    loaded, and would land in whichever run happens to cross its threshold. What
    ``fn`` returns is freed outside the timer, by reference counting (the models
    here hold no reference cycles).
    """
    times = []
    for index in range(warmup + repeats):
        _sync(device)
        gc.disable()
        try:
            start = time.perf_counter()
            result = fn()
            _sync(device)
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        del result
        if index >= warmup:
            times.append(elapsed)
    return times


def _row(model: str, contender: str, device: torch.device, params: int | None) -> dict:
    return dict(benchmark='init', model=model, contender=contender, device=str(device),
                baseline=BASELINE, status='ok', seconds=None, times=[], ratio=None,
                params=params, note='')


def bench_init(preset_names: list[str], device: torch.device | str, *, repeats: int = 3,
               warmup: int = 1, contenders: list[str] | None = None,
               log: Callable[[str], None] = print) -> list[dict]:
    """Time every contender on every preset; one result row each.

    Runs are interleaved (every contender once, then every contender again...), so
    a slow spell of a shared machine falls on all contenders alike instead of on
    whichever ran then.

    Args:
        preset_names: Names in :data:`fengine.presets.PRESETS`.
        device: The target device, e.g. ``'cpu'`` or ``'cuda'``.
        repeats: Timed calls per contender; a row's ``seconds`` is their median.
        warmup: Untimed calls first, per contender (imports, allocator, first-call
            costs; those are measured by :func:`bench_first_call`).
        contenders: Names in :data:`CONTENDERS` (default: all).
        log: Called with a progress line per preset and round.

    Returns:
        Rows with ``benchmark``, ``model``, ``contender``, ``device``, ``status``
        (``'ok'``, ``'skipped (not installed)'`` or ``'failed: ...'``), ``seconds``,
        ``times``, ``params``, ``baseline`` and ``ratio`` (``seconds`` over the
        baseline contender's on the same model; ``None`` where either is missing).
        A model where ``fengine`` failed gets its ratios against ``fengine (built
        on CPU)`` instead; ``baseline`` says which.
    """
    device = torch.device(device)
    names = list(CONTENDERS) if contenders is None else contenders
    rows = []
    with quiet_init_logs():
        for preset_name in preset_names:
            preset = get_preset(preset_name)
            with torch.device('meta'):
                params = sum(p.numel() for p in preset.build().parameters())
            model_rows = [_row(preset_name, name, device, params=params) for name in names]

            def time_row(row: dict, timed: bool) -> list[float]:
                fn = CONTENDERS[row['contender']]
                return time_call(lambda: fn(preset, device), device, repeats=int(timed),
                                 warmup=0 if timed else warmup)

            take_turns(model_rows, f'init: {preset_name}', repeats, time_row, log)
            set_ratios(model_rows)
            rows.extend(model_rows)
    return rows


def take_turns(rows: list[dict], label: str, repeats: int,
               time_row: Callable[[dict, bool], list[float]],
               log: Callable[[str], None]) -> None:
    """Time the contenders of ``rows`` in turns: a warm-up round, then ``repeats`` timed ones.

    ``time_row(row, timed)`` returns the seconds of its calls (none when warming up).
    MMEngine's row is marked skipped when it is not installed; a row whose call raises is
    marked failed with its error, not hidden. Each row's ``seconds`` is its median.
    """
    for row in rows:
        if row['contender'] == 'mmengine' and not mmengine_available():
            row['status'] = SKIPPED
    for round_ in range(-1, repeats):  # round -1: the warm-up calls
        log(f'{label}: ' + ('warm-up' if round_ < 0 else f'timed round {round_ + 1}/{repeats}'))
        for row in rows:
            if row['status'] != 'ok':
                continue
            try:
                row['times'] += time_row(row, round_ >= 0)
            except Exception as exc:  # reported in the table, not hidden
                row['status'] = f'failed: {type(exc).__name__}: {_short(exc)}'
    for row in rows:
        if row['times'] and row['status'] == 'ok':
            row['seconds'] = statistics.median(row['times'])


def set_ratios(rows: list[dict], baselines: tuple[str, ...] = ()) -> None:
    """Each row's time over the first baseline that has a time.

    Initialization's baselines are fengine, then its CPU-built path if that failed.
    """
    timed = {r['contender']: r['seconds'] for r in rows if r['seconds'] is not None}
    baselines = baselines or (BASELINE, FALLBACK_BASELINE)
    baseline = next((name for name in baselines if name in timed), None)
    for row in rows:
        row['baseline'] = baseline
        if baseline is not None and row['seconds'] is not None:
            row['ratio'] = row['seconds'] / timed[baseline]


def _short(exc: BaseException, limit: int = 160) -> str:
    text = ' '.join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


# -- the first call in a fresh process --------------------------------------------------
_FIRST_CALL = """\
import time, torch
from bench.init_bench import CONTENDERS, quiet_init_logs, _sync
from fengine.presets import get_preset
{imports}preset, device = get_preset({preset!r}), torch.device({device!r})
with quiet_init_logs():
    _sync(device)
    start = time.perf_counter()
    CONTENDERS[{contender!r}](preset, device)
    _sync(device)
print(time.perf_counter() - start)
"""


def bench_first_call(preset_name: str, device: torch.device | str, *, repeats: int = 3,
                     contenders: list[str] | None = None,
                     log: Callable[[str], None] = print) -> list[dict]:
    """The first build and initialization in a fresh process, imports done beforehand.

    The warm figures of :func:`bench_init` leave out one-off costs that a training
    script pays once: PyTorch loads ``torch._dynamo`` the first time some ops run
    on ``meta`` (``normal_`` does, through its Python reference kernel), caches
    fill, allocators warm up. Here each run is a new interpreter that imports
    torch, fengine and the contender's engine (MMEngine's ``mmengine.model``)
    first; only the first call is timed. Imports are timed apart, by
    :func:`bench_import`. Rows as :func:`bench_init`'s, ``benchmark='first call'``.
    """
    device = torch.device(device)
    root = Path(__file__).resolve().parents[1]
    rows = []
    for name in (list(CONTENDERS) if contenders is None else contenders):
        row = _row(preset_name, name, device, params=None)
        row.update(benchmark='first call', note='fresh process, imports not timed')
        if name == 'mmengine' and not mmengine_available():
            row['status'] = SKIPPED
        rows.append(row)
    for round_ in range(repeats):  # interleaved, as in bench_init
        log(f'first call: {preset_name}: fresh interpreters, round {round_ + 1}/{repeats}')
        for row in rows:
            if row['status'] != 'ok':
                continue
            name = row['contender']
            code = _FIRST_CALL.format(preset=preset_name, device=str(device), contender=name,
                                      imports='import mmengine.model\n' if name == 'mmengine'
                                      else '')
            done = subprocess.run([sys.executable, '-c', code], capture_output=True,
                                  text=True, cwd=root)
            if done.returncode:
                lines = done.stderr.strip().splitlines() or [f'exit status {done.returncode}']
                row['status'] = f'failed: {_short(lines[-1])}'
            else:
                row['times'].append(float(done.stdout.split()[-1]))
    for row in rows:
        if row['times'] and row['status'] == 'ok':
            row['seconds'] = statistics.median(row['times'])
    set_ratios(rows)
    return rows


# -- import time -------------------------------------------------------------------------
def _run_python(code: str, *flags: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *flags, '-c', code], capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - start, done.stderr


def _own_import_seconds(stderr: str, package: str) -> float:
    """``package``'s own import time from ``python -X importtime`` output.

    Sums the cumulative times of the top-level lines (no indent: imported by the
    ``-c`` code itself) for ``package`` and its submodules, so ``import
    mmengine.model`` counts ``mmengine`` and ``mmengine.model``.
    """
    total, found = 0, False
    for line in stderr.splitlines():
        match = re.match(r'import time:\s+\d+ \|\s+(\d+) \| (\S.*)$', line)
        if match and (match.group(2) == package or match.group(2).startswith(package + '.')):
            total += int(match.group(1))
            found = True
    if not found:
        raise ValueError(f'-X importtime output has no top-level line for {package!r}')
    return total / 1e6


def bench_import(repeats: int = 3, log: Callable[[str], None] = print) -> list[dict]:
    """How long ``import fengine`` takes on top of ``import torch``, in fresh processes.

    Two measures, medians of ``repeats`` runs: the wall time of ``python -c 'import
    torch'`` against ``python -c 'import torch, fengine'`` (interpreter start
    included, noisy), and fengine's own cumulative time from ``python -X importtime``
    with torch already imported (precise). MMEngine's ``mmengine.model`` is measured
    the same way when installed. Each row also says whether torchvision got imported.
    """
    peers = [('fengine', 'fengine')]
    if mmengine_available():
        peers.append(('mmengine', 'mmengine.model'))
    # One list of timings per measure, filled round by round (interleaved, as above).
    wall = {'torch': []} | {name: [] for name, _ in peers}
    own = {name: [] for name, _ in peers}
    vision = {name: False for name, _ in peers}
    for round_ in range(repeats):
        log(f'import: fresh interpreters, round {round_ + 1}/{repeats}')
        wall['torch'].append(_run_python('import torch')[0])
        for name, module in peers:
            wall[name].append(_run_python(f'import torch, {module}')[0])
            _, stderr = _run_python(f'import torch; import {module}', '-X', 'importtime')
            own[name].append(_own_import_seconds(stderr, name))
            vision[name] |= re.search(r'\|\s*torchvision$', stderr, re.M) is not None

    def row(contender: str, times: list[float], ratio_to: float | None, note: str) -> dict:
        seconds = statistics.median(times)
        return dict(benchmark='import', model='-', contender=contender, device='cpu',
                    baseline='import torch', status='ok', times=times, seconds=seconds,
                    ratio=None if ratio_to is None else seconds / ratio_to, params=None,
                    note=note)

    base = statistics.median(wall['torch'])
    rows = [row('import torch', wall['torch'], base,
                'wall time of python -c, interpreter start included')]
    for name, module in peers:
        rows.append(row(f'import torch, {module}', wall[name], base, 'wall time of python -c'))
        rows.append(row(f'{name} on top of torch', own[name], None,
                        '-X importtime cumulative; imports torchvision: '
                        + ('yes' if vision[name] else 'no')))
        rows[-1]['imports_torchvision'] = vision[name]
    return rows
