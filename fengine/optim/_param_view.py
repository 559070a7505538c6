"""Let a torch learning-rate scheduler schedule another param-group key.

torch's schedulers read and write ``group['lr']`` (and ``'initial_lr'``, OneCycleLR's
``'max_lr'``/``'min_lr'``). A :class:`GroupView` presents a param group to them with
``'lr'`` meaning the scheduled key: ``'momentum'``, ``'weight_decay'``... and
``'<name>_lr'`` meaning ``'<name>_<key>'`` (``'initial_momentum'``, as MMEngine names
it). So one torch scheduler class gives the lr, momentum and generic schedules of
MMEngine, with torch's math.

Momentum is SGD's ``momentum`` or, for optimizers with ``betas`` (Adam and kin),
``betas[0]``, as in MMEngine. A tensor value (a compiled step holds ``lr``, SGD's
``momentum`` and Adam's ``betas[0]`` as 0-d tensors) is written in place by torch's
schedulers (``fill_``), so it stays the object the compiled step reads.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Iterator

from torch import Tensor
from torch.optim import Optimizer

from .._errors import choices_text

__all__ = ['GroupView', 'view_optimizer', 'check_scheduled_key', 'uses_betas', 'current_value']


def uses_betas(group: dict, param_name: str) -> bool:
    """Whether ``param_name`` of ``group`` is Adam's ``betas[0]`` (momentum without ``momentum``)."""
    return param_name == 'momentum' and 'momentum' not in group and 'betas' in group


class GroupView(MutableMapping):
    """A param group as a torch scheduler sees it: ``'lr'`` is ``param_name``.

    Args:
        group: The optimizer's param group (changed in place).
        param_name: The key scheduled under the name ``'lr'``.
    """

    def __init__(self, group: dict, param_name: str) -> None:
        self.group = group
        self.param_name = param_name
        self._beta = uses_betas(group, param_name)

    def _key(self, key: str) -> str:
        if key == 'lr':
            return self.param_name
        if key.endswith('_lr'):  # initial_lr, max_lr, min_lr -> initial_momentum...
            return f'{key[:-3]}_{self.param_name}'
        return key

    def __getitem__(self, key: str) -> Any:
        if key == 'lr' and self._beta:
            return self.group['betas'][0]
        return self.group[self._key(key)]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == 'lr' and self._beta:
            betas = self.group['betas']
            # A tuple, as torch.optim keeps it; betas[1] (a tensor too, maybe) is kept.
            self.group['betas'] = (value, *betas[1:])
            return
        self.group[self._key(key)] = value

    def __delitem__(self, key: str) -> None:
        del self.group[self._key(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.group)

    def __len__(self) -> int:
        return len(self.group)


class _ViewOptimizer(Optimizer):
    """An ``Optimizer`` to hand to a torch scheduler: the owner's groups, seen through views.

    ``Optimizer.__init__`` is not called: this object has no parameters of its own.
    The groups are read from the owner on every access, because
    ``Optimizer.load_state_dict`` replaces the group dicts (a resume).
    """

    def __init__(self, owner: Any, param_name: str) -> None:  # noqa: D107
        self._owner = owner
        self._param_name = param_name
        self.state: dict = {}
        # OneCycleLR reads `defaults` to find momentum; only lr schedules may cycle it.
        self.defaults = dict(owner.defaults) if param_name == 'lr' else {}

    @property
    def param_groups(self) -> list:  # type: ignore[override]
        groups = self._owner.param_groups
        if self._param_name == 'lr':
            return list(groups)
        return [GroupView(group, self._param_name) for group in groups]

    def __repr__(self) -> str:
        return f'view of {type(self._owner).__name__} scheduling {self._param_name!r}'


def view_optimizer(owner: Any, optimizer: Optimizer, param_name: str) -> Optimizer:
    """The optimizer a torch scheduler should run on to schedule ``owner``'s ``param_name``.

    ``owner`` is the optimizer or its wrapper (whose ``param_groups`` may add
    MMEngine's base group); the optimizer itself is returned where nothing needs
    translating, so an lr schedule of a plain optimizer runs on it unchanged.
    """
    if param_name == 'lr' and owner.param_groups is optimizer.param_groups:
        return optimizer
    return _ViewOptimizer(owner, param_name)


def check_scheduled_key(owner: Any, param_name: Any, scheduler: str) -> None:
    """Raise naming the group that lacks ``param_name``, and the keys it has.

    Raises:
        TypeError: ``param_name`` is not a str.
        ValueError: a momentum schedule on an optimizer without momentum or betas.
        KeyError: another key missing from a param group.
    """
    if not isinstance(param_name, str):
        raise TypeError(f'{scheduler}: param_name must be the name of a param-group key '
                        f"such as 'lr', 'momentum' or 'weight_decay', but got {param_name!r}")
    for index, group in enumerate(owner.param_groups):
        if param_name in group or uses_betas(group, param_name):
            continue
        keys = choices_text(k for k in group if k != 'params')
        if param_name == 'momentum':
            raise ValueError(f'{scheduler} schedules the momentum, but param group {index} of '
                             f'{type(owner).__name__} has neither momentum (SGD, RMSprop) '
                             f'nor betas (Adam and kin); its keys: {keys}.')
        raise KeyError(f'{scheduler}: param group {index} of {type(owner).__name__} has no '
                       f'{param_name!r} to schedule; its keys: {keys}.')


def current_value(value: Any) -> Any:
    """``value`` as a float, for a log line (one host read for a tensor)."""
    return float(value) if isinstance(value, Tensor) else value
