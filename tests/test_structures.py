"""Data elements: fields, meta information, copies, conversions and indexing as MMEngine's."""
from __future__ import annotations

import copy
import itertools
import pickle
import re

import numpy as np
import pytest
import torch

from fengine.structures import BaseDataElement, InstanceData, LabelData, PixelData

META = torch.device('meta')


def element() -> BaseDataElement:
    return BaseDataElement(metainfo=dict(img_id=7, img_shape=(4, 6)),
                           scores=torch.tensor([0.5, 0.25]), bboxes=torch.ones(2, 4))


class DetSample(BaseDataElement):
    """A data sample with a typed field, written the way MMEngine's tutorial does."""

    @property
    def proposals(self) -> InstanceData:
        return self._proposals

    @proposals.setter
    def proposals(self, value: InstanceData) -> None:
        self.set_field(value, '_proposals', dtype=InstanceData)

    @proposals.deleter
    def proposals(self) -> None:
        del self._proposals


# -- BaseDataElement: fields --------------------------------------------------------------
def test_keyword_arguments_are_data_and_metainfo_is_meta_information():
    el = element()

    assert el.keys() == ['scores', 'bboxes'] and el.metainfo_keys() == ['img_id', 'img_shape']
    assert el.all_keys() == ['img_id', 'img_shape', 'scores', 'bboxes']
    assert el.img_id == 7 and el.metainfo == dict(img_id=7, img_shape=(4, 6))
    assert el.metainfo_values() == [7, (4, 6)] and len(el.all_values()) == 4
    assert [k for k, _ in el.items()] == ['scores', 'bboxes']
    assert [k for k, _ in el.all_items()] == el.all_keys()
    assert el.values()[0] is el.scores


def test_metainfo_is_deep_copied_and_data_is_not():
    meta = dict(img_shape=[4, 6])
    scores = torch.zeros(2)

    el = BaseDataElement(metainfo=meta, scores=scores)
    meta['img_shape'].append(1)

    assert el.img_shape == [4, 6] and el.scores is scores


def test_attributes_set_later_are_data_and_set_metainfo_adds_meta_information():
    el = BaseDataElement()
    el.labels = torch.tensor([1])
    el.set_metainfo(dict(scale=2.0))
    el.set_data(dict(extra='x'))

    assert el.keys() == ['labels', 'extra'] and el.metainfo_keys() == ['scale']
    assert 'labels' in el and 'scale' in el and 'absent' not in el


def test_a_name_cannot_be_both_metainfo_and_data():
    el = element()

    with pytest.raises(AttributeError, match="cannot set 'img_id' as a data field of "
                                             "BaseDataElement: it is already a metainfo field"):
        el.img_id = 3
    with pytest.raises(AttributeError, match="cannot set 'scores' as a metainfo field .* "
                                             "already a data field"):
        el.set_metainfo(dict(scale=2, scores=1))
    assert el.img_id == 7 and el.scores.shape == (2,)
    assert 'scale' not in el, 'a refused metainfo dict sets nothing'


def test_the_private_field_sets_cannot_be_replaced_or_deleted():
    el = element()

    for name in ('_metainfo_fields', '_data_fields'):
        with pytest.raises(AttributeError, match=f'{name} is private to BaseDataElement and '
                                                 'cannot be replaced'):
            setattr(el, name, set())
        with pytest.raises(AttributeError, match='cannot be deleted'):
            delattr(el, name)


@pytest.mark.parametrize('call, message', [
    (lambda el: el.set_metainfo([('a', 1)]), r"metainfo must be a dict, but got list"),
    (lambda el: el.set_data('x'), r"data must be a dict, but got str: 'x'"),
    (lambda el: el.update(dict(a=1)), r'update\(\) takes a BaseDataElement, but got dict'),
])
def test_setters_refuse_non_dicts_with_type_errors(call, message):
    with pytest.raises(TypeError, match=message):
        call(element())


def test_a_read_only_attribute_is_refused_and_leaves_no_field():
    el = element()

    with pytest.raises(AttributeError):
        el.metainfo = dict(a=1)
    assert 'metainfo' not in el and el.keys() == ['scores', 'bboxes']


def test_set_field_checks_the_field_type_and_names_the_choices():
    with pytest.raises(ValueError, match=r"field_type must be one of 'data', 'metainfo', "
                                         r"but got 'meta'"):
        element().set_field(1, 'x', field_type='meta')


