"""fengine.dataset: BaseDataset and its annotation files, Compose, samplers, collate functions."""
from __future__ import annotations

import collections
import functools
import itertools
import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import fengine.dataset.sampler as sampler_module
from fengine.dataset import (COLLATE_FUNCTIONS, BaseDataset, Compose, DefaultSampler,
                             InfiniteSampler, default_collate, force_full_init,
                             load_annotation_file, pseudo_collate, worker_init_fn)
from fengine.registry import DATA_SAMPLERS, DATASETS, FUNCTIONS, TRANSFORMS
from fengine.runner import build_dataloader
from fengine.structures import BaseDataElement, InstanceData

Point = collections.namedtuple('Point', ['x', 'y'])


@pytest.fixture
def register():
    """Register objects for one test; they are removed after it."""
    added = []

    def _register(registry, obj, name=None):
        registry.register_module(name=name, module=obj)
        added.append((registry, name or obj.__name__))
        return obj

    yield _register
    for registry, name in added:
        registry._module_dict.pop(name, None)


def write_annotations(path: Path, n: int = 4, metainfo: dict | None = None) -> Path:
    data_list = [dict(img_path=f'img_{i}.jpg', img_label=i % 2) for i in range(n)]
    path.write_text(json.dumps(dict(metainfo=metainfo or dict(classes=['cat', 'dog']),
                                    data_list=data_list)))
    return path


class ToyDataset(BaseDataset):
    METAINFO = dict(task='toy', classes=('bird',))


@pytest.fixture
def ann_file(tmp_path) -> Path:
    (tmp_path / 'annotations').mkdir()
    return write_annotations(tmp_path / 'annotations' / 'train.json',
                             metainfo=dict(classes=['cat', 'dog'], source='file', task='f'))


# -- loading -------------------------------------------------------------------------------
def test_samples_are_read_from_the_annotation_file_with_paths_joined(ann_file, tmp_path):
    dataset = BaseDataset(ann_file='annotations/train.json', data_root=str(tmp_path),
                          data_prefix=dict(img_path='train/'))

    assert len(dataset) == 4 and dataset.ann_file == str(ann_file)
    assert dataset.get_data_info(1) == dict(img_path=os.path.join(tmp_path, 'train/', 'img_1.jpg'),
                                            img_label=1, sample_idx=1)
    assert dataset[1] == dataset.get_data_info(1)  # no pipeline: the data info itself


def test_metainfo_priority_is_argument_then_class_attribute_then_file(ann_file):
    dataset = ToyDataset(ann_file=str(ann_file), metainfo=dict(classes=('x', 'y')))

    assert dataset.metainfo == dict(task='toy', classes=('x', 'y'), source='file')
    dataset.metainfo['task'] = 'changed'
    assert dataset.metainfo['task'] == 'toy', 'metainfo is a copy'
    assert ToyDataset.METAINFO == dict(task='toy', classes=('bird',))


def test_a_metainfo_value_naming_a_file_is_read_as_its_lines(ann_file, tmp_path):
    (tmp_path / 'classes.txt').write_text('cat\ndog\n')

    dataset = BaseDataset(ann_file=str(ann_file), metainfo=dict(
        classes=str(tmp_path / 'classes.txt'), name='not/a/file.txt'))

    assert dataset.metainfo['classes'] == ['cat', 'dog']
    assert dataset.metainfo['name'] == 'not/a/file.txt'


def test_absolute_paths_are_not_joined_to_the_data_root(ann_file, tmp_path):
    dataset = BaseDataset(ann_file=str(ann_file), data_root='elsewhere',
                          data_prefix=dict(img_path='/abs/imgs'))

    assert dataset.ann_file == str(ann_file)
    assert dataset.get_data_info(0)['img_path'] == '/abs/imgs/img_0.jpg'


def test_without_a_data_prefix_entry_the_path_key_is_required(tmp_path):
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(dict(metainfo={}, data_list=[dict(file='x.png')])))

    with pytest.raises(KeyError, match=r"data_prefix has the key 'img_path', but the sample "
                                       r".* has no 'img_path'; its keys are \['file'\]"):
        BaseDataset(ann_file=str(path))
    assert BaseDataset(ann_file=str(path), data_prefix={})[0] == dict(file='x.png', sample_idx=0)


