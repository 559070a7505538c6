"""Label-level fields (MMEngine: ``mmengine.structures.LabelData``)."""
from __future__ import annotations

import numbers

import torch

from .base_data_element import BaseDataElement

__all__ = ['LabelData']


class LabelData(BaseDataElement):
    """A :class:`BaseDataElement` for labels (class indices, scores, texts), with
    conversions between index labels and one-hot vectors.

    MMEngine: ``mmengine.structures.LabelData``.

    Example:
        >>> import torch
        >>> from fengine.structures import LabelData
        >>> LabelData.label_to_onehot(torch.tensor([1, 3]), num_classes=4)
        tensor([0, 1, 0, 1])
        >>> LabelData.onehot_to_label(torch.tensor([0, 1, 0, 1]))
        tensor([1, 3])
    """

    @staticmethod
    def onehot_to_label(onehot: torch.Tensor) -> torch.Tensor:
        """The indices of the ones of a 1-D one-hot (or multi-hot) vector.

        Raises:
            TypeError: ``onehot`` is not a tensor.
            ValueError: It is not 1-D or holds values other than 0 and 1.
        """
        if not isinstance(onehot, torch.Tensor):
            raise TypeError(f'onehot must be a tensor, but got {type(onehot).__name__}')
        if onehot.dim() != 1 or (onehot.numel() and not ((onehot == 0) | (onehot == 1)).all()):
            raise ValueError(f'onehot must be a 1-D tensor of 0s and 1s, but got shape '
                             f'{tuple(onehot.shape)}: {onehot}')
        return onehot.nonzero().squeeze(-1)

    @staticmethod
    def label_to_onehot(label: torch.Tensor, num_classes: int) -> torch.Tensor:
        """A vector of ``num_classes`` zeros with ones at the ``label`` indices, in the
        label's dtype and device.

        Raises:
            TypeError: ``label`` is not a tensor or ``num_classes`` not an int.
            ValueError: A label is outside ``[0, num_classes)``.
        """
        if not isinstance(label, torch.Tensor):
            raise TypeError(f'label must be a tensor, but got {type(label).__name__}')
        if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool):
            raise TypeError(f'num_classes must be an int, but got {num_classes!r}')
        onehot = label.new_zeros((int(num_classes),))
        if label.numel() and (label.min() < 0 or label.max() >= num_classes):
            raise ValueError(f'labels must be in [0, {num_classes}) for num_classes='
                             f'{num_classes}, but got {label}')
        onehot[label] = 1
        return onehot
