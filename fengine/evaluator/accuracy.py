"""Top-k classification accuracy (mmpretrain: ``mmpretrain.evaluation.Accuracy``)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch

from ..registry import METRICS
from .metric import BaseMetric

__all__ = ['Accuracy']

_SCORE_KEYS = ('pred_score', 'scores')
_LABEL_KEYS = ('pred_label', 'pred')
_GT_KEYS = ('gt_label', 'label', 'labels')
_BATCH_GT_KEYS = ('label', 'labels', 'gt_label', 'target', 'targets')

_ACCEPTED = (
    'Accuracy accepts as predictions: (a) a tensor of class scores [N, C] or integer '
    'labels [N]; (b) a tuple/list whose first item is such a tensor, e.g. '
    '(pred.argmax(1), loss); (c) a dict with one of '
    f'{", ".join(_SCORE_KEYS + _LABEL_KEYS)} and optionally one of {", ".join(_GT_KEYS)}; '
    '(d) a list of per-sample dicts with pred_score or pred_label and gt_label. '
    'Ground truth not in the predictions comes from the batch: the second item of a '
    f'tuple/list batch, or one of {", ".join(_BATCH_GT_KEYS)} of a dict batch.')


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f'a {obj.dtype} tensor of shape {list(obj.shape)}'
    if isinstance(obj, Mapping):
        return f'a dict with keys {list(obj)}'
    if isinstance(obj, (list, tuple)):
        inner = ', '.join(type(x).__name__ for x in obj[:3]) + (', ...' if len(obj) > 3 else '')
        return f'a {type(obj).__name__} of {len(obj)} items ({inner})'
    return f'a {type(obj).__name__}'


def _as_tensor(value: Any) -> torch.Tensor:
    """A tensor from a tensor, a number, a list of numbers or a list of tensors."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, torch.Tensor) for v in value):
        # Pseudo-collated per-sample labels (0-d or [1] tensors) or score vectors [C].
        if all(v.numel() == 1 for v in value):
            return torch.stack([v.reshape(()) for v in value])
        return torch.stack(list(value))
    return torch.as_tensor(value)


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Top-k accuracy in percent, as mmpretrain's ``Accuracy`` reports it.

    Keys are ``top1``, ``top5``, ... (``accuracy/top1`` with the default prefix).
    Each sample stores only whether it was a hit for each k (not its scores), so
    gathering across ranks drops the samples a ``DistributedSampler`` repeated to
    even out the last round, and every sample counts once.

    Args:
        topk: The k (an int or a tuple of ints) to report; every k > 1 needs class
            scores, not labels.
        collect_device: ``'cpu'`` or ``'gpu'``, see :class:`BaseMetric`.
        prefix: Defaults to ``'accuracy'``.

    Raises:
        ValueError: A k is not a positive int.

    Example:
        >>> import torch
        >>> metric = Accuracy(topk=(1, 2))
        >>> scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
        >>> metric.process((None, torch.tensor([2, 0])), scores)
        >>> metric.evaluate(size=2)
        {'accuracy/top1': 50.0, 'accuracy/top2': 100.0}
    """

    default_prefix: str | None = 'accuracy'

    def __init__(self, topk: int | Sequence[int] = (1,), collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        ks = (topk,) if isinstance(topk, int) else tuple(topk)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f'Accuracy topk must be a positive int or a non-empty tuple of '
                             f'them, but got {topk!r}')
        self.topk = ks

    def process(self, data_batch: Any, data_samples: Any) -> None:
        """Count the correct top-k predictions of one batch.

        Raises:
            TypeError: The predictions or the ground truth have a shape Accuracy cannot
                read (the message lists the accepted ones).
            ValueError: Label predictions with a k > 1, fewer classes than a k, or
                predictions and ground truth of different lengths.
        """
        pred, gt = self._read_predictions(data_samples)
        if gt is None:
            gt = self._read_batch_labels(data_batch, data_samples)
        gt = gt.reshape(-1) if gt.dim() == 2 and gt.shape[1] == 1 else gt
        if gt.dim() != 1:
            raise TypeError(f'Accuracy needs ground-truth class indices of shape [N], but got '
                            f'{_describe(gt)}. {_ACCEPTED}')
        if len(gt) != len(pred):
            raise ValueError(f'Accuracy got {len(pred)} predictions but {len(gt)} ground-truth '
                             'labels in one batch')
        if len(pred) == 0:
            return
        gt = gt.to(pred.device, torch.long)
        maxk = max(self.topk)
        if pred.dim() == 1:
            if maxk > 1:
                raise ValueError(
                    f'Accuracy(topk={self.topk}) needs class scores of shape [N, C] for '
                    f'top-{maxk}, but the predictions are labels of shape {list(pred.shape)}. '
                    'Return the scores from predict mode, or use topk=(1,).')
            correct = (pred.to(torch.long) == gt)[:, None]
        else:
            if maxk > pred.shape[1]:
                raise ValueError(f'Accuracy(topk={self.topk}) needs at least {maxk} classes, '
                                 f'but the scores have {pred.shape[1]}')
            hits = pred.topk(maxk, dim=1).indices == gt[:, None]
            correct = torch.stack([hits[:, :k].any(dim=1) for k in self.topk], dim=1)
        # One entry per sample (a bool per k), so that gathering across ranks can drop
        # the samples a distributed sampler repeated; one device->host copy per batch,
        # and the score tensors are not kept.
        self.results.extend(tuple(row) for row in correct.cpu().tolist())

    def compute_metrics(self, results: list) -> dict:
        """Top-k accuracy in percent from the per-sample hits."""
        total = len(results)
        return {f'top{k}': 100.0 * sum(row[i] for row in results) / total
                for i, k in enumerate(self.topk)}

    # --------------------------------------------------------------------- reading
    def _read_predictions(self, data_samples: Any) -> tuple[torch.Tensor,
                                                            torch.Tensor | None]:
        """Return (scores [N, C] or labels [N], ground truth [N] or None)."""
        if isinstance(data_samples, torch.Tensor):
            return self._check_pred(data_samples, data_samples), None
        if isinstance(data_samples, Mapping):
            return self._read_dict(data_samples, data_samples, per_sample=False)
        if isinstance(data_samples, (list, tuple)) and data_samples:
            first = data_samples[0]
            if isinstance(first, torch.Tensor):
                return self._check_pred(first, data_samples), None
            if all(isinstance(s, Mapping) for s in data_samples):
                preds, gts = zip(*(self._read_dict(s, data_samples, per_sample=True)
                                   for s in data_samples))
                if any(g is None for g in gts) and not all(g is None for g in gts):
                    raise TypeError('Accuracy got per-sample dicts where only some have a '
                                    f'ground-truth label ({", ".join(_GT_KEYS)})')
                kinds = {p.dim() for p in preds}
                if len(kinds) > 1:
                    raise TypeError('Accuracy got per-sample dicts that mix scores and labels')
                gt = None if gts[0] is None else torch.cat([g.reshape(-1) for g in gts])
                return torch.cat(list(preds)), gt
            if isinstance(first, Mapping):
                return self._read_dict(first, data_samples, per_sample=False)
        raise TypeError(f'Accuracy cannot read predictions from {_describe(data_samples)}. '
                        f'{_ACCEPTED}')

    def _read_dict(self, sample: Mapping, whole: Any,
                   per_sample: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        gt = next((_as_tensor(sample[k]) for k in _GT_KEYS if k in sample), None)
        for key in _SCORE_KEYS:
            if key in sample:
                scores = _as_tensor(sample[key])
                # A per-sample score vector [C] is a batch of one.
                if scores.dim() == 1:
                    scores = scores[None]
                if scores.dim() != 2 or not scores.is_floating_point():
                    raise TypeError(f'Accuracy expects {key!r} to hold float class scores '
                                    f'[N, C] (or [C] per sample), but got {_describe(scores)}')
                return scores, gt
        for key in _LABEL_KEYS:
            if key in sample:
                value = _as_tensor(sample[key])
                if per_sample and value.dim() == 0:
                    value = value.reshape(1)
                if key == 'pred_label':
                    # The key says these are labels, whatever their dtype.
                    if value.dim() != 1:
                        raise TypeError(f'Accuracy expects {key!r} to hold labels [N] (or one '
                                        f'label per sample), but got {_describe(value)}')
                    return value.long(), gt
                if per_sample and value.dim() == 1 and value.is_floating_point():
                    value = value[None]  # a per-sample score vector [C]
                return self._check_pred(value, whole), gt
        raise TypeError(f'Accuracy cannot read predictions from {_describe(sample)}: none of '
                        f'the keys {", ".join(_SCORE_KEYS + _LABEL_KEYS)}. {_ACCEPTED}')

    @staticmethod
    def _check_pred(pred: torch.Tensor, whole: Any) -> torch.Tensor:
        if pred.dim() == 2 and pred.is_floating_point():
            return pred
        if pred.dim() == 1 and not (pred.is_floating_point() or pred.is_complex()):
            return pred
        if pred.dim() == 1:
            raise TypeError(f'Accuracy cannot tell whether {_describe(pred)} holds labels or '
                            'scores: return labels as an integer tensor [N] (e.g. '
                            'scores.argmax(1)) or scores as a float tensor [N, C].')
        raise TypeError(f'Accuracy cannot read predictions from {_describe(whole)}: it holds '
                        f'{_describe(pred)}. {_ACCEPTED}')

    @staticmethod
    def _read_batch_labels(data_batch: Any, data_samples: Any) -> torch.Tensor:
        labels: Any = None
        if isinstance(data_batch, (list, tuple)) and len(data_batch) >= 2:
            labels = data_batch[1]
        elif isinstance(data_batch, Mapping):
            labels = next((data_batch[k] for k in _BATCH_GT_KEYS if k in data_batch), None)
        if labels is None:
            raise TypeError(f'Accuracy found no ground truth: the predictions '
                            f'({_describe(data_samples)}) carry none and the batch is '
                            f'{_describe(data_batch)}. {_ACCEPTED}')
        try:
            return _as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f'Accuracy cannot read ground-truth labels from '
                            f'{_describe(labels)}: {exc}') from exc
