"""``Hook``: the points a :class:`~fengine.runner.Runner` calls during a run.

MMEngine: ``mmengine.hooks.Hook`` and ``mmengine.runner.Priority``. A hook overrides
the points it cares about; the others do nothing. Hooks run in priority order
(smaller first); hooks of equal priority run in the order they were registered.
"""
from __future__ import annotations

from typing import Any

from .._errors import choices_text, suggest

__all__ = ['Hook', 'PRIORITIES', 'get_priority']

# MMEngine's Priority enum, by name.
PRIORITIES = {
    'HIGHEST': 0,
    'VERY_HIGH': 10,
    'HIGH': 30,
    'ABOVE_NORMAL': 40,
    'NORMAL': 50,
    'BELOW_NORMAL': 60,
    'LOW': 70,
    'VERY_LOW': 90,
    'LOWEST': 100,
}


def get_priority(priority: int | str) -> int:
    """An int priority from an int in [0, 100] or a name such as ``'NORMAL'``.

    MMEngine: ``mmengine.runner.get_priority``.

    Raises:
        ValueError: an int outside [0, 100] or an unknown name (the message lists them).
        TypeError: neither an int nor a str.
    """
    if isinstance(priority, bool):
        raise TypeError(f'priority must be an int in [0, 100] or one of '
                        f'{choices_text(PRIORITIES)}, but got {priority!r}')
    if isinstance(priority, int):
        if not 0 <= priority <= 100:
            raise ValueError(f'priority must be in [0, 100] (0 runs first), but got {priority}')
        return priority
    if isinstance(priority, str):
        if priority.upper() not in PRIORITIES:
            raise ValueError(f'unknown priority {priority!r}'
                             f'{suggest(priority.upper(), PRIORITIES)}; '
                             f'choose one of {choices_text(PRIORITIES)} or an int in [0, 100]')
        return PRIORITIES[priority.upper()]
    raise TypeError(f'priority must be an int in [0, 100] or one of '
                    f'{choices_text(PRIORITIES)}, but got {type(priority).__name__}: '
                    f'{priority!r}')


class Hook:
    """The base of every hook (MMEngine: ``Hook``).

    ``priority`` is a class attribute a subclass may set; ``register_hook`` and
    ``custom_hooks=[dict(type=..., priority=...)]`` override it per instance.

    Example:
        >>> from fengine.hooks import Hook
        >>> class PrintLoss(Hook):
        ...     def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        ...         if self.every_n_train_iters(runner, 100):
        ...             print(outputs['loss'])
        >>> PrintLoss().priority
        'NORMAL'
    """

    priority: int | str = 'NORMAL'

    # The points, in the order a training run reaches them.
    def before_run(self, runner) -> None:
        """Before anything else of ``train()``, ``val()`` or ``test()``."""

    def after_run(self, runner) -> None:
        """After everything else of ``train()``, ``val()`` or ``test()``."""

    def before_train(self, runner) -> None:
        """Before the first training epoch or iteration."""

    def after_train(self, runner) -> None:
        """After the last training epoch or iteration."""

    def before_val(self, runner) -> None:
        """Before a validation run."""

    def after_val(self, runner) -> None:
        """After a validation run."""

    def before_test(self, runner) -> None:
        """Before a test run."""

    def after_test(self, runner) -> None:
        """After a test run."""

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """With the checkpoint dict about to be written; hooks may add entries."""

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """With the checkpoint dict just loaded."""

    def before_train_epoch(self, runner) -> None:
        self._before_epoch(runner, mode='train')

    def before_val_epoch(self, runner) -> None:
        self._before_epoch(runner, mode='val')

    def before_test_epoch(self, runner) -> None:
        self._before_epoch(runner, mode='test')

    def after_train_epoch(self, runner) -> None:
        self._after_epoch(runner, mode='train')

    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        self._after_epoch(runner, mode='val')

    def after_test_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        self._after_epoch(runner, mode='test')

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._before_iter(runner, batch_idx=batch_idx, data_batch=data_batch, mode='train')

    def before_val_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._before_iter(runner, batch_idx=batch_idx, data_batch=data_batch, mode='val')

    def before_test_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._before_iter(runner, batch_idx=batch_idx, data_batch=data_batch, mode='test')

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        self._after_iter(runner, batch_idx=batch_idx, data_batch=data_batch,
                         outputs=outputs, mode='train')

    def after_val_iter(self, runner, batch_idx: int, data_batch: Any = None,
                       outputs: Any = None) -> None:
        self._after_iter(runner, batch_idx=batch_idx, data_batch=data_batch,
                         outputs=outputs, mode='val')

    def after_test_iter(self, runner, batch_idx: int, data_batch: Any = None,
                        outputs: Any = None) -> None:
        self._after_iter(runner, batch_idx=batch_idx, data_batch=data_batch,
                         outputs=outputs, mode='test')

    # Shared fallbacks, so a hook that treats every mode alike overrides one method.
    def _before_epoch(self, runner, mode: str = 'train') -> None:
        pass

    def _after_epoch(self, runner, mode: str = 'train') -> None:
        pass

    def _before_iter(self, runner, batch_idx: int, data_batch: Any = None,
                     mode: str = 'train') -> None:
        pass

    def _after_iter(self, runner, batch_idx: int, data_batch: Any = None,
                    outputs: Any = None, mode: str = 'train') -> None:
        pass

    # Helpers MMEngine's hooks offer.
    def every_n_epochs(self, runner, n: int, start: int = 0) -> bool:
        """Whether the epoch just finished is the n-th one after ``start``."""
        dividend = runner.epoch + 1 - start
        return n > 0 and dividend >= 0 and dividend % n == 0

    def every_n_inner_iters(self, batch_idx: int, n: int) -> bool:
        """Whether ``batch_idx`` (0-based, within the epoch) is the n-th one."""
        return n > 0 and (batch_idx + 1) % n == 0

    def every_n_train_iters(self, runner, n: int, start: int = 0) -> bool:
        """Whether the training iteration just finished is the n-th one after ``start``."""
        dividend = runner.iter + 1 - start
        return n > 0 and dividend >= 0 and dividend % n == 0

    def end_of_epoch(self, dataloader, batch_idx: int) -> bool:
        """Whether ``batch_idx`` is the last batch of ``dataloader``."""
        return batch_idx + 1 == len(dataloader)

    def is_last_train_epoch(self, runner) -> bool:
        return runner.epoch + 1 == runner.max_epochs

    def is_last_train_iter(self, runner) -> bool:
        return runner.iter + 1 == runner.max_iters

    def __repr__(self) -> str:
        return f'{type(self).__name__}(priority={self.priority!r})'
