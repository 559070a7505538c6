"""MMEngine's documentation pages on data, run with fengine.

Pages: advanced_tutorials/basedataset.md, advanced_tutorials/data_transform.md,
advanced_tutorials/data_element.md and tutorials/dataset.md. Each test does what a
snippet does (images are small NumPy files, CIFAR10 is torchvision's ``FakeData``, CUDA
is the ``meta`` device) and checks what the page says it does. MMCV's transforms
(``Resize``, ``LoadImageFromFile``, ``BaseTransform``...) are not part of MMEngine or
fengine: the pages' custom transform is written as a plain callable.
"""
from __future__ import annotations

import copy
import itertools
import json
import os.path as osp
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
import torchvision.transforms as tvt
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torchvision.datasets import FakeData

from fengine.dataset import (COLLATE_FUNCTIONS, BaseDataset, ClassBalancedDataset, Compose,
                             ConcatDataset, DefaultSampler, RepeatDataset, default_collate,
                             force_full_init)
from fengine.model import BaseModel
from fengine.registry import DATA_SAMPLERS, DATASETS, TRANSFORMS
from fengine.runner import Runner, build_dataloader
from fengine.structures import BaseDataElement, InstanceData, LabelData, PixelData
from test_dataset import register  # noqa: F401 - the fixture registering objects for a test

META = torch.device('meta')


# ============================ advanced_tutorials/basedataset.md ============================
@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """The page's layout: data/annotations/{train,val}.json and images under data/train/."""
    monkeypatch.chdir(tmp_path)
    for split, n in (('train', 2), ('val', 3)):
        (tmp_path / 'data' / split / 'xxx').mkdir(parents=True)
        for i in range(n):
            np.save(tmp_path / 'data' / split / 'xxx' / f'xxx_{i}.npy',
                    np.full((4 + i, 6, 3), i, dtype=np.uint8))
        (tmp_path / 'data' / 'annotations').mkdir(exist_ok=True)
        (tmp_path / 'data' / 'annotations' / f'{split}.json').write_text(json.dumps(dict(
            metainfo=dict(classes=('cat', 'dog')),
            data_list=[dict(img_path=f'xxx/xxx_{i}.npy', img_label=i % 2) for i in range(n)])))
    return tmp_path / 'data'


class ToyDataset(BaseDataset):
    """The page's ToyDataset, with its get_cat_ids from the ClassBalancedDataset section."""

    def parse_data_info(self, raw_data_info):
        data_info = raw_data_info
        img_prefix = self.data_prefix.get('img_path', None)
        if img_prefix is not None:
            data_info['img_path'] = osp.join(img_prefix, data_info['img_path'])
        return data_info

    def get_cat_ids(self, idx):
        return [int(self.get_data_info(idx)['img_label'])]


class LoadImage:
    def __call__(self, results):
        results['img'] = np.load(results['img_path'])  # the page uses cv2.imread
        return results


class ParseImage:
    def __call__(self, results):
        results['img_shape'] = results['img'].shape
        return results


def toy(split: str = 'train', **kwargs) -> ToyDataset:
    return ToyDataset(data_root='data/', data_prefix=dict(img_path=f'{split}/'),
                      ann_file=f'annotations/{split}.json',
                      pipeline=[LoadImage(), ParseImage()], **kwargs)


def test_basedataset_toy_dataset_reads_the_annotations_and_runs_the_pipeline(data_root):
    toy_dataset = toy()

    assert toy_dataset.metainfo == dict(classes=['cat', 'dog'])  # JSON has no tuples
    assert toy_dataset.get_data_info(0) == dict(img_path='data/train/xxx/xxx_0.npy',
                                                img_label=0, sample_idx=0)
    assert len(toy_dataset) == 2
    sample = toy_dataset[1]
    assert sample['img_path'] == 'data/train/xxx/xxx_1.npy' and sample['img_shape'] == (5, 6, 3)
    assert sample['img'].shape == (5, 6, 3) and (sample['img'] == 1).all()


def test_basedataset_get_subset_copies_and_get_subset__works_in_place(data_root):
    toy_dataset = toy()

    sub_toy_dataset = toy_dataset.get_subset(1)
    assert (len(toy_dataset), len(sub_toy_dataset)) == (2, 1)
    toy_dataset.get_subset_(1)
    assert len(toy_dataset) == 1


