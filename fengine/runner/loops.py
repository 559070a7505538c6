"""Training, validation and test loops (MMEngine: ``mmengine.runner.loops``).

A loop owns its counters and calls the runner's hooks at each point; the model's
``train_step``/``val_step``/``test_step`` do the work (eager or compiled: the loop
does not care). Log values stay tensors: the RuntimeInfoHook hands them to the
message hub, which reads them once per log line.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from .._errors import check_int
from ..registry import LOOPS
from .data import set_sampler_epoch
from .randomness import get_rng_state, rng_state_kept, set_rng_state

__all__ = ['EpochBasedTrainLoop', 'IterBasedTrainLoop', 'ValLoop', 'TestLoop']

# An iteration-based run reads its queued log values at least this often, so the
# queue stays small when no LoggerHook reads it.
_SYNC_EVERY = 1000


def _check_positive(name: str, value: Any, loop: str) -> int:
    return check_int(f'{loop}: {name}', value, minimum=1, accepted='a positive int')


def _batches(dataloader: DataLoader, what: str) -> Iterator[Any]:
    try:
        length = len(dataloader)
    except TypeError:
        length = None
    if length == 0:
        raise ValueError(f'the {what} dataloader is empty (len 0): check its dataset and '
                         'batch_size/drop_last')
    return iter(dataloader)


class _TrainLoop:
    by_epoch: bool

    def __init__(self, runner, dataloader: DataLoader) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self._epoch = 0
        self._iter = 0
        self._phase: str | None = None  # 'iter' or 'epoch' while their after-hooks run
        self.stop_training = False
        # The random states when the current pass over the dataloader began (saved in
        # checkpoints), and those a resumed run must begin its interrupted pass with.
        self.pass_rng: dict | None = None
        self.resume_pass_rng: dict | None = None

    def _start_pass(self, skip: int = 0) -> Iterator[Any]:
        """``iter(dataloader)``, advanced by ``skip`` batches, as the uninterrupted run had it.

        Creating the iterator draws random numbers (the workers' base seed; a
        ``RandomSampler``'s order), and so may loading the batches (random
        augmentations). To resume in the middle of a pass, the iterator is created and
        the seen batches are skipped under the random states the interrupted run had
        when the pass began; then the checkpoint's own states come back. The skipped
        batches are loaded (not just their indices skipped), so per-sample randomness
        matches too. Without those states (a fresh pass, or a checkpoint that lacks
        them) the current states are used, and advance.
        """
        replay = self.resume_pass_rng if skip else None
        self.resume_pass_rng = None
        with contextlib.nullcontext() if replay is None else rng_state_kept():
            if replay is not None:
                set_rng_state(replay)
            pass_rng = get_rng_state() if replay is None else replay
            iterator = _batches(self.dataloader, 'training')
            for _ in range(skip):
                next(iterator)
        self.pass_rng = pass_rng
        return iterator

    def position(self, epoch: int, iteration: int) -> int:
        """The batches of its current pass over the dataloader a run at ``epoch`` and
        ``iteration`` (completed) has trained on: the batches a resumed run skips."""
        length = len(self.dataloader)
        return iteration - epoch * length if self.by_epoch else iteration % length

    def check_restore(self, epoch: int, iteration: int, *, source: str = 'the checkpoint',
                      written_position: int | None = None) -> None:
        """Raise ``ValueError`` if :meth:`restore` could not continue at these counters.

        A pass cannot be resumed at a batch the dataloader does not have: its length
        changed since the checkpoint (another ``batch_size``, dataset or number of
        processes), and an epoch-based loop would skip a negative number of batches or
        all of them (and more). Changes nothing.

        Args:
            epoch, iteration: The checkpoint's counters.
            source: Names the checkpoint in the message.
            written_position: The position the checkpoint recorded (its
                ``dataloader_position``), named in the message when given.
        """
        length = len(self.dataloader)
        skip = self.position(epoch, iteration)
        if 0 <= skip < length:
            return
        written = '' if written_position is None else \
            f', after batch {written_position} of its pass over the training data'
        raise ValueError(
            f'{source} was written at iteration {iteration} (epoch {epoch}){written}: '
            f'resuming would skip {skip} batches of the training dataloader, which has '
            f'{length} batches now (a skip must be 0 to {length - 1}). The dataloader '
            'changed since the checkpoint (batch_size, dataset, drop_last or the number of '
            'processes): resume with the settings of the checkpoint\'s run, or start a '
            'new run from its weights with load_from=. Nothing was changed.')

    def restore(self, epoch: int, iteration: int, pass_rng: dict | None = None) -> None:
        """Continue from a checkpoint's counters (MMEngine sets ``_epoch``/``_iter``).

        Args:
            epoch, iteration: The checkpoint's ``meta.epoch`` and ``meta.iter``.
            pass_rng: The random states when the interrupted pass began (the
                checkpoint's ``meta.pass_rng``): the pass is replayed from its start
                under them (see :meth:`_start_pass`).

        Raises:
            ValueError: see :meth:`check_restore`; nothing is changed then.
        """
        self.check_restore(epoch, iteration)
        self._epoch, self._iter = int(epoch), int(iteration)
        self.resume_pass_rng = pass_rng

    def _validate(self) -> None:
        # Validation must not move the training's random streams: a run resumed from
        # the checkpoint written just before it would not replay its draws.
        with rng_state_kept():
            self.runner.val_loop.run()

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def iter(self) -> int:
        return self._iter

    @property
    def max_iters(self) -> int:
        return self._max_iters  # set by each loop: given, or epochs times batches

    def progress(self) -> tuple[int, int]:
        """``(epochs, iterations)`` completed, counting one whose after-hooks are running."""
        if self._phase == 'iter':
            return self._epoch, self._iter + 1
        if self._phase == 'epoch' and self.by_epoch:
            return self._epoch + 1, self._iter
        return self._epoch, self._iter

    def run_iter(self, idx: int, data_batch: Any) -> None:
        runner = self.runner
        runner.call_hook('before_train_iter', batch_idx=idx, data_batch=data_batch)
        outputs = runner.model.train_step(data_batch, optim_wrapper=runner.optim_wrapper)
        if not isinstance(outputs, dict):
            raise TypeError(f'{type(runner.model).__name__}.train_step must return a dict of '
                            f'log values, but returned {type(outputs).__name__}')
        self._phase = 'iter'
        try:
            runner.call_hook('after_train_iter', batch_idx=idx, data_batch=data_batch,
                             outputs=outputs)
        finally:
            self._phase = None
        self._iter += 1

    def _should_validate(self, count: int) -> bool:
        """MMEngine's rule: from ``val_begin`` on, every ``val_interval``, and at the end."""
        loop = self.runner.val_loop_or_none
        last = self.max_epochs if self.by_epoch else self.max_iters
        return (loop is not None and count >= self.val_begin
                and (count % self.val_interval == 0 or count == last))


@LOOPS.register_module()
class EpochBasedTrainLoop(_TrainLoop):
    """Train for ``max_epochs`` epochs, validating every ``val_interval`` epochs.

    MMEngine: ``EpochBasedTrainLoop``.
    """

    by_epoch = True

    def __init__(self, runner, dataloader: DataLoader, max_epochs: int, val_begin: int = 1,
                 val_interval: int = 1) -> None:
        super().__init__(runner, dataloader)
        self._max_epochs = _check_positive('max_epochs', max_epochs, 'EpochBasedTrainLoop')
        self.val_begin = _check_positive('val_begin', val_begin, 'EpochBasedTrainLoop')
        self.val_interval = _check_positive('val_interval', val_interval,
                                            'EpochBasedTrainLoop')
        self._max_iters = self._max_epochs * len(dataloader)

    @property
    def max_epochs(self) -> int:
        return self._max_epochs

    def run(self):
        runner = self.runner
        runner.call_hook('before_train')
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            if self._should_validate(self._epoch):
                self._validate()
        runner.call_hook('after_train')
        return runner.model

    def run_epoch(self) -> None:
        runner = self.runner
        runner.call_hook('before_train_epoch')
        runner.model.train()
        # Resuming mid-epoch (an iteration-based checkpoint): skip the batches seen.
        skip = self.position(self._epoch, self._iter)
        for idx, data_batch in enumerate(self._start_pass(skip), start=skip):
            self.run_iter(idx, data_batch)
        runner.message_hub.sync()  # checks the epoch's last losses before any checkpoint
        self._phase = 'epoch'
        try:
            runner.call_hook('after_train_epoch')
        finally:
            self._phase = None
        self._epoch += 1


class _InfiniteBatches:
    """Cycle through a loop's dataloader forever, calling ``set_epoch`` at each pass.

    Resuming at iteration ``iteration`` starts in pass ``iteration // len(dataloader)``
    at its batch ``loop.position(...)`` (see :meth:`_TrainLoop._start_pass`).
    """

    def __init__(self, loop: _TrainLoop, iteration: int = 0) -> None:
        self.loop = loop
        self.dataloader = loop.dataloader
        self.length = len(self.dataloader)
        self.epoch = iteration // self.length
        self._set_epoch()
        self._iterator = loop._start_pass(loop.position(self.epoch, iteration))

    def _set_epoch(self) -> None:
        set_sampler_epoch(self.dataloader, self.epoch)

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except StopIteration:
            self.epoch += 1
            self._set_epoch()
            self._iterator = self.loop._start_pass()
            return next(self._iterator)


@LOOPS.register_module()
class IterBasedTrainLoop(_TrainLoop):
    """Train for ``max_iters`` iterations, validating every ``val_interval`` iterations.

    MMEngine: ``IterBasedTrainLoop``. The dataloader is cycled; its sampler gets a
    new epoch at every pass.
    """

    by_epoch = False

    def __init__(self, runner, dataloader: DataLoader, max_iters: int, val_begin: int = 1,
                 val_interval: int = 1000) -> None:
        super().__init__(runner, dataloader)
        self._max_iters = _check_positive('max_iters', max_iters, 'IterBasedTrainLoop')
        self.val_begin = _check_positive('val_begin', val_begin, 'IterBasedTrainLoop')
        self.val_interval = _check_positive('val_interval', val_interval, 'IterBasedTrainLoop')

    @property
    def max_epochs(self) -> int:
        return -(-self._max_iters // len(self.dataloader))

    def run(self):
        runner = self.runner
        runner.call_hook('before_train')
        runner.call_hook('before_train_epoch')
        runner.model.train()
        batches = _InfiniteBatches(self, self._iter)
        while self._iter < self._max_iters and not self.stop_training:
            data_batch = next(batches)
            self._epoch = batches.epoch  # after next(): it may have begun a new pass
            self.run_iter(self._iter % batches.length, data_batch)
            if self._iter % _SYNC_EVERY == 0:
                runner.message_hub.sync()
            if self._should_validate(self._iter):
                self._validate()
                runner.model.train()
        runner.message_hub.sync()
        runner.call_hook('after_train_epoch')
        runner.call_hook('after_train')
        return runner.model


class _EvalLoop:
    mode: str

    def __init__(self, runner, dataloader: DataLoader, evaluator, fp16: bool = False) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self.evaluator = evaluator
        self.fp16 = bool(fp16)
        self.last_metrics: dict = {}
        dataset = getattr(dataloader, 'dataset', None)
        if dataset is not None and hasattr(dataset, 'metainfo'):
            evaluator.dataset_meta = dataset.metainfo

    def run(self) -> dict:
        runner, mode = self.runner, self.mode
        runner.call_hook(f'before_{mode}')
        runner.call_hook(f'before_{mode}_epoch')
        runner.model.eval()
        for idx, data_batch in enumerate(self._progress(_batches(self.dataloader, mode))):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(_dataset_size(self.dataloader))
        if not isinstance(metrics, dict):
            raise TypeError(f'the {mode} evaluator must return a dict of metrics, but '
                            f'returned {type(metrics).__name__}: {metrics!r}')
        self.last_metrics = metrics
        runner.call_hook(f'after_{mode}_epoch', metrics=metrics)
        runner.call_hook(f'after_{mode}')
        return metrics

    def run_iter(self, idx: int, data_batch: Any) -> None:
        runner, mode = self.runner, self.mode
        runner.call_hook(f'before_{mode}_iter', batch_idx=idx, data_batch=data_batch)
        with self._autocast():
            step = runner.model.val_step if mode == 'val' else runner.model.test_step
            outputs = step(data_batch)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        runner.call_hook(f'after_{mode}_iter', batch_idx=idx, data_batch=data_batch,
                         outputs=outputs)

    def _autocast(self):
        if not self.fp16:
            return contextlib.nullcontext()
        device = self.runner.device
        # fp16 on CUDA as MMEngine; CPU autocast is made for bf16.
        dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _progress(self, batches: Iterable[Any]) -> Iterable[Any]:
        """A progress bar on a terminal (rank 0), nothing in logs and pipes."""
        if not (sys.stdout.isatty() and self.runner.rank == 0):
            return batches
        from tqdm import tqdm

        return tqdm(batches, total=len(self.dataloader), desc=self.mode, leave=False,
                    dynamic_ncols=True)


def _dataset_size(dataloader: DataLoader) -> int:
    dataset = getattr(dataloader, 'dataset', None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return len(dataloader) * (dataloader.batch_size or 1)


@LOOPS.register_module()
class ValLoop(_EvalLoop):
    """One pass over the validation data, then the evaluator (MMEngine: ``ValLoop``).

    ``fp16=True`` runs the steps under autocast: float16 on CUDA, bfloat16 on CPU.
    """

    mode = 'val'


@LOOPS.register_module()
class TestLoop(_EvalLoop):
    """One pass over the test data, then the evaluator (MMEngine: ``TestLoop``)."""

    mode = 'test'
