"""FashionMNIST that also works offline (torchvision: ``datasets.FashionMNIST``).

The FashionMNIST example of MMEngine's tutorial 'Model' trains on
``torchvision.datasets.FashionMNIST``, which downloads the data on first use. Where
there is no network (CI, a sandbox), the same script can train on
:class:`SyntheticFashionMNIST`: a dataset of the same shape, size and item types whose
classes are learnable but not trivially separable. :func:`load_fashion_mnist` picks
between the two.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .._errors import check_choice, check_int
from ..logging import print_log
from ..registry import DATASETS

__all__ = ['FASHION_MNIST_CLASSES', 'SyntheticFashionMNIST', 'load_fashion_mnist']

#: torchvision's ``FashionMNIST.classes``.
FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot']

# The real split sizes.
_TRAIN_SIZE, _TEST_SIZE = 60000, 10000
_SIDE = 28

# How hard the synthetic task is. With these values a nearest-class-mean classifier
# (5000 training images, scored on 1000) gets about 94%, and the tutorial's MLP trained with
# SGD(lr=1e-3), batch 64, reaches about 23% after one epoch and 65% after five: close to
# its curve on the real FashionMNIST (48% and 64% in PyTorch's tutorial). A model has
# something to learn, and a broken pipeline shows.
_BLOBS_PER_CLASS = 5     # Gaussian blobs summed into one class prototype
_MAX_SHIFT = 2           # each sample is its prototype moved by up to this many pixels
_NOISE_STD = 0.25        # per-pixel Gaussian noise, in units of the [0, 1] pixel range
_MIN_CONTRAST = 0.6      # each sample's prototype is scaled by U(_MIN_CONTRAST, 1)
_CHUNK = 4096            # samples made at once: keeps the float work in cache


def _split_seed(seed: int, split: int) -> int:
    """A 63-bit seed for ``(seed, split)`` that does not collide with other pairs."""
    state = np.random.SeedSequence([int(seed), split]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def _prototypes(seed: int) -> torch.Tensor:
    """Ten smooth class images in [0, 1], shape ``[10, 28, 28]``, fixed by ``seed``."""
    g = torch.Generator().manual_seed(_split_seed(seed, 0))
    shape = (10, _BLOBS_PER_CLASS, 1, 1)
    cy = 6 + 16 * torch.rand(shape, generator=g)
    cx = 6 + 16 * torch.rand(shape, generator=g)
    sy = 2 + 4 * torch.rand(shape, generator=g)
    sx = 2 + 4 * torch.rand(shape, generator=g)
    amplitude = 0.4 + 0.6 * torch.rand(shape, generator=g)
    yy, xx = torch.meshgrid(torch.arange(float(_SIDE)), torch.arange(float(_SIDE)),
                            indexing='ij')
    blobs = amplitude * torch.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    protos = blobs.sum(1)
    return protos / protos.amax(dim=(1, 2), keepdim=True)


def _samples(protos: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` noisy, shifted copies of the prototypes: (uint8 images, int64 labels)."""
    g = torch.Generator().manual_seed(seed)
    # Balanced classes in random order, as in the real splits (6000 / 1000 per class).
    labels = (torch.arange(size) % 10)[torch.randperm(size, generator=g)]
    k = 2 * _MAX_SHIFT + 1
    padded = torch.nn.functional.pad(protos, (_MAX_SHIFT,) * 4)
    # Every translation of every prototype, [10 * k * k, 28, 28], then one gather.
    shifted = padded.unfold(1, _SIDE, 1).unfold(2, _SIDE, 1).reshape(-1, _SIDE, _SIDE)
    shift = torch.randint(0, k * k, (size,), generator=g)
    contrast = _MIN_CONTRAST + (1 - _MIN_CONTRAST) * torch.rand(size, 1, 1, generator=g)
    images = torch.empty(size, _SIDE, _SIDE, dtype=torch.uint8)
    noise = torch.empty(min(size, _CHUNK), _SIDE, _SIDE)
    for start in range(0, size, _CHUNK):
        stop = min(size, start + _CHUNK)
        chunk = shifted[labels[start:stop] * (k * k) + shift[start:stop]]
        chunk.mul_(contrast[start:stop])
        torch.randn(stop - start, _SIDE, _SIDE, generator=g, out=noise[:stop - start])
        chunk.add_(noise[:stop - start], alpha=_NOISE_STD)
        # Round to the nearest grey level; ``copy_`` to uint8 truncates.
        images[start:stop].copy_(chunk.mul_(255).add_(0.5).clamp_(0, 255))
    return images, labels


