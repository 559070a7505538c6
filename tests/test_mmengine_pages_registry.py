"""MMEngine's tutorial 'Registry' (docs/en/advanced_tutorials/registry.md), run with fengine.

The page's downstream projects (``mmalpha``, ``mmbeta``) and its activation module are
written as small packages into a temporary folder on ``sys.path`` (``tmp_packages``);
what they register in fengine's root registries is undone after each test
(``fresh_registries``).
"""
from __future__ import annotations

import pytest
import torch

ACTIVATIONS = {
    'acts/registry.py': """
        from fengine import Registry
        # 'mmengine' is the page's scope: fengine keeps it as the alias of its own.
        ACTIVATION = Registry('activation', scope='mmengine', locations=['acts.activations'])
    """,
    'acts/activations.py': """
        import torch.nn as nn
        from acts.registry import ACTIVATION

        @ACTIVATION.register_module()
        class Sigmoid(nn.Module):
            def forward(self, x):
                print('call Sigmoid.forward')
                return x

        @ACTIVATION.register_module()
        class ReLU(nn.Module):
            def __init__(self, inplace=False):
                super().__init__()

            def forward(self, x):
                print('call ReLU.forward')
                return x

        @ACTIVATION.register_module()
        class Softmax(nn.Module):
            def forward(self, x):
                print('call Softmax.forward')
                return x
    """,
}

PROJECTS = {
    'mmalpha/registry.py': """
        from fengine import Registry, MODELS as MMENGINE_MODELS
        MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmalpha',
                          locations=['mmalpha.models'])
    """,
    'mmalpha/models.py': """
        import torch.nn as nn
        from mmalpha.registry import MODELS

        @MODELS.register_module()
        class LogSoftmax(nn.Module):
            def __init__(self, dim=None):
                super().__init__()

            def forward(self, x):
                print('call LogSoftmax.forward')
                return x
    """,
    'mmbeta/registry.py': """
        from fengine import Registry, MODELS as MMENGINE_MODELS
        MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmbeta')
    """,
}


def message(excinfo) -> str:
    return str(excinfo.value.args[0])


@pytest.fixture
def acts(tmp_packages):
    tmp_packages(ACTIVATIONS)
    from acts.registry import ACTIVATION
    return ACTIVATION


@pytest.fixture
def rrelu(fresh_registries):
    """The page's ``RReLU``, registered in fengine's root ``MODELS``."""
    import torch.nn as nn

    from fengine import MODELS

    @MODELS.register_module()
    class RReLU(nn.Module):
        def __init__(self, lower=0.125, upper=0.333, inplace=False):
            super().__init__()
            self.lower = lower

        def forward(self, x):
            print('call RReLU.forward')
            return x

    return RReLU


@pytest.fixture
def projects(tmp_packages, rrelu):
    tmp_packages(PROJECTS)
    import mmalpha.registry
    import mmbeta.registry
    return mmalpha.registry.MODELS, mmbeta.registry.MODELS


# ------------------------------------------------------------------ Getting started
def test_a_registry_with_scope_and_locations_imports_them_when_it_first_builds(acts):
    import sys
    assert acts.scope == 'mmengine'
    assert 'acts.activations' not in sys.modules
    acts.build(dict(type='Sigmoid'))
    assert 'acts.activations' in sys.modules


def test_the_registered_activations_are_in_module_dict(acts):
    acts.import_from_location()
    assert {name: cls.__name__ for name, cls in acts.module_dict.items()} == {
        'Sigmoid': 'Sigmoid', 'ReLU': 'ReLU', 'Softmax': 'Softmax'}


def test_register_module_with_module_registers_like_the_decorator(acts):
    import torch.nn as nn

    from fengine import Registry

    class ReLU(nn.Module):
        pass

    other = Registry('activation', scope='mmengine')
    assert other.register_module(module=ReLU) is ReLU
    assert other.get('ReLU') is ReLU


def test_the_config_picks_the_activation_and_switching_it_needs_no_code(acts, capsys):
    inputs = torch.randn(2)
    activation = acts.build(dict(type='Sigmoid'))
    assert torch.equal(activation(inputs), inputs)
    assert capsys.readouterr().out == 'call Sigmoid.forward\n'
    activation = acts.build(dict(type='ReLU', inplace=True))
    activation(inputs)
    assert type(activation).__name__ == 'ReLU'
    assert capsys.readouterr().out == 'call ReLU.forward\n'


