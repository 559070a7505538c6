"""The seed tutorial's FashionMNIST model and metric, shared by tests.

They are taken from ``examples/fashion_mnist.py`` (the seed's code verbatim but for
``mmengine`` -> ``fengine``), so the tests exercise exactly what the README runs.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'fashion_mnist.py'
_spec = importlib.util.spec_from_file_location('fengine_example_fashion_mnist', _EXAMPLE)
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)

NeuralNetwork = _example.NeuralNetwork
FashionMnistMetric = _example.FashionMnistMetric

__all__ = ['NeuralNetwork', 'FashionMnistMetric']
