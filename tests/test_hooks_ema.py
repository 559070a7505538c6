"""EMAHook and the averaged models: values by hand, eager and compiled, and exact resume."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fengine.hooks import EMAHook, Hook
from fengine.model import (BaseAveragedModel, ExponentialMovingAverage, MomentumAnnealingEMA,
                           StochasticWeightAverage)
from fengine.optim import OptimWrapper

from hook_models import AOT_EAGER, Accuracy, Net, data, fresh_net, make_runner


@pytest.fixture(autouse=True)
def _forget_compiled_code():
    """Dynamo's caches are dropped after each test: a later test's compiled step of
    another model (with dropout) otherwise fails to compile ('Observed exception'), an
    order dependence of dynamo's caches that this file's compiled steps expose."""
    yield
    torch._dynamo.reset()


def weights_sequence(n: int = 6):
    """``n`` successive weights of a linear layer (as a training run would give)."""
    torch.manual_seed(1)
    return [torch.randn(3, 2) for _ in range(n)]


def fed(average: BaseAveragedModel, model: nn.Linear, sequence) -> list[torch.Tensor]:
    """The averaged weight after each update with the weights of ``sequence``."""
    seen = []
    for weight in sequence:
        with torch.no_grad():
            model.weight.copy_(weight)
        average.update_parameters(model)
        seen.append(average.module.weight.detach().clone())
    return seen


# -- the averaged models, against the formulas by hand ---------------------------------
def test_ema_is_a_copy_first_then_moves_by_momentum_towards_each_new_weight():
    sequence = weights_sequence()
    model = nn.Linear(2, 3)
    got = fed(ExponentialMovingAverage(model, momentum=0.3), model, sequence)
    expected = sequence[0]
    assert torch.equal(got[0], expected)
    for weight, value in zip(sequence[1:], got[1:]):
        expected = 0.7 * expected + 0.3 * weight
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)


def test_ema_with_an_interval_averages_every_interval_th_update_only():
    sequence = weights_sequence()
    model = nn.Linear(2, 3)
    got = fed(ExponentialMovingAverage(model, momentum=0.5, interval=2), model, sequence)
    # steps 0 (copy), 2 and 4 change it; 1, 3 and 5 only count.
    first = sequence[0]
    second = 0.5 * first + 0.5 * sequence[2]
    third = 0.5 * second + 0.5 * sequence[4]
    for value, expected in zip(got, [first, first, second, second, third, third]):
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)


def test_swa_is_the_plain_mean_of_the_weights_seen():
    sequence = weights_sequence()
    model = nn.Linear(2, 3)
    got = fed(StochasticWeightAverage(model), model, sequence)
    for n, value in enumerate(got, start=1):
        torch.testing.assert_close(value, torch.stack(sequence[:n]).mean(0), rtol=1e-5,
                                   atol=1e-6)


def test_momentum_annealing_uses_gamma_over_gamma_plus_steps_until_momentum_is_larger():
    sequence = weights_sequence()
    model = nn.Linear(2, 3)
    got = fed(MomentumAnnealingEMA(model, momentum=0.3, gamma=2), model, sequence)
    expected = sequence[0]
    for steps, (weight, value) in enumerate(zip(sequence[1:], got[1:]), start=1):
        momentum = max(0.3, 2 / (2 + steps))  # 0.667, 0.5, 0.4, 0.333, 0.3
        expected = (1 - momentum) * expected + momentum * weight
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)


def test_a_subclass_with_its_own_avg_func_gets_its_own_rule():
    class Latest(ExponentialMovingAverage):
        def avg_func(self, averaged_param, source_param, steps):
            averaged_param.copy_(source_param)

    sequence = weights_sequence(3)
    model = nn.Linear(2, 3)
    got = fed(Latest(model, momentum=0.1), model, sequence)
    assert torch.equal(got[-1], sequence[-1])


def test_buffers_are_copied_from_the_model_unless_update_buffers():
    model = nn.BatchNorm1d(2)
    copied = ExponentialMovingAverage(model, momentum=0.5)
    averaged = ExponentialMovingAverage(model, momentum=0.5, update_buffers=True)
    for value in (1.0, 3.0):
        model.running_mean.fill_(value)
        copied.update_parameters(model)
        averaged.update_parameters(model)
    assert copied.module.running_mean.tolist() == [3.0, 3.0]
    assert averaged.module.running_mean.tolist() == [2.0, 2.0]
    # An integer buffer keeps its first value (MMEngine's rule); a float one is averaged.
    assert averaged.module.num_batches_tracked.dtype == torch.long


class HostReads(TorchFunctionMode):
    """Counts every read of a tensor's value on the host (each a device sync on a GPU)."""

    READS = {'__bool__', '__int__', '__float__', '__index__', 'item', 'tolist'}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', '')
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('cls, kwargs', [
    (ExponentialMovingAverage, dict(momentum=0.1)),
    (ExponentialMovingAverage, dict(momentum=0.1, interval=2, update_buffers=True)),
    (MomentumAnnealingEMA, dict(gamma=10)),
    (StochasticWeightAverage, dict()),
])
def test_an_update_reads_no_tensor_value_on_the_host(cls, kwargs):
    model = Net()
    average = cls(model, **kwargs)
    with HostReads() as mode:
        for _ in range(4):
            average.update_parameters(model)
    assert mode.reads == []
    assert average.steps.item() == 4  # the buffer follows, for checkpoints


