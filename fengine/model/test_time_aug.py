"""Test-time augmentation over a trained model (MMEngine: ``mmengine.model.BaseTTAModel``)."""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..registry import MODELS
from .base_model import BaseModel

__all__ = ['BaseTTAModel']


def split_augmentations(data: Any) -> list:
    """One batch per augmentation from a test-time-augmented batch.

    A TTA pipeline gives each field one entry per augmentation; collated, a dict batch
    is ``{'inputs': [aug0, aug1], 'data_samples': [aug0, aug1]}`` and a tuple batch is
    ``([aug0, aug1], [aug0, aug1])``. This returns ``[{'inputs': aug0, 'data_samples':
    aug0}, {...aug1}]`` (or lists for a tuple batch).

    Raises:
        TypeError: ``data`` is not a dict, tuple or list, or a field is not a list.
        ValueError: The fields hold different numbers of augmentations (the message
            names each field's count).
    """
    if isinstance(data, Mapping):
        fields = dict(data)
    elif isinstance(data, (tuple, list)):
        fields = dict(enumerate(data))
    else:
        raise TypeError(f'a test-time-augmented batch must be a dict, tuple or list with one '
                        f'entry per augmentation in each field, but got {type(data).__name__}')
    if not fields:
        raise ValueError('a test-time-augmented batch has no fields')
    counts = {}
    for key, value in fields.items():
        # A tensor field holds the augmentations along its first dimension.
        if not isinstance(value, (Sequence, torch.Tensor)) or isinstance(value, str):
            raise TypeError(f'field {key!r} of a test-time-augmented batch must be a list with '
                            f'one entry per augmentation, but got {type(value).__name__}')
        counts[key] = len(value)
    if len(set(counts.values())) > 1:
        raise ValueError(f'the fields of a test-time-augmented batch must hold one entry per '
                         f'augmentation each, but their counts differ: {counts}')
    num_augs = next(iter(counts.values()))
    if isinstance(data, Mapping):
        return [{key: value[i] for key, value in fields.items()} for i in range(num_augs)]
    return [[value[i] for value in fields.values()] for i in range(num_augs)]


@MODELS.register_module()
class BaseTTAModel(BaseModel):
    """Runs a model's ``test_step`` on every augmented view of a batch and merges the
    predictions (MMEngine: ``mmengine.model.BaseTTAModel``).

    The dataloader's pipeline produces, per sample, one entry per augmentation (see
    :func:`split_augmentations`); :meth:`test_step` calls ``module.test_step`` once per
    augmentation and hands :meth:`merge_preds` one list per sample holding that
    sample's predictions under every augmentation. Subclasses implement
    :meth:`merge_preds`.

    Args:
        module: The model (an ``nn.Module`` with ``test_step``) or its config, built
            from ``MODELS``.
        data_preprocessor: With a config ``module``, replaces the module's
            ``data_preprocessor`` (a copy of the config is changed, not yours). With a
            built module it is this wrapper's own preprocessor, unused by
            :meth:`test_step` (the module preprocesses its batches).

    Raises:
        TypeError: ``module`` is neither a module nor a dict, or has no ``test_step``.

    Example:
        >>> import torch
        >>> class Identity(BaseModel):
        ...     def forward(self, inputs, mode='tensor'):
        ...         return list(inputs)
        >>> class MeanTTA(BaseTTAModel):
        ...     def merge_preds(self, data_samples_list):
        ...         return [sum(preds) / len(preds) for preds in data_samples_list]
        >>> tta = MeanTTA(Identity())
        >>> batch = dict(inputs=[torch.tensor([1., 3.]), torch.tensor([3., 5.])])
        >>> tta.test_step(batch)  # two samples, two augmentations each
        [tensor(2.), tensor(4.)]
    """

    def __init__(self, module: dict | nn.Module,
                 data_preprocessor: dict | nn.Module | None = None) -> None:
        super().__init__()
        if isinstance(module, nn.Module):
            self.module = module
        elif isinstance(module, dict):
            module = copy.copy(module)
            if data_preprocessor is not None:
                module['data_preprocessor'] = data_preprocessor
            self.module = MODELS.build(module)
        else:
            raise TypeError(f'{type(self).__name__} module must be an nn.Module or a model '
                            f'config dict, but got {type(module).__name__}: {module!r}')
        if not callable(getattr(self.module, 'test_step', None)):
            raise TypeError(f'{type(self).__name__} calls module.test_step, but '
                            f'{type(self.module).__name__} has none; wrap a BaseModel')

    def merge_preds(self, data_samples_list: list[tuple]) -> list:
        """Merge each sample's predictions under every augmentation into one.

        Args:
            data_samples_list: One tuple per sample of the batch, holding its prediction
                for each augmentation in order.

        Returns:
            One merged prediction per sample.
        """
        raise NotImplementedError(f'{type(self).__name__} must implement '
                                  'merge_preds(data_samples_list)')

    def test_step(self, data: Any) -> list:
        """``module.test_step`` on each augmentation's batch, merged by :meth:`merge_preds`.

        Raises:
            TypeError, ValueError: ``data`` is not a test-time-augmented batch (see
                :func:`split_augmentations`), or ``module.test_step`` did not return a list.
        """
        predictions = [self.module.test_step(batch) for batch in split_augmentations(data)]
        for index, prediction in enumerate(predictions):
            if not isinstance(prediction, (list, tuple)):
                raise TypeError(f'{type(self.module).__name__}.test_step must return one '
                                f'prediction per sample (a list), but for augmentation {index} '
                                f'it returned {type(prediction).__name__}')
        return self.merge_preds(list(zip(*predictions)))

    def forward(self, *inputs: Any, mode: str = 'tensor') -> Any:
        """Not used: test-time augmentation runs through :meth:`test_step`."""
        raise NotImplementedError(f'{type(self).__name__} runs through test_step (one '
                                  'module.test_step per augmentation); its forward is not '
                                  'called during testing. Implement forward to use it '
                                  'directly.')