def test_basedataset_a_video_dataset_returns_several_samples_per_entry(data_root):

    class ToyVideoDataset(BaseDataset):
        def parse_data_info(self, raw_data_info):
            return [dict(frame=f, img_path=raw_data_info['img_path']) for f in range(3)]

    videos = ToyVideoDataset(data_root='data/', ann_file='annotations/val.json')

    assert len(videos) == 9 and videos.get_data_info(4)['frame'] == 1


def test_basedataset_load_data_list_reads_annotations_of_another_format(data_root):
    (data_root / 'labels.txt').write_text('a.png 0\nb.png 1\n')

    class TextDataset(BaseDataset):
        def load_data_list(self):
            lines = Path(self.ann_file).read_text().splitlines()
            return [dict(img_path=name, img_label=int(label))
                    for name, label in (line.split() for line in lines)]

    dataset = TextDataset(data_root='data/', ann_file='labels.txt')

    assert len(dataset) == 2 and dataset[1] == dict(img_path='b.png', img_label=1, sample_idx=1)


def test_basedataset_lazy_init_loads_only_metainfo_until_full_init(data_root):
    toy_dataset = toy(lazy_init=True)

    assert not toy_dataset._fully_initialized and toy_dataset.data_list == []
    toy_dataset.full_init()
    assert len(toy_dataset) == 2 and toy_dataset[0]['img_shape'] == (4, 6, 3)


def test_basedataset_serialize_data_false_keeps_the_list_of_dicts(data_root):
    kept, serialized = toy(serialize_data=False), toy()

    assert len(kept.data_list) == 2 and serialized.data_list == []
    assert isinstance(serialized.data_bytes, np.ndarray)
    assert kept.get_data_info(1) == serialized.get_data_info(1)


def test_basedataset_wrappers_concat_repeat_and_balance(data_root):
    toy_dataset_12 = ConcatDataset(datasets=[toy('train'), toy('val')])
    toy_dataset_repeat = RepeatDataset(dataset=toy(), times=5)
    balanced = ClassBalancedDataset(dataset=toy(), oversample_thr=1e-3)

    assert len(toy_dataset_12) == 5 and toy_dataset_12[4]['img_path'] == 'data/val/xxx/xxx_2.npy'
    assert len(toy_dataset_repeat) == 10
    assert toy_dataset_repeat[7]['img_path'] == 'data/train/xxx/xxx_1.npy'
    # Both labels are in half of the samples, far above 1e-3: nothing is repeated.
    assert len(balanced) == 2 and balanced.get_cat_ids(1) == [1]


def test_basedataset_a_custom_wrapper_follows_the_lazy_init_rules(data_root, register):

    class ExampleDatasetWrapper:
        """The page's wrapper: every sample twice, in reverse order."""

        def __init__(self, dataset, lazy_init=False):
            if isinstance(dataset, dict):
                self.dataset = DATASETS.build(dataset)
            elif isinstance(dataset, BaseDataset):
                self.dataset = dataset
            else:
                raise TypeError('elements in datasets sequence should be config or '
                                f'`BaseDataset` instance, but got {type(dataset)}')
            self._metainfo = self.dataset.metainfo
            self._fully_initialized = False
            if not lazy_init:
                self.full_init()

        def full_init(self):
            if self._fully_initialized:
                return
            self.dataset.full_init()
            self._order = [i for i in reversed(range(len(self.dataset))) for _ in range(2)]
            self._fully_initialized = True

        @force_full_init
        def _get_ori_dataset_idx(self, idx: int):
            return self._order[idx]

        @force_full_init
        def get_data_info(self, idx):
            return self.dataset.get_data_info(self._get_ori_dataset_idx(idx))

        def __getitem__(self, idx):
            if not self._fully_initialized:
                self.full_init()
            return self.dataset[self._get_ori_dataset_idx(idx)]

        @force_full_init
        def __len__(self):
            return len(self._order)

        @property
        def metainfo(self):
            return copy.deepcopy(self._metainfo)

    register(DATASETS, ExampleDatasetWrapper)
    register(DATASETS, ToyDataset, name='PagesToyDataset')
    wrapper = DATASETS.build(dict(
        type='ExampleDatasetWrapper', lazy_init=True,
        dataset=dict(type='PagesToyDataset', data_root='data/', ann_file='annotations/val.json',
                     data_prefix=dict(img_path='val/'), lazy_init=True)))

    assert not wrapper._fully_initialized and not wrapper.dataset._fully_initialized
    assert len(wrapper) == 6 and wrapper._fully_initialized
    assert [wrapper.get_data_info(i)['sample_idx'] for i in range(6)] == [2, 2, 1, 1, 0, 0]


