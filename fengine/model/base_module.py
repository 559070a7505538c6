"""``BaseModule`` and the containers: MMEngine's stateful initialization API.

``init_weights()`` resolves the model's ``init_cfg`` into a plan
(:func:`fengine.func.init_plan`), runs it in place (:func:`fengine.func.apply_plan_`)
and logs, for every parameter, exactly what set it.
"""
from __future__ import annotations

import copy
import functools
import logging
from typing import Iterable

import torch
from torch import nn

from ..func.apply import apply_plan_, current_session
from ..func.build import building_on_meta, skip_init
from ..func.plan import init_plan, normalize_init_cfg
from ..logging import get_logger, print_log

__all__ = ['BaseModule', 'Sequential', 'ModuleList', 'ModuleDict']


def _warn_second_call(module: nn.Module) -> None:
    print_log(f'init_weights of {type(module).__name__} has been called more than once; '
              'it changes nothing the second time.', logger='current',
              level=logging.WARNING)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same place when the current device is 0."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == 'cuda' else 0
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current)
    return a.index == b.index


def _check_device(module: nn.Module, device: torch.device | str | None) -> torch.device | None:
    """``device`` materializes meta parameters; refuse it for parameters placed elsewhere."""
    if device is None:
        return None
    device = torch.device(device)
    elsewhere = {str(p.device) for p in module.parameters()
                 if not p.is_meta and not _same_device(p.device, device)}
    if elsewhere:
        raise ValueError(
            f'device={str(device)!r} materializes parameters built on meta, but '
            f'{type(module).__name__} has parameters on {sorted(elsewhere)}; move the '
            'model with .to() instead.')
    return device


def _top_level(init_weights):
    """Make a user-defined ``init_weights`` of a BaseModule subclass a whole initialization.

    Called at the top, it runs as one step of a plan, so its writes are tracked, its
    ``super().init_weights()`` is recorded entry by entry, and the report comes after
    all of it. Called inside an initialization, it is the user's function unchanged.
    """

    @functools.wraps(init_weights)
    def wrapper(self, *args, seed: int | None = None,
                device: torch.device | str | None = None, **kwargs):
        if current_session() is not None:
            return init_weights(self, *args, **kwargs)
        if self._is_init:
            _warn_second_call(self)
            return None
        device = _check_device(self, device)
        plan = init_plan(self)
        self._dump_init_info(apply_plan_(plan, seed=seed, device=device))
        return None

    wrapper._fengine_user_init_weights = init_weights  # type: ignore[attr-defined]
    return wrapper


def _skipping_default_init_on_meta(init):
    """Make a BaseModule subclass's ``__init__`` skip PyTorch's default initialization
    when it runs under ``torch.device('meta')`` (:func:`fengine.func.skip_init`): its
    values would be thrown away, and computing them on ``meta`` imports ``torch._dynamo``.
    """

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if building_on_meta():
            with skip_init():
                return init(self, *args, **kwargs)
        return init(self, *args, **kwargs)

    wrapper._fengine_skips_init_on_meta = True  # type: ignore[attr-defined]
    return wrapper


