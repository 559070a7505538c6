"""Data preprocessors: batches follow the module's device; ImgDataPreprocessor as in MMEngine."""
from __future__ import annotations

import collections
import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from fengine.model.data_preprocessor import (BaseDataPreprocessor, ImgDataPreprocessor,
                                             stack_batch)
from fengine.registry import MODELS

META = torch.device('meta')
Pair = collections.namedtuple('Pair', ['image', 'name'])


class DataSample:
    """An MMEngine-style data sample: not a pytree node, but it has ``.to()``."""

    def __init__(self, label: torch.Tensor, calls: list | None = None) -> None:
        self.label = label
        self.calls = [] if calls is None else calls

    def to(self, *args, **kwargs) -> 'DataSample':
        self.calls.append((args, kwargs))
        return DataSample(self.label.to(*args, **kwargs), self.calls)


class Holder(nn.Module):
    """A parent model holding the preprocessor, as BaseModel does."""

    def __init__(self, preprocessor: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.data_preprocessor = preprocessor


class RecordToCopy(TorchDispatchMode):
    """Records the ``non_blocking`` argument of every tensor copy to another device."""

    def __init__(self) -> None:
        super().__init__()
        self.non_blocking: list[bool] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default:
            self.non_blocking.append(kwargs.get('non_blocking', False))
        return func(*args, **kwargs)


def on_meta(preprocessor: nn.Module) -> Holder:
    """Move ``preprocessor`` to meta the way a user would: by moving its parent."""
    return Holder(preprocessor).to(META)


# -- BaseDataPreprocessor: moving batches -------------------------------------------
def test_cast_data_moves_tensors_in_nested_dicts_lists_tuples_and_namedtuples():
    preprocessor = on_meta(BaseDataPreprocessor()).data_preprocessor
    batch = collections.OrderedDict(
        inputs=[torch.ones(2), (torch.zeros(3), {'deep': torch.arange(4)})],
        pair=Pair(torch.ones(1, 2), 'cat'))

    out = preprocessor(batch)

    assert type(out) is collections.OrderedDict and list(out) == ['inputs', 'pair']
    assert type(out['inputs']) is list and type(out['inputs'][1]) is tuple
    assert type(out['pair']) is Pair and out['pair'].name == 'cat'
    moved = [out['inputs'][0], out['inputs'][1][0], out['inputs'][1][1]['deep'],
             out['pair'].image]
    assert [t.device for t in moved] == [META] * 4
    assert [t.shape for t in moved] == [(2,), (3,), (4,), (1, 2)]
    assert batch['inputs'][0].device.type == 'cpu', 'the caller batch is not modified'


def test_cast_data_leaves_strings_numbers_none_arrays_and_classes_untouched():
    preprocessor = on_meta(BaseDataPreprocessor()).data_preprocessor
    array = np.ones(3)
    batch = {'name': 'img.png', 'index': 7, 'scale': 0.5, 'missing': None,
             'array': array, 'cls': torch.Tensor, 'raw': b'bytes'}

    out = preprocessor.cast_data(batch)

    assert out == {k: v for k, v in batch.items() if k != 'array'} | {'array': array}
    assert out['array'] is array and out['cls'] is torch.Tensor and out['missing'] is None


def test_cast_data_moves_objects_with_a_to_method_like_data_samples():
    preprocessor = on_meta(BaseDataPreprocessor()).data_preprocessor
    sample = DataSample(torch.tensor([3]))

    out = preprocessor({'inputs': torch.ones(1), 'data_samples': [sample]})

    moved = out['data_samples'][0]
    assert isinstance(moved, DataSample) and moved.label.device == META
    assert sample.calls == [((META,), {})], 'non_blocking is not passed unless set'


def test_cast_data_does_not_move_modules_found_in_a_batch():
    preprocessor = on_meta(BaseDataPreprocessor()).data_preprocessor
    layer = nn.Linear(1, 1)

    assert preprocessor.cast_data([layer])[0] is layer
    assert layer.weight.device.type == 'cpu'


def test_non_blocking_is_passed_to_tensor_and_data_sample_copies():
    preprocessor = on_meta(BaseDataPreprocessor(non_blocking=True)).data_preprocessor
    sample = DataSample(torch.tensor([1]))

    with RecordToCopy() as record:
        preprocessor({'inputs': torch.ones(2), 'data_samples': [sample]})

    assert record.non_blocking == [True, True]
    assert sample.calls == [((META,), {'non_blocking': True})]


def test_forward_ignores_training_and_returns_cast_data():
    preprocessor = BaseDataPreprocessor()
    batch = (torch.ones(2), 'label')

    for training in (True, False):
        out = preprocessor(batch, training=training)
        assert type(out) is tuple and out[1] == 'label'
        torch.testing.assert_close(out[0], batch[0])


# -- BaseDataPreprocessor: the device -------------------------------------------------
def test_device_starts_on_cpu():
    assert BaseDataPreprocessor().device == torch.device('cpu')


def test_device_follows_to_and_to_empty_of_the_preprocessor_itself():
    preprocessor = BaseDataPreprocessor()

    assert preprocessor.to(META) is preprocessor and preprocessor.device == META
    # Leaving meta needs to_empty (there is no data to copy); the device still follows.
    assert preprocessor.to_empty(device='cpu').device == torch.device('cpu')


def test_device_follows_every_way_of_moving_a_parent_module():
    holder = Holder(BaseDataPreprocessor())

    holder.to(META)
    assert holder.data_preprocessor.device == META
    assert holder.data_preprocessor(torch.ones(2)).device == META

    holder.to_empty(device='cpu')
    assert holder.data_preprocessor.device == torch.device('cpu')

    holder._apply(lambda t: t.to(META))
    assert holder.data_preprocessor.device == META


def test_device_survives_a_dtype_change_and_a_deepcopy():
    holder = Holder(BaseDataPreprocessor()).to(META).half()

    assert holder.data_preprocessor.device == META
    assert copy.deepcopy(holder).data_preprocessor.device == META


def test_the_device_anchor_is_a_buffer_but_not_in_the_state_dict():
    holder = Holder(ImgDataPreprocessor(mean=[1.0], std=[2.0]))

    assert 'data_preprocessor._device_anchor' in dict(holder.named_buffers())
    assert list(holder.state_dict()) == ['linear.weight', 'linear.bias']
    assert holder.data_preprocessor._device_anchor.numel() == 0


def test_mmengines_device_attribute_reads_the_device_and_cannot_be_set():
    holder = Holder(BaseDataPreprocessor()).to(META)

    assert holder.data_preprocessor._device == META
    with pytest.raises(AttributeError):
        holder.data_preprocessor._device = torch.device('cpu')
    assert holder.data_preprocessor.device == META


def test_cast_data_moves_data_elements_and_their_nested_elements():
    from fengine.structures import BaseDataElement, InstanceData
    preprocessor = on_meta(BaseDataPreprocessor()).data_preprocessor
    sample = BaseDataElement(metainfo=dict(img_shape=(4, 4)),
                             gt=InstanceData(bboxes=torch.ones(2, 4), names=['a', 'b']),
                             label=torch.tensor([1]))

    out = preprocessor({'inputs': torch.ones(1), 'data_samples': [sample]})

    moved = out['data_samples'][0]
    assert type(moved) is BaseDataElement and moved.img_shape == (4, 4)
    assert moved.label.device == META and moved.gt.bboxes.device == META
    assert type(moved.gt) is InstanceData and moved.gt.names == ['a', 'b']
    assert sample.label.device.type == 'cpu', 'the caller sample is not modified'


def test_no_shadow_device_attribute_and_no_to_cuda_cpu_overrides():
    preprocessor = BaseDataPreprocessor()

    assert '_device' not in vars(preprocessor)
    for name in ('to', 'cuda', 'cpu', '_apply'):
        assert getattr(BaseDataPreprocessor, name) is getattr(nn.Module, name), name


def test_non_blocking_must_be_a_bool():
    with pytest.raises(TypeError, match=r"non_blocking must be a bool, but got 'yes'"):
        BaseDataPreprocessor(non_blocking='yes')


def test_seed_normalize_data_preprocessor_example_runs():

    class NormalizeDataPreprocessor(BaseDataPreprocessor):

        def forward(self, data, training=False):
            img, label = [item for item in data]
            img = (img - 127.5) / 127.5
            return img, label

    data = (torch.full((3, 28, 28), fill_value=127.5), torch.ones(3, 10))

    img, label = NormalizeDataPreprocessor()(data)

    torch.testing.assert_close(img, torch.zeros(3, 28, 28))
    torch.testing.assert_close(label, torch.ones(3, 10))


# -- ImgDataPreprocessor: what it computes --------------------------------------------
def by_hand(image: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """``(x - mean) / std`` one channel at a time."""
    out = torch.empty(image.shape, dtype=torch.float32)
    for c in range(image.shape[0]):
        out[c] = (image[c].float() - mean[c]) / std[c]
    return out


def test_img_normalizes_each_channel_like_a_hand_computation():
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)

    out = ImgDataPreprocessor(mean=mean, std=std)({'inputs': images})

    assert out['inputs'].dtype == torch.float32 and out['inputs'].shape == (2, 3, 4, 5)
    for i in range(2):
        torch.testing.assert_close(out['inputs'][i], by_hand(images[i], mean, std))


def test_img_one_value_mean_and_std_apply_to_every_channel():
    images = [torch.full((3, 2, 2), 9.0), torch.full((1, 2, 2), 9.0)]

    rgb = ImgDataPreprocessor(mean=[1], std=[4])({'inputs': images[:1]})
    gray = ImgDataPreprocessor(mean=[1], std=[4])({'inputs': images[1:]})

    torch.testing.assert_close(rgb['inputs'], torch.full((1, 3, 2, 2), 2.0))
    torch.testing.assert_close(gray['inputs'], torch.full((1, 1, 2, 2), 2.0))


@pytest.mark.parametrize('mean, std', [([10.0], [1.0, 2.0, 4.0]), ([10.0, 20.0, 30.0], [2.0])])
def test_img_one_value_of_mean_or_std_goes_with_three_of_the_other(mean, std):
    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    per_channel = lambda values: values * 3 if len(values) == 1 else values  # noqa: E731

    out = ImgDataPreprocessor(mean=mean, std=std)({'inputs': list(images)})['inputs']

    for i in range(2):
        torch.testing.assert_close(out[i], by_hand(images[i], per_channel(mean),
                                                   per_channel(std)))


def test_img_without_mean_and_std_only_converts_uint8_to_float():
    images = torch.randint(0, 256, (2, 1, 3, 3), dtype=torch.uint8)

    out = ImgDataPreprocessor()({'inputs': images})['inputs']

    assert out.dtype == torch.float32
    torch.testing.assert_close(out, images.float(), rtol=0, atol=0)


@pytest.mark.parametrize('flag', ['bgr_to_rgb', 'rgb_to_bgr'])
def test_img_flip_reverses_the_channels_of_a_list_and_of_a_batch(flag):
    image = torch.stack([torch.full((2, 2), float(c)) for c in range(3)])

    for inputs in ([image], image[None]):
        out = ImgDataPreprocessor(**{flag: True})({'inputs': inputs})['inputs']
        assert out[0, :, 0, 0].tolist() == [2.0, 1.0, 0.0]


def test_img_flip_comes_before_normalization_so_mean_is_in_the_new_order():
    image = torch.stack([torch.full((1, 1), v) for v in (30.0, 20.0, 10.0)])  # B, G, R

    out = ImgDataPreprocessor(mean=[10, 20, 30], std=[1, 1, 1], bgr_to_rgb=True)(
        {'inputs': [image]})['inputs']

    assert out.flatten().tolist() == [0.0, 0.0, 0.0]


def test_img_flip_leaves_one_channel_images_alone():
    image = torch.arange(4.0).view(1, 1, 2, 2)

    out = ImgDataPreprocessor(bgr_to_rgb=True)({'inputs': image})['inputs']

    torch.testing.assert_close(out, image)


def test_img_pads_a_list_bottom_right_to_a_multiple_of_the_divisor_and_stacks():
    small = torch.full((3, 5, 7), 4.0)
    tall = torch.full((3, 6, 4), 8.0)

    out = ImgDataPreprocessor(mean=[0], std=[2], pad_size_divisor=4, pad_value=-1)(
        {'inputs': [small, tall]})['inputs']

    assert out.shape == (2, 3, 8, 8)
    expected = torch.full((2, 3, 8, 8), -1.0)
    expected[0, :, :5, :7] = 2.0
    expected[1, :, :6, :4] = 4.0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_img_pads_a_list_to_the_largest_image_when_the_divisor_is_one():
    out = ImgDataPreprocessor()({'inputs': [torch.ones(1, 2, 3), torch.ones(1, 3, 2)]})

    assert out['inputs'].shape == (2, 1, 3, 3)
    assert out['inputs'][0, 0, 2].tolist() == [0.0, 0.0, 0.0]
    assert out['inputs'][1, 0, :, 2].tolist() == [0.0, 0.0, 0.0]


def test_img_pads_a_batched_tensor_to_a_multiple_of_the_divisor():
    images = torch.ones(2, 3, 5, 6)

    out = ImgDataPreprocessor(pad_size_divisor=8, pad_value=7)({'inputs': images})['inputs']

    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out[:, :, :5, :6], images)
    assert out[:, :, 5:].eq(7).all() and out[:, :, :, 6:].eq(7).all()