def test_a_custom_build_func_builds_the_activation(tmp_packages, capsys):
    import torch.nn as nn

    from fengine import Registry

    def build_activation(cfg, registry, *args, **kwargs):
        cfg_ = cfg.copy()
        act_type = cfg_.pop('type')
        print(f'build activation: {act_type}')
        return registry.get(act_type)(*args, **kwargs, **cfg_)

    tmp_packages(ACTIVATIONS)
    activation_registry = Registry('activation', build_func=build_activation, scope='mmengine',
                                   locations=['acts.activations'])

    @activation_registry.register_module()
    class Tanh(nn.Module):
        def forward(self, x):
            print('call Tanh.forward')
            return x

    activation = activation_registry.build(dict(type='Tanh'))
    activation(torch.randn(2))
    assert isinstance(activation, Tanh)
    assert capsys.readouterr().out == 'build activation: Tanh\ncall Tanh.forward\n'


def test_a_registered_function_is_called_by_build(capsys):
    from fengine import Registry
    function = Registry('function', scope='mmengine')

    @function.register_module()
    def print_args(**kwargs):
        print(kwargs)

    assert function.build(dict(type='print_args', a=1, b=2)) is None
    assert capsys.readouterr().out == "{'a': 1, 'b': 2}\n"


# ------------------------------------------------------------------ Advanced usage
def test_fengine_has_the_pages_twenty_two_root_registries():
    import fengine
    names = ['RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'DATASETS', 'DATA_SAMPLERS',
             'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS', 'OPTIMIZERS',
             'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'METRICS',
             'EVALUATOR', 'TASK_UTILS', 'VISUALIZERS', 'VISBACKENDS', 'LOG_PROCESSORS',
             'FUNCTIONS', 'INFERENCERS']
    assert len(names) == 22
    assert all(isinstance(getattr(fengine, n), fengine.Registry) for n in names)


def test_count_registered_modules_shows_the_child_project_in_the_models_tree(projects):
    from fengine.registry import count_registered_modules
    scan = count_registered_modules(verbose=False)
    models = scan['registries']['MODELS']
    assert [info['scope'] for info in models] == ['fengine', 'mmalpha', 'mmbeta']
    assert 'RReLU' in [name for names in models[0].values() if isinstance(names, list)
                       for name in names]


def test_a_child_project_builds_its_own_module_and_its_parents(projects, rrelu, capsys):
    alpha_models, _ = projects
    assert type(alpha_models.build(cfg=dict(type='LogSoftmax'))).__name__ == 'LogSoftmax'
    model = alpha_models.build(cfg=dict(type='RReLU', lower=0.2))
    assert type(model) is rrelu and model.lower == 0.2
    model = alpha_models.build(cfg=dict(type='mmengine.RReLU'))
    assert type(model) is rrelu
    inputs = torch.randn(2)
    assert torch.equal(model(inputs), inputs)
    assert capsys.readouterr().out == 'call RReLU.forward\n'


def test_a_scope_prefix_picks_the_parents_module_when_both_define_it(projects, rrelu):
    import torch.nn as nn
    alpha_models, _ = projects

    @alpha_models.register_module(name='RReLU')
    class AlphaRReLU(nn.Module):
        pass

    assert type(alpha_models.build(dict(type='RReLU'))) is AlphaRReLU
    assert type(alpha_models.build(dict(type='mmengine.RReLU'))) is rrelu
    assert type(alpha_models.build(dict(type='fengine.RReLU'))) is rrelu


def test_the_root_finds_a_childs_module_only_in_the_childs_default_scope(projects):
    from fengine.registry import MODELS as MMENGINE_MODELS
    from fengine.registry import init_default_scope
    alpha_models, _ = projects
    assert type(alpha_models.build(dict(type='LogSoftmax'))).__name__ == 'LogSoftmax'
    with pytest.raises(KeyError) as exc:
        MMENGINE_MODELS.build(dict(type='LogSoftmax'))
    assert "'LogSoftmax' is registered in the model registry (scope 'mmalpha')" in message(exc)
    init_default_scope('mmalpha')
    assert type(MMENGINE_MODELS.build(dict(type='LogSoftmax'))).__name__ == 'LogSoftmax'


def test_a_sibling_project_uses_the_others_module_with_its_scope_prefix(projects, capsys):
    alpha_models, beta_models = projects
    model = beta_models.build(cfg=dict(type='mmalpha.LogSoftmax'))
    assert type(model) is alpha_models.get('LogSoftmax')
    model(torch.randn(2))
    assert capsys.readouterr().out == 'call LogSoftmax.forward\n'


def test_scope_in_the_config_switches_a_sibling_to_the_others_registry(projects):
    from fengine.registry import DefaultScope
    alpha_models, beta_models = projects
    before = DefaultScope.get_current_instance()
    model = beta_models.build(cfg=dict(type='LogSoftmax', _scope_='mmalpha'))
    assert type(model) is alpha_models.get('LogSoftmax')
    assert DefaultScope.get_current_instance() is before
    with pytest.raises(KeyError, match="type='mmalpha.LogSoftmax'"):
        beta_models.build(cfg=dict(type='LogSoftmax'))
