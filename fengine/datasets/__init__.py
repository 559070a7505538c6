"""Datasets (MMEngine: ``mmengine.dataset``; the seed's example uses torchvision's)."""
from .fashion_mnist import FASHION_MNIST_CLASSES, SyntheticFashionMNIST, load_fashion_mnist

__all__ = ['FASHION_MNIST_CLASSES', 'SyntheticFashionMNIST', 'load_fashion_mnist']