def test_img_returns_inputs_data_samples_and_keeps_other_keys():
    samples = [DataSample(torch.tensor([1])), DataSample(torch.tensor([2]))]
    batch = {'inputs': torch.ones(2, 1, 2, 2), 'data_samples': samples, 'ids': [3, 4]}
    bare_batch = {'inputs': torch.ones(1, 1, 2, 2, dtype=torch.uint8)}

    out = ImgDataPreprocessor()(batch)
    bare = ImgDataPreprocessor()(bare_batch)

    assert set(out) == {'inputs', 'data_samples', 'ids'} and out['ids'] == [3, 4]
    assert [s.label.item() for s in out['data_samples']] == [1, 2]
    assert bare['data_samples'] is None
    assert list(bare_batch) == ['inputs'] and bare_batch['inputs'].dtype == torch.uint8, (
        'the caller batch is not modified')


def test_img_moves_inputs_and_its_mean_and_std_with_the_parent_module():
    holder = on_meta(ImgDataPreprocessor(mean=[1, 2, 3], std=[1, 2, 3], pad_size_divisor=4))

    out = holder.data_preprocessor({'inputs': [torch.ones(3, 3, 3)]})['inputs']

    assert holder.data_preprocessor.mean.device == META
    assert out.device == META and out.shape == (1, 3, 4, 4)


