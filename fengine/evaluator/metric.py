"""The base class of evaluation metrics (MMEngine: ``mmengine.evaluator.BaseMetric``)."""
from __future__ import annotations

import copy
import logging
from abc import ABCMeta, abstractmethod
from typing import Any, Sequence

from .. import dist
from .._errors import check_choice
from ..logging import print_log

__all__ = ['BaseMetric']


class BaseMetric(metaclass=ABCMeta):
    """A metric that accumulates per-batch results and reduces them at the end.

    MMEngine: ``mmengine.evaluator.BaseMetric``. Subclasses implement
    :meth:`process`, which appends whatever it needs to ``self.results`` for one
    batch, and :meth:`compute_metrics`, which turns the results of the whole
    dataset into a dict. :meth:`evaluate` gathers the results of every rank,
    computes the dict on the main process, shares it with every rank and clears
    ``self.results`` for the next evaluation.

    Args:
        collect_device: Where results travel when they are gathered across ranks:
            ``'cpu'`` or ``'gpu'``.
        prefix: Put in front of every key as ``'{prefix}/{key}'``; defaults to the
            class attribute :attr:`default_prefix` (no prefix when both are ``None``).

    Raises:
        ValueError: ``collect_device`` is not ``'cpu'`` or ``'gpu'``.

    Example:
        >>> class MeanLoss(BaseMetric):
        ...     def process(self, data_batch, data_samples):
        ...         self.results.append(data_samples['loss'])
        ...     def compute_metrics(self, results):
        ...         return dict(loss=sum(results) / len(results))
        >>> metric = MeanLoss(prefix='val')
        >>> metric.process(None, dict(loss=1.0))
        >>> metric.process(None, dict(loss=2.0))
        >>> metric.evaluate(size=2)
        {'val/loss': 1.5}
        >>> metric.results
        []
    """

    default_prefix: str | None = None

    def __init__(self, collect_device: str = 'cpu', prefix: str | None = None) -> None:
        check_choice(f'{type(self).__name__} collect_device', collect_device,
                     dist.COLLECT_DEVICES)
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f'{type(self).__name__} prefix must be a str or None, but got '
                            f'{type(prefix).__name__}: {prefix!r}')
        self._dataset_meta: dict | None = None
        self.collect_device = collect_device
        self.results: list = []
        self.prefix = prefix if prefix is not None else self.default_prefix

    @property
    def dataset_meta(self) -> dict | None:
        """Meta information of the dataset (class names, ...), set by the Evaluator."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict | None) -> None:
        # A copy, as MMEngine: a metric that edits it must not change the dataset's.
        self._dataset_meta = copy.deepcopy(dataset_meta)

    @abstractmethod
    def process(self, data_batch: Any, data_samples: Sequence | Any) -> None:
        """Add what one batch contributes to ``self.results``.

        Args:
            data_batch: The batch the dataloader produced.
            data_samples: The model's outputs for it (``forward(..., mode='predict')``).
        """

    @abstractmethod
    def compute_metrics(self, results: list) -> dict:
        """Compute the metrics from the results of the whole dataset.

        Args:
            results: The gathered ``self.results`` of every rank.

        Returns:
            A dict from metric name to value.
        """

    def evaluate(self, size: int) -> dict:
        """Gather the results of every rank, compute the metrics and clear ``self.results``.

        Args:
            size: The number of samples in the dataset; results beyond it (the padding
                of ``DistributedSampler``) are dropped.

        Returns:
            The metrics, keys prefixed with ``'{prefix}/'`` when a prefix is set; the same
            dict on every rank. ``{}`` (with a warning) when nothing was processed.

        Raises:
            TypeError: :meth:`compute_metrics` did not return a dict.
            RuntimeError: On ranks other than 0, when ``compute_metrics`` failed on rank 0
                (rank 0 raises the original error); they fail instead of waiting forever.
        """
        name = type(self).__name__
        # Distributed, every rank takes part in the gather even with nothing to add, so
        # a rank that got no batches does not leave the others waiting.
        if not self.results and not dist.is_distributed():
            self._warn_empty()
            return {}

        results = dist.collect_results(self.results, size, self.collect_device)
        payload: list[Any] = [None]
        error: BaseException | None = None
        if dist.is_main_process():
            try:
                payload = [('empty', None)] if not results else [('ok', self._compute(results))]
            except Exception as exc:  # shared below so other ranks fail too, not hang
                error = exc
                payload = [('error', f'{type(exc).__name__}: {exc}')]

        dist.broadcast_object_list(payload)
        self.results.clear()
        if error is not None:
            raise error
        status, value = payload[0]
        if status == 'error':
            raise RuntimeError(f'{name}.compute_metrics failed on the main process: {value}')
        if status == 'empty':
            self._warn_empty()
            return {}
        return value

    def _compute(self, results: list) -> dict:
        """``compute_metrics`` on CPU results, checked and prefixed."""
        metrics = self.compute_metrics(dist._to_cpu(results))
        if not isinstance(metrics, dict):
            raise TypeError(f'{type(self).__name__}.compute_metrics must return a dict of metric '
                            f'name to value, but returned {type(metrics).__name__}: {metrics!r}')
        if self.prefix:
            metrics = {f'{self.prefix}/{key}': value for key, value in metrics.items()}
        return metrics

    def _warn_empty(self) -> None:
        name = type(self).__name__
        print_log(
            f'{name} got no results to evaluate: {name}.process was never called or added '
            'nothing to self.results (an empty dataloader, or a process() that does not '
            'append?). Returning an empty dict.',
            logger='current', level=logging.WARNING)
