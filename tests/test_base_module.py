"""BaseModule.init_weights: the seed tutorial's examples, MMEngine's rules, fengine's exact record."""
from __future__ import annotations

import logging
import re

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fengine.model import (BaseInit, BaseModule, ModuleDict, ModuleList, Sequential,
                           bias_init_with_prob, constant_init, initialize, normal_init)
from fengine.registry import WEIGHT_INITIALIZERS

KAIMING = 'KaimingInit: a=0, mode=fan_out, nonlinearity=relu, distribution =normal, bias=0'
XAVIER = 'XavierInit: gain=1, distribution=normal, bias=0'


def report(log) -> dict[str, str]:
    """The init report: parameter name -> (shape text, info) as logged."""
    lines = {}
    for message in log.messages(logging.INFO):
        match = re.fullmatch(r'\n(\S+) - (torch\.Size\(\[.*\]\)):\n(.*)\n', message, re.S)
        if match:
            lines[match.group(1)] = (match.group(2), match.group(3))
    return lines


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        # ToyConv's parameters start as torch.empty: compare NaNs as equal too.
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, equal_nan=True,
                                   msg=f'{key} changed')


class ToyConv(nn.Module):
    """The seed's custom module with its own init_weights."""

    def __init__(self):
        super().__init__()
        self.custom_weight = nn.Parameter(torch.empty(1, 1, 1, 1))
        self.custom_bias = nn.Parameter(torch.empty(1))

    def init_weights(self):
        with torch.no_grad():
            self.custom_weight = self.custom_weight.fill_(1)
            self.custom_bias = self.custom_bias.fill_(0)