def test_parse_data_info_may_return_several_samples_per_raw_entry(ann_file):

    class Clips(BaseDataset):
        def parse_data_info(self, raw):
            return [dict(raw, frame=f) for f in range(3)]

    dataset = Clips(ann_file=str(ann_file))

    assert len(dataset) == 12 and dataset.get_data_info(5)['frame'] == 2


def test_parse_data_info_of_another_type_is_refused(ann_file):

    class Bad(BaseDataset):
        def parse_data_info(self, raw):
            return 'x'

    with pytest.raises(TypeError, match=r"Bad.parse_data_info must return a dict or a list "
                                        r"of dicts, but returned 'x'"):
        Bad(ann_file=str(ann_file))


def test_filter_data_sees_the_loaded_list_and_the_filter_config(ann_file):

    class Labelled(BaseDataset):
        def filter_data(self):
            wanted = self.filter_cfg['label']
            return [info for info in self.data_list if info['img_label'] == wanted]

    dataset = Labelled(ann_file=str(ann_file), filter_cfg=dict(label=1))

    assert [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))] == [
        'img_1.jpg', 'img_3.jpg']


@pytest.mark.parametrize('indices, kept', [(2, [0, 1]), (-1, [3]), ([3, 0], [3, 0]),
                                           (10, [0, 1, 2, 3]), ([], [])])
@pytest.mark.parametrize('serialize', [True, False])
def test_indices_keep_the_first_last_or_given_samples(ann_file, indices, kept, serialize):
    dataset = BaseDataset(ann_file=str(ann_file), indices=indices, serialize_data=serialize)

    assert [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))] == [
        f'img_{k}.jpg' for k in kept]


@pytest.mark.parametrize('serialize', [True, False])
def test_get_data_info_returns_a_fresh_copy_with_its_position(ann_file, serialize):
    dataset = BaseDataset(ann_file=str(ann_file), serialize_data=serialize)

    info = dataset.get_data_info(-1)
    info['img_label'] = 99

    assert info['sample_idx'] == 3 and dataset.get_data_info(3)['img_label'] == 1
    assert (dataset.data_list == []) is serialize
    with pytest.raises(IndexError, match='index 4 is out of range for BaseDataset of length 4'):
        dataset.get_data_info(4)


# -- load errors ----------------------------------------------------------------------
def test_load_errors_name_the_file_and_what_is_wrong(tmp_path):
    (tmp_path / 'list.json').write_text('[1, 2]')
    (tmp_path / 'keys.json').write_text('{"data_list": []}')
    (tmp_path / 'broken.json').write_text('{"metainfo": ')
    (tmp_path / 'a.pkl').write_bytes(b'')
    (tmp_path / 'broken.yaml').write_text('metainfo: [')
    cases = [
        ('list.json', ValueError, r"must hold a dict with \"metainfo\" and \"data_list\", but "
                                  r"holds a list"),
        ('keys.json', ValueError, r"has no \['metainfo'\]; it must hold .* keys are "
                                  r"\['data_list'\]"),
        ('broken.json', ValueError, r'is not valid JSON: Expecting value'),
        ('broken.yaml', ValueError, r'(?s)is not valid YAML: .*line 1'),
        ('a.pkl', ValueError, r'only JSON \(.json\) and YAML \(.yaml, .yml\) are read; convert '
                              r'it, or override load_data_list\(\) .* allow_pickle=True'),
        ('absent.json', FileNotFoundError, r'absent.json'),
    ]
    for name, error, message in cases:
        with pytest.raises(error, match=message):
            BaseDataset(ann_file=str(tmp_path / name))
    with pytest.raises(ValueError, match=r'BaseDataset has no ann_file: pass ann_file=\.\.\., or '
                                         r'override load_data_list\(\)'):
        BaseDataset()


