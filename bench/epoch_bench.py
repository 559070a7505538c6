"""End to end: one epoch of the FashionMNIST example of MMEngine's tutorial 'Model'.

The tutorial's code (``NeuralNetwork``, ``FashionMnistMetric`` and the ``Runner`` call of
``examples/fashion_mnist.py``), on ``SyntheticFashionMNIST`` (60000 training and
10000 validation images of the real size, made offline) through
``DataLoader(batch_size=64)``, with ``randomness=dict(seed=0)``, a temporary
``work_dir`` and the default hooks (a log line every 10 iterations, a checkpoint
after each epoch). Three contenders:

- ``mmengine runner``: ``mmengine.runner.Runner`` with the tutorial's code verbatim
  (``mmengine`` imports), ``val_cfg=dict(fp16=True)``. If MMEngine's fp16 validation
  fails on the CPU, the run is repeated with ``val_cfg=dict()`` and the row says so.
- ``fengine eager``: ``fengine.Runner`` with the same code and ``compile=False``.
- ``fengine compiled``: the same with ``compile=True`` (inductor; the training step
  is one compiled graph, the validation step compiled with graph breaks allowed). The
  baseline of the ratios.

Each run is a fresh interpreter with an empty inductor cache (:func:`bench_epoch`),
so that compile times are a user's first run and peak memory is the process's own.
What is timed is ``runner.train()``: weight initialization, the training epoch (and
in it, for the compiled contender, compilation), the validation pass after it,
logging and checkpoints. Building the ``Runner`` is timed apart, and making the data
not at all. Two hooks (priority ``HIGHEST`` and ``LOWEST``, so that they enclose
every other hook) read the clock at ``before_train_epoch``/``after_train_epoch`` and
``before_val``/``after_val``, which splits the run into training and validation.

Two measurements per contender, each in its own process:

- ``fashion-mnist 1 epoch``: ``max_epochs=1``; the row's time is the whole
  ``runner.train()``, what a user waits for.
- ``fashion-mnist epoch 2``: ``max_epochs=2``; the row's time is the second epoch
  (its training and validation), when everything is compiled: the steady state. The
  first epoch's time minus this is roughly the one-time cost (compilation, warm-up).

The final validation accuracy shows that the contenders learn the same thing; peak
memory is the process's peak RSS (``VmHWM``: imports, data, compilation, training).
"""
from __future__ import annotations

import ast
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

from .init_bench import set_ratios
from .step_bench import WorkerError as _StepWorkerError
from .step_bench import (_cpu_times, _failed, _peak_rss, _proc_status, _short, _steal,
                         mmengine_available)

__all__ = ['CONTENDERS', 'BASELINE', 'TRAIN_SIZE', 'VAL_SIZE', 'BATCH_SIZE', 'bench_epoch',
           'run_contender']

CONTENDERS = ('mmengine runner', 'fengine eager', 'fengine compiled')
BASELINE = 'fengine compiled'
# Ratios fall back to this contender where the baseline failed.
FALLBACK_BASELINE = 'fengine eager'
SKIPPED = 'skipped (not installed)'
TRAIN_SIZE, VAL_SIZE = 60000, 10000  # the real FashionMNIST splits
BATCH_SIZE = 64  # the tutorial's
SEED = 0
STEAL_NOTE = 0.05  # a row says how much CPU time the hypervisor took, from this share
OTHERS_NOTE = 0.10  # ... and how much other processes of this machine took, from this share
MODELS = {1: 'fashion-mnist 1 epoch', 2: 'fashion-mnist epoch 2'}


# -- the tutorial's code, under either engine -----------------------------------------
# The tutorial's classes, as the README's main job (examples/fashion_mnist.py) imports them.
EXAMPLE = Path(__file__).resolve().parents[1] / 'examples' / 'fashion_mnist_model.py'


