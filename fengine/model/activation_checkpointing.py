"""Recompute chosen submodules in the backward pass instead of keeping their activations.

MMEngine: ``mmengine.runner.activation_checkpointing.turn_on_activation_checkpointing``,
which the Runner applies for ``cfg=dict(activation_checkpointing=[...])``.

Each named submodule's ``forward`` becomes ``torch.utils.checkpoint.checkpoint(forward,
..., use_reentrant=False)``: its intermediate activations are dropped after the forward
pass and recomputed during backward. The results are the same; memory falls, time rises
by about one more forward pass of those submodules.

torch.func's transforms do not support the saved-tensor hooks that checkpointing uses, so
the fused step of :meth:`BaseModel.compile_steps` (built on ``torch.func.grad_and_value``)
cannot hold a checkpointed submodule: a model with one trains through autograd instead,
with its forward pass and losses compiled (see :meth:`BaseModel.compile_steps`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

from torch import nn
from torch.utils.checkpoint import checkpoint

from .._errors import suggest

__all__ = ['turn_on_activation_checkpointing', 'checkpointed_modules']

# Marks a forward replaced here, so a second call does not checkpoint it twice.
_MARK = '_fengine_checkpointed_forward'


def _checkpointed(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        # use_reentrant=False: keyword arguments pass through, inputs that need no grad
        # are fine, and torch.compile traces it (torch's recommended variant).
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    setattr(run, _MARK, True)
    return run


def _check_names(model: nn.Module, modules: Any) -> list[str]:
    if isinstance(modules, str):
        modules = [modules]
    if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
        raise TypeError(f'activation_checkpointing must be a submodule name or a list of them '
                        f"(e.g. ['backbone.layer1', 'neck']), but got {modules!r}")
    names = dict(model.named_modules())
    names.pop('', None)
    missing = [m for m in modules if m not in names]
    if missing:
        shown = sorted(names)
        listed = ', '.join(repr(n) for n in shown[:40]) + (' ...' if len(shown) > 40 else '')
        raise ValueError(f'activation_checkpointing names {missing}, which '
                         f'{"is not a submodule" if len(missing) == 1 else "are not submodules"} '
                         f'of {type(model).__name__}.{suggest(missing[0], names)} Its submodules: '
                         f'{listed or "none"}')
    return list(modules)


def turn_on_activation_checkpointing(model: nn.Module, modules: str | Iterable[str]) -> list[str]:
    """Checkpoint the ``forward`` of each submodule of ``model`` named in ``modules``.

    MMEngine: ``turn_on_activation_checkpointing``. Names are those of
    ``model.named_modules()`` (dotted paths, list indices included: ``'layers.0'``). A
    submodule already checkpointed is left as it is.

    Args:
        model: The model (not a DDP wrapper).
        modules: A name or a list of names.

    Returns:
        The names, as a list.

    Raises:
        TypeError: ``modules`` is neither a str nor a list of str.
        ValueError: a name matches no submodule (the message lists the submodules and a
            close match); nothing is changed then.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> turn_on_activation_checkpointing(net, ['0', '2'])
        ['0', '2']
        >>> checkpointed_modules(net)
        ['0', '2']
    """
    names = _check_names(model, modules)
    submodules = dict(model.named_modules())
    for name in names:
        module = submodules[name]
        if not getattr(module.forward, _MARK, False):
            # An instance attribute: this module only, not every module of its class.
            module.forward = _checkpointed(module.forward)
    compiled = getattr(model, '_compiled_steps', None)
    if isinstance(compiled, dict):
        # A fused step made before cannot run checkpointed modules: decide again.
        compiled['train'] = {}
    return names


def checkpointed_modules(model: nn.Module) -> list[str]:
    """The names of the submodules of ``model`` whose forward is checkpointed here."""
    return [name for name, module in model.named_modules()
            if getattr(module.__dict__.get('forward'), _MARK, False)]
