"""FashionMNIST for the example of MMEngine's tutorial 'Model', offline too (MMEngine's
``mmengine.dataset`` API is :mod:`fengine.dataset`)."""
from .fashion_mnist import FASHION_MNIST_CLASSES, SyntheticFashionMNIST, load_fashion_mnist

__all__ = ['FASHION_MNIST_CLASSES', 'SyntheticFashionMNIST', 'load_fashion_mnist']