def test_a_failed_full_init_leaves_the_dataset_as_it_was(tmp_path):
    path = tmp_path / 'a.json'
    path.write_text(json.dumps(dict(metainfo=dict(extra=1), data_list=[dict(x=1)])))
    dataset = BaseDataset(ann_file=str(path), metainfo=dict(a=1), lazy_init=True)

    with pytest.raises(KeyError, match="has no 'img_path'"):
        dataset.full_init()

    assert dataset.metainfo == dict(a=1) and dataset.data_list == []
    assert not dataset._fully_initialized
    dataset.data_prefix = {}
    dataset.full_init()
    assert len(dataset) == 1 and dataset.metainfo == dict(a=1, extra=1)


def test_load_annotation_file_reads_json_and_yaml(tmp_path):
    path = tmp_path / 'x.json'
    path.write_text('{"metainfo": {}, "data_list": [{"a": 1}]}')
    yaml_path = tmp_path / 'x.yml'
    yaml_path.write_text('metainfo: {}\ndata_list:\n  - a: 1\n')

    assert load_annotation_file(str(path)) == dict(metainfo={}, data_list=[dict(a=1)])
    assert load_annotation_file(str(yaml_path)) == dict(metainfo={}, data_list=[dict(a=1)])


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(metainfo=['classes']), TypeError, r"metainfo must be a dict \(or another mapping\), "
                                            r"but got list"),
    (dict(data_prefix=dict(img_path=3)), TypeError, r"data_prefix\['img_path'\] must be a str "
                                                    r"\(a folder\), but got int: 3"),
    (dict(indices='12'), TypeError, r"indices must be an int or a sequence of ints, but got "
                                    r"str: '12'"),
    (dict(indices=[1.0]), TypeError, r'indices must be an int or a sequence of ints'),
    (dict(max_refetch=-1), ValueError, r'max_refetch must be >= 0, but got -1'),
    (dict(pipeline=[3]), TypeError, r'transform 0 must be a callable or a TRANSFORMS config '
                                    r'dict, but got int: 3'),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        BaseDataset(lazy_init=True, **kwargs)


def test_get_cat_ids_must_be_implemented_by_a_subclass(ann_file):
    with pytest.raises(NotImplementedError, match=r'ToyDataset must implement '
                                                  r'get_cat_ids\(idx\)'):
        ToyDataset(ann_file=str(ann_file)).get_cat_ids(0)


# -- lazy init --------------------------------------------------------------------------
def test_lazy_init_reads_only_the_meta_information_until_first_use(ann_file, fengine_log):
    dataset = ToyDataset(ann_file=str(ann_file), lazy_init=True)

    assert not dataset._fully_initialized and dataset.data_list == []
    assert dataset.metainfo == dict(task='toy', classes=('bird',))
    assert len(dataset) == 4 and dataset._fully_initialized
    assert dataset.metainfo['source'] == 'file'
    assert fengine_log.messages(logging.WARNING) == [
        'ToyDataset.__len__ calls full_init() first: the dataset was built with '
        'lazy_init=True; call full_init() yourself to choose when the annotations load.']


@pytest.mark.parametrize('first_use', [
    lambda d: d[0], lambda d: d.get_data_info(0), lambda d: d.get_subset(1),
    lambda d: d.get_subset_(1)])
def test_every_access_of_a_lazy_dataset_initializes_it_once(ann_file, first_use, monkeypatch):
    dataset = BaseDataset(ann_file=str(ann_file), lazy_init=True)
    loads = []
    original = dataset.load_data_list
    monkeypatch.setattr(dataset, 'load_data_list', lambda: loads.append(1) or original())

    first_use(dataset)
    dataset.full_init()
    dataset[0]

    assert loads == [1]


def test_force_full_init_needs_a_full_init_method():

    class NoInit:
        @force_full_init
        def size(self):
            return 0

    with pytest.raises(AttributeError, match='NoInit has no full_init method, which size needs'):
        NoInit().size()


# -- pipeline and refetching --------------------------------------------------------------
class DropOdd:
    """A transform that drops samples with an odd label."""

    def __call__(self, info):
        return None if info['img_label'] % 2 else dict(info, kept=True)


