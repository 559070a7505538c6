"""One model's compiled step under several compile options, against its eager step, in one process.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python -m bench.step_ab --model resnet18-64

:func:`bench.step_bench.bench_step` gives each contender a process of its own; this script
instead keeps fengine's eager step and one compiled step per variant (:data:`VARIANTS`)
alive together, and times them in interleaved rounds, so that one change of compile
options is compared with the previous choice under the same load. Its tensor figures
(:func:`bench.step_bench.tensor_peak`) include every variant's parameters: only their
differences count.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from fengine._errors import check_choice

from .step_bench import STEP_MODELS, CONTENDERS, make_batches, tensor_peak

__all__ = ['VARIANTS', 'compare']

VARIANTS: dict[str, dict | None] = {
    'eager': None,
    # fengine's own choice (on the CPU: inductor's layout optimization off).
    'fengine default': {},
    # inductor's default: convolutions in channels-last on a CPU with oneDNN.
    'layout optimization on': {'options': {'layout_optimization': True}},
}
"""Variant name -> fengine compile options (``None``: fengine's eager step)."""


def compare(model: str, variants: list[str], *, rounds: int = 4, steps: int = 2,
            backend: str | None = None, log=print) -> dict[str, dict]:
    """Build every variant, then time ``rounds`` interleaved blocks of ``steps`` steps each.

    Args:
        backend: Replaces inductor in every compiled variant (``'aot_eager'`` for a quick
            check of this script; its figures say nothing about inductor).

    Returns:
        Variant -> ``times`` (seconds per step, one per round), ``median``,
        ``compile_seconds`` (its first two steps: compilation included) and
        ``tensor_peak_bytes``.
    """
    for name in variants:
        check_choice('a variant', name, VARIANTS)
    spec, device = STEP_MODELS[model], torch.device('cpu')
    batches = make_batches(spec, device)
    steps_of, results = {}, {}
    for name in variants:
        options = VARIANTS[name]
        if options is None:
            steps_of[name] = CONTENDERS['fengine eager'](spec, device, {})
        else:
            options = dict(options, **({'backend': backend} if backend else {}))
            steps_of[name] = CONTENDERS['fengine compiled'](spec, device, options)
        start = time.perf_counter()
        for batch in batches[:2]:  # the first compiles
            float(steps_of[name](batch))
        results[name] = dict(compile_seconds=time.perf_counter() - start, times=[])
        log(f'{name}: first two steps {results[name]["compile_seconds"]:.1f} s')
    for _ in range(rounds):
        for name in variants:
            start = time.perf_counter()
            for index in range(steps):
                loss = steps_of[name](batches[index % len(batches)])
            float(loss)
            results[name]['times'].append((time.perf_counter() - start) / steps)
    for name in variants:
        results[name]['median'] = statistics.median(results[name]['times'])
        results[name]['tensor_peak_bytes'] = tensor_peak(
            lambda: steps_of[name](batches[0]), device)
    return results


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(prog='python -m bench.step_ab',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='resnet18-64', choices=STEP_MODELS)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--rounds', type=int, default=4)
    parser.add_argument('--steps', type=int, default=2, help='steps per timed block')
    parser.add_argument('--backend', help='replaces inductor (aot_eager: a quick check)')
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = compare(args.model, args.variants, rounds=args.rounds, steps=args.steps,
                      backend=args.backend, log=log)
    for name, result in results.items():
        times = ', '.join(f'{t:.3f}' for t in result['times'])
        print(f"{name}: median {result['median']:.3f} s/step ({times}); tensors at the "
              f"peak {result['tensor_peak_bytes'] / 2**20:.1f} MiB; first two steps "
              f"{result['compile_seconds']:.1f} s")
    return results


if __name__ == '__main__':
    main()