# ============================ advanced_tutorials/data_transform.md ============================
class MyFlip:
    """The page's MyFlip, as a plain callable (MMCV's BaseTransform is not in MMEngine)."""

    def __init__(self, direction: str):
        self.direction = direction

    def __call__(self, results: dict) -> dict:
        axis = 1 if self.direction == 'horizontal' else 0
        results['img'] = np.flip(results['img'], axis=axis)
        return results


def test_data_transform_a_transform_maps_a_dict_to_a_dict():
    transform = MyFlip(direction='horizontal')
    img = np.random.rand(224, 224, 3)

    data_dict = transform({'img': img.copy()})

    assert np.array_equal(data_dict['img'], img[:, ::-1])


def test_data_transform_a_registered_transform_is_used_in_a_config_pipeline(data_root, register):
    register(TRANSFORMS, MyFlip)
    register(TRANSFORMS, LoadImage, name='PagesLoadImage')
    register(DATASETS, ToyDataset, name='PagesToyDataset')

    test_dataloader = dict(
        batch_size=2, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='PagesToyDataset', data_root='data/', ann_file='annotations/val.json',
                     data_prefix=dict(img_path='val/'),
                     pipeline=[dict(type='PagesLoadImage'),
                               dict(type='MyFlip', direction='horizontal')]),
        collate_fn=dict(type='pseudo_collate'))
    batch = next(iter(build_dataloader(test_dataloader)))

    expected = np.load('data/val/xxx/xxx_1.npy')[:, ::-1]
    assert batch['img_path'] == ['data/val/xxx/xxx_0.npy', 'data/val/xxx/xxx_1.npy']
    assert np.array_equal(batch['img'][1], expected)


# ============================ advanced_tutorials/data_element.md ============================
def test_data_element_create_with_data_and_metainfo():
    bboxes, scores = torch.rand((5, 4)), torch.rand((5,))

    data_element = BaseDataElement(bboxes=bboxes, scores=scores,
                                   metainfo=dict(img_id=0, img_shape=(800, 1333)))

    assert data_element.keys() == ['bboxes', 'scores']
    assert data_element.metainfo == dict(img_id=0, img_shape=(800, 1333))


def test_data_element_new_and_clone():
    data_element = BaseDataElement(bboxes=torch.rand((5, 4)), scores=torch.rand((5,)),
                                   metainfo=dict(img_id=1, img_shape=(640, 640)))

    data_element1 = data_element.new(metainfo=dict(img_id=2, img_shape=(320, 320)))
    assert 'bboxes' in data_element1 and (data_element1.bboxes == data_element.bboxes).all()
    assert data_element1.img_id == 2
    data_element2 = data_element.new(label=torch.rand(5,))
    assert 'bboxes' not in data_element2 and 'label' in data_element2
    assert data_element2.img_id == data_element.img_id
    cloned = data_element1.clone()
    assert cloned.all_keys() == data_element1.all_keys()
    assert torch.equal(cloned.bboxes, data_element1.bboxes)
    assert cloned.bboxes.data_ptr() != data_element1.bboxes.data_ptr()


def test_data_element_add_and_query_fields():
    data_element = BaseDataElement()
    data_element.set_metainfo(dict(img_id=9, img_shape=(100, 100)))
    data_element.scores = torch.rand((5,))
    data_element.bboxes = torch.rand((5, 4))

    assert data_element.metainfo_keys() == ['img_id', 'img_shape']
    assert data_element.metainfo_values() == [9, (100, 100)]
    assert dict(data_element.metainfo_items()) == dict(img_id=9, img_shape=(100, 100))
    assert data_element.img_id == 9 and data_element.img_shape == (100, 100)
    assert data_element.keys() == ['scores', 'bboxes'] and len(data_element.values()) == 2
    assert data_element.get('scores') is data_element.scores
    assert data_element.get('fake', 'not exist') == 'not exist'
    assert data_element.all_keys() == ['img_id', 'img_shape', 'scores', 'bboxes']
    assert len(data_element.all_values()) == 4
    assert [k for k, _ in data_element.all_items()] == data_element.all_keys()


