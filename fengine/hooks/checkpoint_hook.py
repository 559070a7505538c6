"""``CheckpointHook``: periodic, last, best and published checkpoints (MMEngine: ``CheckpointHook``)."""
from __future__ import annotations

import hashlib
import inspect
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .._errors import check_bool, check_choice, check_int, choices_text, suggest
from ..dist import is_main_process
from ..registry import HOOKS
from ._rules import RULES, infer_rule
from .hook import Hook

__all__ = ['CheckpointHook']

# Backends that write to local folders (MMEngine's names of its local backend).
_LOCAL_BACKENDS = ('local', 'disk')


def _str_list(name: str, value: Any) -> list[str] | None:
    """``None``, a str or a sequence of str, as a list without duplicates."""
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise TypeError(f'CheckpointHook {name} must be a str or a list of str, but got '
                        f'{type(value).__name__}: {value!r}')
    duplicates = sorted({v for v in values if list(values).count(v) > 1})
    if duplicates:
        raise ValueError(f'CheckpointHook {name} names {duplicates} more than once: {value!r}')
    return list(values)


def _formats(template: str) -> bool:
    try:
        template.format(1)
    except (IndexError, KeyError, ValueError):
        return False
    return True


def _check_local(out_dir: Any, file_client_args: Any, backend_args: Any) -> None:
    """Refuse what would need a remote storage backend (fengine writes local files)."""
    if file_client_args is not None and backend_args is not None:
        raise ValueError('CheckpointHook takes file_client_args (the older name) or '
                         'backend_args, not both')
    for name, args in (('file_client_args', file_client_args), ('backend_args', backend_args)):
        if args is None:
            continue
        if not isinstance(args, dict) or args.get('backend', 'local') not in _LOCAL_BACKENDS \
                or set(args) - {'backend'}:
            raise NotImplementedError(
                f'CheckpointHook {name}={args!r}: fengine writes checkpoints to local folders '
                f"only; remove {name}, or pass dict(backend='local')")
    if out_dir is not None and '://' in os.fspath(out_dir):
        raise NotImplementedError(
            f'CheckpointHook out_dir={os.fspath(out_dir)!r} needs a remote storage backend, '
            'which fengine does not have: pass a local folder (and copy the checkpoints '
            'from there)')


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Saves ``epoch_N.pth`` / ``iter_N.pth`` through :meth:`Runner.save_checkpoint`.

    MMEngine: ``mmengine.hooks.CheckpointHook``, with its arguments and file names.
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
        out_dir: A local folder: checkpoints go to ``out_dir/<last part of work_dir>``
            (MMEngine's rule); default: the runner's ``work_dir`` itself.
        max_keep_ckpts: Keep only the newest N periodic checkpoints (N >= 1), or
            ``-1``: keep all. Checkpoints of earlier (killed) runs in the folder count.
        save_last: Also save after the last epoch/iteration when ``interval`` misses it.
        save_best: A metric key, a list of keys, or ``'auto'`` (the first metric): the
            best value of each keeps ``best_<key>_<filename_tmpl>`` (without optimizer
            and schedulers), and the previous best file is removed.
        rule: ``'greater'`` or ``'less'`` (one for all keys, or a list, one per key);
            inferred from each key's name when ``None``.
        greater_keys, less_keys: Names (or parts of names) inferred as ``'greater'`` /
            ``'less'`` instead of MMEngine's lists (``acc``, ``top``, ``mAP``... /
            ``loss``).
        file_client_args, backend_args: Only ``None`` or ``dict(backend='local')``.
        filename_tmpl: A name with one ``{}`` for the epoch (iteration), e.g.
            ``'epoch_{}.pth'`` (the default by ``by_epoch``).
        published_keys: After training, write a copy of the last checkpoint (with
            ``save_last``) and of each best one that holds only these keys (e.g.
            ``['meta', 'state_dict']``), named ``<name>-<first 8 hex of the sha256 of
            the file>.pth``.
        save_begin: Periodic saves start at this epoch (iteration): with
            ``save_begin=5, interval=2``, epochs 5, 7, 9...

    Raises:
        ValueError: ``interval``, ``max_keep_ckpts`` or ``save_begin`` out of range; a
            ``rule`` not ``'greater'``/``'less'`` or not one per key; a key whose rule
            cannot be inferred; ``'auto'`` with other keys; duplicates;
            ``filename_tmpl`` without exactly one ``{}``.
        TypeError: wrong types; arguments fengine does not have (named).
        NotImplementedError: a remote ``out_dir`` or storage backend.
    """

    priority = 'VERY_LOW'

    def __init__(self, interval: int = -1, by_epoch: bool = True, save_optimizer: bool = True,
                 save_param_scheduler: bool = True, out_dir: str | os.PathLike | None = None,
                 max_keep_ckpts: int = -1, save_last: bool = True,
                 save_best: str | Sequence[str] | None = None,
                 rule: str | Sequence[str] | None = None,
                 greater_keys: str | Sequence[str] | None = None,
                 less_keys: str | Sequence[str] | None = None,
                 file_client_args: dict | None = None, filename_tmpl: str | None = None,
                 backend_args: dict | None = None,
                 published_keys: str | Sequence[str] | None = None, save_begin: int = 0,
                 **kwargs: Any) -> None:
        if kwargs:
            accepted = [p for p in inspect.signature(CheckpointHook).parameters
                        if p != 'kwargs']
            unknown = sorted(kwargs)
            raise TypeError(f'CheckpointHook has no argument(s) {unknown}'
                            f'{suggest(unknown[0], accepted)} (MMEngine passes extra ones to '
                            f'its save_checkpoint, fengine\'s has none); accepted: '
                            f'{choices_text(accepted)}')
        if not isinstance(interval, int) or isinstance(interval, bool) or interval == 0 \
                or interval < -1:
            raise ValueError(f'CheckpointHook interval must be a positive int or -1 (never), '
                             f'but got {interval!r}')
        if isinstance(max_keep_ckpts, bool) or not isinstance(max_keep_ckpts, int):
            raise TypeError(f'CheckpointHook max_keep_ckpts must be an int (-1: keep all, or '
                            f'N >= 1: keep the newest N), but got '
                            f'{type(max_keep_ckpts).__name__}: {max_keep_ckpts!r}')
        if max_keep_ckpts == 0 or max_keep_ckpts < -1:
            # 0 would read as "keep none" but used to keep all; other negatives are typos.
            raise ValueError(f'CheckpointHook max_keep_ckpts must be -1 (keep all) or >= 1 '
                             f'(keep the newest N), but got {max_keep_ckpts}')
        _check_local(out_dir, file_client_args, backend_args)
        self.interval = interval
        self.by_epoch = check_bool('CheckpointHook by_epoch', by_epoch)
        self.save_optimizer = check_bool('CheckpointHook save_optimizer', save_optimizer)
        self.save_param_scheduler = check_bool('CheckpointHook save_param_scheduler',
                                               save_param_scheduler)
        self.save_last = check_bool('CheckpointHook save_last', save_last)
        self.out_dir = out_dir
        self.max_keep_ckpts = max_keep_ckpts
        self.file_client_args = file_client_args
        self.backend_args = backend_args
        self.save_begin = check_int('CheckpointHook save_begin', save_begin, minimum=0)
        if filename_tmpl is None:
            filename_tmpl = 'epoch_{}.pth' if by_epoch else 'iter_{}.pth'
        if not isinstance(filename_tmpl, str) or filename_tmpl.count('{}') != 1 or \
                not _formats(filename_tmpl):
            raise ValueError(f"CheckpointHook filename_tmpl must hold one '{{}}' for the "
                             f"epoch or iteration, e.g. 'epoch_{{}}.pth', but got "
                             f'{filename_tmpl!r}')
        self.filename_tmpl = filename_tmpl
        self.published_keys = _str_list('published_keys', published_keys)
        self.greater_keys = _str_list('greater_keys', greater_keys)
        self.less_keys = _str_list('less_keys', less_keys)

        keys = _str_list('save_best', save_best)
        if keys is not None and 'auto' in keys and len(keys) > 1:
            raise ValueError(f"CheckpointHook save_best='auto' picks the first metric; it "
                             f'cannot be listed with other keys, but got {save_best!r}')
        rules = [rule] if rule is None or isinstance(rule, str) else _str_list('rule', rule)
        if keys is not None and len(rules) not in (1, len(keys)):
            raise ValueError(f'CheckpointHook rule must be one rule or one per save_best key '
                             f'({len(keys)}), but got {rule!r}')
        for one in rules:
            if one is not None:
                check_choice('CheckpointHook rule', one, RULES)
        self.save_best = (keys[0] if keys is not None and len(keys) == 1 else keys)
        self.key_indicators: list[str] = keys or []
        rules = rules * len(self.key_indicators) if len(rules) == 1 else rules
        # Known now: fail before training, not after the first (maybe long) epoch.
        self.rules: list[str | None] = [
            r if r is not None or key == 'auto' else self._infer(key)
            for key, r in zip(self.key_indicators, rules)]
        self.best_score: dict[str, float] = {}
        self.best_path: dict[str, Path] = {}
        self.keep_ckpt_ids: list[int] = []
        self.last_ckpt: Path | None = None
        self._dir: Path | None = None

    @property
    def rule(self) -> str | None:
        """The rule of the (first) ``save_best`` key (``None`` for ``'auto'`` until known)."""
        return self.rules[0] if self.rules else None

    def _infer(self, key: str) -> str:
        return infer_rule(key, self.greater_keys, self.less_keys)

    # -- names in the message hub (MMEngine's) -----------------------------------------
    def _hub_keys(self, key: str) -> tuple[str, str]:
        if len(self.key_indicators) == 1:
            return 'best_score', 'best_ckpt'
        return f'best_score_{key}', f'best_ckpt_{key}'

    def before_train(self, runner) -> None:
        work_dir = Path(runner.work_dir)
        self._dir = work_dir if self.out_dir is None else Path(self.out_dir) / work_dir.name
        hub = runner.message_hub
        for key in self.key_indicators:
            score_key, path_key = self._hub_keys(key)
            if hub.get_info(score_key) is not None:
                self.best_score[key] = hub.get_info(score_key)
            if hub.get_info(path_key):
                self.best_path[key] = Path(hub.get_info(path_key))
        if self.max_keep_ckpts > 0:
            self.keep_ckpt_ids = list(hub.get_info('keep_ckpt_ids') or [])
            while len(self.keep_ckpt_ids) > self.max_keep_ckpts:
                self._remove(self._dir / self.filename_tmpl.format(self.keep_ckpt_ids.pop(0)))

    # -- periodic and last checkpoints -------------------------------------------------
    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        if self.every_n_epochs(runner, self.interval, self.save_begin) or (
                self.save_last and self.is_last_train_epoch(runner)):
            self._save_periodic(runner, runner.epoch + 1)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        if self.by_epoch:
            return
        if self.every_n_train_iters(runner, self.interval, self.save_begin) or (
                self.save_last and self.is_last_train_iter(runner)):
            self._save_periodic(runner, runner.iter + 1)

    def _save_periodic(self, runner, step: int) -> Path:
        dropped: list[int] = []
        if self.max_keep_ckpts > 0:
            # In the checkpoint's message hub before it is written: a resumed run knows
            # which files it keeps (MMEngine's 'keep_ckpt_ids').
            if not self.keep_ckpt_ids or self.keep_ckpt_ids[-1] != step:
                self.keep_ckpt_ids.append(step)
            while len(self.keep_ckpt_ids) > self.max_keep_ckpts:
                dropped.append(self.keep_ckpt_ids.pop(0))
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        path = runner.save_checkpoint(self._dir, self.filename_tmpl.format(step),
                                      save_optimizer=self.save_optimizer,
                                      save_param_scheduler=self.save_param_scheduler)
        self.last_ckpt = path
        runner.message_hub.update_info('last_ckpt', str(path))
        if self.max_keep_ckpts > 0:
            self._remove_older_by_name()
            for old in dropped:
                self._remove(self._dir / self.filename_tmpl.format(old))
        return path

    def _remove_older_by_name(self) -> None:
        """Remove the periodic files of earlier runs in this folder beyond ``max_keep_ckpts``.

        A run killed between writing a checkpoint and removing the oldest one leaves it
        behind, and the run that resumes does not list it (MMEngine keeps such files);
        they are found by name, walking back ``interval`` at a time from the oldest file
        kept, until a name is missing.
        """
        if self.interval <= 0 or not self.keep_ckpt_ids:
            return
        # Here, not at the top: fengine.runner imports the hooks.
        from ..runner.sharded_checkpoint import checkpoint_dir_name, is_sharded_checkpoint

        step = self.keep_ckpt_ids[0] - self.interval
        while step > 0:
            old = self._dir / self.filename_tmpl.format(step)
            if not (old.exists() or is_sharded_checkpoint(
                    old.with_name(checkpoint_dir_name(old.name)))):
                break
            self._remove(old)
            step -= self.interval

    @staticmethod
    def _remove(path: Path) -> None:
        """Remove a checkpoint file, or the sharded checkpoint directory it stands for
        (``epoch_3.pth`` -> ``epoch_3/``)."""
        from ..runner.sharded_checkpoint import remove_checkpoint

        if is_main_process():
            remove_checkpoint(path)

    # -- best checkpoints --------------------------------------------------------------
    def after_val_epoch(self, runner, metrics: dict[str, Any] | None = None) -> None:
        if not self.key_indicators or not runner.train_loop_built:
            return
        if not metrics:
            runner.logger.warning('CheckpointHook save_best: the validation returned no '
                                  'metrics, so no best checkpoint is considered')
            return
        if self.key_indicators == ['auto']:
            first = next(iter(metrics))
            self.key_indicators = [first]
            self.rules = [self.rules[0] or self._infer(first)]
            if 'auto' in self.best_score:
                self.best_score[first] = self.best_score.pop('auto')
        count = runner.epoch if self.by_epoch else runner.iter
        unit = 'epoch' if self.by_epoch else 'iter'
        updated = False
        for key, rule in zip(self.key_indicators, self.rules):
            if key not in metrics:
                raise KeyError(f'CheckpointHook save_best={self.save_best!r}: the validation '
                               f'metrics have no key {key!r}{suggest(key, metrics)}; they have '
                               f'{choices_text(metrics)}')
            score = float(metrics[key])
            best = self.best_score.get(key)
            if not math.isfinite(score) or (best is not None and not (
                    score > best if rule == 'greater' else score < best)):
                continue
            updated = True
            self._save_best(runner, key, score, count, unit)
        if updated and self.last_ckpt is not None and \
                self.last_ckpt.name == self.filename_tmpl.format(count):
            # The periodic checkpoint of this very step was written before this
            # validation: written again, it holds the new best score, so a run resumed
            # from it compares with the right best (MMEngine writes it again too).
            self._save_periodic(runner, count)

    def _save_best(self, runner, key: str, score: float, count: int, unit: str) -> None:
        score_key, path_key = self._hub_keys(key)
        previous = self.best_path.get(key)
        self.best_score[key] = score
        runner.message_hub.update_info(score_key, score)
        name = f'best_{key}_{self.filename_tmpl.format(count)}'.replace('/', '_')
        path = self._dir / name
        runner.message_hub.update_info(path_key, str(path))
        pointer = Path(runner.work_dir) / 'last_checkpoint'
        last = pointer.read_text() if pointer.is_file() else None
        path = runner.save_checkpoint(self._dir, name, save_optimizer=False,
                                      save_param_scheduler=False)
        if is_main_process():
            # A best checkpoint (no optimizer) is not one to resume from: the pointer
            # keeps naming the last periodic checkpoint, as in MMEngine.
            if last is not None:
                from .._io import write_text_atomic

                write_text_atomic(pointer, last)
            elif pointer.is_file():
                pointer.unlink()
        self.best_path[key] = path
        if previous is not None and previous != path:
            self._remove(previous)
        runner.logger.info(f'The best checkpoint with {score:.4f} {key} at {count} {unit} '
                           f'is saved to {name}.')

    # -- publishing --------------------------------------------------------------------
    def after_train(self, runner) -> None:
        if self.published_keys is None:
            return
        paths = list(self.best_path.values())
        if self.save_last and self.last_ckpt is not None:
            paths.insert(0, self.last_ckpt)
        for path in paths:
            self._publish(runner, path)

    def _publish(self, runner, path: Path) -> Path | None:
        """Write ``<name>-<sha256[:8]>.pth`` with only the published keys of ``path``.

        A sharded checkpoint (a directory) is consolidated: the file holds whole tensors.
        """
        if not is_main_process():
            return None
        from .._io import atomic_write
        from ..checkpoint import load_checkpoint_file
        from ..runner.sharded_checkpoint import load_consolidated

        checkpoint = load_consolidated(path) if path.is_dir() else \
            load_checkpoint_file(os.fspath(path))
        missing = [k for k in self.published_keys if k not in checkpoint]
        if missing:
            raise KeyError(f'CheckpointHook published_keys names {missing}'
                           f'{suggest(missing[0], checkpoint)}, which {path.name} does not '
                           f'hold; it holds {choices_text(checkpoint)}')
        removed = sorted(set(checkpoint) - set(self.published_keys))
        published = {k: checkpoint[k] for k in self.published_keys}
        buffer = io.BytesIO()
        torch.save(published, buffer)
        data = buffer.getvalue()
        # The hash of the file itself, so `sha256sum` checks the name.
        digest = hashlib.sha256(data).hexdigest()[:8]
        target = path.with_name(f'{path.stem}-{digest}.pth')
        atomic_write(target, lambda file: file.write(data))
        runner.logger.info(f'The checkpoint {path.name} is published to {target.name} '
                           f'(without {", ".join(removed) or "nothing"}).')
        return target
