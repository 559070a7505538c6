"""Schedules MMEngine has and ``torch.optim.lr_scheduler`` lacks, as torch schedulers.

Each class is a ``torch.optim.lr_scheduler.LRScheduler`` in torch's chainable form
(``get_lr`` computes the next value from the current one), so a
:class:`~fengine.optim.ParamScheduler` runs it exactly like torch's own schedulers:
same window (``begin``/``end``), same resume, same tensor values, and over any
param-group key through :class:`~fengine.optim.ParamScheduler`'s ``param_name``.

- :class:`CosineAnnealingLR`: torch's, plus MMEngine's ``eta_min_ratio``.
- :class:`PolyLR`: MMEngine's polynomial decay towards ``eta_min`` (torch's
  ``PolynomialLR`` decays to 0).
- :class:`CosineRestartLR`: MMEngine's cosine restarts with ``periods`` and
  ``restart_weights`` (torch's ``CosineAnnealingWarmRestarts`` takes ``T_0``/``T_mult``).
- :class:`QuadraticWarmupLR`: MMDetection's quadratic warm-up (the value grows as
  ``base * ((step + 1) / total_iters) ** 2``).

The math follows MMEngine's documented schedules; the class names are MMEngine's
LR scheduler names, so a checkpoint names the schedule a config asked for.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

from torch import Tensor
from torch.optim import Optimizer, lr_scheduler

__all__ = ['CosineAnnealingLR', 'PolyLR', 'CosineRestartLR', 'QuadraticWarmupLR']


def _values(scheduler: lr_scheduler.LRScheduler) -> list[Any]:
    return [group['lr'] for group in scheduler.optimizer.param_groups]


def _min_values(base_values: Sequence[Any], eta_min: float | None,
                eta_min_ratio: float | None) -> list[Any]:
    if eta_min_ratio is None:
        return [eta_min] * len(base_values)
    return [base * eta_min_ratio for base in base_values]


def _one_of(name: str, eta_min: float | None, eta_min_ratio: float | None,
            default_min: float | None) -> float | None:
    if eta_min is not None and eta_min_ratio is not None:
        raise ValueError(f'{name} takes eta_min or eta_min_ratio, not both; got '
                         f'eta_min={eta_min!r}, eta_min_ratio={eta_min_ratio!r}')
    if eta_min is None and eta_min_ratio is None:
        if default_min is None:
            raise ValueError(f'{name} needs eta_min (the lowest value) or eta_min_ratio '
                             '(the lowest value as a fraction of the initial one)')
        return default_min
    return eta_min


class CosineAnnealingLR(lr_scheduler.CosineAnnealingLR):
    """torch's ``CosineAnnealingLR`` with MMEngine's ``eta_min_ratio``.

    MMEngine: ``CosineAnnealingParamScheduler``. With ``eta_min_ratio`` the floor of
    each group is its initial value times the ratio; without it, torch's math runs
    unchanged.

    Args:
        optimizer: The optimizer (or a view of it, see ``ParamScheduler``).
        T_max: Steps of the half cosine.
        eta_min: The floor; 0 when neither it nor ``eta_min_ratio`` is given.
        last_epoch: torch's resume index.
        eta_min_ratio: The floor as a fraction of each group's initial value.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float | None = None,
                 last_epoch: int = -1, eta_min_ratio: float | None = None) -> None:
        eta_min = _one_of('CosineAnnealingLR', eta_min, eta_min_ratio, 0.0)
        self.eta_min_ratio = eta_min_ratio
        super().__init__(optimizer, T_max, 0.0 if eta_min is None else eta_min, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        if self.eta_min_ratio is None:
            return super().get_lr()
        floors = _min_values(self.base_lrs, None, self.eta_min_ratio)
        current = _values(self)
        if self.last_epoch == 0:
            return current
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            return [value + (base - low) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for value, base, low in zip(current, self.base_lrs, floors)]
        ratio = ((1 + math.cos(math.pi * self.last_epoch / self.T_max))
                 / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max)))
        return [ratio * (value - low) + low for value, low in zip(current, floors)]