class BaseModule(nn.Module):
    """``nn.Module`` with configurable initialization (MMEngine: ``BaseModule``).

    Args:
        init_cfg: A dict or a list of dicts naming initializers registered in
            ``WEIGHT_INITIALIZERS`` (``Kaiming``, ``Xavier``, ``Pretrained``...),
            with ``layer`` and ``override`` to pick modules.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fengine.model import BaseModule
        >>> class ToyNet(BaseModule):
        ...     def __init__(self, init_cfg=None):
        ...         super().__init__(init_cfg)
        ...         self.conv = nn.Conv2d(1, 1, 1)
        >>> net = ToyNet(init_cfg=dict(type='Constant', layer='Conv2d', val=2, bias=1))
        >>> net.init_weights(seed=0)  # doctest: +SKIP
    """

    def __init__(self, init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__()
        normalize_init_cfg(init_cfg, f'init_cfg of {type(self).__name__}')
        self._is_init = False
        self.init_cfg = copy.deepcopy(init_cfg)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is not None and not hasattr(init, '_fengine_skips_init_on_meta'):
            cls.__init__ = _skipping_default_init_on_meta(init)
        own = cls.__dict__.get('init_weights')
        if own is not None and not getattr(own, '_fengine_base_init_weights', False) \
                and not hasattr(own, '_fengine_user_init_weights'):
            cls.init_weights = _top_level(own)

    @property
    def is_init(self) -> bool:
        """Whether ``init_weights`` has run."""
        return self._is_init

    @is_init.setter
    def is_init(self, value: bool) -> None:
        self._is_init = value

    def init_weights(self, *, seed: int | None = None,
                     device: torch.device | str | None = None) -> None:
        """Initialize parameters from ``init_cfg``, children and ``Pretrained`` entries.

        Order as MMEngine: this module's ``init_cfg`` entries; then each child that
        has ``init_weights`` (its own ``init_cfg``, or a user-defined method, wins);
        then ``Pretrained`` entries. Each parameter is written once, by the last step
        that sets it; every checkpoint is read first, so a failure leaves the model
        as it was. Afterwards, every parameter's name, shape and initializer is logged.

        Args:
            seed: The seed each parameter's random stream is derived from, with its
                path. Defaults to ``torch.initial_seed()``, so ``torch.manual_seed``
                makes runs repeatable, and a parameter's value does not depend on
                the other parameters of the model.
            device: For a model built under ``torch.device('meta')``: where to
                create its parameters and buffers.
        """
        session = current_session()
        if self._is_init:
            _warn_second_call(self)
            return
        if session is not None:
            apply_plan_(init_plan(self, prefix=session.path_of(self), own_init_cfg=True))
            return
        device = _check_device(self, device)
        plan = init_plan(self, own_init_cfg=True)
        self._dump_init_info(apply_plan_(plan, seed=seed, device=device))

    init_weights._fengine_base_init_weights = True  # type: ignore[attr-defined]

    def _dump_init_info(self, infos: dict[str, str]) -> None:
        """Log each parameter's name, shape and initializer; to the log file if one is set.

        MMEngine: ``BaseModule._dump_init_info``.
        """
        logger = get_logger()
        file_handlers = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        for handler in file_handlers:
            handler.stream.write('Name of parameter - Initialization information\n')
            for name, param in self.named_parameters():
                handler.stream.write(f'\n{name} - {param.shape}: \n{infos[name]} \n')
            handler.stream.flush()
        if not file_handlers:
            for name, param in self.named_parameters():
                logger.info(f'\n{name} - {param.shape}:\n{infos[name]}\n')

    def __repr__(self) -> str:
        text = super().__repr__()
        if self.init_cfg:
            text += f'\ninit_cfg={self.init_cfg}'
        return text


class Sequential(BaseModule, nn.Sequential):
    """``nn.Sequential`` with ``init_cfg`` (MMEngine: ``Sequential``)."""

    def __init__(self, *args: nn.Module, init_cfg: dict | list[dict] | None = None) -> None:
        BaseModule.__init__(self, init_cfg)
        nn.Sequential.__init__(self, *args)


class ModuleList(BaseModule, nn.ModuleList):
    """``nn.ModuleList`` with ``init_cfg`` (MMEngine: ``ModuleList``)."""

    def __init__(self, modules: Iterable[nn.Module] | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        BaseModule.__init__(self, init_cfg)
        nn.ModuleList.__init__(self, modules)


class ModuleDict(BaseModule, nn.ModuleDict):
    """``nn.ModuleDict`` with ``init_cfg`` (MMEngine: ``ModuleDict``)."""

    def __init__(self, modules: dict[str, nn.Module] | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        BaseModule.__init__(self, init_cfg)
        nn.ModuleDict.__init__(self, modules)
