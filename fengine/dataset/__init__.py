"""Datasets, transforms, samplers and collate functions (MMEngine: ``mmengine.dataset``).

fengine's FashionMNIST helper lives in :mod:`fengine.datasets`.
"""
from .base_dataset import BaseDataset, Compose, force_full_init, load_annotation_file
from .dataset_wrapper import ClassBalancedDataset, ConcatDataset, RepeatDataset
from .sampler import DefaultSampler, InfiniteSampler
from .utils import COLLATE_FUNCTIONS, default_collate, pseudo_collate, worker_init_fn

__all__ = [
    'BaseDataset', 'Compose', 'force_full_init', 'load_annotation_file',
    'ClassBalancedDataset', 'ConcatDataset', 'RepeatDataset', 'DefaultSampler',
    'InfiniteSampler', 'COLLATE_FUNCTIONS', 'default_collate', 'pseudo_collate',
    'worker_init_fn',
]
