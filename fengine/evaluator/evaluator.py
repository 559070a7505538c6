"""Runs metrics over a validation or test run (MMEngine: ``mmengine.evaluator.Evaluator``)."""
from __future__ import annotations

from typing import Any, Sequence

from .._errors import check_int
from ..registry import EVALUATOR, METRICS
from .metric import BaseMetric, is_data_element

__all__ = ['Evaluator', 'build_evaluator']

class _MetricKeyError(KeyError):
    """A ``KeyError`` whose message reads as given: ``KeyError.__str__`` shows the repr
    of its argument (meant for a bare key), which would wrap the message in quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


def _rename_error(exc: Exception, metric: BaseMetric, stage: str) -> Exception:
    """An error of the same type (subclasses included, so ``except OSError`` still
    catches a metric's ``FileNotFoundError``), its message starting with
    ``<Metric>.<stage> raised <Type>: ``; the caller chains it ``from exc``.

    A type whose constructor does not take one message (a custom ``__init__(code)``,
    say) becomes a ``RuntimeError`` with that message instead.
    """
    detail = str(exc)
    message = (f'{type(metric).__name__}.{stage} raised {type(exc).__name__}'
               + (f': {detail}' if detail else ''))
    cls = _MetricKeyError if type(exc) is KeyError else type(exc)
    try:
        renamed = cls(message)
    except Exception:  # a constructor that needs other arguments
        return RuntimeError(message)
    if renamed.args != (message,):  # it took the string as something else (a code...)
        return RuntimeError(message)
    if isinstance(exc, OSError):
        # Code that handles it may test errno; setting errno alone leaves str() as is
        # (strerror and filename, which would change it, stay in the chained cause).
        renamed.errno = exc.errno
    return renamed


@EVALUATOR.register_module()
class Evaluator:
    """Feeds every batch to each metric and merges their results (MMEngine: ``Evaluator``).

    Args:
        metrics: A :class:`BaseMetric`, a metric config (a dict with ``type`` naming an
            entry of ``fengine.registry.METRICS``), or a list of either.

    Raises:
        TypeError: ``metrics`` (or an item of it) is of another type.

    Example:
        >>> from fengine.evaluator import BaseMetric
        >>> class Count(BaseMetric):
        ...     def process(self, data_batch, data_samples):
        ...         self.results.append(len(data_samples))
        ...     def compute_metrics(self, results):
        ...         return dict(count=sum(results))
        >>> evaluator = Evaluator([Count(prefix='a'), Count(prefix='b')])
        >>> evaluator.process([0.1, 0.9, 0.5])
        >>> evaluator.process([0.3])
        >>> evaluator.evaluate(size=4)
        {'a/count': 4, 'b/count': 4}
    """

    def __init__(self, metrics: BaseMetric | dict | Sequence[BaseMetric | dict]) -> None:
        self._dataset_meta: dict | None = None
        items = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        self.metrics: list[BaseMetric] = []
        for index, metric in enumerate(items):
            if isinstance(metric, dict):
                metric = METRICS.build(metric)
            if not isinstance(metric, BaseMetric):
                where = f' (item {index})' if isinstance(metrics, (list, tuple)) else ''
                raise TypeError(
                    'Evaluator metrics must be a BaseMetric, a metric config dict or a list of '
                    f'them, but got {type(metric).__name__}{where}: {metric!r}')
            self.metrics.append(metric)

    @property
    def dataset_meta(self) -> dict | None:
        """Meta information of the dataset; setting it sets every metric's ``dataset_meta``."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict | None) -> None:
        self._dataset_meta = dataset_meta
        for metric in self.metrics:
            metric.dataset_meta = dataset_meta

    def __repr__(self) -> str:
        names = ', '.join(type(m).__name__ for m in self.metrics)
        return f'Evaluator(metrics=[{names}])'

    def process(self, data_samples: Sequence | Any, data_batch: Any = None) -> None:
        """Give one batch's outputs (and the batch) to every metric's ``process``.

        Args:
            data_samples: The model's ``predict``-mode outputs for the batch, passed on
                as they are (items with a ``to_dict`` method, such as MMEngine's data
                elements, are turned into dicts first, as MMEngine does).
            data_batch: The batch from the dataloader.

        Raises:
            The error a metric raised, of its type (a ``RuntimeError`` when that type
            takes no message), its message starting with ``<Metric>.<method> raised``.
        """
        data_samples = _to_plain(data_samples)
        for metric in self.metrics:
            try:
                metric.process(data_batch, data_samples)
            except Exception as exc:
                raise _rename_error(exc, metric, 'process') from exc

    def evaluate(self, size: int) -> dict:
        """Evaluate every metric and merge their dicts.

        Args:
            size: The number of samples in the dataset.

        Raises:
            ValueError: Two metrics produced the same key (give one a ``prefix``).
            The error a metric raised, of its type (a ``RuntimeError`` when that type
            takes no message), its message starting with ``<Metric>.<method> raised``.
        """
        merged: dict = {}
        owner: dict[str, str] = {}
        for metric in self.metrics:
            name = type(metric).__name__
            try:
                results = metric.evaluate(size)
            except Exception as exc:
                raise _rename_error(exc, metric, 'evaluate') from exc
            for key in results:
                if key in merged:
                    raise ValueError(
                        f'two metrics produced the key {key!r}: {owner[key]} and {name}. Give '
                        f"one of them a prefix, e.g. {name}(prefix='{name.lower()}').")
                owner[key] = name
            merged.update(results)
        return merged

    def offline_evaluate(self, data_samples: Sequence, data: Sequence | None = None,
                         chunk_size: int = 1) -> dict:
        """Evaluate outputs saved earlier, without a model (MMEngine: ``offline_evaluate``).

        Args:
            data_samples: One output per sample.
            data: One data item per sample, or ``None``; chunks of it are collated the
                way MMEngine's ``pseudo_collate`` does (lists, not stacked tensors).
            chunk_size: How many samples each ``process`` call gets.

        Raises:
            ValueError: ``data`` and ``data_samples`` differ in length, or
                ``chunk_size`` is not a positive int.
        """
        chunk_size = check_int('chunk_size', chunk_size, minimum=1, accepted='a positive int')
        data_samples = list(data_samples)
        if data is not None:
            data = list(data)
            if len(data) != len(data_samples):
                raise ValueError(f'offline_evaluate needs one data item per data sample, but '
                                 f'got {len(data)} data items and {len(data_samples)} samples')
        size = 0
        from ..runner.data import pseudo_collate  # not at import: the runner imports us

        for start in range(0, len(data_samples), chunk_size):
            chunk = data_samples[start:start + chunk_size]
            data_chunk = None if data is None else pseudo_collate(
                data[start:start + chunk_size])
            size += len(chunk)
            self.process(chunk, data_chunk)
        return self.evaluate(size)


def _to_plain(data_samples: Any) -> Any:
    """MMEngine data elements (anything with ``to_dict`` but not a tensor/dict) -> dicts."""
    if isinstance(data_samples, (list, tuple)) and any(
            is_data_element(s) for s in data_samples):
        return [s.to_dict() if is_data_element(s) else s for s in data_samples]
    return data_samples


def build_evaluator(cfg: Evaluator | BaseMetric | dict | Sequence) -> Evaluator:
    """Build an :class:`Evaluator` from a Runner config (MMEngine: ``Runner.build_evaluator``).

    Accepted:

    - an :class:`Evaluator` (returned as it is);
    - a :class:`BaseMetric`, or a list of metrics and metric configs;
    - ``dict(metrics=...)``, optionally with ``type`` naming an entry of
      ``fengine.registry.EVALUATOR`` (default ``'Evaluator'``), or an Evaluator class
      (``val_evaluator=dict(metrics=MyMetric())`` in MMEngine's tutorial 'Model');
    - a metric config, ``dict(type='Accuracy', topk=(1, 5))``.

    Raises:
        TypeError: ``cfg`` is of another type, or a ``dict(metrics=...)`` has other keys.
        KeyError: A dict has neither ``metrics`` nor ``type``, or its ``type`` is not
            registered in ``EVALUATOR`` (the message lists close names).
    """
    if isinstance(cfg, Evaluator):
        return cfg
    if isinstance(cfg, (BaseMetric, list, tuple)):
        return Evaluator(cfg)
    if isinstance(cfg, dict):
        if 'metrics' in cfg:
            cfg = dict(cfg)
            evaluator_type = cfg.pop('type', 'Evaluator')
            evaluator_cls = evaluator_type if isinstance(evaluator_type, type) \
                else EVALUATOR.get(evaluator_type)
            if evaluator_cls is None:  # a registry whose get() answers None for a miss
                raise KeyError(f'{evaluator_type!r} is not in the evaluator registry')
            metrics = cfg.pop('metrics')
            if cfg:
                raise TypeError(f'an evaluator config takes only "metrics" (and "type"), but '
                                f'also got {", ".join(repr(k) for k in cfg)}')
            return evaluator_cls(metrics)
        if 'type' in cfg:
            return Evaluator(cfg)
        raise KeyError(f'an evaluator config needs "metrics" (dict(metrics=MyMetric())) or a '
                       f"metric 'type' (dict(type='Accuracy')), but got {cfg!r}")
    raise TypeError('an evaluator must be an Evaluator, a BaseMetric, a list of metrics, '
                    'dict(metrics=...) or a metric config dict, but got '
                    f'{type(cfg).__name__}: {cfg!r}')
