"""Explicit randomness: one random stream per (seed, path).

A parameter's stream is keyed by the seed and its path alone, so adding,
removing or reordering other parameters never changes its values, and the same
seed gives the same tensor bit for bit on the same device.
"""
from __future__ import annotations

import hashlib

import torch

__all__ = ['fold_in', 'generator']

_KEY_MASK = (1 << 63) - 1


def fold_in(seed: int, path: str) -> int:
    """A 63-bit key for ``path`` under ``seed`` (stable across processes and machines).

    Python's ``hash`` is salted per process, so a cryptographic digest is used.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f'seed must be an int, but got {type(seed).__name__}: {seed!r}')
    digest = hashlib.blake2b(f'{seed}\x00{path}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & _KEY_MASK


def generator(key: int, device: torch.device | str) -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``key``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(key)
    return gen
