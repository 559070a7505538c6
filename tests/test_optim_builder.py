"""build_optim_wrapper and DefaultOptimWrapperConstructor: every path, every error."""
from __future__ import annotations

import inspect
import logging

import pytest
import torch
from torch import nn

from fengine.optim import (AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper,
                           build_optim_wrapper)
from fengine.registry import OPTIM_WRAPPERS, OPTIMIZERS

LR, WD = 0.1, 0.01


class Net(nn.Module):
    """A backbone (Conv2d + BatchNorm2d) and a head (Linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)


NAMES = ['backbone.0.weight', 'backbone.0.bias', 'backbone.1.weight', 'backbone.1.bias',
         'head.weight', 'head.bias']


def build(paramwise_cfg=None, model=None, **optimizer):
    optimizer = {'type': 'SGD', 'lr': LR, 'weight_decay': WD, 'momentum': 0.9, **optimizer}
    cfg = dict(optimizer=optimizer)
    if paramwise_cfg is not None:
        cfg['paramwise_cfg'] = paramwise_cfg
    return build_optim_wrapper(model or Net(), cfg)


def lr_and_wd(wrapper: OptimWrapper, model_names=NAMES) -> dict[str, tuple[float, float]]:
    """Parameter name -> (lr, weight_decay) of its group, as the optimizer will use them."""
    groups = wrapper.optimizer.param_groups
    assert len(groups) == len(model_names) and all(len(g['params']) == 1 for g in groups)
    return {name: (pytest.approx(g['lr']), pytest.approx(g['weight_decay']))
            for name, g in zip(model_names, groups)}


# -- the registries -----------------------------------------------------------------
def test_every_torch_optimizer_is_registered_by_its_class_name():
    expected = {name for name in dir(torch.optim) if not name.startswith('_')
                and inspect.isclass(getattr(torch.optim, name))
                and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
                and name != 'Optimizer'}
    assert {'SGD', 'Adam', 'AdamW', 'LBFGS', 'RMSprop'} <= expected
    for name in expected:
        assert OPTIMIZERS.get(name) is getattr(torch.optim, name)
    assert 'Optimizer' not in OPTIMIZERS  # the base class cannot step


def test_both_wrappers_are_registered():
    assert OPTIM_WRAPPERS.get('OptimWrapper') is OptimWrapper
    assert OPTIM_WRAPPERS.get('AmpOptimWrapper') is AmpOptimWrapper


# -- build_optim_wrapper ------------------------------------------------------------
def test_the_seed_config_builds_an_optim_wrapper_over_all_parameters():
    model = Net()
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=1e-3)))
    assert type(wrapper) is OptimWrapper and type(wrapper.optimizer) is torch.optim.SGD
    assert wrapper.get_lr() == {'lr': [1e-3]}
    assert wrapper.optimizer.param_groups[0]['params'] == list(model.parameters())


def test_wrapper_arguments_and_type_reach_the_wrapper():
    model = Net()
    wrapper = build_optim_wrapper(model, dict(
        type='AmpOptimWrapper', dtype='bfloat16', accumulative_counts=2,
        clip_grad=dict(max_norm=1.0), optimizer=dict(type='AdamW', lr=1e-3)))
    assert type(wrapper) is AmpOptimWrapper and wrapper.cast_dtype == torch.bfloat16
    assert wrapper.accumulative_counts == 2 and wrapper.clip_grad_kwargs == {'max_norm': 1.0}
    assert type(wrapper.optimizer) is torch.optim.AdamW


def test_a_wrapper_class_works_as_type():

    class MyWrapper(OptimWrapper):
        pass

    wrapper = build_optim_wrapper(Net(), dict(type=MyWrapper, optimizer=dict(type='SGD', lr=1)))
    assert type(wrapper) is MyWrapper


def test_an_optim_wrapper_is_returned_as_it_is():
    wrapper = OptimWrapper(torch.optim.SGD(Net().parameters(), lr=0.1))
    assert build_optim_wrapper(Net(), wrapper) is wrapper


def test_a_built_optimizer_is_wrapped_as_it_is():
    model = Net()
    optimizer = torch.optim.Adam(model.parameters())
    wrapper = build_optim_wrapper(model, dict(optimizer=optimizer, accumulative_counts=3))
    assert wrapper.optimizer is optimizer and wrapper.accumulative_counts == 3


def test_the_config_given_is_left_unchanged():
    cfg = dict(optimizer=dict(type='SGD', lr=LR, weight_decay=WD),
               paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=2.0)}))
    snapshot = repr(cfg)
    build_optim_wrapper(Net(), cfg)
    build_optim_wrapper(Net(), cfg)
    assert repr(cfg) == snapshot


def test_lbfgs_builds_and_steps_with_a_closure():
    model = nn.Linear(2, 1)
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='LBFGS', lr=0.5)))
    x, y = torch.randn(8, 2), torch.randn(8, 1)

    def closure():
        wrapper.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        return loss

    before = closure().item()
    wrapper.step(closure=closure)
    assert closure().item() < before


def test_a_custom_constructor_class_is_called_with_the_configs():
    calls = []

    class Constructor:

        def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
            calls.append((optim_wrapper_cfg, paramwise_cfg))

        def __call__(self, model):
            return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5))

    wrapper = build_optim_wrapper(Net(), dict(constructor=Constructor, paramwise_cfg=dict(
        bias_lr_mult=2.0), optimizer=dict(type='SGD', lr=LR)))
    assert wrapper.get_lr() == {'lr': [0.5]}
    assert calls == [(dict(optimizer=dict(type='SGD', lr=LR)), dict(bias_lr_mult=2.0))]


def test_the_default_constructor_can_be_named_as_in_mmengine_configs():
    wrapper = build_optim_wrapper(Net(), dict(constructor='DefaultOptimWrapperConstructor',
                                              optimizer=dict(type='SGD', lr=LR)))
    assert wrapper.get_lr() == {'lr': [LR]}


def test_a_data_parallel_model_is_unwrapped_before_naming_parameters():
    model = nn.DataParallel(Net())
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=LR),
        paramwise_cfg=dict(custom_keys={'module': dict(lr_mult=0.0)})))
    assert wrapper.get_lr()['lr'] == [LR] * 6  # no name starts with 'module.'


@pytest.mark.parametrize('cfg, error, match', [
    ([('optimizer', {})], TypeError, r'must be a dict .* or an OptimWrapper, but got list'),
    (dict(type='OptimWrapper'), ValueError, r"needs the key 'optimizer', e.g. "),
    (dict(optimizer='SGD'), TypeError, r"'optimizer' must be a dict .* but got str: 'SGD'"),
    (dict(optimizer=dict(type='SDG', lr=0.1)), KeyError,
     r"'SDG' is not in the optimizer registry. Did you mean 'SGD'"),
    (dict(optimizer=dict(lr=0.1)), KeyError, r'needs the key "type"'),
    (dict(optimizer=dict(type='SGD', lr=0.1, momentun=0.9)), TypeError,
     r'cannot build SGD .* Accepted arguments: .*momentum'),
    (dict(type='OptimWraper', optimizer=dict(type='SGD', lr=0.1)), KeyError,
     r"'OptimWraper' is not in the optimizer wrapper registry. Did you mean 'OptimWrapper'"),
    (dict(optimizer=dict(type='SGD', lr=0.1, params=[])), ValueError,
     r"must not set 'params': they come from the model"),
    (dict(constructor='DefaultOptimWrapperConstrutor', optimizer=dict(type='SGD', lr=0.1)),
     KeyError, r"'DefaultOptimWrapperConstrutor' is not in the optimizer wrapper constructor "
               r"registry. Did you mean 'DefaultOptimWrapperConstructor'"),
    (dict(constructor=3, optimizer=dict(type='SGD', lr=0.1)), TypeError,
     r'constructor must be a class or a name .* but got int: 3'),
])
def test_a_bad_config_is_a_clear_error(cfg, error, match):
    with pytest.raises(error, match=match):
        build_optim_wrapper(Net(), cfg)


def test_a_built_optimizer_cannot_take_paramwise_options():
    model = Net()
    with pytest.raises(ValueError, match='paramwise_cfg needs an optimizer config'):
        build_optim_wrapper(model, dict(optimizer=torch.optim.SGD(model.parameters(), lr=1),
                                        paramwise_cfg=dict(bias_lr_mult=2.0)))


# -- paramwise options, against hand-computed values --------------------------------
def test_custom_keys_multiply_lr_and_decay_of_matching_parameters_only():
    wrapper = build(dict(custom_keys={'backbone': dict(lr_mult=0.1, decay_mult=0.9)}))
    backbone = (LR * 0.1, WD * 0.9)
    assert lr_and_wd(wrapper) == {
        'backbone.0.weight': backbone, 'backbone.0.bias': backbone,
        'backbone.1.weight': backbone, 'backbone.1.bias': backbone,
        'head.weight': (LR, WD), 'head.bias': (LR, WD)}
    assert wrapper.optimizer.param_groups[0]['lr_mult'] == 0.1  # the entry is copied into the group


def test_the_longest_matching_custom_key_wins_and_ties_go_alphabetically():
    wrapper = build(dict(custom_keys={
        'backbone': dict(lr_mult=0.1),
        'backbone.1': dict(lr_mult=0.5, decay_mult=0.0),
        'head': dict(lr_mult=2.0),
        'bias': dict(lr_mult=3.0),  # as long as 'head'; 'bias' < 'head'
    }))
    assert lr_and_wd(wrapper) == {
        'backbone.0.weight': (LR * 0.1, WD), 'backbone.0.bias': (LR * 0.1, WD),
        'backbone.1.weight': (LR * 0.5, 0.0), 'backbone.1.bias': (LR * 0.5, 0.0),
        'head.weight': (LR * 2.0, WD), 'head.bias': (LR * 3.0, WD)}


def test_bias_and_norm_multipliers():
    wrapper = build(dict(bias_lr_mult=2.0, bias_decay_mult=0.5, norm_decay_mult=0.0))
    assert lr_and_wd(wrapper) == {
        'backbone.0.weight': (LR, WD),
        'backbone.0.bias': (LR * 2.0, WD * 0.5),
        'backbone.1.weight': (LR, 0.0),
        'backbone.1.bias': (LR, 0.0),  # a norm layer's bias: no bias_lr_mult
        'head.weight': (LR, WD),
        'head.bias': (LR * 2.0, WD * 0.5)}


def test_flat_decay_mult_applies_to_every_one_dimensional_parameter():
    wrapper = build(dict(flat_decay_mult=0.3))
    flat = (LR, WD * 0.3)
    assert lr_and_wd(wrapper) == {
        'backbone.0.weight': (LR, WD), 'backbone.0.bias': flat,
        'backbone.1.weight': flat, 'backbone.1.bias': flat,
        'head.weight': (LR, WD), 'head.bias': flat}


def test_custom_keys_override_the_other_rules():
    wrapper = build(dict(custom_keys={'head': dict(decay_mult=0.7)}, bias_lr_mult=2.0,
                         bias_decay_mult=0.0))
    assert lr_and_wd(wrapper)['head.bias'] == (LR, WD * 0.7)
    assert lr_and_wd(wrapper)['backbone.0.bias'] == (LR * 2.0, 0.0)


def test_depthwise_conv_decay_comes_after_the_bias_rule():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 1))
    names = ['0.weight', '0.bias', '1.weight', '1.bias']
    only_dw = build(dict(dwconv_decay_mult=0.2), model=model)
    assert lr_and_wd(only_dw, names) == {
        '0.weight': (LR, WD * 0.2), '0.bias': (LR, WD * 0.2),
        '1.weight': (LR, WD), '1.bias': (LR, WD)}
    with_bias = build(dict(dwconv_decay_mult=0.2, bias_decay_mult=0.5), model=model)
    assert lr_and_wd(with_bias, names)['0.bias'] == (LR, WD * 0.5)


def test_the_paramwise_groups_train():
    model = Net()
    wrapper = build(dict(custom_keys={'backbone': dict(lr_mult=0.1)}, norm_decay_mult=0.0),
                    model=model)
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.head(model.backbone(torch.randn(2, 3, 3, 3)).flatten(1)).sum()
    wrapper.update_params(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_frozen_parameters_are_left_out_and_named_once(fengine_log):
    model = Net()
    model.backbone.requires_grad_(False)
    wrapper = build(dict(bias_lr_mult=2.0), model=model)
    assert lr_and_wd(wrapper, ['head.weight', 'head.bias']) == {
        'head.weight': (LR, WD), 'head.bias': (LR * 2.0, WD)}
    [line] = [m for m in fengine_log.messages(logging.INFO) if 'requires_grad=False' in m]
    assert line.startswith('4 parameter(s) with requires_grad=False are not optimized: '
                           'backbone.0.weight, backbone.0.bias')


class Shared(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        linear = nn.Linear(2, 2)
        self.a = nn.Sequential(linear)
        self.b = nn.Sequential(linear)


def test_a_shared_parameter_is_rejected_unless_bypass_duplicate(fengine_log):
    with pytest.raises(ValueError, match='some parameters appear in more than one'):
        build(dict(bias_lr_mult=1.0), model=Shared())
    wrapper = build(dict(bias_lr_mult=1.0, bypass_duplicate=True), model=Shared())
    assert len(wrapper.optimizer.param_groups) == 2
    assert 'b.0.weight is a duplicate' in fengine_log.text


@pytest.mark.parametrize('paramwise_cfg, optimizer, error, match', [
    ([], {}, TypeError, r'paramwise_cfg must be None or a dict, but got list'),
    (dict(bias_lr_mul=2.0), {}, ValueError,
     r"unknown paramwise_cfg key 'bias_lr_mul'. Did you mean 'bias_lr_mult'.*\? Valid keys: "
     r"'bias_decay_mult', 'bias_lr_mult', 'bypass_duplicate', 'custom_keys', "
     r"'dwconv_decay_mult', 'flat_decay_mult', 'norm_decay_mult'"),
    (dict(dcn_offset_lr_mult=0.1), {}, ValueError, r"'dcn_offset_lr_mult' is not supported"),
    (dict(norm_decay_mult='0'), {}, TypeError, r"norm_decay_mult must be a number, but got '0'"),
    (dict(bypass_duplicate=1), {}, TypeError, r'bypass_duplicate must be a bool, but got 1'),
    (dict(custom_keys=['backbone']), {}, TypeError, r'custom_keys must be a dict'),
    (dict(custom_keys={'backbone': 0.1}), {}, TypeError,
     r"custom_keys must map a str to a dict .* but got 'backbone': 0.1"),
    (dict(custom_keys={'backbone': dict(lr_mult='x')}), {}, TypeError,
     r"custom_keys\['backbone'\]\['lr_mult'\] must be a number"),
    (dict(custom_keys={'backbone': dict(decay_mult=0.1)}), dict(weight_decay=None), ValueError,
     r"sets decay_mult, but the optimizer config has no 'weight_decay'"),
    (dict(norm_decay_mult=0.0), dict(weight_decay=None), ValueError,
     r"norm_decay_mult needs the optimizer config's 'weight_decay'"),
    (dict(bias_lr_mult=2.0), dict(type='Adam', lr=None), ValueError,
     r"bias_lr_mult needs the optimizer config's 'lr'"),
])
def test_a_bad_paramwise_cfg_is_a_clear_error(paramwise_cfg, optimizer, error, match):
    cfg = {'type': 'SGD', 'lr': LR, 'weight_decay': WD, **optimizer}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(error, match=match):
        DefaultOptimWrapperConstructor(dict(optimizer=cfg), paramwise_cfg)


def test_the_constructor_needs_a_dict():
    with pytest.raises(TypeError, match=r'optim_wrapper_cfg must be a dict, but got str'):
        DefaultOptimWrapperConstructor('SGD')