def test_img_mean_and_std_are_float_buffers_of_shape_c11_outside_the_state_dict():
    preprocessor = ImgDataPreprocessor(mean=(1, 2, 3), std=(4, 5, 6))

    assert preprocessor.mean.shape == (3, 1, 1) and preprocessor.mean.dtype == torch.float32
    assert preprocessor.std.flatten().tolist() == [4.0, 5.0, 6.0]
    assert preprocessor.state_dict() == {}


def test_both_preprocessors_build_from_a_models_config():
    img = MODELS.build(dict(type='ImgDataPreprocessor', mean=[127.5], std=[127.5],
                            pad_size_divisor=2, bgr_to_rgb=True))
    base = MODELS.build(dict(type='BaseDataPreprocessor', non_blocking=True))

    assert type(img) is ImgDataPreprocessor and img.pad_size_divisor == 2
    assert img.mean.item() == 127.5 and img._channel_conversion
    assert type(base) is BaseDataPreprocessor and base._non_blocking is True


# -- ImgDataPreprocessor: bad configurations and inputs -------------------------------
@pytest.mark.parametrize('kwargs, message', [
    (dict(mean=[1, 2, 3]), r'mean is given \(\[1, 2, 3\]\) but std is None; pass both'),
    (dict(std=[1]), r'std is given \(\[1\]\) but mean is None; pass both'),
    (dict(mean=[1, 2], std=[1, 2]),
     r'mean must have 1 value .* or 3 values .*, as in MMEngine, but got 2 values: \[1, 2\]'),
    (dict(mean=[1], std=[1, 2, 3, 4]), r'std must have 1 value .* but got 4 values'),
    (dict(mean=[0], std=[0]), r'std must not contain 0 .* but got \[0\]'),
    (dict(bgr_to_rgb=True, rgb_to_bgr=True),
     r'bgr_to_rgb and rgb_to_bgr cannot both be True'),
    (dict(pad_size_divisor=0), r'pad_size_divisor must be an int >= 1 .* but got 0'),
])
def test_img_rejects_bad_configurations_with_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImgDataPreprocessor(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(mean='rgb', std='rgb'), r"mean must be a list or tuple of 1 or 3 numbers, but "
                                  r"got str: 'rgb'"),
    (dict(mean=[1], std=['a']), r"std must be a list or tuple of 1 or 3 numbers, but got "
                                r"\['a'\]"),
    (dict(pad_value='0'), r"pad_value must be an int or a float, but got str: '0'"),
    (dict(bgr_to_rgb=1), r'bgr_to_rgb must be a bool, but got 1'),
])
def test_img_rejects_wrongly_typed_configurations_with_type_errors(kwargs, message):
    with pytest.raises(TypeError, match=message):
        ImgDataPreprocessor(**kwargs)


