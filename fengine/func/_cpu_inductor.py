"""Inductor settings fengine chooses for a training step whose parameters are on the CPU.

Inductor's ``layout_optimization`` turns every graph that has a convolution and runs on a
CPU with oneDNN to channels-last: the input, each convolution's weight and what flows
between them. That suits inference, where weights are converted once. In a training step
the parameters stay in torch's default layout, so each step makes a channels-last copy
of every convolution weight in the forward, keeps it for the backward, and converts each
weight gradient back before the update. On ResNet-18 (3x64x64 images, batch 32, SGD with
momentum) that made the compiled step hold more tensors at its peak than the eager one
and run no faster (``docs/benchmarks.md``, "Training step memory (CPU)"). fengine turns it
off for such steps; convolutions then run as in eager, through oneDNN on the tensors'
own layout. A user's own value in ``torch.compile``'s ``options`` wins.
"""
from __future__ import annotations

from typing import Iterable

import torch

__all__ = ['CPU_TRAINING_INDUCTOR_OPTIONS', 'cpu_training_options']

CPU_TRAINING_INDUCTOR_OPTIONS: dict[str, object] = {
    # Per-step layout conversions of weights and weight gradients (see the docstring).
    'layout_optimization': False,
}
"""Inductor options added to a CPU training step's compile options, unless set."""


def cpu_training_options(options: dict | None,
                         params: Iterable[torch.Tensor]) -> dict | None:
    """``options`` with :data:`CPU_TRAINING_INDUCTOR_OPTIONS` added under ``'options'``.

    Only for the inductor backend (the default), no ``mode`` (``torch.compile`` refuses a
    mode and options together) and parameters that are all on the CPU; otherwise, and for
    ``None`` (no compilation), ``options`` is returned unchanged. Keys
    the user put in ``options['options']`` keep their values. The given dicts are not
    changed.

    No MMEngine equivalent (MMEngine passes its ``compile`` options to ``torch.compile``
    as they are).
    """
    if options is None or options.get('backend', 'inductor') != 'inductor':
        return options
    if options.get('mode') is not None:
        # torch.compile takes a mode or options, never both: the user's mode wins.
        return options
    devices = {param.device.type for param in params}
    if devices != {'cpu'}:
        return options
    given = options.get('options')
    if given is not None and not isinstance(given, dict):
        raise TypeError(f"compile option 'options' must be a dict of inductor options, but "
                        f'got {type(given).__name__}: {given!r}')
    return {**options, 'options': {**CPU_TRAINING_INDUCTOR_OPTIONS, **(given or {})}}
