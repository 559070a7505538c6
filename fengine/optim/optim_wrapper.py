"""One object for backward, clipping, step and zero_grad (MMEngine: ``OptimWrapper``).

:class:`OptimWrapper` keeps MMEngine's API: ``update_params(loss)`` scales the loss
for gradient accumulation, runs backward and, on update steps, clips, steps and
zeroes the gradients. Two things differ on purpose:

- What an update measures (the gradient norm when clipping by norm) is kept in
  :attr:`OptimWrapper.log_vars` as tensors, not pushed into a global message hub
  as Python floats: reading it never waits for the device inside a step, and
  ``BaseModel.train_step`` merges it into its log dict.
- The loss of each micro-step is divided by the number of backward passes that
  the next update actually accumulates, also after resuming mid-window (MMEngine
  divides by a wrong factor there, or by zero).
"""
from __future__ import annotations

import logging
import numbers
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from .._errors import check_bool, check_choice, check_int, choices_text, suggest
from ..logging import print_log
from ..registry import OPTIM_WRAPPERS

__all__ = ['OptimWrapper']

# Keyword arguments of torch.nn.utils.clip_grad_norm_ / clip_grad_value_ by clip type,
# and the one each type cannot do without.
_CLIP_KEYS = {
    'norm': ('max_norm', 'norm_type', 'error_if_nonfinite', 'foreach'),
    'value': ('clip_value', 'foreach'),
}
_CLIP_REQUIRED = {'norm': 'max_norm', 'value': 'clip_value'}


def _number(value: Any) -> Any:
    """A group's hyper-parameter as MMEngine returns it; a 0-d tensor read as a float."""
    return float(value) if isinstance(value, torch.Tensor) else value


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_clip_grad(clip_grad: dict | None) -> tuple[str, dict[str, Any]] | None:
    """Check a ``clip_grad`` config; return ``(type, kwargs for torch's clip function)``."""
    if clip_grad is None:
        return None
    if not isinstance(clip_grad, dict):
        raise TypeError('clip_grad must be None or a dict such as dict(max_norm=1.0) or '
                        f"dict(type='value', clip_value=0.5), but got "
                        f'{type(clip_grad).__name__}: {clip_grad!r}')
    kwargs = dict(clip_grad)  # the caller's config stays as it was
    clip_type = kwargs.pop('type', 'norm')
    check_choice('clip_grad type', clip_type, _CLIP_KEYS)
    valid = _CLIP_KEYS[clip_type]
    for key in kwargs:
        if key in valid:
            continue
        other = next((t for t, keys in _CLIP_KEYS.items() if key in keys), None)
        hint = (f" {key!r} belongs to type={other!r}." if other
                else suggest(key, valid))
        raise ValueError(f'clip_grad with type={clip_type!r} got the unknown key {key!r}.'
                         f'{hint} Valid keys: {choices_text(valid)}.')
    required = _CLIP_REQUIRED[clip_type]
    if required not in kwargs:
        example = 'dict(max_norm=1.0)' if clip_type == 'norm' else (
            "dict(type='value', clip_value=0.5)")
        raise ValueError(f'clip_grad with type={clip_type!r} needs {required!r}, e.g. '
                         f'{example}, but got {clip_grad!r}')
    limit = kwargs[required]
    if not _is_real(limit) or not limit > 0:
        raise ValueError(f'clip_grad {required} must be a positive number, but got {limit!r}')
    norm_type = kwargs.get('norm_type', 2.0)
    if not (norm_type == 'inf' or (_is_real(norm_type) and norm_type > 0)):
        raise ValueError("clip_grad norm_type must be a positive number or 'inf', but got "
                         f'{norm_type!r}')
    for key in ('error_if_nonfinite', 'foreach'):
        value = kwargs.get(key)
        if value is not None:
            check_bool(f'clip_grad {key}', value)
    return clip_type, kwargs