def test_a_loaded_steps_count_is_where_the_updates_continue():
    sequence = weights_sequence(4)
    model = nn.Linear(2, 3)
    whole = MomentumAnnealingEMA(model, momentum=0.1, gamma=3)
    fed(whole, model, sequence)
    first = MomentumAnnealingEMA(model, momentum=0.1, gamma=3)
    fed(first, model, sequence[:2])
    second = MomentumAnnealingEMA(nn.Linear(2, 3), momentum=0.1, gamma=3)
    second.load_state_dict(first.state_dict())
    fed(second, model, sequence[2:])
    assert second.steps.item() == 4
    assert torch.equal(second.module.weight, whole.module.weight)


def test_the_copy_leaves_out_a_compiled_step_and_its_optimizer():
    model = fresh_net().compile_steps(AOT_EAGER)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    model.train_step(batch, wrapper)
    average = ExponentialMovingAverage(model)
    assert average.module._compiled_steps is None
    assert model._compiled_steps is not None
    assert not any(p.requires_grad for p in average.module.parameters())
    assert set(average.state_dict()) == {'steps', *(f'module.{k}' for k in model.state_dict())}


@pytest.mark.parametrize('kwargs, message', [
    (dict(momentum=0.0), r'momentum must be a number in \(0, 1\).*got 0.0'),
    (dict(momentum=1.5), r'momentum must be a number in \(0, 1\).*got 1.5'),
    (dict(interval=0), r'interval must be a positive int, but got 0'),
    (dict(update_buffers=1), r'update_buffers must be a bool, but got 1'),
])
def test_bad_arguments_of_an_averaged_model_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ExponentialMovingAverage(nn.Linear(2, 2), **kwargs)


def test_momentum_annealing_needs_a_positive_gamma():
    with pytest.raises(ValueError, match=r'gamma must be a positive number, but got 0'):
        MomentumAnnealingEMA(nn.Linear(2, 2), gamma=0)


def test_a_large_momentum_is_accepted_with_a_warning(fengine_log):
    ExponentialMovingAverage(nn.Linear(2, 2), momentum=0.9)
    assert 'momentum=0.9 is the weight of the NEW weights' in fengine_log.text


# -- EMAHook arguments ------------------------------------------------------------------
def test_ema_hook_takes_begin_iter_or_begin_epoch_not_both():
    with pytest.raises(ValueError, match=r'begin_iter or begin_epoch, not both, but got '
                                         r'begin_iter=2 and begin_epoch=1'):
        EMAHook(begin_iter=2, begin_epoch=1)


