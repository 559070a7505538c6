"""Two versions of the C Philox fill against each other: one thread, one process, in turns.

    PYTHONPATH=$PWD python -m bench.fill_ab --base 6fff4f5

``--base`` names a git revision whose ``kernels/philox_cpu.c`` is the old loop; the new
one is the working tree's. Both are built with the flags ``kernels/native.py`` uses on
this CPU and called through ``ctypes`` on the same float32 tensor (touched before the
clock), for each kind: old, new, and ``Tensor.fill_`` with one torch thread (the memory
write bandwidth of one core, measured in the same rounds), ``--repeats`` rounds, medians
(and the best times, printed). ``--numel 65536`` (in the caches) times the arithmetic
alone. Every row also checks that old and new wrote the same bits. A shared machine makes single
figures noisy; the turns keep the ratios fair.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from fengine.func import fold_in
from fengine.kernels import dist_args, native

from .bandwidth_bench import FILL_KINDS

__all__ = ['build_library', 'bench_fill_ab']


def build_library(source: str, directory: Path, name: str) -> ctypes.CDLL:
    """``source`` (C text) built and loaded as native.py builds and loads the fill."""
    compiler = native._compiler()
    if compiler is None:
        raise RuntimeError('no C compiler (cc, gcc, clang or $CC) found')
    src, lib = directory / f'{name}.c', directory / f'{name}.so'
    src.write_text(source)
    subprocess.run([compiler, *native._flags(), '-o', str(lib), str(src), '-lm'], check=True,
                   capture_output=True, text=True)
    return native._load(lib)


def _ms(times: list[float]) -> str:
    """The median and the best time: on a loaded machine the best is the one least
    disturbed, for a call short enough to run between two preemptions."""
    return f'{statistics.median(times) * 1e3:.3g} ms (best {min(times) * 1e3:.3g})'


def bench_fill_ab(old_source: str, new_source: str, numel: int, *, repeats: int = 7,
                  log: Callable[[str], None] = print) -> list[dict]:
    """One row per kind: the old and new loops' and one-thread ``fill_``'s median seconds,
    ``speedup`` (old over new) and ``of_write`` (each loop's bandwidth over ``fill_``'s)."""
    out = torch.empty(numel)
    out.fill_(0.0)
    key = fold_in(0, 'bench.weight')
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        libs = {'old': build_library(old_source, Path(tmp), 'old'),
                'new': build_library(new_source, Path(tmp), 'new')}
        torch.set_num_threads(1)
        try:
            for kind, args in FILL_KINDS.items():
                d = dist_args(kind, args)
                a = (ctypes.c_float * 8)(*d.args)
                calls = {name: (lambda lib=lib: lib.fengine_philox_fill_f32(
                    out.data_ptr(), 0, numel, d.kind, key, a)) for name, lib in libs.items()}
                calls['fill_'] = lambda: out.fill_(1.0)
                written = {}
                for name in ('old', 'new'):  # warm-up calls, and the bits each writes
                    calls[name]()
                    written[name] = out.clone()
                times = {name: [] for name in calls}
                for _ in range(repeats):
                    for name, call in calls.items():
                        begin = time.perf_counter()
                        call()
                        times[name].append(time.perf_counter() - begin)
                med = {name: statistics.median(t) for name, t in times.items()}
                row = dict(kind=kind, numel=numel, seconds=med, times=times,
                           same_bits=torch.equal(written['old'], written['new']),
                           speedup=med['old'] / med['new'],
                           of_write={name: med['fill_'] / med[name] for name in ('old', 'new')})
                rows.append(row)
                log(f"{kind:13s} old {_ms(times['old'])} ({row['of_write']['old']:.0%} of write)"
                    f"  new {_ms(times['new'])} ({row['of_write']['new']:.0%})"
                    f"  {row['speedup']:.2f}x  fill_ {_ms(times['fill_'])}"
                    f"  same bits: {row['same_bits']}")
        finally:
            torch.set_num_threads(threads)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', default='6fff4f5',
                        help='git revision of the old kernels/philox_cpu.c')
    parser.add_argument('--numel', type=int, default=1 << 24)
    parser.add_argument('--repeats', type=int, default=7)
    opts = parser.parse_args(argv)
    old = subprocess.run(['git', 'show', f'{opts.base}:kernels/philox_cpu.c'], check=True,
                         capture_output=True, text=True, cwd=native.SOURCE.parent).stdout
    bench_fill_ab(old, native.SOURCE.read_text(), opts.numel, repeats=opts.repeats)


if __name__ == '__main__':
    main()
