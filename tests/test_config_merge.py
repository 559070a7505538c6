"""The ``_base_`` merge on its own: fengine.config.merge_into, a pure function over dicts."""
from __future__ import annotations

import copy

import pytest

from fengine.config import merge_into


def test_a_child_dict_is_merged_key_by_key_into_the_base_dict():
    base = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9), gpu_ids=[0, 1])
    merged = merge_into(dict(optimizer=dict(lr=0.01)), base)
    assert merged == dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9), gpu_ids=[0, 1])


def test_values_that_are_not_dicts_replace_the_base_value_whole():
    merged = merge_into(dict(gpu_ids=[0], name='b'), dict(gpu_ids=[0, 1], name='a'))
    assert merged == dict(gpu_ids=[0], name='b')


def test_delete_replaces_the_base_dict_and_never_reaches_the_result():
    base = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9))
    merged = merge_into(dict(optimizer=dict(_delete_=True, type='Adam', lr=0.01)), base)
    assert merged == dict(optimizer=dict(type='Adam', lr=0.01))
    # A _delete_ with nothing to replace (a new key, or deep inside one) is dropped too.
    merged = merge_into(dict(new=dict(_delete_=True, a=dict(_delete_=False, b=1))), {})
    assert merged == dict(new=dict(a=dict(b=1)))


def test_nested_dicts_merge_at_every_depth_and_keep_the_base_order():
    base = dict(model=dict(backbone=dict(depth=50, frozen=1), head=dict(n=10)))
    merged = merge_into(dict(model=dict(backbone=dict(depth=101), neck=1)), base)
    assert merged == dict(model=dict(backbone=dict(depth=101, frozen=1), head=dict(n=10),
                                     neck=1))
    assert list(merged['model']) == ['backbone', 'head', 'neck']


def test_neither_argument_is_modified_and_the_result_shares_no_container():
    child = dict(a=dict(_delete_=True, x=[1]), b=dict(y=2))
    base = dict(a=dict(z=3), b=dict(y=1, w=[4]))
    before = copy.deepcopy((child, base))
    merged = merge_into(child, base)
    assert (child, base) == before
    merged['b']['w'].append(5)
    merged['a']['x'].append(6)
    assert (child, base) == before


def test_a_dict_over_a_base_value_that_is_not_a_dict_names_the_key_and_the_way_out():
    with pytest.raises(TypeError, match=r"model\.backbone: the config gives a dict .* base "
                                        r"value is a str .*_delete_=True"):
        merge_into(dict(model=dict(backbone=dict(depth=50))), dict(model=dict(backbone='r50')))


def test_delete_must_be_a_bool():
    with pytest.raises(TypeError, match=r"opt: _delete_ must be True or False, but got 'yes'"):
        merge_into(dict(opt=dict(_delete_='yes')), dict(opt=dict(lr=1)))


def test_digit_keys_index_base_lists_only_when_allowed():
    base = dict(pipeline=[dict(type='Load'), dict(type='Flip', p=0.5)])
    merged = merge_into({'pipeline': {'1': dict(p=0.1)}}, base, allow_list_keys=True)
    assert merged == dict(pipeline=[dict(type='Load'), dict(type='Flip', p=0.1)])
    merged = merge_into({'pipeline': {'0': 'Other'}}, base, allow_list_keys=True)
    assert merged['pipeline'][0] == 'Other'
    with pytest.raises(TypeError, match='pipeline: the config gives a dict'):
        merge_into({'pipeline': {'1': dict(p=0.1)}}, base)


def test_an_index_past_the_end_or_a_word_on_a_list_is_refused_by_name():
    base = dict(pipeline=[dict(type='Load')])
    with pytest.raises(IndexError, match=r'pipeline\.3: index 3 is past the end of the base '
                                         r'list \(length 1\)'):
        merge_into({'pipeline': {'3': dict(p=1)}}, base, allow_list_keys=True)
    with pytest.raises(TypeError, match=r"pipeline\.first: .* keys must be indices"):
        merge_into({'pipeline': {'first': dict(p=1)}}, base, allow_list_keys=True)