class LinearConvNet(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.linear = nn.Linear(1, 1)
        self.conv = nn.Conv2d(1, 1, 1)


class TwoConvNet(BaseModule):

    def __init__(self, init_cfg=None, custom=False):
        super().__init__(init_cfg)
        self.conv1 = nn.Conv2d(1, 1, 1)
        self.conv2 = nn.Conv2d(1, 1, 1)
        if custom:
            self.custom_conv = ToyConv()


# -- the seed's examples -----------------------------------------------------------
def test_seed_pretrained_example_loads_the_checkpoint_and_logs_its_two_lines(
        tmp_path, fengine_log):

    class ToyNet(BaseModule):

        def __init__(self, init_cfg=None):
            super().__init__(init_cfg)
            self.conv1 = nn.Linear(1, 1)

    path = str(tmp_path / 'pretrained.pth')
    torch.save(ToyNet().state_dict(), path)
    saved = torch.load(path)
    toy_net = ToyNet(init_cfg=dict(type='Pretrained', checkpoint=path))
    toy_net.init_weights()
    assert f'load model from: {path}' in fengine_log.messages()
    assert f'local loads checkpoint from path: {path}' in fengine_log.messages()
    assert torch.equal(toy_net.conv1.weight, saved['conv1.weight'])
    assert report(fengine_log)['conv1.weight'] == ('torch.Size([1, 1])',
                                                   f'PretrainedInit: load from {path}')


def test_seed_kaiming_for_conv_and_xavier_for_linear(fengine_log):
    toy_net = LinearConvNet(init_cfg=[
        dict(type='Kaiming', layer='Conv2d'),
        dict(type='Xavier', layer='Linear')
    ], )
    toy_net.init_weights()
    assert report(fengine_log) == {
        'linear.weight': ('torch.Size([1, 1])', XAVIER),
        'linear.bias': ('torch.Size([1])', XAVIER),
        'conv.weight': ('torch.Size([1, 1, 1, 1])', KAIMING),
        'conv.bias': ('torch.Size([1])', KAIMING),
    }
    assert list(report(fengine_log)) == ['linear.weight', 'linear.bias', 'conv.weight',
                                         'conv.bias']


def test_seed_layer_list_initializes_every_listed_type(fengine_log):
    toy_net = LinearConvNet(init_cfg=[dict(type='Kaiming', layer=['Conv2d', 'Linear'])], )
    toy_net.init_weights()
    assert {info for _, info in report(fengine_log).values()} == {KAIMING}
    assert len(report(fengine_log)) == 4


def test_seed_override_reinitializes_conv2_wholly(fengine_log):
    toy_net = TwoConvNet(init_cfg=[
        dict(type='Kaiming', layer=['Conv2d'], override=dict(name='conv2', type='Xavier')),
    ], )
    toy_net.init_weights()
    lines = report(fengine_log)
    assert lines['conv1.weight'][1] == KAIMING
    assert lines['conv1.bias'][1] == KAIMING
    assert lines['conv2.weight'][1] == XAVIER
    # The seed prints KaimingInit for conv2.bias: MMEngine compares means, and Xavier's
    # bias=0 rewrote a bias that Kaiming had already set to 0. fengine records the
    # write itself, so the last initializer that set it is reported.
    assert lines['conv2.bias'][1] == XAVIER


def test_seed_custom_init_weights_is_called_in_a_chain_and_reported(fengine_log):
    toy_net = TwoConvNet(init_cfg=[
        dict(type='Kaiming', layer=['Conv2d'], override=dict(name='conv2', type='Xavier')),
    ], custom=True)
    toy_net.init_weights()
    lines = report(fengine_log)
    user = 'Initialized by user-defined `init_weights` in ToyConv'
    assert lines['custom_conv.custom_weight'] == ('torch.Size([1, 1, 1, 1])', user)
    assert lines['custom_conv.custom_bias'] == ('torch.Size([1])', user)
    assert toy_net.custom_conv.custom_weight.item() == 1
    assert toy_net.custom_conv.custom_bias.item() == 0
    assert isinstance(toy_net.custom_conv.custom_weight, nn.Parameter)


def test_report_lines_use_the_seed_format_on_the_console(capsys):
    LinearConvNet(init_cfg=dict(type='Kaiming', layer='Conv2d')).init_weights()
    out = capsys.readouterr().out
    assert re.search(r'^\d\d/\d\d \d\d:\d\d:\d\d - fengine - INFO - \n'
                     r'conv\.weight - torch\.Size\(\[1, 1, 1, 1\]\):\n'
                     + re.escape(KAIMING) + '\n', out, re.M)


# -- values --------------------------------------------------------------------------
def test_initializers_set_the_values_they_report():
    net = LinearConvNet(init_cfg=[dict(type='Constant', layer='Linear', val=3, bias=2),
                                  dict(type='Constant', layer='Conv2d', val=-1,
                                       bias_prob=0.01)])
    net.init_weights()
    assert net.linear.weight.item() == 3 and net.linear.bias.item() == 2
    assert net.conv.weight.item() == -1
    assert net.conv.bias.item() == pytest.approx(bias_init_with_prob(0.01))
    assert bias_init_with_prob(0.01) == pytest.approx(-4.59511985013459)


def test_untouched_parameters_keep_their_values_and_say_so(fengine_log):
    net = LinearConvNet(init_cfg=dict(type='Kaiming', layer='Conv2d'))
    before = net.linear.weight.detach().clone()
    net.init_weights()
    assert torch.equal(net.linear.weight, before)
    assert report(fengine_log)['linear.weight'][1] == (
        'The value is the same before and after calling `init_weights` of LinearConvNet')


def test_values_depend_only_on_seed_and_path():
    first = LinearConvNet(init_cfg=dict(type='Normal', layer=['Conv2d', 'Linear']))
    first.init_weights(seed=7)

    class Bigger(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Normal', layer=['Conv2d', 'Linear']))
            self.extra = nn.Linear(5, 5)  # registered first: changes construction RNG
            self.linear = nn.Linear(1, 1)
            self.conv = nn.Conv2d(1, 1, 1)

    second = Bigger()
    second.init_weights(seed=7)
    assert torch.equal(first.conv.weight, second.conv.weight)
    assert torch.equal(first.linear.weight, second.linear.weight)
    third = LinearConvNet(init_cfg=dict(type='Normal', layer=['Conv2d', 'Linear']))
    third.init_weights(seed=8)
    assert not torch.equal(first.conv.weight, third.conv.weight)


def test_default_seed_follows_torch_manual_seed():
    values = []
    for _ in range(2):
        torch.manual_seed(123)
        net = nn.Linear(2, 2)  # consumes global RNG; must not matter
        del net
        model = LinearConvNet(init_cfg=dict(type='Normal', layer='Conv2d'))
        model.init_weights()
        values.append(model.conv.weight.detach().clone())
    assert torch.equal(values[0], values[1])


# -- MMEngine's rules ----------------------------------------------------------------
def test_layer_matches_any_class_in_the_mro():

    class MyConv(nn.Conv2d):
        pass

    class MyMyConv(MyConv):
        pass

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', layer='Conv2d', val=4))
            self.conv = MyMyConv(1, 1, 1)

    net = Net()
    net.init_weights()
    assert net.conv.weight.item() == 4


def test_a_layer_that_matches_nothing_is_a_warning_listing_the_types(fengine_log):
    net = LinearConvNet(init_cfg=dict(type='Kaiming', layer='Conv3d'))
    net.init_weights()
    warnings = fengine_log.messages(logging.WARNING)
    assert any("['Conv3d'] matched no module" in w and 'Conv2d, Linear, LinearConvNet' in w
               for w in warnings)


def test_override_with_only_name_reuses_the_parent_arguments(fengine_log):
    net = TwoConvNet(init_cfg=dict(type='Constant', val=2, bias=3, layer='Linear',
                                   override=dict(name='conv2')))
    net.init_weights()
    assert net.conv2.weight.item() == 2 and net.conv2.bias.item() == 3
    assert report(fengine_log)['conv2.weight'][1] == 'ConstantInit: val=2, bias=3'
    assert report(fengine_log)['conv1.weight'][1].startswith('The value is the same')


def test_override_accepts_a_list_and_dotted_names():

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', val=1, layer='Conv2d', override=[
                dict(name='head.cls', type='Constant', val=5),
                dict(name='conv', type='Constant', val=6)]))
            self.conv = nn.Conv2d(1, 1, 1)
            self.head = nn.Module()
            self.head.cls = nn.Linear(1, 1)

    net = Net()
    net.init_weights()
    assert net.head.cls.weight.item() == 5 and net.conv.weight.item() == 6