def test_the_pipeline_runs_on_each_data_info_and_takes_transform_configs(ann_file, register):

    class AddShape:
        def __init__(self, size):
            self.size = size

        def __call__(self, info):
            info['shape'] = (self.size, self.size)
            return info

    register(TRANSFORMS, AddShape, name='TestAddShape')
    dataset = BaseDataset(ann_file=str(ann_file),
                          pipeline=[dict(type='TestAddShape', size=3),
                                    lambda info: dict(info, label=torch.tensor(info['img_label']))])

    assert dataset[3]['shape'] == (3, 3) and dataset[3]['label'].item() == 1
    assert 'shape' not in dataset.get_data_info(3)


def test_a_dropped_sample_is_replaced_by_a_random_other_in_training(ann_file):
    dataset = BaseDataset(ann_file=str(ann_file), pipeline=[DropOdd()])

    np.random.seed(0)
    samples = [dataset[1] for _ in range(10)]

    assert all(s['kept'] and s['img_label'] == 0 for s in samples)
    assert {s['sample_idx'] for s in samples} == {0, 2}


def test_refetching_gives_up_after_max_refetch_tries(ann_file):
    dataset = BaseDataset(ann_file=str(ann_file), pipeline=[lambda info: None], max_refetch=3)

    with pytest.raises(RuntimeError, match=r'the pipeline dropped \(returned None for\) 4 '
                                           r'samples in a row; .* raise max_refetch'):
        dataset[0]


def test_in_test_mode_a_dropped_sample_is_an_error(ann_file):
    dataset = BaseDataset(ann_file=str(ann_file), pipeline=[DropOdd()], test_mode=True)

    assert dataset[0]['kept']
    with pytest.raises(RuntimeError, match=r'the pipeline dropped sample 1 \(returned None\) '
                                           r'in test mode'):
        dataset[1]


# -- subsets --------------------------------------------------------------------------------
@pytest.mark.parametrize('serialize', [True, False])
def test_get_subset_copies_and_get_subset__changes_in_place(ann_file, serialize):
    dataset = ToyDataset(ann_file=str(ann_file), serialize_data=serialize)

    subset = dataset.get_subset([3, 1])
    assert type(subset) is ToyDataset and len(subset) == 2 and len(dataset) == 4
    assert [subset[i]['img_path'] for i in range(2)] == ['img_3.jpg', 'img_1.jpg']
    assert subset.metainfo == dataset.metainfo and subset.pipeline is not dataset.pipeline

    dataset.get_subset_(-2)
    assert [dataset[i]['img_path'] for i in range(len(dataset))] == ['img_2.jpg', 'img_3.jpg']
    assert len(dataset.get_subset(0)) == 0 and len(subset) == 2
    with pytest.raises(IndexError, match=r'indices \[5\] are out of range for ToyDataset of '
                                         r'length 2'):
        dataset.get_subset([5])


# -- Compose ----------------------------------------------------------------------------------
def test_compose_chains_transforms_and_stops_at_none():
    calls = []
    pipeline = Compose([lambda d: calls.append('a') or d + 1, lambda d: None,
                        lambda d: calls.append('c') or d])

    assert Compose(None)(5) == 5 and Compose([lambda d: d * 2])(5) == 10
    assert pipeline(1) is None and calls == ['a']


def test_compose_repr_lists_the_transforms():

    class Flip:
        def __call__(self, d):
            return d

        def __repr__(self):
            return 'Flip()'

    assert repr(Compose([Flip(), Flip()])) == 'Compose(\n    Flip()\n    Flip()\n)'


def test_compose_refuses_configs_that_build_non_callables_and_non_lists(register):
    register(TRANSFORMS, type('NotCallable', (), {}), name='TestNotCallable')

    with pytest.raises(TypeError, match=r"transform 0 \(\{'type': 'TestNotCallable'\}\) built a "
                                        r"NotCallable, which is not callable"):
        Compose([dict(type='TestNotCallable')])
    with pytest.raises(TypeError, match=r'Compose takes a list of transforms .* but got dict'):
        Compose(dict(type='TestNotCallable'))
    with pytest.raises(KeyError, match=r"'Absent' is not in the transform registry"):
        Compose([dict(type='Absent')])


