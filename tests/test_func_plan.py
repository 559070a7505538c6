"""init_plan / init_params / apply_plan: initialization as a pure function over parameter trees."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import fengine.func.apply as fapply
from fengine.func import Call, Fill, apply_plan, fold_in, init_params, init_plan, param_tree
from fengine.model import BaseModule


class Block(BaseModule):

    def __init__(self):
        super().__init__(dict(type='Constant', layer='Linear', val=0.5))
        self.fc = nn.Linear(4, 4)


class Net(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg if init_cfg is not None else [
            dict(type='Normal', layer='Linear', std=0.1),
            dict(type='Kaiming', layer='Conv2d', override=dict(name='head', type='Xavier')),
        ])
        self.conv = nn.Conv2d(3, 4, 3)
        self.block = Block()
        self.head = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(2)

    def forward(self, x):
        x = self.conv(x).mean((2, 3))
        return self.norm(self.head(self.block.fc(x)))


def test_the_plan_says_what_sets_each_parameter_and_why():
    plan = init_plan(Net())
    entries = plan.entries()
    assert list(entries) == [name for name, _ in Net().named_parameters()]
    assert entries['conv.weight'].info.startswith('KaimingInit')
    assert entries['conv.weight'].source == 'init_cfg of Net[1]'
    assert entries['block.fc.weight'].info == 'ConstantInit: val=0.5, bias=0'
    assert entries['block.fc.weight'].source == "init_cfg of Block at 'block'"
    assert entries['head.weight'].info.startswith('XavierInit')
    assert entries['head.weight'].source == "init_cfg of Net[1] override 'head'"
    assert entries['norm.weight'].recipe is None
    assert entries['norm.weight'].info.startswith('The value is the same')
    text = str(plan)
    assert 'head.weight (2, 4): XavierInit' in text and "override 'head'" in text


def test_the_plan_lists_steps_in_mmengine_order():
    ops = init_plan(Net()).ops
    assert [type(op) for op in ops] == [Fill, Fill, Fill, Fill]
    assert [op.source for op in ops] == ['init_cfg of Net[0]', 'init_cfg of Net[1]',
                                         "init_cfg of Net[1] override 'head'",
                                         "init_cfg of Block at 'block'"]


def test_resolving_a_plan_changes_nothing():
    net = Net()
    before = {k: v.clone() for k, v in param_tree(net).items()}
    init_plan(net)
    assert all(torch.equal(before[k], v) for k, v in param_tree(net).items())


def test_init_params_returns_fresh_tensors_and_leaves_the_model_alone():
    net = Net()
    before = {k: v.clone() for k, v in param_tree(net).items()}
    params = init_params(net, seed=0)
    assert all(torch.equal(before[k], v) for k, v in param_tree(net).items())
    assert params.keys() == before.keys()
    for path, tensor in params.items():
        assert tensor.data_ptr() != net.get_parameter(path).data_ptr(), path
    assert torch.equal(params['norm.weight'], before['norm.weight'])  # untouched: copied
    assert torch.all(params['block.fc.weight'] == 0.5)


def test_init_params_equals_init_weights_with_the_same_seed():
    params = init_params(Net(), seed=11)
    net = Net()
    net.init_weights(seed=11)
    for path, tensor in param_tree(net).items():
        if path.startswith('norm'):
            continue  # untouched: each model keeps its own constructor values
        assert torch.equal(params[path], tensor), path


def test_init_params_feeds_functional_call():
    net = Net()
    params = init_params(net, seed=0)
    x = torch.randn(2, 3, 6, 6)
    out = functional_call(net, params, (x,))
    net.init_weights(seed=0)
    net.norm.load_state_dict({'weight': params['norm.weight'], 'bias': params['norm.bias']})
    assert torch.equal(out, net(x))


def test_apply_plan_maps_an_input_tree_to_a_new_tree():
    net = Net()
    plan = init_plan(net)
    tree = {k: torch.full_like(v, 3.0) for k, v in param_tree(net).items()}
    result = apply_plan(plan, tree, seed=0, dtype=torch.float64)
    assert torch.all(result.params['norm.weight'] == 3.0)  # untouched: from the input tree
    assert all(t.dtype == torch.float64 for t in result.params.values())
    assert result.info['head.bias'].startswith('XavierInit')
    assert result.buffers == {}
    with pytest.raises(KeyError, match=r"lacks \['conv.weight'\]"):
        apply_plan(plan, {k: v for k, v in tree.items() if k != 'conv.weight'}, seed=0)


def test_each_parameter_is_generated_once_by_its_last_writer(monkeypatch):
    keys = []
    original = fapply.sample_into

    def counting(jobs, **kwargs):
        keys.extend(key for _, key, _ in jobs)
        return original(jobs, **kwargs)

    monkeypatch.setattr(fapply, 'sample_into', counting)
    net = Net(init_cfg=[dict(type='Normal', layer=['Linear', 'Conv2d']),
                        dict(type='Uniform', layer='Linear'),
                        dict(type='Constant', val=1, layer='LayerNorm')])
    net.init_weights(seed=0)
    by_key = {fold_in(0, name): name for name, _ in net.named_parameters()}
    assert sorted(by_key[k] for k in keys) == sorted(by_key.values())


def test_values_on_the_meta_path_match_the_ordinary_path():
    with torch.device('meta'):
        meta = Net()
    params = init_params(meta, seed=4, device='cpu')
    assert all(p.is_meta for p in meta.parameters())
    ordinary = init_params(Net(), seed=4)
    for path in ('conv.weight', 'conv.bias', 'block.fc.weight', 'head.weight', 'head.bias'):
        assert torch.equal(params[path], ordinary[path]), path
    assert torch.equal(params['norm.weight'], torch.ones(2))  # LayerNorm's own default


def test_meta_parameters_need_a_device():
    with torch.device('meta'):
        meta = Net()
    with pytest.raises(ValueError,
                       match=r"parameter '[\w.]+' is on the meta device; pass device="):
        init_params(meta, seed=0)


def test_user_init_weights_in_the_functional_path_changes_nothing_on_the_model():

    class Custom(nn.Module):

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def init_weights(self):
            self.w.data.normal_()

    class Outer(BaseModule):

        def __init__(self):
            super().__init__()
            self.custom = Custom()

    net = Outer()
    plan = init_plan(net)
    assert isinstance(plan.ops[0], Call)
    first = init_params(net, seed=1)
    second = init_params(net, seed=1)
    assert torch.equal(net.custom.w, torch.zeros(3))
    assert not net.is_init
    assert torch.equal(first['custom.w'], second['custom.w'])  # seeded by (seed, path)
    assert not torch.equal(first['custom.w'], init_params(net, seed=2)['custom.w'])
    assert isinstance(net.custom.w, nn.Parameter) and net.custom.w.requires_grad


def test_a_plain_torchvision_style_model_can_be_planned():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    plan = init_plan(net)
    assert plan.ops == []
    params = init_params(net, seed=0)
    assert all(torch.equal(params[k], v) for k, v in param_tree(net).items())
