"""The base class of evaluation metrics (MMEngine: ``mmengine.evaluator.BaseMetric``)."""
from __future__ import annotations

import copy
import logging
import os
import pickle
from abc import ABCMeta, abstractmethod
from typing import Any, Sequence

import torch
from torch.utils._pytree import tree_map

from .. import dist
from .._errors import check_choice
from .._io import atomic_write
from ..logging import print_log
from ..registry import METRICS

__all__ = ['BaseMetric', 'DumpResults']


def is_data_element(obj: Any) -> bool:
    """Whether ``obj`` is a data element (``BaseDataElement`` and its kind): it has
    ``to_dict`` and ``metainfo_keys``, and is neither a tensor nor a dict."""
    return (not isinstance(obj, (dict, torch.Tensor))
            and callable(getattr(obj, 'to_dict', None)) and hasattr(obj, 'metainfo_keys'))


def results_to_cpu(data: Any) -> Any:
    """``data`` with every tensor and data element inside lists, tuples and dicts on the CPU."""
    def to_cpu(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            return leaf.cpu()
        if is_data_element(leaf) and callable(getattr(leaf, 'to', None)):
            return leaf.to('cpu')
        return leaf

    return tree_map(to_cpu, data)


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
            class attribute :attr:`default_prefix`. When both are ``None`` the keys
            have no prefix and a warning says so, as in MMEngine (two metrics with
            a key in common would collide in the :class:`Evaluator`).
        collect_dir: With ``collect_device='cpu'``, a folder every rank can reach
            (on a shared file system when the ranks run on several machines): the
            ranks exchange their results as files there instead of through the
            process group. ``None``: through the process group.

    Raises:
        ValueError: ``collect_device`` is not ``'cpu'`` or ``'gpu'``, or
            ``collect_dir`` is given with ``collect_device='gpu'``.
        TypeError: ``prefix`` is not a str, or ``collect_dir`` is not a path.

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

    def __init__(self, collect_device: str = 'cpu', prefix: str | None = None,
                 collect_dir: str | os.PathLike | None = None) -> None:
        name = type(self).__name__
        check_choice(f'{name} collect_device', collect_device, dist.COLLECT_DEVICES)
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f'{name} prefix must be a str or None, but got '
                            f'{type(prefix).__name__}: {prefix!r}')
        if collect_dir is not None:
            if not isinstance(collect_dir, (str, os.PathLike)):
                raise TypeError(f'{name} collect_dir must be a folder path or None, but got '
                                f'{type(collect_dir).__name__}: {collect_dir!r}')
            if collect_device != 'cpu':
                raise ValueError(f"{name} collect_dir={str(collect_dir)!r} is where the ranks "
                                 "exchange results as files, which only collect_device='cpu' "
                                 f'does, but collect_device={collect_device!r}. Drop '
                                 "collect_dir or use collect_device='cpu'.")
        self._dataset_meta: dict | None = None
        self.collect_device = collect_device
        self.collect_dir = collect_dir
        self.results: list = []
        self.prefix = prefix if prefix is not None else self.default_prefix
        if self.prefix is None:
            print_log(f'{name} has no prefix (neither the prefix argument nor the class '
                      f'attribute default_prefix), so its keys are reported bare; pass '
                      "prefix='...' to tell them apart from other metrics' keys.",
                      logger='current', level=logging.WARNING)

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

        results = dist.collect_results(self.results, size, self.collect_device,
                                       tmpdir=self.collect_dir)
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
        metrics = self.compute_metrics(results_to_cpu(results))
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


@METRICS.register_module()
class DumpResults(BaseMetric):
    """Save the model's predictions to a pickle file, for offline evaluation.

    MMEngine: ``mmengine.evaluator.DumpResults``. Each prediction (moved to the CPU)
    is one item of the list written to ``out_file_path``; read it back with
    ``pickle.load`` (or ``torch.load(..., weights_only=False)``) and give it to
    :meth:`Evaluator.offline_evaluate`. Pickle is written because that is MMEngine's
    format; fengine never loads one unless asked to, since unpickling runs code from
    the file: load only files you wrote. The file is written whole, then renamed,
    so a crash leaves no half-written file.

    Args:
        out_file_path: The file to write, ending in ``.pkl`` or ``.pickle``.
        collect_device: See :class:`BaseMetric`.
        collect_dir: See :class:`BaseMetric`.

    Raises:
        ValueError: ``out_file_path`` does not end in ``.pkl`` or ``.pickle``.

    Example:
        >>> import contextlib, io, pickle, tempfile, os, torch
        >>> path = os.path.join(tempfile.mkdtemp(), 'preds.pkl')
        >>> dump = DumpResults(out_file_path=path)
        >>> dump.process(None, [dict(pred=torch.tensor(1))])
        >>> with contextlib.redirect_stdout(io.StringIO()):  # its log line
        ...     metrics = dump.evaluate(size=1)
        >>> metrics
        {}
        >>> with open(path, 'rb') as f:
        ...     pickle.load(f)
        [{'pred': tensor(1)}]
    """

    # It reports no keys: a prefix would name nothing, so none is asked for.
    default_prefix = 'dump'

    def __init__(self, out_file_path: str | os.PathLike, collect_device: str = 'cpu',
                 collect_dir: str | os.PathLike | None = None) -> None:
        if not isinstance(out_file_path, (str, os.PathLike)) or \
                not os.fspath(out_file_path).endswith(('.pkl', '.pickle')):
            raise ValueError('DumpResults writes a pickle file, so out_file_path must end in '
                             f"'.pkl' or '.pickle', but got {out_file_path!r}")
        super().__init__(collect_device=collect_device, collect_dir=collect_dir)
        self.out_file_path = out_file_path

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Keep the predictions of one batch, moved to the CPU."""
        self.results.extend(results_to_cpu(list(data_samples)))

    def compute_metrics(self, results: list) -> dict:
        """Write ``results`` to ``out_file_path``; no metrics, so ``{}``."""
        atomic_write(self.out_file_path, lambda f: pickle.dump(results, f))
        print_log(f'DumpResults saved {len(results)} predictions to {self.out_file_path}',
                  logger='current')
        return {}