def test_child_init_cfg_is_applied_after_the_parent_and_wins(fengine_log):

    class Child(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', layer='Linear', val=9))
            self.fc = nn.Linear(1, 1)

    class Parent(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', layer='Linear', val=1))
            self.child = Child()
            self.fc = nn.Linear(1, 1)

    net = Parent()
    net.init_weights()
    assert net.child.fc.weight.item() == 9 and net.fc.weight.item() == 1
    assert report(fengine_log)['child.fc.weight'][1] == 'ConstantInit: val=9, bias=0'
    assert net.is_init and net.child.is_init


def test_a_child_with_its_own_init_weights_wins_over_the_parent():
    net = TwoConvNet(init_cfg=dict(type='Constant', val=5, layer='ToyConv'), custom=True)
    net.init_weights()
    assert net.custom_conv.custom_weight.item() == 1


def test_a_base_module_inside_a_plain_container_is_initialized():

    class Inner(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', layer='Linear', val=7))
            self.fc = nn.Linear(1, 1)

    class Outer(BaseModule):

        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(Inner(), nn.ReLU())

    net = Outer()
    net.init_weights()
    assert net.blocks[0].fc.weight.item() == 7


def test_containers_take_init_cfg():
    seq = Sequential(nn.Linear(1, 1), init_cfg=dict(type='Constant', layer='Linear', val=2))
    mlist = ModuleList([nn.Linear(1, 1)], init_cfg=dict(type='Constant', layer='Linear', val=3))
    mdict = ModuleDict({'fc': nn.Linear(1, 1)},
                       init_cfg=dict(type='Constant', layer='Linear', val=4))
    for module, value in ((seq, 2), (mlist, 3), (mdict, 4)):
        module.init_weights()
        assert next(module.parameters()).item() == value
        assert 'init_cfg=' in repr(module)


def test_a_second_init_weights_warns_and_changes_nothing(fengine_log):
    net = LinearConvNet(init_cfg=dict(type='Normal', layer='Linear'))
    net.init_weights(seed=1)
    before = snapshot(net)
    net.init_weights(seed=2)
    assert_unchanged(net, before)
    assert any('called more than once' in w for w in fengine_log.messages(logging.WARNING))


def test_report_goes_to_the_log_file_instead_of_the_console(tmp_path, capsys):
    logger = logging.getLogger('fengine')
    handler = logging.FileHandler(tmp_path / 'run.log')
    logger.addHandler(handler)
    try:
        LinearConvNet(init_cfg=dict(type='Kaiming', layer='Conv2d')).init_weights()
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / 'run.log').read_text()
    assert 'Name of parameter - Initialization information' in text
    assert f'conv.weight - torch.Size([1, 1, 1, 1]): \n{KAIMING}' in text
    assert 'conv.weight' not in capsys.readouterr().out


# -- exact record ----------------------------------------------------------------------
def test_user_writes_that_keep_the_mean_are_recorded(fengine_log):

    class Shuffle(nn.Module):

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.arange(4.0))
            self.untouched = nn.Parameter(torch.ones(2))

        def init_weights(self):
            self.w.data.copy_(self.w.data.flip(0))  # same mean, through .data

    class Net(BaseModule):

        def __init__(self):
            super().__init__()
            self.block = Shuffle()

    net = Net()
    net.init_weights()
    lines = report(fengine_log)
    assert lines['block.w'][1] == 'Initialized by user-defined `init_weights` in Shuffle'
    assert lines['block.untouched'][1].startswith('The value is the same')
    assert net.block.w.tolist() == [3, 2, 1, 0]


def test_helpers_called_inside_init_weights_are_recorded_by_name(fengine_log):

    class Head(nn.Module):

        def __init__(self):
            super().__init__()
            self.cls = nn.Linear(4, 2)
            self.reg = nn.Linear(4, 2)

        def init_weights(self):
            normal_init(self.cls, std=0.01, bias=bias_init_with_prob(0.01))
            constant_init(self.reg, 0)

    class Net(BaseModule):

        def __init__(self):
            super().__init__()
            self.head = Head()

    net = Net()
    net.init_weights(seed=3)
    lines = report(fengine_log)
    assert lines['head.cls.weight'][1] == (
        f'NormalInit: mean=0, std=0.01, bias={bias_init_with_prob(0.01)}')
    assert lines['head.reg.bias'][1] == 'ConstantInit: val=0, bias=0'
    assert torch.count_nonzero(net.head.reg.weight) == 0
    again = Net()
    again.init_weights(seed=3)
    assert torch.equal(net.head.cls.weight, again.head.cls.weight)
    assert not torch.equal(net.head.cls.weight[0], net.head.cls.weight[1])


def test_user_init_weights_of_the_model_itself_runs_with_its_init_cfg(fengine_log):

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', layer='Linear', val=1))
            self.a = nn.Linear(1, 1)
            self.b = nn.Linear(1, 1)

        def init_weights(self):
            super().init_weights()
            with torch.no_grad():
                self.b.weight.fill_(1)  # same value, still a write

    net = Net()
    net.init_weights()
    lines = report(fengine_log)
    assert lines['a.weight'][1] == 'ConstantInit: val=1, bias=0'
    assert lines['b.weight'][1] == 'Initialized by user-defined `init_weights` in Net'
    assert net.is_init
    net.init_weights()
    assert any('called more than once' in w for w in fengine_log.messages(logging.WARNING))


def test_a_custom_registered_initializer_is_called_and_recorded(fengine_log):

    @WEIGHT_INITIALIZERS.register_module(name='_TestFillFour', force=True)
    class FillFour:

        def __init__(self, layer=None):
            self.layer = layer

        def __call__(self, module):
            for m in module.modules():
                if type(m).__name__ == self.layer:
                    m.weight.data.fill_(4)

        def _get_init_info(self):
            return 'FillFour'

    try:
        net = LinearConvNet(init_cfg=dict(type='_TestFillFour', layer='Linear'))
        net.init_weights()
    finally:
        WEIGHT_INITIALIZERS._module_dict.pop('_TestFillFour')
    assert net.linear.weight.item() == 4
    assert report(fengine_log)['linear.weight'][1] == 'FillFour'
    assert report(fengine_log)['linear.bias'][1].startswith('The value is the same')


class _NoSyncSpy(TorchDispatchMode):
    """Counts the ops a host synchronization would go through."""

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.mean.default,
                    torch.ops.aten.equal.default):
            self.syncs.append(str(func))
        return func(*args, **(kwargs or {}))


