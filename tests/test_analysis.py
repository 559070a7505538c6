"""Spec for :mod:`fengine.analysis`: counts checked against formulas done by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fengine.analysis import (ActivationAnalyzer, FlopAnalyzer, activation_count, flop_count,
                              get_model_complexity_info, parameter_count,
                              parameter_count_table)


class Net(nn.Module):
    """conv (3->8, 3x3) on 10x10 -> BN -> ReLU -> pool -> fc (8->4); a head never run."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.pool(self.body(x)).flatten(1))


# Multiply-adds, counted once (MMEngine's convention): the conv has 8*8*8 outputs of 3*3*3
# products each; the linear layer 4 outputs of 8.
CONV_FLOPS, FC_FLOPS = 8 * 8 * 8 * 27, 4 * 8
CONV_ACTS, FC_ACTS = 8 * 8 * 8, 4
PARAMS = (8 * 27 + 8) + (8 + 8) + (8 * 4 + 4) + (2 * 2 + 2)


def test_flops_count_a_multiply_add_once_and_activations_count_outputs():
    info = get_model_complexity_info(Net(), input_shape=(3, 10, 10))
    assert info['flops'] == CONV_FLOPS + FC_FLOPS
    assert info['activations'] == CONV_ACTS + FC_ACTS
    assert info['params'] == PARAMS
    assert (info['flops_str'], info['activations_str'], info['params_str']) == (
        '13.856K', '0.516K', '0.282K')


def test_flops_scale_with_the_batch_of_given_inputs():
    single = get_model_complexity_info(Net(), inputs=torch.randn(1, 3, 10, 10))['flops']
    assert get_model_complexity_info(Net(), inputs=(torch.randn(3, 3, 10, 10),))['flops'] == \
        3 * single


def test_several_inputs_are_built_from_a_tuple_of_shapes():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 2), nn.Linear(3, 2)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    info = get_model_complexity_info(Two(), input_shape=((5,), (3,)))
    assert info['flops'] == 2 * 5 + 2 * 3


def test_the_table_lists_modules_parameters_and_counts():
    table = get_model_complexity_info(Net(), input_shape=(3, 10, 10), show_arch=False)
    assert table['out_arch'] == ''
    lines = table['out_table'].splitlines()
    assert lines[0] == '' and [c.strip() for c in lines[2].split('|')[1:-1]] == [
        'module', '#parameters or shape', '#flops', '#activations']
    rows = {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in
            (line.split('|')[1:-1] for line in lines[4:-1])}
    assert rows['model'] == ['0.282K', '13.856K', '0.516K']
    assert rows['body.0'] == ['0.224K', '13.824K', '0.512K']
    assert rows['body.0.weight'] == ['(8, 3, 3, 3)', '', '']
    assert rows['body.1'] == ['16', '0', '0']  # ran, torch counts no FLOPs for batch norm
    assert rows['fc'] == ['36', '32', '4']
    assert rows['unused'] == ['6', '', '']  # never ran
    assert 'pool' not in rows  # no parameters, nothing counted


def test_the_arch_annotates_each_module_and_marks_modules_that_never_ran():
    arch = get_model_complexity_info(Net(), input_shape=(3, 10, 10), show_table=False)
    assert arch['out_table'] == ''
    text = arch['out_arch']
    assert text.startswith('\nNet(\n  #params: 0.28K, #flops: 13.86K, #acts: 0.52K\n')
    assert ('  (fc): Linear(\n    in_features=8, out_features=4, bias=True\n'
            '    #params: 36, #flops: 32, #acts: 4\n  )') in text
    assert '(unused): Linear(\n    in_features=2, out_features=2, bias=True\n' \
           '    #params: 6, #flops: N/A, #acts: N/A\n  )' in text
    assert '(2): ReLU()' in text and '(pool): AdaptiveAvgPool2d(output_size=1)' in text


@pytest.mark.parametrize('kwargs, match', [
    (dict(), 'exactly one of input_shape and inputs, but got neither'),
    (dict(input_shape=(3,), inputs=torch.zeros(1, 3)), 'but got both'),
    (dict(input_shape=[3, 10, 10]), r'input_shape must be a tuple of ints .* got \[3, 10, 10\]'),
    (dict(input_shape=((3,), 4)), r'but got \(\(3,\), 4\)'),
])
def test_bad_inputs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model_complexity_info(Net(), **kwargs)


def test_analyzers_report_by_module_and_operator():
    net, x = Net(), torch.randn(2, 3, 10, 10)
    flops = FlopAnalyzer(net, x)
    assert flops.total() == 2 * (CONV_FLOPS + FC_FLOPS)
    assert flops.total('body') == 2 * CONV_FLOPS
    assert flops.by_operator() == {'convolution': 2 * CONV_FLOPS, 'addmm': 2 * FC_FLOPS}
    assert flops.by_module()['fc'] == 2 * FC_FLOPS and 'unused' not in flops.by_module()
    assert flops.by_module_and_operator()['body.0'] == {'convolution': 2 * CONV_FLOPS}
    assert ActivationAnalyzer(net, x).by_module()['body.1'] == 0
    assert flop_count(net, x) == flops.by_operator()
    assert activation_count(net, x) == {'convolution': 2 * CONV_ACTS, 'addmm': 2 * FC_ACTS}
    with pytest.raises(KeyError, match="'bdy' is not a module of Net. Did you mean 'body'"):
        flops.total('bdy')


def test_a_matmul_outside_any_submodule_is_counted_for_the_model():
    class Scores(nn.Module):
        def forward(self, q, k):
            return q @ k.transpose(-1, -2)

    q = torch.randn(1, 2, 4, 8)
    # 2 heads of a (4 x 8) @ (8 x 4) product: 2 * 4 * 4 * 8 multiply-adds.
    assert FlopAnalyzer(Scores(), (q, q)).by_operator() == {'bmm': 2 * 4 * 4 * 8}


def test_parameter_count_and_its_table():
    net = Net()
    counts = parameter_count(net)
    assert counts[''] == PARAMS and counts['body'] == 8 * 27 + 8 + 16
    assert counts['body.0.weight'] == 216
    table = parameter_count_table(net, max_depth=2).splitlines()
    rows = [[c.rstrip() for c in line.split('|')[1:-1]] for line in table[1:-1]
            if line.startswith('|')]
    assert rows[0] == [' name', ' #elements or shape']
    assert [' model', ' 0.3K'] in rows and ['  body', '  0.2K'] in rows
    assert ['   body.1', '   16'] in rows and ['   fc.weight', '   (4, 8)'] in rows
    assert not any('body.0.weight' in line for line in table)  # deeper than max_depth