def test_get_pop_and_del_work_like_a_dict_on_both_kinds_of_field():
    el = element()

    assert el.get('img_id') == 7 and el.get('absent', 'none') == 'none'
    assert el.pop('img_id') == 7 and 'img_id' not in el and el.metainfo_keys() == ['img_shape']
    assert torch.equal(el.pop('scores'), torch.tensor([0.5, 0.25]))
    assert el.pop('absent', None) is None
    del el.bboxes
    del el.img_shape
    assert el.all_keys() == [] and not hasattr(el, 'bboxes')
    with pytest.raises(KeyError, match=r"'absent' is neither a metainfo nor a data field of "
                                       r"BaseDataElement; fields: \[\]"):
        el.pop('absent')


def test_update_copies_fields_from_another_element():
    el = BaseDataElement(metainfo=dict(a=1), x=torch.zeros(1))
    el.update(BaseDataElement(metainfo=dict(a=2, b=3), y=torch.ones(1)))

    assert el.metainfo == dict(a=2, b=3) and el.keys() == ['x', 'y']


# -- BaseDataElement: typed fields of a subclass -------------------------------------
def test_a_property_field_is_listed_under_its_public_name_and_type_checked():
    sample = DetSample(metainfo=dict(img_id=1))
    proposals = InstanceData(bboxes=torch.ones(3, 4))

    sample.proposals = proposals

    assert sample.proposals is proposals and 'proposals' in sample
    assert sample.keys() == ['proposals'] and list(dict(sample.items())) == ['proposals']
    with pytest.raises(TypeError, match=r'proposals must be a InstanceData, but got Tensor'):
        sample.proposals = torch.ones(3, 4)
    assert sample.proposals is proposals

    refused = DetSample()
    with pytest.raises(TypeError):
        refused.proposals = torch.ones(3, 4)
    assert 'proposals' not in refused and refused.keys() == []


def test_a_property_field_can_be_deleted_and_popped():
    sample = DetSample()
    sample.proposals = InstanceData(bboxes=torch.ones(3, 4))
    del sample.proposals
    assert 'proposals' not in sample and sample.keys() == []

    sample.proposals = InstanceData(bboxes=torch.ones(1, 4))
    assert len(sample.pop('proposals')) == 1 and sample.keys() == []


# -- BaseDataElement: new, clone ----------------------------------------------------------
def test_new_keeps_what_is_not_given_and_replaces_what_is():
    el = element()

    same = el.new()
    new_meta = el.new(metainfo=dict(img_id=2))
    new_data = el.new(label=torch.tensor([1]))

    assert type(same) is BaseDataElement and same.all_keys() == el.all_keys()
    assert same.scores is el.scores, 'new() shares the data values'
    assert new_meta.metainfo == dict(img_id=2) and new_meta.keys() == ['scores', 'bboxes']
    assert new_data.keys() == ['label'] and new_data.metainfo == el.metainfo


def test_clone_is_a_deep_copy_like_tensor_clone():
    el = element()
    el.nested = BaseDataElement(x=torch.zeros(2))
    el.names = ['a']

    cloned = el.clone()
    cloned.scores[0] = 9.0
    cloned.nested.x[0] = 9.0
    cloned.names.append('b')

    assert el.scores[0] == 0.5 and el.nested.x[0] == 0 and el.names == ['a']
    assert cloned.all_keys() == el.all_keys() and type(cloned.nested) is BaseDataElement


def test_clone_keeps_the_subclass():
    assert type(InstanceData(x=torch.ones(2)).clone()) is InstanceData


def test_pickle_and_deepcopy_keep_fields_and_kinds():
    el = element()

    for copied in (pickle.loads(pickle.dumps(el)), copy.deepcopy(el)):
        assert copied.metainfo_keys() == el.metainfo_keys() and copied.keys() == el.keys()
        assert torch.equal(copied.bboxes, el.bboxes)
        copied.extra = 1  # still settable as data
        assert copied.keys()[-1] == 'extra'


# -- BaseDataElement: tensor-like conversions -----------------------------------------
def test_to_moves_and_casts_data_tensors_and_nested_elements_but_not_metainfo():
    el = element()
    el.nested = InstanceData(b=torch.ones(2, 1))
    el.name = 'img.png'

    moved = el.to(META)
    half = el.to(dtype=torch.float16)

    assert moved.scores.device == META and moved.nested.b.device == META
    assert moved.name == 'img.png' and moved.metainfo == el.metainfo
    assert half.bboxes.dtype == torch.float16 and el.bboxes.dtype == torch.float32