def test_ema_hook_names_an_unknown_ema_type_and_close_names():
    with pytest.raises(KeyError, match=r"'ExponentialMovingAverge' is not in the models? "
                                       r"registry\. Did you mean 'ExponentialMovingAverage'"):
        EMAHook(ema_type='ExponentialMovingAverge')


def test_ema_hook_names_arguments_its_ema_type_does_not_take():
    with pytest.raises(TypeError, match=r"StochasticWeightAverage does not take \['momentum'\]"):
        EMAHook(ema_type='StochasticWeightAverage', momentum=0.1)


def test_ema_hook_refuses_a_begin_after_the_end_of_training(tmp_path):
    runner = make_runner(tmp_path, iters=4, custom_hooks=[dict(type='EMAHook', begin_iter=5)])
    with pytest.raises(ValueError, match=r'begin_iter=5 is after the last iteration '
                                         r'\(max_iters=4\)'):
        runner.train()


# -- EMAHook in a run -------------------------------------------------------------------
class RecordWeights(Hook):
    """The model's weights after each training iteration, and during each validation."""

    priority = 'HIGHEST'

    def __init__(self) -> None:
        self.train: list[dict] = []
        self.val: list[dict] = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.train.append(copy.deepcopy(runner.model.state_dict()))

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.val.append(copy.deepcopy(runner.model.state_dict()))


PARAMETERS = {name for name, _ in Net().named_parameters()}  # the buffers are copied


def hand_ema(states: list[dict], momentum: float, begin: int = 0) -> dict:
    """MMEngine's rule: a copy until ``begin`` and at the first update, then lerp."""
    ema = None
    for index, state in enumerate(states):
        if ema is None or index + 1 <= begin:  # before begin, and its first update
            ema = {k: v.clone() for k, v in state.items()}
            continue
        ema = {k: (torch.lerp(ema[k], v, momentum) if k in PARAMETERS else v.clone())
               for k, v in state.items()}
    return ema


@pytest.mark.parametrize('compile', [False, AOT_EAGER], ids=['eager', 'compiled'])
def test_the_average_of_a_run_is_the_hand_computed_ema_of_its_weights(tmp_path, compile):
    record = RecordWeights()
    runner = make_runner(tmp_path, iters=5, compile=compile, custom_hooks=[
        dict(type='EMAHook', momentum=0.25), record],
        checkpoint=dict(type='CheckpointHook', interval=5, by_epoch=False))
    runner.train()
    expected = hand_ema(record.train, 0.25)
    ema = [h for h in runner.hooks if isinstance(h, EMAHook)][0]
    for name, value in ema.ema_model.module.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6)
    if compile:
        assert runner.model._compiled_steps['train']['step']._compiled is not None
    # The checkpoint: state_dict holds the average, ema_state_dict the model's weights.
    saved = torch.load(tmp_path / 'iter_5.pth', weights_only=True)
    last = record.train[-1]
    assert saved['ema_state_dict']['steps'].item() == 5
    for name in last:
        torch.testing.assert_close(saved['state_dict'][name], expected[name], rtol=0, atol=1e-6)
        assert torch.equal(saved['ema_state_dict'][f'module.{name}'], last[name])
    # Saving changed neither model.
    assert all(torch.equal(v, last[k]) for k, v in runner.model.state_dict().items())


def test_before_begin_iter_the_average_is_the_model(tmp_path):
    record = RecordWeights()
    runner = make_runner(tmp_path, iters=5, custom_hooks=[
        dict(type='EMAHook', momentum=0.5, begin_iter=3), record])
    runner.train()
    ema = [h for h in runner.hooks if isinstance(h, EMAHook)][0]
    expected = hand_ema(record.train, 0.5, begin=3)
    torch.testing.assert_close(ema.ema_model.module.fc.weight, expected['fc.weight'], rtol=0,
                               atol=1e-6)
    assert ema.ema_model.steps.item() == 3  # iterations 3, 4 and 5


