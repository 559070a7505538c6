"""ConcatDataset, RepeatDataset, ClassBalancedDataset: indices, meta information, lazy init."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from fengine.dataset import BaseDataset, ClassBalancedDataset, ConcatDataset, RepeatDataset
from fengine.registry import DATASETS


class LabelledDataset(BaseDataset):
    """Samples from an annotation file; categories from ``cats`` of each raw entry."""

    METAINFO = dict(classes=('a', 'b', 'c'))

    def get_cat_ids(self, idx):
        return self.get_data_info(idx)['cats']


def write(path: Path, cats: list[list[int]], metainfo: dict | None = None) -> str:
    data_list = [dict(name=f'{path.stem}_{i}', cats=c) for i, c in enumerate(cats)]
    path.write_text(json.dumps(dict(metainfo=metainfo or {}, data_list=data_list)))
    return str(path)


def dataset(path: Path, cats: list[list[int]], **kwargs) -> LabelledDataset:
    return LabelledDataset(ann_file=write(path, cats), data_prefix={}, **kwargs)


@pytest.fixture
def two(tmp_path):
    return (dataset(tmp_path / 'a.json', [[0], [1], [2]]),
            dataset(tmp_path / 'b.json', [[1], [1]]))


@pytest.fixture
def registered():
    DATASETS.register_module(name='TestLabelledDataset', module=LabelledDataset)
    yield 'TestLabelledDataset'
    DATASETS._module_dict.pop('TestLabelledDataset')


# -- ConcatDataset -----------------------------------------------------------------------------
def test_concat_indexes_the_datasets_one_after_the_other(two):
    concat = ConcatDataset(two)

    assert len(concat) == 5 and isinstance(concat, torch.utils.data.ConcatDataset)
    assert [concat[i]['name'] for i in range(5)] == ['a_0', 'a_1', 'a_2', 'b_0', 'b_1']
    assert concat[-1]['name'] == 'b_1' and concat.get_data_info(3)['sample_idx'] == 0
    assert concat.metainfo == dict(classes=('a', 'b', 'c'))
    with pytest.raises(IndexError, match='index 5 is out of range for ConcatDataset of length 5'):
        concat[5]
    with pytest.raises(IndexError, match='index -6 is out of range'):
        concat.get_data_info(-6)


def test_concat_builds_configs_and_accepts_plain_torch_datasets(tmp_path, registered):
    path = write(tmp_path / 'c.json', [[0]])
    plain = TensorDataset(torch.arange(2))

    concat = ConcatDataset([dict(type=registered, ann_file=path, data_prefix={}), plain],
                           ignore_keys='classes')

    assert len(concat) == 3 and concat[0]['name'] == 'c_0'
    assert concat[2][0].item() == 1 and concat.metainfo == dict(classes=('a', 'b', 'c'))


def test_concat_needs_matching_metainfo_unless_ignored(tmp_path):
    first = dataset(tmp_path / 'a.json', [[0]], metainfo=dict(version=1))
    other = dataset(tmp_path / 'b.json', [[0]], metainfo=dict(version=2))
    typed = dataset(tmp_path / 'c.json', [[0]], metainfo=dict(version='1'))
    lacking = dataset(tmp_path / 'd.json', [[0]])
    arrays = [dataset(tmp_path / f'e{i}.json', [[0]], metainfo=dict(palette=np.ones(2)))
              for i in range(2)]

    with pytest.raises(ValueError, match=r"meta information 'version' of dataset 1 \(2\) "
                                         r"differs from dataset 0's \(1\); list it in ignore_keys"):
        ConcatDataset([first, other])
    with pytest.raises(TypeError, match=r"'version' is a str in dataset 1 but a int in dataset 0"):
        ConcatDataset([first, typed])
    with pytest.raises(ValueError, match=r"dataset 1 has no meta information 'version'"):
        ConcatDataset([first, lacking])
    assert ConcatDataset([first, other], ignore_keys=['version']).metainfo['version'] == 1
    assert len(ConcatDataset(arrays)) == 2


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(datasets=[]), ValueError, 'ConcatDataset needs at least one dataset, but got none'),
    (dict(datasets=[3]), TypeError, r'ConcatDataset wraps datasets \(a BaseDataset, another '
                                    r'dataset or a DATASETS config dict\), but got int: 3'),
    (dict(datasets=[TensorDataset(torch.ones(1))], ignore_keys=('a',)), TypeError,
     r"ignore_keys must be a str or a list of str, but got tuple: \('a',\)"),
])
def test_concat_refuses_bad_arguments_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        ConcatDataset(**kwargs)


def test_concat_lazy_init_defers_the_datasets_until_first_use(tmp_path, fengine_log):
    lazy = dataset(tmp_path / 'a.json', [[0], [1]], lazy_init=True)

    concat = ConcatDataset([lazy], lazy_init=True)
    assert not lazy._fully_initialized and not concat._fully_initialized

    assert concat[1]['name'] == 'a_1' and lazy._fully_initialized and len(concat) == 2
    assert fengine_log.messages(logging.WARNING) == [
        'ConcatDataset is indexed before full_init(): it initializes its datasets now; call '
        'full_init() first to control when.']


def test_wrappers_have_no_subsets(two):
    wrappers = [ConcatDataset(two), RepeatDataset(two[0], times=2),
                ClassBalancedDataset(two[0], oversample_thr=0.5)]

    for wrapper in wrappers:
        name = type(wrapper).__name__
        for method in (wrapper.get_subset, wrapper.get_subset_):
            with pytest.raises(NotImplementedError, match=f'{name} has no get_subset/get_subset_: '
                                                          'a subset of a wrapper is ambiguous'):
                method(1)


# -- RepeatDataset -----------------------------------------------------------------------------
def test_repeat_cycles_through_the_dataset(two, registered, tmp_path):
    repeat = RepeatDataset(two[0], times=3)
    from_cfg = RepeatDataset(dict(type=registered, ann_file=write(tmp_path / 'r.json', [[0]]),
                                  data_prefix={}), times=2)

    assert len(repeat) == 9 and [repeat[i]['name'] for i in (0, 3, 8)] == ['a_0', 'a_0', 'a_2']
    assert repeat.get_data_info(4)['name'] == 'a_1' and repeat.metainfo == two[0].metainfo
    assert len(from_cfg) == 2
    with pytest.raises(IndexError, match='index 9 is out of range for RepeatDataset of length 9'):
        repeat[9]


@pytest.mark.parametrize('times, error', [(0, ValueError), (1.5, TypeError)])
def test_repeat_times_must_be_a_positive_int(two, times, error):
    with pytest.raises(error, match=f'RepeatDataset times must be'):
        RepeatDataset(two[0], times=times)


def test_repeat_lazy_init_keeps_the_metainfo_known_at_construction(tmp_path):
    path = write(tmp_path / 'm.json', [[0]], metainfo=dict(from_file=True))
    lazy = LabelledDataset(ann_file=path, data_prefix={}, lazy_init=True)

    repeat = RepeatDataset(lazy, times=2, lazy_init=True)
    repeat.full_init()

    assert 'from_file' not in repeat.metainfo and lazy.metainfo['from_file'] is True
    assert len(repeat) == 2


# -- ClassBalancedDataset ----------------------------------------------------------------------
def test_class_balanced_repeats_samples_of_rare_categories(tmp_path):
    cats = [[0], [0], [0], [0], [0], [0], [0], [1], [0, 2], []]
    source = dataset(tmp_path / 'c.json', cats)

    balanced = ClassBalancedDataset(source, oversample_thr=0.5)

    # f(0) = 0.8, f(1) = f(2) = 0.1: r = max(1, sqrt(0.5 / f)); a sample repeats ceil(max r).
    repeats = [1] * 7 + [math.ceil(math.sqrt(5))] * 2 + [1]
    assert len(balanced) == sum(repeats)
    expected = [i for i, r in enumerate(repeats) for _ in range(r)]
    assert [balanced.get_data_info(i)['sample_idx'] for i in range(len(balanced))] == expected
    assert balanced.get_cat_ids(7) == [1] and balanced[len(balanced) - 1]['cats'] == []


def test_class_balanced_with_a_low_threshold_repeats_nothing(two):
    balanced = ClassBalancedDataset(two[0], oversample_thr=1e-3)

    assert len(balanced) == 3 and balanced.metainfo == two[0].metainfo


def test_class_balanced_needs_get_cat_ids_and_a_numeric_threshold(two):
    with pytest.raises(TypeError, match='needs a dataset with get_cat_ids'):
        ClassBalancedDataset(TensorDataset(torch.ones(2)), oversample_thr=0.1)
    with pytest.raises(TypeError, match="oversample_thr must be a number, but got str: '0.1'"):
        ClassBalancedDataset(two[0], oversample_thr='0.1')


def test_class_balanced_lazy_init_computes_repeat_factors_at_first_use(tmp_path):
    lazy = dataset(tmp_path / 'l.json', [[0], [0], [0], [1]], lazy_init=True)

    balanced = ClassBalancedDataset(lazy, oversample_thr=0.5, lazy_init=True)
    assert not hasattr(balanced, 'repeat_indices')

    assert len(balanced) == 5 and lazy._fully_initialized
