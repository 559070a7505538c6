"""``BaseModel``: train/val/test steps on top of ``forward(*inputs, mode=...)``.

MMEngine: ``mmengine.model.BaseModel``. The steps here are the eager reference;
the compiled, fused versions live in :mod:`fengine.func.step`.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..func.compile_background import compile_in_flight
from ..registry import MODELS
from .activation_checkpointing import checkpointed_modules
from .base_module import BaseModule

__all__ = ['BaseModel', 'parse_losses', 'MODES']

MODES = ('loss', 'predict', 'tensor')


class _DropCompileNoise(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


# (logger, a fragment of the message): torch's warnings that say nothing actionable
# to a user of compiled steps.
_COMPILE_NOISE = (
    # Predictions often carry Python numbers (the tutorial's ``loss.item()``); the compiled
    # evaluation step allows that graph break by design (``fullgraph=False``).
    ('torch._dynamo.variables.tensor', 'Graph break from `Tensor.item()`'),
    # A CUDA build of torch on a machine without a GPU, when inductor loads its C++
    # toolchain; CPU code generation does not need CUDA.
    ('torch.utils.cpp_extension', 'No CUDA runtime is found'),
)


# One filter per entry, made once: Filterer.addFilter skips a filter the logger holds.
_COMPILE_NOISE_FILTERS = tuple((name, _DropCompileNoise(fragment))
                               for name, fragment in _COMPILE_NOISE)


def _quiet_compile_noise() -> None:
    """Hide :data:`_COMPILE_NOISE` from now on (idempotent; :meth:`BaseModel.compile_steps`)."""
    for name, quiet in _COMPILE_NOISE_FILTERS:
        logging.getLogger(name).addFilter(quiet)


def parse_losses(losses: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sum the loss entries of a ``forward(mode='loss')`` result (MMEngine: ``parse_losses``).

    Each value is a tensor (its mean is taken) or a list of tensors (the sum of their
    means). The total is the sum of the entries whose key contains ``'loss'``.

    Returns:
        ``(total, log_vars)``: ``log_vars`` starts with ``'loss'`` (the total) and then
        holds every entry, as tensors (reading them is left to whoever logs them).

    Raises:
        TypeError: ``losses`` is not a mapping, or a value is neither a tensor nor a
            list of tensors (the message names the key).
        ValueError: no key contains ``'loss'``.
    """
    if not isinstance(losses, Mapping):
        raise TypeError(f"forward(mode='loss') must return a dict of losses, but returned "
                        f'{type(losses).__name__}')
    entries: dict[str, torch.Tensor] = {}
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            entries[name] = value.mean()
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, torch.Tensor) for v in value):
            entries[name] = sum(v.mean() for v in value)  # type: ignore[assignment]
        else:
            raise TypeError(f'loss {name!r} must be a tensor or a list of tensors, but got '
                            f'{type(value).__name__}: {value!r}')
    terms = [value for name, value in entries.items() if 'loss' in name]
    if not terms:
        raise ValueError(f"no key of forward(mode='loss')'s result contains 'loss', so "
                         f'there is nothing to optimize; keys: {sorted(entries)}')
    total = terms[0] if len(terms) == 1 else torch.stack(terms).sum()
    log_vars = {'loss': total}
    log_vars.update((k, v) for k, v in entries.items() if k != 'loss')
    return total, log_vars


def _detached(log_vars: Mapping[str, Any]) -> dict[str, Any]:
    """Log values outlive the step: they must not hold the autograd graph."""
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in log_vars.items()}