def test_validation_runs_on_the_averaged_weights_and_training_goes_on_with_its_own(tmp_path):
    record = RecordWeights()
    runner = make_runner(tmp_path, epochs=2, validate=True, custom_hooks=[
        dict(type='EMAHook', momentum=0.5), record])
    runner.train()
    ema = hand_ema(record.train[:4], 0.5)
    assert torch.equal(record.val[0]['fc.weight'], ema['fc.weight'])  # epoch 1's validation
    # Training resumed from its own weights, not from the average: the weights the
    # second epoch starts from are those of the end of the first.
    fifth = record.train[4]['fc.weight']
    assert not torch.equal(fifth, ema['fc.weight'])
    ema_hook = [h for h in runner.hooks if isinstance(h, EMAHook)][0]
    assert torch.equal(runner.model.fc.weight, record.train[-1]['fc.weight'])
    assert not torch.equal(ema_hook.ema_model.module.fc.weight, runner.model.fc.weight)


@pytest.mark.parametrize('compile', [False, AOT_EAGER], ids=['eager', 'compiled'])
def test_a_resumed_run_continues_the_average_exactly(tmp_path, compile):
    def run(folder, iters, **kwargs):
        runner = make_runner(tmp_path / folder, iters=iters, compile=compile, custom_hooks=[
            dict(type='EMAHook', ema_type='MomentumAnnealingEMA', gamma=4)],
            checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False), **kwargs)
        runner.train()
        return runner

    run('whole', 6)
    run('parts', 3)
    run('parts', 6, resume=True)
    whole = torch.load(tmp_path / 'whole' / 'iter_6.pth', weights_only=True)
    resumed = torch.load(tmp_path / 'parts' / 'iter_6.pth', weights_only=True)
    for key in ('state_dict', 'ema_state_dict'):
        assert whole[key].keys() == resumed[key].keys()
        for name, value in whole[key].items():
            assert torch.equal(value, resumed[key][name]), (key, name)


def test_loading_a_checkpoint_without_resuming_gives_both_models_the_average(tmp_path):
    record = RecordWeights()
    make_runner(tmp_path / 'train', iters=4, custom_hooks=[dict(type='EMAHook', momentum=0.5)],
                checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False)).train()
    saved = torch.load(tmp_path / 'train' / 'iter_4.pth', weights_only=True)
    tester = make_runner(tmp_path / 'test', iters=4, load_from=tmp_path / 'train' / 'iter_4.pth',
                         test_dataloader=dict(dataset=data(8), batch_size=8),
                         test_evaluator=Accuracy(),
                         custom_hooks=[dict(type='EMAHook', momentum=0.5), record])
    tester.test()
    hook = [h for h in tester.hooks if isinstance(h, EMAHook)][0]
    for name, value in saved['state_dict'].items():
        assert torch.equal(tester.model.state_dict()[name], value)
        assert torch.equal(hook.ema_model.module.state_dict()[name], value)


def test_resuming_from_a_checkpoint_without_an_average_starts_it_from_the_weights(
        tmp_path, fengine_log):
    make_runner(tmp_path, iters=2, checkpoint=dict(type='CheckpointHook', interval=2,
                                                   by_epoch=False)).train()
    runner = make_runner(tmp_path, iters=3, resume=True, custom_hooks=[
        dict(type='EMAHook', momentum=0.5)])
    runner.train()
    assert 'no ema_state_dict: EMAHook starts the average from its state_dict' in \
        fengine_log.text


def test_a_strict_load_of_a_mismatched_average_changes_nothing(tmp_path):
    make_runner(tmp_path, iters=2, custom_hooks=[dict(type='EMAHook')],
                checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)).train()
    path = tmp_path / 'iter_2.pth'
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint['ema_state_dict']['module.fc.bias']
    torch.save(checkpoint, path)
    runner = make_runner(tmp_path, iters=3, resume=True, custom_hooks=[
        dict(type='EMAHook', strict_load=True)])
    before = copy.deepcopy(runner.model.state_dict())
    with pytest.raises(RuntimeError, match=r"ema_state_dict does not fit the averaged model: "
                                           r".*missing keys \['module.fc.bias'\]"):
        runner.train()
    assert all(torch.equal(v, before[k]) for k, v in runner.model.state_dict().items())
