"""Writes FashionMNIST files in torchvision's layout, so tests load them with no network.

torchvision 0.29's ``FashionMNIST(root, download=True)`` skips the download when
``_check_exists()`` finds the four *uncompressed* files in ``root/FashionMNIST/raw``
(it checks only that they exist; the MD5 sums it knows are those of the real ``.gz``
archives, so ``.gz`` files alone would make it download again). It then parses them
with ``read_image_file`` / ``read_label_file``. :func:`write_fashion_mnist` writes the
``.gz`` archives, as the download leaves them, and unpacks them with torchvision's
own ``extract_archive``, the step its download runs.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from fengine.datasets import SyntheticFashionMNIST

IMAGES_MAGIC = 0x00000803  # IDX: unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # IDX: unsigned bytes, 1 dimension
RAW_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
             't10k-labels-idx1-ubyte')


def idx_bytes(tensor: torch.Tensor) -> bytes:
    """A uint8 tensor (``[N]`` labels or ``[N, H, W]`` images) as an IDX file."""
    if tensor.dtype != torch.uint8 or tensor.dim() not in (1, 3):
        raise ValueError(f'IDX writes uint8 tensors of 1 or 3 dims, got {tensor.dtype} '
                         f'{tuple(tensor.shape)}')
    magic = IMAGES_MAGIC if tensor.dim() == 3 else LABELS_MAGIC
    header = struct.pack(f'>{1 + tensor.dim()}I', magic, *tensor.shape)
    return header + tensor.contiguous().numpy().tobytes()


def write_fashion_mnist(root: str | Path, n_train: int = 600, n_test: int = 100, seed: int = 0,
                        extract: bool = True) -> Path:
    """Write ``root/FashionMNIST/raw`` with learnable data; return that folder.

    The images and labels are :class:`SyntheticFashionMNIST`'s for ``seed``.

    Args:
        root: torchvision's ``root``.
        n_train: Training images.
        n_test: Test images.
        seed: The synthetic data's seed.
        extract: Unpack the ``.gz`` files with torchvision's ``extract_archive`` (what
            ``FashionMNIST`` needs); ``False`` leaves only the archives.
    """
    raw = Path(root) / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, train, size in (('train', True, n_train), ('t10k', False, n_test)):
        ds = SyntheticFashionMNIST(train=train, size=size, seed=seed)
        for kind, tensor in (('images-idx3', ds.data), ('labels-idx1', ds.targets.to(torch.uint8))):
            archive = raw / f'{prefix}-{kind}-ubyte.gz'
            archive.write_bytes(gzip.compress(idx_bytes(tensor)))
            if extract:
                from torchvision.datasets.utils import extract_archive

                extract_archive(str(archive), str(raw))
    return raw