# -- samplers ---------------------------------------------------------------------------------
def test_default_sampler_is_the_one_the_runner_exports_and_orders_by_seed_and_epoch():
    from fengine.runner import DefaultSampler as runner_sampler
    data = list(range(10))

    a, b = DefaultSampler(data, seed=3), DefaultSampler(data, seed=3)
    first = list(a)
    a.set_epoch(1)

    assert runner_sampler is DefaultSampler
    assert DATA_SAMPLERS.get('DefaultSampler') is DefaultSampler
    assert first == list(b) and sorted(first) == data and list(a) != first
    assert list(DefaultSampler(data, shuffle=False)) == data and len(a) == 10


def test_infinite_sampler_streams_permutation_after_permutation_and_continues(monkeypatch):
    sampler = InfiniteSampler(range(4), seed=7)

    first = list(itertools.islice(iter(sampler), 6))
    rest = list(itertools.islice(iter(sampler), 6))
    again = list(itertools.islice(iter(InfiniteSampler(range(4), seed=7)), 12))

    assert again == first + rest, 'a new iter() continues the stream'
    assert sorted(again[:4]) == sorted(again[4:8]) == [0, 1, 2, 3]
    assert len(sampler) == 4 and DATA_SAMPLERS.get('InfiniteSampler') is InfiniteSampler
    assert list(itertools.islice(iter(InfiniteSampler(range(3), shuffle=False)), 7)) == [
        0, 1, 2, 0, 1, 2, 0]
    sampler.set_epoch(5)  # no epochs: nothing changes
    assert list(itertools.islice(iter(sampler), 4)) == list(
        itertools.islice(iter(InfiniteSampler(range(4), seed=7)), 16))[12:]


def test_infinite_sampler_gives_each_rank_every_world_size_th_index(monkeypatch):
    whole = list(itertools.islice(iter(InfiniteSampler(range(5), seed=1)), 10))
    monkeypatch.setattr(sampler_module, 'get_world_size', lambda: 2)
    streams = []
    for rank in (0, 1):
        monkeypatch.setattr(sampler_module, 'get_rank', lambda rank=rank: rank)
        streams.append(list(itertools.islice(iter(InfiniteSampler(range(5), seed=1)), 5)))

    assert streams[0] == whole[0::2] and streams[1] == whole[1::2]


def test_infinite_sampler_refuses_an_empty_dataset():
    with pytest.raises(ValueError, match='InfiniteSampler needs a non-empty dataset'):
        InfiniteSampler([])


# -- collate functions --------------------------------------------------------------------------
def test_pseudo_collate_groups_fields_without_stacking():
    sample = BaseDataElement(x=1)
    batch = [dict(img=torch.zeros(2), meta=dict(id=i), pair=(i, 'a'), point=Point(i, -i),
                  sample=sample, name='n') for i in range(3)]

    out = pseudo_collate(batch)

    assert [t.shape for t in out['img']] == [(2,)] * 3
    assert out['meta'] == dict(id=[0, 1, 2]) and out['name'] == ['n'] * 3
    assert out['pair'] == [[0, 1, 2], ['a', 'a', 'a']], 'tuples become lists'
    assert out['point'] == Point([0, 1, 2], [0, -1, -2]) and out['sample'] == [sample] * 3


def test_default_collate_stacks_tensors_arrays_and_numbers_but_keeps_data_elements():
    samples = [InstanceData(b=torch.ones(i + 1, 4)) for i in range(2)]
    batch = [dict(inputs=torch.full((3,), float(i)), arr=np.ones(2), label=i,
                  data_samples=samples[i], name='x') for i in range(2)]

    out = default_collate(batch)

    assert out['inputs'].shape == (2, 3) and out['arr'].dtype == torch.float64
    assert out['label'].tolist() == [0, 1] and out['name'] == ['x', 'x']
    assert out['data_samples'] == samples
    assert default_collate([(torch.zeros(1), 1)] * 2)[0].shape == (2, 1)


