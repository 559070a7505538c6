"""Several optimizer wrappers under names, for models with several optimizers (GANs).

MMEngine: ``OptimWrapperDict``. A model's ``train_step`` picks a wrapper by name
(``optim_wrapper['generator'].update_params(loss)``); the dict only gathers what
concerns all of them: learning rates and momenta for the log, the state for
checkpoints, ``zero_grad``.

Compiled training steps (``compile_steps``/``Runner(compile=True)``) fuse the update
of one optimizer: a model trained with an ``OptimWrapperDict`` overrides
``train_step`` and calls each wrapper itself, so its training runs eagerly (its
val/test steps may still be compiled).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from torch import nn

from .._errors import choices_text, suggest
from .optim_wrapper import OptimWrapper

__all__ = ['OptimWrapperDict']


class OptimWrapperDict(OptimWrapper):
    """Optimizer wrappers by name (MMEngine: ``OptimWrapperDict``).

    A subclass of :class:`OptimWrapper` as in MMEngine, so code that checks
    ``isinstance(x, OptimWrapper)`` accepts it; what updates parameters
    (``update_params``, ``backward``, ``step``, ``optim_context``) belongs to each
    wrapper and raises here.

    Args:
        **optim_wrappers: The wrappers, by name.

    Raises:
        TypeError: A value is not an :class:`OptimWrapper` (named).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> g, d = nn.Linear(2, 2), nn.Linear(2, 1)
        >>> wrappers = OptimWrapperDict(
        ...     generator=OptimWrapper(torch.optim.Adam(g.parameters(), lr=1e-4)),
        ...     discriminator=OptimWrapper(torch.optim.SGD(d.parameters(), lr=1e-2)))
        >>> wrappers.get_lr()
        {'generator.lr': [0.0001], 'discriminator.lr': [0.01]}
        >>> loss = d(g(torch.ones(1, 2))).sum()
        >>> wrappers['generator'].update_params(loss)
    """

    def __init__(self, **optim_wrappers: OptimWrapper) -> None:
        # OptimWrapper.__init__ is not called: there is no optimizer of its own.
        for name, wrapper in optim_wrappers.items():
            if not isinstance(wrapper, OptimWrapper) or isinstance(wrapper, OptimWrapperDict):
                raise TypeError(f'OptimWrapperDict takes OptimWrapper instances by name, but '
                                f'{name}= is a {type(wrapper).__name__}: {wrapper!r}')
        self.optim_wrappers: dict[str, OptimWrapper] = dict(optim_wrappers)

    # -- what belongs to each wrapper -----------------------------------------------
    def _per_wrapper(self, method: str) -> NotImplementedError:
        example = next(iter(self.optim_wrappers), 'generator')
        return NotImplementedError(
            f'OptimWrapperDict.{method}() is ambiguous: call it on one of the wrappers '
            f'({choices_text(self.optim_wrappers)}), e.g. '
            f"optim_wrapper[{example!r}].{method}(...). A model trained with several "
            'optimizers overrides train_step to do so.')

    def update_params(self, loss: Any, step_kwargs: dict | None = None,
                      zero_kwargs: dict | None = None) -> None:
        """Not here: each wrapper updates its own parameters."""
        raise self._per_wrapper('update_params')

    def backward(self, loss: Any, **kwargs: Any) -> None:
        """Not here: each wrapper runs its own backward."""
        raise self._per_wrapper('backward')

    def step(self, **kwargs: Any) -> None:
        """Not here: each wrapper steps its own optimizer."""
        raise self._per_wrapper('step')

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Not here: each wrapper has its own context."""
        raise self._per_wrapper('optim_context')
        yield  # pragma: no cover - a generator, for contextmanager

    # -- what concerns all of them ---------------------------------------------------
    def zero_grad(self, **kwargs: Any) -> None:
        """``zero_grad(**kwargs)`` of every wrapper."""
        for wrapper in self.optim_wrappers.values():
            wrapper.zero_grad(**kwargs)

    def initialize_count_status(self, model: nn.Module, init_counts: int,
                                max_counts: int) -> None:
        """Does nothing, as in MMEngine.

        How often ``train_step`` calls each wrapper per iteration is the model's
        choice, so iteration counts say nothing about a wrapper's micro-steps;
        call it on a wrapper yourself where it applies.
        """

    @property
    def param_groups(self) -> dict[str, list[dict]]:  # type: ignore[override]
        """Each wrapper's ``param_groups``, by name."""
        return {name: wrapper.param_groups for name, wrapper in self.optim_wrappers.items()}

    def get_lr(self) -> dict[str, list[float]]:
        """``{'<name>.lr': [...]}`` (and ``'<name>.base_lr'``) for every wrapper."""
        lrs: dict[str, list[float]] = {}
        for name, wrapper in self.optim_wrappers.items():
            for key, values in wrapper.get_lr().items():
                lrs[f'{name}.{key}'] = values
        return lrs

    def get_momentum(self) -> dict[str, list[float]]:
        """``{'<name>.momentum': [...]}`` for every wrapper."""
        return {f'{name}.momentum': wrapper.get_momentum()['momentum']
                for name, wrapper in self.optim_wrappers.items()}

    def state_dict(self) -> dict:
        """``{name: wrapper.state_dict()}``."""
        return {name: wrapper.state_dict() for name, wrapper in self.optim_wrappers.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load each wrapper's state; an unknown name loads nothing.

        Raises:
            KeyError: ``state_dict`` names a wrapper this dict does not have.
        """
        unknown = [name for name in state_dict if name not in self.optim_wrappers]
        if unknown:
            raise KeyError(f'the optimizer state has entries for {choices_text(unknown)}, '
                           f'but the optimizers are {choices_text(self.optim_wrappers)}.'
                           f'{suggest(str(unknown[0]), self.optim_wrappers)} Nothing was '
                           'loaded.')
        before = {name: self.optim_wrappers[name].state_dict() for name in state_dict}
        loaded = []
        try:
            for name, state in state_dict.items():
                self.optim_wrappers[name].load_state_dict(state)
                loaded.append(name)
        except Exception:
            for name in loaded:  # a failed load leaves every wrapper as it was
                self.optim_wrappers[name].load_state_dict(before[name])
            raise

    # -- a mapping of wrappers ---------------------------------------------------------
    def items(self) -> Iterator[tuple[str, OptimWrapper]]:
        """The ``(name, wrapper)`` pairs."""
        yield from self.optim_wrappers.items()

    def values(self) -> Iterator[OptimWrapper]:
        """The wrappers."""
        yield from self.optim_wrappers.values()

    def keys(self) -> Iterator[str]:
        """The names."""
        yield from self.optim_wrappers.keys()

    def __getitem__(self, name: str) -> OptimWrapper:
        if name not in self.optim_wrappers:
            raise KeyError(f'no optimizer wrapper named {name!r}; the optimizers are '
                           f'{choices_text(self.optim_wrappers)}.'
                           f'{suggest(str(name), self.optim_wrappers)}')
        return self.optim_wrappers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.optim_wrappers

    def __len__(self) -> int:
        return len(self.optim_wrappers)

    def __iter__(self) -> Iterator[str]:
        return iter(self.optim_wrappers)

    def __repr__(self) -> str:
        return '\n'.join(f'name: {name}\n{wrapper!r}'
                         for name, wrapper in self.optim_wrappers.items())
