"""pytest-benchmark variants of the initialization benchmark (not in the default test run).

    FENGINE_EXTRAS=dev,vision,bench bash tools/venv.sh \\
        python -m pytest bench/ --benchmark-only --benchmark-disable-gc

``FENGINE_BENCH_DEVICE`` picks the target device (default: cuda when available);
``FENGINE_BENCH_PRESETS`` a space-separated list of presets. Each preset is its own
group, so pytest-benchmark's table compares the contenders on one model. For the
one table with ratios, and the JSON record, run ``python -m bench`` instead.
"""
from __future__ import annotations

import os

import pytest
import torch

from bench.init_bench import CONTENDERS, quiet_init_logs
from fengine.presets import get_preset

DEVICE = torch.device(os.environ.get('FENGINE_BENCH_DEVICE',
                                     'cuda' if torch.cuda.is_available() else 'cpu'))
PRESETS = os.environ.get('FENGINE_BENCH_PRESETS', 'resnet50 vit_b_16 gpt-350m').split()

def _cases() -> list:
    cases = []
    for preset in PRESETS:
        for contender in CONTENDERS:
            cases.append(pytest.param(preset, contender, id=f'{preset}-{contender}'))
    return cases


@pytest.mark.parametrize('preset_name, contender', _cases())
def test_init(benchmark, preset_name: str, contender: str) -> None:
    if contender == 'mmengine':
        pytest.importorskip('mmengine', reason='mmengine is the optional bench extra')
    preset = get_preset(preset_name)
    build = CONTENDERS[contender]

    def sync() -> None:
        if DEVICE.type == 'cuda':
            torch.cuda.synchronize(DEVICE)

    def run() -> None:
        sync()
        build(preset, DEVICE)
        sync()  # queued kernels belong to the run that queued them

    benchmark.group = f'init {preset_name} on {DEVICE}'
    benchmark.extra_info.update(preset=preset_name, contender=contender, device=str(DEVICE))
    with quiet_init_logs():
        benchmark.pedantic(run, rounds=3, warmup_rounds=1, iterations=1)