@pytest.mark.parametrize('inputs, type_name', [
    (np.ones((1, 3, 2, 2)), 'ndarray'), ('img.png', 'str'), (None, 'NoneType')])
def test_img_rejects_inputs_of_an_unsupported_type_and_names_it(inputs, type_name):
    with pytest.raises(TypeError, match=r'inputs must be a \(N, C, H, W\) tensor or a list '
                                        rf'of \(C, H, W\) tensors, but got {type_name}'):
        ImgDataPreprocessor()({'inputs': inputs})


def test_img_rejects_a_list_holding_something_other_than_tensors():
    with pytest.raises(TypeError, match=r'but inputs\[1\] is a ndarray'):
        ImgDataPreprocessor()({'inputs': [torch.ones(1, 2, 2), np.ones((1, 2, 2))]})


def test_img_rejects_images_with_different_channel_counts_in_a_list():
    with pytest.raises(ValueError, match=r'same number of channels to be stacked, but got '
                                         r'channel counts \[3, 1\] \(shapes \[\(3, 2, 2\), '
                                         r'\(1, 4, 4\)\]\)'):
        ImgDataPreprocessor()({'inputs': [torch.ones(3, 2, 2), torch.ones(1, 4, 4)]})


@pytest.mark.parametrize('inputs, shape', [
    ([torch.ones(1, 4, 4)], r'\(1, 4, 4\)'), (torch.ones(2, 1, 4, 4), r'\(2, 1, 4, 4\)')])
