"""Metrics and the evaluator that runs them (MMEngine: ``mmengine.evaluator``)."""
from .accuracy import Accuracy
from .evaluator import Evaluator, build_evaluator
from .metric import BaseMetric, DumpResults
from .utils import get_metric_value

__all__ = ['BaseMetric', 'Evaluator', 'Accuracy', 'DumpResults', 'build_evaluator',
           'get_metric_value']
