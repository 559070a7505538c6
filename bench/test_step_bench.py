"""pytest-benchmark variants of the training-step benchmark (not in the default test run).

    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh \\
        python -m pytest bench/test_step_bench.py --benchmark-only --benchmark-disable-gc

``FENGINE_BENCH_DEVICE`` picks the device (default: cuda when available);
``FENGINE_BENCH_STEP_MODELS`` a space-separated list of :data:`STEP_MODELS` names
(default: the MLP and ResNet-18, plus the GPT on CUDA); ``FENGINE_BENCH_STEPS`` the
steps per timed round. Each model is its own group. One round is ``steps`` training
steps ending with the last loss read back (and a synchronize on CUDA), so divide the
times by ``steps``; the warm-up steps, compilation included, run before the rounds and
their time is in ``extra_info['warmup_seconds']``. All contenders share one process
here, so there is no peak memory and compile caches are warm for the later ones: for
the one table with ratios, memory and cold compile times, run ``python -m bench``.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from bench.step_bench import CONTENDERS, STEP_MODELS, WARMUP, make_batches, mmengine_available

DEVICE = torch.device(os.environ.get('FENGINE_BENCH_DEVICE',
                                     'cuda' if torch.cuda.is_available() else 'cpu'))
MODELS = os.environ.get('FENGINE_BENCH_STEP_MODELS', 'fashion-mlp resnet18-64' + (
    ' gpt-125m' if DEVICE.type == 'cuda' else '')).split()
STEPS = os.environ.get('FENGINE_BENCH_STEPS')


def _sync() -> None:
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize(DEVICE)


@pytest.mark.parametrize('contender', list(CONTENDERS))
@pytest.mark.parametrize('model', MODELS)
def test_step(benchmark, model: str, contender: str) -> None:
    spec = STEP_MODELS[model]
    if spec.cuda_only and DEVICE.type != 'cuda':
        pytest.skip(f'{model} is timed on CUDA only')
    if contender == 'mmengine eager' and not mmengine_available():
        pytest.skip('mmengine is the optional bench extra')
    steps = int(STEPS) if STEPS else spec.steps(DEVICE)
    batches = make_batches(spec, DEVICE)
    step = CONTENDERS[contender](spec, DEVICE, {})

    _sync()
    start = time.perf_counter()
    for index in range(WARMUP):  # compiles (and, for fengine compiled, recompiles)
        float(step(batches[index % len(batches)]))
    _sync()
    warmup_seconds = time.perf_counter() - start

    def run() -> None:
        loss = None
        for index in range(steps):
            loss = step(batches[index % len(batches)])
        float(loss)  # the last step's result, materialized
        _sync()

    benchmark.group = f'step {model} on {DEVICE} ({steps} steps per round)'
    benchmark.extra_info.update(model=model, contender=contender, device=str(DEVICE),
                                steps=steps, batch_size=spec.batch_size,
                                warmup_seconds=warmup_seconds)
    benchmark.pedantic(run, rounds=3, iterations=1)
