"""``EMAHook``: an averaged copy of the model, used for validation and test (MMEngine: ``EMAHook``)."""
from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from .._errors import check_bool, check_int
from ..logging import print_log
from ..registry import HOOKS, MODELS
from .hook import Hook

__all__ = ['EMAHook']


@HOOKS.register_module()
class EMAHook(Hook):
    """Keep a moving average of the model's weights; validate and test with it.

    MMEngine: ``mmengine.hooks.EMAHook``. After each training iteration the averaged
    model (an :class:`~fengine.model.ExponentialMovingAverage` by default) moves
    towards the model's weights; before each validation or test epoch the two swap
    their weights, and swap back after it, so training never sees the averaged weights.
    The update and the swaps are in-place multi-tensor kernels that read nothing back
    on the host, so they work with compiled, asynchronous steps
    (``Runner(compile=True)``): the compiled step's tensors stay the same objects.

    Checkpoints (as MMEngine): ``ema_state_dict`` holds the averaged model's state (its
    keys start with ``module.``, plus ``steps``), but with the averaged weights and the
    model's weights exchanged: ``state_dict`` holds the *averaged* weights, so that a
    checkpoint loaded for deployment or testing (``load_from``) gives the averaged model,
    and ``ema_state_dict`` holds the weights training continues from. Resuming
    (``resume=...``) exchanges them back, so the run continues exactly; loading without
    resuming gives both the model and the average the averaged weights. A checkpoint
    without ``ema_state_dict`` starts the average from its ``state_dict``.

    Args:
        ema_type: A ``MODELS`` name (or class) of a
            :class:`~fengine.model.BaseAveragedModel`: ``'ExponentialMovingAverage'``,
            ``'MomentumAnnealingEMA'`` or ``'StochasticWeightAverage'``.
        strict_load: Require the checkpoint's ``ema_state_dict`` (or ``state_dict``) to
            match the averaged model's keys exactly.
        begin_iter: Average from this iteration on; before it the average copies the
            model.
        begin_epoch: The same in epochs (at most one of the two may be set).
        **kwargs: Arguments of ``ema_type``: ``momentum``, ``interval``,
            ``update_buffers``, ``gamma``, ``device``...

    Raises:
        ValueError: both ``begin_iter`` and ``begin_epoch``, or a negative one.
        KeyError: ``ema_type`` is not registered (close names are listed).
        TypeError: ``kwargs`` that ``ema_type`` does not take (named).
    """

    priority = 'NORMAL'

    def __init__(self, ema_type: str | type = 'ExponentialMovingAverage',
                 strict_load: bool = False, begin_iter: int = 0, begin_epoch: int = 0,
                 **kwargs: Any) -> None:
        self.strict_load = check_bool('EMAHook strict_load', strict_load)
        self.begin_iter = check_int('EMAHook begin_iter', begin_iter, minimum=0)
        self.begin_epoch = check_int('EMAHook begin_epoch', begin_epoch, minimum=0)
        if begin_iter and begin_epoch:
            raise ValueError(f'EMAHook takes begin_iter or begin_epoch, not both, but got '
                             f'begin_iter={begin_iter} and begin_epoch={begin_epoch}')
        _check_ema_args(ema_type, kwargs)  # now, not after the first epoch
        self.ema_cfg = dict(type=ema_type, **kwargs)
        self.enabled_by_epoch = self.begin_epoch > 0
        self.src_model: nn.Module | None = None
        self.ema_model: nn.Module | None = None

    # -- building the average ----------------------------------------------------------
    def _ensure_ema(self, runner) -> None:
        """Build the averaged model of ``runner``'s model, once (MMEngine: in ``before_run``).

        Also called when a checkpoint is loaded, which fengine's runner may do before
        ``before_run``.
        """
        from ..model.wrappers import unwrap_model

        model = unwrap_model(runner.model)
        if self.ema_model is None or self.src_model is not model:
            self.src_model = model
            self.ema_model = MODELS.build(self.ema_cfg, default_args=dict(model=model))

    def before_run(self, runner) -> None:
        self._ensure_ema(runner)

    def before_train(self, runner) -> None:
        if self.enabled_by_epoch and self.begin_epoch > runner.max_epochs:
            raise ValueError(f'EMAHook begin_epoch={self.begin_epoch} is after the last '
                             f'epoch (max_epochs={runner.max_epochs}): the average would '
                             'never start')
        if not self.enabled_by_epoch and self.begin_iter > runner.max_iters:
            raise ValueError(f'EMAHook begin_iter={self.begin_iter} is after the last '
                             f'iteration (max_iters={runner.max_iters}): the average would '
                             'never start')

    # -- training --------------------------------------------------------------------
    def _ema_started(self, runner) -> bool:
        if self.enabled_by_epoch:
            return runner.epoch + 1 >= self.begin_epoch
        return runner.iter + 1 >= self.begin_iter

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        self._ensure_ema(runner)
        if self._ema_started(runner):
            self.ema_model.update_parameters(self.src_model)
        else:
            # Until it begins, the average is the model (MMEngine's rule).
            own = self.ema_model.module.state_dict(keep_vars=True)
            source = self.src_model.state_dict(keep_vars=True)
            _copy_([own[k] for k in own], [source[k] for k in own])

    # -- validation and test with the averaged weights ----------------------------------
    def before_val_epoch(self, runner) -> None:
        self._swap_parameters(runner)

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        self._swap_parameters(runner)

    def before_test_epoch(self, runner) -> None:
        self._swap_parameters(runner)

    def after_test_epoch(self, runner, metrics: dict | None = None) -> None:
        self._swap_parameters(runner)

    def _swap_parameters(self, runner) -> None:
        """Exchange the model's and the average's weights (buffers too with
        ``update_buffers``), in place: the model's tensors stay the same objects."""
        self._ensure_ema(runner)
        ema, src = self.ema_model.module, self.src_model
        with_buffers = getattr(self.ema_model, 'update_buffers', False)
        averaged = [*ema.parameters(), *(ema.buffers() if with_buffers else ())]
        source = [*src.parameters(), *(src.buffers() if with_buffers else ())]
        with torch.no_grad():
            kept = [t.detach().clone() for t in averaged]
            _copy_(averaged, source)
            _copy_(source, kept)

    # -- checkpoints -------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add ``ema_state_dict``; the averaged weights go to ``state_dict`` (see above)."""
        if self.ema_model is None:
            return
        checkpoint['ema_state_dict'] = self.ema_model.state_dict()
        # The dicts hold references to the live tensors: exchanging the entries (not
        # the values) changes neither model.
        _swap_entries(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Restore the average (resume), or start it from the loaded weights (load_from).

        Raises:
            RuntimeError: ``strict_load`` and the checkpoint's keys do not match the
                averaged model's, or a shape differs; nothing is changed then.
        """
        from ..checkpoint import state_dict_from

        self._ensure_ema(runner)
        resuming = bool(getattr(runner, 'resume_from', False))
        if resuming and isinstance(checkpoint.get('ema_state_dict'), dict):
            ema_state = dict(checkpoint['ema_state_dict'])
            # The model's own weights are under ema_state_dict: exchange them back first
            # (on copies of the dicts, so a refused load changes nothing).
            state = dict(checkpoint['state_dict'])
            _swap_entries({'state_dict': state, 'ema_state_dict': ema_state})
            _check_fits(self.ema_model, ema_state, self.strict_load, 'ema_state_dict')
            checkpoint['state_dict'], checkpoint['ema_state_dict'] = state, ema_state
            self.ema_model.load_state_dict(ema_state, strict=self.strict_load)
            return
        if resuming:
            print_log('the checkpoint has no ema_state_dict: EMAHook starts the average '
                      'from its state_dict', logger='current', level=logging.WARNING)
        state = state_dict_from(checkpoint)
        _check_fits(self.ema_model.module, state, self.strict_load, 'state_dict')
        self.ema_model.module.load_state_dict(state, strict=self.strict_load)


def _check_ema_args(ema_type: Any, kwargs: dict) -> None:
    cls = MODELS.get(ema_type) if isinstance(ema_type, str) else ema_type
    if not callable(cls):
        raise TypeError(f'EMAHook ema_type must be a MODELS name or a class, but got '
                        f'{type(ema_type).__name__}: {ema_type!r}')
    try:
        inspect.signature(cls).bind(None, **kwargs)
    except TypeError as exc:
        raise TypeError(f'EMAHook: {getattr(cls, "__name__", cls)} does not take '
                        f'{sorted(kwargs)} ({exc}); its arguments are '
                        f'{", ".join(list(inspect.signature(cls).parameters)[1:])}') from None
    except ValueError:  # no signature to check
        pass


def _copy_(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    if targets:
        with torch.no_grad():
            torch._foreach_copy_([t.detach() for t in targets], [s.detach() for s in sources])


def _swap_entries(checkpoint: dict) -> None:
    """Exchange ``ema_state_dict['module.<k>']`` and ``state_dict['<k>']`` for every ``k``."""
    model_state, ema_state = checkpoint['state_dict'], checkpoint['ema_state_dict']
    for key in list(ema_state):
        if key.startswith('module.') and key[len('module.'):] in model_state:
            name = key[len('module.'):]
            ema_state[key], model_state[name] = model_state[name], ema_state[key]


def _check_fits(module: nn.Module, state: dict, strict: bool, what: str) -> None:
    """Raise before ``load_state_dict`` would fail halfway (it copies, then complains)."""
    own = module.state_dict()
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs {tuple(own[k].shape)}'
              for k, v in state.items()
              if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state)) if strict else []
    unexpected = sorted(set(state) - set(own)) if strict else []
    if shapes or missing or unexpected:
        raise RuntimeError(f'EMAHook: the checkpoint\'s {what} does not fit the averaged '
                           f'model: shape mismatches {shapes[:5]}, missing keys {missing[:5]}, '
                           f'unexpected keys {unexpected[:5]}. Nothing was loaded.')