@pytest.mark.parametrize('collate', [pseudo_collate, default_collate])
def test_collating_samples_of_different_sizes_is_refused(collate):
    with pytest.raises(RuntimeError, match=r'every sample of a batch must have the same number '
                                           r'of items, but got sizes \[2, 1\]'):
        collate([[1, 2], [3]])


def test_collate_functions_are_in_the_functions_registry_under_both_names():
    assert COLLATE_FUNCTIONS is FUNCTIONS
    assert FUNCTIONS.get('pseudo_collate') is pseudo_collate
    assert FUNCTIONS.get('default_collate') is default_collate


def test_worker_init_fn_seeds_every_generator_from_seed_rank_and_worker():
    worker_init_fn(worker_id=1, num_workers=2, rank=3, seed=10)
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())

    random.seed(17), np.random.seed(17), torch.manual_seed(17)
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())


# -- dataloaders from configs -------------------------------------------------------------------
@pytest.fixture
def toy_registered(register, ann_file):
    register(DATASETS, ToyDataset, name='TestToyDataset')
    return str(ann_file)


def test_runner_dataloader_configs_build_with_datasets_samplers_and_collate(toy_registered):
    loader = build_dataloader(dict(
        batch_size=2, dataset=dict(type='TestToyDataset', ann_file=toy_registered, lazy_init=True),
        sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='pseudo_collate')))

    batches = list(loader)

    assert loader.dataset._fully_initialized, 'built datasets are fully initialized'
    assert [b['img_path'] for b in batches] == [['img_0.jpg', 'img_1.jpg'],
                                                ['img_2.jpg', 'img_3.jpg']]
    assert batches[0]['img_label'] == [0, 1]


def test_default_collate_config_stacks_labels(toy_registered):
    loader = build_dataloader(dict(
        batch_size=4, dataset=dict(type='TestToyDataset', ann_file=toy_registered),
        sampler=dict(type='InfiniteSampler', shuffle=False),
        collate_fn=dict(type='default_collate')))

    batch = next(iter(loader))

    assert torch.equal(batch['img_label'], torch.tensor([0, 1, 0, 1]))
    assert isinstance(loader.sampler, InfiniteSampler) and loader.sampler.seed == 0


def test_a_registered_collate_function_takes_its_config_keys_as_arguments(toy_registered, register):

    def tagged_collate(batch, tag):
        return dict(tag=tag, size=len(batch))

    register(COLLATE_FUNCTIONS, tagged_collate, name='test_tagged_collate')
    loader = build_dataloader(dict(
        batch_size=3, dataset=dict(type='TestToyDataset', ann_file=toy_registered),
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='test_tagged_collate', tag='t')))
    by_class = build_dataloader(dict(
        batch_size=3, dataset=dict(type='TestToyDataset', ann_file=toy_registered),
        collate_fn=dict(type=tagged_collate, tag='c')))

    assert next(iter(loader)) == dict(tag='t', size=3)
    assert isinstance(loader.collate_fn, functools.partial)
    assert next(iter(by_class)) == dict(tag='c', size=3)


def test_an_unknown_collate_function_is_named_with_the_choices(toy_registered):
    with pytest.raises(ValueError, match=r"unknown collate_fn 'psuedo_collate' Did you mean "
                                         r"'pseudo_collate'.*; choose one of 'default_collate', "
                                         r"'pseudo_collate' \(the FUNCTIONS registry\)"):
        build_dataloader(dict(dataset=dict(type='TestToyDataset', ann_file=toy_registered),
                              collate_fn=dict(type='psuedo_collate')))


def test_workers_share_the_serialized_annotations(ann_file):
    dataset = BaseDataset(ann_file=str(ann_file), pipeline=[DropOdd()], test_mode=True,
                          indices=[0, 2])
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=pseudo_collate,
                        worker_init_fn=functools.partial(worker_init_fn, num_workers=2, rank=0,
                                                         seed=0))

    assert [b['img_path'] for b in loader] == [['img_0.jpg'], ['img_2.jpg']]
