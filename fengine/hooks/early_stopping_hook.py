"""``EarlyStoppingHook``: stop training when a metric stops improving (MMEngine: ``EarlyStoppingHook``)."""
from __future__ import annotations

import math
from typing import Any

from .._errors import check_bool, check_choice, check_int, choices_text
from ..registry import HOOKS
from ._rules import RULES, infer_rule
from .hook import Hook

__all__ = ['EarlyStoppingHook']


@HOOKS.register_module()
class EarlyStoppingHook(Hook):
    """Stop training when the monitored metric has not improved for ``patience`` validations.

    MMEngine: ``mmengine.hooks.EarlyStoppingHook``. After each validation the metric
    ``monitor`` is compared with the best value so far; it improves when it beats it by
    more than ``min_delta``. Stopping sets the train loop's ``stop_training``: an
    epoch-based loop finishes the current epoch's validation and stops, an
    iteration-based loop stops before its next iteration; ``after_train`` and
    ``after_run`` hooks still run (the last checkpoint is written as usual).

    Args:
        monitor: The metric key, as the evaluator returns it (e.g. ``'accuracy/top1'``).
        rule: ``'greater'`` or ``'less'`` is better; inferred from ``monitor``'s name
            when ``None`` (``acc``, ``top``, ``mAP``... greater; ``loss`` less).
        min_delta: The least change that counts as an improvement.
        strict: Raise when ``monitor`` is missing from the metrics (else warn and skip).
        check_finite: Stop when the metric is NaN or infinite.
        patience: Validations without improvement before stopping.
        stopping_threshold: Stop as soon as the metric is better than this.

    Raises:
        ValueError: ``rule`` is not ``'greater'``/``'less'``, it cannot be inferred,
            or ``patience`` is not a positive int.
    """

    priority = 'LOWEST'

    def __init__(self, monitor: str, rule: str | None = None, min_delta: float = 0.1,
                 strict: bool = False, check_finite: bool = True, patience: int = 5,
                 stopping_threshold: float | None = None) -> None:
        if not isinstance(monitor, str):
            raise TypeError(f'EarlyStoppingHook monitor must be a metric key (a str), but got '
                            f'{type(monitor).__name__}: {monitor!r}')
        if rule is None:
            rule = infer_rule(monitor, owner='EarlyStoppingHook', argument='monitor')
        check_choice('EarlyStoppingHook rule', rule, RULES)
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or \
                min_delta < 0:
            raise ValueError(f'EarlyStoppingHook min_delta must be a number >= 0, but got '
                             f'{min_delta!r}')
        self.monitor = monitor
        self.rule = rule
        # Signed so that `best + min_delta` is the value to beat under either rule.
        self.min_delta = min_delta if rule == 'greater' else -min_delta
        self.strict = check_bool('EarlyStoppingHook strict', strict)
        self.check_finite = check_bool('EarlyStoppingHook check_finite', check_finite)
        self.patience = check_int('EarlyStoppingHook patience', patience, minimum=1,
                                  accepted='a positive int')
        if stopping_threshold is not None and (isinstance(stopping_threshold, bool) or
                                               not isinstance(stopping_threshold, (int, float))):
            raise TypeError(f'EarlyStoppingHook stopping_threshold must be a number or None, '
                            f'but got {stopping_threshold!r}')
        self.stopping_threshold = stopping_threshold
        self.wait_count = 0
        self.best_score = -math.inf if rule == 'greater' else math.inf

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.rule == 'greater' else a < b

    def _check_stop_condition(self, score: float) -> tuple[bool, str]:
        """Whether to stop at ``score``, and why (updates the best score and the count)."""
        if self.check_finite and not math.isfinite(score):
            return True, (f'EarlyStoppingHook: the monitored metric {self.monitor} = {score} is '
                          f'not finite; the best value was {self.best_score:.4f}.')
        if self.stopping_threshold is not None and self._better(score,
                                                                self.stopping_threshold):
            self.best_score = score
            return True, (f'EarlyStoppingHook: {self.monitor} = {score} is {self.rule} than '
                          f'the stopping_threshold {self.stopping_threshold}.')
        if self._better(self.best_score + self.min_delta, score):
            self.wait_count += 1
            if self.wait_count >= self.patience:
                return True, (f'EarlyStoppingHook: {self.monitor} did not improve (by more '
                              f'than {abs(self.min_delta)}) in the last {self.wait_count} '
                              f'validations; the best value was {self.best_score:.4f}.')
            return False, ''
        self.best_score = score
        self.wait_count = 0
        return False, ''

    def before_train(self, runner) -> None:
        if not hasattr(runner.train_loop, 'stop_training'):
            raise TypeError(f'EarlyStoppingHook stops training through the train loop\'s '
                            f'stop_training flag, which {type(runner.train_loop).__name__} '
                            'does not have; check it in the loop\'s run() as '
                            'EpochBasedTrainLoop does')

    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        if not runner.train_loop_built:  # runner.val() alone: nothing to stop
            return
        metrics = metrics or {}
        if self.monitor not in metrics:
            message = (f'EarlyStoppingHook monitor={self.monitor!r} is not among the '
                       f'validation metrics {choices_text(metrics)}')
            if self.strict:
                raise KeyError(message + '; fix monitor, or pass strict=False to skip')
            runner.logger.warning(message + ': early stopping skipped this validation')
            return
        stop, reason = self._check_stop_condition(float(metrics[self.monitor]))
        if stop:
            runner.train_loop.stop_training = True
            runner.logger.info(reason)