def test_init_weights_reads_no_parameter_values_back():
    net = TwoConvNet(init_cfg=dict(type='Kaiming', layer='Conv2d',
                                   override=dict(name='conv2', type='Xavier')), custom=True)
    with _NoSyncSpy() as spy:
        net.init_weights()
    assert spy.syncs == []


# -- failures leave the model as it was ------------------------------------------------
@pytest.mark.parametrize('init_cfg, error, words', [
    (dict(type='Kaimig', layer='Conv2d'), KeyError, ["'Kaimig'", "'Kaiming'"]),
    (dict(type='Kaiming', layer=3), TypeError, ['layer must be a str or a list of str', '3']),
    (dict(type='Kaiming', layer=['Conv2d', 1]), TypeError, ['layer must be a str']),
    (dict(type='Constant', val=1, bias='0', layer='Linear'), TypeError,
     ['bias must be a number', "'0'"]),
    (dict(type='Constant', val=1, bias_prob=1, layer='Linear'), TypeError,
     ['bias_prob must be a float', '1']),
    (dict(type='Kaiming', distribution='gaussian'), ValueError,
     ['distribution', "'gaussian'", "'normal', 'uniform'"]),
    (dict(type='Kaiming', mode='fan_avg'), ValueError, ['mode', "'fan_avg'", "'fan_in'"]),
    (dict(type='Kaiming', nonlinearity='relu6'), ValueError, ["'relu6'", "'relu'"]),
    (dict(type='Kaiming', layer='Conv2d', override=dict(type='Xavier')), ValueError,
     ['must have the key "name"']),
    (dict(type='Kaiming', layer='Conv2d', override=dict(name='conv3', type='Xavier')),
     ValueError, ["'conv3'", "'conv1', 'conv2'", "no such child or parameter"]),
    (dict(type='Kaiming', layer='Conv2d', override=dict(name='conv2', gain=2)), ValueError,
     ['no "type"', "'conv2'"]),
    (dict(type='Kaiming', layer='Conv2d', override='conv2'), TypeError,
     ['override', 'dict or a list of dicts']),
    (dict(type='Kaiming', layer='Conv2d', foo=1), TypeError, ['foo', 'Accepted arguments']),
    ([dict(type='Kaiming', layer='Conv2d'), 'Xavier'], TypeError, ['[1] must be a dict']),
])
def test_bad_init_cfg_raises_a_clear_error_and_changes_nothing(init_cfg, error, words):
    net = TwoConvNet(custom=True)
    net.init_cfg = init_cfg
    before = snapshot(net)
    with pytest.raises(error) as info:
        net.init_weights()
    message = str(info.value.args[0])
    for word in words:
        assert word in message, message
    assert 'init_cfg of TwoConvNet' in message or isinstance(init_cfg, dict) is False or \
        error is not KeyError
    assert_unchanged(net, before)
    assert not net.is_init