class PolyLR(lr_scheduler.LRScheduler):
    """Polynomial decay from the current value to ``eta_min`` (MMEngine: ``PolyParamScheduler``).

    Each step multiplies the distance to ``eta_min`` by
    ``(1 - 1 / (total_iters - step + 1)) ** power``, so the value reaches ``eta_min``
    after ``total_iters`` steps and stays there.

    Args:
        optimizer: The optimizer (or a view of it).
        total_iters: Steps of the decay (``ParamScheduler`` sets ``end - begin - 1``).
        eta_min: The final value.
        power: The polynomial's power.
        last_epoch: torch's resume index.
    """

    def __init__(self, optimizer: Optimizer, total_iters: int, eta_min: float = 0.0,
                 power: float = 1.0, last_epoch: int = -1) -> None:
        if not isinstance(total_iters, numbers.Integral) or total_iters < 1:
            raise ValueError(f'PolyLR total_iters must be a positive int, but got '
                             f'{total_iters!r}')
        self.total_iters = int(total_iters)
        self.eta_min = eta_min
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        current = _values(self)
        if self.last_epoch == 0 or self.last_epoch > self.total_iters:
            return current
        factor = (1 - 1 / (self.total_iters - self.last_epoch + 1)) ** self.power
        return [(value - self.eta_min) * factor + self.eta_min for value in current]


class CosineRestartLR(lr_scheduler.LRScheduler):
    """Cosine annealing restarted at the end of each period (MMEngine: ``CosineRestartParamScheduler``).

    Period ``i`` lasts ``periods[i]`` steps and starts from the initial value times
    ``restart_weights[i]``, annealing towards ``eta_min`` (or the initial value
    times ``eta_min_ratio``). After the last period the value stays as it is.

    Args:
        optimizer: The optimizer (or a view of it).
        periods: The length of each period, in steps.
        restart_weights: The weight of each period's starting value.
        eta_min: The floor.
        eta_min_ratio: The floor as a fraction of each group's initial value.
        last_epoch: torch's resume index.
    """

    def __init__(self, optimizer: Optimizer, periods: Sequence[int],
                 restart_weights: Sequence[float] = (1,), eta_min: float | None = None,
                 eta_min_ratio: float | None = None, last_epoch: int = -1) -> None:
        self.eta_min = _one_of('CosineRestartLR', eta_min, eta_min_ratio, None)
        self.eta_min_ratio = eta_min_ratio
        if (not isinstance(periods, (list, tuple)) or not periods
                or not all(isinstance(p, numbers.Integral) and p > 0 for p in periods)):
            raise ValueError(f'CosineRestartLR periods must be a non-empty list of positive '
                             f'ints, but got {periods!r}')
        if not isinstance(restart_weights, (list, tuple)) or len(restart_weights) != len(
                periods):
            raise ValueError(f'CosineRestartLR needs one restart weight per period: got '
                             f'periods={list(periods)!r} and '
                             f'restart_weights={restart_weights!r}')
        self.periods = [int(p) for p in periods]
        self.restart_weights = list(restart_weights)
        self.cumulative_periods = [sum(self.periods[:i + 1]) for i in range(len(periods))]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        current = _values(self)
        index = next((i for i, end in enumerate(self.cumulative_periods)
                      if self.last_epoch < end), None)
        if index is None:
            return current
        start = 0 if index == 0 else self.cumulative_periods[index - 1]
        period = self.periods[index]
        step = self.last_epoch - start
        floors = _min_values(self.base_lrs, self.eta_min, self.eta_min_ratio)
        if step == 0:
            return [base * self.restart_weights[index] for base in self.base_lrs]
        ratio = ((1 + math.cos(math.pi * step / period))
                 / (1 + math.cos(math.pi * (step - 1) / period)))
        return [ratio * (value - low) + low for value, low in zip(current, floors)]


class QuadraticWarmupLR(lr_scheduler.LRScheduler):
    """Quadratic warm-up to the initial value (MMDetection: ``QuadraticWarmupParamScheduler``).

    Step ``s`` (from 0) sets ``base * ((s + 1) / total_iters) ** 2``, so the last step
    of the warm-up (``total_iters - 1``) reaches the initial value. Written, as
    MMDetection's, as the running sum of ``base * (2 s + 1) / total_iters ** 2``.

    Args:
        optimizer: The optimizer (or a view of it).
        total_iters: Steps of the warm-up (``ParamScheduler`` sets ``end - begin``).
        last_epoch: torch's resume index.
    """

    def __init__(self, optimizer: Optimizer, total_iters: int, last_epoch: int = -1) -> None:
        if not isinstance(total_iters, numbers.Integral) or total_iters < 1:
            raise ValueError(f'QuadraticWarmupLR total_iters must be a positive int, but got '
                             f'{total_iters!r}; give the warm-up an end, e.g. '
                             "dict(type='QuadraticWarmupLR', by_epoch=False, begin=0, end=500)")
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        step = self.last_epoch
        if step >= self.total_iters:
            return _values(self)
        increments = [base * (2 * step + 1) / self.total_iters ** 2 for base in self.base_lrs]
        if step == 0:
            return increments
        return [value + increment for value, increment in zip(_values(self), increments)]
