"""Automatic mixed precision on top of :class:`OptimWrapper` (MMEngine: ``AmpOptimWrapper``).

Which precision, on which device:

- float16 keeps only 5 exponent bits, so small gradients underflow; it needs a
  ``torch.amp.GradScaler`` (scale the loss, unscale before clipping, step through
  the scaler, update the scale). It is the default on CUDA. On the CPU it works
  where torch supports it: float16 CPU autocast and the CPU ``GradScaler`` (both
  present in the torch fengine pins); on a torch without them asking for it is a
  clear error that points to bfloat16 instead of autocast silently switching off.
- bfloat16 has float32's exponent range, so it needs no loss scaling; it is the
  default everywhere but CUDA. Its scaler is created disabled (a pass-through)
  unless a float or dict ``loss_scale`` asks for scaling explicitly.

The device is read from the optimizer's parameters (for the scaler and the default
dtype) and, at each forward, from the model's parameters (for autocast).
"""
from __future__ import annotations

import inspect
import numbers
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from .._errors import choices_text, suggest
from ..registry import OPTIM_WRAPPERS
from .optim_wrapper import OptimWrapper

__all__ = ['AmpOptimWrapper']

_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


def _resolve_dtype(dtype: str | torch.dtype | None, device_type: str) -> torch.dtype:
    """``None`` -> float16 on CUDA, bfloat16 elsewhere; a name -> its torch dtype."""
    if dtype is None:
        return torch.float16 if device_type == 'cuda' else torch.bfloat16
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f'AmpOptimWrapper dtype must be one of '
                             f'{choices_text(_DTYPES)}, torch.float16, torch.bfloat16 or '
                             f'None, but got {dtype!r}.{suggest(dtype, _DTYPES)}')
        return _DTYPES[dtype]
    if dtype in (torch.float16, torch.bfloat16):
        return dtype
    raise ValueError(f'AmpOptimWrapper dtype must be torch.float16, torch.bfloat16, '
                     f'{choices_text(_DTYPES)} or None, but got {dtype!r}')


def _scaler_kwargs(loss_scale: str | float | dict) -> tuple[dict[str, Any], float | None]:
    """``GradScaler`` keyword arguments and the static scale (or ``None``) for ``loss_scale``."""
    if isinstance(loss_scale, str):
        if loss_scale != 'dynamic':
            raise ValueError("AmpOptimWrapper loss_scale must be 'dynamic', a positive "
                             f'number (a static scale) or a dict of GradScaler arguments, '
                             f'but got {loss_scale!r}.{suggest(loss_scale, ["dynamic"])}')
        return {}, None
    if isinstance(loss_scale, numbers.Real) and not isinstance(loss_scale, bool):
        if not loss_scale > 0:
            raise ValueError(f'a static loss_scale must be positive, but got {loss_scale!r}')
        # A static scale: every update resets the scale to it (see step()).
        return {'init_scale': float(loss_scale)}, float(loss_scale)
    if isinstance(loss_scale, dict):
        accepted = [name for name in inspect.signature(torch.amp.GradScaler).parameters
                    if name not in ('self', 'device')]
        for key in loss_scale:
            if key not in accepted:
                raise ValueError(f'AmpOptimWrapper loss_scale got the unknown GradScaler '
                                 f'argument {key!r}.{suggest(key, accepted)} Valid keys: '
                                 f'{choices_text(accepted)} (the device is read from the '
                                 'parameters).')
        return dict(loss_scale), None
    raise TypeError("AmpOptimWrapper loss_scale must be 'dynamic', a positive number or a "
                    f'dict of GradScaler arguments, but got {type(loss_scale).__name__}: '
                    f'{loss_scale!r}')


def _fp16_autocast_works(device_type: str) -> bool:
    """Whether torch can autocast to float16 on ``device_type`` and scale its gradients."""
    if device_type == 'cuda':
        return True
    try:
        torch.amp.GradScaler(device_type)  # torch < 2.3 has only the CUDA scaler
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return False
    # An unsupported autocast dtype only warns and turns autocast off: probe instead.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            with torch.autocast(device_type=device_type, dtype=torch.float16):
                probe = torch.ones(2, 2, device=device_type)
                return (probe @ probe).dtype == torch.float16
        except (RuntimeError, ValueError):
            return False


def _device_type(tensors: Iterator[torch.Tensor]) -> str | None:
    first = next(tensors, None)
    return None if first is None else first.device.type


