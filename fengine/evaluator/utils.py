"""Reading one value out of an evaluator's results (MMEngine: ``mmengine.evaluator.utils``)."""
from __future__ import annotations

from typing import Any, Mapping

from .._errors import suggest

__all__ = ['get_metric_value']


def get_metric_value(indicator: str, metrics: Mapping[str, Any]) -> Any:
    """The value in ``metrics`` that ``indicator`` names (MMEngine: ``get_metric_value``).

    Args:
        indicator: A full key with its prefix (``'accuracy/top1'``), or a key without
            it (``'top1'``), which must then match exactly one key's last part.
        metrics: What :meth:`Evaluator.evaluate` returned.

    Raises:
        ValueError: ``indicator`` matches no key, or (without a prefix) several.

    Example:
        >>> get_metric_value('top1', {'accuracy/top1': 90.0, 'accuracy/top5': 99.0})
        90.0
    """
    if '/' in indicator:
        if indicator in metrics:
            return metrics[indicator]
        raise ValueError(f'the metric {indicator!r} can not match any metric in '
                         f'{list(metrics)}.{suggest(indicator, metrics)}')
    bare_names = [key.split('/')[-1] for key in metrics]
    matched = [key for key, bare in zip(metrics, bare_names) if bare == indicator]
    if not matched:
        raise ValueError(f'the metric {indicator!r} can not match any metric in '
                         f'{list(metrics)}.{suggest(indicator, bare_names)}')
    if len(matched) > 1:
        raise ValueError(f'the metric {indicator!r} matches multiple metrics {matched}; '
                         'name one with its prefix')
    return metrics[matched[0]]
