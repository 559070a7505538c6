"""Whole-model initialization against the device's copy bandwidth (the GPU figure).

A model built on ``meta`` is materialized on the device; what is measured is how close
the writing of its initial values comes to the fastest the device can write memory,
taken as the bandwidth of a device-to-device copy of the same number of bytes
(``dst.copy_(src)``: bytes written / time). Rows, per preset:

- ``device copy``: the reference bandwidth.
- ``fengine fill``: every parameter's values drawn into tensors allocated beforehand,
  through :func:`fengine.func.sample.sample_into` (on CUDA: one Triton launch per dtype
  for the whole model); the segment tables are built and copied inside the timing.
- ``fengine init_weights``: ``init_weights(seed=0, device=device)`` of the model built on
  ``meta`` (construction not timed): resolving the plan, allocating, drawing.
- ``mmengine``: MMEngine's path: build on the CPU (PyTorch's default initialization),
  ``init_weights()``, ``.to(device)``; construction included, as a user pays it.

``bandwidth`` is bytes written (the parameters' bytes) over the time; ``of copy`` its
fraction of the copy's. ``ratio`` is time over ``fengine init_weights``'s. Aimed at CUDA
(``--only bandwidth``, preset ``gpt-1.3b``); it runs on the CPU too, where the copy is a
memcpy and the fill the Philox CPU path.

:func:`bench_fill_bandwidth` (``--only fill``) is the CPU question alone: how close the C
Philox fill of one float32 tensor comes to the memory's write bandwidth, measured in the
same run as ``Tensor.fill_`` of the same tensor (torch's threads, one store per element).
The tensor is written once before the clock runs, so page faults are in neither.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from fengine.func import Fill, fold_in, init_plan, sample_into
from fengine.kernels import native, philox
from fengine.presets import get_preset

from .init_bench import FengineModel, _mmengine, quiet_init_logs, take_turns, time_call

__all__ = ['BASELINE', 'CONTENDERS', 'WRITE', 'bench_bandwidth', 'bench_fill_bandwidth',
           'model_fills']

BASELINE = 'fengine init_weights'
CONTENDERS = ('device copy', 'fengine fill', BASELINE, 'mmengine')


def model_fills(model: nn.Module, device: torch.device, seed: int = 0) -> list[tuple]:
    """``(distribution, key, tensor)`` for every parameter the model's ``init_cfg`` fills,
    each tensor newly allocated on ``device``: the jobs of one whole-model fill."""
    plan = init_plan(model)
    recipes = {}
    for op in plan.ops:  # the last step setting a parameter wins, as in init_weights
        if isinstance(op, Fill):
            recipes.update(op.fills)
    jobs = []
    for path, recipe in recipes.items():
        spec = plan.specs[path]
        out = torch.empty(spec.shape, dtype=spec.dtype, device=device)
        jobs.append((recipe.distribution(spec.shape, path), fold_in(seed, path), out))
    return jobs


def _row(model: str, contender: str, device: torch.device, params: int) -> dict:
    return dict(benchmark='bandwidth', model=model, contender=contender, device=str(device),
                baseline=BASELINE, status='ok', seconds=None, times=[], ratio=None,
                params=params, bytes=None, bandwidth=None, of_copy=None, note='')


def _prepare(contender: str, preset_name: str, meta: nn.Module, device: torch.device,
             written: int) -> Callable[[], object]:
    """The call to time, with what it needs made beforehand (untimed)."""
    if contender == 'device copy':
        src = torch.empty(written, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    if contender == 'fengine fill':
        jobs = model_fills(meta, device)
        return lambda: sample_into(jobs)
    preset = get_preset(preset_name)
    if contender == BASELINE:
        with torch.device('meta'):
            model = FengineModel(preset)
        return lambda: model.init_weights(seed=0, device=device)
    return lambda: _mmengine(preset, device)


def bench_bandwidth(preset_names: list[str], device: torch.device | str, *, repeats: int = 3,
                    contenders: list[str] | None = None,
                    log: Callable[[str], None] = print) -> list[dict]:
    """Time each contender on each preset; rows as :func:`bench.init_bench.bench_init`'s,
    plus ``bytes`` (written), ``bandwidth`` (bytes/s) and ``of_copy`` (its fraction of the
    device copy's bandwidth). One warm-up call each, then ``repeats`` rounds in which the
    contenders take turns; each call gets what it needs made afresh, untimed."""
    device = torch.device(device)
    names = list(CONTENDERS) if contenders is None else contenders
    rows = []
    with quiet_init_logs():
        for name in preset_names:
            with torch.device('meta'):
                meta = FengineModel(get_preset(name))
            params = sum(p.numel() for p in meta.parameters())
            written = sum(p.numel() * p.element_size() for p in meta.parameters())
            model_rows = [_row(name, contender, device, params) for contender in names]

            def time_row(row: dict, timed: bool) -> list[float]:
                fn = _prepare(row['contender'], name, meta, device, written)
                return time_call(fn, device, repeats=int(timed), warmup=int(not timed))

            take_turns(model_rows, f'bandwidth: {name}', repeats, time_row, log)
            for row in model_rows:
                if row['seconds'] is not None:
                    row['bytes'] = written
                    row['bandwidth'] = written / row['seconds']
            _set_ratios(model_rows)
            rows.extend(model_rows)
    return rows


def _set_ratios(rows: list[dict]) -> None:
    timed = {r['contender']: r for r in rows if r['seconds'] is not None}
    copy = timed.get('device copy')
    base = timed.get(BASELINE)
    for row in rows:
        if row['seconds'] is None:
            continue
        if base is not None:
            row['ratio'] = row['seconds'] / base['seconds']
        if copy is not None:
            row['of_copy'] = row['bandwidth'] / copy['bandwidth']
        if row['bandwidth'] is not None:
            row['note'] = f"{row['bandwidth'] / 1e9:.1f} GB/s" + (
                f", {row['of_copy']:.0%} of copy" if row['of_copy'] is not None else '')


WRITE = 'memory write (fill_)'
# The Philox kinds and arguments of the fill rows (the kernels benchmark's).
FILL_KINDS = {'uniform': (-1.0, 1.0), 'normal': (0.0, 1.0), 'trunc_normal': (0.0, 1.0, -2.0, 2.0)}


def bench_fill_bandwidth(numel: int, *, repeats: int = 3,
                         log: Callable[[str], None] = print) -> list[dict]:
    """The C Philox fill of each kind against the CPU's memory write bandwidth.

    Every contender writes the same float32 tensor of ``numel`` elements (touched before
    the clock: no page faults); they take turns, one untimed warm-up call each, then
    ``repeats`` rounds. Rows as :func:`bench_bandwidth`'s, ``benchmark='fill'``, with
    ``of_write``: a row's bandwidth over ``Tensor.fill_``'s. ``ratio``: time over
    ``fill_``'s. The note names the path (the C loop, or torch operations without it).
    """
    device = torch.device('cpu')
    out = torch.empty(numel)
    out.fill_(0.0)
    key = fold_in(0, 'bench.weight')
    path = 'C loop' if native.library() is not None else 'torch ops, eager'
    fns = {WRITE: lambda: out.fill_(1.0)}
    for kind, args in FILL_KINDS.items():
        d = philox.dist_args(kind, args)
        fns[f'philox {kind}'] = functools.partial(philox.fill, out, d, key, compile=False)
    written = numel * out.element_size()
    rows = []
    for name in fns:
        row = _row(f'float32 {numel:,}', name, device, numel)
        row.update(benchmark='fill', baseline=WRITE, of_write=None)
        rows.append(row)

    def time_row(row: dict, timed: bool) -> list[float]:
        return time_call(fns[row['contender']], device, repeats=int(timed),
                         warmup=int(not timed))

    take_turns(rows, 'fill bandwidth', repeats, time_row, log)
    write = next(r for r in rows if r['contender'] == WRITE)
    for row in rows:
        if row['seconds'] is None:
            continue
        row['bytes'] = written
        row['bandwidth'] = written / row['seconds']
        if write['seconds'] is not None:
            row['ratio'] = row['seconds'] / write['seconds']
            row['of_write'] = row['bandwidth'] / write['bandwidth']
        row['note'] = (f"{row['bandwidth'] / 1e9:.2f} GB/s"
                       + (f", {row['of_write']:.0%} of write" if row['of_write'] else '')
                       + ('' if row['contender'] == WRITE else f'; {path}'))
    return rows
