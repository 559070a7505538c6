"""Activation checkpointing: the same losses and gradients, recomputed instead of kept."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fengine import Runner
from fengine.model import BaseModel
from fengine.optim import OptimWrapper
from fengine.runner.activation_checkpointing import (checkpointed_modules,
                                                     turn_on_activation_checkpointing)

EAGER = dict(backend='aot_eager')


class Net(BaseModel):
    def __init__(self):
        super().__init__()
        # Dropout(p=0.5) makes recomputation visible if it drew new random numbers.
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 16))
        self.layers = nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)])
        self.head = nn.Linear(16, 3)
        self.body_calls = 0

    def forward(self, x, y, mode='tensor'):
        out = self.body(x)
        for layer in self.layers:
            out = torch.tanh(layer(out))
        out = self.head(out)
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(out, y))
        return out.argmax(1)


def fresh() -> Net:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Net()


def batch(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=generator), torch.randint(0, 3, (8,), generator=generator)


def train(net: Net, steps: int = 3) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses of a few SGD steps and the final parameters."""
    wrapper = OptimWrapper(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9))
    torch.manual_seed(7)
    losses = [float(net.train_step(batch(i), wrapper)['loss']) for i in range(steps)]
    return losses, {k: v.detach().clone() for k, v in net.named_parameters()}


@pytest.mark.parametrize('compiled', [False, True], ids=['eager', 'compiled'])
def test_checkpointed_training_has_the_same_losses_and_weights(compiled):
    reference = fresh()
    checkpointed = fresh()
    if compiled:
        reference.compile_steps(EAGER, strict=True)
        checkpointed.compile_steps(EAGER, strict=True)
    assert turn_on_activation_checkpointing(checkpointed, ['body', 'layers.1']) == \
        ['body', 'layers.1']
    losses, weights = train(reference)
    ac_losses, ac_weights = train(checkpointed)
    assert ac_losses == pytest.approx(losses, rel=1e-6)
    for name, value in weights.items():
        torch.testing.assert_close(ac_weights[name], value, rtol=1e-5, atol=1e-6)


def test_the_gradients_are_those_of_the_plain_module():
    plain, checkpointed = fresh(), fresh()
    turn_on_activation_checkpointing(checkpointed, 'body')
    for net in (plain, checkpointed):
        torch.manual_seed(3)
        net(*batch(), mode='loss')['loss'].backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_the_checkpointed_forward_runs_again_in_the_backward_pass():
    net = fresh()
    calls = []
    net.body[0].register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    turn_on_activation_checkpointing(net, ['body'])
    loss = net(*batch(), mode='loss')['loss']
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2  # recomputed for the backward pass


def test_a_name_that_matches_no_submodule_lists_the_submodules():
    net = fresh()
    with pytest.raises(ValueError, match=r"activation_checkpointing names \['bdy'\], which is "
                                         r"not a submodule of Net\. Did you mean 'body'.*\? Its "
                                         r"submodules: 'body', 'body.0', .*'layers.1'"):
        turn_on_activation_checkpointing(net, ['body', 'bdy'])
    assert checkpointed_modules(net) == []  # nothing changed
    with pytest.raises(TypeError, match='activation_checkpointing must be a submodule name'):
        turn_on_activation_checkpointing(net, [3])


def test_turning_it_on_twice_checkpoints_once():
    net = fresh()
    turn_on_activation_checkpointing(net, ['head'])
    forward = net.head.forward
    turn_on_activation_checkpointing(net, ['head'])
    assert net.head.forward is forward and checkpointed_modules(net) == ['head']


def runner(tmp_path, **kwargs) -> Runner:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=generator),
                         torch.randint(0, 3, (32,), generator=generator))
    return Runner(model=fresh(), work_dir=tmp_path, train_dataloader=DataLoader(data, batch_size=8),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                  train_cfg=dict(by_epoch=True, max_epochs=1), default_hooks=dict(checkpoint=None),
                  randomness=dict(seed=0), log_level='WARNING', **kwargs)


@pytest.mark.parametrize('compile', [None, EAGER], ids=['eager', 'compiled'])
def test_the_runners_cfg_key_checkpoints_and_trains_like_without(tmp_path, compile):
    plain = runner(tmp_path / 'plain', compile=compile)
    plain.train()
    checkpointed = runner(tmp_path / 'ac', compile=compile,
                          cfg=dict(activation_checkpointing=['body', 'layers.0']))
    assert checkpointed_modules(checkpointed.model) == ['body', 'layers.0']
    checkpointed.train()
    for (name, a), b in zip(plain.model.named_parameters(), checkpointed.model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_the_runner_refuses_an_unknown_submodule_when_it_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"activation_checkpointing names \['neck'\]"):
        runner(tmp_path, cfg=dict(activation_checkpointing=['neck']))