def test_cpu_detach_numpy_and_to_tensor_convert_the_data():
    weights = torch.ones(2, requires_grad=True)
    el = BaseDataElement(metainfo=dict(id=1), w=weights * 2,
                         nested=BaseDataElement(v=torch.arange(3)), arr=np.ones(2), name='x')

    detached = el.detach()
    arrays = el.numpy()
    back = arrays.to_tensor()

    assert el.w.requires_grad and not detached.w.requires_grad
    assert el.cpu().w.device.type == 'cpu'
    assert isinstance(arrays.w, np.ndarray) and isinstance(arrays.nested.v, np.ndarray)
    assert arrays.name == 'x' and arrays.id == 1
    assert isinstance(back.w, torch.Tensor) and isinstance(back.nested.v, torch.Tensor)
    assert isinstance(back.arr, torch.Tensor) and back.arr.dtype == torch.float64


def test_to_dict_turns_nested_elements_into_dicts():
    el = BaseDataElement(metainfo=dict(id=1), gt=BaseDataElement(metainfo=dict(s=2), x=3))

    assert el.to_dict() == dict(id=1, gt=dict(s=2, x=3))


def test_repr_shows_metainfo_and_data_sections_with_nested_elements_indented():
    el = BaseDataElement(metainfo=dict(img_shape=(8, 8)), labels=torch.tensor([0, 1]),
                         gt=BaseDataElement(metainfo=dict(k=1), v=torch.tensor([2])))

    text = re.sub(r'0x[0-9a-f]+', 'ADDR', repr(el))

    assert text == (
        '<BaseDataElement(\n\n'
        '    META INFORMATION\n'
        '    img_shape: (8, 8)\n\n'
        '    DATA FIELDS\n'
        '    labels: tensor([0, 1])\n'
        '    gt: <BaseDataElement(\n'
        '        \n'
        '            META INFORMATION\n'
        '            k: 1\n'
        '        \n'
        '            DATA FIELDS\n'
        '            v: tensor([2])\n'
        '        ) at ADDR>\n'
        ') at ADDR>')


# -- InstanceData -------------------------------------------------------------------------
class Polygons:
    """A custom per-instance value: __len__, __getitem__ keeping the dim, and cat."""

    def __init__(self, points: list) -> None:
        self.points = points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, item):
        if isinstance(item, int):
            item = slice(item, None, len(self))
        return Polygons(self.points[item])

    @staticmethod
    def cat(parts: list) -> 'Polygons':
        return Polygons(list(itertools.chain(*(p.points for p in parts))))


class NoCat(Polygons):
    cat = None


def instances() -> InstanceData:
    return InstanceData(metainfo=dict(img_id=3),
                        bboxes=torch.arange(12.).view(3, 4), labels=np.array([5, 6, 7]),
                        names=['a', 'b', 'c'], ids=(10, 11, 12), chars='xyz',
                        polygons=Polygons([[0], [1], [2]]))


def test_instance_fields_must_have_the_length_of_the_others():
    data = instances()

    with pytest.raises(ValueError, match=r"'keypoints' has length 2, but this InstanceData "
                                         r"holds 3 instances \(fields: \['bboxes', "):
        data.keypoints = torch.ones(2, 2)
    with pytest.raises(TypeError, match=r"every InstanceData field needs a length .* but "
                                        r"'score' is a float: 0.5"):
        data.score = 0.5
    data['keypoints'] = torch.ones(3, 2)
    assert 'keypoints' in data and len(data) == 3


def test_metainfo_of_instance_data_has_no_length_rule():
    data = InstanceData(metainfo=dict(img_shape=(4, 4), scale=2.0), x=torch.ones(3))

    assert data.scale == 2.0 and len(data) == 3


