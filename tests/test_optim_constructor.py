"""Optimizer wrapper constructors: registered by name, custom ones with their own paramwise_cfg."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fengine.optim import (DefaultOptimWrapperConstructor, MultiOptimWrapperConstructor,
                           OptimWrapper, build_optim_wrapper)
from fengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

LR = 0.1


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 3)
        self.head = nn.Linear(3, 1)


@pytest.fixture
def layer_decay_constructor():
    """A user's constructor, registered by name for the test only, with its own options."""

    class LayerDecayConstructor:
        """Scales the lr of each top-level child by ``decay ** depth`` (its own key)."""

        def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
            self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
            self.paramwise_cfg = paramwise_cfg or {}

        def __call__(self, model):
            cfg = dict(self.optim_wrapper_cfg)
            optimizer_cfg = dict(cfg.pop('optimizer'))
            lr = optimizer_cfg.pop('lr')
            decay = self.paramwise_cfg['layer_decay_rate']
            groups = [dict(params=child.parameters(), lr=lr * decay ** depth)
                      for depth, child in enumerate(reversed(list(model.children())))]
            optimizer = getattr(torch.optim, optimizer_cfg.pop('type'))(groups, lr=lr,
                                                                        **optimizer_cfg)
            return OptimWrapper(optimizer, **cfg)

    OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=LayerDecayConstructor)
    yield LayerDecayConstructor
    OPTIM_WRAPPER_CONSTRUCTORS._module_dict.pop('LayerDecayConstructor')


def test_both_constructors_are_registered_under_their_names():
    assert OPTIM_WRAPPER_CONSTRUCTORS.get('DefaultOptimWrapperConstructor') is \
        DefaultOptimWrapperConstructor
    assert OPTIM_WRAPPER_CONSTRUCTORS.get('MultiOptimWrapperConstructor') is \
        MultiOptimWrapperConstructor


def test_a_registered_constructor_is_picked_by_name_and_gets_its_own_paramwise_keys(
        layer_decay_constructor):
    wrapper = build_optim_wrapper(Net(), dict(
        constructor='LayerDecayConstructor', paramwise_cfg=dict(layer_decay_rate=0.5),
        optimizer=dict(type='SGD', lr=LR), clip_grad=dict(max_norm=1.0)))
    # head (depth 0) keeps the lr, the backbone gets half; plus the base group's lr.
    assert wrapper.get_lr() == {'base_lr': [LR], 'lr': [LR, LR * 0.5]}
    assert wrapper.clip_grad_kwargs == dict(max_norm=1.0)


def test_the_default_constructor_still_rejects_a_key_it_does_not_know():
    with pytest.raises(ValueError, match=r"unknown paramwise_cfg key 'layer_decay_rate'. .*Valid "
                                         r"keys: 'bias_decay_mult', 'bias_lr_mult', .*'norm_decay_mult'"):
        build_optim_wrapper(Net(), dict(paramwise_cfg=dict(layer_decay_rate=0.5),
                                        optimizer=dict(type='SGD', lr=LR)))


def test_an_unknown_constructor_name_lists_the_close_ones():
    with pytest.raises(KeyError, match=r"'DefaultOptimizerConstructor' is not in the optimizer "
                                       r"wrapper constructor registry. Did you mean "
                                       r"'DefaultOptimWrapperConstructor'"):
        build_optim_wrapper(Net(), dict(constructor='DefaultOptimizerConstructor',
                                        optimizer=dict(type='SGD', lr=LR)))


def test_a_constructor_class_works_as_well_as_its_name(layer_decay_constructor):
    wrapper = build_optim_wrapper(Net(), dict(constructor=layer_decay_constructor,
                                              paramwise_cfg=dict(layer_decay_rate=0.1),
                                              optimizer=dict(type='SGD', lr=LR)))
    assert wrapper.get_lr()['lr'] == [LR, pytest.approx(LR * 0.1)]


@pytest.mark.parametrize('paramwise_cfg, expected', [
    (dict(bias_lr_mult=2.0), [LR, 2 * LR, LR, 2 * LR]),
    (dict(custom_keys={'head': dict(lr_mult=0.5)}), [LR, LR, LR / 2, LR / 2]),
])
def test_the_default_constructor_by_name_applies_mmengines_paramwise_keys(paramwise_cfg,
                                                                         expected):
    wrapper = build_optim_wrapper(Net(), dict(constructor='DefaultOptimWrapperConstructor',
                                              paramwise_cfg=paramwise_cfg,
                                              optimizer=dict(type='SGD', lr=LR)))
    assert wrapper.get_lr()['lr'] == pytest.approx(expected)
