"""MMEngine 0.10.7's unit tests of the data preprocessors, run on fengine.

The checks of MMEngine's ``tests/test_model/test_base_model/test_data_preprocessor.py``,
rewritten: each test below names the MMEngine test it covers. Its CUDA part runs where a
GPU is (``@pytest.mark.cuda``). Where MMEngine asserts (``AssertionError`` with its own
wording), fengine raises ``ValueError`` naming the value: those checks test fengine's
message (docs/migrating.md, "Datasets and data elements").
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fengine.model import BaseDataPreprocessor, ImgDataPreprocessor
from fengine.structures import InstanceData

BGR = [2, 1, 0]


# -- TestBaseDataPreprocessor.test_init -----------------------------------------------------
def test_base_starts_on_the_cpu_and_blocking_unless_asked():
    assert BaseDataPreprocessor()._device.type == 'cpu'
    assert BaseDataPreprocessor()._non_blocking is False
    non_blocking = BaseDataPreprocessor(True)  # positional, as MMEngine's test passes it
    assert non_blocking._device.type == 'cpu' and non_blocking._non_blocking is True


# -- TestBaseDataPreprocessor.test_forward --------------------------------------------------
def test_base_forward_returns_a_dict_batch_with_its_tensors_unchanged():
    inputs = [torch.randn(1, 3, 5), torch.randn(1, 3, 5)]
    labels = [torch.randn(1), torch.randn(1)]

    out = BaseDataPreprocessor()(dict(inputs=inputs, data_sample=labels))

    assert torch.is_floating_point(out['inputs'][0]) and out['inputs'][0].shape == (1, 3, 5)
    for got, want in zip(out['inputs'] + out['data_sample'], inputs + labels):
        torch.testing.assert_close(got, want)


def test_base_forward_returns_a_tuple_batch_as_a_pair():
    stacked = torch.randn(2, 1, 3, 5)

    batch_inputs, batch_labels = BaseDataPreprocessor()((stacked, (torch.ones(1), torch.zeros(1))))

    assert torch.is_floating_point(batch_inputs)
    assert batch_inputs[0].shape == batch_inputs[1].shape == (1, 3, 5)
    assert [label.item() for label in batch_labels] == [1.0, 0.0]


def test_base_forward_passes_strings_through():
    assert BaseDataPreprocessor()(dict(string='abc')) == dict(string='abc')


@pytest.mark.cuda
def test_base_forward_follows_the_preprocessor_to_cuda_and_back():
    preprocessor = BaseDataPreprocessor()
    data = dict(inputs=[torch.randn(1, 3, 5)], data_sample=[torch.randn(1)])

    out = preprocessor.cuda()(data)
    assert out['inputs'][0].device.type == 'cuda' and out['data_sample'][0].device.type == 'cuda'
    assert preprocessor.cpu()(data)['inputs'][0].device.type == 'cpu'
    out = preprocessor.to('cuda:0')(data)
    assert out['inputs'][0].device.type == 'cuda' and preprocessor._device.type == 'cuda'


# -- TestImgDataPreprocessor.test_init ---------------------------------------------------------
def test_img_without_arguments_neither_normalizes_nor_converts_nor_pads():
    preprocessor = ImgDataPreprocessor()

    assert not preprocessor._channel_conversion and not preprocessor._enable_normalize
    assert not hasattr(preprocessor, 'mean') and not hasattr(preprocessor, 'std')
    assert preprocessor.pad_size_divisor == 1 and preprocessor.pad_value == 0


def test_img_keeps_its_configuration():
    preprocessor = ImgDataPreprocessor(bgr_to_rgb=True, mean=[0, 0, 0], std=[255, 255, 255],
                                       pad_size_divisor=16, pad_value=10)

    assert preprocessor._enable_normalize and preprocessor._channel_conversion
    torch.testing.assert_close(preprocessor.mean, torch.zeros(3, 1, 1))
    torch.testing.assert_close(preprocessor.std, torch.full((3, 1, 1), 255.0))
    assert preprocessor.pad_value == 10 and preprocessor.pad_size_divisor == 16


@pytest.mark.parametrize('kwargs, message', [
    # MMEngine: AssertionError '`mean` should have 1 or 3 values'.
    (dict(mean=(1, 2), std=(1, 2, 3)), r'mean must have 1 value .* but got 2 values: \(1, 2\)'),
    # MMEngine: AssertionError '`std` should have 1 or 3 values'.
    (dict(mean=(1, 2, 3), std=(1, 2)), r'std must have 1 value .* but got 2 values: \(1, 2\)'),
    # MMEngine: AssertionError '`bgr2rgb` and `rgb2bgr` cannot be set to True at the same time'.
    (dict(bgr_to_rgb=True, rgb_to_bgr=True), r'bgr_to_rgb and rgb_to_bgr cannot both be True'),
    # MMEngine: AssertionError 'mean and std should be both None or tuple'.
    (dict(bgr_to_rgb=True, mean=None, std=[255, 255, 255], pad_size_divisor=16, pad_value=10),
     r'std is given \(\[255, 255, 255\]\) but mean is None; pass both to normalize, or neither'),
])
def test_img_refuses_inconsistent_configurations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImgDataPreprocessor(**kwargs)


def test_img_with_a_flip_but_no_mean_does_not_normalize():
    assert not ImgDataPreprocessor(bgr_to_rgb=True, pad_size_divisor=16,
                                   pad_value=10)._enable_normalize


# -- TestImgDataPreprocessor.test_forward ---------------------------------------------------
def images_and_samples():
    images = [torch.randn(3, 10, 10), torch.randn(3, 15, 15)]
    samples = [InstanceData(bboxes=torch.randn(5, 4)), InstanceData(bboxes=torch.randn(5, 4))]
    data = dict(inputs=[image.clone() for image in images],
                data_sample=[sample.clone() for sample in samples])
    return images, samples, data


def check(out, targets, samples):
    assert torch.is_floating_point(out['inputs'])
    for image, sample, target, target_sample in zip(out['inputs'], out['data_sample'],
                                                    targets, samples):
        torch.testing.assert_close(image, target)
        torch.testing.assert_close(sample.bboxes, target_sample.bboxes)


def test_img_flips_normalizes_with_one_mean_and_three_stds_and_pads():
    images, samples, data = images_and_samples()
    preprocessor = ImgDataPreprocessor(mean=[127.5], std=[1, 2, 3], pad_size_divisor=16,
                                       pad_value=10, rgb_to_bgr=True)
    std = torch.tensor([1.0, 2.0, 3.0]).view(-1, 1, 1)
    targets = [F.pad((images[0][BGR] - 127.5) / std, (0, 6, 0, 6), value=10),
               F.pad((images[1][BGR] - 127.5) / std, (0, 1, 0, 1), value=10)]

    check(preprocessor(data, True), targets, samples)


def test_img_flips_and_pads_without_normalizing():
    images, samples, data = images_and_samples()
    preprocessor = ImgDataPreprocessor(pad_size_divisor=16, pad_value=10, rgb_to_bgr=True)
    targets = [F.pad(images[0][BGR], (0, 6, 0, 6), value=10),
               F.pad(images[1][BGR], (0, 1, 0, 1), value=10)]

    check(preprocessor(data, True), targets, samples)


def test_img_refuses_gray_images_with_a_three_value_mean():
    # MMEngine: AssertionError 'If the mean has 3 values, the input tensor should in shape
    # of (3, H, W)'. fengine also refuses (H, W) images in a list, whatever the mean.
    preprocessor = ImgDataPreprocessor(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))

    with pytest.raises(ValueError, match=r'each image in a list of inputs must be a \(C, H, W\) '
                                         r'tensor, but inputs\[0\] has shape \(10, 10\)'):
        preprocessor(dict(inputs=[torch.ones(10, 10), torch.ones(10, 10)], data_sample=None))
    with pytest.raises(ValueError, match=r'mean has 3 values .* but got an image of shape '
                                         r'\(1, 10, 10\)'):
        preprocessor(dict(inputs=[torch.ones(1, 10, 10)], data_sample=None))


def test_img_processes_a_stacked_batch_flipped_normalized_and_padded():
    preprocessor = ImgDataPreprocessor(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5),
                                       rgb_to_bgr=True, pad_size_divisor=16)
    batch = torch.randn(2, 3, 10, 10)

    out = preprocessor(dict(inputs=batch, data_sample=[torch.randn(1), torch.randn(1)]))

    target = F.pad((batch[:, BGR] - 127.5) / 127.5, (0, 6, 0, 6), value=0)
    assert out['inputs'].shape == (2, 3, 16, 16) and torch.is_floating_point(out['inputs'])
    torch.testing.assert_close(out['inputs'], target)


def test_img_processes_a_stacked_batch_without_flip_or_padding():
    preprocessor = ImgDataPreprocessor(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))
    batch = torch.randn(2, 3, 10, 10)

    out = preprocessor(dict(inputs=batch, data_sample=[torch.randn(1), torch.randn(1)]))

    assert out['inputs'].shape == (2, 3, 10, 10)
    torch.testing.assert_close(out['inputs'], (batch - 127.5) / 127.5)


def test_img_keeps_an_empty_data_sample():
    images, _, _ = images_and_samples()
    preprocessor = ImgDataPreprocessor(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))

    out = preprocessor(dict(inputs=[image.clone() for image in images], data_sample=None), True)

    assert out['data_sample'] is None and torch.is_floating_point(out['inputs'])