@DATASETS.register_module()
class SyntheticFashionMNIST(Dataset):
    """A learnable stand-in for ``torchvision.datasets.FashionMNIST``, made offline.

    Shaped like torchvision's dataset: ``data`` is a uint8 tensor ``[N, 28, 28]``,
    ``targets`` int64 ``[N]``, ``classes`` the ten FashionMNIST names, and an item is
    ``(PIL.Image in mode 'L', int)`` passed through ``transform`` and
    ``target_transform``. Each class has a fixed smooth prototype (a sum of Gaussian
    blobs drawn from ``seed``); a sample is its prototype moved by up to 2 pixels,
    scaled in contrast and covered with per-pixel noise. The train and test splits
    share the prototypes and draw their samples from different streams. The same
    arguments always give the same data.

    Args:
        train: The training split (60000 images by default) or the test split (10000).
        size: The number of images; defaults to the real split's size.
        seed: Fixes the prototypes and the samples.
        transform: Applied to the PIL image, e.g. ``torchvision.transforms.ToTensor()``.
        target_transform: Applied to the int label.

    Raises:
        ValueError: ``size`` is not a positive int.

    Example:
        >>> ds = SyntheticFashionMNIST(train=False, size=100)
        >>> len(ds), ds.data.shape, ds.data.dtype, ds.targets.dtype
        (100, torch.Size([100, 28, 28]), torch.uint8, torch.int64)
        >>> image, label = ds[0]
        >>> image.mode, image.size, ds.classes[label] in FASHION_MNIST_CLASSES
        ('L', (28, 28), True)
    """

    classes = list(FASHION_MNIST_CLASSES)

    def __init__(self,
                 train: bool = True,
                 size: int | None = None,
                 seed: int = 0,
                 transform: Callable | None = None,
                 target_transform: Callable | None = None) -> None:
        if size is None:
            size = _TRAIN_SIZE if train else _TEST_SIZE
        size = check_int('size', size, minimum=1,
                         accepted='a positive int or None (the real split size)')
        seed = check_int('seed', seed, accepted='an int')
        self.train = bool(train)
        self.seed = seed
        self.transform = transform
        self.target_transform = target_transform
        self.data, self.targets = _samples(_prototypes(seed), size,
                                           _split_seed(seed, 1 if self.train else 2))

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class name -> label, as torchvision's datasets have it."""
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        from PIL import Image  # torchvision's dependency; only items need it

        image: Any = Image.fromarray(self.data[index].numpy())
        target: Any = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        split = 'Train' if self.train else 'Test'
        return (f'{type(self).__name__}(split={split}, size={len(self)}, seed={self.seed}, '
                f'transform={self.transform!r})')


def _warn(msg: str) -> None:
    print_log(msg, logger='current', level=logging.WARNING)


