"""Spec for :mod:`fengine.registry`.

Test classes are registered on fresh ``Registry`` objects made in fixtures; a test
that must use fengine's root registries (built-ins, default scopes) does so inside the
``fresh_registries`` fixture, which undoes what it registers.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from torch import nn

import fengine
from fengine import registry as reg
from fengine.registry import (DefaultScope, Registry, build_from_cfg, build_model_from_cfg,
                              build_runner_from_cfg, count_registered_modules,
                              init_default_scope, traverse_registry_tree)


@pytest.fixture
def layers():
    return Registry('layer')


@pytest.fixture
def filled(layers):
    """A registry holding ``Conv`` and ``Kaiming``, as the tests below expect."""

    @layers.register_module()
    class Conv:
        def __init__(self, in_channels, out_channels=8, *, bias=True):
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.bias = bias

    @layers.register_module()
    class Kaiming:
        def __init__(self, a=0, mode='fan_out'):
            self.a = a
            self.mode = mode

    return layers


def message(excinfo) -> str:
    """The message of a raised exception (``str(KeyError)`` adds quotes)."""
    return str(excinfo.value.args[0])


# ------------------------------------------------------------------- register_module
def test_register_module_as_a_decorator_registers_under_the_class_name(layers):
    @layers.register_module()
    class Block:
        pass

    assert layers.get('Block') is Block
    assert 'Block' in layers


def test_the_decorator_returns_the_class_unchanged(layers):
    class Block:
        pass

    assert layers.register_module()(Block) is Block


def test_register_module_as_a_call_with_module(layers):
    def make_block():
        return 'block'

    assert layers.register_module(module=make_block) is make_block
    assert layers.get('make_block') is make_block


def test_register_module_with_a_str_name_uses_that_name_only(layers):
    @layers.register_module(name='MyBlock')
    class Block:
        pass

    assert layers.get('MyBlock') is Block
    assert 'Block' not in layers


def test_register_module_with_a_list_of_names_registers_every_alias(layers):
    class Block:
        pass

    layers.register_module(name=['Block', 'BlockAlias'], module=Block)
    assert layers.get('Block') is Block and layers.get('BlockAlias') is Block
    assert len(layers) == 2


def test_registering_a_taken_name_raises_key_error_naming_it_and_the_fix(layers):
    @layers.register_module(name='Block')
    class First:
        pass

    class Second:
        pass

    with pytest.raises(KeyError) as exc:
        layers.register_module(name='Block', module=Second)
    assert "'Block'" in message(exc)
    assert 'layer registry' in message(exc)
    assert 'force=True' in message(exc)
    assert layers.get('Block') is First


def test_a_taken_alias_in_a_list_registers_none_of_the_names(layers):
    class First:
        pass

    class Second:
        pass

    layers.register_module(name='B', module=First)
    with pytest.raises(KeyError, match="'B'"):
        layers.register_module(name=['A', 'B'], module=Second)
    assert 'A' not in layers
    assert layers.get('B') is First


def test_force_true_replaces_a_taken_name(layers):
    class First:
        pass

    class Second:
        pass

    layers.register_module(name='Block', module=First)
    layers.register_module(name='Block', force=True, module=Second)
    assert layers.get('Block') is Second
    assert len(layers) == 1


@pytest.mark.parametrize('name', [3, ('A', 'B'), ['A', 4]])
def test_a_name_that_is_not_a_str_or_list_of_str_raises_type_error(layers, name):
    with pytest.raises(TypeError, match='name must be'):
        layers.register_module(name=name)


def test_force_must_be_a_bool(layers):
    with pytest.raises(TypeError, match='force must be a bool'):
        layers.register_module(force='yes')


def test_only_classes_and_functions_can_be_registered(layers):
    with pytest.raises(TypeError, match='layer registry') as exc:
        layers.register_module(name='x', module=42)
    assert '42' in str(exc.value)


# --------------------------------------------------------------------- build, build_from_cfg
def test_build_makes_an_object_from_a_registered_type_name(filled):
    conv = filled.build(dict(type='Conv', in_channels=3, out_channels=16))
    assert type(conv) is filled.get('Conv')
    assert (conv.in_channels, conv.out_channels, conv.bias) == (3, 16, True)


def test_build_from_cfg_is_what_build_calls(filled):
    conv = build_from_cfg(dict(type='Conv', in_channels=3), filled)
    assert type(conv) is filled.get('Conv')
    assert conv.out_channels == 8


def test_a_class_can_be_given_as_the_type(layers):
    class Unregistered:
        def __init__(self, x):
            self.x = x

    obj = layers.build(dict(type=Unregistered, x=5))
    assert isinstance(obj, Unregistered) and obj.x == 5


def test_a_function_can_be_registered_and_built(layers):
    @layers.register_module()
    def make_pair(a, b=2):
        return (a, b)

    assert layers.build(dict(type='make_pair', a=1)) == (1, 2)


def test_default_args_fill_in_what_the_cfg_leaves_out(filled):
    conv = build_from_cfg(dict(type='Conv', in_channels=3), filled,
                          default_args=dict(out_channels=32, bias=False))
    assert (conv.in_channels, conv.out_channels, conv.bias) == (3, 32, False)


def test_the_cfg_wins_over_default_args(filled):
    conv = filled.build(dict(type='Conv', in_channels=3, out_channels=16),
                        default_args=dict(in_channels=1, out_channels=32))
    assert (conv.in_channels, conv.out_channels) == (3, 16)


def test_default_args_may_supply_the_type(filled):
    conv = build_from_cfg(dict(in_channels=3), filled, default_args=dict(type='Conv'))
    assert type(conv) is filled.get('Conv')


def test_build_does_not_modify_the_cfg_or_default_args(filled):
    cfg = dict(type='Conv', in_channels=3)
    defaults = dict(out_channels=4)
    filled.build(cfg, default_args=defaults)
    assert cfg == dict(type='Conv', in_channels=3)
    assert defaults == dict(out_channels=4)


@pytest.mark.parametrize('cfg', [['Conv'], 'Conv', None])
def test_a_cfg_that_is_not_a_dict_raises_type_error(filled, cfg):
    with pytest.raises(TypeError, match='must be a dict') as exc:
        filled.build(cfg)
    assert type(cfg).__name__ in str(exc.value)


def test_a_cfg_without_type_raises_key_error_naming_the_key(filled):
    with pytest.raises(KeyError) as exc:
        filled.build(dict(in_channels=3))
    assert '"type"' in message(exc)
    assert 'in_channels' in message(exc)


def test_an_unknown_type_raises_key_error_naming_registry_name_and_close_matches(filled):
    with pytest.raises(KeyError) as exc:
        filled.build(dict(type='Kaming'))
    msg = message(exc)
    assert "'Kaming'" in msg
    assert 'layer registry' in msg
    assert "Did you mean 'Kaiming'?" in msg
    assert 'Registered: Conv, Kaiming.' in msg


def test_an_unknown_type_with_no_close_match_still_lists_what_is_registered(filled):
    with pytest.raises(KeyError) as exc:
        filled.build(dict(type='Transformer'))
    assert 'Did you mean' not in message(exc)
    assert 'Registered: Conv, Kaiming.' in message(exc)


def test_a_miss_in_an_empty_registry_says_nothing_is_registered(layers):
    with pytest.raises(KeyError) as exc:
        layers.build(dict(type='Conv'))
    assert 'nothing yet' in message(exc)


def test_a_type_that_is_neither_str_nor_callable_raises_type_error(filled):
    with pytest.raises(TypeError, match='"type"') as exc:
        filled.build(dict(type=3))
    assert 'int' in str(exc.value)


def test_an_unexpected_argument_names_the_accepted_arguments(filled):
    with pytest.raises(TypeError) as exc:
        filled.build(dict(type='Conv', in_channels=3, kernel_size=3))
    msg = str(exc.value)
    assert 'Conv' in msg and 'kernel_size' in msg
    assert 'Accepted arguments: in_channels, out_channels, bias.' in msg


def test_a_missing_argument_names_the_accepted_arguments(filled):
    with pytest.raises(TypeError) as exc:
        filled.build(dict(type='Conv', out_channels=3))
    msg = str(exc.value)
    assert 'in_channels' in msg
    assert 'Accepted arguments: in_channels, out_channels, bias.' in msg


def test_errors_raised_inside_the_constructor_propagate_unchanged(layers):
    @layers.register_module()
    class Picky:
        def __init__(self, x):
            raise ValueError(f'bad x: {x}')

    with pytest.raises(ValueError, match='^bad x: 1$'):
        layers.build(dict(type='Picky', x=1))


def test_a_custom_build_func_is_used_by_build():
    calls = []

    def build_func(cfg, registry, *args, **kwargs):
        calls.append((cfg, registry, args, kwargs))
        return 'built'

    custom = Registry('custom', build_func=build_func)
    assert custom.build(dict(type='X'), 1, k=2) == 'built'
    assert calls == [(dict(type='X'), custom, (1,), dict(k=2))]


# --------------------------------------------------------------------- lookups and repr
def test_get_returns_the_registered_object(filled):
    assert filled.get('Conv').__name__ == 'Conv'


def test_get_of_an_unknown_name_raises_key_error_with_close_names(filled):
    with pytest.raises(KeyError) as exc:
        filled.get('conv')
    assert "Did you mean 'Conv'?" in message(exc)


def test_contains_and_len_count_registered_names(filled):
    assert 'Conv' in filled and 'Kaiming' in filled
    assert 'Linear' not in filled
    assert len(filled) == 2
    assert sorted(filled) == ['Conv', 'Kaiming']


def test_module_dict_is_a_copy(filled):
    names = filled.module_dict
    names.pop('Conv')
    assert 'Conv' in filled


def test_repr_names_the_registry_and_its_entries(filled, layers):
    assert repr(filled) == "Registry(name='layer', 2 items: Conv, Kaiming)"
    assert repr(Registry('hook')) == "Registry(name='hook', 0 items: (empty))"


# ------------------------------------------------------------------ the global registries
REGISTRY_NAMES = ['WEIGHT_INITIALIZERS', 'MODELS', 'OPTIMIZERS', 'OPTIM_WRAPPERS', 'METRICS',
                  'HOOKS', 'PARAM_SCHEDULERS', 'LOOPS']


@pytest.mark.parametrize('name', REGISTRY_NAMES)
def test_every_registry_of_the_spec_exists_and_is_exported(name):
    assert isinstance(getattr(reg, name), Registry)
    assert name in reg.__all__


def test_the_registries_are_distinct_and_have_distinct_names():
    registries = [getattr(reg, name) for name in REGISTRY_NAMES]
    assert len({id(r) for r in registries}) == len(registries)
    assert len({r.name for r in registries}) == len(registries)


def test_weight_initializers_holds_exactly_mmengines_eight_after_import_fengine():
    assert fengine.registry.WEIGHT_INITIALIZERS is reg.WEIGHT_INITIALIZERS
    assert set(reg.WEIGHT_INITIALIZERS) == {
        'Constant', 'Xavier', 'Normal', 'TruncNormal', 'Uniform', 'Kaiming', 'Caffe2Xavier',
        'Pretrained'
    }


# ======================================================================= the full API


@pytest.fixture
def tree():
    """A private tree: root (scope 'base') <- alpha, beta; alpha <- alpha_sub."""
    root = Registry('model', scope='base')
    alpha = Registry('model', parent=root, scope='alpha')
    beta = Registry('model', parent=root, scope='beta')
    alpha_sub = Registry('model', parent=alpha, scope='alphasub')

    @root.register_module()
    class Shared:
        pass

    @root.register_module(name='Twice')
    class RootTwice:
        pass

    @alpha.register_module(name='Twice')
    class AlphaTwice:
        pass

    @alpha.register_module()
    class AlphaOnly:
        pass

    @beta.register_module()
    class BetaOnly:
        pass

    @alpha_sub.register_module()
    class Deep:
        pass

    return dict(root=root, alpha=alpha, beta=beta, alpha_sub=alpha_sub)


# ------------------------------------------------------------------ arguments and properties
def test_a_registry_reports_its_name_scope_parent_children_and_root(tree):
    root, alpha, alpha_sub = tree['root'], tree['alpha'], tree['alpha_sub']
    assert (alpha.name, alpha.scope, alpha.parent) == ('model', 'alpha', root)
    assert root.children == {'alpha': alpha, 'beta': tree['beta']}
    assert alpha_sub.root is root and alpha_sub._get_root_registry() is root
    assert root.parent is None and root.root is root


def test_children_is_a_copy(tree):
    tree['root'].children.clear()
    assert 'alpha' in tree['root'].children


def test_a_registry_without_scope_or_locations_has_no_scope():
    assert Registry('layer').scope is None


def test_the_scope_defaults_to_the_top_package_of_the_first_location():
    registry = Registry('model', locations=['mmdet.models', 'other.models'])
    assert registry.scope == 'mmdet'
    assert Registry.infer_scope(['mmdet.models.detectors']) == 'mmdet'
    assert Registry.infer_scope([]) is None


def test_an_explicit_scope_wins_over_the_locations():
    assert Registry('model', scope='mine', locations=['mmdet.models']).scope == 'mine'


def test_creating_a_registry_with_locations_imports_nothing(tmp_packages):
    tmp_packages({'lazyproj/models.py': 'raise RuntimeError("imported too early")'})
    Registry('model', locations=['lazyproj.models'])
    assert 'lazyproj.models' not in sys.modules


@pytest.mark.parametrize('scope, error, words', [
    (3, TypeError, 'must be a str or None'),
    ('', ValueError, 'non-empty name'),
    ('my.proj', ValueError, "without '.'"),
])
def test_a_bad_scope_is_refused_by_name(scope, error, words):
    with pytest.raises(error, match=words) as exc:
        Registry('model', scope=scope)
    assert 'model registry' in str(exc.value)


@pytest.mark.parametrize('locations', ['mmdet.models', ['mmdet.models', 3], 5])
def test_locations_must_be_a_list_of_module_names(locations):
    with pytest.raises(TypeError, match='locations of the model registry') as exc:
        Registry('model', locations=locations)
    assert repr(locations) in str(exc.value)


def test_the_parent_must_be_a_registry():
    with pytest.raises(TypeError, match='parent of the model registry must be a Registry'):
        Registry('model', parent='MODELS')


def test_the_build_func_must_be_callable():
    with pytest.raises(TypeError, match='build_func of the model registry must be callable'):
        Registry('model', build_func='build')


def test_two_children_of_one_parent_cannot_share_a_scope(tree):
    with pytest.raises(ValueError, match="already has a child of scope 'alpha'") as exc:
        Registry('model', parent=tree['root'], scope='alpha')
    assert 'another scope' in str(exc.value)
    assert tree['root'].children['alpha'] is tree['alpha']


def test_a_child_inherits_its_parents_build_func_unless_given_one():
    def build_func(cfg, registry, *args, **kwargs):
        return ('built by parent', registry.name)

    parent = Registry('parent', build_func=build_func)
    child = Registry('child', parent=parent, scope='c')
    own = Registry('own', parent=parent, scope='o', build_func=build_from_cfg)
    assert child.build(dict(type='X')) == ('built by parent', 'child')
    assert own.build_func is build_from_cfg


def test_repr_shows_the_scope_when_there_is_one(tree):
    assert repr(tree['beta']) == "Registry(name='model', scope='beta', 1 items: BetaOnly)"


# ------------------------------------------------------------------ lookups in a tree
def test_split_scope_key_splits_at_the_first_dot():
    assert Registry.split_scope_key('mmdet.ResNet') == ('mmdet', 'ResNet')
    assert Registry.split_scope_key('mmdet.models.ResNet') == ('mmdet', 'models.ResNet')
    assert Registry.split_scope_key('ResNet') == (None, 'ResNet')


def test_a_child_finds_its_own_names_first_then_its_parents(tree):
    alpha = tree['alpha']
    assert alpha.get('Twice').__name__ == 'AlphaTwice'
    assert alpha.get('Shared') is tree['root'].get('Shared')
    assert tree['alpha_sub'].get('Shared') is tree['root'].get('Shared')
    assert tree['alpha_sub'].get('AlphaOnly') is alpha.get('AlphaOnly')


def test_a_parent_does_not_find_its_childrens_names(tree):
    with pytest.raises(KeyError):
        tree['root'].get('AlphaOnly')


def test_a_scope_prefix_reaches_the_registry_of_that_scope_anywhere_in_the_tree(tree):
    beta = tree['beta']
    assert beta.get('alpha.AlphaOnly') is tree['alpha'].get('AlphaOnly')
    assert beta.get('alphasub.Deep') is tree['alpha_sub'].get('Deep')
    assert tree['alpha_sub'].get('beta.BetaOnly') is beta.get('BetaOnly')


def test_a_scope_prefix_picks_the_ancestors_entry_over_the_childs(tree):
    assert tree['alpha'].get('base.Twice').__name__ == 'RootTwice'
    assert tree['alpha'].get('alpha.Twice').__name__ == 'AlphaTwice'


def test_a_scoped_name_also_falls_back_to_the_parents_of_that_scope(tree):
    assert tree['beta'].get('alpha.Shared') is tree['root'].get('Shared')


def test_contains_follows_the_same_search_as_get(tree):
    alpha = tree['alpha']
    assert 'Shared' in alpha and 'beta.BetaOnly' in alpha and 'torch.nn.ReLU' in alpha
    assert 'BetaOnly' not in alpha and 'Nothing' not in alpha and 3 not in alpha


def test_len_iter_and_module_dict_cover_the_registrys_own_entries(tree):
    alpha = tree['alpha']
    assert len(alpha) == 2
    assert sorted(alpha) == ['AlphaOnly', 'Twice']
    assert sorted(alpha.module_dict) == ['AlphaOnly', 'Twice']


def test_a_dotted_import_path_is_found_when_no_scope_matches(tree):
    assert tree['root'].get('torch.nn.ReLU') is nn.ReLU
    assert tree['root'].build(dict(type='torch.nn.Linear', in_features=2,
                                   out_features=3)).out_features == 3


def test_a_dotted_path_under_mmengine_names_fengines_object():
    from fengine.model import BaseModel
    assert reg.MODELS.get('mmengine.model.BaseModel') is BaseModel
    assert reg.MODELS.get('fengine.model.BaseModel') is BaseModel


def test_the_root_scope_is_fengine_and_mmengine_names_it_too(fresh_registries):
    @reg.MODELS.register_module()
    class _RootOnlyNet(nn.Module):
        pass

    child = Registry('model', parent=reg.MODELS, scope='someproj')
    assert reg.MODELS.scope == 'fengine'
    assert all(getattr(reg, n).scope == 'fengine' for n in reg.root.__all__)
    assert child.get('fengine._RootOnlyNet') is _RootOnlyNet
    assert child.get('mmengine._RootOnlyNet') is _RootOnlyNet


def test_get_needs_a_str():
    with pytest.raises(TypeError, match='layer registry key must be a str') as exc:
        Registry('layer').get(nn.ReLU)
    assert 'type' in str(exc.value)


# ------------------------------------------------------------------ helpful misses
def test_a_miss_in_a_tree_names_every_registry_searched(tree):
    with pytest.raises(KeyError) as exc:
        tree['alpha'].get('Nowhere')
    msg = message(exc)
    assert ("'Nowhere' is not in the model registry (scope 'alpha'), nor in the model "
            "registry (scope 'base').") in msg
    assert "Registered: AlphaOnly, Twice (scope 'alpha'); Shared, Twice (scope 'base')." in msg


def test_a_registry_alone_is_named_without_its_scope_and_one_in_a_tree_with_it(tree):
    alone = Registry('layer', scope='solo')
    with pytest.raises(KeyError) as exc:
        alone.get('Nothing')
    assert message(exc).startswith("'Nothing' is not in the layer registry. ")
    with pytest.raises(KeyError) as exc:
        tree['beta'].get('Nothing')
    assert message(exc).startswith("'Nothing' is not in the model registry (scope 'beta'), ")


def test_a_miss_says_in_which_other_scope_the_name_is_registered(tree):
    with pytest.raises(KeyError) as exc:
        tree['beta'].get('AlphaOnly')
    msg = message(exc)
    assert "registered in the model registry (scope 'alpha')" in msg
    assert "type='alpha.AlphaOnly'" in msg and "init_default_scope('alpha')" in msg


def test_a_miss_suggests_close_names_of_other_scopes_with_their_prefix(tree):
    with pytest.raises(KeyError) as exc:
        tree['beta'].get('AlphaOnyl')
    assert "Did you mean 'alpha.AlphaOnly'?" in message(exc)


def test_a_miss_with_an_unknown_scope_names_the_scopes_of_the_tree(tree):
    with pytest.raises(KeyError) as exc:
        tree['alpha'].get('gamma.Net')
    msg = message(exc)
    assert "no registry of scope 'gamma'" in msg
    assert "'base', 'alpha', 'alphasub', 'beta'" in msg
    assert 'not an importable dotted path' in msg


def test_a_miss_points_to_a_child_without_scope_that_holds_the_name():
    root = Registry('model', scope='base')
    loose = Registry('model', parent=root)

    @loose.register_module()
    class Hidden:
        pass

    assert root.children == {}
    assert loose.get('Hidden') is Hidden
    with pytest.raises(KeyError) as exc:
        root.get('Hidden')
    assert 'registry without a scope' in message(exc)
    assert 'Registry(..., scope=...)' in message(exc)


# ------------------------------------------------------------------ locations
def test_locations_are_imported_on_the_first_lookup_and_register_their_classes(tmp_packages):
    tmp_packages({
        'locproj/registry.py': """
            from fengine.registry import Registry
            LAYERS = Registry('layer', locations=['locproj.layers'])
        """,
        'locproj/layers.py': """
            from locproj.registry import LAYERS

            @LAYERS.register_module()
            class Tanh:
                pass
        """,
    })
    from locproj.registry import LAYERS
    assert LAYERS.scope == 'locproj'
    assert 'locproj.layers' not in sys.modules and len(LAYERS) == 0
    assert LAYERS.build(dict(type='Tanh')).__class__.__name__ == 'Tanh'
    assert 'locproj.layers' in sys.modules


def test_a_missing_location_is_an_error_naming_the_registry_and_location():
    registry = Registry('layer', scope='ghost', locations=['ghostproj_404.layers'])
    with pytest.raises(ModuleNotFoundError) as exc:
        registry.get('Tanh')
    msg = str(exc.value)
    assert "the layer registry cannot import its location 'ghostproj_404.layers'" in msg


def test_an_error_inside_a_location_propagates_with_a_note_naming_it(tmp_packages):
    tmp_packages({'brokenproj/layers.py': "raise ValueError('bad layer file')"})
    registry = Registry('layer', locations=['brokenproj.layers'])
    with pytest.raises(ValueError, match='bad layer file') as exc:
        registry.get('Tanh')
    assert any("'brokenproj.layers'" in note for note in exc.value.__notes__)


def test_locations_are_imported_once(tmp_packages):
    tmp_packages({'onceproj/layers.py': """
        import builtins
        builtins.onceproj_imports = getattr(builtins, 'onceproj_imports', 0) + 1
    """})
    import builtins
    registry = Registry('layer', locations=['onceproj.layers'])
    registry.register_module(name='A', module=dict)
    registry.get('A')
    del sys.modules['onceproj.layers']
    registry.get('A')
    assert builtins.onceproj_imports == 1
    del builtins.onceproj_imports


def test_a_parents_locations_are_imported_when_the_search_reaches_it(tmp_packages):
    tmp_packages({'parentproj/layers.py': """
        from fengine.registry import Registry
        PARENT = Registry('layer', locations=['parentproj.layers'])

        @PARENT.register_module()
        class FromParent:
            pass
    """})
    from parentproj.layers import PARENT
    PARENT._imported = False  # as if the layers module had not run yet
    child = Registry('layer', parent=PARENT, scope='kid')
    assert child.get('FromParent').__name__ == 'FromParent'
    assert PARENT._imported


# ------------------------------------------------------------------ default scope
def test_with_a_default_scope_a_root_builds_the_childs_names(tree, fresh_registries):
    root = tree['root']
    with pytest.raises(KeyError):
        root.get('AlphaOnly')
    init_default_scope('alpha')
    assert root.get('AlphaOnly').__name__ == 'AlphaOnly'
    assert root.build(dict(type='Twice')).__class__.__name__ == 'AlphaTwice'


def test_the_default_scope_falls_back_to_the_registrys_own_search(tree, fresh_registries):
    init_default_scope('beta')
    assert tree['alpha'].get('AlphaOnly').__name__ == 'AlphaOnly'
    assert tree['alpha'].get('BetaOnly').__name__ == 'BetaOnly'


def test_a_default_scope_the_tree_lacks_is_named_in_a_miss(tree, fresh_registries):
    init_default_scope('nosuchscope')
    assert tree['alpha'].get('AlphaOnly').__name__ == 'AlphaOnly'
    with pytest.raises(KeyError) as exc:
        tree['alpha'].get('Nothing')
    assert "default scope 'nosuchscope' has no model registry in this tree" in message(exc)


def test_scope_in_the_config_builds_in_that_scope_and_restores_the_default(tree,
                                                                          fresh_registries):
    init_default_scope('beta')
    built = tree['root'].build(dict(type='Twice', _scope_='alpha'))
    assert type(built).__name__ == 'AlphaTwice'
    assert DefaultScope.get_current_instance().scope_name == 'beta'


def test_switch_scope_and_registry_yields_the_registry_of_the_scope(tree, fresh_registries):
    init_default_scope('base')
    with tree['beta'].switch_scope_and_registry('alphasub') as registry:
        assert registry is tree['alpha_sub']
        assert DefaultScope.get_current_instance().scope_name == 'alphasub'
        with tree['beta'].switch_scope_and_registry('alpha') as inner:
            assert inner is tree['alpha']
        assert DefaultScope.get_current_instance().scope_name == 'alphasub'
    assert DefaultScope.get_current_instance().scope_name == 'base'
    with tree['beta'].switch_scope_and_registry(None) as registry:
        assert registry is tree['root']


def test_switching_to_a_scope_the_tree_lacks_warns_and_yields_the_registry_itself(
        tree, fresh_registries, fengine_log):
    with tree['beta'].switch_scope_and_registry('elsewhere') as registry:
        assert registry is tree['beta']
    warning, = fengine_log.messages(logging.WARNING)
    assert "scope 'elsewhere' has no registry" in warning


def test_a_scope_that_is_not_a_str_is_refused(tree):
    with pytest.raises(TypeError, match='_scope_'):
        tree['root'].build(dict(type='Shared', _scope_=3))


def project_files(package: str, model: str) -> dict[str, str]:
    """An OpenMMLab-style project: ``<package>/registry.py`` makes a child of MODELS whose
    scope comes from its location, ``<package>/models.py`` registers ``model`` there."""
    return {
        f'{package}/registry.py': f"""
            from fengine.registry import MODELS as FENGINE_MODELS, Registry
            MODELS = Registry('model', parent=FENGINE_MODELS, locations=['{package}.models'])
        """,
        f'{package}/models.py': f"""
            from torch import nn
            from {package}.registry import MODELS

            @MODELS.register_module()
            class {model}(nn.Module):
                pass
        """,
    }


def test_naming_a_scope_imports_its_registry_module(tmp_packages, fresh_registries):
    tmp_packages(project_files('gammaproj', 'GammaNet'))
    assert 'gammaproj' not in reg.MODELS.children
    assert type(reg.MODELS.build(dict(type='gammaproj.GammaNet'))).__name__ == 'GammaNet'
    assert reg.MODELS.children['gammaproj'].scope == 'gammaproj'


def test_a_default_scope_imports_its_registry_module(tmp_packages, fresh_registries):
    tmp_packages(project_files('deltaproj', 'DeltaNet'))
    init_default_scope('deltaproj')
    assert type(reg.MODELS.build(dict(type='DeltaNet'))).__name__ == 'DeltaNet'


def test_an_error_inside_a_scopes_registry_module_is_not_hidden(tmp_packages):
    tmp_packages({'badregproj/registry.py': 'import not_a_module_anywhere_404'})
    with pytest.raises(ModuleNotFoundError, match='not_a_module_anywhere_404'):
        Registry('layer').get('badregproj.Net')


# ------------------------------------------------------------------ init_default_scope
def test_init_default_scope_creates_the_scope_once(fresh_registries):
    init_default_scope('scope_a')
    first = DefaultScope.get_current_instance()
    init_default_scope('scope_a')
    assert DefaultScope.get_current_instance() is first
    assert first.instance_name == 'scope_a' and first.scope_name == 'scope_a'


def test_init_default_scope_makes_a_known_scope_current_again_with_a_warning(
        fresh_registries, fengine_log):
    init_default_scope('scope_a')
    init_default_scope('scope_b')
    init_default_scope('scope_a')
    assert DefaultScope.get_current_instance().scope_name == 'scope_a'
    warning, = fengine_log.messages(logging.WARNING)
    assert "'scope_b' is not 'scope_a'" in warning


def test_init_default_scope_needs_a_str():
    with pytest.raises(TypeError, match='init_default_scope takes a scope name'):
        init_default_scope(None)


# ------------------------------------------------------------------ fengine's built-ins
def test_a_user_registration_replaces_a_builtin_with_an_info_line(fresh_registries,
                                                                 fengine_log):
    from fengine.evaluator import BaseMetric
    builtin = reg.METRICS.get('Accuracy')
    assert builtin.__module__.startswith('fengine.')

    @reg.METRICS.register_module()
    class Accuracy(BaseMetric):
        default_prefix = 'acc'

        def process(self, data_batch, data_samples):
            pass

        def compute_metrics(self, results):
            return {}

    assert type(reg.METRICS.build(dict(type='Accuracy'))) is Accuracy
    info, = fengine_log.messages(logging.INFO)
    assert "'Accuracy' in the metric registry now names" in info
    assert "fengine's built-in fengine.evaluator.accuracy.Accuracy" in info
    assert not fengine_log.messages(logging.WARNING)


def test_a_second_user_registration_of_a_replaced_builtin_still_clashes(fresh_registries):
    class First:
        pass

    class Second:
        pass

    reg.METRICS.register_module(name='Accuracy', module=First)
    with pytest.raises(KeyError, match='force=True'):
        reg.METRICS.register_module(name='Accuracy', module=Second)
    reg.METRICS.register_module(name='Accuracy', module=Second, force=True)
    assert reg.METRICS.get('Accuracy') is Second


def test_a_builtin_registered_after_the_user_leaves_the_users_entry(layers):
    class Users:
        pass

    class Fengines:
        pass

    layers.register_module(name='Thing', module=Users)
    layers.register_builtin(Fengines, name='Thing')
    assert layers.get('Thing') is Users


def test_register_builtin_entries_give_way_to_a_user(layers):
    class Default:
        pass

    class Mine:
        pass

    assert layers.register_builtin(Default, name='SGD') is Default
    layers.register_module(name='SGD', module=Mine)
    assert layers.get('SGD') is Mine


def test_two_builtins_of_one_name_clash(layers):
    class A:
        pass

    class B:
        pass

    layers.register_builtin(A, name='X')
    with pytest.raises(KeyError, match="'X' is already registered"):
        layers.register_builtin(B, name='X')


def test_torchs_optimizers_registered_by_fengine_give_way_to_a_user(fresh_registries):
    class SGD:
        def __init__(self, params, lr):
            self.lr = lr

    reg.OPTIMIZERS.register_module(module=SGD)
    assert type(reg.OPTIMIZERS.build(dict(type='SGD', params=[], lr=0.1))) is SGD


def test_restoring_a_snapshot_of_the_entries_restores_which_are_builtin(layers):
    class Default:
        pass

    class Mine:
        pass

    class Yours:
        pass

    layers.register_builtin(Default, name='X')
    saved = dict(layers._module_dict)
    layers.register_module(name='X', module=Mine)
    layers._module_dict.clear()
    layers._module_dict.update(saved)
    layers.register_module(name='X', module=Yours)
    assert layers.get('X') is Yours


def test_every_entry_fengine_registers_is_a_builtin():
    """In a fresh interpreter, after importing every package that registers."""
    code = (
        'from fengine import registry\n'
        'registry.count_registered_modules(verbose=False)\n'
        'bad = [(n, k) for n in registry.root.__all__\n'
        '       for k, v in getattr(registry, n)._module_dict.items()\n'
        '       if getattr(registry, n)._builtins.get(k) is not v]\n'
        'print(bad)\n')
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True, cwd=root).stdout
    assert out.strip() == '[]'


def test_runners_holds_fengines_runner():
    from fengine.runner import Runner
    assert reg.RUNNERS.get('Runner') is Runner


# ------------------------------------------------------------------ build functions
class _ReadOnlyConfig(Mapping):
    """A mapping that is not a dict, as a Config is."""

    def __init__(self, **items):
        self._items = items

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


def test_build_from_cfg_takes_any_mapping(filled):
    conv = filled.build(_ReadOnlyConfig(type='Conv', in_channels=3),
                        default_args=_ReadOnlyConfig(out_channels=5))
    assert (conv.in_channels, conv.out_channels) == (3, 5)


def test_build_from_cfg_needs_a_registry():
    with pytest.raises(TypeError, match='registry must be a fengine Registry') as exc:
        build_from_cfg(dict(type='Conv'), 'MODELS')
    assert "'MODELS'" in str(exc.value)


def test_default_args_must_be_a_mapping(filled):
    with pytest.raises(TypeError, match='default_args must be a dict or None') as exc:
        filled.build(dict(type='Conv'), default_args=[('in_channels', 3)])
    assert 'list' in str(exc.value)


def test_a_missing_type_names_the_default_args_too(filled):
    with pytest.raises(KeyError) as exc:
        build_from_cfg(dict(in_channels=3), filled, default_args=dict(out_channels=2))
    assert '"type"' in message(exc) and "'out_channels': 2" in message(exc)


def test_a_manager_mixin_class_is_built_with_get_instance(layers):
    from fengine.utils import ManagerMixin

    @layers.register_module()
    class Board(ManagerMixin):
        def __init__(self, name, width=1):
            super().__init__(name)
            self.width = width

    board = layers.build(dict(type='Board', name='board-test', width=3))
    assert Board.get_instance('board-test') is board and board.width == 3
    Board._instance_dict.clear()


def test_a_manager_mixin_config_without_name_is_refused(layers):
    from fengine.utils import ManagerMixin

    @layers.register_module()
    class Board(ManagerMixin):
        def __init__(self, name='', width=1):
            super().__init__(name)

    with pytest.raises(TypeError, match="its config needs 'name'") as exc:
        layers.build(dict(type='Board', width=2))
    assert 'Board.get_instance(name)' in str(exc.value)


def test_build_model_from_cfg_builds_a_sequential_from_a_list():
    from fengine.model import Sequential
    blocks = Registry('block', build_func=build_model_from_cfg)
    blocks.register_module(module=nn.ReLU)
    blocks.register_module(module=nn.Identity)
    model = blocks.build([dict(type='ReLU'), dict(type='Identity')])
    assert isinstance(model, Sequential)
    assert [type(m) for m in model] == [nn.ReLU, nn.Identity]
    assert isinstance(blocks.build(dict(type='ReLU')), nn.ReLU)


def test_models_builds_a_list_of_configs_as_a_sequential(fresh_registries):
    model = reg.MODELS.build([dict(type='torch.nn.ReLU'), dict(type='torch.nn.Tanh')])
    assert [type(m) for m in model] == [nn.ReLU, nn.Tanh]


class _FakeRunner:
    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def from_cfg(cls, cfg):
        return cls(cfg)


def test_build_runner_from_cfg_calls_the_runner_types_from_cfg():
    runners = Registry('runner', build_func=build_runner_from_cfg)
    runners.register_module(name='Runner', module=_FakeRunner)

    class Custom(_FakeRunner):
        pass

    runners.register_module(module=Custom)
    default = runners.build(dict(work_dir='w'))
    assert type(default) is _FakeRunner and default.cfg == dict(work_dir='w')
    custom = runners.build(dict(runner_type='Custom', work_dir='w', _scope_=None))
    assert type(custom) is Custom and custom.cfg == dict(work_dir='w')
    assert type(runners.build(dict(runner_type=Custom))) is Custom


def test_build_runner_from_cfg_passes_a_config_without_those_keys_unchanged():
    runners = Registry('runner', build_func=build_runner_from_cfg)
    runners.register_module(name='Runner', module=_FakeRunner)
    cfg = _ReadOnlyConfig(work_dir='w')
    assert runners.build(cfg).cfg is cfg


def test_build_runner_from_cfg_refuses_a_class_without_from_cfg_and_bad_types():
    runners = Registry('runner', build_func=build_runner_from_cfg)
    with pytest.raises(TypeError, match='has no from_cfg'):
        runners.build(dict(runner_type=dict))
    with pytest.raises(TypeError, match='runner_type must be a registered name or a class'):
        runners.build(dict(runner_type=3))
    with pytest.raises(TypeError, match='runner config must be a dict'):
        runners.build([('runner_type', 'Runner')])
    with pytest.raises(KeyError, match="'Custom' is not in the runner registry"):
        runners.build(dict(runner_type='Custom'))


# ------------------------------------------------------------------ looking over the trees
def test_traverse_registry_tree_describes_each_registry_from_the_root(tree):
    infos = traverse_registry_tree(tree['alpha_sub'], verbose=False)
    assert [i['scope'] for i in infos] == ['base', 'alpha', 'alphasub', 'beta']
    assert [i['num_modules'] for i in infos] == [2, 2, 1, 1]
    folder = '/'.join(__name__.split('.')[:-1]) or __name__
    assert infos[1][folder] == ['Twice', 'AlphaOnly']


def test_traverse_registry_tree_logs_a_line_per_registry_when_verbose(tree, fengine_log):
    traverse_registry_tree(tree['root'])
    assert "Find 2 modules in base's 'model' registry" in fengine_log.messages()


def test_count_registered_modules_covers_every_root_and_writes_json(tmp_path):
    scan = count_registered_modules(save_path=tmp_path, verbose=False)
    assert set(scan['registries']) == set(reg.root.__all__)
    hooks = scan['registries']['HOOKS'][0]
    assert hooks['scope'] == 'fengine' and 'CheckpointHook' in hooks['fengine/hooks']
    written = json.loads((tmp_path / 'modules_statistic_results.json').read_text())
    assert written['registries']['HOOKS'][0]['num_modules'] == hooks['num_modules']


# ------------------------------------------------------------------ top-level names
def test_every_registry_name_is_importable_from_fengine_itself():
    for name in reg.__all__:
        assert getattr(fengine, name) is getattr(reg, name), name
        assert name in fengine.__all__, name


def test_fengine_exports_mmengines_utility_names_it_has():
    from fengine.logging import print_log
    from fengine.utils import ManagerMeta, ManagerMixin
    assert (fengine.ManagerMixin, fengine.ManagerMeta, fengine.print_log) == (
        ManagerMixin, ManagerMeta, print_log)
    assert fengine.version_info == tuple(int(p) for p in fengine.__version__.split('.'))


def test_a_key_may_name_scopes_down_the_tree_one_after_the_other(tree):
    deep = tree['alpha_sub'].get('Deep')
    assert tree['root'].get('alpha.alphasub.Deep') is deep
    assert tree['beta'].get('base.alpha.alphasub.Deep') is deep
    assert tree['alpha'].get('alphasub.Shared') is tree['root'].get('Shared')
    with pytest.raises(KeyError) as exc:
        tree['beta'].get('alpha.alphasub.Nowhere')
    assert "'alpha.alphasub.Nowhere' is not in the model registry (scope 'alphasub')" in \
        message(exc)


def test_a_dotted_path_is_not_taken_for_scopes_below_the_first(tmp_packages, tree):
    tmp_packages({'layers_pkg_registry_test/registry.py': 'raise RuntimeError("imported")'})
    with pytest.raises(KeyError):
        tree['root'].get('base.layers_pkg_registry_test.Conv')


def test_a_child_builds_its_own_names_while_a_runner_made_fengine_the_default_scope(
        fresh_registries):
    # Every Runner makes its default_scope ('fengine') current for the process.
    child = Registry('model', parent=reg.MODELS, scope='childproj')

    @child.register_module()
    class OnlyInChild:
        pass

    reg.DefaultScope.get_instance('a runner', scope_name='fengine')
    assert type(child.build(dict(type='OnlyInChild'))) is OnlyInChild
    assert child.get('OnlyInChild') is OnlyInChild