class BaseModel(BaseModule):
    """The base of every trainable model (MMEngine: ``BaseModel``).

    A subclass implements ``forward(*inputs, mode='tensor')`` returning, by mode:
    ``'loss'`` a dict of losses, ``'predict'`` predictions for the metric,
    ``'tensor'`` raw tensors. A batch that is a dict is passed as ``**data``; a
    tuple or list as ``*data``.

    Args:
        data_preprocessor: A module, or a config dict built from ``MODELS``
            (default ``dict(type='BaseDataPreprocessor')``).
        init_cfg: See :class:`BaseModule`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fengine.model import BaseModel
        >>> class Net(BaseModel):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = nn.Linear(4, 2)
        ...     def forward(self, x, y, mode='tensor'):
        ...         out = self.fc(x)
        ...         if mode == 'loss':
        ...             return dict(loss=nn.functional.cross_entropy(out, y))
        ...         return out.argmax(1) if mode == 'predict' else out
        >>> net = Net()
        >>> batch = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
        >>> net.val_step(batch).shape
        torch.Size([8])
    """

    def __init__(self, data_preprocessor: dict | nn.Module | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg)
        if data_preprocessor is None:
            data_preprocessor = dict(type='BaseDataPreprocessor')
        if isinstance(data_preprocessor, nn.Module):
            self.data_preprocessor = data_preprocessor
        elif isinstance(data_preprocessor, dict):
            self.data_preprocessor = MODELS.build(data_preprocessor)
        else:
            raise TypeError(f'data_preprocessor must be a dict config or an nn.Module, but '
                            f'got {type(data_preprocessor).__name__}: {data_preprocessor!r}')

    def forward(self, *inputs: Any, mode: str = 'tensor') -> Any:
        """Losses, predictions or tensors for ``inputs``; subclasses implement it."""
        raise NotImplementedError(f'{type(self).__name__} must implement '
                                  "forward(*inputs, mode='tensor')")

    def _run_forward(self, data: Any, mode: str) -> Any:
        """Unpack a batch into ``forward``: a dict as ``**data``, a tuple/list as ``*data``."""
        if isinstance(data, Mapping):
            return self(**data, mode=mode)
        if isinstance(data, (list, tuple)):
            return self(*data, mode=mode)
        raise TypeError(f'a batch must be a dict (passed to forward as **data) or a tuple or '
                        f'list (passed as *data), but the data preprocessor returned '
                        f'{type(data).__name__}')

    def compile_steps(self, compile: bool | dict = True, *, strict: bool = False) -> BaseModel:
        """Switch :meth:`train_step`, :meth:`val_step` and :meth:`test_step` to compiled steps.

        The training step becomes one graph (preprocessing, forward, backward, clipping,
        the optimizer update; see :mod:`fengine.func.step`). Validation and test steps
        are compiled too, allowing graph breaks, since predictions often hold Python
        values (``loss.item()`` in MMEngine's tutorial 'Model'). ``compile_steps(False)``
        switches back.

        Args:
            compile: ``True`` or a dict of ``torch.compile`` options (``backend``,
                ``mode='reduce-overhead'`` for CUDA graphs, ``dynamic``...), and
                ``background``: the first training step starts a worker thread that
                compiles the training step while the steps run eagerly, and the steps
                switch to the compiled one when it is ready
                (:mod:`fengine.func.compile_background`); ``False`` compiles on the
                first step, which waits for it. The default is ``True``, except under
                ``torch.use_deterministic_algorithms(True)`` (``randomness=dict(
                deterministic=True)``): the step where the switch happens depends on
                timing, so the last bits of the weights would differ from run to run.
                Validation and test steps run eagerly while a background compilation
                runs, and after the training step went back to eager steps
                (``keep_faster``, see :func:`fengine.func.step.compile_options`).
            strict: Raise when compilation fails instead of warning and running eagerly.

        Returns:
            The model itself.
        """
        from ..func.compile_watch import CompileWatch
        from ..func.step import compile_method, compile_options

        options = compile_options(compile)
        if options is not None:
            # Training starts at once, eagerly, while the training step compiles; but
            # which steps run eagerly depends on timing, and a run that asked for
            # deterministic algorithms wants the same bits every time.
            options.setdefault('background', not torch.are_deterministic_algorithms_enabled())
        self._compiled_steps = None if options is None else dict(options=options,
                                                                   strict=strict, train={})
        if options is not None:
            _quiet_compile_noise()
            eval_options = {**options, 'fullgraph': False}
            watch = CompileWatch(f'the validation/test step of {type(self).__name__}',
                                 eval_options)
            self._compiled_steps['eval'] = functools.partial(
                watch.call, compile_method(self._eval_step, eval_options, watch))
        return self

    def _eval_step(self, data: Any) -> Any:
        data = self.data_preprocessor(data, False)
        return self._run_forward(data, mode='predict')

    def train_step(self, data: Any, optim_wrapper) -> dict[str, torch.Tensor]:
        """Preprocess, forward in ``loss`` mode, parse losses, update (MMEngine: ``train_step``).

        After :meth:`compile_steps`, the same work runs as one compiled graph.

        Returns:
            The log dict of :func:`parse_losses`, plus what the optimizer wrapper
            recorded during the update (``grad_norm`` when clipping by norm). Values
            are tensors: nothing here waits for the device.
        """
        if getattr(self, '_compiled_steps', None) is not None:
            return self._fused_train_step(data, optim_wrapper)
        return self._eager_train_step(data, optim_wrapper)

    def _fused_train_step(self, data: Any, optim_wrapper,
                          stepped: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Run the compiled step of ``stepped`` (this model, or a DDP wrapper around it).

        One step is kept: a new optimizer wrapper or wrapper module makes a new one.
        """
        from ..func.step import make_train_step

        compiled = self._compiled_steps
        # Decided once per compiled step (not every call: a walk over every module);
        # turn_on_activation_checkpointing resets it.
        checkpointed = compiled['train'].setdefault('checkpointed',
                                                    bool(checkpointed_modules(self)))
        if checkpointed:
            return self._checkpointed_train_step(data, optim_wrapper, stepped)
        stepped = self if stepped is None else stepped
        step = compiled['train'].get('step')
        if step is None or step.optim_wrapper is not optim_wrapper or \
                compiled['train'].get('stepped') is not stepped:
            step = make_train_step(stepped, optim_wrapper, compile=compiled['options'],
                                   strict=compiled['strict'])
            compiled['train'] = {'step': step, 'stepped': stepped, 'checkpointed': False}
        return step(step.state, data)[1]

    def _checkpointed_train_step(self, data: Any, optim_wrapper,
                                 stepped: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The compiled step of a model with activation-checkpointed submodules.

        torch.func's transforms, which the fused step is built on, refuse the saved-tensor
        hooks of ``torch.utils.checkpoint``; so the forward pass (preprocessing included)
        is compiled on its own, where AOTAutograd recomputes the checkpointed regions in the
        backward graph, and the backward pass and the update run through autograd and the
        optimizer wrapper, as MMEngine's compiled models do.

        Raises:
            NotImplementedError: ``stepped`` is a DDP wrapper (not supported yet).
        """
        if stepped is not None and stepped is not self:
            raise NotImplementedError(
                f'activation checkpointing ({", ".join(checkpointed_modules(self))}) with '
                'compiled steps under DistributedDataParallel is not supported yet: drop '
                'compile, or activation_checkpointing, for distributed runs')
        compiled = self._compiled_steps
        forward = compiled.get('checkpointed_forward')
        if forward is None:
            # Graph breaks only split the forward graph here (the backward is autograd's).
            from ..func.step import FENGINE_COMPILE_KEYS

            options = {k: v for k, v in compiled['options'].items()
                       if k not in FENGINE_COMPILE_KEYS}  # fengine's own, not torch.compile's
            forward = torch.compile(self, **{**options, 'fullgraph': False})
            compiled['checkpointed_forward'] = forward
        return self._eager_train_step(data, optim_wrapper, forward_module=forward)

    def _eager_train_step(self, data: Any, optim_wrapper, forward_module: nn.Module | None = None,
                          finish_log_vars: Callable[[dict], dict] | None = None,
                          zero_kwargs: dict | None = None) -> dict[str, torch.Tensor]:
        """The eager step; ``forward_module`` (a DDP wrapper around this model) runs the
        forward pass instead of ``self``, and ``finish_log_vars`` gets the detached log
        values of :meth:`parse_losses` after the update (before the optimizer wrapper's
        are merged) and returns those to log (:mod:`~fengine.model.wrappers` averages them);
        ``zero_kwargs`` go to the wrapper's ``zero_grad``."""
        with optim_wrapper.optim_context(self if forward_module is None else forward_module):
            data = self.data_preprocessor(data, True)
            losses = (self._run_forward(data, mode='loss') if forward_module is None
                      # DDP's forward, so its reducer sees the pass.
                      else BaseModel._run_forward(forward_module, data, mode='loss'))
        loss, log_vars = self.parse_losses(losses)
        if zero_kwargs is None:
            optim_wrapper.update_params(loss)
        else:
            optim_wrapper.update_params(loss, zero_kwargs=zero_kwargs)
        log_vars = _detached(log_vars)
        if finish_log_vars is not None:
            log_vars = finish_log_vars(log_vars)
        return {**log_vars, **_detached(getattr(optim_wrapper, 'log_vars', None) or {})}

    def val_step(self, data: Any) -> Any:
        """Preprocess (``training=False``) and forward in ``predict`` mode, without grad."""
        compiled = getattr(self, '_compiled_steps', None)
        if compiled is None:
            with torch.no_grad():
                return self._eval_step(data)
        with torch.no_grad():
            if compile_in_flight():  # dynamo would make it wait for the other compile
                return self._eval_step(data)
            step = compiled['train'].get('step')
            if step is not None and step.eval_waits:  # see TrainStep.eval_waits
                return self._eval_step(data)
            return compiled['eval'](data)

    def test_step(self, data: Any) -> Any:
        """The same as :meth:`val_step` (MMEngine: ``test_step``)."""
        return self.val_step(data)

    def parse_losses(self, losses: Mapping[str, Any]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """See :func:`parse_losses`."""
        return parse_losses(losses)
