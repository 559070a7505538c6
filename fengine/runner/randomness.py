"""Seeding Python, NumPy and torch for a run (MMEngine: ``set_random_seed``)."""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch

from .._errors import check_bool
from ..dist import get_rank, sync_random_seed

__all__ = ['set_random_seed', 'get_rng_state', 'set_rng_state', 'rng_state_kept']


def set_random_seed(seed: int | None = None, deterministic: bool = False,
                    diff_rank_seed: bool = False) -> int:
    """Seed ``random``, NumPy and torch (every CUDA device too); return the seed.

    MMEngine: ``mmengine.runner.set_random_seed``.

    Args:
        seed: ``None`` draws one (:func:`fengine.dist.sync_random_seed`: rank 0's on
            every rank when distributed, as MMEngine), so it can be logged and reused.
        deterministic: Use deterministic algorithms (``torch.use_deterministic_algorithms``,
            cuDNN without autotuning). Slower; needed for bit-exact resume on CUDA.
        diff_rank_seed: Seed each process with ``seed + rank`` (MMEngine's rule), so
            random augmentations differ between ranks.

    Returns:
        The seed this process was seeded with (``seed + rank`` with ``diff_rank_seed``).

    Raises:
        TypeError: ``seed`` is not an int, or ``diff_rank_seed`` not a bool.
    """
    check_seed(seed)
    check_bool('randomness diff_rank_seed', diff_rank_seed)
    if seed is None:
        seed = sync_random_seed()
    if diff_rank_seed:
        seed += get_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic results (CUDA >= 10.2).
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed


def check_seed(seed: object) -> None:
    """Raise ``TypeError`` unless ``seed`` is an int (not a bool) or ``None``."""
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f'randomness seed must be an int or None, but got {seed!r}')


def get_rng_state() -> dict:
    """Every generator's state, as plain values and tensors (safe for ``weights_only``)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    rng = {
        'python': [version, list(state), gauss],
        'numpy': [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng['cuda'] = torch.cuda.get_rng_state_all()
    return rng


def set_rng_state(rng: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, state, gauss = rng['python']
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = rng['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng['torch'])
    if 'cuda' in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng['cuda'])


@contextlib.contextmanager
def rng_state_kept() -> Iterator[None]:
    """Restore every generator's state on exit (Python, NumPy, torch, CUDA).

    The training loops validate inside it: validation draws random numbers too (each
    ``iter(dataloader)`` draws a worker seed), and a run resumed from a checkpoint
    written just before validating would otherwise continue from another point of
    the random streams than the run that was not interrupted.
    """
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
