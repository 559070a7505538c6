"""Parameter schedulers over ``torch.optim.lr_scheduler`` (MMEngine: ``mmengine.optim.scheduler``).

A :class:`ParamScheduler` is one entry of a ``param_scheduler`` config. It owns a
torch ``LRScheduler`` (torch's own math; the few schedules MMEngine has and torch lacks
are torch schedulers in ``_schedules.py``) and adds MMEngine's key, window and unit:

- ``param_name``: the param-group key scheduled: ``'lr'``, ``'momentum'`` (SGD's, or
  Adam's ``betas[0]``) or any other; the torch scheduler sees it as ``'lr'`` through a
  view of the groups (``_param_view.py``). The ``LR``, ``Momentum`` and generic
  ``ParamScheduler`` classes below fix it or take it, with MMEngine's names.

- ``by_epoch``: whether one :meth:`ParamScheduler.step` is one epoch (True, the
  default) or one iteration.
- ``begin``/``end``: the schedule runs relative to ``begin`` (the torch scheduler's
  step 0 happens at step ``begin``) and stops changing the learning rate at
  ``end``; outside ``[begin, end)`` the lr is left to the other schedulers.
- ``convert_to_iter_based=True`` turns an epoch-based config into an
  iteration-based one, given ``epoch_length`` (iterations per epoch).

The contract with the Runner: build the schedulers once, before training, with
:func:`build_param_schedulers` (building applies each schedule's first value when
``begin`` is 0, as MMEngine does); then call ``scheduler.step()`` after every
training iteration for the schedulers with ``by_epoch=False`` and after every
training epoch for those with ``by_epoch=True``, in list order
(:class:`fengine.hooks.ParamSchedulerHook` does exactly this). The lr a training
iteration uses is the one the optimizer holds when it starts. To resume, build the
schedulers, load the optimizer's state, then each scheduler's
:meth:`ParamScheduler.load_state_dict` (MMEngine's Runner order).

Several schedulers on one optimizer compose as in MMEngine: torch's chainable
schedulers (StepLR, MultiStepLR, ExponentialLR, LinearLR, ConstantLR,
CosineAnnealingLR, PolynomialLR) scale the current lr, so a LinearLR warm-up by
iteration and a MultiStepLR by epoch multiply. OneCycleLR and
CosineAnnealingWarmRestarts set the lr from their own base values.

A learning rate held as a 0-d tensor (so a compiled step does not recompile when it
changes) stays the same tensor object: torch's schedulers write it with ``fill_``,
and nothing here assigns a float over it. :meth:`ParamScheduler.state_dict` holds
such values as Python floats, so a checkpoint does not depend on the device.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer, lr_scheduler

from .._errors import check_bool, check_int, choices_text, suggest
from ..logging import print_log
from ..registry import PARAM_SCHEDULERS
from ..registry.build_functions import resolve_type
from . import _schedules
from ._param_view import check_scheduled_key, current_value, view_optimizer
from .optim_wrapper import OptimWrapper

__all__ = ['ParamScheduler', 'build_param_schedulers', 'build_scheduler_from_cfg', 'INF',
           'StepLR', 'MultiStepLR', 'CosineAnnealingLR', 'LinearLR', 'OneCycleLR',
           'ExponentialLR', 'ConstantLR', 'PolynomialLR', 'CosineAnnealingWarmRestarts',
           'PolyLR', 'CosineRestartLR', 'QuadraticWarmupLR']

INF = int(1e9)  # MMEngine's "no end"

# The arguments of each torch scheduler that count epochs; convert_to_iter_based
# multiplies them by epoch_length (ExponentialLR's gamma is handled on its own).
_EPOCH_VALUED_ARGS: dict[type, tuple[str, ...]] = {
    lr_scheduler.StepLR: ('step_size',),
    lr_scheduler.MultiStepLR: ('milestones',),
    lr_scheduler.CosineAnnealingLR: ('T_max',),
    _schedules.CosineAnnealingLR: ('T_max',),
    _schedules.PolyLR: ('total_iters',),
    _schedules.CosineRestartLR: ('periods',),
    _schedules.QuadraticWarmupLR: ('total_iters',),
    lr_scheduler.LinearLR: ('total_iters',),
    lr_scheduler.ConstantLR: ('total_iters',),
    lr_scheduler.PolynomialLR: ('total_iters',),
    lr_scheduler.CosineAnnealingWarmRestarts: ('T_0',),
    lr_scheduler.OneCycleLR: ('total_steps', 'steps_per_epoch'),
    lr_scheduler.ExponentialLR: (),
}
# Schedulers whose length defaults to ``end - begin - 1`` steps (MMEngine's rule: the
# last step inside [begin, end) reaches the final factor).
_TOTAL_ITERS_FROM_SPAN = (lr_scheduler.LinearLR, lr_scheduler.ConstantLR,
                          lr_scheduler.PolynomialLR, _schedules.PolyLR)
# MMEngine's argument names where torch's differ, per torch scheduler.
_ALIASES: dict[type, dict[str, str]] = {lr_scheduler.OneCycleLR: {'eta_max': 'max_lr'}}
# Defaults that differ from torch's: MMEngine's OneCycleLR changes only the lr (torch's
# also cycles the momentum unless told not to).
_DEFAULTS: dict[type, dict[str, Any]] = {lr_scheduler.OneCycleLR: {'cycle_momentum': False}}
# Arguments the wrapper sets itself; a config passing them is an error.
_RESERVED = ('optimizer', 'last_epoch')
_OWN_ARGS = ('param_name', 'by_epoch', 'begin', 'end', 'convert_to_iter_based',
             'epoch_length', 'verbose')
# torch checks that scheduler.step() follows optimizer.step(); a compiled training step
# may update the parameters without calling optimizer.step(), so the check misfires.
_ORDER_WARNING = r'.*(optimizer\.step\(\)|lr_scheduler\.step\(\)).*'


def _unwrap(optimizer: Any) -> Optimizer:
    if isinstance(optimizer, OptimWrapper) and not hasattr(optimizer, 'optimizer'):
        raise TypeError(f'a parameter scheduler schedules one optimizer, but got a '
                        f'{type(optimizer).__name__} of several ({choices_text(optimizer)}); '
                        "give it one of them, e.g. optim_wrapper['generator'], or pass "
                        'build_param_schedulers a dict of configs per optimizer name.')
    if isinstance(optimizer, OptimWrapper):
        return optimizer.optimizer
    if isinstance(optimizer, Optimizer):
        return optimizer
    raise TypeError('a parameter scheduler needs a torch.optim.Optimizer or a '
                    f'fengine.optim.OptimWrapper, but got {type(optimizer).__name__}: '
                    f'{optimizer!r}')


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


def _plain(value: Any) -> Any:
    """``value`` with its 0-d tensors (also inside lists and tuples) as Python numbers."""
    if isinstance(value, Tensor) and value.ndim == 0:
        return value.item()
    if type(value) in (list, tuple):  # exact types: a namedtuple would not rebuild so
        return type(value)(_plain(item) for item in value)
    return value


def _like(value: Any, template: Any) -> Any:
    """``value`` with numbers turned into tensors where ``template`` holds 0-d tensors.

    Undoes :func:`_plain` on load, with the dtype and device of the scheduler being
    loaded into, so a resumed schedule computes in the precision the saved one did
    (a float32 value survives the round trip through a Python float exactly).
    """
    if (isinstance(template, Tensor) and template.ndim == 0
            and isinstance(value, (int, float)) and not isinstance(value, bool)):
        return torch.tensor(value, dtype=template.dtype, device=template.device)
    if (isinstance(template, (list, tuple)) and type(value) in (list, tuple)
            and len(template) == len(value)):
        return type(value)(_like(item, like) for item, like in zip(value, template))
    return value


# Per param group: the lr tensor a copy was taken of and its version counter then.
_Seen = list[tuple[Tensor, int] | None]


def _version(tensor: Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor keeps no version counter
        return None


def _current_lrs(optimizer: Optimizer, last: list[float | Tensor] | None = None,
                 seen: _Seen | None = None) -> tuple[list[float | Tensor], _Seen]:
    """Each param group's lr, a tensor lr as a copy; and what was copied (``_Seen``).

    A copy in ``last`` is reused where ``seen`` says it was taken of the group's very lr
    tensor at its current version: nothing has written to the tensor since (``fill_``,
    ``copy_`` and every other in-place op bump the version), so the copy still holds its
    value. That saves a clone per step while a tensor lr does not change (a scheduler
    outside its ``[begin, end)``, or stepped by epoch inside a by-iteration run).
    """
    lrs: list[float | Tensor] = []
    now: _Seen = []
    for index, group in enumerate(optimizer.param_groups):
        lr = group['lr']
        if not isinstance(lr, Tensor):
            lrs.append(lr)
            now.append(None)
            continue
        version = _version(lr)
        before = seen[index] if seen is not None and index < len(seen) else None
        unchanged = (version is not None and before is not None and before[0] is lr
                     and before[1] == version and last is not None and index < len(last))
        lrs.append(last[index] if unchanged else lr.clone())
        now.append(None if version is None else (lr, version))
    return lrs, now


@contextmanager
def _param_groups_kept(optimizer: Optimizer, drop_new_keys: bool) -> Iterator[None]:
    """Undo what constructing a torch scheduler does to the param groups.

    Tensor values are written back into the same tensor objects (a compiled step
    may hold them). With ``drop_new_keys`` the keys the constructor added (e.g.
    OneCycleLR's ``max_lr``) are removed too.
    """
    saved = [{key: (value, _copy(value)) for key, value in group.items() if key != 'params'}
             for group in optimizer.param_groups]
    try:
        yield
    finally:
        for group, snapshot in zip(optimizer.param_groups, saved):
            for key, (obj, value) in snapshot.items():
                if isinstance(obj, Tensor):
                    with torch.no_grad():
                        obj.copy_(value)
                group[key] = obj if isinstance(obj, Tensor) else value
            if drop_new_keys:
                for key in [k for k in group if k != 'params' and k not in snapshot]:
                    del group[key]


def _accepted_args(scheduler_cls: type) -> list[str]:
    params = inspect.signature(scheduler_cls).parameters
    return [name for name, p in params.items()
            if name not in _RESERVED and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                   inspect.Parameter.KEYWORD_ONLY)]


def _origin(scheduler_cls: type) -> str:
    """Where the signature of ``scheduler_cls`` comes from, for messages."""
    if scheduler_cls.__module__ == lr_scheduler.__name__:
        return f"torch.optim.lr_scheduler.{scheduler_cls.__name__}'s signature"
    if scheduler_cls.__module__ == _schedules.__name__:
        return f"MMEngine's {scheduler_cls.__name__} arguments"
    return f"{scheduler_cls.__module__}.{scheduler_cls.__qualname__}'s signature"


def _check_args(scheduler_cls: type, kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming an argument ``scheduler_cls`` does not accept."""
    name = scheduler_cls.__name__
    accepted = _accepted_args(scheduler_cls) + list(_ALIASES.get(scheduler_cls, {}))
    hint = (f'{name} accepts {choices_text(accepted) or "no arguments"} '
            f'({_origin(scheduler_cls)}) and {choices_text(_OWN_ARGS)}.')
    for key in kwargs:
        if key in ('last_epoch', 'last_step'):
            raise TypeError(f'{name} got {key}; a ParamScheduler resumes through '
                            f'load_state_dict(), not {key}. ' + hint)
        if key not in accepted:
            raise TypeError(f'{name} got an unexpected argument {key!r}.'
                            f'{suggest(key, list(accepted) + list(_OWN_ARGS))} {hint}')


def _check_required(scheduler_cls: type, kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the required arguments of ``scheduler_cls`` not given."""
    params = inspect.signature(scheduler_cls).parameters
    accepted = _accepted_args(scheduler_cls)
    missing = [p for p in accepted
               if params[p].default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise TypeError(f'{scheduler_cls.__name__} is missing the required argument(s) '
                        f'{choices_text(missing)}; it accepts {choices_text(accepted)} '
                        f'({_origin(scheduler_cls)}) and {choices_text(_OWN_ARGS)}.')


def _to_iter_based(scheduler_cls: type, kwargs: dict[str, Any], begin: int, end: int,
                   epoch_length: Any) -> tuple[dict[str, Any], int, int]:
    """An epoch-based config's arguments, begin and end, counted in iterations."""
    name = scheduler_cls.__name__
    if epoch_length is None:
        raise ValueError(f'{name} has convert_to_iter_based=True but no epoch_length (the '
                         'number of iterations per epoch); pass epoch_length, e.g. '
                         'build_param_schedulers(cfg, optim_wrapper, '
                         'epoch_length=len(train_dataloader)).')
    length = check_int('epoch_length', epoch_length, minimum=1)
    supported = [cls.__name__ for cls in _EPOCH_VALUED_ARGS]
    if scheduler_cls not in _EPOCH_VALUED_ARGS:
        raise ValueError(f'convert_to_iter_based is not supported for {name}: which of its '
                         'arguments count epochs is unknown. Supported: '
                         f'{choices_text(supported)}; or write the config by iteration '
                         '(by_epoch=False).')
    kwargs = dict(kwargs)
    defaults = inspect.signature(scheduler_cls).parameters
    for arg in _EPOCH_VALUED_ARGS[scheduler_cls]:
        if arg not in kwargs and end == INF:
            # No span to derive it from later: scale torch's own default.
            default = defaults[arg].default
            if default is not inspect.Parameter.empty and default is not None:
                kwargs[arg] = default
        value = kwargs.get(arg)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):  # milestones, periods
            kwargs[arg] = [m * length for m in value]
        else:
            kwargs[arg] = value * length
    if scheduler_cls is lr_scheduler.ExponentialLR and 'gamma' in kwargs:
        # One epoch's decay spread evenly over its iterations.
        kwargs['gamma'] = kwargs['gamma'] ** (1.0 / length)
    return kwargs, begin * length, end if end == INF else end * length


def _defaults_from_span(scheduler_cls: type, kwargs: dict[str, Any], begin: int,
                        end: int) -> dict[str, Any]:
    """Fill the schedule's length from ``[begin, end)`` where MMEngine does."""
    name = scheduler_cls.__name__
    kwargs = dict(kwargs)
    if issubclass(scheduler_cls, lr_scheduler.CosineAnnealingLR) and 'T_max' not in kwargs:
        if end == INF:
            raise ValueError(f'{name} needs T_max, or a finite end to take T_max = end - '
                             'begin from (build_param_schedulers takes end from max_epochs '
                             'or max_iters when given).')
        kwargs['T_max'] = end - begin
    if (issubclass(scheduler_cls, _TOTAL_ITERS_FROM_SPAN) and 'total_iters' not in kwargs
            and end != INF):
        kwargs['total_iters'] = end - begin - 1
    if (issubclass(scheduler_cls, _schedules.QuadraticWarmupLR) and 'total_iters' not in kwargs
            and end != INF):
        kwargs['total_iters'] = end - begin  # MMDetection's: the warm-up fills [begin, end)
    if (issubclass(scheduler_cls, lr_scheduler.OneCycleLR) and end != INF
            and kwargs.get('total_steps') is None
            and (kwargs.get('epochs') is None or kwargs.get('steps_per_epoch') is None)):
        kwargs['total_steps'] = end - begin
    return kwargs


class ParamScheduler:
    """One ``torch.optim.lr_scheduler`` schedule with MMEngine's window, unit and key.

    MMEngine: ``mmengine.optim._ParamScheduler`` (and its ``LRScheduler`` subclasses,
    here the registered subclasses such as :class:`MultiStepLR`). The torch
    scheduler is built at step ``begin`` (at once when ``begin`` is 0), so nothing
    changes the lr before ``begin``; its arguments are still checked when this
    object is built.

    Args:
        optimizer: The torch optimizer, or an :class:`OptimWrapper` around it (with
            several param groups, the wrapper's ``base_param_settings`` group is
            scheduled too, as in MMEngine, so ``get_lr()['base_lr']`` follows).
        scheduler_cls: A ``torch.optim.lr_scheduler.LRScheduler`` subclass; the
            registered subclasses (``StepLR``...) set it themselves and refuse one.
        param_name: The param-group key to schedule (MMEngine's ``param_name``):
            ``'lr'`` (the default), ``'momentum'`` (SGD's ``momentum``, or
            ``betas[0]`` of Adam and kin) or any other key of the groups, such as
            ``'weight_decay'``. The torch scheduler's math runs on it as on an lr.
        by_epoch: Whether one :meth:`step` is one epoch (True) or one iteration.
        begin: The step at which the schedule starts (its step 0).
        end: The step at which the schedule stops changing the lr (exclusive).
        convert_to_iter_based: Turn this epoch-based config into an
            iteration-based one: ``begin``, ``end`` and the arguments that count
            epochs are multiplied by ``epoch_length`` (ExponentialLR's ``gamma``
            becomes ``gamma ** (1 / epoch_length)``), and ``by_epoch`` becomes False.
        epoch_length: Iterations per epoch; needed by ``convert_to_iter_based``.
        verbose: Log each new value (MMEngine's ``verbose``).
        **kwargs: The torch scheduler's arguments (its signature, without
            ``optimizer`` and ``last_epoch``). With a finite ``end``,
            CosineAnnealingLR's ``T_max`` defaults to ``end - begin``,
            LinearLR/ConstantLR/PolynomialLR's ``total_iters`` to
            ``end - begin - 1`` and OneCycleLR's ``total_steps`` to ``end - begin``
            (MMEngine's defaults).

    Attributes:
        by_epoch: See above (False after ``convert_to_iter_based``).
        begin: See above, in the unit of :meth:`step`.
        end: See above, in the unit of :meth:`step`.
        scheduler_cls: The torch scheduler class.
        param_name: The scheduled key.
        kwargs: The torch scheduler's arguments, after conversion and defaults.

    Raises:
        TypeError: Not an optimizer; an argument the torch scheduler does not
            accept, or a missing one (the message lists the accepted ones);
            ``scheduler_cls`` given to a subclass that fixes it (e.g. ``LinearLR``).
        ValueError: ``begin``/``end`` out of order, ``convert_to_iter_based``
            without ``epoch_length`` or on an iteration-based config, or a value
            torch rejects.

    Example:
        >>> import torch
        >>> from torch.optim.lr_scheduler import LinearLR as TorchLinearLR
        >>> optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> warmup = ParamScheduler(optimizer, TorchLinearLR, start_factor=0.25,
        ...                         by_epoch=False, begin=2, end=6)
        >>> lrs = []
        >>> for iteration in range(8):
        ...     lrs.append(optimizer.param_groups[0]['lr'])  # what this iteration uses
        ...     warmup.step()
        >>> [round(lr, 2) for lr in lrs]
        [1.0, 1.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    """

    scheduler_cls: type | None = None
    # The key a subclass always schedules ('lr' for LinearLR, 'momentum' for
    # LinearMomentum); None: given as param_name.
    fixed_param_name: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if '__init__' in cls.__dict__:
            # Its own __init__ speaks for it, not a signature inherited from a base.
            cls.__signature__ = None
        elif getattr(cls, 'scheduler_cls', None) is not None:
            # A subclass that fixes its torch scheduler refuses scheduler_cls (see
            # __init__), and one that fixes its key refuses param_name; its signature
            # (docs, the registry's "accepted arguments") must not offer them.
            hidden = {'self', 'scheduler_cls'}
            if cls.fixed_param_name is not None:
                hidden.add('param_name')
            signature = inspect.signature(ParamScheduler.__init__)
            params = [p for name, p in signature.parameters.items() if name not in hidden]
            cls.__signature__ = signature.replace(parameters=params)

    def __init__(self,
                 optimizer: Optimizer | OptimWrapper,
                 scheduler_cls: type | None = None,
                 *,
                 param_name: str | None = None,
                 by_epoch: bool = True,
                 begin: int = 0,
                 end: int = INF,
                 convert_to_iter_based: bool = False,
                 epoch_length: int | None = None,
                 verbose: bool = False,
                 **kwargs: Any) -> None:
        fixed = type(self).scheduler_cls
        if fixed is not None and scheduler_cls is not None:
            # A registered type (LinearLR...) must build the torch scheduler it names;
            # otherwise a config's `scheduler_cls=` would silently swap it.
            raise TypeError(f'{type(self).__name__} always builds {fixed.__module__}.'
                            f'{fixed.__name__}; it does not take scheduler_cls, but got '
                            f'scheduler_cls={scheduler_cls!r}. Use ParamScheduler(optimizer, '
                            f'scheduler_cls, ...) for another torch scheduler.')
        self.optimizer = _unwrap(optimizer)
        # Whose param groups are scheduled: the wrapper's add MMEngine's base group.
        self._owner = optimizer if isinstance(optimizer, OptimWrapper) else self.optimizer
        param_name = self._param_name_of(param_name)
        scheduler_cls = scheduler_cls or fixed
        if not (inspect.isclass(scheduler_cls)
                and issubclass(scheduler_cls, lr_scheduler.LRScheduler)):
            raise TypeError('scheduler_cls must be a torch.optim.lr_scheduler.LRScheduler '
                            f'subclass, but got {scheduler_cls!r}')
        self.scheduler_cls = scheduler_cls
        name = scheduler_cls.__name__
        check_scheduled_key(self._owner, param_name, type(self).__name__)
        self.param_name = param_name
        check_bool(f'{name}: verbose', verbose)
        self.verbose = verbose
        check_bool(f'{name}: by_epoch', by_epoch)
        check_bool(f'{name}: convert_to_iter_based', convert_to_iter_based)
        begin = check_int(f'{name}: begin', begin, minimum=0)
        end = check_int(f'{name}: end', end, minimum=1)
        if end <= begin:
            raise ValueError(f'{name}: end must be larger than begin, but got begin={begin}, '
                             f'end={end}')
        _check_args(scheduler_cls, kwargs)
        kwargs = self._torch_names(scheduler_cls, kwargs)
        if param_name != 'lr' and kwargs.get('cycle_momentum'):
            raise ValueError(f'{type(self).__name__}: cycle_momentum=True cycles the momentum '
                             f'beside the lr; it cannot be used to schedule {param_name!r}.')
        if convert_to_iter_based:
            if not by_epoch:
                raise ValueError(f'{name}: convert_to_iter_based=True converts an '
                                 'epoch-based config, but this one has by_epoch=False.')
            kwargs, begin, end = _to_iter_based(scheduler_cls, kwargs, begin, end,
                                                epoch_length)
            by_epoch = False
        self.by_epoch = by_epoch
        self.begin = begin
        self.end = end
        self.kwargs = _defaults_from_span(scheduler_cls, kwargs, begin, end)
        _check_required(scheduler_cls, self.kwargs)

        # The optimizer the torch scheduler runs on: the optimizer itself, or a view of
        # the owner's groups where 'lr' means param_name (see _param_view.py).
        self._target = view_optimizer(self._owner, self.optimizer, param_name)
        # Every scheduler measures from the value the optimizer had when it was built
        # (MMEngine: setdefault(f'initial_{param_name}')), also those that start later.
        for group in self._target.param_groups:
            group.setdefault('initial_lr', _copy(group['lr']))
        self._global_step = 0
        self._scheduler: lr_scheduler.LRScheduler | None = None
        if begin == 0:
            self._scheduler = self._build_torch_scheduler()
        else:
            # Check the values now, not at step ``begin``, and leave no trace.
            with _param_groups_kept(self._owner, drop_new_keys=True):
                self._build_torch_scheduler()
        self._last_lr, self._last_lr_seen = _current_lrs(self._target)

    def _param_name_of(self, param_name: str | None) -> str:
        fixed = type(self).fixed_param_name
        if fixed is not None and param_name is not None and param_name != fixed:
            raise TypeError(f'{type(self).__name__} always schedules {fixed!r}; it does not '
                            f'take param_name={param_name!r}. Use the generic scheduler of '
                            f'the same shape (e.g. LinearParamScheduler) for another key.')
        return fixed or param_name or 'lr'

    @staticmethod
    def _torch_names(scheduler_cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
        """MMEngine's argument names as torch's, and MMEngine's defaults where they differ."""
        aliases = _ALIASES.get(scheduler_cls, {})
        kwargs = dict(kwargs)
        for mmengine_name, torch_name in aliases.items():
            if mmengine_name in kwargs:
                if torch_name in kwargs:
                    raise TypeError(f'{scheduler_cls.__name__} got both {mmengine_name!r} '
                                    f"(MMEngine's name) and {torch_name!r} (torch's) for the "
                                    'same value; give one.')
                kwargs[torch_name] = kwargs.pop(mmengine_name)
        for key, value in _DEFAULTS.get(scheduler_cls, {}).items():
            kwargs.setdefault(key, value)
        return kwargs

    @classmethod
    def build_iter_from_epoch(cls, *args: Any, **kwargs: Any) -> 'ParamScheduler':
        """Build an iteration-based scheduler from an epoch-based config.

        MMEngine: ``_ParamScheduler.build_iter_from_epoch``; the same as passing
        ``convert_to_iter_based=True`` (``epoch_length`` is required).
        """
        kwargs.pop('convert_to_iter_based', None)
        return cls(*args, convert_to_iter_based=True, **kwargs)

    @classmethod
    def from_torch(cls, scheduler: lr_scheduler.LRScheduler,
                   by_epoch: bool = True) -> 'ParamScheduler':
        """Wrap a torch scheduler that is already built (begin 0, no end).

        Args:
            scheduler: The torch scheduler; it keeps its state.
            by_epoch: Whether the Runner steps it per epoch (MMEngine's default) or
                per iteration.
        """
        if not isinstance(scheduler, lr_scheduler.LRScheduler):
            raise TypeError('from_torch wraps a torch.optim.lr_scheduler.LRScheduler, but '
                            f'got {type(scheduler).__name__}: {scheduler!r}')
        check_bool('by_epoch', by_epoch)
        self = cls.__new__(cls)
        self.optimizer = self._owner = self._target = scheduler.optimizer
        self.param_name, self.verbose = 'lr', False
        self.scheduler_cls = type(scheduler)
        self.by_epoch, self.begin, self.end, self.kwargs = by_epoch, 0, INF, {}
        self._global_step = max(scheduler.last_epoch, 0)
        self._scheduler = scheduler
        self._last_lr, self._last_lr_seen = _current_lrs(self._target)
        return self

    def _build_torch_scheduler(self) -> lr_scheduler.LRScheduler:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=_ORDER_WARNING, category=UserWarning)
            return self.scheduler_cls(self._target, **self.kwargs)

    @property
    def scheduler(self) -> lr_scheduler.LRScheduler | None:
        """The torch scheduler; ``None`` before step ``begin``."""
        return self._scheduler

    @property
    def global_step(self) -> int:
        """How many times :meth:`step` was called (epochs or iterations)."""
        return self._global_step

    def step(self) -> None:
        """Advance one epoch (``by_epoch``) or one iteration.

        At step ``begin`` the torch scheduler is built (its first value applies);
        inside ``(begin, end)`` it steps; elsewhere the lr is left as it is.
        """
        self._global_step += 1
        if self.begin <= self._global_step < self.end:
            if self._scheduler is None:
                self._scheduler = self._build_torch_scheduler()
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings('ignore', message=_ORDER_WARNING,
                                            category=UserWarning)
                    self._scheduler.step()
        self._last_lr, self._last_lr_seen = _current_lrs(self._target, self._last_lr,
                                                         self._last_lr_seen)
        if self.verbose and self.begin <= self._global_step < self.end:
            for index, value in enumerate(self._last_lr):
                print_log(f'{type(self).__name__}: {self.param_name} of param group {index} '
                          f'is {current_value(value):.4e} at step {self._global_step}',
                          logger='current')

    def get_last_value(self) -> list[float | Tensor]:
        """The scheduled value of each param group after the latest step.

        MMEngine: ``_ParamScheduler.get_last_value``. Copies: a 0-d tensor value
        stays a tensor.
        """
        return [_copy(lr) for lr in self._last_lr]  # fresh: the kept copies may be reused

    def get_last_lr(self) -> list[float | Tensor]:
        """:meth:`get_last_value` under torch's name (the lr, for an lr schedule)."""
        return self.get_last_value()

    def state_dict(self) -> dict[str, Any]:
        """The step count, the last lrs and the torch scheduler's state (or ``None``).

        Learning rates held as 0-d tensors (``last_lr``, and torch's ``_last_lr`` and
        ``base_lrs``) are stored as Python floats, so the checkpoint does not depend
        on the device the lrs live on; :meth:`load_state_dict` turns them back into
        tensors where this scheduler holds tensors.
        """
        torch_state = None
        if self._scheduler is not None:
            torch_state = {key: _plain(value)
                           for key, value in self._scheduler.state_dict().items()}
        return {
            'type': self.scheduler_cls.__name__,
            'param_name': self.param_name,
            'global_step': self._global_step,
            'last_lr': _plain(list(self._last_lr)),
            'scheduler': torch_state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output, with identical lrs afterwards.

        The lrs themselves live in the optimizer's param groups: load its state as
        well, after building this scheduler (building applies the schedule's first
        value when ``begin`` is 0, which would change a loaded lr). Building the
        torch scheduler here, when it was built before saving, changes nothing in
        the param groups.

        Raises:
            ValueError: The state is of another scheduler type.
            KeyError: A key is missing.
        """
        missing = [k for k in ('type', 'global_step', 'last_lr', 'scheduler')
                   if k not in state_dict]
        if missing:
            raise KeyError(f'a ParamScheduler state dict needs the keys '
                           f'{choices_text(missing)}, but got {choices_text(state_dict)}')
        if state_dict['type'] != self.scheduler_cls.__name__:
            raise ValueError(f'cannot load the state of a {state_dict["type"]} into a '
                             f'{self.scheduler_cls.__name__}; the param_scheduler config '
                             "differs from the checkpoint's.")
        saved_key = state_dict.get('param_name', 'lr')  # states before param_name: lr
        if saved_key != self.param_name:
            raise ValueError(f'cannot load the state of a {state_dict["type"]} of '
                             f'{saved_key!r} into one of {self.param_name!r}; the '
                             "param_scheduler config differs from the checkpoint's.")
        self._global_step = state_dict['global_step']
        self._last_lr = _like(list(state_dict['last_lr']), self._last_lr)
        self._last_lr_seen = None  # these copies were not taken of the group tensors
        if state_dict['scheduler'] is None:
            self._scheduler = None
            return
        if self._scheduler is None:
            with _param_groups_kept(self._owner, drop_new_keys=False):
                self._scheduler = self._build_torch_scheduler()
        template = self._scheduler.state_dict()
        self._scheduler.load_state_dict({key: _like(value, template.get(key))
                                         for key, value in state_dict['scheduler'].items()})

    def __repr__(self) -> str:
        args = ', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())
        end = 'INF' if self.end == INF else self.end
        key = '' if self.param_name == 'lr' else f'param_name={self.param_name!r}, '
        return (f'{type(self).__name__}({self.scheduler_cls.__name__}({args}), {key}'
                f'by_epoch={self.by_epoch}, begin={self.begin}, end={end})')


@PARAM_SCHEDULERS.register_module()
class StepLR(ParamScheduler):
    """``torch.optim.lr_scheduler.StepLR`` in a :class:`ParamScheduler` (MMEngine: ``StepLR``)."""

    scheduler_cls = lr_scheduler.StepLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class MultiStepLR(ParamScheduler):
    """``torch.optim.lr_scheduler.MultiStepLR`` in a :class:`ParamScheduler`.

    MMEngine: ``MultiStepLR``.
    """

    scheduler_cls = lr_scheduler.MultiStepLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingLR(ParamScheduler):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` in a :class:`ParamScheduler`.

    MMEngine: ``CosineAnnealingLR``; ``T_max`` defaults to ``end - begin``, and
    MMEngine's ``eta_min_ratio`` (the floor as a fraction of the initial lr) is
    accepted instead of ``eta_min``.
    """

    scheduler_cls = _schedules.CosineAnnealingLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class LinearLR(ParamScheduler):
    """``torch.optim.lr_scheduler.LinearLR`` in a :class:`ParamScheduler`.

    MMEngine: ``LinearLR``; ``total_iters`` defaults to ``end - begin - 1``.
    """

    scheduler_cls = lr_scheduler.LinearLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class OneCycleLR(ParamScheduler):
    """``torch.optim.lr_scheduler.OneCycleLR`` in a :class:`ParamScheduler`.

    MMEngine: ``OneCycleLR``; its ``eta_max`` is torch's ``max_lr`` (either name
    works); ``total_steps`` defaults to ``end - begin``. As in MMEngine, only the
    lr changes: torch's momentum cycling is off unless ``cycle_momentum=True``
    (then SGD's ``momentum`` or Adam's ``betas[0]`` cycle between
    ``base_momentum`` and ``max_momentum``).
    """

    scheduler_cls = lr_scheduler.OneCycleLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class ExponentialLR(ParamScheduler):
    """``torch.optim.lr_scheduler.ExponentialLR`` in a :class:`ParamScheduler`.

    MMEngine: ``ExponentialLR``.
    """

    scheduler_cls = lr_scheduler.ExponentialLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class ConstantLR(ParamScheduler):
    """``torch.optim.lr_scheduler.ConstantLR`` in a :class:`ParamScheduler`.

    MMEngine: ``ConstantLR``; ``total_iters`` defaults to ``end - begin - 1``.
    """

    scheduler_cls = lr_scheduler.ConstantLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class PolynomialLR(ParamScheduler):
    """``torch.optim.lr_scheduler.PolynomialLR`` in a :class:`ParamScheduler`.

    MMEngine: ``PolyLR`` (torch's arguments: ``total_iters``, ``power``; no
    ``eta_min``); ``total_iters`` defaults to ``end - begin - 1``.
    """

    scheduler_cls = lr_scheduler.PolynomialLR
    fixed_param_name = 'lr'


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingWarmRestarts(ParamScheduler):
    """``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` in a :class:`ParamScheduler`.

    MMEngine: ``CosineRestartLR`` (torch's arguments: ``T_0``, ``T_mult``, ``eta_min``).
    """

    scheduler_cls = lr_scheduler.CosineAnnealingWarmRestarts
    fixed_param_name = 'lr'


class _KeyScheduler(ParamScheduler):
    """A generic scheduler: ``param_name`` is its second argument (MMEngine's order)."""

    def __init__(self, optimizer: Optimizer | OptimWrapper, param_name: str,
                 **kwargs: Any) -> None:
        super().__init__(optimizer, param_name=param_name, **kwargs)


def _keyed_signature() -> inspect.Signature:
    signature = inspect.signature(ParamScheduler.__init__)
    params = [p for name, p in signature.parameters.items()
              if name not in ('self', 'scheduler_cls', 'param_name')]
    key = inspect.Parameter('param_name', inspect.Parameter.POSITIONAL_OR_KEYWORD,
                            annotation='str')
    return signature.replace(parameters=[params[0], key, *params[1:]])


# MMEngine's schedule shapes and the torch scheduler that computes each.
_SHAPES: dict[str, type] = {
    'Step': lr_scheduler.StepLR,
    'MultiStep': lr_scheduler.MultiStepLR,
    'CosineAnnealing': _schedules.CosineAnnealingLR,
    'Linear': lr_scheduler.LinearLR,
    'Exponential': lr_scheduler.ExponentialLR,
    'Constant': lr_scheduler.ConstantLR,
    'Poly': _schedules.PolyLR,
    'CosineRestart': _schedules.CosineRestartLR,
    'QuadraticWarmup': _schedules.QuadraticWarmupLR,
    'OneCycle': lr_scheduler.OneCycleLR,
}
_ORIGIN = {'QuadraticWarmup': 'MMDetection'}  # the rest are MMEngine's


def _family(suffix: str, param_name: str | None, shapes: list[str]) -> list[str]:
    """Register ``<shape><suffix>`` for each shape; return the names."""
    names = []
    for shape in shapes:
        name = f'{shape}{suffix}'
        what = f'the {param_name}' if param_name else 'the param-group key ``param_name``'
        doc = (f'The ``{shape}`` schedule of {what}, in a :class:`ParamScheduler`.\n\n'
               f'    {_ORIGIN.get(shape, "MMEngine")}: ``{name}``. Computed by '
               f'``{_SHAPES[shape].__name__}``; its arguments, ``begin``/``end``/'
               f'``by_epoch`` and\n    ``convert_to_iter_based`` as for the lr schedule.\n')
        base = ParamScheduler if param_name else _KeyScheduler
        cls = type(name, (base,), {'__doc__': doc, '__module__': __name__,
                                   '__qualname__': name, 'scheduler_cls': _SHAPES[shape],
                                   'fixed_param_name': param_name})
        if param_name is None:
            cls.__signature__ = _keyed_signature()
        PARAM_SCHEDULERS.register_module(module=cls)
        globals()[name] = cls
        names.append(name)
    return names


# LR schedules MMEngine has beyond torch's (torch's own are the classes above).
_LR_EXTRA = _family('LR', 'lr', ['Poly', 'CosineRestart', 'QuadraticWarmup'])
MOMENTUM_SCHEDULERS = _family('Momentum', 'momentum',
                              [shape for shape in _SHAPES if shape != 'OneCycle'])
GENERIC_SCHEDULERS = _family('ParamScheduler', None, list(_SHAPES))
__all__ += ['MOMENTUM_SCHEDULERS', 'GENERIC_SCHEDULERS', *MOMENTUM_SCHEDULERS,
            *GENERIC_SCHEDULERS]


def build_scheduler_from_cfg(cfg: Any, registry: Any,
                             default_args: dict | None = None) -> ParamScheduler:
    """The ``PARAM_SCHEDULERS`` build function (MMEngine: ``build_scheduler_from_cfg``).

    A config with ``convert_to_iter_based=True`` is built by the class's
    ``build_iter_from_epoch`` with ``epoch_length`` from ``default_args``; any
    other config by :func:`fengine.registry.build_from_cfg`, without
    ``epoch_length`` (a scheduler class of a user need not take it).

    Raises:
        TypeError: ``cfg`` is not a dict.
        ValueError: ``convert_to_iter_based`` without ``epoch_length``, or with
            ``by_epoch=False``.
        KeyError: an unknown ``type``.
    """
    from ..registry import build_from_cfg

    if not isinstance(cfg, Mapping):
        raise TypeError(f'a param_scheduler config must be a dict, but got '
                        f'{type(cfg).__name__}: {cfg!r}')
    args = dict(cfg)
    for key, value in (default_args or {}).items():
        args.setdefault(key, value)
    if not args.pop('convert_to_iter_based', False):
        args.pop('epoch_length', None)
        return build_from_cfg(args, registry)
    kind = args.pop('type', None)
    scheduler_cls = resolve_type(kind, registry)
    name = getattr(scheduler_cls, '__name__', kind)
    if args.get('epoch_length') is None:
        raise ValueError(f'{name} has convert_to_iter_based=True but no epoch_length (the '
                         'number of iterations per epoch): the Runner gives it; elsewhere '
                         'pass it, e.g. default_args=dict(epoch_length=len(dataloader)).')
    if not args.get('by_epoch', True):
        raise ValueError(f'{name}: convert_to_iter_based=True converts an epoch-based '
                         'config, but this one has by_epoch=False.')
    build = getattr(scheduler_cls, 'build_iter_from_epoch', None)
    if build is None:
        raise TypeError(f'{name} cannot convert an epoch-based config: it has no '
                        'build_iter_from_epoch classmethod (fengine ParamScheduler '
                        'subclasses have one).')
    return build(**args)

def build_param_schedulers(cfg: Any,
                           optim_wrapper: Optimizer | OptimWrapper,
                           epoch_length: int | None = None,
                           max_epochs: int | None = None,
                           max_iters: int | None = None
                           ) -> list[ParamScheduler] | dict[str, list[ParamScheduler]]:
    """Build the ``param_scheduler`` config (MMEngine: ``Runner.build_param_scheduler``).

    With an :class:`~fengine.optim.OptimWrapperDict` (several optimizers) the result
    is a dict of lists by optimizer name, as MMEngine's: ``cfg`` is either a dict of
    configs by optimizer name (``dict(generator=[...], discriminator=[...])``; a
    name left out gets no schedulers) or one config (list) built for every
    optimizer.

    Args:
        cfg: ``None``, a config dict (``type`` is a name in
            ``fengine.registry.PARAM_SCHEDULERS``), a :class:`ParamScheduler`, a
            built torch ``LRScheduler`` (wrapped with ``by_epoch=True``), or a
            list of those; or, for an ``OptimWrapperDict``, a dict of those by
            optimizer name.
        optim_wrapper: The optimizer (or :class:`OptimWrapper`, or
            ``OptimWrapperDict``) to schedule.
        epoch_length: Iterations per epoch, for ``convert_to_iter_based``.
        max_epochs: The default ``end`` of a config with ``by_epoch=True``.
        max_iters: The default ``end`` of a config with ``by_epoch=False``.

    Returns:
        The schedulers, in config order (the order the Runner steps them in).

    Raises:
        TypeError: An entry of another type, or a scheduler of another optimizer.
        KeyError: An unknown ``type`` (the message names close matches), or an
            optimizer name the ``OptimWrapperDict`` does not have.
    """
    from .optim_wrapper_dict import OptimWrapperDict

    if isinstance(optim_wrapper, OptimWrapperDict):
        names = list(optim_wrapper.keys())
        per_name = isinstance(cfg, Mapping) and 'type' not in cfg
        if per_name:
            unknown = [name for name in cfg if name not in optim_wrapper]
            if unknown:
                raise KeyError(f'param_scheduler has schedules for {choices_text(unknown)}, '
                               f'but the optimizers are {choices_text(names)}.'
                               f'{suggest(str(unknown[0]), names)}')
        return {name: build_param_schedulers(cfg.get(name) if per_name else cfg,
                                             optim_wrapper[name], epoch_length, max_epochs,
                                             max_iters)
                for name in names}
    optimizer = _unwrap(optim_wrapper)
    if cfg is None:
        return []
    entries = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]
    schedulers = []
    for index, entry in enumerate(entries):
        if isinstance(entry, ParamScheduler):
            scheduler = entry
        elif isinstance(entry, lr_scheduler.LRScheduler):
            scheduler = ParamScheduler.from_torch(entry)
        elif isinstance(entry, Mapping):
            entry = dict(entry)
            default_end = max_epochs if entry.get('by_epoch', True) else max_iters
            if default_end is not None:
                entry.setdefault('end', default_end)
            # The wrapper, not its optimizer: its base group is scheduled too (MMEngine).
            scheduler = PARAM_SCHEDULERS.build(
                entry, default_args=dict(optimizer=optim_wrapper, epoch_length=epoch_length))
        else:
            raise TypeError(f'param_scheduler[{index}] must be a config dict, a '
                            'ParamScheduler or a torch LRScheduler, but got '
                            f'{type(entry).__name__}: {entry!r}')
        if scheduler.optimizer is not optimizer:
            raise TypeError(f'param_scheduler[{index}] ({scheduler!r}) schedules another '
                            'optimizer than the one given; build it on the same optimizer.')
        schedulers.append(scheduler)
    return schedulers