@OPTIM_WRAPPERS.register_module()
class AmpOptimWrapper(OptimWrapper):
    """:class:`OptimWrapper` with autocast and loss scaling (MMEngine: ``AmpOptimWrapper``).

    Args:
        loss_scale: ``'dynamic'`` (a ``torch.amp.GradScaler`` with its defaults), a
            positive number (a static scale: the scaler starts at it and every
            update resets it, so it never grows; steps with inf/NaN gradients are
            still skipped), or a dict of ``GradScaler`` arguments
            (``init_scale``, ``growth_factor``, ``backoff_factor``,
            ``growth_interval``, ``enabled``). With bfloat16, ``'dynamic'`` means no
            scaling (bfloat16 has float32's range); a number or dict still scales.
        dtype: ``torch.float16``, ``torch.bfloat16``, ``'float16'``, ``'bfloat16'``
            or ``None``: float16 when the parameters are on CUDA, else bfloat16.
        **kwargs: :class:`OptimWrapper`'s arguments (``optimizer``,
            ``accumulative_counts``, ``clip_grad``).

    Attributes:
        cast_dtype: The autocast dtype.
        loss_scaler: The ``torch.amp.GradScaler`` (disabled for bfloat16 without
            an explicit ``loss_scale``).

    Raises:
        ValueError: An unknown ``dtype`` or ``loss_scale``, or float16 on a device
            where this torch cannot autocast to float16 with a GradScaler (the
            message says to use bfloat16, which works on the CPU).
        TypeError: ``loss_scale`` of another type.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(4, 2)
        >>> wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        ...                           dtype='bfloat16')
        >>> with wrapper.optim_context(model):
        ...     out = model(torch.randn(3, 4))
        >>> out.dtype
        torch.bfloat16
        >>> wrapper.update_params(out.float().pow(2).mean())
    """

    def __init__(self,
                 loss_scale: str | float | dict = 'dynamic',
                 dtype: str | torch.dtype | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        device_type = _device_type(p for g in self.optimizer.param_groups
                                   for p in g['params'])
        self._device_type = device_type or 'cpu'
        self.cast_dtype = _resolve_dtype(dtype, self._device_type)
        scaler_kwargs, self._static_scale = _scaler_kwargs(loss_scale)
        if self.cast_dtype == torch.float16 and not _fp16_autocast_works(self._device_type):
            raise ValueError(
                f'AmpOptimWrapper: float16 autocast with a GradScaler needs CUDA (or a '
                f'torch whose {self._device_type!r} autocast supports float16 and that has '
                f"torch.amp.GradScaler({self._device_type!r})); this torch "
                f'({torch.__version__}) has neither for the parameters on '
                f"{self._device_type!r}. bfloat16 works on the CPU and needs no loss "
                "scaling: pass dtype='bfloat16' (or dtype=None to pick it).")
        # bfloat16 needs no scaling; an explicit number or dict still asks for it.
        scaler_kwargs.setdefault('enabled',
                                 self.cast_dtype == torch.float16 or loss_scale != 'dynamic')
        self.loss_scaler = torch.amp.GradScaler(self._device_type, **scaler_kwargs)

    @property
    def static_loss_scale(self) -> float | None:
        """The static scale every update resets the scaler to; ``None`` for dynamic scaling."""
        return self._static_scale

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """Backward the scaled loss (``loss_scaler.scale(loss).backward(**kwargs)``)."""
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs: Any) -> None:
        """Unscale (before clipping), clip, step through the scaler and update the scale.

        A step whose gradients hold inf or NaN is skipped by the scaler, and the
        scale shrinks (dynamic scaling) or stays (static scaling).
        """
        if self.clip_grad_kwargs:
            # Clip thresholds are in the gradients' true units, not the scaled ones.
            self.loss_scaler.unscale_(self.optimizer)
        self.log_vars = self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._static_scale)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """:meth:`OptimWrapper.optim_context` plus ``torch.autocast`` on the model's device.

        The device type is that of the model's first parameter (or buffer); a model
        with neither uses the optimizer's.

        Raises:
            RuntimeError: torch has no autocast for the model's device type.
        """
        device_type = (_device_type(model.parameters()) or _device_type(model.buffers())
                       or self._device_type)
        if not torch.amp.is_autocast_available(device_type):
            raise RuntimeError(f'AmpOptimWrapper: torch has no autocast for the device type '
                               f"{device_type!r} of {type(model).__name__}'s parameters; "
                               'move the model to a device with autocast (cuda, cpu...).')
        with super().optim_context(model), torch.autocast(device_type=device_type,
                                                          dtype=self.cast_dtype):
            yield

    def state_dict(self) -> dict:
        """The optimizer's state dict plus the scaler's under ``'loss_scaler'``."""
        state_dict = super().state_dict()
        state_dict['loss_scaler'] = self.loss_scaler.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the optimizer's state and, when present, the scaler's ``'loss_scaler'``."""
        state_dict = dict(state_dict)  # the caller's dict keeps its 'loss_scaler'
        scaler_state = state_dict.pop('loss_scaler', None)
        super().load_state_dict(state_dict)
        if scaler_state is not None:
            self.loss_scaler.load_state_dict(scaler_state)

    def __repr__(self) -> str:
        scaling = ('static' if self._static_scale is not None
                   else 'dynamic' if self.loss_scaler.is_enabled() else 'off')
        return (f'{super().__repr__()}\n(cast_dtype={self.cast_dtype}, '
                f'loss scaling: {scaling})')
