"""python -m fengine.train CONFIG: the entry point of OpenMMLab's tools/train.py, on the
tutorial's FashionMNIST config (examples/configs/fashion_mnist.py) with small synthetic
data, in this process, in a subprocess and under torchrun with two processes."""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fengine.config import Config
from fengine.train import apply_args, main, parse_args
from seed_models import EXAMPLES  # puts examples/ on sys.path: custom_imports finds it

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'examples' / 'configs' / 'fashion_mnist.py'
# Small synthetic data: 2 training iterations and one validation batch per epoch.
SMALL = ['train_dataloader.dataset.data=synthetic', 'train_dataloader.dataset.size=128',
         'val_dataloader.dataset.data=synthetic', 'val_dataloader.dataset.size=64',
         'train_cfg.max_epochs=1', 'compile=False', 'randomness.seed=0']


def args_for(*argv: str) -> argparse.Namespace:
    return parse_args([str(CONFIG), *argv])


# -- the command line -------------------------------------------------------------------
def test_help_lists_the_options_of_tools_train(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(['--help'])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ('--work-dir', '--resume', '--amp', '--cfg-options', '--launcher'):
        assert option in out


def test_argument_errors_name_the_argument_and_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        parse_args([str(CONFIG), '--launcher', 'slurm'])
    assert info.value.code == 2
    assert "argument --launcher: invalid choice: 'slurm' (choose from 'none', 'pytorch')" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([str(CONFIG), '--cfg-options', 'lr'])
    assert "argument --cfg-options: 'lr' is not KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([])
    assert 'the following arguments are required: config' in capsys.readouterr().err


def test_the_work_dir_is_the_option_else_the_config_else_work_dirs_and_the_stem():
    cfg = apply_args(Config(dict(a=1)), args_for())
    assert cfg.work_dir == os.path.join('./work_dirs', 'fashion_mnist')
    assert cfg.launcher == 'none'
    cfg = apply_args(Config(dict(work_dir='mine')), args_for())
    assert cfg.work_dir == 'mine'
    cfg = apply_args(Config(dict(work_dir='mine')), args_for('--work-dir', 'cli'))
    assert cfg.work_dir == 'cli'
    cfg = apply_args(Config(dict()), args_for('--cfg-options', 'work_dir=opt'))
    assert cfg.work_dir == 'opt'


def test_cfg_options_are_merged_into_the_config():
    cfg = apply_args(Config.fromfile(CONFIG),
                     args_for('--cfg-options', 'optim_wrapper.optimizer.lr=0.1',
                              'train_cfg.max_epochs=2', '--launcher', 'pytorch'))
    assert cfg.optim_wrapper.optimizer == dict(type='SGD', lr=0.1)
    assert cfg.train_cfg == dict(by_epoch=True, max_epochs=2, val_interval=1)
    assert cfg.launcher == 'pytorch'


@pytest.mark.parametrize('wrapper', [dict(optimizer=dict(type='SGD')),
                                     dict(type='OptimWrapper', optimizer=dict(type='SGD'))])
def test_amp_turns_the_optim_wrapper_into_an_amp_optim_wrapper(wrapper):
    cfg = apply_args(Config(dict(optim_wrapper=wrapper)), args_for('--amp'))
    assert cfg.optim_wrapper == dict(type='AmpOptimWrapper', optimizer=dict(type='SGD'),
                                     loss_scale='dynamic')


def test_amp_on_an_amp_config_warns_and_on_another_wrapper_is_refused(fengine_log):
    wrapper = dict(type='AmpOptimWrapper', optimizer=dict(type='SGD'), loss_scale=512.0)
    cfg = apply_args(Config(dict(optim_wrapper=wrapper)), args_for('--amp'))
    assert cfg.optim_wrapper == wrapper
    assert 'the config uses AmpOptimWrapper already' in fengine_log.text
    with pytest.raises(ValueError, match="--amp turns an OptimWrapper into an AmpOptimWrapper, "
                                         "but the optim wrapper is 'OptimWrapperDict'"):
        apply_args(Config(dict(optim_wrapper=dict(type='OptimWrapperDict'))), args_for('--amp'))
    with pytest.raises(ValueError, match='--amp changes the optim_wrapper config, but .* has '
                                         'none'):
        apply_args(Config(dict()), args_for('--amp'))


def test_resume_without_a_path_resumes_from_the_work_dir_and_with_one_from_it():
    cfg = apply_args(Config(dict(load_from='w.pth')), args_for('--resume'))
    assert (cfg.resume, cfg.load_from) == (True, None)
    cfg = apply_args(Config(dict()), args_for('--resume', 'ckpt.pth'))
    assert (cfg.resume, cfg.load_from) == (True, 'ckpt.pth')
    cfg = apply_args(Config(dict(resume=False)), args_for())
    assert cfg.resume is False and 'load_from' not in cfg


# -- training ------------------------------------------------------------------------------
def test_the_tutorial_config_trains_then_resumes_in_this_process(tmp_path):
    work = tmp_path / 'work'
    runner = main([str(CONFIG), '--work-dir', str(work), '--cfg-options', *SMALL])
    assert runner.iter == 2 and runner.epoch == 1
    assert set(runner.val_loop.last_metrics) == {'Accuracy', 'Avg_loss'}
    assert (work / 'epoch_1.pth').is_file()
    (run,) = [p for p in work.iterdir() if p.is_dir()]
    log = (run / f'{run.name}.log').read_text()
    # The log holds the config as a Python file, with the command line applied.
    assert "model = dict(type='NeuralNetwork')" in log and "work_dir = '" in log
    assert isinstance(runner.cfg, Config) and runner.cfg.train_cfg.max_epochs == 1

    resumed = main([str(CONFIG), '--work-dir', str(work), '--resume', '--amp',
                    '--cfg-options', *SMALL[:-3], 'train_cfg.max_epochs=2', 'compile=False',
                    'randomness.seed=0'])
    assert (resumed.epoch, resumed.iter) == (2, 4)
    assert type(resumed.optim_wrapper).__name__ == 'AmpOptimWrapper'
    assert (work / 'epoch_2.pth').is_file()


def _env() -> dict:
    path = os.pathsep.join([str(ROOT), EXAMPLES, os.environ.get('PYTHONPATH', '')])
    return {**os.environ, 'PYTHONPATH': path, 'OMP_NUM_THREADS': '1'}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def test_python_dash_m_fengine_train_runs_the_config(tmp_path):
    work = tmp_path / 'work'
    result = subprocess.run(
        [sys.executable, '-m', 'fengine.train', str(CONFIG), '--work-dir', str(work),
         '--cfg-options', *SMALL], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert 'Epoch(val) [1][1/1]    Accuracy: ' in result.stderr + result.stdout
    assert (work / 'epoch_1.pth').is_file()


def test_a_bad_config_exits_with_the_error_named(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text("_base_ = 'missing.py'\n")
    result = subprocess.run([sys.executable, '-m', 'fengine.train', str(bad)], cwd=tmp_path,
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert 'missing.py does not exist (a _base_ of' in result.stderr


def test_torchrun_with_two_processes_trains_the_config(tmp_path):
    work = tmp_path / 'work'
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc-per-node=2',
               '--master_addr=127.0.0.1', f'--master_port={_free_port()}',
               '-m', 'fengine.train', str(CONFIG), '--launcher', 'pytorch',
               '--work-dir', str(work), '--cfg-options', *SMALL]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                            timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert 'world_size: 2' in output
    # 128 images, 64 per process, batch 64: one iteration per epoch on each process.
    assert 'Saved checkpoint epoch_1.pth (epoch 1, iter 1)' in output
    assert (work / 'epoch_1.pth').is_file()