def _seed_code(engine: str) -> tuple[type, type, type, type]:
    """``(Runner, NeuralNetwork, FashionMnistMetric, Hook)`` of ``engine``.

    The two classes are ``examples/fashion_mnist_model.py``'s, the tutorial's verbatim
    (the README's main job); for MMEngine their source is run again over MMEngine's
    base classes.
    """
    # Imported under its one name, as the example does: a second copy of the module
    # would register its classes twice.
    if str(EXAMPLE.parent) not in sys.path:
        sys.path.insert(0, str(EXAMPLE.parent))
    import fashion_mnist_model as example
    if engine != 'mmengine':
        from fengine import Runner
        from fengine.hooks import Hook
        return Runner, example.NeuralNetwork, example.FashionMnistMetric, Hook
    from mmengine.evaluator import BaseMetric
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    text = EXAMPLE.read_text()
    source = '\n\n'.join(ast.get_source_segment(text, node) for node in ast.parse(text).body
                          if isinstance(node, ast.ClassDef)
                          and node.name in ('NeuralNetwork', 'FashionMnistMetric'))
    namespace = dict(nn=example.nn, BaseModel=BaseModel, BaseMetric=BaseMetric)
    exec(compile(source, str(EXAMPLE), 'exec'), namespace)  # noqa: S102  our own example
    return Runner, namespace['NeuralNetwork'], namespace['FashionMnistMetric'], Hook


def _clock_hooks(Hook: type, record: dict) -> tuple[Any, Any]:
    """Two hooks that read the clock around every other hook, writing into ``record``.

    ``record['train']`` and ``record['val']`` get one ``[start, end]`` per epoch,
    ``record['metrics']`` the last validation metrics, ``record['phase']`` is
    ``'val'`` while a validation pass runs (so a failure can be placed).
    """
    record.update(train=[], val=[], metrics=None, phase='train')

    class Start(Hook):
        priority = 'HIGHEST'

        def before_train_epoch(self, runner) -> None:
            record['train'].append([time.perf_counter(), None])

        def before_val(self, runner) -> None:
            record['phase'] = 'val'
            record['val'].append([time.perf_counter(), None])

    class End(Hook):
        priority = 'LOWEST'

        def after_train_epoch(self, runner) -> None:
            record['train'][-1][1] = time.perf_counter()

        def after_val_epoch(self, runner, metrics=None) -> None:
            record['metrics'] = metrics

        def after_val(self, runner) -> None:
            record['val'][-1][1] = time.perf_counter()
            record['phase'] = 'train'

    return Start(), End()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _compile_fell_back(model: Any) -> bool:
    """Whether a fengine compiled training step gave up compiling and ran eagerly."""
    model = getattr(model, 'module', model)
    steps = (getattr(model, '_compiled_steps', None) or {}).get('train', {})
    return any(getattr(step, '_fell_back', False) for step in steps.values())


