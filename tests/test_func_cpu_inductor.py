"""The inductor options fengine adds when it compiles a training step for the CPU."""
from __future__ import annotations

import pytest
import torch

import fengine.func.step as step_module
from fengine.func import make_train_step
from fengine.func._cpu_inductor import CPU_TRAINING_INDUCTOR_OPTIONS, cpu_training_options
from fengine.optim import OptimWrapper
from test_func_step import CNN

CPU_PARAMS = [torch.zeros(2)]


def test_a_cpu_step_compiled_with_inductor_keeps_the_parameters_layout():
    options = cpu_training_options({'fullgraph': True}, CPU_PARAMS)
    assert options == {'fullgraph': True, 'options': {'layout_optimization': False}}
    assert cpu_training_options({'backend': 'inductor'}, CPU_PARAMS)['options'] == (
        CPU_TRAINING_INDUCTOR_OPTIONS)


def test_the_user_s_own_inductor_options_win_and_are_not_changed():
    given = {'fullgraph': True, 'options': {'layout_optimization': True, 'trace.enabled': False}}
    options = cpu_training_options(given, CPU_PARAMS)
    assert options['options'] == {'layout_optimization': True, 'trace.enabled': False}
    other = cpu_training_options({'options': {'max_autotune': True}}, CPU_PARAMS)
    assert other['options'] == {'layout_optimization': False, 'max_autotune': True}
    assert given == {'fullgraph': True,
                     'options': {'layout_optimization': True, 'trace.enabled': False}}


@pytest.mark.parametrize('options', [None, {'backend': 'aot_eager'}, {'backend': 'eager'}],
                         ids=['not compiled', 'aot_eager', 'eager'])
def test_other_backends_and_uncompiled_steps_get_nothing(options):
    assert cpu_training_options(options, CPU_PARAMS) is options


def test_a_step_compiled_with_a_mode_gets_nothing_since_torch_takes_a_mode_or_options():
    options = {'backend': 'inductor', 'mode': 'max-autotune-no-cudagraphs'}
    assert cpu_training_options(options, [torch.zeros(2)]) is options


def test_parameters_off_the_cpu_get_nothing():
    options = {'fullgraph': True}
    assert cpu_training_options(options, [torch.zeros(2, device='meta')]) is options
    mixed = [torch.zeros(2), torch.zeros(2, device='meta')]
    assert cpu_training_options(options, mixed) is options


def test_inductor_options_that_are_not_a_dict_are_refused_with_their_type():
    with pytest.raises(TypeError, match=r"compile option 'options' must be a dict of "
                       r"inductor options, but got list: \['layout_optimization'\]"):
        cpu_training_options({'options': ['layout_optimization']}, CPU_PARAMS)


def test_make_train_step_compiles_a_cpu_model_with_these_options(monkeypatch):
    seen = []

    def record(method, options, watch=None):
        seen.append(options)
        return method  # nothing compiled: the options are what this test reads
    monkeypatch.setattr(step_module, 'compile_method', record)
    model = CNN()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    make_train_step(model, wrapper, compile=True)
    make_train_step(model, wrapper, compile={'backend': 'aot_eager'})
    make_train_step(model, wrapper, compile={'options': {'layout_optimization': True}})
    assert seen[0] == {'fullgraph': True, 'options': {'layout_optimization': False}}
    assert seen[1] == {'backend': 'aot_eager', 'fullgraph': True}
    assert seen[2]['options'] == {'layout_optimization': True}
