"""The README's main job: examples/fashion_mnist.py, on FashionMNIST files written here."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_mnist_files import write_fashion_mnist
from seed_models import EXAMPLES  # noqa: F401 - puts examples/ on sys.path for the import

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / 'examples' / 'fashion_mnist.py'


@pytest.fixture(scope='module')
def example():
    spec = importlib.util.spec_from_file_location('fashion_mnist_example', EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trains_on_real_fashion_mnist_files_with_compiled_steps(tmp_path, example):
    # Real IDX files, read by torchvision's own FashionMNIST code: no network.
    write_fashion_mnist(tmp_path / 'data', n_train=640, n_test=200)
    metrics = example.main(['--epochs', '1', '--data', 'real', '--data-root',
                            str(tmp_path / 'data'), '--work-dir', str(tmp_path / 'work'),
                            '--compile-backend', 'aot_eager', '--seed', '0'])
    assert set(metrics) == {'Accuracy', 'Avg_loss'}  # real data: no synthetic/ prefix
    assert 0 <= float(metrics['Accuracy']) <= 1
    work = tmp_path / 'work'
    (run,) = [p for p in work.iterdir() if p.is_dir()]
    log = (run / f'{run.name}.log').read_text()
    assert 'compile: ' in log and 'Epoch(train) [1][10/10]' in log
    assert 'Epoch(val) [1][4/4]    Accuracy: ' in log
    scalars = [json.loads(line) for line in (run / 'vis_data' / 'scalars.json').open()]
    assert scalars[-1].keys() >= {'Accuracy', 'Avg_loss', 'step'}
    assert (work / 'epoch_1.pth').is_file() and (work / 'last_checkpoint').is_file()


def test_data_real_without_the_data_exits_with_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), '--data', 'real', '--data-root', str(tmp_path / 'none'),
         '--work-dir', str(tmp_path / 'work')],
        capture_output=True, text=True, timeout=300,
        # A dead proxy keeps a machine with network offline for this test.
        env={**os.environ, 'no_proxy': '', 'NO_PROXY': '', 'http_proxy': 'http://127.0.0.1:9',
             'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9',
             'HTTP_PROXY': 'http://127.0.0.1:9'})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'FashionMNIST is not in' in lines[0] and \
        '--data synthetic' in lines[0], result.stderr
    assert not (tmp_path / 'work').exists()