def run_contender(contender: str, *, epochs: int = 1, train_size: int = TRAIN_SIZE,
                  val_size: int = VAL_SIZE, compile_backend: str | None = None,
                  val_fp16: bool = True, work_dir: str | os.PathLike | None = None,
                  record: dict | None = None) -> dict:
    """Build the tutorial's ``Runner`` of ``contender`` and time its ``train()``, in this process.

    Args:
        contender: Name in :data:`CONTENDERS`.
        epochs: ``max_epochs``.
        train_size, val_size: Images of the synthetic splits.
        compile_backend: ``torch.compile`` backend of ``fengine compiled`` (default:
            inductor); tests use ``'aot_eager'``.
        val_fp16: ``val_cfg=dict(fp16=True)`` as the tutorial, or ``dict()``.
        work_dir: Where logs and checkpoints go (default: a temporary directory,
            removed afterwards).
        record: A dict to fill as the run goes (the clock hooks' record), so that a
            caller can tell where a failure happened.

    Returns:
        ``seconds`` (``runner.train()``), ``build_seconds`` (the ``Runner``'s
        construction), ``train_seconds`` and ``val_seconds`` (one per epoch: the
        training epoch and the validation pass after it, hooks included),
        ``epoch_seconds`` (one per epoch: from the start of its training to the end
        of its validation), ``accuracy`` and ``val_loss`` (the last validation's), ``params``,
        ``base_rss_bytes`` (before the ``Runner`` was built), ``peak_rss_bytes`` (the
        process's high-water mark), ``warnings`` (the distinct warnings raised during
        ``train()``) and ``compile_fell_back``.
    """
    import torch
    from torch.utils.data import DataLoader
    from torchvision.transforms import ToTensor

    from fengine.datasets import SyntheticFashionMNIST

    if contender not in CONTENDERS:
        raise ValueError(f'unknown contender {contender!r}; choose one of {CONTENDERS}')
    engine = 'mmengine' if contender.startswith('mmengine') else 'fengine'
    Runner, NeuralNetwork, FashionMnistMetric, Hook = _seed_code(engine)
    training_data = SyntheticFashionMNIST(train=True, size=train_size, transform=ToTensor())
    test_data = SyntheticFashionMNIST(train=False, size=val_size, transform=ToTensor())
    train_dataloader = DataLoader(dataset=training_data, batch_size=BATCH_SIZE)
    test_dataloader = DataLoader(dataset=test_data, batch_size=BATCH_SIZE)

    clock = {} if record is None else record
    start_hook, end_hook = _clock_hooks(Hook, clock)
    options: dict = {}
    if contender == 'fengine compiled':
        options['compile'] = dict(backend=compile_backend) if compile_backend else True
    elif contender == 'fengine eager':
        options['compile'] = False
    base_rss = _proc_status('VmRSS')
    temporary = work_dir is None
    work_dir = tempfile.mkdtemp(prefix='fengine-epoch-bench-') if temporary else work_dir
    try:
        # The seed builds the model before the Runner seeds anything; fix the weights
        # it is built with, so that every run starts from the same ones.
        torch.manual_seed(SEED)
        start = time.perf_counter()
        runner = Runner(
            model=NeuralNetwork(),
            work_dir=str(work_dir),
            train_dataloader=train_dataloader,
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
            train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=1),
            val_cfg=dict(fp16=True) if val_fp16 else dict(),
            val_dataloader=test_dataloader,
            val_evaluator=dict(metrics=FashionMnistMetric()),
            custom_hooks=[start_hook, end_hook],
            randomness=dict(seed=SEED),
            **options)
        build_seconds = time.perf_counter() - start
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('default')  # each distinct warning once
            start = time.perf_counter()
            runner.train()
            seconds = time.perf_counter() - start
    finally:
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
    metrics = clock['metrics'] or {}
    epoch_seconds = [val[1] - train[0] for train, val in zip(clock['train'], clock['val'])]
    distinct = dict.fromkeys(f'{w.category.__name__}: {str(w.message).splitlines()[0]}'[:200]
                             for w in caught)
    return dict(seconds=seconds, build_seconds=build_seconds,
                train_seconds=[end - begin for begin, end in clock['train']],
                val_seconds=[end - begin for begin, end in clock['val']],
                epoch_seconds=epoch_seconds,
                accuracy=_number(metrics.get('Accuracy')),
                val_loss=_number(metrics.get('Avg_loss')),
                params=sum(p.numel() for p in runner.model.parameters()),
                base_rss_bytes=base_rss, peak_rss_bytes=_peak_rss(),
                warnings=list(distinct)[:10],
                compile_fell_back=_compile_fell_back(runner.model))