def test_img_rejects_a_three_value_mean_for_one_channel_images(inputs, shape):
    preprocessor = ImgDataPreprocessor(mean=[1, 2, 3], std=[1, 2, 3])

    with pytest.raises(ValueError, match=r'mean has 3 values .* images must have 3 '
                                         rf'channels, but got an image of shape {shape}. '
                                         r'Use 1-value mean and std for gray images'):
        preprocessor({'inputs': inputs})


def test_img_rejects_a_one_value_mean_with_a_three_value_std_for_gray_images():
    preprocessor = ImgDataPreprocessor(mean=[1], std=[1, 2, 3])

    with pytest.raises(ValueError, match=r'std has 3 values .* but got an image of shape '
                                         r'\(1, 4, 4\)'):
        preprocessor({'inputs': [torch.ones(1, 4, 4)]})


@pytest.mark.parametrize('inputs, message', [
    (torch.ones(3, 4, 4), r'must be batched as \(N, C, H, W\), but got shape \(3, 4, 4\)'),
    ([torch.ones(4, 4)], r'must be a \(C, H, W\) tensor, but inputs\[0\] has shape \(4, 4\)'),
    ([], r'inputs is an empty list'),
])
def test_img_rejects_inputs_with_the_wrong_number_of_dims(inputs, message):
    with pytest.raises(ValueError, match=message):
        ImgDataPreprocessor()({'inputs': inputs})