@OPTIM_WRAPPERS.register_module()
class OptimWrapper:
    """Backward, gradient clipping, step and zero_grad as one call (MMEngine: ``OptimWrapper``).

    Args:
        optimizer: The ``torch.optim.Optimizer`` that updates the parameters.
        accumulative_counts: Accumulate gradients over this many calls of
            :meth:`update_params` before each update; a positive int.
        clip_grad: ``None``, ``dict(max_norm=..., norm_type=2.0)`` for
            ``torch.nn.utils.clip_grad_norm_`` (``type='norm'`` is the default), or
            ``dict(type='value', clip_value=...)`` for ``clip_grad_value_``.

    Attributes:
        optimizer: The wrapped optimizer.
        clip_grad_kwargs: The clip function's keyword arguments (``None`` without
            clipping).
        log_vars: What the latest update measured, as tensors, for the training
            log: ``{'grad_norm': tensor}`` when clipping by norm (the total norm
            before clipping), ``{}`` otherwise. Replaced at every :meth:`step`;
            nothing here calls ``.item()``, so a step never waits for the device.
        base_param_settings: With several param groups, MMEngine's extra group
            (``{'params': tensor([0.]), **optimizer.defaults}``) that
            :attr:`param_groups` appends: schedulers change its ``lr`` as every
            group's, so ``get_lr()['base_lr']`` is the scheduled base lr of the
            config. ``None`` with one group. The optimizer never sees it.

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``, or
            ``accumulative_counts`` is not an int.
        ValueError: ``accumulative_counts`` < 1, or ``clip_grad`` has an unknown
            type or key, lacks its limit, or has a bad value.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Linear(2, 1)
        >>> wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
        ...                        clip_grad=dict(max_norm=1.0))
        >>> loss = model(torch.ones(4, 2)).pow(2).mean()
        >>> wrapper.update_params(loss)
        >>> sorted(wrapper.log_vars)
        ['grad_norm']
        >>> wrapper.get_lr()
        {'lr': [0.1]}

        Accumulating gradients over 4 batches, with DDP not syncing in between::

            wrapper = OptimWrapper(optimizer, accumulative_counts=4)
            wrapper.initialize_count_status(model, 0, len(dataloader))
            for batch in dataloader:
                with wrapper.optim_context(ddp_model):
                    loss = ddp_model(batch)
                wrapper.update_params(loss)
    """

    def __init__(self,
                 optimizer: Optimizer,
                 accumulative_counts: int = 1,
                 clip_grad: dict | None = None) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f'{type(self).__name__} wraps a torch.optim.Optimizer, but got '
                            f'{type(optimizer).__module__}.{type(optimizer).__qualname__}. '
                            'Build one first, e.g. '
                            'torch.optim.SGD(model.parameters(), lr=0.01), or use '
                            "build_optim_wrapper(model, dict(optimizer=dict(type='SGD', "
                            'lr=0.01))).')
        self.optimizer = optimizer
        self._accumulative_counts = check_int('accumulative_counts', accumulative_counts, minimum=1)
        parsed = _parse_clip_grad(clip_grad)
        self._clip_type, self.clip_grad_kwargs = parsed if parsed else (None, None)
        self.log_vars: dict[str, torch.Tensor] = {}
        # Backward passes done so far. With initialize_count_status, _init_counts is
        # where counting (re)started and _max_counts where it ends; -1 means unknown.
        self._inner_count = 0
        self._init_counts = 0
        self._max_counts = -1
        self.base_param_settings: dict | None = None
        # getattr: a stand-in optimizer (a test's mock) may have no groups.
        if len(getattr(optimizer, 'param_groups', ())) > 1:
            self.base_param_settings = {'params': torch.tensor([0.0]), **optimizer.defaults}

    # -- the update ------------------------------------------------------------------
    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: dict | None = None,
                      zero_kwargs: dict | None = None) -> None:
        """Scale ``loss``, backward and, on update steps, clip, step and zero_grad.

        Args:
            loss: The loss of this (micro-)batch.
            step_kwargs: Keyword arguments for :meth:`step` (e.g. ``closure``).
            zero_kwargs: Keyword arguments for :meth:`zero_grad` (e.g.
                ``set_to_none``).
        """
        loss = self.scale_loss(loss)
        self.backward(loss)
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)`` and count the micro-step.

        Subclasses that override it must also increase the count, as
        :meth:`should_update` reads it.
        """
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs: Any) -> None:
        """Clip the gradients if configured, then ``optimizer.step(**kwargs)``.

        Sets :attr:`log_vars` to what the clipping measured.
        """
        self.log_vars = self._clip_grad()
        self.optimizer.step(**kwargs)

    def zero_grad(self, **kwargs: Any) -> None:
        """``optimizer.zero_grad(**kwargs)``."""
        self.optimizer.zero_grad(**kwargs)

    def clip_grads(self, params: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clip the gradients of ``params`` as ``clip_grad`` says; return what was measured.

        A pure function of the gradients (no counters, no host sync), so a compiled
        training step can call it inside its graph.

        Returns:
            ``{'grad_norm': total norm before clipping}`` when clipping by norm,
            otherwise ``{}``.
        """
        params = list(params)
        if self._clip_type is None or not params:
            return {}
        if self._clip_type == 'value':
            nn.utils.clip_grad_value_(params, **self.clip_grad_kwargs)
            return {}
        grad_norm = nn.utils.clip_grad_norm_(params, **self.clip_grad_kwargs)
        return {'grad_norm': grad_norm.detach()}

    def clip_grad_tensors(self, grads: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`clip_grads` on the gradients themselves, for a step that has no ``.grad``.

        The same numbers as ``clip_grad_norm_``/``clip_grad_value_`` (torch's
        ``get_total_norm``, then every gradient times ``min(max_norm / (norm + 1e-6),
        1)``, or clamped to ``±clip_value``), in place on ``grads``. Only the
        total norm reads ``foreach``: it chooses kernels, not numbers.
        """
        grads = list(grads)
        if self._clip_type is None or not grads:
            return {}
        kwargs = self.clip_grad_kwargs
        if self._clip_type == 'value':
            value = float(kwargs['clip_value'])
            for grad in grads:
                grad.clamp_(min=-value, max=value)
            return {}
        grad_norm = nn.utils.get_total_norm(
            grads, kwargs.get('norm_type', 2.0), kwargs.get('error_if_nonfinite', False),
            kwargs.get('foreach'))
        # No `if coef < 1`: that would read the norm back to the host.
        coef = torch.clamp(float(kwargs['max_norm']) / (grad_norm + 1e-6), max=1.0)
        for grad in grads:
            grad.mul_(coef.to(grad.device))
        return {'grad_norm': grad_norm.detach()}

    def _clip_grad(self) -> dict[str, torch.Tensor]:
        if self._clip_type is None:  # no walk over the parameters on every step
            return {}
        params = [p for group in self.optimizer.param_groups for p in group['params']
                  if p.requires_grad and p.grad is not None]
        return self.clip_grads(params)

    # -- gradient accumulation -------------------------------------------------------
    @property
    def inner_count(self) -> int:
        """How many backward passes this wrapper has counted."""
        return self._inner_count

    @property
    def accumulative_counts(self) -> int:
        """The number of micro-steps accumulated per update."""
        return self._accumulative_counts

    def initialize_count_status(self, model: nn.Module, init_counts: int,
                                max_counts: int) -> None:
        """Tell the wrapper where training starts and ends, in micro-steps.

        Without it, every update accumulates ``accumulative_counts`` micro-steps
        and trailing ones that do not fill a window are never applied. With it,
        the last window is shorter: for ``max_counts=10`` and
        ``accumulative_counts=4`` the updates come after micro-steps 4, 8 and 10,
        and the losses of the last two are divided by 2, not 4. After resuming at
        ``init_counts=2`` the first update comes after micro-step 4 and averages
        the two micro-steps it saw.

        Args:
            model: The model; a warning is logged when it has BatchNorm layers and
                gradients are accumulated (their statistics see micro-batches).
            init_counts: The micro-step training starts (or resumes) at.
            max_counts: The micro-step training ends at.

        Raises:
            TypeError: A count is not an int.
            ValueError: ``init_counts`` < 0 or ``max_counts`` < ``init_counts``.
        """
        init_counts = check_int('init_counts', init_counts, minimum=0)
        max_counts = check_int('max_counts', max_counts, minimum=init_counts)
        self._inner_count = self._init_counts = init_counts
        self._max_counts = max_counts
        acc = self._accumulative_counts
        if init_counts % acc:
            print_log(f'Resuming at micro-step {init_counts}, which is not a multiple of '
                      f'accumulative_counts={acc}: the gradients of the '
                      f'{init_counts % acc} micro-step(s) before it were not saved, so the '
                      f'first update averages only {acc - init_counts % acc}.',
                      logger='current', level=logging.WARNING)
        if acc > 1 and any(isinstance(m, _BatchNorm) for m in model.modules()):
            print_log('Gradient accumulation may slightly decrease performance because '
                      'the model has BatchNorm layers (their statistics see each '
                      'micro-batch, not the accumulated batch).',
                      logger='current', level=logging.WARNING)

    def should_update(self) -> bool:
        """Whether the micro-step just counted ends an accumulation window."""
        return (self._inner_count % self._accumulative_counts == 0
                or self._inner_count == self._max_counts)

    def should_sync(self) -> bool:
        """Whether the coming micro-step (not counted yet) ends a window.

        Read by :meth:`optim_context` before the forward pass, so DDP only
        all-reduces gradients on the micro-step that updates.
        """
        upcoming = self._inner_count + 1
        return upcoming % self._accumulative_counts == 0 or upcoming == self._max_counts

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Divide ``loss`` by the number of micro-steps the coming update accumulates.

        That is ``accumulative_counts``, except in a window cut short by
        ``max_counts`` or by resuming at ``init_counts`` (see
        :meth:`initialize_count_status`). With ``accumulative_counts=1`` the loss
        is returned as it is.
        """
        factor = self._loss_factor()
        return loss if factor == 1 else loss / factor

    def _loss_factor(self) -> int:
        """The length of the accumulation window the coming micro-step belongs to."""
        count, acc = self._inner_count, self._accumulative_counts
        start = count - count % acc
        end = start + acc
        # Windows also start where counting started and end at max_counts.
        for boundary in (self._init_counts, self._max_counts):
            if start < boundary <= count:
                start = boundary
            if count < boundary < end:
                end = boundary
        return end - start

    def next_micro_step(self) -> tuple[int, bool]:
        """Count one micro-step without running backward; for compiled training steps.

        Returns:
            ``(factor, update)``: divide this micro-step's loss by ``factor``, and
            apply the update after it when ``update`` is True.
        """
        factor = self._loss_factor()
        self._inner_count += 1
        return factor, self.should_update()

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """The context for a forward pass: skips gradient sync between updates.

        When ``model`` has a ``no_sync()`` context (DDP, FSDP, a custom wrapper) and
        the coming micro-step does not end an accumulation window
        (:meth:`should_sync` is False), the forward and backward run under
        ``model.no_sync()``; otherwise this is an empty context.
        :class:`AmpOptimWrapper` adds autocast.

        Args:
            model: The model about to run forward.
        """
        # hasattr first: a compiled step traces this, and reading the counter would guard on it.
        if hasattr(model, 'no_sync') and not self.should_sync():
            with model.no_sync():
                yield
        else:
            yield

    # -- the optimizer's state and hyper-parameters ----------------------------------
    @property
    def param_groups(self) -> list[dict]:
        """The optimizer's ``param_groups`` (parameter schedulers edit them).

        With several groups, :attr:`base_param_settings` is appended, as in MMEngine.
        """
        if self.base_param_settings is not None:
            return self.optimizer.param_groups + [self.base_param_settings]
        return self.optimizer.param_groups

    @property
    def defaults(self) -> dict:
        """The optimizer's ``defaults``."""
        return self.optimizer.defaults

    def get_lr(self) -> dict[str, list[float]]:
        """The learning rate of each parameter group: ``{'lr': [...]}``.

        With several groups, ``'base_lr'`` comes first, holding the lr of
        :attr:`base_param_settings` (MMEngine's ``get_lr``). The values are the
        groups' own numbers, as in MMEngine; a compiled training step keeps ``lr`` as
        a 0-d tensor (so a new value is not a recompile), which is read back as a float.
        """
        lrs: dict[str, list[float]] = {}
        if self.base_param_settings is not None:
            lrs['base_lr'] = [_number(self.base_param_settings['lr'])]
        lrs['lr'] = [_number(group['lr']) for group in self.optimizer.param_groups]
        return lrs

    def get_momentum(self) -> dict[str, list[float]]:
        """The momentum of each group: ``{'momentum': [...]}``.

        Read from ``momentum`` (SGD, RMSprop) or ``betas[0]`` (Adam and kin); 0 for
        an optimizer with neither.
        """
        momentum = []
        for group in self.optimizer.param_groups:
            # A compiled step holds SGD's momentum and Adam's betas[0] as 0-d tensors.
            if 'momentum' in group:
                momentum.append(_number(group['momentum']))
            elif 'betas' in group:
                momentum.append(_number(group['betas'][0]))
            else:
                momentum.append(0)
        return {'momentum': momentum}

    def state_dict(self) -> dict:
        """The optimizer's ``state_dict()``, plus ``base_param_settings`` when there is one."""
        state_dict = self.optimizer.state_dict()
        if self.base_param_settings is not None:
            state_dict['base_param_settings'] = self.base_param_settings
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        """Load what :meth:`state_dict` returned into the optimizer (and the base group)."""
        state_dict = dict(state_dict)  # the caller's dict keeps its entries
        base = state_dict.pop('base_param_settings', None)
        self.optimizer.load_state_dict(state_dict)
        if base is not None:
            self.base_param_settings = base

    def __repr__(self) -> str:
        clip = (f', clip_grad={dict(type=self._clip_type, **self.clip_grad_kwargs)!r}'
                if self._clip_type else '')
        return (f'{type(self).__name__}(accumulative_counts={self._accumulative_counts}'
                f'{clip}, optimizer=\n{self.optimizer!r})')
