"""MMEngine 0.10.7's unit tests of OptimWrapper and OptimWrapperDict, checked on fengine.

The same checks, written for fengine (``tests/test_optim/test_optimizer/
test_optimizer_wrapper.py`` and ``test_optimizer_wrapper_dict.py`` in MMEngine). Where
fengine deliberately differs, the test says so and checks fengine's behaviour (see
docs/migrating.md, "Optimizers and schedulers"):

- user input errors are ``TypeError``/``ValueError`` naming the value, not ``assert``;
- warnings are worded as fengine words them;
- the gradient norm goes to ``OptimWrapper.log_vars``, not to a global message hub;
- the accumulation window is computed from ``_init_counts``/``_max_counts``, so there is
  no ``_remainder_counts`` attribute (the loss factors it gave are checked instead).

Left out: the AmpOptimWrapper tests that need CUDA (float16 autocast on a GPU), and the
two-process DDP test, replaced by a one-process DDP and a custom ``no_sync`` model.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from unittest.mock import MagicMock

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.optim import SGD, Adam, Optimizer

from fengine.optim import OptimWrapper, OptimWrapperDict


class ToyModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 1)
        self.conv2 = nn.Conv2d(1, 1, 1)
        self.conv3 = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.conv2(self.conv1(x))


@pytest.fixture
def model():
    return ToyModel()


@pytest.fixture
def optimizer(model):
    return SGD(model.parameters(), lr=0.1)


def recording(wrapper: OptimWrapper) -> OptimWrapper:
    """Replace backward/step/zero_grad by recorders (MMEngine's ``_mock_method``)."""
    def backward(loss):
        wrapper._inner_count += 1
        wrapper.scaled_loss = loss

    wrapper.backward = backward
    wrapper.step = MagicMock()
    wrapper.zero_grad = MagicMock()
    return wrapper


# -- OptimWrapper ----------------------------------------------------------------------------
def test_init_keeps_the_optimizer_and_starts_counting_from_zero(optimizer):
    wrapper = OptimWrapper(optimizer)
    assert wrapper.optimizer is optimizer
    assert wrapper.clip_grad_kwargs is None
    assert wrapper._accumulative_counts == 1
    assert wrapper._inner_count == 0
    assert wrapper._max_counts == -1
    assert wrapper.log_vars == {}  # fengine: what MMEngine puts in its message hub


def test_a_clip_grad_that_is_not_a_dict_is_a_type_error_naming_it(optimizer):
    # MMEngine: AssertionError 'If `clip_grad` is not None'.
    with pytest.raises(TypeError, match=r'clip_grad must be None or a dict .* but got list: '
                                        r'\[\]'):
        OptimWrapper(optimizer, clip_grad=[])


def test_update_params_steps_every_time_without_accumulation(optimizer):
    wrapper = recording(OptimWrapper(optimizer, accumulative_counts=1))
    wrapper.update_params(torch.tensor(1.))
    assert wrapper.scaled_loss == torch.tensor(1.)
    wrapper.step.assert_called_with()
    wrapper.zero_grad.assert_called_with()


def test_update_params_accumulates_and_shortens_the_last_window(model, optimizer):
    loss = torch.tensor(1.)
    wrapper = recording(OptimWrapper(optimizer, accumulative_counts=3))
    wrapper.update_params(loss)
    assert wrapper.scaled_loss == loss / 3
    wrapper.step.assert_not_called()
    wrapper.zero_grad.assert_not_called()
    wrapper.update_params(loss)
    assert wrapper._inner_count == 2
    wrapper.update_params(loss)
    wrapper.step.assert_called()
    wrapper.zero_grad.assert_called()

    # The end of training without initialize_count_status: no update at count 100.
    recording(wrapper)
    wrapper._inner_count = 99
    wrapper.update_params(loss)
    wrapper.step.assert_not_called()
    wrapper.zero_grad.assert_not_called()
    assert wrapper.scaled_loss == loss / 3

    # With it, the last micro-step updates alone, with its loss unscaled.
    recording(wrapper)
    wrapper.initialize_count_status(model, 99, 100)
    wrapper.update_params(loss)
    wrapper.step.assert_called()
    wrapper.zero_grad.assert_called()
    assert wrapper.scaled_loss == loss

    # Counts 97 and 98 do not update; their window (96..99) divides by 3.
    recording(wrapper)
    wrapper.initialize_count_status(model, 96, 100)
    for _ in range(2):
        wrapper.update_params(loss)
        wrapper.step.assert_not_called()
        wrapper.zero_grad.assert_not_called()
    assert wrapper.scaled_loss == loss / 3


def test_initialize_count_status_makes_the_remainder_window_and_warns(model, optimizer,
                                                                      fengine_log):
    wrapper = OptimWrapper(optimizer, accumulative_counts=3)
    wrapper.initialize_count_status(model, 0, 100)
    # MMEngine: _remainder_counts == 1; fengine: the last window (99..100) divides by 1.
    wrapper._inner_count = 99
    assert wrapper.scale_loss(torch.tensor(6.)) == 6.

    # A start that is not a multiple of accumulative_counts warns (fengine's wording;
    # MMEngine: 'Resumed iteration number ...').
    OptimWrapper(optimizer, accumulative_counts=3).initialize_count_status(model, 2, 100)
    assert fengine_log.messages()[-1].startswith('Resuming at micro-step 2, which is not a '
                                                 'multiple of accumulative_counts=3')

    # A model with BatchNorm warns (MMEngine: 'Gradient accumulative ...').
    OptimWrapper(optimizer, accumulative_counts=3).initialize_count_status(
        nn.BatchNorm2d(1), 0, 99)
    assert fengine_log.messages()[-1].startswith('Gradient accumulation may slightly decrease '
                                                 'performance because the model has BatchNorm')


def test_get_lr(model):
    assert OptimWrapper(SGD(model.parameters(), lr=0.1)).get_lr() == dict(lr=[0.1])


def test_get_momentum_of_sgd_and_adam(model):
    sgd = OptimWrapper(SGD(model.parameters(), lr=0., momentum=0.8))
    assert sgd.get_momentum() == dict(momentum=[0.8])
    adam = OptimWrapper(Adam(model.parameters(), lr=0., betas=(0.9, 0.9)))
    assert adam.get_momentum() == dict(momentum=[0.9])


def test_backward_calls_the_losss_backward(optimizer):
    loss = MagicMock()
    OptimWrapper(optimizer).backward(loss)
    loss.backward.assert_called()


def test_zero_grad_and_step_call_the_optimizers():
    optimizer = MagicMock(spec=Optimizer)
    wrapper = OptimWrapper(optimizer)
    wrapper.zero_grad()
    optimizer.zero_grad.assert_called()
    wrapper.step()
    optimizer.step.assert_called()


def test_clip_grads_records_the_gradient_norm(model, optimizer):
    # MMEngine skips this test; it checks message_hub.log_scalars['train/grad_norm'].
    wrapper = OptimWrapper(optimizer, clip_grad=dict(max_norm=35))
    model(torch.ones(1, 1, 1, 1)).sum().backward()
    log_vars = wrapper._clip_grad()
    assert set(log_vars) == {'grad_norm'}
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert log_vars['grad_norm'] == pytest.approx(torch.cat([g.flatten() for g in grads]).norm())


def test_state_dict_is_the_optimizers(optimizer):
    assert OptimWrapper(optimizer).state_dict() == optimizer.state_dict()


def test_load_state_dict_loads_into_the_optimizer(optimizer):
    wrapper = OptimWrapper(optimizer)
    other = SGD(ToyModel().parameters(), lr=0.1)
    wrapper.load_state_dict(other.state_dict())
    assert wrapper.state_dict() == other.state_dict()


def test_param_groups_are_the_optimizers(optimizer):
    assert OptimWrapper(optimizer).param_groups == optimizer.param_groups


class CountingNoSync(nn.Module):
    """A model wrapper with ``no_sync`` (as DDP/FSDP), recording when it is entered."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.entered = []

    @contextmanager
    def no_sync(self):
        self.entered.append(True)
        yield

    def forward(self, x):
        return self.module(x)


def test_optim_context_skips_gradient_sync_between_updates():
    # MMEngine runs this on two processes and compares gradients across ranks; here
    # the same decisions, on a model with no_sync.
    model = CountingNoSync(nn.Conv2d(1, 1, 1))
    optimizer = SGD(model.parameters(), lr=0.01)
    wrapper = OptimWrapper(optimizer, accumulative_counts=1)
    wrapper.initialize_count_status(model, 0, 100)
    with wrapper.optim_context(model):  # syncs: every micro-step updates
        model(torch.ones(1, 1, 1, 1)).sum().backward()
    assert model.entered == []

    wrapper = OptimWrapper(optimizer, accumulative_counts=3)
    wrapper.initialize_count_status(model, 0, 100)
    with wrapper.optim_context(model):  # micro-step 1 of 3: no sync
        model(torch.ones(1, 1, 1, 1)).sum().backward()
    assert model.entered == [True]

    wrapper.initialize_count_status(model, 2, 100)
    with wrapper.optim_context(model):  # micro-step 3 of 3: syncs
        model(torch.ones(1, 1, 1, 1)).sum().backward()
    assert model.entered == [True]


@pytest.fixture
def gloo_group(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_optim_context_uses_ddps_no_sync(gloo_group):
    ddp = nn.parallel.DistributedDataParallel(nn.Conv2d(1, 1, 1))
    wrapper = OptimWrapper(SGD(ddp.parameters(), lr=0.01), accumulative_counts=3)
    wrapper.initialize_count_status(ddp, 0, 100)
    with wrapper.optim_context(ddp):
        assert ddp.require_backward_grad_sync is False
    wrapper.initialize_count_status(ddp, 2, 100)
    with wrapper.optim_context(ddp):
        assert ddp.require_backward_grad_sync is True


# -- OptimWrapperDict --------------------------------------------------------------------
@pytest.fixture
def two():
    model1, model2 = nn.Linear(1, 1), nn.Linear(1, 1)
    optim1 = SGD(model1.parameters(), lr=0.1, momentum=0.8)
    optim2 = SGD(model2.parameters(), lr=0.2, momentum=0.9)
    wrappers = dict(optim1=OptimWrapper(optim1), optim2=OptimWrapper(optim2))
    return dict(models=(model1, model2), optimizers=(optim1, optim2), wrappers=wrappers)


def test_dict_init_keeps_the_wrappers_and_refuses_optimizers(two):
    assert OptimWrapperDict(**two['wrappers']).optim_wrappers == two['wrappers']
    # MMEngine: AssertionError '`OptimWrapperDict` only accept'.
    optim1, optim2 = two['optimizers']
    with pytest.raises(TypeError, match=r'OptimWrapperDict takes OptimWrapper instances by '
                                        r'name, but optim1= is a SGD'):
        OptimWrapperDict(optim1=optim1, optim2=optim2)


@pytest.mark.parametrize('method, args', [('update_params', (1,)), ('backward', (1,)),
                                          ('step', ())])
def test_dict_leaves_updates_to_each_wrapper(two, method, args):
    # MMEngine's message: '`<method>` should be called by each optimizer separately'.
    with pytest.raises(NotImplementedError, match=rf'OptimWrapperDict.{method}\(\) is '
                                                  r'ambiguous: call it on one of the wrappers'):
        getattr(OptimWrapperDict(**two['wrappers']), method)(*args)


def test_dict_optim_context_is_per_wrapper(two):
    with pytest.raises(NotImplementedError, match=r'optim_context\(\) is ambiguous'):
        with OptimWrapperDict(**two['wrappers']).optim_context(two['models'][0]):
            pass


def test_dict_zero_grad_clears_every_gradient(two):
    model1, model2 = two['models']
    model1(torch.randn(1, 1)).sum().backward()
    model2(torch.randn(1, 1)).sum().backward()
    assert (model1.weight.grad != 0).any() and (model2.weight.grad != 0).any()
    OptimWrapperDict(**two['wrappers']).zero_grad()
    assert model1.weight.grad is None and model2.weight.grad is None


def test_dict_initialize_count_status_can_be_called(two):
    OptimWrapperDict(**two['wrappers']).initialize_count_status(two['models'][0], 1, 1)


def test_dict_param_groups_lr_and_momentum_by_name(two):
    wrapper_dict = OptimWrapperDict(**two['wrappers'])
    optim1, optim2 = two['optimizers']
    assert wrapper_dict.param_groups['optim1'] == optim1.param_groups
    assert wrapper_dict.param_groups['optim2'] == optim2.param_groups
    lr = wrapper_dict.get_lr()
    assert (lr['optim1.lr'], lr['optim2.lr']) == ([0.1], [0.2])
    momentum = wrapper_dict.get_momentum()
    assert (momentum['optim1.momentum'], momentum['optim2.momentum']) == ([0.8], [0.9])


def test_dict_state_dict_round_trip(two):
    saved = OptimWrapperDict(**two['wrappers'])
    state = saved.state_dict()
    assert state['optim1'] == two['wrappers']['optim1'].state_dict()
    assert state['optim2'] == two['wrappers']['optim2'].state_dict()
    loaded = OptimWrapperDict(optim1=OptimWrapper(SGD(nn.Linear(1, 1).parameters(), lr=0.1)),
                              optim2=OptimWrapper(SGD(nn.Linear(1, 1).parameters(), lr=0.1)))
    loaded.load_state_dict(copy.deepcopy(state))
    assert loaded.state_dict() == saved.state_dict()


def test_dict_items_values_keys_getitem_len_contains_repr(two):
    wrappers = two['wrappers']
    wrapper_dict = OptimWrapperDict(**wrappers)
    assert list(wrapper_dict.items()) == list(wrappers.items())
    assert list(wrapper_dict.values()) == list(wrappers.values())
    assert list(wrapper_dict.keys()) == list(wrappers.keys())
    assert wrapper_dict['optim1'] is wrappers['optim1']
    assert wrapper_dict['optim2'] is wrappers['optim2']
    assert len(wrapper_dict) == 2
    assert 'optim1' in wrapper_dict
    assert 'name: optim1' in repr(wrapper_dict)
