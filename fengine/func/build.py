"""Build a model on ``meta`` without running PyTorch's default initialization.

A module constructed under ``torch.device('meta')`` still runs its ``reset_parameters``:
``kaiming_uniform_``, ``normal_``, ``uniform_`` on tensors that hold no values. On ``meta``
the random ones go through PyTorch's Python reference kernels, and the first of them
imports ``torch._dynamo`` (seconds in a fresh process), all for a result that is thrown
away: fengine draws every parameter afterwards, in ``init_weights(device=...)``.

:func:`skip_init` builds on ``meta`` with those calls skipped. Only calls whose result
cannot be seen are skipped: an initializer or a random or constant fill whose tensor is
on ``meta`` and whose other arguments are not tensors. Everything else (creating
parameters, shape checks, copies between tensors) runs as usual, so the model has the
same structure, shapes and dtypes. Parameters that no ``init_cfg`` entry sets still get
PyTorch's default values at ``init_weights`` time, where the plan runs their module's
``reset_parameters`` on real storage.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ['skip_init', 'building_on_meta']

# torch.nn.init's in-place initializers. Four of them (uniform_, normal_, constant_,
# kaiming_uniform_) reach a TorchFunctionMode themselves; the others reach it through
# the Tensor methods below.
_INITIALIZERS = frozenset(getattr(nn.init, name) for name in (
    'uniform_', 'normal_', 'trunc_normal_', 'constant_', 'ones_', 'zeros_', 'eye_', 'dirac_',
    'xavier_uniform_', 'xavier_normal_', 'kaiming_uniform_', 'kaiming_normal_',
    'orthogonal_', 'sparse_'))
# Tensor methods that only write values: the random fills and the constant fills.
_FILLS = frozenset(getattr(torch.Tensor, name) for name in (
    'normal_', 'uniform_', 'bernoulli_', 'exponential_', 'geometric_', 'log_normal_',
    'cauchy_', 'random_', 'fill_', 'zero_'))
_SKIPPED = _INITIALIZERS | _FILLS


def _meta_target(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The tensor a fill writes, if it is on ``meta`` and no other argument is a tensor.

    Tensor methods get it first in ``args``; torch.nn.init passes it as ``tensor=``.
    """
    if args:
        target, others = args[0], (*args[1:], *kwargs.values())
    else:
        target = kwargs.get('tensor')
        others = tuple(v for k, v in kwargs.items() if k != 'tensor')
    if not isinstance(target, torch.Tensor) or not target.is_meta:
        return None
    return None if any(isinstance(a, torch.Tensor) for a in others) else target


class _SkipDefaultInit(TorchFunctionMode):
    """Returns the tensor unchanged from fills of meta tensors; passes everything else on."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SKIPPED:
            target = _meta_target(args, kwargs)
            if target is not None:
                return target
        return func(*args, **kwargs)


# Set inside a skip block, so that nested BaseModules do not push the mode again.
_SKIPPING: contextvars.ContextVar[bool] = contextvars.ContextVar('fengine_skip_init',
                                                                 default=False)


def building_on_meta() -> bool:
    """Whether modules constructed now land on ``meta`` (``torch.device('meta')`` or
    ``torch.set_default_device('meta')``), outside a :func:`skip_init` block."""
    return not _SKIPPING.get() and torch.get_default_device().type == 'meta'


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Construct modules on ``meta``, skipping PyTorch's default initialization.

    fengine only; MMEngine has no equivalent (the closest in PyTorch is
    ``torch.nn.utils.skip_init``, for one module at a time). A fengine ``BaseModule``
    constructed under ``torch.device('meta')`` gets the same treatment by itself; use
    this block for plain ``nn.Module`` models (a torchvision model, for
    :func:`~fengine.func.init_params`), or around a whole script's model building.

    Example:
        >>> import torch
        >>> from fengine.func import init_params, skip_init
        >>> with skip_init():
        ...     layer = torch.nn.Linear(4, 2)
        >>> layer.weight.is_meta
        True
        >>> init_params(layer, seed=0, device='cpu')['weight'].shape  # PyTorch's default
        torch.Size([2, 4])
    """
    token = _SKIPPING.set(True)
    try:
        with torch.device('meta'), _SkipDefaultInit():
            yield
    finally:
        _SKIPPING.reset(token)
