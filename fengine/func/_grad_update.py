"""torch.optim's update from gradient tensors, so a compiled step needs no ``.grad`` buffers.

``optimizer.step()`` reads each gradient from ``param.grad``. A compiled step cannot set
``param.grad`` inside its graph before the step (dynamo refuses an optimizer step after an
attribute mutation of a parameter), so it used to keep one persistent ``.grad`` buffer per
parameter, written in place: a whole gradient-sized copy held for the run, on top of the
gradients the backward makes. For torch's ``SGD``, ``Adam`` and ``AdamW`` the gradients go
here instead, straight into the functions their ``step()`` calls (``torch.optim.sgd.sgd``,
``torch.optim.adam.adam``) with the same arguments ``step()`` would pass, so the numbers
are torch.optim's and a gradient lives only as long as the graph needs it, as in an eager
step that calls ``zero_grad(set_to_none=True)``.

Other optimizers (a user's, RMSprop...) read ``.grad``: :func:`grad_update` returns
``None`` for them and the step keeps the buffers.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch.optim import Optimizer
from torch.optim.adam import adam as adam_math
from torch.optim.sgd import sgd as sgd_math

from ._optim_state import sgd_tensor_step

__all__ = ['grad_update', 'GradUpdate']

# optimizer, {parameter: its gradient} -> None (params and state updated in place)
GradUpdate = Callable[[Optimizer, dict[torch.Tensor, torch.Tensor]], None]


def grad_update(optimizer: Optimizer) -> GradUpdate | None:
    """The update of ``optimizer`` from a ``{param: grad}`` map, or ``None`` if it needs ``.grad``.

    Known: torch's own ``SGD`` and ``Adam``/``AdamW`` (``AdamW`` shares ``Adam.step``),
    with no group ``differentiable=True`` and no complex parameter (their ``step()`` views
    complex tensors as real ones first; not repeated here). A subclass that overrides
    ``step`` or ``_init_group`` is not known: it may read ``.grad`` its own way.
    """
    def own(kind: type, name: str) -> object:
        # torch.optim wraps each class's `step` in a profiling hook of its own when its
        # first instance is made (and dynamo wraps `_init_group` per class once it has
        # traced an optimizer), so AdamW's are not the very functions Adam's are.
        return inspect.unwrap(getattr(kind, name))

    kind = type(optimizer)
    if all(own(kind, name) is own(torch.optim.SGD, name) for name in ('step', '_init_group')):
        update = _sgd_update
    elif all(own(kind, name) is own(torch.optim.Adam, name)
             for name in ('step', '_init_group')):
        update = _adam_update
    else:
        return None
    for group in optimizer.param_groups:
        if group.get('differentiable') or any(torch.is_complex(p) for p in group['params']):
            return None
    return update


def _with_grads(group: dict, grads: dict[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """The group's parameters that have a gradient (``step()`` skips ``grad is None``)."""
    return [p for p in group['params'] if p in grads]


@torch.no_grad()
def _sgd_update(optimizer: torch.optim.SGD, grads: dict[torch.Tensor, torch.Tensor]) -> None:
    """``SGD.step()`` with ``grads`` in place of ``.grad``."""
    if any(isinstance(group.get(key), torch.Tensor) for group in optimizer.param_groups
           for key in ('momentum', 'weight_decay')):
        sgd_tensor_step(optimizer, grads)  # held hyper-parameters (see _optim_state.py)
        return
    for group in optimizer.param_groups:
        params = _with_grads(group, grads)
        if not params:
            continue
        momentum = group['momentum']
        buffers = [optimizer.state[p].get('momentum_buffer') if momentum != 0 else None
                   for p in params]
        param_grads = [grads[p] for p in params]
        sgd_math(
            params, param_grads, buffers,
            has_sparse_grad=any(g.is_sparse for g in param_grads),
            foreach=group['foreach'], fused=group['fused'],
            grad_scale=getattr(optimizer, 'grad_scale', None),
            found_inf=getattr(optimizer, 'found_inf', None),
            weight_decay=group['weight_decay'], momentum=momentum, lr=group['lr'],
            dampening=group['dampening'], nesterov=group['nesterov'],
            maximize=group['maximize'])
        if momentum != 0:
            # The first step of a dampened SGD creates its buffers (a copy of the gradient).
            for param, buffer in zip(params, buffers):
                optimizer.state[param]['momentum_buffer'] = buffer


@torch.no_grad()
def _adam_update(optimizer: torch.optim.Adam, grads: dict[torch.Tensor, torch.Tensor]) -> None:
    """``Adam.step()`` (and ``AdamW``'s) with ``grads`` in place of ``.grad``.

    The state must exist (``init_state_`` creates it, as ``_init_group`` would).
    """
    for group in optimizer.param_groups:
        params = _with_grads(group, grads)
        if not params:
            continue
        states = [optimizer.state[p] for p in params]
        beta1, beta2 = group['betas']
        adam_math(
            params, [grads[p] for p in params],
            [s['exp_avg'] for s in states], [s['exp_avg_sq'] for s in states],
            [s['max_exp_avg_sq'] for s in states] if group['amsgrad'] else [],
            [s['step'] for s in states],
            amsgrad=group['amsgrad'], has_complex=False, beta1=beta1, beta2=beta2,
            lr=group['lr'], weight_decay=group['weight_decay'], eps=group['eps'],
            maximize=group['maximize'], foreach=group['foreach'],
            capturable=group['capturable'], differentiable=group['differentiable'],
            fused=group['fused'], grad_scale=getattr(optimizer, 'grad_scale', None),
            found_inf=getattr(optimizer, 'found_inf', None),
            decoupled_weight_decay=group.get('decoupled_weight_decay', False))
