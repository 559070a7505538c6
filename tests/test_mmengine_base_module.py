"""MMEngine 0.10.7's unit tests of ``BaseModule`` and its containers
(``tests/test_model/test_base_module.py``), rewritten for fengine.

Deliberate differences:
- A model wrapper (``FakeDDP`` below) needs no patching: fengine looks through any child
  without ``init_weights`` (MMEngine only through registered model wrappers).
- The init report is written from exact provenance; the file-dump test checks that the
  report lands in the log file (MMEngine's ``MMLogger(log_file=...)`` is the ``fengine``
  logger with a ``FileHandler``).
"""
from __future__ import annotations

import copy
import logging
from unittest.mock import Mock

import pytest
import torch
from torch import nn
from torch.nn.init import constant_

import fengine.logging as flog
from fengine.model import BaseModule, ModuleDict, ModuleList, Sequential
from fengine.registry import Registry, build_from_cfg

COMPONENTS = Registry('component')
FOOMODELS = Registry('model')


@COMPONENTS.register_module()
class FooConv1d(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.conv1d = nn.Conv1d(4, 1, 4)


@COMPONENTS.register_module()
class FooConv2d(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.conv2d = nn.Conv2d(3, 1, 3)


@COMPONENTS.register_module()
class FooLinear(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.linear = nn.Linear(3, 4)


@COMPONENTS.register_module()
class FooLinearConv1d(BaseModule):

    def __init__(self, linear=None, conv1d=None, init_cfg=None):
        super().__init__(init_cfg)
        if linear is not None:
            self.linear = build_from_cfg(linear, COMPONENTS)
        if conv1d is not None:
            self.conv1d = build_from_cfg(conv1d, COMPONENTS)


@FOOMODELS.register_module()
class FooModel(BaseModule):

    def __init__(self, component1=None, component2=None, component3=None, component4=None,
                 init_cfg=None):
        super().__init__(init_cfg)
        for name, cfg in (('component1', component1), ('component2', component2),
                          ('component3', component3), ('component4', component4)):
            if cfg is not None:
                setattr(self, name, build_from_cfg(cfg, COMPONENTS))
        self.reg = nn.Linear(3, 4)  # not a BaseModule: reached by the parent's layer entries


class CustomLinear(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.linear = nn.Linear(1, 1)

    def init_weights(self):
        constant_(self.linear.weight, 1)
        constant_(self.linear.bias, 2)


@FOOMODELS.register_module()
class PretrainedModel(FooModel):

    def __init__(self, component1=None, component2=None, component3=None, component4=None,
                 init_cfg=None):
        super().__init__(component1, component2, component3, component4, init_cfg)
        self.linear = CustomLinear()


MODEL_CFG = dict(
    type='FooModel',
    init_cfg=[dict(type='Constant', val=1, bias=2, layer='Linear'),
              dict(type='Constant', val=3, bias=4, layer='Conv1d'),
              dict(type='Constant', val=5, bias=6, layer='Conv2d')],
    component1=dict(type='FooConv1d'),
    component2=dict(type='FooConv2d'),
    component3=dict(type='FooLinear'),
    component4=dict(type='FooLinearConv1d', linear=dict(type='FooLinear'),
                    conv1d=dict(type='FooConv1d')))


def build_model(cfg=MODEL_CFG):
    return build_from_cfg(copy.deepcopy(cfg), FOOMODELS)


def filled(module, weight, bias):
    return bool((module.weight == weight).all() and (module.bias == bias).all())


def test_a_new_module_is_not_initialized():
    assert BaseModule().is_init is False


def test_the_parent_layer_entries_reach_every_component_and_the_plain_child():
    model = build_model()
    model.init_weights()
    assert filled(model.component1.conv1d, 3, 4)
    assert filled(model.component2.conv2d, 5, 6)
    assert filled(model.component3.linear, 1, 2)
    assert filled(model.component4.linear.linear, 1, 2)
    assert filled(model.component4.conv1d.conv1d, 3, 4)
    assert filled(model.reg, 1, 2)


def test_a_child_init_weights_runs_after_loading_a_pretrained_checkpoint(tmp_path):
    source = build_model()
    source.init_weights()
    checkpoint = tmp_path / 'test.pth'
    torch.save(source.state_dict(), checkpoint)
    cfg = dict(MODEL_CFG, type='PretrainedModel',
               init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    model = build_model(cfg)
    model.init_weights()
    assert filled(model.linear.linear, 1, 2)
    assert filled(model.component2.conv2d, 5, 6)  # from the checkpoint


def test_a_module_inside_a_wrapper_without_init_weights_is_initialized():
    class FakeDDP(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = build_model()
    model.ddp = FakeDDP(CustomLinear())
    model.init_weights()
    assert filled(model.ddp.module.linear, 1, 2)


def test_children_are_not_initialized_again_when_the_root_is_initialized():
    model = build_model()
    for child in model.children():
        child.init_weights = Mock()
    model.is_init = True
    model.init_weights()
    for child in model.children():
        child.init_weights.assert_not_called()


def test_init_weights_set_on_a_child_instance_is_called_unless_the_child_is_initialized():
    model = build_model()
    for child in model.children():
        child.init_weights = Mock()
    model.component1.is_init = True
    model.reg.is_init = True
    model.init_weights()
    model.component1.init_weights.assert_not_called()
    model.component2.init_weights.assert_called_once()
    model.component3.init_weights.assert_called_once()
    model.component4.init_weights.assert_called_once()
    model.reg.init_weights.assert_not_called()


def test_the_init_report_goes_to_the_log_file_only_when_one_is_attached(tmp_path):
    build_model().init_weights()
    assert list(tmp_path.iterdir()) == []
    log_path = tmp_path / 'out.log'
    handler = logging.FileHandler(log_path)
    flog.get_logger().addHandler(handler)
    try:
        build_model().init_weights()
    finally:
        flog.get_logger().removeHandler(handler)
        handler.close()
    text = log_path.read_text()
    assert text.startswith('Name of parameter - Initialization information')
    assert 'component1.conv1d.weight - torch.Size([1, 4, 4])' in text
    assert 'ConstantInit: val=3, bias=4' in text


CHILD_CFGS = [
    dict(type='FooConv1d', init_cfg=dict(type='Constant', layer='Conv1d', val=0., bias=1.)),
    dict(type='FooConv2d', init_cfg=dict(type='Constant', layer='Conv2d', val=2., bias=3.)),
]
PARENT_CFG = dict(type='Constant', layer=['Conv1d', 'Conv2d'], val=4., bias=5.)


def children():
    return [build_from_cfg(copy.deepcopy(cfg), COMPONENTS) for cfg in CHILD_CFGS]


def check_children(first, second):
    assert filled(first.conv1d, 0., 1.)
    assert filled(second.conv2d, 2., 3.)


@pytest.mark.parametrize('parent_cfg', [None, PARENT_CFG], ids=['alone', 'inner-wins'])
def test_module_list_initializes_its_items_whose_own_init_cfg_wins(parent_cfg):
    model = ModuleList(children(), init_cfg=parent_cfg)
    model.init_weights()
    check_children(model[0], model[1])


@pytest.mark.parametrize('parent_cfg', [None, PARENT_CFG], ids=['alone', 'inner-wins'])
def test_module_dict_initializes_its_items_whose_own_init_cfg_wins(parent_cfg):
    first, second = children()
    model = ModuleDict(dict(foo_conv_1d=first, foo_conv_2d=second), init_cfg=parent_cfg)
    model.init_weights()
    check_children(model['foo_conv_1d'], model['foo_conv_2d'])


@pytest.mark.parametrize('parent_cfg', [None, PARENT_CFG], ids=['alone', 'inner-wins'])
def test_sequential_initializes_its_items_whose_own_init_cfg_wins(parent_cfg):
    model = Sequential(*children(), init_cfg=parent_cfg)
    model.init_weights()
    check_children(model[0], model[1])
