"""fp16 loss scaling inside a compiled step: ``GradScaler``'s math without its host syncs.

``torch.amp.GradScaler.step`` reads ``found_inf`` back to Python to decide whether to
call ``optimizer.step()`` (``_maybe_opt_step``: one device sync per update, and a graph
break). Here the update always runs and is undone where ``found_inf`` is set: the
parameters and the optimizer state are copied before it and selected back with
``torch.where`` after it. That costs a copy of the parameters and the state (transient,
inside the graph), and no sync. The scale itself is the scaler's own tensors
(``_scale``, ``_growth_tracker``), updated in place by the same ops the scaler uses
(``torch._amp_foreach_non_finite_check_and_unscale_``, ``torch._amp_update_scale_``), so
the wrapper's eager path and ``state_dict()`` see the same values.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch.optim import Optimizer

__all__ = ['ready_scaler_', 'unscale_', 'skippable_update_', 'update_scale_', 'restorable']


def ready_scaler_(scaler: torch.amp.GradScaler, device: torch.device) -> None:
    """Create the scaler's scale and growth tracker (it does so lazily, in ``scale()``)."""
    if scaler._scale is None:
        scaler._lazy_init_scale_growth_tracker(device)


def restorable(optimizer: Optimizer, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors an update may change: ``params`` and their optimizer state tensors.

    Only state that exists before the update can be put back: state that the update
    creates would survive a skipped step (holding inf/NaN). The step makes sure there is
    none (``init_state_`` returns whether it could create it all; where not, the step runs
    through the wrapper, whose scaler skips ``optimizer.step()`` on inf gradients).

    The step makes this list once per optimizer state and keeps it (``_Layout`` in
    ``step.py``): a new state (``load_state_dict``, ``init_state_``) makes it again.
    """
    tensors = list(params)
    for param in params:
        tensors.extend(v for v in optimizer.state.get(param, {}).values()
                       if isinstance(v, torch.Tensor))
    return tensors


def unscale_(scaler: torch.amp.GradScaler, grads: list[torch.Tensor]) -> torch.Tensor:
    """Divide ``grads`` by the scale in place; return ``found_inf`` (0-d, on device).

    As ``GradScaler.unscale_``: the inverse scale in double precision, one
    ``_amp_foreach_non_finite_check_and_unscale_`` per (device, dtype) of the gradients.
    """
    scale = scaler._scale
    inv_scale = scale.double().reciprocal().float()
    found_inf = torch.full((), 0.0, dtype=torch.float32, device=scale.device)
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for grad in grads:
        groups[(grad.device, grad.dtype)].append(grad)
    for (device, _), grads in groups.items():
        if device == scale.device:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
        else:  # as GradScaler's _MultiDeviceReplicator, then combined as in update()
            found = torch.zeros_like(found_inf, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found,
                                                             inv_scale.to(device))
            found_inf = found_inf + found.to(scale.device)
    return found_inf


def skippable_update_(update: Callable[[], None], tensors: list[torch.Tensor],
                      found_inf: torch.Tensor) -> None:
    """Run ``update`` and put ``tensors`` back as they were where ``found_inf`` is set."""
    before = [t.clone() for t in tensors]
    update()
    skip = found_inf > 0
    for tensor, old in zip(tensors, before):
        tensor.copy_(torch.where(skip.to(tensor.device), old, tensor))


def update_scale_(scaler: torch.amp.GradScaler, found_inf: torch.Tensor,
                  static: float | None) -> None:
    """``GradScaler.update(static)``: grow or back off the scale, or reset it to ``static``."""
    if static is not None:
        scaler._scale.fill_(static)
        return
    torch._amp_update_scale_(scaler._scale, scaler._growth_tracker, found_inf,
                             scaler._growth_factor, scaler._backoff_factor,
                             scaler._growth_interval)
