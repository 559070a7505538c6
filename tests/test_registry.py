"""Spec for :mod:`fengine.registry`.

Test classes are registered on fresh ``Registry`` objects made in fixtures, never
on the global registries.
"""
from __future__ import annotations

import pytest

import fengine
from fengine import registry as reg
from fengine.registry import Registry, build_from_cfg


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
