"""Averaged copies of a model: EMA and SWA (MMEngine: ``mmengine.model.averaged_model``).

An averaged model holds a frozen copy of a model (``.module``) and, at each
:meth:`~BaseAveragedModel.update_parameters`, moves the copy's weights towards the
model's. The update is a few multi-tensor (``torch._foreach_*``) kernels per device and
dtype, and it reads no tensor value on the host: the update counter is a Python int
(mirrored into the ``steps`` buffer that checkpoints hold), so averaging after each
step of a compiled, asynchronous training loop does not make the host wait for the
device.
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import Tensor, nn

from .._errors import check_bool, check_int
from ..logging import print_log
from ..registry import MODELS

__all__ = ['BaseAveragedModel', 'ExponentialMovingAverage', 'MomentumAnnealingEMA',
           'StochasticWeightAverage']


def _frozen_copy(model: nn.Module) -> nn.Module:
    """``deepcopy(model)`` with ``requires_grad=False``, without its compiled steps.

    A BaseModel after ``compile_steps()`` holds its compiled training step, which holds
    the optimizer wrapper and so the optimizer's state: a plain deepcopy would copy all
    of it (as much memory again as the optimizer's state) into a copy that never trains.
    The copy gets ``_compiled_steps = None`` instead (eager steps).
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        compiled = module.__dict__.get('_compiled_steps')
        if compiled is not None:
            memo[id(compiled)] = None
    return copy.deepcopy(model, memo).requires_grad_(False)


def _defined_in(cls: type, name: str) -> type:
    """The class of ``cls``'s MRO whose own ``__dict__`` defines ``name``."""
    return next(klass for klass in cls.__mro__ if name in vars(klass))


class BaseAveragedModel(nn.Module):
    """A running average of a model's weights (MMEngine: ``BaseAveragedModel``).

    It follows ``torch.optim.swa_utils.AveragedModel`` in shape (a copy of the model as
    ``.module``, ``forward`` runs the copy, ``update_parameters(model)`` averages into
    it, the first update copies) and in method (one ``torch._foreach_lerp_`` per device
    and dtype, as its ``get_ema_multi_avg_fn``), but is not built on it, for three
    reasons: its counter ``n_averaged`` lives on the model's device and every
    ``update_parameters`` reads it (``bool(self.n_averaged == 0)``), a host sync per
    iteration; MMEngine's checkpoints name the counter ``steps``; and it has neither
    MMEngine's ``interval`` nor its rule that buffers are copied (not averaged) unless
    ``update_buffers``.

    A subclass implements either ``avg_func(averaged, source, steps)`` for one tensor
    (MMEngine's interface, in place) or ``multi_avg_func(averaged, source, steps)`` for
    lists of tensors of one device and dtype; the one defined further down the class
    hierarchy is used, so a subclass of :class:`ExponentialMovingAverage` that only
    overrides ``avg_func`` gets its own rule.

    Args:
        model: The model to average; it is copied (without gradients, and without the
            compiled steps of a fengine ``BaseModel``).
        interval: Average every ``interval``-th update (the others only count).
        device: Keep the copy on this device (default: the model's).
        update_buffers: Average the buffers too (floating-point ones; others keep the
            value of the first update). Else the buffers are copied from the model at
            each update.

    Attributes:
        module: The averaged copy.
        steps: A 0-d ``long`` buffer: the number of updates (saved in checkpoints).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fengine.model import ExponentialMovingAverage
        >>> net = nn.Linear(2, 1)
        >>> ema = ExponentialMovingAverage(net, momentum=0.5)
        >>> ema.update_parameters(net)  # the first update copies
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(2.0)
        >>> ema.update_parameters(net)  # halfway to the new weights
        >>> torch.allclose(ema.module.weight, net.weight - 1.0)
        True
    """

    steps: Tensor

    def __init__(self, model: nn.Module, interval: int = 1,
                 device: torch.device | str | None = None,
                 update_buffers: bool = False) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f'{type(self).__name__} averages an nn.Module, but got '
                            f'{type(model).__name__}: {model!r}')
        self.interval = check_int(f'{type(self).__name__} interval', interval, minimum=1,
                                  accepted='a positive int')
        self.update_buffers = check_bool(f'{type(self).__name__} update_buffers',
                                         update_buffers)
        self.module = _frozen_copy(model)
        if device is not None:
            self.module = self.module.to(device)
        # As MMEngine: on `device`, or the CPU when none is given.
        self.register_buffer('steps', torch.tensor(0, dtype=torch.long, device=device))
        self._count = 0  # the host's copy of `steps`: never read back from the device
        self.register_load_state_dict_post_hook(_reread_count)
        self._use_multi = issubclass(_defined_in(type(self), 'multi_avg_func'),
                                     _defined_in(type(self), 'avg_func'))

    @property
    def avg_parameters(self) -> dict[str, Tensor]:
        """The averaged tensors by name: the parameters, with ``update_buffers`` the buffers too."""
        if self.update_buffers:
            return self.module.state_dict(keep_vars=True)
        return dict(self.module.named_parameters())

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        """Move ``averaged_param`` towards ``source_param`` in place (one tensor)."""
        raise NotImplementedError(f'{type(self).__name__} must implement avg_func or '
                                  'multi_avg_func')

    def multi_avg_func(self, averaged: list[Tensor], source: list[Tensor], steps: int) -> None:
        """Move each of ``averaged`` towards ``source`` in place (one device and dtype).

        The default calls :meth:`avg_func` per tensor.
        """
        for avg, src in zip(averaged, source):
            self.avg_func(avg, src, steps)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the averaged copy."""
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Average ``model``'s current weights into :attr:`module`.

        The first call copies them; after that, every ``interval``-th call averages.
        Nothing here waits for the device.

        Raises:
            KeyError: ``model`` lacks a parameter (or buffer) of the copy; nothing is
                changed then.
        """
        averaged = self.avg_parameters
        source = (model.state_dict(keep_vars=True) if self.update_buffers
                  else dict(model.named_parameters()))
        missing = [name for name in averaged if name not in source]
        if missing:
            raise KeyError(f'{type(self).__name__}.update_parameters: the model has no '
                           f'{", ".join(missing[:5])}, which the averaged copy has; is it '
                           'the model this average was made from?')
        steps = self._count
        if steps == 0:
            pairs = [(avg, source[name]) for name, avg in averaged.items()]
            _copy_grouped(pairs)
        elif steps % self.interval == 0:
            for avgs, srcs in _grouped((avg, source[name]) for name, avg in averaged.items()
                                       if avg.is_floating_point()):
                if self._use_multi:
                    self.multi_avg_func(avgs, srcs, steps)
                else:
                    for avg, src in zip(avgs, srcs):
                        self.avg_func(avg, src, steps)
        if not self.update_buffers:
            _copy_grouped(list(zip(self.module.buffers(), model.buffers())))
        self._count = steps + 1
        self.steps.fill_(self._count)  # asynchronous on a device: nothing is read back