@pytest.mark.parametrize('index, picked', [
    (1, [1]), (-1, [2]), (slice(0, 2), [0, 1]), (torch.tensor([2, 0]), [2, 0]),
    (torch.tensor([True, False, True]), [0, 2]), ([1, 1], [1, 1]),
    ([True, False, False], [0]), (np.array([2], dtype=np.int32), [2]),
    (np.array([False, True, True]), [1, 2]), (np.int64(0), [0]),
])
def test_instance_data_is_indexed_like_its_first_dim(index, picked):
    data = instances()

    out = data[index]

    assert type(out) is InstanceData and out.metainfo == dict(img_id=3) and len(out) == len(picked)
    assert out.bboxes.tolist() == data.bboxes[picked].tolist()
    assert out.labels.tolist() == [5 + p for p in picked]
    assert out.names == ['abc'[p] for p in picked]
    assert out.chars == ''.join('xyz'[p] for p in picked)
    assert out.ids == tuple(10 + p for p in picked) and type(out.ids) is tuple
    assert out.polygons.points == [[p] for p in picked]


def test_an_index_that_selects_nothing_gives_empty_fields():
    out = instances()[torch.zeros(3, dtype=torch.bool)]

    assert len(out) == 0 and out.bboxes.shape == (0, 4) and out.names == []
    assert out.polygons.points == [] and out.chars == '' and instances()[[]].names == []


def test_a_str_index_reads_a_field():
    assert instances()['names'] == ['a', 'b', 'c']


@pytest.mark.parametrize('index, error, message', [
    (3, IndexError, r'index 3 is out of range for an InstanceData of 3 instances'),
    (-4, IndexError, r'index -4 is out of range'),
    (torch.tensor([True, False]), IndexError,
     r'a bool index must have one entry per instance \(3\), but got 2'),
    (torch.zeros(1, 1, dtype=torch.long), IndexError, r'must be 1-D, but got shape \(1, 1\)'),
    (torch.tensor([0.0]), TypeError, r'must hold integers or bools, but got torch.float32'),
    (1.5, TypeError, r'indexed by a str, an int, a slice, .* but got float'),
])
def test_bad_instance_indices_are_refused_by_name(index, error, message):
    with pytest.raises(error, match=message):
        instances()[index]


def test_a_value_without_cat_cannot_be_indexed_by_a_tensor_but_can_be_sliced():
    data = InstanceData(polygons=NoCat([[0], [1]]))

    assert data[0:1].polygons.points == [[0]]
    with pytest.raises(ValueError, match=r"field 'polygons' \(NoCat\) cannot be indexed by a "
                                         r"tensor, list or array: it needs __getitem__ and a "
                                         r"cat method"):
        data[torch.tensor([0])]


def test_cat_joins_instances_of_every_field_type_in_order():
    first, second = instances(), instances()[[2]]
    second.set_metainfo(dict(img_id=99))

    out = InstanceData.cat([first, second])

    assert len(out) == 4 and out.img_id == 3
    assert out.bboxes[-1].tolist() == first.bboxes[2].tolist()
    assert out.labels.tolist() == [5, 6, 7, 7] and out.names == ['a', 'b', 'c', 'c']
    assert out.ids == (10, 11, 12, 12) and out.chars == 'xyzz'
    assert out.polygons.points == [[0], [1], [2], [2]]
    assert first.names == ['a', 'b', 'c'], 'the inputs are not modified'
    assert InstanceData.cat([first]) is first


@pytest.mark.parametrize('items, error, message', [
    ([], ValueError, r'needs at least one InstanceData, but got an empty list'),
    ([InstanceData(x=torch.ones(1)), BaseDataElement(x=torch.ones(1))], TypeError,
     r'takes a list of InstanceData, but item 1 is a BaseDataElement'),
    ([InstanceData(x=torch.ones(1)), InstanceData(y=torch.ones(1))], ValueError,
     r"same fields, but item 0 has \['x'\] and item 1 has \['y'\]"),
    ([InstanceData(p=NoCat([[0]])), InstanceData(p=NoCat([[1]]))], ValueError,
     r"field 'p' \(NoCat\) cannot be concatenated: it needs a cat method"),
])
def test_cat_refuses_what_it_cannot_join(items, error, message):
    with pytest.raises(error, match=message):
        InstanceData.cat(items)


def test_an_empty_instance_data_has_length_zero():
    assert len(InstanceData()) == 0 and len(InstanceData(metainfo=dict(a=1))) == 0


# -- LabelData ------------------------------------------------------------------------------
def test_labels_and_one_hot_vectors_convert_both_ways():
    onehot = LabelData.label_to_onehot(torch.tensor([1, 3]), num_classes=5)

    assert onehot.tolist() == [0, 1, 0, 1, 0] and onehot.dtype == torch.int64
    assert LabelData.onehot_to_label(onehot).tolist() == [1, 3]
    assert LabelData.onehot_to_label(torch.zeros(3)).tolist() == []