# -- one run in its own process -----------------------------------------------------------
def _worker(argv: list[str]) -> None:
    """``python -m bench.epoch_bench '<json>'``: one run; writes its result to ``args['out']``.

    On failure the result is ``{'error': <last line>, 'phase': 'train' | 'val'}``.
    """
    args = json.loads(argv[0])
    out = Path(args.pop('out'))
    record: dict = {}
    try:
        result = run_contender(record=record, **args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then re-raised
        lines = traceback.format_exception_only(type(exc), exc)
        out.write_text(json.dumps(dict(error=' '.join(lines[-1].split()),
                                       phase=record.get('phase', 'train'))))
        raise
    out.write_text(json.dumps(result))


class WorkerError(_StepWorkerError):
    """A run failed in its own interpreter; ``phase`` says whether it was validating."""

    def __init__(self, message: str, phase: str = 'train') -> None:
        super().__init__(message)
        self.phase = phase


def _isolated(contender: str, *, epochs: int, train_size: int, val_size: int,
              compile_backend: str | None, val_fp16: bool, device: str) -> dict:
    """:func:`run_contender` in a fresh interpreter with an empty inductor cache.

    Adds ``steal``: the share of the machine's CPU time the hypervisor gave to other
    guests while it ran, and ``others_cpu``: the share of the machine's CPU time that
    other processes of this machine used meanwhile (both ``None`` off Linux). Torch's
    threads wait for each other at every operation, so a process that takes a core
    from them slows the run far more than its share.
    """
    root = Path(__file__).resolve().parents[1]
    scratch = tempfile.mkdtemp(prefix='fengine-epoch-bench-')
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=scratch, TRITON_CACHE_DIR=scratch)
    if device == 'cpu':
        # Both Runners pick CUDA when they see it; the CPU benchmark must not.
        env['CUDA_VISIBLE_DEVICES'] = ''
    out = Path(scratch) / 'result.json'
    args = json.dumps(dict(contender=contender, epochs=epochs, train_size=train_size,
                           val_size=val_size, compile_backend=compile_backend,
                           val_fp16=val_fp16, work_dir=str(Path(scratch) / 'work_dir'),
                           out=str(out)))
    try:
        with tempfile.TemporaryFile('w+') as log:  # the runs' logs; a pipe could fill up
            before, children = _cpu_times(), _children_cpu()
            code = subprocess.run([sys.executable, '-m', 'bench.epoch_bench', args], cwd=root,
                                  env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT).returncode
            after = _cpu_times()
            steal = _steal(before, after)
            others = _others_cpu(before, after, _children_cpu() - children)
            result = json.loads(out.read_text()) if out.exists() else None
            if code != 0 or result is None or 'error' in result:
                if result and 'error' in result:
                    raise WorkerError(result['error'], result.get('phase', 'train'))
                log.seek(0)
                lines = log.read().strip().splitlines() or [f'exit status {code}']
                raise WorkerError(lines[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result['steal'], result['others_cpu'] = steal, others
    return result


def _children_cpu() -> float:
    """User and system CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _others_cpu(before: list[int] | None, after: list[int] | None,
                own_seconds: float) -> float | None:
    """The share of the machine's CPU time between two :func:`_cpu_times` readings that
    went to processes other than the run (``own_seconds`` of CPU time)."""
    if before is None or after is None:
        return None
    deltas = [b - a for a, b in zip(before[:8], after[:8])]
    total = sum(deltas)
    if total <= 0:
        return None
    busy = total - deltas[3] - deltas[4] - deltas[7]  # not idle, iowait, steal
    own = own_seconds * os.sysconf('SC_CLK_TCK')
    return min(max((busy - own) / total, 0.0), 1.0)


# -- every contender ----------------------------------------------------------------------
def _row(contender: str, epochs: int, device: str, train_size: int, val_size: int) -> dict:
    return dict(benchmark='epoch', model=MODELS.get(epochs, f'fashion-mnist epoch {epochs}'),
                contender=contender, device=device, baseline=BASELINE, status='ok',
                seconds=None, times=[], ratio=None, params=None, note='',
                batch_size=BATCH_SIZE, train_size=train_size, val_size=val_size,
                max_epochs=epochs, val_fp16=None, train_seconds=None, val_seconds=None,
                build_seconds=None, accuracy=None, val_loss=None,
                base_rss_bytes=None, peak_rss_bytes=None, steal=None, others_cpu=None, warnings=[],
                train_call_seconds=None, epoch_seconds=[], compile_fell_back=None)


def _fill(row: dict, result: dict, notes: list[str]) -> None:
    """Put a run's result into its row: the time is train() (1 epoch) or the last epoch."""
    row['train_call_seconds'] = result['seconds']
    row['build_seconds'] = result['build_seconds']
    row['epoch_seconds'] = result['epoch_seconds']
    if row['max_epochs'] == 1:
        row['seconds'] = result['seconds']
    elif result['epoch_seconds']:
        row['seconds'] = result['epoch_seconds'][-1]
    else:
        row['status'] = 'failed: no complete epoch was recorded'
    row['times'] = [] if row['seconds'] is None else [row['seconds']]
    row['train_seconds'] = result['train_seconds'][-1] if result['train_seconds'] else None
    row['val_seconds'] = result['val_seconds'][-1] if result['val_seconds'] else None
    for key in ('accuracy', 'val_loss', 'params', 'base_rss_bytes', 'peak_rss_bytes', 'steal',
                'others_cpu', 'warnings', 'compile_fell_back'):
        row[key] = result.get(key)
    if result.get('compile_fell_back'):
        notes.append('compilation failed: the training step ran eagerly')
    if row['accuracy'] is None or not math.isfinite(row['accuracy']):
        notes.append(f"accuracy {row['accuracy']}")
    if (result.get('steal') or 0) >= STEAL_NOTE:
        notes.append(f"CPU time stolen by the hypervisor: {result['steal']:.0%}")
    if (result.get('others_cpu') or 0) >= OTHERS_NOTE:
        notes.append(f"other processes used {result['others_cpu']:.0%} of the CPU")
    row['note'] = '; '.join(notes)


def bench_epoch(device: str = 'cpu', *, train_size: int = TRAIN_SIZE,
                val_size: int = VAL_SIZE, second_epoch: bool = True,
                contenders: list[str] | None = None, compile_backend: str | None = None,
                isolate: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Time the tutorial's FashionMNIST example end to end, every contender; one row each.

    Args:
        device: ``'cpu'`` hides CUDA from the runs (both Runners would pick it);
            ``'cuda'`` lets them use it.
        train_size, val_size: Images of the synthetic splits (the real sizes by
            default; ``python -m bench --quick`` uses 6400 and 1000).
        second_epoch: Also run ``max_epochs=2`` and report the second epoch (rows of
            model ``fashion-mnist epoch 2``): the steady state, compilation done.
        contenders: Names in :data:`CONTENDERS` (default: all).
        compile_backend: ``torch.compile`` backend of ``fengine compiled`` (default:
            inductor).
        isolate: Run each in a fresh interpreter with an empty compile cache (the
            default); ``False`` runs them in this process (no CUDA hiding, and the
            peak RSS is this process's).
        log: Called with a progress line per run.

    Returns:
        Rows as :func:`bench.step_bench.bench_step`'s (``benchmark='epoch'``), whose
        ``seconds`` is ``runner.train()`` with ``max_epochs=1``, or the second epoch
        (training and validation) of ``max_epochs=2``; plus ``train_seconds`` and
        ``val_seconds`` (that epoch's training and validation), ``train_call_seconds``
        (the whole ``train()``), ``build_seconds``, ``epoch_seconds``, ``accuracy``,
        ``val_loss``, ``peak_rss_bytes``, ``base_rss_bytes``, ``val_fp16``, ``steal``,
        ``others_cpu`` (noted in the row from 10%), ``warnings`` and ``compile_fell_back``. ``ratio`` is ``seconds`` over
        ``fengine compiled``'s in the same model group (above 1 is slower).
    """
    device = str(device)
    names = list(CONTENDERS) if contenders is None else contenders
    rows = []
    for epochs in (1, 2) if second_epoch else (1,):
        group = [_row(name, epochs, device, train_size, val_size) for name in names]
        for row in group:
            contender = row['contender']
            if contender.startswith('mmengine') and not mmengine_available():
                row['status'] = SKIPPED
                continue

            def run(val_fp16: bool) -> dict:
                log(f"epoch: {contender}: max_epochs={epochs}, {train_size}/{val_size} "
                    f"images, val fp16={val_fp16}" + (' in a fresh process' if isolate else ''))
                kwargs = dict(epochs=epochs, train_size=train_size, val_size=val_size,
                              compile_backend=compile_backend, val_fp16=val_fp16)
                if isolate:
                    return _isolated(contender, device=device, **kwargs)
                record: dict = {}
                try:
                    return run_contender(contender, record=record, **kwargs)
                except Exception as exc:
                    raise WorkerError(f'{type(exc).__name__}: {exc}',
                                      record.get('phase', 'train')) from exc

            notes: list[str] = []
            try:
                try:
                    row['val_fp16'] = True
                    result = run(True)
                except WorkerError as exc:
                    # The seed asks for fp16 validation; MMEngine may not manage it on
                    # the CPU. Then it runs without, and the row says why.
                    if not (contender.startswith('mmengine') and exc.phase == 'val'):
                        raise
                    log(f'epoch: {contender}: fp16 validation failed ({_short(str(exc))}); '
                        'again with val_cfg=dict()')
                    row['val_fp16'] = False
                    notes.append(f'val_cfg=dict(): fp16 validation failed: {_short(str(exc), 80)}')
                    result = run(False)
            except Exception as exc:  # reported in the table, not hidden
                row['status'] = _failed(exc)
                row['note'] = '; '.join(notes)
                continue
            _fill(row, result, notes)
        set_ratios(group, (BASELINE, FALLBACK_BASELINE))
        rows.extend(group)
    return rows


if __name__ == '__main__':
    _worker(sys.argv[1:])
