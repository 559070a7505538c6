"""Pixel-level fields of one height and width (MMEngine: ``mmengine.structures.PixelData``)."""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

from .base_data_element import _FIELD_SETS, BaseDataElement

__all__ = ['PixelData']


class PixelData(BaseDataElement):
    """A :class:`BaseDataElement` whose data fields are ``(C, H, W)`` tensors or arrays
    of one ``(H, W)``: segmentation maps, flow, generated images...

    MMEngine: ``mmengine.structures.PixelData``. A 2-D value is stored as ``(1, H, W)``.
    ``pixel_data[h, w]`` (ints or slices) crops every field and keeps the dims.

    Example:
        >>> import torch
        >>> from fengine.structures import PixelData
        >>> pixels = PixelData(seg=torch.zeros(20, 40), feat=torch.ones(8, 20, 40))
        >>> pixels.shape, pixels.seg.shape, pixels[5:10, 3].shape
        ((20, 40), torch.Size([1, 20, 40]), (5, 1))
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FIELD_SETS:
            super().__setattr__(name, value)
            return
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise TypeError(f'PixelData fields must be tensors or NumPy arrays, but '
                            f'{name!r} is a {type(value).__name__}')
        if value.ndim not in (2, 3):
            raise ValueError(f'PixelData fields must be (C, H, W) or (H, W), but {name!r} '
                             f'has {value.ndim} dims (shape {tuple(value.shape)})')
        shape = self.shape
        if shape is not None and tuple(value.shape[-2:]) != shape:
            raise ValueError(f'{name!r} has height and width {tuple(value.shape[-2:])}, but '
                             f'this PixelData is {shape}')
        if value.ndim == 2:
            value = value[None]
        super().__setattr__(name, value)

    def __getitem__(self, item: tuple) -> PixelData:
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError(f'PixelData is indexed by (height, width), each an int or a '
                            f'slice, but got {item!r}')
        index: list[slice] = [slice(None)]
        for size, part in zip(self.shape or (0, 0), item):
            if isinstance(part, numbers.Integral) and not isinstance(part, bool):
                # A slice keeps the dim: an int gives a height (or width) of 1.
                index.append(slice(int(part), None, size))
            elif isinstance(part, slice):
                index.append(part)
            else:
                raise TypeError(f'PixelData indices must be ints or slices, but got '
                                f'{type(part).__name__}: {part!r}')
        new = type(self)(metainfo=self.metainfo)
        for key, value in self.items():
            setattr(new, key, value[tuple(index)])
        return new

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the fields, ``None`` without fields."""
        values = self.values()
        return tuple(values[0].shape[-2:]) if values else None