def test_data_element_delete_and_modify_fields():
    data_element = BaseDataElement(bboxes=torch.rand((6, 4)), scores=torch.rand((6,)),
                                   metainfo=dict(img_id=0, img_shape=(640, 640)))
    bboxes, scores = data_element.bboxes, data_element.scores

    data_element.bboxes = data_element.bboxes * 2
    data_element.scores = data_element.scores * -1
    assert torch.equal(data_element.bboxes, bboxes * 2) and (data_element.scores <= 0).all()
    del data_element.bboxes
    assert data_element.keys() == ['scores']
    data_element.pop('scores', None)
    assert data_element.keys() == []

    data_element.set_metainfo(dict(img_shape=(1280, 1280), img_id=10))
    assert data_element.img_shape == (1280, 1280)
    del data_element.img_shape
    assert data_element.metainfo_keys() == ['img_id']
    data_element.pop('img_id')
    assert data_element.metainfo_keys() == []


def test_data_element_tensor_like_operations():
    data_element = BaseDataElement(bboxes=torch.rand((6, 4), requires_grad=True),
                                   scores=torch.rand((6,)),
                                   metainfo=dict(img_id=0, img_shape=(640, 640)))

    moved = data_element.to(META)  # the page moves to 'cuda:0'
    assert moved.bboxes.device == META and moved.scores.device == META
    cpu_element = data_element.cpu()
    assert cpu_element.bboxes.device.type == 'cpu'
    fp16 = data_element.to(device=None, dtype=torch.float16, non_blocking=False, copy=False,
                           memory_format=torch.preserve_format)
    assert fp16.bboxes.dtype == torch.float16
    assert data_element.bboxes.requires_grad and not data_element.detach().bboxes.requires_grad
    assert isinstance(cpu_element.numpy().bboxes, np.ndarray)


def test_data_element_repr_shows_both_sections():
    instance_data = BaseDataElement(metainfo=dict(img_shape=(800, 1196, 3),
                                                  pad_shape=(800, 1216, 3)))
    instance_data.det_labels = torch.LongTensor([0, 1, 2, 3])
    instance_data.det_scores = torch.Tensor([0.01, 0.1, 0.2, 0.3])

    text = repr(instance_data)

    assert text.startswith('<BaseDataElement(\n\n    META INFORMATION\n'
                           '    img_shape: (800, 1196, 3)\n    pad_shape: (800, 1216, 3)\n\n'
                           '    DATA FIELDS\n    det_labels: tensor([0, 1, 2, 3])\n'
                           '    det_scores: tensor([0.0100, 0.1000, 0.2000, 0.3000])\n) at 0x')
    assert set(vars(instance_data)) >= {'img_shape', 'det_labels'}, 'fields are in __dict__'


def page_instances() -> InstanceData:
    instance_data = InstanceData(metainfo=dict(img_shape=(800, 1196, 3), pad_shape=(800, 1216, 3)))
    instance_data.det_labels = torch.LongTensor([2, 3])
    instance_data['det_scores'] = torch.Tensor([0.8, 0.7])
    instance_data.bboxes = torch.rand((2, 4))
    return instance_data


def test_instance_data_checks_lengths_and_sets_items():
    instance_data = page_instances()

    assert len(instance_data) == 2
    assert instance_data.keys() == ['det_labels', 'det_scores', 'bboxes']
    with pytest.raises(ValueError, match="'bboxes' has length 3, but this InstanceData holds 2"):
        instance_data.bboxes = torch.rand((3, 4))


def test_instance_data_indexing_slicing_and_advanced_indexing():
    instance_data = page_instances()

    assert instance_data[1].det_labels.tolist() == [3] and instance_data[1].bboxes.shape == (1, 4)
    assert instance_data[0:1].det_labels.tolist() == [2]
    sorted_results = instance_data[instance_data.det_scores.sort().indices]
    assert sorted_results.det_labels.tolist() == [3, 2]
    assert sorted_results.det_scores.tolist() == pytest.approx([0.7, 0.8])
    assert instance_data[instance_data.det_scores > 0.75].det_labels.tolist() == [2]
    empty_results = instance_data[instance_data.det_scores > 1]
    assert empty_results.det_labels.dtype == torch.int64 and empty_results.bboxes.shape == (0, 4)


def test_instance_data_cat_concatenates_instances():
    instance_data = page_instances()

    cat_results = InstanceData.cat([instance_data, instance_data])

    assert len(instance_data) == 2 and len(cat_results) == 4
    assert cat_results.det_labels.tolist() == [2, 3, 2, 3]


