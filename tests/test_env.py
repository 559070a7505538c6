"""torch's intra-op threads: a default that leaves cores to DataLoader workers, and the
user's choice always wins."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fengine.runner import env
from fengine.runner.env import (check_env_cfg, choose_num_threads, dataloader_workers,
                                default_num_threads)


@pytest.fixture
def threads(monkeypatch):
    """Four usable cores, torch at its start value (one thread per core), no variables;
    torch's real count is put back afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setattr(env, 'usable_cores', lambda: 4)
    monkeypatch.setattr(env.os, 'getloadavg', lambda: (1.2, 1.0, 1.0))  # this process only
    for name in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'LOCAL_WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(4)
    yield monkeypatch
    torch.set_num_threads(before)


def test_the_default_leaves_one_core_to_each_dataloader_worker(threads):
    assert default_num_threads(0) == 4
    assert default_num_threads(3) == 1
    assert default_num_threads(8) == 1  # never below one
    line = choose_num_threads(None, workers=2)
    assert torch.get_num_threads() == 2
    assert line == ('torch intra-op threads: 2 (4 usable cores, 2 DataLoader workers, 0 busy '
                    'with other work; env_cfg=dict(num_threads=N), OMP_NUM_THREADS or '
                    'torch.set_num_threads choose another)')


def test_cores_that_other_work_keeps_busy_are_left_to_it(threads):
    threads.setattr(env.os, 'getloadavg', lambda: (3.4, 2.0, 1.0))  # 2 more running
    assert default_num_threads(0, busy=2) == 2
    line = choose_num_threads(None, workers=0)
    assert torch.get_num_threads() == 2
    assert '(4 usable cores, 0 DataLoader workers, 2 busy with other work;' in line
    threads.setattr(env.os, 'getloadavg', lambda: (9.0, 9.0, 9.0))
    torch.set_num_threads(4)
    choose_num_threads(None, workers=0)
    assert torch.get_num_threads() == 1


def test_processes_of_one_machine_share_its_cores(threads):
    threads.setenv('LOCAL_WORLD_SIZE', '2')
    line = choose_num_threads(None, workers=1)
    assert torch.get_num_threads() == 1
    assert '(4 usable cores shared by 2 processes, 1 DataLoader workers, 0 busy' in line


def test_env_cfg_num_threads_is_set_as_given(threads):
    assert choose_num_threads(3, workers=2) == 'torch intra-op threads: 3 (env_cfg num_threads)'
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize('variable', ['OMP_NUM_THREADS', 'MKL_NUM_THREADS'])
def test_a_thread_variable_in_the_environment_is_left_alone(threads, variable):
    threads.setenv(variable, '4')
    assert choose_num_threads(None, workers=2) == f'torch intra-op threads: 4 ({variable}=4)'
    assert torch.get_num_threads() == 4


def test_a_count_set_before_the_runner_is_left_alone(threads):
    torch.set_num_threads(3)
    line = choose_num_threads(None, workers=2)
    assert torch.get_num_threads() == 3
    assert line == 'torch intra-op threads: 3 (set before the Runner was built)'


def test_workers_are_read_from_a_dataloader_or_its_config():
    loader = DataLoader(TensorDataset(torch.zeros(4)), num_workers=2)
    assert dataloader_workers(loader) == 2
    assert dataloader_workers(dict(batch_size=2, num_workers=3)) == 3
    assert dataloader_workers(dict(batch_size=2)) == 0
    assert dataloader_workers(None) == 0


def test_env_cfg_num_threads_must_be_a_positive_int():
    with pytest.raises(ValueError, match='env_cfg num_threads must be >= 1, but got 0'):
        check_env_cfg(dict(num_threads=0))
    with pytest.raises(TypeError, match="env_cfg num_threads must be an int, but got str: '2'"):
        check_env_cfg(dict(num_threads='2'))
    with pytest.raises(TypeError, match="Did you mean 'num_threads'"):
        check_env_cfg(dict(num_thread=2))


def test_the_runner_applies_env_cfg_num_threads_and_logs_it(threads, tmp_path, fengine_log):
    from fengine.model import BaseModel
    from fengine.runner import Runner

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)

        def forward(self, x, mode='tensor'):
            return self.fc(x)

    Runner(Net(), work_dir=str(tmp_path), env_cfg=dict(num_threads=1))
    assert torch.get_num_threads() == 1
    assert 'torch intra-op threads: 1 (env_cfg num_threads)' in fengine_log.messages()