def test_img_rejects_data_that_is_not_a_dict_with_inputs():
    with pytest.raises(TypeError, match=r'expects a dict with "inputs" \(and optionally '
                                        r'"data_samples"\), but got tuple'):
        ImgDataPreprocessor()((torch.ones(1, 1, 2, 2), None))
    with pytest.raises(KeyError, match=r'expects a dict with "inputs", but its keys are: '
                                       r'img, data_samples'):
        ImgDataPreprocessor()({'img': torch.ones(1, 1, 2, 2), 'data_samples': None})


# -- stack_batch --------------------------------------------------------------------
def test_stack_batch_stacks_without_padding_when_sizes_already_fit():
    tensors = [torch.ones(2, 4, 4), torch.zeros(2, 4, 4)]

    torch.testing.assert_close(stack_batch(tensors, pad_size_divisor=2), torch.stack(tensors))


def test_stack_batch_pads_every_dim_but_the_first_and_promotes_dtypes():
    out = stack_batch([torch.ones(1, 3, dtype=torch.uint8), torch.full((1, 1), 0.5)],
                      pad_size_divisor=2, pad_value=9)

    assert out.dtype == torch.float32
    assert out.tolist() == [[[1.0, 1.0, 1.0, 9.0]], [[0.5, 9.0, 9.0, 9.0]]]


@pytest.mark.parametrize('tensors, error, message', [
    (torch.ones(2, 2), TypeError, r'expects a list of tensors, but got Tensor'),
    ([torch.ones(1), 'x'], TypeError, r'but item 1 is a str'),
    ([], ValueError, r'empty list'),
    ([torch.ones(1, 2), torch.ones(1, 2, 2)], ValueError,
     r'same number of dims .* but got shapes \[\(1, 2\), \(1, 2, 2\)\]'),
    ([torch.ones(1, 2), torch.ones(3, 2)], ValueError,
     r'the first dims must match, but got shapes \[\(1, 2\), \(3, 2\)\]'),
])
def test_stack_batch_rejects_bad_lists(tensors, error, message):
    with pytest.raises(error, match=message):
        stack_batch(tensors)


# -- CUDA ---------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_and_cpu_move_the_device_and_the_batches():
    holder = Holder(BaseDataPreprocessor(non_blocking=True)).cuda()
    preprocessor = holder.data_preprocessor

    assert preprocessor.device == torch.device('cuda', torch.cuda.current_device())
    out = preprocessor({'inputs': torch.ones(2).pin_memory(),
                        'data_samples': [DataSample(torch.tensor([1]))]})
    assert out['inputs'].is_cuda and out['data_samples'][0].label.is_cuda

    holder.cpu()
    assert preprocessor.device == torch.device('cpu')
    assert preprocessor(torch.ones(2)).device.type == 'cpu'


@pytest.mark.cuda
def test_cuda_img_preprocessing_matches_the_cpu_result():
    config = dict(mean=[1, 2, 3], std=[4, 5, 6], pad_size_divisor=8, bgr_to_rgb=True)
    images = [torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8),
              torch.randint(0, 256, (3, 9, 2), dtype=torch.uint8)]

    on_cpu = ImgDataPreprocessor(**config)({'inputs': images})['inputs']
    on_gpu = ImgDataPreprocessor(**config).to('cuda')({'inputs': images})['inputs']

    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu)
