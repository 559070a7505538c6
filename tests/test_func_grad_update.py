"""The compiled step's update from gradient tensors: torch.optim's numbers, no ``.grad`` kept."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fengine.func import make_train_step
from fengine.func._grad_update import grad_update
from fengine.func._optim_state import init_state_
from fengine.optim import OptimWrapper
from test_func_step import MLP, assert_same_training, batches, twins

# What the update without .grad covers, each beside torch's own step in the tests below.
UPDATES = {
    'SGD': lambda p: torch.optim.SGD(p, lr=0.05),
    'SGD with momentum, weight decay and nesterov': lambda p: torch.optim.SGD(
        p, lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    'SGD with dampening': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
    'SGD maximizing': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, maximize=True),
    'Adam': lambda p: torch.optim.Adam(p, lr=1e-2),
    'Adam with amsgrad and weight decay': lambda p: torch.optim.Adam(
        p, lr=1e-2, amsgrad=True, weight_decay=1e-2),
    'AdamW': lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    'AdamW with foreach': lambda p: torch.optim.AdamW(p, lr=1e-2, foreach=True),
}


def _params(seed: int = 0) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((5, 3), (3,), (2, 2))]


@pytest.mark.parametrize('optimizer', list(UPDATES))
def test_the_update_from_gradients_equals_the_optimizer_step_bit_for_bit(optimizer):
    by_step, by_grads = _params(), _params()
    stepped, direct = UPDATES[optimizer](by_step), UPDATES[optimizer](by_grads)
    update = grad_update(direct)
    assert update is not None
    for param in by_grads:  # the compiled step lends .grad just for this (step.py)
        param.grad = torch.zeros_like(param)
    init_state_(direct)
    for param in by_grads:
        param.grad = None
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in by_step]
        for param, grad in zip(by_step, grads):
            param.grad = grad.clone()
        stepped.step()
        update(direct, dict(zip(by_grads, grads)))
    for a, b in zip(by_step, by_grads):
        assert torch.equal(a, b)
    for a, b in zip(by_step, by_grads):
        for key, value in stepped.state[a].items():
            assert torch.equal(direct.state[b][key], value), key
    assert all(p.grad is None for p in by_grads)


class RMSpropSubclass(torch.optim.SGD):
    """An SGD whose own step may read ``.grad`` its way."""

    def step(self, closure=None):
        return super().step(closure)


@pytest.mark.parametrize('make, why', [
    (lambda p: torch.optim.RMSprop(p, lr=0.01), 'an optimizer other than SGD, Adam, AdamW'),
    (lambda p: RMSpropSubclass(p, lr=0.01), 'a subclass with its own step'),
    (lambda p: torch.optim.Adam(p, lr=0.01, differentiable=True), 'differentiable=True'),
    (lambda p: torch.optim.SGD([nn.Parameter(torch.zeros(2, dtype=torch.complex64))], lr=0.1),
     'a complex parameter'),
])
def test_optimizers_the_update_does_not_know_keep_reading_grad(make, why):
    assert grad_update(make(_params())) is None, why


@pytest.mark.parametrize('optimizer', [
    'SGD', 'SGD with momentum, weight decay and nesterov', 'Adam with amsgrad and weight decay',
    'AdamW'])
def test_ten_compiled_steps_without_grad_buffers_match_eager(optimizer):
    eager, eager_wrapper, compiled, wrapper = twins(MLP, UPDATES[optimizer])
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    assert step._grad_update is not None
    assert_same_training(eager, eager_wrapper, compiled, step, batches(10))


def test_clipping_by_value_on_the_gradients_matches_eager():
    eager, eager_wrapper, compiled, wrapper = twins(
        MLP, UPDATES['Adam'], clip_grad=dict(type='value', clip_value=0.01))
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    assert_same_training(eager, eager_wrapper, compiled, step, batches(5))


def test_clipping_by_norm_on_the_gradients_gives_the_norm_torch_measures():
    torch.manual_seed(0)
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                           clip_grad=dict(max_norm=0.1, norm_type=2.0))
    x, y = batches(1)[0]
    model(x, y, mode='loss')['loss'].backward()
    grads = [p.grad.clone() for p in model.parameters()]
    expected = nn.utils.clip_grad_norm_(list(model.parameters()), max_norm=0.1)
    logged = wrapper.clip_grad_tensors(grads)
    assert torch.equal(logged['grad_norm'], expected)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))


@pytest.mark.parametrize('optimizer', ['SGD with momentum, weight decay and nesterov', 'AdamW'])
def test_after_a_compiled_update_no_parameter_holds_a_grad_as_after_an_eager_one(optimizer):
    eager, eager_wrapper, compiled, wrapper = twins(MLP, UPDATES[optimizer])
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    state = step.state
    for batch in batches(2):
        eager.train_step(batch, eager_wrapper)
        state, _ = step(state, batch)
        assert all(p.grad is None for p in eager.parameters())
        assert all(p.grad is None for p in compiled.parameters())


def test_within_an_accumulation_window_grad_holds_the_sum_as_in_eager_and_is_freed_by_the_update():
    eager, eager_wrapper, compiled, wrapper = twins(MLP, UPDATES['Adam'], accumulative_counts=2)
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    state = step.state
    for index, batch in enumerate(batches(4)):
        eager.train_step(batch, eager_wrapper)
        state, _ = step(state, batch)
        for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
            if index % 2 == 0:  # the window's first micro-step: its gradient, not applied
                assert torch.allclose(b.grad, a.grad, rtol=1e-5, atol=1e-7), name
            else:
                assert a.grad is None and b.grad is None, name


def test_an_optimizer_that_reads_grad_gets_zeroed_grad_buffers_and_eager_numbers():
    eager, eager_wrapper, compiled, wrapper = twins(
        MLP, lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5))
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    assert step._grad_update is None
    assert_same_training(eager, eager_wrapper, compiled, step, batches(3))
    assert all(torch.count_nonzero(p.grad) == 0 for p in compiled.parameters())


def test_a_step_that_runs_uncompiled_creates_the_adam_state_it_reads():
    model = MLP()
    reference = copy.deepcopy(model)
    wrapper = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-2))
    reference_wrapper = OptimWrapper(torch.optim.Adam(reference.parameters(), lr=1e-2))
    step = make_train_step(model, wrapper, compile=False)
    assert_same_training(reference, reference_wrapper, model, step, batches(2))