def _reread_count(module: nn.Module, incompatible_keys: Any) -> None:
    # A loaded `steps` (resume) is read once, here, not at every update.
    module._count = int(module.steps)


def _grouped(pairs) -> list[tuple[list[Tensor], list[Tensor]]]:
    """``(averaged, source)`` pairs as lists per device and dtype of the averaged tensor,
    with the sources moved to it (a no-op when they are there already)."""
    groups: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
    for avg, src in pairs:
        avgs, srcs = groups.setdefault((avg.device, avg.dtype), ([], []))
        avgs.append(avg.detach())
        srcs.append(src.detach().to(device=avg.device, dtype=avg.dtype))
    return list(groups.values())


def _copy_grouped(pairs: list[tuple[Tensor, Tensor]]) -> None:
    for avgs, srcs in _grouped(pairs):
        torch._foreach_copy_(avgs, srcs)


@MODELS.register_module()
class StochasticWeightAverage(BaseAveragedModel):
    """The plain average of the weights seen (MMEngine: ``StochasticWeightAverage``).

    After ``n`` averaging updates (one every ``interval``), each weight is the mean of
    the ``n + 1`` values it was given: ``avg += (x - avg) / (steps // interval + 1)``.
    """

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        self.multi_avg_func([averaged_param], [source_param], steps)

    def multi_avg_func(self, averaged: list[Tensor], source: list[Tensor], steps: int) -> None:
        torch._foreach_lerp_(averaged, source, 1.0 / float(steps // self.interval + 1))


@MODELS.register_module()
class ExponentialMovingAverage(BaseAveragedModel):
    """The exponential moving average of the weights (MMEngine: ``ExponentialMovingAverage``).

    ``avg = (1 - momentum) * avg + momentum * x`` (``torch.lerp(avg, x, momentum)``).
    As in MMEngine, ``momentum`` is the weight of the *new* value, usually small
    (0.0002), unlike an optimizer's momentum.

    Args:
        model: The model to average.
        momentum: In (0, 1); above 0.5 a warning says it is probably meant as ``1 - x``.
        interval, device, update_buffers: See :class:`BaseAveragedModel`.

    Raises:
        ValueError: ``momentum`` not in (0, 1), or ``interval`` not a positive int.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, interval: int = 1,
                 device: torch.device | str | None = None,
                 update_buffers: bool = False) -> None:
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or \
                not 0.0 < momentum < 1.0:
            raise ValueError(f'{type(self).__name__} momentum must be a number in (0, 1) (the '
                             f'weight of the new value), but got {momentum!r}')
        super().__init__(model, interval, device, update_buffers)
        if momentum > 0.5:
            print_log(f'{type(self).__name__} momentum={momentum} is the weight of the NEW '
                      'weights (usually small, e.g. 0.0002), not of the average as in an '
                      'optimizer\'s momentum; check that it is what you mean.',
                      logger='current', level=logging.WARNING)
        self.momentum = float(momentum)

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        self.multi_avg_func([averaged_param], [source_param], steps)

    def multi_avg_func(self, averaged: list[Tensor], source: list[Tensor], steps: int) -> None:
        torch._foreach_lerp_(averaged, source, self.momentum)


@MODELS.register_module()
class MomentumAnnealingEMA(ExponentialMovingAverage):
    """EMA whose momentum starts large and anneals (MMEngine: ``MomentumAnnealingEMA``).

    The momentum of an update is ``max(momentum, gamma / (gamma + steps))``, ``steps``
    being the number of updates before it, so the average follows the model closely
    early in training and smoothly later.

    Args:
        model, momentum, interval, device, update_buffers: See
            :class:`ExponentialMovingAverage`.
        gamma: A positive number; larger anneals more slowly.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: int = 100,
                 interval: int = 1, device: torch.device | str | None = None,
                 update_buffers: bool = False) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0:
            raise ValueError(f'MomentumAnnealingEMA gamma must be a positive number, but got '
                             f'{gamma!r}')
        super().__init__(model, momentum, interval, device, update_buffers)
        self.gamma = gamma

    def multi_avg_func(self, averaged: list[Tensor], source: list[Tensor], steps: int) -> None:
        # The host's count, not `self.steps.item()`: no wait for the device.
        torch._foreach_lerp_(averaged, source, max(self.momentum,
                                                   self.gamma / (self.gamma + steps)))
