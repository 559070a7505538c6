"""Fused whole-model initialization with a counter-based RNG (Philox4x32-10).

Installed as ``fengine.kernels``. ``philox`` is the torch path (any device, CPU
included); ``triton_init`` holds the Triton kernel that fills many parameters in one
launch and produces the same integers. Triton is imported only when the kernel is used,
so fengine imports on machines without Triton or without a GPU.
"""
from __future__ import annotations

from .philox import (COMPILE_MIN_NUMEL, COMPILE_WORTH_NUMEL, KIND_IDS, DistArgs, compile_fill,
                     dist_args, fill, philox4x32, prepare_fills)

__all__ = ['philox4x32', 'DistArgs', 'dist_args', 'fill', 'KIND_IDS', 'fill_segments',
           'fill_tensors', 'triton_available', 'compile_fill', 'prepare_fills',
           'COMPILE_MIN_NUMEL', 'COMPILE_WORTH_NUMEL']


def triton_available() -> bool:
    """Whether Triton can be imported here (a GPU is a separate question)."""
    import importlib.util
    return importlib.util.find_spec('triton') is not None


def fill_segments(out, segments):
    """Fill many segments of a flat buffer in one Triton launch (imports Triton).

    See :func:`kernels.triton_init.fill_segments`.
    """
    from .triton_init import fill_segments as run
    return run(out, segments)


def fill_tensors(jobs):
    """Fill many tensors of one dtype and device in one Triton launch (imports Triton).

    See :func:`kernels.triton_init.fill_tensors`.
    """
    from .triton_init import fill_tensors as run
    return run(jobs)