def test_init_cfg_of_the_wrong_type_is_refused_at_construction():
    with pytest.raises(TypeError, match="init_cfg of TwoConvNet must be a dict or a list"):
        TwoConvNet(init_cfg='Kaiming')


def test_a_fan_scaled_initializer_on_a_vector_names_the_parameter_and_changes_nothing():

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Kaiming', layer='BatchNorm1d'))
            self.bn = nn.BatchNorm1d(3)

    net = Net()
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"'bn.weight' has shape \(3,\)"):
        net.init_weights()
    assert_unchanged(net, before)


def test_user_init_weights_that_raises_leaves_the_model_as_it_was():

    class Broken(nn.Module):

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

        def init_weights(self):
            self.w.data.fill_(1)
            raise RuntimeError('boom')

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Constant', layer='Linear', val=5))
            self.fc = nn.Linear(1, 1)
            self.broken = Broken()

    net = Net()
    before = snapshot(net)
    with pytest.raises(RuntimeError, match='boom'):
        net.init_weights()
    assert_unchanged(net, before)
    assert not net.is_init


def test_init_weights_that_adds_a_parameter_is_an_error():

    class Grows(nn.Module):

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def init_weights(self):
            self.extra = nn.Parameter(torch.zeros(1))

    class Net(BaseModule):

        def __init__(self):
            super().__init__()
            self.grows = Grows()

    with pytest.raises(ValueError, match=r"added parameters \['Grows.extra'\]"):
        Net().init_weights()


# -- meta device ---------------------------------------------------------------------
class MetaNet(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)


