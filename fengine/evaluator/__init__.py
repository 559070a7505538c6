"""Metrics and the evaluator that runs them (MMEngine: ``mmengine.evaluator``)."""
from .accuracy import Accuracy
from .evaluator import Evaluator, build_evaluator
from .metric import BaseMetric

__all__ = ['BaseMetric', 'Evaluator', 'Accuracy', 'build_evaluator']