def _short_reason(exc: BaseException) -> str:
    """The last line of an error, without urllib's ``<urlopen error ...>`` wrapper.

    torchvision's download error is several lines ("Error downloading ...", "Tried
    <mirror>, got:", the cause); the cause is the useful part.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    if reason.startswith('<urlopen error ') and reason.endswith('>'):
        reason = reason[len('<urlopen error '):-1]
    return reason


def _missing_folders(path: str) -> list[str]:
    """The folders of ``path`` (itself and its parents) that do not exist, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_empty(folders: list[str]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (a partial download stays for the next try), or gone
            pass


def _load_real(root: str | os.PathLike, download: bool, timeout: float | None,
               transform: Callable | None,
               target_transform: Callable | None) -> tuple[Dataset, Dataset]:
    """torchvision's FashionMNIST splits, or a one-line RuntimeError saying why not."""
    raw = os.path.join(os.fspath(root), 'FashionMNIST', 'raw')
    try:
        from torchvision.datasets import FashionMNIST
    except ImportError as exc:
        raise RuntimeError(f'torchvision is not installed ({exc}; pip install torchvision)'
                           ) from exc
    previous = socket.getdefaulttimeout()
    # torchvision makes root/FashionMNIST/raw before it downloads; a failed load removes
    # the folders it made, so a run that stops here leaves nothing behind.
    made = _missing_folders(raw)
    # urllib waits forever on a connection that never answers; a firewall that drops
    # packets would hang training before its first step.
    socket.setdefaulttimeout(timeout)
    try:
        splits = tuple(
            FashionMNIST(root, train=train, download=download, transform=transform,
                         target_transform=target_transform) for train in (True, False))
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError, ...
        _remove_empty(made)
        names = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
                 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
        if all(os.path.isfile(os.path.join(raw, name)) for name in names):
            where = f'FashionMNIST in {raw} could not be read ({_short_reason(exc)})'
        elif not download:
            where = f'FashionMNIST is not in {raw} and download=False'
        else:
            where = (f'FashionMNIST is not in {raw} and could not be downloaded '
                     f'({_short_reason(exc)})')
        raise RuntimeError(where) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return splits[0], splits[1]


def load_fashion_mnist(root: str | os.PathLike = 'data',
                       *,
                       data: str = 'auto',
                       download: bool = True,
                       transform: Callable | None = None,
                       target_transform: Callable | None = None,
                       timeout: float | None = 15.0,
                       log: Callable[[str], Any] | None = _warn
                       ) -> tuple[Dataset, Dataset, bool]:
    """The FashionMNIST train and test splits, real when possible.

    Args:
        root: torchvision's ``root``: the files live in ``root/FashionMNIST/raw``.
        data: ``'real'`` loads ``torchvision.datasets.FashionMNIST`` (downloading it
            when ``download``) and raises when it cannot; ``'synthetic'`` returns
            :class:`SyntheticFashionMNIST` of the real sizes; ``'auto'`` tries the
            real data and falls back to the synthetic one, saying so through ``log``.
        download: Let torchvision download the data when it is not on disk.
        transform: Applied to each PIL image of both splits (e.g. ``ToTensor()``).
        target_transform: Applied to each label.
        timeout: Seconds a download connection may stay silent before it is given up
            (the socket default timeout while torchvision runs); ``None`` waits forever.
        log: Called with the one-line message when ``'auto'`` falls back; ``None``
            stays silent. Defaults to a warning on the ``fengine`` logger.

    Returns:
        ``(train, test, synthetic)``: the two datasets and whether they are synthetic.

    Raises:
        ValueError: ``data`` is not one of ``'auto'``, ``'real'``, ``'synthetic'``.
        RuntimeError: ``data='real'`` and the data is neither on disk nor
            downloadable; the one-line message names the folder, the reason and
            ``--data synthetic``.

    Example:
        >>> train, test, synthetic = load_fashion_mnist(data='synthetic')
        >>> len(train), len(test), synthetic
        (60000, 10000, True)
    """
    check_choice('data', data, ('auto', 'real', 'synthetic'))
    if data != 'synthetic':
        try:
            train, test = _load_real(root, download, timeout, transform, target_transform)
            return train, test, False
        except RuntimeError as exc:
            if data == 'real':
                raise RuntimeError(f"{exc}; pass --data synthetic (data='synthetic') to "
                                   'train on a synthetic FashionMNIST-shaped dataset'
                                   ) from exc.__cause__
            if log is not None:
                log(f'{exc}; training on SyntheticFashionMNIST instead ({_TRAIN_SIZE} '
                    f'train / {_TEST_SIZE} test images of {_SIDE}x{_SIDE}, the real sizes)')
    splits = tuple(
        SyntheticFashionMNIST(train=train, transform=transform,
                              target_transform=target_transform) for train in (True, False))
    return splits[0], splits[1], True