class TmpObject:
    """The page's custom per-instance structure."""

    def __init__(self, tmp) -> None:
        self.tmp = tmp

    def __len__(self):
        return len(self.tmp)

    def __getitem__(self, item):
        if type(item) == int:  # noqa: E721 - as the page writes it
            if item >= len(self) or item < -len(self):
                raise IndexError(f'Index {item} out of range!')
            item = slice(item, None, len(self))
        return TmpObject(self.tmp[item])

    @staticmethod
    def cat(tmp_objs):
        if len(tmp_objs) == 1:
            return tmp_objs[0]
        return TmpObject(list(itertools.chain(*[tmp_obj.tmp for tmp_obj in tmp_objs])))

    def __repr__(self):
        return str(self.tmp)


def test_instance_data_with_a_custom_structure_indexes_and_concatenates_it():
    instance_data = page_instances()
    instance_data.polygons = TmpObject([[1, 2, 3, 4], [5, 6, 7, 8]])

    assert 'polygons: [[1, 2, 3, 4], [5, 6, 7, 8]]' in repr(instance_data)
    assert instance_data[instance_data.det_scores > 0.75].polygons.tmp == [[1, 2, 3, 4]]
    assert InstanceData.cat([instance_data, instance_data]).polygons.tmp == [
        [1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4], [5, 6, 7, 8]]


def test_pixel_data_checks_shapes_and_slices_height_and_width():
    metainfo = dict(img_id=3, img_shape=(500, 450))
    pixel_data = PixelData(metainfo=metainfo, image=np.random.randint(0, 255, (4, 20, 40)),
                           featmap=torch.randint(0, 255, (10, 20, 40)))

    assert pixel_data.shape == (20, 40)
    pixel_data.map3 = torch.randint(0, 255, (20, 40))
    assert pixel_data.map3.shape == (1, 20, 40)
    with pytest.raises(ValueError, match=r'height and width \(20, 30\), but this PixelData is '
                                         r'\(20, 40\)'):
        pixel_data.map2 = torch.randint(0, 255, (3, 20, 30))
    with pytest.raises(ValueError, match='has 4 dims'):
        pixel_data.map2 = torch.randint(0, 255, (1, 3, 20, 40))
    assert pixel_data[10, 20].shape == (1, 1) and pixel_data[10:20, 20:40].shape == (10, 20)


def test_label_data_converts_between_labels_and_one_hot():
    item = torch.tensor([1], dtype=torch.int64)

    onehot = LabelData.label_to_onehot(label=item, num_classes=10)

    assert onehot.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert LabelData.onehot_to_label(onehot=onehot).tolist() == [1]


class DetDataSample(BaseDataElement):
    """The page's DetDataSample, with two of its typed fields."""

    @property
    def proposals(self) -> InstanceData:
        return self._proposals

    @proposals.setter
    def proposals(self, value: InstanceData):
        self.set_field(value, '_proposals', dtype=InstanceData)

    @proposals.deleter
    def proposals(self):
        del self._proposals

    @property
    def gt_sem_seg(self) -> PixelData:
        return self._gt_sem_seg

    @gt_sem_seg.setter
    def gt_sem_seg(self, value: PixelData):
        self.set_field(value, '_gt_sem_seg', dtype=PixelData)

    @gt_sem_seg.deleter
    def gt_sem_seg(self):
        del self._gt_sem_seg


def test_a_data_sample_constrains_the_types_of_its_fields():
    data_sample = DetDataSample()

    data_sample.proposals = InstanceData(data=dict(bboxes=torch.rand((5, 4))))
    data_sample.gt_sem_seg = PixelData(sem_seg=torch.zeros(4, 4))

    assert data_sample.keys() == ['proposals', 'gt_sem_seg']
    assert 'DATA FIELDS\n    proposals: <InstanceData(' in repr(data_sample)
    with pytest.raises(TypeError, match=r'proposals must be a InstanceData, but got Tensor'):
        data_sample.proposals = torch.rand((5, 4))