META_CFG = [dict(type='Kaiming', layer='Conv2d'), dict(type='Normal', layer='Linear', std=0.1)]


def test_a_meta_model_is_materialized_with_the_values_of_the_ordinary_path(fengine_log):
    with torch.device('meta'):
        meta = MetaNet(META_CFG)
    meta.init_weights(seed=5, device='cpu')
    meta_report = report(fengine_log)
    ordinary = MetaNet(META_CFG)
    ordinary.init_weights(seed=5)
    for name in ('conv.weight', 'conv.bias', 'fc.weight', 'fc.bias'):
        assert torch.equal(meta.get_parameter(name), ordinary.get_parameter(name)), name
    assert all(p.device.type == 'cpu' for p in meta.parameters())
    assert all(isinstance(p, nn.Parameter) for p in meta.parameters())
    # BatchNorm: no init_cfg entry, so PyTorch's own default, and its statistics.
    assert torch.equal(meta.bn.weight, torch.ones(8)) and torch.equal(meta.bn.bias,
                                                                      torch.zeros(8))
    assert torch.equal(meta.bn.running_var, torch.ones(8))
    assert meta.bn.num_batches_tracked.item() == 0
    assert meta_report['bn.weight'][1] == ('PyTorch default initialization of BatchNorm2d '
                                           '(`reset_parameters`), materialized from meta')


def test_a_meta_model_needs_a_device():
    with torch.device('meta'):
        meta = MetaNet(META_CFG)
    with pytest.raises(ValueError, match=r"meta device; pass device="):
        meta.init_weights()
    assert all(p.is_meta for p in meta.parameters())


def test_a_meta_parameter_nothing_can_set_is_named():

    class Custom(nn.Module):

        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.empty(3))

    class Net(BaseModule):

        def __init__(self):
            super().__init__()
            self.custom = Custom()

    with torch.device('meta'):
        net = Net()
    with pytest.raises(ValueError, match=r"'custom.scale' \(Custom\)"):
        net.init_weights(device='cpu')


def test_device_is_refused_for_a_model_that_is_not_on_meta():
    net = MetaNet(META_CFG)
    with pytest.raises(ValueError, match='move the model with .to'):
        net.init_weights(device='meta')


