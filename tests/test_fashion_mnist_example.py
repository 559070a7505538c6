"""The README's main job: examples/fashion_mnist.py, on FashionMNIST files written here."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
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


# The example in its own process, as a user runs it: this checkout's fengine, and a dead
# proxy that keeps a machine with network offline.
OFFLINE = {'no_proxy': '', 'NO_PROXY': '', 'http_proxy': 'http://127.0.0.1:9',
           'https_proxy': 'http://127.0.0.1:9', 'HTTPS_PROXY': 'http://127.0.0.1:9',
           'HTTP_PROXY': 'http://127.0.0.1:9'}
ENV = {**os.environ, **OFFLINE,
       'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}


def run_example(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_data_real_without_the_data_exits_with_one_clear_line_and_makes_no_folder(tmp_path):
    result = run_example('--data', 'real', '--data-root', str(tmp_path / 'none'),
                         '--work-dir', str(tmp_path / 'work'), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'FashionMNIST is not in' in lines[0] and \
        '--data synthetic' in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the data root nor the work dir


IMPORTS_AFTER = textwrap.dedent('''
    import runpy, sys
    sys.argv = sys.argv[1:]
    try:
        if sys.argv[0] == '-m':
            sys.argv = sys.argv[1:]
            runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
        else:
            runpy.run_path(sys.argv[0], run_name='__main__')
    finally:
        sys.stderr.write('loaded: ' + ' '.join(m for m in ('torch', 'numpy', 'torchvision')
                                                if m in sys.modules) + '\\n')
''')


def run_and_list_imports(*command: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run a script (or ``-m module``) and return the heavy modules it had imported at exit."""
    result = subprocess.run([sys.executable, '-c', IMPORTS_AFTER, *command], env=ENV,
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    loaded = result.stderr.strip().splitlines()[-1]
    assert loaded.startswith('loaded:'), result.stderr
    return result, loaded[len('loaded:'):].strip()


@pytest.mark.parametrize('command', [(str(EXAMPLE),), ('-m', 'fengine.train')],
                         ids=['example', 'fengine.train'])
def test_help_answers_without_importing_torch(command):
    result, loaded = run_and_list_imports(*command, '--help')
    assert result.returncode == 0 and 'usage:' in result.stdout
    assert loaded == ''


@pytest.mark.parametrize('command, bad, message', [
    ((str(EXAMPLE),), ('--epochs', 'two'), "argument --epochs: invalid int value: 'two'"),
    ((str(EXAMPLE),), ('--subset', '0'), 'argument --subset: must be at least 1, got 0'),
    ((str(EXAMPLE),), ('--data', 'rea'), "argument --data: invalid choice: 'rea'"),
    (('-m', 'fengine.train'), ('cfg.py', '--launcher', 'slurm'),
     "argument --launcher: invalid choice: 'slurm'"),
], ids=['example-epochs', 'example-subset', 'example-data', 'fengine.train-launcher'])
def test_an_argument_error_answers_without_importing_torch(command, bad, message):
    result, loaded = run_and_list_imports(*command, *bad)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert loaded == ''


def losses_and_metrics(console: str) -> list[str]:
    """The loss and metric values of a run's log lines, in order."""
    return re.findall(r'(?:loss|Accuracy|Avg_loss): [-\d.e]+', console)


def test_the_same_seed_twice_gives_the_same_losses_and_accuracy(tmp_path):
    # The first run falls back to the synthetic data (offline), the second asks for
    # it: the same images, so only the seed decides the numbers.
    common = ('--seed', '3', '--epochs', '1', '--no-compile', '--subset', '640',
              '--batch-size', '32', '--data-root', str(tmp_path / 'data'))
    first = run_example(*common, '--work-dir', str(tmp_path / 'one'), cwd=tmp_path)
    second = run_example(*common, '--data', 'synthetic', '--work-dir', str(tmp_path / 'two'),
                         cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    values = losses_and_metrics(first.stdout)
    # 20 iterations: training lines at 10 and 20, then the validation metrics.
    assert len(values) == 4 and values[2].startswith('Accuracy'), values
    assert losses_and_metrics(second.stdout) == values

    # Not a terminal: validation logs its progress every 10 iterations, as MMEngine.
    assert re.search(r'Epoch\(val\) \[1\]\[10/20\]    eta: ', first.stdout)

    # Everything the console showed, the fallback warning included, is in the log file.
    assert first.stderr == ''
    console = first.stdout.splitlines()
    assert 'training on SyntheticFashionMNIST instead' in console[0]
    (run,) = [p for p in (tmp_path / 'one').iterdir() if p.is_dir()]
    log = iter((run / f'{run.name}.log').read_text().splitlines())
    missing = [line for line in console if line not in log]  # in order: `in` advances
    assert missing == []
    assert not (tmp_path / 'data').exists()  # the failed download left no folder
