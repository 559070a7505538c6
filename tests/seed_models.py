"""The seed tutorial's FashionMNIST model and metric, shared by tests.

They are the classes ``examples/fashion_mnist.py`` trains, from
``examples/fashion_mnist_model.py`` (the seed's code verbatim but for ``mmengine`` ->
``fengine`` and a registry decorator), so the tests exercise exactly what the README runs.
The module is imported under its one name, ``fashion_mnist_model``, as the example and
the config ``examples/configs/fashion_mnist.py`` import it: a second copy would register
its classes twice.
"""
from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = str(Path(__file__).resolve().parents[1] / 'examples')
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

from fashion_mnist_model import FashionMnistMetric, NeuralNetwork  # noqa: E402

__all__ = ['NeuralNetwork', 'FashionMnistMetric', 'EXAMPLES']
