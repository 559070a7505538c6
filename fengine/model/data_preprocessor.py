"""Data preprocessors: move a batch to the model's device, optionally normalize images.

MMEngine: ``mmengine.model.base_model.data_preprocessor`` (and ``stack_batch`` from
``mmengine.model.utils``).

The device is read from a non-persistent, empty buffer rather than kept in a shadow
attribute updated by overriding ``to``/``cuda``/``cpu``/``npu``...: every way of moving
the module (``.to``, ``.cuda``, ``.cpu``, ``to_empty``, moving the parent model, which
goes through ``_apply``) moves the buffer, so :attr:`BaseDataPreprocessor.device`
cannot drift from where the module really is.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import SUPPORTED_NODES, tree_map

from .._errors import check_bool, check_int
from ..registry import MODELS

__all__ = ['BaseDataPreprocessor', 'ImgDataPreprocessor', 'stack_batch']


def _check_divisor(value: object) -> int:
    # bool is an int subclass; pad_size_divisor=True is a mistake, not 1.
    return check_int('pad_size_divisor', value, minimum=1,
                     accepted='an int >= 1 (1 means no rounding up)')


@MODELS.register_module()
class BaseDataPreprocessor(nn.Module):
    """Moves a batch to the preprocessor's device (MMEngine: ``BaseDataPreprocessor``).

    ``BaseModel`` holds one as ``data_preprocessor`` and calls it on every batch.
    Subclasses override :meth:`forward` for batch-level work (normalization, MixUp,
    batch resize...), usually starting with :meth:`cast_data`.

    Args:
        non_blocking: Passed to ``Tensor.to``; with pinned host memory it lets a
            host-to-GPU copy overlap with computation.

    Example:
        >>> import torch
        >>> from fengine.model.data_preprocessor import BaseDataPreprocessor
        >>> preprocessor = BaseDataPreprocessor()
        >>> preprocessor.device
        device(type='cpu')
        >>> batch = preprocessor(dict(inputs=torch.ones(2, 3), meta=['a', 'b']))
        >>> batch['inputs'].device, batch['meta']
        (device(type='cpu'), ['a', 'b'])
    """

    def __init__(self, non_blocking: bool = False) -> None:
        super().__init__()
        check_bool('non_blocking', non_blocking)
        self._non_blocking = non_blocking
        # Where the module is, read back by `device`. An empty buffer moves with every
        # `_apply` (to/cuda/cpu/to_empty, or the parent model being moved) and costs no
        # memory; non-persistent keeps it out of state_dict and checkpoints.
        self.register_buffer('_device_anchor', torch.empty(0), persistent=False)

    @property
    def device(self) -> torch.device:
        """The device batches are moved to: wherever this module currently is."""
        return self._device_anchor.device

    @property
    def _device(self) -> torch.device:
        """MMEngine's attribute for :attr:`device`, kept readable for code that uses it;
        read-only, since the device follows the module."""
        return self._device_anchor.device

    def cast_data(self, data: Any) -> Any:
        """Move every tensor in ``data`` to :attr:`device` (MMEngine: ``cast_data``).

        Walks dicts, lists, tuples and namedtuples (each keeps its type) with
        ``torch.utils._pytree.tree_map``. Leaves that are tensors, data elements
        (:class:`~fengine.structures.BaseDataElement`, whose ``to`` moves every tensor
        they hold, nested elements included) or other objects with a ``.to()`` method
        are moved with ``.to(device)``; ``non_blocking=True`` is passed only when set,
        so a data sample whose ``to`` takes just a device works by default. Everything
        else (strings, numbers, ``None``, arrays, classes, modules) is returned unchanged.

        Args:
            data: A batch as the dataloader returns it.

        Returns:
            The same structure with its tensors on :attr:`device`.
        """
        device = self.device
        non_blocking = self._non_blocking

        def move(leaf: Any) -> Any:
            if isinstance(leaf, torch.Tensor):
                return leaf.to(device, non_blocking=non_blocking)
            # A class has an unbound `to` (e.g. torch.Tensor.to); a module would be
            # moved in place, which is not a batch's business.
            if isinstance(leaf, (type, nn.Module)):
                return leaf
            to = getattr(leaf, 'to', None)
            if not callable(to):
                return leaf
            return to(device, non_blocking=True) if non_blocking else to(device)

        return tree_map(move, data)

    def forward(self, data: Any, training: bool = False) -> Any:
        """Return ``cast_data(data)``.

        Args:
            data: A batch as the dataloader returns it.
            training: Whether the batch is for training (``train_step`` passes True,
                ``val_step``/``test_step`` False); subclasses may augment only then.

        Returns:
            ``data`` on :attr:`device`, in the same structure.
        """
        return self.cast_data(data)

    def extra_repr(self) -> str:
        return f'non_blocking={self._non_blocking}'


def stack_batch(tensor_list: Sequence[torch.Tensor],
                pad_size_divisor: int = 1,
                pad_value: int | float = 0) -> torch.Tensor:
    """Pad tensors at the end of every dim but the first, and stack them.

    MMEngine: ``mmengine.model.utils.stack_batch``. Each dim after the first (for
    images: H and W; the first is the channel dim, never padded) is padded on the
    bottom/right to the largest size in the batch, rounded up to a multiple of
    ``pad_size_divisor``.

    Args:
        tensor_list: Tensors with the same number of dims and the same first dim.
        pad_size_divisor: Padded sizes are multiples of this (1: no rounding up).
        pad_value: The value of the padded elements.

    Returns:
        A tensor of shape ``(len(tensor_list), C, *padded_sizes)``.

    Raises:
        TypeError: ``tensor_list`` is not a list/tuple of tensors.
        ValueError: It is empty, or the tensors differ in their number of dims or in
            their first dim, or ``pad_size_divisor`` is not an int >= 1.

    Example:
        >>> import torch
        >>> from fengine.model.data_preprocessor import stack_batch
        >>> stack_batch([torch.ones(1, 2, 3), torch.ones(1, 4, 1)], pad_size_divisor=4).shape
        torch.Size([2, 1, 4, 4])
    """
    if not isinstance(tensor_list, (list, tuple)):
        raise TypeError(f'stack_batch expects a list of tensors, but got '
                        f'{type(tensor_list).__name__}')
    if not tensor_list:
        raise ValueError('stack_batch got an empty list; there is nothing to stack')
    for index, tensor in enumerate(tensor_list):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f'stack_batch expects a list of tensors, but item {index} is '
                            f'a {type(tensor).__name__}')
    pad_size_divisor = _check_divisor(pad_size_divisor)
    shapes = [tuple(t.shape) for t in tensor_list]
    if len({len(s) for s in shapes}) != 1 or not shapes[0]:
        raise ValueError(f'stack_batch needs tensors with the same number of dims '
                         f'(at least 1), but got shapes {shapes}')
    if len({s[0] for s in shapes}) != 1:
        raise ValueError(f'stack_batch pads every dim but the first (the channels), so '
                         f'the first dims must match, but got shapes {shapes}')

    padded = [shapes[0][0]] + [
        math.ceil(max(sizes) / pad_size_divisor) * pad_size_divisor
        for sizes in zip(*(s[1:] for s in shapes))]
    if all(list(s) == padded for s in shapes):
        return torch.stack(list(tensor_list))
    dtype = reduce(torch.promote_types, (t.dtype for t in tensor_list))
    # One allocation filled with pad_value, then each tensor copied into its
    # top-left corner: the same result as F.pad per tensor and a stack, with one copy.
    batch = tensor_list[0].new_full((len(tensor_list), *padded), pad_value, dtype=dtype)
    for index, tensor in enumerate(tensor_list):
        batch[(index, *(slice(0, size) for size in tensor.shape))] = tensor
    return batch


def _channel_stats(name: str, value: object) -> torch.Tensor:
    """``mean``/``std`` as a float tensor of shape (C, 1, 1), C being 1 or 3."""
    # A str has a length too: 'rgb' would pass as 3 values without this check.
    if isinstance(value, (str, bytes)) or not (isinstance(value, (Sequence, torch.Tensor))
                                               or hasattr(value, '__array__')):
        raise TypeError(f'{name} must be a list or tuple of 1 or 3 numbers, but got '
                        f'{type(value).__name__}: {value!r}')
    try:
        stats = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f'{name} must be a list or tuple of 1 or 3 numbers, but got '
                        f'{value!r}') from None
    if stats.dim() != 1 or stats.numel() not in (1, 3):
        raise ValueError(f'{name} must have 1 value (shared by all channels, or a gray '
                         f'image) or 3 values (one per channel of an RGB/BGR image), as in '
                         f'MMEngine, but got {stats.numel()} values: {value!r}')
    return stats.view(-1, 1, 1)


@MODELS.register_module()
class ImgDataPreprocessor(BaseDataPreprocessor):
    """Moves, flips, normalizes, pads and stacks images (MMEngine: ``ImgDataPreprocessor``).

    ``data`` is a dict with ``inputs`` (a ``(N, C, H, W)`` tensor, or a list of
    ``(C, H, W)`` tensors of possibly different sizes) and optionally
    ``data_samples``. In order, each image is: moved to :attr:`device`; channel-flipped
    if it has 3 channels and ``bgr_to_rgb`` or ``rgb_to_bgr`` is set (other channel
    counts are left as they are); cast to float32; normalized as ``(x - mean) / std``;
    padded on the bottom/right with ``pad_value`` to a common size that is a multiple
    of ``pad_size_divisor``; and stacked. A batched tensor is padded the same way.

    Args:
        mean: Per-channel mean (1 or 3 values), in the channel order after the flip.
            ``None`` (with ``std=None``) disables normalization.
        std: Per-channel standard deviation (1 or 3 values; as in MMEngine, one value
            may go with three of ``mean`` and the other way round).
        pad_size_divisor: Padded heights and widths are multiples of this.
        pad_value: The value of padded pixels (after normalization).
        bgr_to_rgb: Reverse the channel order of 3-channel images.
        rgb_to_bgr: The same flip; set at most one of the two.
        non_blocking: Passed to ``Tensor.to`` (see :class:`BaseDataPreprocessor`).

    Raises:
        ValueError: Only one of ``mean``/``std`` is given, the length of one is not 1
            or 3, both flips are set, or ``pad_size_divisor`` < 1.
        TypeError: ``mean``/``std`` are not sequences of numbers.

    Example:
        >>> import torch
        >>> from fengine.model.data_preprocessor import ImgDataPreprocessor
        >>> preprocessor = ImgDataPreprocessor(mean=[127.5], std=[127.5], pad_size_divisor=4)
        >>> images = [torch.full((1, 2, 3), 255, dtype=torch.uint8),
        ...           torch.zeros(1, 3, 2, dtype=torch.uint8)]
        >>> batch = preprocessor(dict(inputs=images))
        >>> batch['inputs'].shape, batch['inputs'][0, 0, 0, 0].item(), batch['data_samples']
        (torch.Size([2, 1, 4, 4]), 1.0, None)
    """

    def __init__(self,
                 mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None,
                 pad_size_divisor: int = 1,
                 pad_value: int | float = 0,
                 bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False,
                 non_blocking: bool = False) -> None:
        super().__init__(non_blocking=non_blocking)
        check_bool('bgr_to_rgb', bgr_to_rgb)
        check_bool('rgb_to_bgr', rgb_to_bgr)
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError('bgr_to_rgb and rgb_to_bgr cannot both be True: both reverse '
                             'the channel order, so together they would undo each other. '
                             'Set the one that matches your images.')
        if (mean is None) != (std is None):
            given, missing = ('mean', 'std') if std is None else ('std', 'mean')
            raise ValueError(f'{given} is given ({mean if std is None else std!r}) but '
                             f'{missing} is None; pass both to normalize, or neither.')
        pad_size_divisor = _check_divisor(pad_size_divisor)
        if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)):
            raise TypeError(f'pad_value must be an int or a float, but got '
                            f'{type(pad_value).__name__}: {pad_value!r}')
        self._enable_normalize = mean is not None
        if mean is not None:
            mean_t, std_t = _channel_stats('mean', mean), _channel_stats('std', std)
            if (std_t == 0).any():
                raise ValueError(f'std must not contain 0 (normalization divides by it), '
                                 f'but got {std!r}')
            # Non-persistent: they come from the config, not from training, so they
            # follow the module's device without entering checkpoints.
            self.register_buffer('mean', mean_t, persistent=False)
            self.register_buffer('std', std_t, persistent=False)
        self._channel_conversion = bgr_to_rgb or rgb_to_bgr
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = pad_value

    def _check_channels(self, channels: int, shape: tuple[int, ...]) -> None:
        # A 3-value mean (or std) broadcast over 1 channel would silently make 3 channels.
        if not self._enable_normalize or channels == 3:
            return
        for name, stats in (('mean', self.mean), ('std', self.std)):
            if stats.shape[0] == 3:
                raise ValueError(f'{name} has 3 values (one per channel), so images must '
                                 f'have 3 channels, but got an image of shape {shape}. Use '
                                 '1-value mean and std for gray images.')

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        if self._enable_normalize:
            images = (images - self.mean) / self.std
        return images

    def forward(self, data: Any, training: bool = False) -> dict:
        """Preprocess a batch of images (see the class docstring for the steps).

        Args:
            data: A dict with ``inputs`` and optionally ``data_samples``.
            training: Whether the batch is for training; unused here.

        Returns:
            A dict (an OrderedDict or defaultdict stays one) with ``inputs`` as a float
            tensor of shape ``(N, C, H', W')``, ``data_samples`` (``None`` when absent)
            and any other keys of ``data``, all moved to :attr:`device`.

        Raises:
            TypeError: ``data`` is not a dict, or ``inputs`` is neither a tensor nor a
                list of tensors.
            KeyError: ``data`` has no ``inputs``.
            ValueError: An image has the wrong number of dims, the images of a list
                differ in channel count, or mean/std have 3 values and images do not
                have 3 channels.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f'{type(self).__name__} expects a dict with "inputs" (and '
                            f'optionally "data_samples"), but got {type(data).__name__}')
        if 'inputs' not in data:
            # Keys joined without quotes: KeyError shows its message with repr().
            keys = ', '.join(str(key) for key in data) or 'none'
            raise KeyError(f'{type(self).__name__} expects a dict with "inputs", but its '
                           f'keys are: {keys}')
        if type(data) not in SUPPORTED_NODES:
            # tree_map would treat an unregistered Mapping as a leaf: its tensors would
            # stay put and the caller's object would be written to below.
            data = dict(data)
        data = self.cast_data(data)
        inputs = data['inputs']
        if isinstance(inputs, torch.Tensor):
            batch = self._process_batched(inputs)
        elif isinstance(inputs, (list, tuple)):
            batch = self._process_list(inputs)
        else:
            raise TypeError(f'inputs must be a (N, C, H, W) tensor or a list of (C, H, W) '
                            f'tensors, but got {type(inputs).__name__}')
        data['inputs'] = batch
        data.setdefault('data_samples', None)
        return data

    def _process_list(self, images: Sequence[Any]) -> torch.Tensor:
        if not images:
            raise ValueError('inputs is an empty list; there are no images to stack')
        for index, image in enumerate(images):
            if not isinstance(image, torch.Tensor):
                raise TypeError(f'inputs must be a (N, C, H, W) tensor or a list of '
                                f'(C, H, W) tensors, but inputs[{index}] is a '
                                f'{type(image).__name__}')
            if image.dim() != 3:
                raise ValueError(f'each image in a list of inputs must be a (C, H, W) '
                                 f'tensor, but inputs[{index}] has shape '
                                 f'{tuple(image.shape)}')
        channels = [image.shape[0] for image in images]
        if len(set(channels)) != 1:
            raise ValueError(f'the images in inputs must have the same number of channels '
                             f'to be stacked, but got channel counts {channels} (shapes '
                             f'{[tuple(image.shape) for image in images]})')
        self._check_channels(channels[0], tuple(images[0].shape))
        processed = []
        for image in images:
            if self._channel_conversion and image.shape[0] == 3:
                image = image.flip(0)
            # Cast after the flip: indexing a uint8 image moves a quarter of the bytes.
            processed.append(self._normalize(image.float()))
        return stack_batch(processed, self.pad_size_divisor, self.pad_value)

    def _process_batched(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f'a tensor of inputs must be batched as (N, C, H, W), but got '
                             f'shape {tuple(images.shape)}; pass a list for images of '
                             'different sizes')
        self._check_channels(images.shape[1], tuple(images.shape))
        if self._channel_conversion and images.shape[1] == 3:
            images = images.flip(1)
        images = self._normalize(images.float())
        height, width = images.shape[2:]
        pad_h = math.ceil(height / self.pad_size_divisor) * self.pad_size_divisor - height
        pad_w = math.ceil(width / self.pad_size_divisor) * self.pad_size_divisor - width
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), 'constant', self.pad_value)
        return images

    def extra_repr(self) -> str:
        parts = [f'pad_size_divisor={self.pad_size_divisor}', f'pad_value={self.pad_value}',
                 f'channel_conversion={self._channel_conversion}']
        if self._enable_normalize:
            parts.insert(0, f'mean={self.mean.flatten().tolist()}, '
                            f'std={self.std.flatten().tolist()}')
        return ', '.join(parts + [super().extra_repr()])
