"""Spec for ``MessageHub`` and ``HistoryBuffer`` (MMEngine: ``mmengine.logging``)."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from fengine.logging import HistoryBuffer, MessageHub
from fengine.runner import NonFiniteLossError


@pytest.fixture
def fresh_hubs():
    """Each test sees no MessageHub instance, and the table is restored after it."""
    saved = MessageHub._instance_dict.copy()
    MessageHub._instance_dict.clear()
    yield
    MessageHub._instance_dict.clear()
    MessageHub._instance_dict.update(saved)


class CountingTensor:
    """Counts host reads of tensors (``Tensor.tolist`` and ``Tensor.item``)."""

    def __init__(self, monkeypatch) -> None:
        self.reads = 0
        for name in ('tolist', 'item'):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.reads += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


# -- HistoryBuffer ----------------------------------------------------------------------
def test_a_history_buffer_gives_mean_min_max_and_current():
    buffer = HistoryBuffer()
    for value in (1, 5, 3):
        buffer.update(value)
    assert (buffer.mean(), buffer.min(), buffer.max(), buffer.current()) == (3.0, 1.0, 5.0, 3.0)
    assert (buffer.mean(2), buffer.min(2), buffer.max(1)) == (4.0, 3.0, 3.0)
    assert buffer.mean(100) == 3.0  # a window wider than the history takes it all


def test_the_mean_weighs_values_by_their_counts():
    buffer = HistoryBuffer([4.0, 2.0], [2, 1])
    assert buffer.mean() == 2.0  # (4 + 2) / (2 + 1)
    values, counts = buffer.data
    assert values.tolist() == [4.0, 2.0] and counts.tolist() == [2.0, 1.0]
    assert values.dtype == np.float64


def test_statistics_are_called_by_name_and_custom_ones_can_be_registered():
    buffer = HistoryBuffer([1.0, 2.0, 6.0], [1, 1, 1])
    assert buffer.statistics('mean', 2) == 4.0
    assert buffer.statistics('current') == 6.0

    def spread(self, window_size=None):
        return self.max(window_size) - self.min(window_size)

    HistoryBuffer.register_statistics(spread)
    try:
        assert buffer.statistics('spread') == 5.0
        with pytest.raises(ValueError, match="a statistic named 'spread' is registered"):
            HistoryBuffer.register_statistics(spread)
    finally:
        del HistoryBuffer._statistics_methods['spread']


def test_an_unknown_statistic_is_a_key_error_listing_the_known_ones():
    with pytest.raises(KeyError, match=r"no statistic 'maen'.*Did you mean 'mean'.*'current'"):
        HistoryBuffer([1.0], [1]).statistics('maen')


def test_an_empty_buffer_says_it_has_no_value_yet():
    with pytest.raises(ValueError, match=r'HistoryBuffer.current: no value recorded yet'):
        HistoryBuffer().current()
    with pytest.raises(ValueError, match=r'HistoryBuffer.mean: no value recorded yet'):
        HistoryBuffer().mean()


@pytest.mark.parametrize('window', [0, -1, 1.5, 'global'])
def test_a_window_must_be_a_positive_int(window):
    with pytest.raises(ValueError, match=rf'HistoryBuffer.mean window_size must be a positive '
                                         rf'int or None, but got {window!r}'):
        HistoryBuffer([1.0], [1]).mean(window)


def test_a_buffer_keeps_at_most_max_length_values():
    buffer = HistoryBuffer(max_length=3)
    for value in range(5):
        buffer.update(value)
    assert buffer.data[0].tolist() == [2.0, 3.0, 4.0]
    with pytest.warns(UserWarning, match='max_length is 2; the oldest are dropped'):
        buffer = HistoryBuffer([1, 2, 3], [1, 1, 1], max_length=2)
    assert buffer.data[0].tolist() == [2.0, 3.0]


def test_histories_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match='log_history has 2 values but count_history has 1'):
        HistoryBuffer([1, 2], [1])


def test_a_buffer_refuses_what_is_not_a_number():
    with pytest.raises(TypeError, match="log_val must be a number, but got str: 'x'"):
        HistoryBuffer().update('x')
    with pytest.raises(ValueError, match=r'takes one value, but got a tensor of shape \(2,\)'):
        HistoryBuffer().update(torch.ones(2))


def test_a_tensor_value_is_read_only_when_a_statistic_is_asked_for(monkeypatch):
    buffer = HistoryBuffer()
    counter = CountingTensor(monkeypatch)
    for value in (1.0, 2.0, 3.0):
        buffer.update(torch.tensor(value))
    buffer.update(4.0)  # a number after waiting tensors keeps its place
    assert counter.reads == 0 and len(buffer) == 4
    assert buffer.data[0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert counter.reads == 1  # the three tensors, in one read
    assert buffer.current() == 4.0


def test_a_buffer_pickles_and_copies_with_its_values():
    buffer = HistoryBuffer()
    buffer.update(torch.tensor(2.0))
    buffer.update(3.0)
    for copied in (pickle.loads(pickle.dumps(buffer)), copy.deepcopy(buffer)):
        assert copied.data[0].tolist() == [2.0, 3.0]


# -- MessageHub: instances ----------------------------------------------------------------
def test_get_current_instance_creates_a_fengine_hub_when_there_is_none(fresh_hubs):
    hub = MessageHub.get_current_instance()
    assert hub.instance_name == 'fengine'
    assert MessageHub.get_current_instance() is hub


def test_the_newest_hub_is_the_current_one_and_names_find_them(fresh_hubs):
    first = MessageHub.get_instance('run_a')
    second = MessageHub.get_instance('run_b')
    assert MessageHub.get_current_instance() is second
    assert MessageHub.get_instance('run_a') is first


def test_a_runner_gets_a_fresh_hub_named_after_its_run(tmp_path, fresh_hubs):
    from fengine import Runner
    from seed_models import NeuralNetwork

    runner = Runner(model=NeuralNetwork(), work_dir=tmp_path, experiment_name='same_name')
    assert runner.experiment_name.startswith('same_name_')
    assert runner.message_hub.instance_name == runner.experiment_name
    assert MessageHub.get_current_instance() is runner.message_hub
    # A second run of that name (started in the same second) gets its own, empty hub.
    runner.message_hub.update_scalar('train/loss', 1.0)
    again = Runner(model=NeuralNetwork(), work_dir=tmp_path, experiment_name='same_name')
    if again.experiment_name == runner.experiment_name:
        assert again.message_hub is not runner.message_hub
    assert list(again.message_hub.log_scalars) == []
    assert MessageHub.get_current_instance() is again.message_hub


# -- MessageHub: scalars ------------------------------------------------------------------
def test_update_scalar_records_numbers_arrays_and_tensors():
    hub = MessageHub('scalars')
    hub.update_scalar('train/loss', 1)
    hub.update_scalar('train/loss', np.float32(2.0))
    hub.update_scalar('train/loss', np.array([3.0]))
    hub.update_scalar('train/loss', torch.tensor(6.0), count=2)
    buffer = hub.get_scalar('train/loss')
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.data[0].tolist() == [1.0, 2.0, 3.0, 6.0]
    assert buffer.mean() == 12.0 / 5


def test_update_scalars_takes_a_dict_with_optional_counts():
    hub = MessageHub('many')
    hub.update_scalars({'a': 1.0, 'b': dict(value=4.0, count=2)})
    assert hub.get_scalar('a').current() == 1.0
    assert hub.get_scalar('b').data[1].tolist() == [2.0]
    with pytest.raises(KeyError, match=r"'c' is a dict without a 'value' key"):
        hub.update_scalars({'c': dict(count=2)})
    with pytest.raises(TypeError, match='takes a dict of name -> value, but got list'):
        hub.update_scalars([('a', 1.0)])


def test_update_scalar_refuses_a_bad_value_or_count():
    hub = MessageHub('bad')
    with pytest.raises(ValueError, match=r"update_scalar\('x'\) takes one value, but got an "
                                         r'array of shape \(2,\)'):
        hub.update_scalar('x', np.ones(2))
    with pytest.raises(TypeError, match=r"count must be an int, but got float: 1.5"):
        hub.update_scalar('x', 1.0, count=1.5)


def test_get_scalar_of_an_unknown_key_lists_the_recorded_ones():
    hub = MessageHub('unknown')
    hub.update_scalar('train/loss', 1.0)
    with pytest.raises(KeyError, match=r"no scalar 'train/los'.*Did you mean 'train/loss'"):
        hub.get_scalar('train/los')


def test_waiting_tensors_of_every_scalar_are_read_in_one_host_copy(monkeypatch):
    hub = MessageHub('one_read')
    counter = CountingTensor(monkeypatch)
    for step in range(5):
        hub.update_info('iter', step)
        hub.update_scalar('train/loss', torch.tensor(float(step)))
        hub.update_scalar('train/acc', torch.tensor(step / 10))
        hub.update_scalar('train/time', 0.5)  # a host number: recorded at once
    assert counter.reads == 0
    assert hub.get_scalar('train/loss').mean() == 2.0
    assert counter.reads == 1  # loss and acc, ten values, one read
    assert hub.get_scalar('train/acc').current() == pytest.approx(0.4)
    assert counter.reads == 1


def test_sync_returns_the_values_read_by_iteration():
    hub = MessageHub('sync')
    for step in range(2):
        hub.update_info('iter', step)
        hub.update_scalar('train/loss', torch.tensor(float(step + 1)))
    assert hub.sync() == [(0, {'train/loss': 1.0}), (1, {'train/loss': 2.0})]
    assert hub.sync() == []
    assert hub.history('train/loss') == [1.0, 2.0] and hub.history('train/none') == []


def test_a_nan_loss_names_its_iteration_and_keeps_only_earlier_values():
    hub = MessageHub('nan')
    for step, loss in enumerate((1.0, 2.0, float('nan'), 4.0)):
        hub.update_info('iter', step)
        hub.update_scalar('train/loss', torch.tensor(loss))
        hub.update_scalar('train/acc', torch.tensor(0.5))
    with pytest.raises(NonFiniteLossError,
                       match=r"the train loss is not finite at iteration 3: loss=nan "
                             r"\(all values: \{'loss': nan, 'acc': 0.5\}\)"):
        hub.sync()
    assert hub.history('train/loss') == [1.0, 2.0]
    assert hub.history('train/acc') == [0.5, 0.5]


# -- MessageHub: facts ----------------------------------------------------------------------
def test_runtime_info_is_set_replaced_read_and_popped():
    hub = MessageHub('info')
    hub.update_info('epoch', 1)
    hub.update_info_dict({'epoch': 2, 'iter': 20})
    assert hub.get_info('epoch') == 2 and hub.runtime_info['iter'] == 20
    assert hub.get_info('missing', 'default') == 'default'
    assert hub.pop_info('iter') == 20 and 'iter' not in hub.runtime_info
    with pytest.raises(TypeError, match='update_info_dict takes a dict, but got int'):
        hub.update_info_dict(3)


def test_a_key_keeps_one_resumed_setting():
    hub = MessageHub('resumed')
    hub.update_scalar('a', 1.0, resumed=False)
    with pytest.raises(ValueError, match="'a' was recorded with resumed=False, now with "
                                         'resumed=True'):
        hub.update_scalar('a', 2.0)


# -- MessageHub: state ------------------------------------------------------------------------
def test_the_state_holds_resumed_keys_only_and_loads_safely(tmp_path):
    hub = MessageHub('saved')
    hub.update_scalar('train/loss', torch.tensor(1.5))
    hub.update_scalar('train/time', 0.1, resumed=False)
    hub.update_info('epoch', 3)
    hub.update_info('scratch', 'x', resumed=False)
    torch.save(hub.state_dict(), tmp_path / 'hub.pth')
    state = torch.load(tmp_path / 'hub.pth', weights_only=True)
    assert set(state['log_scalars']) == {'train/loss'}
    assert state['runtime_info'] == {'epoch': 3}
    loaded = MessageHub('loaded')
    loaded.update_scalar('train/loss', 9.0)  # replaced by the state's history
    loaded.load_state_dict(state)
    assert loaded.history('train/loss') == [1.5] and loaded.get_info('epoch') == 3


def test_a_fact_checkpoints_cannot_hold_is_left_out_with_a_warning(fengine_log):
    hub = MessageHub('odd_fact')
    hub.update_info('matrix', np.eye(2))
    hub.update_info('names', ['a', 'b'])
    state = hub.state_dict()
    assert state['runtime_info'] == {'names': ['a', 'b']}
    assert any("runtime info 'matrix' (ndarray) is not saved" in m for m in fengine_log.messages())


def test_the_state_of_an_older_fengine_loads():
    hub = MessageHub('old_state')
    hub.load_state_dict({'runtime_info': {'best': 0.5},
                         'log_scalars': {'train/loss': torch.tensor([1.0, 3.0],
                                                                    dtype=torch.float64)}})
    assert hub.history('train/loss') == [1.0, 3.0] and hub.get_scalar('train/loss').mean() == 2.0


def test_a_bad_state_changes_nothing():
    hub = MessageHub('unchanged')
    hub.update_scalar('train/loss', 1.0)
    with pytest.raises(TypeError, match=r"MessageHub state has unknown key\(s\) \['scalars'\]"):
        hub.load_state_dict({'scalars': {}})
    with pytest.raises(TypeError, match=r"log_scalars\['b'\] must be a dict with data"):
        hub.load_state_dict({'log_scalars': {'train/loss': torch.tensor([5.0]), 'b': 'x'},
                             'runtime_info': {'epoch': 1}})
    assert hub.history('train/loss') == [1.0] and hub.get_info('epoch') is None


def test_a_hub_copies_another_hub():
    source = MessageHub('source')
    source.update_scalar('train/loss', torch.tensor(2.0))
    source.update_info('epoch', 1)
    target = MessageHub('target')
    target.load_state_dict(source)
    assert target.history('train/loss') == [2.0] and target.get_info('epoch') == 1
    target.update_scalar('train/loss', 4.0)
    assert source.history('train/loss') == [2.0]  # a copy, not the same buffer


def test_a_hub_is_built_from_buffers_and_facts():
    hub = MessageHub('built', log_scalars={'loss': HistoryBuffer([1.0], [1])},
                     runtime_info={'task': 'x'}, resumed_keys={'loss': False})
    assert hub.get_scalar('loss').current() == 1.0 and hub.get_info('task') == 'x'
    assert 'loss' not in hub.state_dict()['log_scalars']
    with pytest.raises(TypeError, match=r"log_scalars\['loss'\] must be a HistoryBuffer"):
        MessageHub('bad_built', log_scalars={'loss': [1.0]})
    with pytest.raises(KeyError, match="resumed_keys names 'nope'"):
        MessageHub('bad_keys', resumed_keys={'nope': True})


def test_a_buffer_of_ints_gives_ints_and_its_mean_as_a_float():
    buffer = HistoryBuffer()
    buffer.update(8)
    buffer.update(np.int64(4))
    assert buffer.current() == 4 and type(buffer.current()) is int
    assert type(buffer.max()) is int and buffer.mean() == 6.0
    buffer.update(0.5)
    assert type(buffer.current()) is float and type(buffer.max()) is float