# ============================ tutorials/dataset.md ============================
class TinyClassifier(BaseModel):
    """A classifier for FakeData's 3x8x8 images: the batches of example 1."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 2)
        self.seen = []

    def forward(self, imgs, labels, mode='tensor'):
        self.seen.append((imgs.shape, labels.tolist()))
        logits = self.linear(imgs.flatten(1))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, labels))
        return logits


def fake_cifar(size: int = 8, transform=tvt.ToTensor()) -> FakeData:
    return FakeData(size=size, image_size=(3, 8, 8), num_classes=2, transform=transform)


def train_runner(tmp_path, train_dataloader, model=None) -> Runner:
    return Runner(model=model or TinyClassifier(), work_dir=str(tmp_path / 'work'),
                  train_dataloader=train_dataloader,
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                  train_cfg=dict(by_epoch=True, max_epochs=1), randomness=dict(seed=0))


def test_dataset_example_1_a_dict_dataloader_with_sampler_and_collate(tmp_path):
    model = TinyClassifier()
    runner = train_runner(tmp_path, dict(
        batch_size=4, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=fake_cifar(), collate_fn=dict(type='default_collate')), model)

    loader = runner.train_dataloader
    runner.train()

    assert isinstance(loader.sampler, DefaultSampler) and loader.sampler.shuffle
    assert loader.collate_fn is default_collate
    assert [shape for shape, _ in model.seen] == [(4, 3, 8, 8)] * 2


def test_dataset_the_hand_built_equivalent_gives_the_same_batches():
    dataset = fake_cifar()
    sampler = DefaultSampler(dataset, shuffle=True, seed=0)
    by_hand = DataLoader(batch_size=4, sampler=sampler, dataset=dataset, collate_fn=default_collate)
    from_dict = build_dataloader(dict(batch_size=4,
                                      sampler=dict(type='DefaultSampler', shuffle=True),
                                      dataset=dataset, collate_fn=dict(type='default_collate')),
                                 seed=0)

    for a, b in zip(by_hand, from_dict):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_dataset_a_registered_sampler_and_collate_function(tmp_path, register):

    class MySampler(Sampler):
        """Every other index, in order."""

        def __init__(self, dataset, seed=None):
            self.dataset = dataset

        def __iter__(self):
            return iter(range(0, len(self.dataset), 2))

        def __len__(self):
            return (len(self.dataset) + 1) // 2

    def my_collate_func(data_batch: Sequence) -> Any:
        images, labels = zip(*data_batch)
        return torch.stack(images) * 0, torch.tensor(labels)

    register(DATA_SAMPLERS, MySampler)
    register(COLLATE_FUNCTIONS, my_collate_func)
    model = TinyClassifier()
    runner = train_runner(tmp_path, dict(batch_size=2, dataset=fake_cifar(),
                                         sampler=dict(type='MySampler'),
                                         collate_fn=dict(type='my_collate_func')), model)
    runner.train()

    expected = [int(fake_cifar()[i][1]) for i in (0, 2, 4, 6)]
    assert [labels for _, labels in model.seen] == [expected[:2], expected[2:]]


def test_dataset_torchvision_datasets_and_transforms_from_a_config(tmp_path, register):

    def build_torchvision_cifar10(transform=None, **kwargs):
        if isinstance(transform, dict):
            transform = [transform]
        if isinstance(transform, (list, tuple)):
            transform = Compose(transform)
        return fake_cifar(transform=transform, **kwargs)  # the page builds CIFAR10

    register(DATASETS, build_torchvision_cifar10, name='Cifar10')
    register(TRANSFORMS, tvt.RandomCrop, name='RandomCrop')
    register(TRANSFORMS, tvt.RandomHorizontalFlip, name='RandomHorizontalFlip')
    register(TRANSFORMS, tvt.ToTensor, name='ToTensor')
    register(TRANSFORMS, tvt.Normalize, name='Normalize')
    norm_cfg = dict(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    model = TinyClassifier()

    runner = train_runner(tmp_path, dict(
        batch_size=4, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(type='Cifar10', size=8, transform=[
            dict(type='RandomCrop', size=8, padding=4), dict(type='RandomHorizontalFlip'),
            dict(type='ToTensor'), dict(type='Normalize', **norm_cfg)]),
        collate_fn=dict(type='default_collate')), model)
    runner.train()

    pipeline = runner.train_dataloader.dataset.transform
    assert isinstance(pipeline, Compose) and len(pipeline.transforms) == 4
    assert isinstance(pipeline.transforms[3], tvt.Normalize)
    assert [shape for shape, _ in model.seen] == [(4, 3, 8, 8)] * 2
