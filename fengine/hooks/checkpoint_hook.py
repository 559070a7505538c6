"""``CheckpointHook``: periodic, last and best checkpoints (MMEngine: ``CheckpointHook``)."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .._errors import check_choice, choices_text
from ..registry import HOOKS
from .hook import Hook

__all__ = ['CheckpointHook']

RULES = ('greater', 'less')
# MMEngine's inference of the comparison rule from a metric's name.
_GREATER_KEYS = ('acc', 'top', 'ar@', 'auc', 'precision', 'map', 'mdice', 'miou', 'macc',
                 'aacc', 'f1', 'recall', 'psnr', 'ssim')
_LESS_KEYS = ('loss', 'error', 'err', 'mae', 'mse', 'rmse', 'fid')


def _infer_rule(key: str) -> str:
    lowered = key.lower().rsplit('/', 1)[-1]
    if any(k in lowered for k in _LESS_KEYS):
        return 'less'
    if any(k in lowered for k in _GREATER_KEYS):
        return 'greater'
    raise ValueError(f'CheckpointHook save_best: cannot tell whether a larger or smaller '
                     f"{key!r} is better; pass rule='greater' or rule='less' to CheckpointHook")


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Saves ``epoch_N.pth`` / ``iter_N.pth`` through :meth:`Runner.save_checkpoint`.

    Every write is atomic (a temporary file in the same folder, fsync, rename), and
    older files are removed only after the new one is complete. Pending loss values
    are read (and checked to be finite) before anything is written, so a run that
    diverged never saves its broken state.

    Args:
        interval: Save every ``interval`` epochs (or iterations); ``-1``: never
            periodically (only ``save_last``/``save_best``).
        by_epoch: Count ``interval`` in epochs (else iterations).
        save_optimizer: Include the optimizer (and AMP scaler) state.
        save_param_scheduler: Include the schedulers' state.
        out_dir: Folder of the checkpoints (default: the runner's ``work_dir``).
        max_keep_ckpts: Keep only the newest N periodic checkpoints (N >= 1), or
            ``-1``: keep all (MMEngine's default and meaning).
        save_last: Also save after the last epoch/iteration when ``interval`` misses it.
        save_best: A metric key (or ``'auto'``: the first metric) whose best value
            keeps ``best_<key>_<epoch|iter>_N.pth``.
        rule: ``'greater'`` or ``'less'``; inferred from the key's name when ``None``
            (here for a named key, at the first validation for ``'auto'``).
        filename_tmpl: e.g. ``'epoch_{}.pth'``.

    Raises:
        ValueError: ``interval`` or ``max_keep_ckpts`` is neither a positive int nor
            -1; ``rule`` is not ``'greater'``/``'less'``; or ``save_best`` names a key
            whose rule cannot be inferred and no ``rule`` is given.
        TypeError: ``max_keep_ckpts`` is not an int, or ``save_best`` not a str.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = -1, by_epoch: bool = True, save_optimizer: bool = True,
                 save_param_scheduler: bool = True, out_dir: str | os.PathLike | None = None,
                 max_keep_ckpts: int = -1, save_last: bool = True,
                 save_best: str | None = None, rule: str | None = None,
                 filename_tmpl: str | None = None) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval == 0 \
                or interval < -1:
            raise ValueError(f'CheckpointHook interval must be a positive int or -1 (never), '
                             f'but got {interval!r}')
        if rule is not None:
            check_choice('CheckpointHook rule', rule, RULES)
        if isinstance(max_keep_ckpts, bool) or not isinstance(max_keep_ckpts, int):
            raise TypeError(f'CheckpointHook max_keep_ckpts must be an int (-1: keep all, or '
                            f'N >= 1: keep the newest N), but got '
                            f'{type(max_keep_ckpts).__name__}: {max_keep_ckpts!r}')
        if max_keep_ckpts == 0 or max_keep_ckpts < -1:
            # 0 would read as "keep none" but used to keep all; other negatives are typos.
            raise ValueError(f'CheckpointHook max_keep_ckpts must be -1 (keep all) or >= 1 '
                             f'(keep the newest N), but got {max_keep_ckpts}')
        if save_best is not None and not isinstance(save_best, str):
            raise TypeError(f"save_best must be a metric key or 'auto', but got {save_best!r}")
        if save_best and save_best != 'auto' and rule is None:
            # Known now: fail before training, not after the first (maybe long) epoch.
            rule = _infer_rule(save_best)
        self.interval = interval
        self.by_epoch = by_epoch
        self.save_optimizer = save_optimizer
        self.save_param_scheduler = save_param_scheduler
        self.out_dir = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.save_last = save_last
        self.save_best = save_best
        self.rule = rule
        self.filename_tmpl = filename_tmpl or ('epoch_{}.pth' if by_epoch else 'iter_{}.pth')
        self._kept: list[Path] = []
        self.best_score: float | None = None
        self.best_path: Path | None = None

    def before_train(self, runner) -> None:
        self._dir = Path(self.out_dir or runner.work_dir)
        best = runner.message_hub.get_info('best_score')
        if best is not None:
            self.best_score = best
            path = runner.message_hub.get_info('best_ckpt')
            self.best_path = Path(path) if path else None

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        if (self.interval > 0 and self.every_n_epochs(runner, self.interval)) or (
                self.save_last and self.is_last_train_epoch(runner)):
            self._save(runner, self.filename_tmpl.format(runner.epoch + 1), periodic=True)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        if self.by_epoch:
            return
        if (self.interval > 0 and self.every_n_train_iters(runner, self.interval)) or (
                self.save_last and self.is_last_train_iter(runner)):
            self._save(runner, self.filename_tmpl.format(runner.iter + 1), periodic=True)

    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        if not self.save_best or not metrics or not runner.train_loop_built:
            return
        key = next(iter(metrics)) if self.save_best == 'auto' else self.save_best
        if key not in metrics:
            raise KeyError(f'CheckpointHook save_best={self.save_best!r}: the validation '
                           f'metrics have no key {key!r}; they have {choices_text(metrics)}')
        score = float(metrics[key])
        rule = self.rule or _infer_rule(key)
        if not math.isfinite(score):
            return
        better = (self.best_score is None or (score > self.best_score if rule == 'greater'
                                              else score < self.best_score))
        if not better:
            return
        unit = 'epoch' if runner.train_loop.by_epoch else 'iter'
        count = runner.epoch if runner.train_loop.by_epoch else runner.iter
        name = f"best_{key.replace('/', '_')}_{unit}_{count}.pth"
        previous = self.best_path
        self.best_score = score
        runner.message_hub.update_info('best_score', score)
        self.best_path = self._save(runner, name, periodic=False)
        runner.message_hub.update_info('best_ckpt', str(self.best_path))
        if previous is not None and previous != self.best_path and previous.exists():
            previous.unlink()
        runner.logger.info(f'The best checkpoint with {score:.4f} {key} at {count} {unit} '
                           f'is saved to {self.best_path.name}.')

    def _save(self, runner, filename: str, *, periodic: bool) -> Path:
        path = runner.save_checkpoint(self._dir, filename, save_optimizer=self.save_optimizer,
                                      save_param_scheduler=self.save_param_scheduler)
        if periodic:
            if path in self._kept:
                self._kept.remove(path)
            self._kept.append(path)
            while 0 < self.max_keep_ckpts < len(self._kept):
                old = self._kept.pop(0)
                if old.exists():
                    old.unlink()
            self._remove_older_by_name(runner)
        return path

    def _remove_older_by_name(self, runner) -> None:
        """Remove the periodic files of earlier runs in this folder beyond ``max_keep_ckpts``.

        A resumed run (after a crash, say) did not write them, so they are not in its
        list; as MMEngine, they are found by name, walking back ``interval`` at a time
        from the oldest file to keep, until a name is missing.
        """
        if self.max_keep_ckpts <= 0 or self.interval <= 0:
            return
        count = (runner.epoch if self.by_epoch else runner.iter) + 1
        step = count - self.max_keep_ckpts * self.interval
        while step > 0:
            old = self._dir / self.filename_tmpl.format(step)
            if not old.exists():
                break
            old.unlink()
            step -= self.interval