@pytest.mark.parametrize('call, error, message', [
    (lambda: LabelData.onehot_to_label([0, 1]), TypeError,
     r'onehot must be a tensor, but got list'),
    (lambda: LabelData.onehot_to_label(torch.tensor([0, 2])), ValueError,
     r'onehot must be a 1-D tensor of 0s and 1s, but got shape \(2,\)'),
    (lambda: LabelData.onehot_to_label(torch.ones(2, 2)), ValueError, r'but got shape \(2, 2\)'),
    (lambda: LabelData.label_to_onehot(torch.tensor([5]), 5), ValueError,
     r'labels must be in \[0, 5\) for num_classes=5'),
    (lambda: LabelData.label_to_onehot(torch.tensor([-1]), 5), ValueError, r'must be in \[0, 5\)'),
    (lambda: LabelData.label_to_onehot(1, 5), TypeError, r'label must be a tensor, but got int'),
    (lambda: LabelData.label_to_onehot(torch.tensor([1]), 2.0), TypeError,
     r'num_classes must be an int, but got 2.0'),
])
def test_label_conversions_refuse_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_label_data_holds_any_fields():
    label = LabelData(metainfo=dict(num_classes=3), score=torch.ones(3), text='cat')

    assert label.keys() == ['score', 'text'] and label.num_classes == 3


# -- PixelData ------------------------------------------------------------------------------
def test_pixel_fields_share_height_and_width_and_2d_ones_get_a_channel_dim():
    pixels = PixelData(metainfo=dict(img_id=1), image=np.zeros((4, 20, 40)),
                       feat=torch.ones(10, 20, 40))
    pixels.mask = torch.ones(20, 40)

    assert pixels.shape == (20, 40) and pixels.mask.shape == (1, 20, 40)
    assert PixelData().shape is None


@pytest.mark.parametrize('value, error, message', [
    (torch.ones(3, 20, 30), ValueError, r"'bad' has height and width \(20, 30\), but this "
                                        r"PixelData is \(20, 40\)"),
    (torch.ones(1, 3, 20, 40), ValueError, r"PixelData fields must be \(C, H, W\) or \(H, W\), "
                                           r"but 'bad' has 4 dims"),
    ([[1]], TypeError, r"PixelData fields must be tensors or NumPy arrays, but 'bad' is a list"),
])
def test_pixel_fields_of_another_size_type_or_rank_are_refused(value, error, message):
    pixels = PixelData(feat=torch.ones(2, 20, 40))

    with pytest.raises(error, match=message):
        pixels.bad = value
    assert pixels.keys() == ['feat']


def test_pixel_data_is_cropped_by_height_and_width_keeping_the_dims():
    feat = torch.arange(2 * 20 * 40).view(2, 20, 40)
    pixels = PixelData(metainfo=dict(img_id=1), feat=feat, image=np.ones((3, 20, 40)))

    point, crop = pixels[10, 20], pixels[10:20, 20:40]

    assert point.shape == (1, 1) and crop.shape == (10, 20) and crop.img_id == 1
    assert point.feat[:, 0, 0].tolist() == feat[:, 10, 20].tolist()
    assert torch.equal(crop.feat, feat[:, 10:20, 20:40]) and crop.image.shape == (3, 10, 20)
    assert pixels[-1, :].shape == (1, 40)


@pytest.mark.parametrize('index', [3, (1, 2, 3), (1.0, 2), ('a', slice(None))])
def test_pixel_data_refuses_other_indices(index):
    pixels = PixelData(feat=torch.ones(1, 4, 4))

    with pytest.raises(TypeError, match=r'PixelData (is indexed by \(height, width\)|indices '
                                        r'must be ints or slices)'):
        pixels[index]


@pytest.mark.cuda
def test_cuda_and_cpu_move_data_tensors_and_nested_elements():
    el = element()
    el.nested = InstanceData(b=torch.ones(2, 1))

    on_gpu = el.cuda()

    assert on_gpu.scores.is_cuda and on_gpu.nested.b.is_cuda and not el.scores.is_cuda
    assert on_gpu.to('cuda:0').bboxes.is_cuda
    back = on_gpu.cpu()
    assert back.scores.device.type == 'cpu' and back.nested.b.device.type == 'cpu'
    assert isinstance(on_gpu.numpy().scores, np.ndarray)