def test_tied_parameters_are_initialized_once_and_stay_tied():

    class Tied(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Normal', layer=['Linear', 'Embedding']))
            self.embed = nn.Embedding(5, 4)
            self.head = nn.Linear(4, 5, bias=False)
            self.head.weight = self.embed.weight

    with torch.device('meta'):
        net = Tied()
    net.init_weights(device='cpu')
    assert net.head.weight is net.embed.weight
    assert not net.embed.weight.is_meta


# -- module-level helpers ------------------------------------------------------------
def test_initialize_applies_entries_in_order_with_overrides():
    net = nn.Sequential(nn.Conv1d(3, 1, 3), nn.Linear(1, 2))
    initialize(net, [dict(type='Constant', layer='Conv1d', val=1),
                     dict(type='Constant', layer='Linear', val=2,
                          override=dict(name='0', type='Constant', val=3))])
    assert torch.all(net[0].weight == 3) and torch.all(net[1].weight == 2)


def test_standalone_helpers_follow_torch_manual_seed_and_differ_between_calls():
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    torch.manual_seed(0)
    normal_init(a)
    normal_init(b)
    assert not torch.equal(a.weight, b.weight)
    c = nn.Linear(8, 8)
    torch.manual_seed(0)
    normal_init(c)
    assert torch.equal(a.weight, c.weight)


def test_a_user_subclass_of_base_init_is_a_pure_initializer():

    @WEIGHT_INITIALIZERS.register_module(name='_TestHalf', force=True)
    class HalfInit(BaseInit):

        def weight_init(self):
            from fengine.func import constant
            return constant(0.5)

    try:
        net = LinearConvNet(init_cfg=dict(type='_TestHalf', layer='Linear'))
        net.init_weights()
    finally:
        WEIGHT_INITIALIZERS._module_dict.pop('_TestHalf')
    assert net.linear.weight.item() == 0.5


def test_device_naming_the_model_own_device_is_accepted():
    net = MetaNet(META_CFG)
    net.init_weights(seed=0, device='cpu')
    assert net.is_init


@pytest.mark.cuda
def test_a_meta_model_is_materialized_on_cuda_without_an_index():
    with torch.device('meta'):
        net = MetaNet(META_CFG)
    net.init_weights(seed=0, device='cuda')
    assert all(p.device.type == 'cuda' for p in net.parameters())
    assert net.bn.running_var.device.type == 'cuda'


def test_multihead_attention_built_on_meta_gets_its_own_default():

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Normal', layer='Linear', std=0.02))
            self.attn = nn.MultiheadAttention(8, 2)

    with torch.device('meta'):
        net = Net()
    net.init_weights(seed=0, device='cpu')
    assert not net.attn.in_proj_weight.is_meta
    assert torch.count_nonzero(net.attn.in_proj_bias) == 0  # _reset_parameters sets 0
    out, _ = net.attn(torch.randn(3, 1, 8), torch.randn(3, 1, 8), torch.randn(3, 1, 8))
    assert out.isfinite().all()


class TokenNet(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.class_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.head = nn.Module()
        self.head.pos = nn.Parameter(torch.zeros(3, 4))
        self.fc = nn.Linear(4, 2)


def test_override_can_name_a_bare_parameter(fengine_log):
    net = TokenNet([dict(type='Constant', val=1, layer='Linear'),
                    dict(type='TruncNormal', std=0.02,
                         override=[dict(name='class_token'), dict(name='head.pos')])])
    net.init_weights(seed=0)
    lines = report(fengine_log)
    info = 'TruncNormalInit: a=-2, b=2, mean=0, std=0.02, bias=0'
    assert lines['class_token'][1] == info and lines['head.pos'][1] == info
    assert 0 < net.head.pos.std() < 0.05 and torch.all(net.fc.weight == 1)


def test_bare_parameters_built_on_meta_are_set_by_an_override():
    cfg = [dict(type='Normal', layer='Linear'),
           dict(type='TruncNormal', std=0.02,
                override=[dict(name='class_token'), dict(name='head.pos')])]
    with torch.device('meta'):
        meta = TokenNet(cfg)
    meta.init_weights(seed=3, device='cpu')
    ordinary = TokenNet(cfg)
    ordinary.init_weights(seed=3)
    for name, param in ordinary.named_parameters():
        assert torch.equal(meta.get_parameter(name), param), name


def test_a_bare_meta_parameter_nothing_sets_names_the_way_to_set_it():
    with torch.device('meta'):
        net = TokenNet(dict(type='Normal', layer='Linear'))
    with pytest.raises(ValueError, match=r"'class_token' \(TokenNet\).*override=dict\(name="):
        net.init_weights(device='cpu')


def test_a_fan_scaled_override_on_a_vector_parameter_names_it():
    net = TokenNet(dict(type='Kaiming', override=dict(name='head.pos', type='Kaiming')))
    net.init_weights()  # (3, 4) is a matrix: fine
    net = TokenNet(dict(type='Xavier', override=dict(name='fc.bias', type='Xavier')))
    with pytest.raises(ValueError, match=r"'fc.bias' has shape \(2,\)"):
        net.init_weights()


def test_user_init_weights_may_set_a_bare_parameter_built_on_meta():

    class Net(TokenNet):

        def init_weights(self):
            super().init_weights()
            self.class_token.data.fill_(0.5)
            self.head.pos.data.zero_()

    with torch.device('meta'):
        net = Net(dict(type='Normal', layer='Linear'))
    net.init_weights(seed=1, device='cpu')
    assert torch.all(net.class_token == 0.5) and torch.all(net.head.pos == 0)


def test_user_defined_init_weights_takes_seed_and_device():

    class Net(BaseModule):

        def __init__(self):
            super().__init__(dict(type='Normal', layer='Linear'))
            self.fc = nn.Linear(2, 2)

        def init_weights(self):
            super().init_weights()

    a, b, c = Net(), Net(), Net()
    a.init_weights(seed=1)
    b.init_weights(seed=2)
    c.init_weights(seed=1)
    assert not torch.equal(a.fc.weight, b.fc.weight) and torch.equal(a.fc.weight, c.fc.weight)
    with torch.device('meta'):
        d = Net()
    d.init_weights(seed=1, device='cpu')
    assert torch.equal(d.fc.weight, a.fc.weight)
