"""``Runner``: builds a run from its parts and drives the loops (MMEngine: ``Runner``).

Kept deliberately thin: it validates its arguments, builds what configs describe,
seeds the run, writes the log folder, and hands the work to the loops and hooks.
Everything fast lives in the model's (optionally compiled) steps.
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from .._errors import check_choice, check_keys
from ..checkpoint import load_checkpoint_file, state_dict_from
from ..dist import get_local_rank, get_rank, get_world_size, is_main_process, sync_random_seed
from ..evaluator import build_evaluator
from ..hooks import Hook, get_priority
from ..logging import configure_run_logging
from ..optim import build_optim_wrapper
from ..optim.scheduler import build_param_schedulers
from ..model.wrappers import is_model_wrapper, unwrap_model, wrap_model
from ..registry import HOOKS, LOG_PROCESSORS, LOOPS, MODELS, RUNNERS
from ..visualization import build_visualizer
from .checkpoint_io import LAST_CHECKPOINT, atomic_save, find_last_checkpoint, write_text_atomic
from .data import build_dataloader
from .log_processor import LogProcessor
from .message_hub import MessageHub, NonFiniteLossError
from .randomness import check_seed, get_rng_state, set_random_seed, set_rng_state

__all__ = ['Runner', 'DEFAULT_HOOKS']

# MMEngine's default hooks; ``default_hooks=dict(name=None)`` turns one off.
DEFAULT_HOOKS: dict[str, dict] = {
    'runtime_info': dict(type='RuntimeInfoHook'),
    'timer': dict(type='IterTimerHook'),
    'logger': dict(type='LoggerHook', interval=10),
    'param_scheduler': dict(type='ParamSchedulerHook'),
    'checkpoint': dict(type='CheckpointHook', interval=1),
    'sampler_seed': dict(type='DistSamplerSeedHook'),
}
LAUNCHERS = ('none', 'pytorch')
_RANDOMNESS_KEYS = ('seed', 'deterministic')


def _plain_hyperparams(optimizer_state: dict) -> dict:
    """A copy of an optimizer state dict whose 0-d tensor hyper-parameters are floats.

    A compiled step holds ``lr`` (and Adam's ``betas[0]``) as 0-d float32 tensors on
    the parameters' device (``fengine/func/_optim_state.py``). In a checkpoint they are
    written as the floats they hold (exactly: float32 fits a float), so the file does
    not depend on the device nor on compiled steps; a compiled step that resumes turns
    them into tensors again, with the same bits. Checkpoints written with tensors are
    read the same way.
    """
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
            return value.item()
        if isinstance(value, tuple):
            return tuple(plain(v) for v in value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    groups = optimizer_state.get('param_groups')
    if not isinstance(groups, list):
        return optimizer_state
    state = dict(optimizer_state)
    state['param_groups'] = [{k: (v if k == 'params' else plain(v)) for k, v in group.items()}
                             if isinstance(group, dict) else group for group in groups]
    return state


def _check_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, filename: str) -> None:
    """Raise before loading when ``saved`` cannot be the state of ``optimizer``.

    torch's ``Optimizer.load_state_dict`` checks the group sizes, but not the shapes of
    the per-parameter state (a wrong momentum buffer fails only at the next step).
    """
    groups = saved.get('param_groups') if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(saved.get('state'), dict):
        raise RuntimeError(f'checkpoint {filename!r}: its optimizer entry is not an optimizer '
                           "state dict (no 'state' and 'param_groups'). Nothing was loaded.")
    own = optimizer.param_groups
    sizes = [len(g.get('params', ())) for g in groups]
    if sizes != [len(g['params']) for g in own]:
        raise RuntimeError(f'checkpoint {filename!r}: its optimizer has param groups of sizes '
                           f'{sizes}, this run\'s {type(optimizer).__name__} has '
                           f'{[len(g["params"]) for g in own]}; is the optim_wrapper config '
                           '(paramwise options, frozen parameters) the same? Nothing was loaded.')
    params = {index: param for saved_group, group in zip(groups, own)
              for index, param in zip(saved_group['params'], group['params'])}
    for index, entry in saved['state'].items():
        param = params.get(index)
        if param is None or not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise RuntimeError(
                    f'checkpoint {filename!r}: optimizer state {key!r} of parameter {index} has '
                    f'shape {tuple(value.shape)}, but the parameter has shape '
                    f'{tuple(param.shape)}. Nothing was loaded.')


def _optimizer_state(wrapper: Any) -> dict:
    """What a checkpoint holds of ``wrapper``: plain hyper-parameters, by name for several."""
    if hasattr(wrapper, 'optimizer'):
        return _plain_hyperparams(wrapper.state_dict())
    return {name: _optimizer_state(inner) for name, inner in wrapper.items()}


def _checked_optimizer_state(wrapper: Any, saved: Any, filename: str) -> Any:
    """``saved`` with plain hyper-parameters, after checking that it fits ``wrapper``.

    An ``OptimWrapperDict`` (several optimizers) takes a dict with the same names.
    """
    if hasattr(wrapper, 'optimizer'):
        saved = _plain_hyperparams(saved) if isinstance(saved, dict) else saved
        if isinstance(wrapper.optimizer, torch.optim.Optimizer):
            _check_optimizer_state(wrapper.optimizer, saved, filename)
        return saved
    names = list(wrapper.keys())
    if not isinstance(saved, dict) or sorted(saved) != sorted(names):
        got = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise RuntimeError(f'checkpoint {filename!r} has the optimizers {got}, this run has '
                           f'{sorted(names)}: is the optim_wrapper config the same? Nothing '
                           'was loaded.')
    return {name: _checked_optimizer_state(wrapper[name], saved[name], filename)
            for name in names}


def _scheduler_states(schedulers: Any) -> Any:
    """The schedulers' states: a list, or a dict of lists by optimizer name."""
    if isinstance(schedulers, dict):
        return {name: _scheduler_states(inner) for name, inner in schedulers.items()}
    return [scheduler.state_dict() for scheduler in schedulers]


def _scheduler_pairs(schedulers: Any, saved: Any, filename: str) -> list[tuple[Any, Any]]:
    """``(scheduler, its saved state)`` for every scheduler, after checking the types match."""
    if saved is None:
        return []
    if isinstance(schedulers, dict):
        if not isinstance(saved, dict) or sorted(saved) != sorted(schedulers):
            got = sorted(saved) if isinstance(saved, dict) else 'one list'
            raise RuntimeError(f'checkpoint {filename!r} has schedulers for {got}, this run '
                               f'for {sorted(schedulers)}: the param_scheduler config differs '
                               "from the checkpoint's. Nothing was loaded.")
        return [pair for name in schedulers
                for pair in _scheduler_pairs(schedulers[name], saved[name], filename)]
    saved_types = [s.get('type') if isinstance(s, dict) else None for s in saved]
    own_types = [getattr(getattr(s, 'scheduler_cls', None), '__name__', None)
                 for s in schedulers]
    if len(saved_types) != len(own_types) or any(
            a is not None and b is not None and a != b for a, b in zip(saved_types, own_types)):
        raise RuntimeError(f'checkpoint {filename!r} has the schedulers {saved_types}, '
                           f'this run has {own_types}: the param_scheduler config '
                           'differs from the checkpoint\'s. Nothing was loaded.')
    return list(zip(schedulers, saved))


def _check_resume(resume: Any, load_from: Any) -> None:
    """Refuse a ``resume`` path and a ``load_from`` naming another file.

    ``resume=True`` resumes from ``load_from``; with a path as well, one of the two
    would be silently ignored.
    """
    if load_from is None or not isinstance(resume, (str, os.PathLike)):
        return
    if Path(resume).expanduser().resolve() != Path(load_from).expanduser().resolve():
        raise ValueError(f'resume={os.fspath(resume)!r} and load_from={os.fspath(load_from)!r} '
                         'name different checkpoints: pass resume=True to resume from '
                         'load_from, or only one of them')


@RUNNERS.register_module()
class Runner:
    """Train, validate and test a model (MMEngine: ``mmengine.runner.Runner``).

    Args:
        model: A :class:`~fengine.model.BaseModel` or a ``MODELS`` config. It is moved
            to CUDA when available, else kept on the CPU.
        work_dir: Where checkpoints and ``<timestamp>/`` (log, ``vis_data/``) go.
        train_dataloader, val_dataloader, test_dataloader: ``DataLoader`` instances
            or dicts (see :func:`~fengine.runner.data.build_dataloader`).
        train_cfg: ``dict(by_epoch=True, max_epochs=N, val_interval=1, val_begin=1)``
            or ``dict(by_epoch=False, max_iters=N, val_interval=K)``, or
            ``dict(type=<LOOPS name>, ...)``.
        val_cfg, test_cfg: ``dict(fp16=True)`` evaluates under autocast (float16 on
            CUDA, bfloat16 on CPU); ``type`` picks another loop.
        optim_wrapper: An :class:`~fengine.optim.OptimWrapper` or its config, e.g.
            ``dict(optimizer=dict(type='SGD', lr=1e-3))``; several optimizers: an
            :class:`~fengine.optim.OptimWrapperDict` or a dict of configs by name
            (``dict(generator=dict(optimizer=...), discriminator=...)``, see
            :class:`~fengine.optim.MultiOptimWrapperConstructor`).
        param_scheduler: A scheduler config or a list of them (see
            :mod:`fengine.optim.scheduler`); with several optimizers, a dict of those
            by optimizer name, or one applied to each.
        val_evaluator, test_evaluator: A metric, a list, ``dict(metrics=...)`` or an
            :class:`~fengine.evaluator.Evaluator`.
        default_hooks: Overrides of :data:`DEFAULT_HOOKS` by name (``None`` removes one).
        custom_hooks: More hooks, as instances or ``HOOKS`` configs (``priority`` key).
        load_from: A checkpoint whose weights are loaded before training/testing.
        resume: ``True`` resumes from ``load_from`` when it is given (as MMEngine),
            else from ``work_dir/last_checkpoint``; a path resumes from that file
            (weights, optimizer, schedulers, counters, RNG states). A path and a
            ``load_from`` naming another file are an error.
        randomness: ``dict(seed=None, deterministic=False)``; ``seed=None`` draws one
            (logged, and saved in checkpoints).
        launcher: ``'none'`` or ``'pytorch'`` (under ``torchrun``).
        compile: ``True`` or a dict of ``torch.compile`` options: the model's steps
            become compiled, fused steps (see :meth:`BaseModel.compile_steps`).
        log_level: Level of the ``fengine`` logger for this run (``'DEBUG'`` also
            writes a log file per rank in a distributed run).
        log_processor: A :class:`~fengine.runner.LogProcessor` or its arguments
            (``dict(window_size=10, custom_cfg=[...])``; ``type`` picks another
            ``LOG_PROCESSORS`` class).
        experiment_name: Names the run (default: the timestamp).
        visualizer: ``None`` (``vis_data/scalars.json``), a list of backend configs,
            or ``dict(vis_backends=[dict(type='LocalVisBackend'),
            dict(type='TensorboardVisBackend')])``.
        model_wrapper_cfg: Under ``launcher='pytorch'`` with several processes, the
            ``MODEL_WRAPPERS`` config of the wrapper (default
            ``dict(type='MMDistributedDataParallel')``; other keys go to
            ``DistributedDataParallel``, e.g. ``find_unused_parameters=True``).
        cfg: The config the runner came from (logged and kept in checkpoints' meta).
    """

    def __init__(self, model: nn.Module | dict, work_dir: str | os.PathLike,
                 train_dataloader: DataLoader | dict | None = None,
                 val_dataloader: DataLoader | dict | None = None,
                 test_dataloader: DataLoader | dict | None = None,
                 train_cfg: dict | None = None, val_cfg: dict | None = None,
                 test_cfg: dict | None = None, optim_wrapper: Any = None,
                 param_scheduler: dict | list | None = None, val_evaluator: Any = None,
                 test_evaluator: Any = None, default_hooks: dict | None = None,
                 custom_hooks: list | None = None, load_from: str | None = None,
                 resume: bool | str = False, randomness: dict | None = None,
                 launcher: str = 'none', compile: bool | dict = False,
                 log_level: str | int = 'INFO', log_processor: Any = None,
                 experiment_name: str | None = None,
                 visualizer: Any = None, model_wrapper_cfg: dict | None = None,
                 cfg: dict | None = None) -> None:
        self.cfg = copy.copy(cfg) if cfg is not None else None
        self.work_dir = Path(work_dir).expanduser().resolve()
        check_choice('launcher', launcher, LAUNCHERS)
        self.launcher = launcher
        if launcher == 'pytorch':
            from ..dist import init_dist

            init_dist()
        self.rank, self.world_size = get_rank(), get_world_size()

        randomness = dict(randomness or {})
        check_keys('randomness', randomness, _RANDOMNESS_KEYS)
        self.deterministic = bool(randomness.get('deterministic', False))
        seed = randomness.get('seed')
        check_seed(seed)  # on every rank, before the broadcast (which would int() it)
        # Rank 0's seed (given or drawn) on every rank: same init, same data order.
        self.seed = set_random_seed(sync_random_seed(seed), self.deterministic)

        self.timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
        self.experiment_name = experiment_name or self.timestamp
        self.log_dir = self.work_dir / self.timestamp
        self.logger = self._build_logger(log_level)
        self.log_processor = self.build_log_processor(log_processor)
        # Reached by MessageHub.get_current_instance() from code without the runner.
        self.message_hub = MessageHub._fresh_instance(self.experiment_name)
        self.visualizer = build_visualizer(visualizer if is_main_process() else [],
                                           save_dir=self.log_dir, name=self.experiment_name)

        self.device = self._pick_device()
        self.model = self._build_model(model, model_wrapper_cfg)
        self.compile = compile
        if compile:
            if not hasattr(unwrap_model(self.model), 'compile_steps'):
                raise TypeError(f'compile=True needs a fengine BaseModel (with compile_steps), '
                                f'but the model is a {type(self.model).__name__}')
            unwrap_model(self.model).compile_steps(compile)

        self._train_dataloader, self._val_dataloader = train_dataloader, val_dataloader
        self._test_dataloader = test_dataloader
        self._train_cfg, self._val_cfg, self._test_cfg = train_cfg, val_cfg, test_cfg
        self.optim_wrapper = optim_wrapper
        self._param_scheduler_cfg = param_scheduler
        self.param_schedulers: list | dict | None = None
        self._val_evaluator, self._test_evaluator = val_evaluator, test_evaluator
        self._check_related('train', train_dataloader=train_dataloader, train_cfg=train_cfg,
                            optim_wrapper=optim_wrapper)
        self._check_related('val', val_dataloader=val_dataloader,
                            val_evaluator=val_evaluator)
        self._check_related('test', test_dataloader=test_dataloader,
                            test_evaluator=test_evaluator)
        if val_dataloader is None and isinstance(train_cfg, dict) and \
                train_cfg.get('val_interval') is not None:
            raise ValueError(f"train_cfg sets val_interval={train_cfg['val_interval']!r} but "
                             'the runner has no val_dataloader (nor val_evaluator): pass '
                             'them, or drop val_interval to train without validation')
        self._train_loop = self._val_loop = self._test_loop = None

        _check_resume(resume, load_from)
        self.load_from = load_from
        self.resume_from = resume
        self._loaded = False

        self._hooks: list[Hook] = []
        self.register_hooks(default_hooks, custom_hooks)
        self._log_environment()

    # -- construction helpers ---------------------------------------------------------
    @classmethod
    def from_cfg(cls, cfg: Mapping) -> Runner:
        """Build a runner from a dict or a :class:`~fengine.config.Config` holding its
        arguments (MMEngine: ``Runner.from_cfg``).

        Raises:
            TypeError: ``cfg`` is not a mapping, or has a key that is not an argument of
                :class:`Runner` (named, with close matches).
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f'Runner.from_cfg takes a dict or a Config, but got '
                            f'{type(cfg).__name__}')
        source = cfg
        cfg = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
        cfg.pop('custom_imports', None)  # imported by Config.fromfile already
        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != 'self']
        check_keys('Runner config', cfg, accepted)
        args = copy.copy(cfg)
        args.setdefault('cfg', source)
        return cls(**args)

    @staticmethod
    def _check_related(stage: str, **parts: Any) -> None:
        given = [k for k, v in parts.items() if v is not None]
        missing = [k for k, v in parts.items() if v is None]
        if given and missing:
            raise ValueError(f'to {stage}, the runner needs {", ".join(parts)} together; '
                             f'{", ".join(given)} {"is" if len(given) == 1 else "are"} given '
                             f'but {", ".join(missing)} {"is" if len(missing) == 1 else "are"} '
                             'missing')

    def _pick_device(self) -> torch.device:
        if torch.cuda.is_available():
            index = get_local_rank() if self.launcher == 'pytorch' else \
                torch.cuda.current_device()
            torch.cuda.set_device(index)
            return torch.device('cuda', index)
        return torch.device('cpu')

    def _build_model(self, model: nn.Module | dict, wrapper_cfg: dict | None) -> nn.Module:
        if isinstance(model, dict):
            model = MODELS.build(model)
        if not isinstance(model, nn.Module):
            raise TypeError(f'model must be an nn.Module or a MODELS config dict, but got '
                            f'{type(model).__name__}: {model!r}')
        if wrapper_cfg is not None and not isinstance(wrapper_cfg, dict):
            raise TypeError(f'model_wrapper_cfg must be a dict such as dict(type='
                            f"'MMDistributedDataParallel', find_unused_parameters=True), but "
                            f'got {type(wrapper_cfg).__name__}')
        model = model.to(self.device)
        # A model the user wrapped already is kept as it is.
        if self.world_size > 1 and not is_model_wrapper(model):
            model = wrap_model(model, self.device, **(wrapper_cfg or {}))
        return model

    def _build_logger(self, log_level: str | int) -> logging.Logger:
        # Only the main process talks; the others report errors only (as MMEngine).
        return configure_run_logging(self.log_dir / f'{self.timestamp}.log', log_level,
                                     rank=self.rank, world_size=self.world_size)

    def build_log_processor(self, log_processor: Any) -> LogProcessor:
        """A :class:`LogProcessor` from an instance, ``None`` or a config dict.

        MMEngine: ``Runner.build_log_processor``.

        Raises:
            TypeError: neither a LogProcessor, a dict nor ``None``.
        """
        if isinstance(log_processor, LogProcessor):
            processor = log_processor
        elif log_processor is None or isinstance(log_processor, dict):
            cfg = dict(log_processor or {})
            processor = LOG_PROCESSORS.build(cfg) if 'type' in cfg else LogProcessor(**cfg)
        else:
            raise TypeError(f'log_processor must be a LogProcessor or a dict of its arguments '
                            f'such as dict(window_size=20), but got '
                            f'{type(log_processor).__name__}: {log_processor!r}')
        self.logger.debug(f'log processor: {processor!r}')
        return processor

    def _log_environment(self) -> None:
        from .. import __version__

        cuda = torch.version.cuda if torch.cuda.is_available() else 'not available'
        lines = [
            '', '-' * 60, 'System environment:',
            f'    sys.platform: {sys.platform}',
            f'    Python: {sys.version.split()[0]}',
            f'    CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)',
            f'    CUDA: {cuda}',
        ]
        if torch.cuda.is_available():
            lines.append(f'    GPU: {torch.cuda.get_device_name(self.device)}')
        lines += [
            f'    PyTorch: {torch.__version__}',
            f'    fengine: {__version__}',
            '', 'Runtime environment:',
            f'    seed: {self.seed}',
            f'    deterministic: {self.deterministic}',
            f'    device: {self.device}',
            f'    world_size: {self.world_size}',
            f'    compile: {self.compile}',
            f'    experiment_name: {self.experiment_name}',
            f'    work_dir: {self.work_dir}',
            '-' * 60,
        ]
        self.logger.info('\n'.join(lines))
        if self.cfg is not None:
            text = getattr(self.cfg, 'pretty_text', None) or repr(self.cfg)
            self.logger.info(f'Config:\n{text}')
            self.visualizer.add_config(getattr(self.cfg, 'to_dict', lambda: self.cfg)())

    # -- hooks ------------------------------------------------------------------------
    def register_hook(self, hook: Hook | dict, priority: int | str | None = None) -> None:
        """Add a hook, after the registered hooks of the same priority (MMEngine name).

        Args:
            hook: A :class:`~fengine.hooks.Hook` or a ``HOOKS`` config (its
                ``priority`` key sets the priority).
            priority: Overrides the hook's own priority.

        Raises:
            TypeError: neither a Hook nor a dict.
            ValueError: an unknown priority (the hook is neither changed nor registered).
        """
        if isinstance(hook, dict):
            hook = dict(hook)
            priority = hook.pop('priority', priority)
            hook = HOOKS.build(hook)
        if not isinstance(hook, Hook):
            raise TypeError(f'a hook must be a fengine.hooks.Hook or a HOOKS config dict, but '
                            f'got {type(hook).__name__}: {hook!r}')
        # Checked before the hook is changed: a bad priority leaves it as it was.
        value = get_priority(hook.priority if priority is None else priority)
        if priority is not None:
            hook.priority = priority
        position = len(self._hooks)
        for index, existing in enumerate(self._hooks):
            if value < get_priority(existing.priority):
                position = index
                break
        self._hooks.insert(position, hook)

    def register_hooks(self, default_hooks: dict | None = None,
                       custom_hooks: Iterable[Hook | dict] | None = None) -> None:
        """Register :data:`DEFAULT_HOOKS` (as ``default_hooks`` overrides) and ``custom_hooks``."""
        if default_hooks is not None and not isinstance(default_hooks, dict):
            raise TypeError(f'default_hooks must be a dict of name -> hook (or None to remove '
                            f'it), but got {type(default_hooks).__name__}')
        hooks: dict[str, Any] = dict(DEFAULT_HOOKS)
        hooks.update(default_hooks or {})
        for hook in hooks.values():
            if hook is not None:
                self.register_hook(hook)
        if custom_hooks is not None and not isinstance(custom_hooks, (list, tuple)):
            raise TypeError(f'custom_hooks must be a list of hooks or hook configs, but got '
                            f'{type(custom_hooks).__name__}')
        for hook in custom_hooks or ():
            self.register_hook(hook)

    @property
    def hooks(self) -> list[Hook]:
        """The registered hooks, in the order they run."""
        return list(self._hooks)

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Call ``fn_name`` on every hook, in priority order."""
        for hook in self._hooks:
            getattr(hook, fn_name)(self, **kwargs)

    # -- counters (MMEngine: runner.epoch, runner.iter, ...) --------------------------
    @property
    def train_loop_built(self) -> bool:
        return self._train_loop is not None

    @property
    def epoch(self) -> int:
        return self._train_loop.epoch if self._train_loop is not None else 0

    @property
    def iter(self) -> int:
        return self._train_loop.iter if self._train_loop is not None else 0

    @property
    def max_epochs(self) -> int:
        return self.train_loop.max_epochs

    @property
    def max_iters(self) -> int:
        return self.train_loop.max_iters

    # -- dataloaders and loops (built on first use) -----------------------------------
    def _dataloader(self, name: str) -> DataLoader | None:
        """The ``name`` dataloader, built from its config on first use."""
        loader = getattr(self, f'_{name}')
        if isinstance(loader, dict):
            loader = build_dataloader(loader, seed=self.seed, what=name)
            setattr(self, f'_{name}', loader)
        return loader

    @property
    def train_dataloader(self) -> DataLoader | None:
        return self._dataloader('train_dataloader')

    @property
    def val_dataloader(self) -> DataLoader | None:
        return self._dataloader('val_dataloader')

    @property
    def test_dataloader(self) -> DataLoader | None:
        return self._dataloader('test_dataloader')

    @property
    def train_loop(self):
        if self._train_loop is None:
            self._train_loop = self._build_train_loop(self._train_cfg)
        return self._train_loop

    def _eval_loop(self, kind: str, doing: str):
        """The ``kind`` ('val' or 'test') loop, built on first use."""
        if getattr(self, f'_{kind}_loop') is None:
            if getattr(self, f'_{kind}_dataloader') is None:
                raise RuntimeError(f'the runner has no {kind}_dataloader (and '
                                   f'{kind}_evaluator), so it cannot {doing}; pass them to '
                                   'Runner(...)')
            setattr(self, f'_{kind}_loop', self._build_eval_loop(
                kind, getattr(self, f'_{kind}_cfg'), self._dataloader(f'{kind}_dataloader'),
                getattr(self, f'_{kind}_evaluator')))
        return getattr(self, f'_{kind}_loop')

    @property
    def val_loop(self):
        return self._eval_loop('val', 'validate')

    @property
    def val_loop_or_none(self):
        return None if self._val_dataloader is None else self.val_loop

    @property
    def test_loop(self):
        return self._eval_loop('test', 'test')

    def _build_train_loop(self, cfg: dict | None):
        if not isinstance(cfg, dict):
            raise TypeError(f'train_cfg must be a dict such as dict(by_epoch=True, '
                            f'max_epochs=5), but got {type(cfg).__name__}: {cfg!r}')
        cfg = dict(cfg)
        if 'type' in cfg:
            loop_type = cfg.pop('type')
            cfg.pop('by_epoch', None)
        else:
            by_epoch = cfg.pop('by_epoch', 'max_iters' not in cfg)
            loop_type = 'EpochBasedTrainLoop' if by_epoch else 'IterBasedTrainLoop'
            needed = 'max_epochs' if by_epoch else 'max_iters'
            if needed not in cfg:
                raise ValueError(f'train_cfg with by_epoch={by_epoch} needs {needed!r}, e.g. '
                                 f'dict(by_epoch={by_epoch}, {needed}=...); got {self._train_cfg}')
        if cfg.get('val_interval') is None:  # the loop's own default
            cfg.pop('val_interval', None)
        return LOOPS.build(dict(type=loop_type, **cfg),
                           default_args=dict(runner=self, dataloader=self.train_dataloader))

    def _build_eval_loop(self, mode: str, cfg: dict | None, dataloader, evaluator):
        if cfg is not None and not isinstance(cfg, dict):
            raise TypeError(f'{mode}_cfg must be a dict such as dict(fp16=True), but got '
                            f'{type(cfg).__name__}: {cfg!r}')
        cfg = dict(cfg or {})
        loop_type = cfg.pop('type', 'ValLoop' if mode == 'val' else 'TestLoop')
        return LOOPS.build(dict(type=loop_type, **cfg), default_args=dict(
            runner=self, dataloader=dataloader, evaluator=build_evaluator(evaluator)))

    # -- the three entry points -------------------------------------------------------
    def train(self) -> nn.Module:
        """Initialize (or load), train with validation, and return the model.

        Raises:
            ValueError: ``train_dataloader``, ``optim_wrapper`` or ``train_cfg`` is missing.
        """
        missing = [name for name, value in (('train_dataloader', self._train_dataloader),
                                            ('optim_wrapper', self.optim_wrapper),
                                            ('train_cfg', self._train_cfg)) if value is None]
        if missing:
            raise ValueError(f'Runner.train() needs train_dataloader, optim_wrapper and '
                             f'train_cfg; missing: {", ".join(missing)}')
        loop = self.train_loop
        self.val_loop_or_none  # noqa: B018 - build now: configuration errors surface early
        self.optim_wrapper = build_optim_wrapper(self.model, self.optim_wrapper)
        self.param_schedulers = build_param_schedulers(
            self._param_scheduler_cfg, self.optim_wrapper,
            epoch_length=len(self.train_dataloader),
            max_epochs=loop.max_epochs if loop.by_epoch else None,
            max_iters=loop.max_iters) if self._param_scheduler_cfg is not None else []
        if not (self.load_from or self.resume_from):
            init = getattr(unwrap_model(self.model), 'init_weights', None)
            if callable(init):
                init()
        self._load_or_resume(training=True)
        self.optim_wrapper.initialize_count_status(unwrap_model(self.model), loop.iter,
                                                   loop.max_iters)
        self.call_hook('before_run')
        model = loop.run()
        self.call_hook('after_run')
        return model

    def val(self) -> dict:
        """Run the validation loop once and return its metrics."""
        return self._run_eval(self.val_loop)

    def test(self) -> dict:
        """Run the test loop once and return its metrics."""
        return self._run_eval(self.test_loop)

    def _run_eval(self, loop) -> dict:
        # The loop first: a runner without its dataloader fails before loading anything.
        self._load_or_resume()
        self.call_hook('before_run')
        metrics = loop.run()
        self.call_hook('after_run')
        return metrics

    # -- checkpoints -------------------------------------------------------------------
    def _load_or_resume(self, training: bool = False) -> None:
        """Apply ``resume``/``load_from`` once.

        ``val()``/``test()`` before ``train()`` only load the weights of the checkpoint to
        resume from: the optimizer and schedulers do not exist yet, so the full resume
        (optimizer, schedulers, counters, RNG) waits for ``train()``.
        """
        if self._loaded:
            return
        if self.resume_from:
            path = self._resume_path()
            if not training:
                if path is not None:
                    self.load_checkpoint(path)
                return
            self._loaded = True
            if path is None:
                self.logger.warning(f'resume=True but there is no checkpoint in '
                                    f'{self.work_dir} (no {LAST_CHECKPOINT} file, no '
                                    '*.pth): training starts from scratch.')
                init = getattr(unwrap_model(self.model), 'init_weights', None)
                if callable(init):
                    init()
                return
            self.resume(path)
        elif self.load_from:
            self._loaded = True
            self.load_checkpoint(self.load_from)

    def _resume_path(self) -> Path | None:
        """The checkpoint ``resume`` names (MMEngine's rule for ``True``).

        ``True`` means ``load_from`` when it is set (the user named the file to continue
        from), else the last checkpoint in ``work_dir``; a path names the file itself.
        """
        if self.resume_from is not True:
            return Path(self.resume_from)
        if self.load_from:
            return Path(self.load_from)
        return find_last_checkpoint(self.work_dir)

    def _read_checkpoint(self, filename: str | os.PathLike, map_location: Any) -> dict:
        checkpoint = load_checkpoint_file(os.fspath(filename), map_location=map_location)
        if not isinstance(checkpoint, dict):
            raise RuntimeError(f'checkpoint {os.fspath(filename)!r} holds a '
                               f'{type(checkpoint).__name__}, not a dict')
        return checkpoint

    def _checked_state(self, checkpoint: dict, filename: str) -> dict[str, torch.Tensor]:
        """The model state of ``checkpoint``, after checking every shape against the model."""
        state = state_dict_from(checkpoint, filename)
        own = unwrap_model(self.model).state_dict()
        mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                      for k, v in state.items() if k in own and own[k].shape != v.shape]
        if mismatched:
            raise RuntimeError(f'checkpoint {filename!r} does not fit '
                               f'{type(unwrap_model(self.model)).__name__} (is it from another '
                               f'model?); shape mismatches: {"; ".join(mismatched[:10])}'
                               f'{" ..." if len(mismatched) > 10 else ""}. Nothing was loaded.')
        return state

    def _load_state(self, state: dict[str, torch.Tensor], filename: str, strict: bool) -> None:
        model = unwrap_model(self.model)
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            raise RuntimeError(f'checkpoint {filename!r} does not match the model: missing '
                               f'keys {missing[:10]}, unexpected keys {unexpected[:10]}. '
                               'Nothing was loaded.')
        model.load_state_dict(state, strict=False)
        if missing:
            self.logger.warning(f'missing keys in checkpoint {filename}: {", ".join(missing)}')
        if unexpected:
            self.logger.warning(f'unexpected keys in checkpoint {filename}: '
                                f'{", ".join(unexpected)}')

    def load_checkpoint(self, filename: str | os.PathLike, map_location: Any = 'cpu',
                        strict: bool = False) -> dict:
        """Load the model weights of a checkpoint (MMEngine: ``Runner.load_checkpoint``).

        Read safely (``weights_only``); shapes are checked before anything is copied, so
        a checkpoint of another model leaves this one unchanged.

        Raises:
            FileNotFoundError, RuntimeError: see :func:`fengine.checkpoint.load_checkpoint_file`;
                shape mismatches (listed); with ``strict``, missing/unexpected keys.
        """
        filename = os.fspath(filename)
        checkpoint = self._read_checkpoint(filename, map_location)
        self._checked_state(checkpoint, filename)  # another model's file: before any hook
        # As MMEngine, hooks see the checkpoint before the model loads it (EMAHook swaps
        # the averaged weights out of its state_dict).
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        self._load_state(self._checked_state(checkpoint, filename), filename, strict)
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def resume(self, filename: str | os.PathLike, map_location: Any = 'cpu') -> None:
        """Continue a run from a checkpoint: weights, optimizer, schedulers, counters, RNG.

        MMEngine: ``Runner.resume``. Everything is read and checked before anything
        changes, so a bad file leaves the runner (model, optimizer, schedulers) as it
        was. The order is the schedulers' contract (:mod:`fengine.optim.scheduler`):
        they are built first (``train()`` does), then the optimizer's state is loaded,
        then theirs. The random states, the loop counters and the random states of the
        interrupted pass over the dataloader come back too, so the run continues
        exactly as if it had not stopped.

        Raises:
            FileNotFoundError, RuntimeError: the file is missing, unreadable, corrupt or
                truncated (named), has no training progress, or its model, optimizer or
                scheduler state does not fit this run (what differs is named).
            ValueError: the checkpoint is in the middle of a pass over the training data
                that this run's dataloader cannot resume (its length changed: the
                checkpoint's iteration, the batches to skip and the length are named).
        """
        filename = os.fspath(filename)
        checkpoint = self._read_checkpoint(filename, map_location)
        self._checked_state(checkpoint, filename)  # another model's file: before any hook
        meta = checkpoint.get('meta', {})
        if not isinstance(meta, dict) or 'epoch' not in meta or 'iter' not in meta:
            raise RuntimeError(f'checkpoint {filename!r} has no training progress (meta.epoch, '
                               'meta.iter): it holds weights only; use load_from= for it')
        epoch, iteration = int(meta['epoch']), int(meta['iter'])
        if self._train_loop is not None:
            self._train_loop.check_restore(epoch, iteration, source=f'checkpoint {filename!r}',
                                           written_position=meta.get('dataloader_position'))
        optimizer_state = None
        if 'optimizer' in checkpoint and self.optim_wrapper is not None and \
                not isinstance(self.optim_wrapper, dict):
            optimizer_state = _checked_optimizer_state(self.optim_wrapper,
                                                       checkpoint['optimizer'], filename)
        scheduler_pairs = _scheduler_pairs(
            self.param_schedulers, checkpoint.get('param_schedulers'),
            filename) if self.param_schedulers else []
        for what, have, key, flag in (
                ('optimizer', self.optim_wrapper, 'optimizer', 'save_optimizer'),
                ('param schedulers', self.param_schedulers, 'param_schedulers',
                 'save_param_scheduler')):
            if have and not isinstance(have, dict) and key not in checkpoint:
                self.logger.warning(f'checkpoint {filename} has no {what} state (written with '
                                    f'{flag}=False?): the {what} start afresh, so the run '
                                    'does not continue exactly')
        # Before the model loads: see load_checkpoint.
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        self._load_state(self._checked_state(checkpoint, filename), filename, strict=False)
        if optimizer_state is not None:
            self.optim_wrapper.load_state_dict(optimizer_state)
        for scheduler, saved in scheduler_pairs:
            scheduler.load_state_dict(saved)
        hub_state = checkpoint.get('message_hub')
        if isinstance(hub_state, dict):
            self.message_hub.load_state_dict(hub_state)
        if self._train_loop is not None:
            # The interrupted pass over the dataloader is replayed from its start.
            self._train_loop.restore(epoch, iteration, meta.get('pass_rng'))
        if 'rng' in meta:
            set_rng_state(meta['rng'])
        if meta.get('seed') is not None and meta['seed'] != self.seed:
            self.logger.warning(f'the checkpoint was trained with seed {meta["seed"]}, this '
                                f'run has seed {self.seed}; data order follows this run\'s seed')
        self.logger.info(f'resumed from {filename}: epoch {meta["epoch"]}, iter {meta["iter"]}')

    @staticmethod
    def _check_finite(state: dict[str, Any], iteration: int, path: Path) -> None:
        """Refuse to write non-finite weights (one host read for the whole model)."""
        floats = [v for v in state.values()
                  if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
        if not floats:
            return
        finite = torch.stack([torch.isfinite(v).all().to(floats[0].device) for v in floats])
        if bool(finite.all()):
            return
        bad = [k for k, v in state.items() if isinstance(v, torch.Tensor)
               and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
        raise NonFiniteLossError(
            f'the model has NaN or infinite values after iteration {iteration} in '
            f'{", ".join(bad[:10])}{" ..." if len(bad) > 10 else ""}; checkpoint {path.name} '
            'was not written, so the last checkpoint is still the last good state. Lower the '
            'learning rate or clip gradients (optim_wrapper=dict(..., clip_grad='
            'dict(max_norm=...))).')

    def save_checkpoint(self, out_dir: str | os.PathLike, filename: str,
                        save_optimizer: bool = True, save_param_scheduler: bool = True,
                        meta: dict | None = None) -> Path:
        """Write ``out_dir/filename`` atomically and point ``work_dir/last_checkpoint`` at it.

        MMEngine: ``Runner.save_checkpoint``. Pending loss values are read and checked
        first, and the weights too: a run whose loss or weights are not finite raises
        instead of saving, so ``last_checkpoint`` keeps pointing at the last good state.
        The optimizer's tensor hyper-parameters (compiled steps) are written as floats.
        The meta holds the epoch, iteration, seed, random states and, in the middle of
        a pass over the training data, the position in it and the random states when
        it began (``pass_rng``), for an exact :meth:`resume`. ``last_checkpoint`` holds
        the absolute path, so a relative ``out_dir`` is found from any directory. Only
        the main process writes.

        Returns:
            The checkpoint's path.

        Raises:
            NonFiniteLossError: a pending loss, or a weight, is NaN or infinite.
        """
        from .. import __version__

        self.message_hub.sync()  # raises NonFiniteLossError on a NaN/inf loss: no file
        path = Path(out_dir) / filename
        loop = self._train_loop
        epoch, iteration = (loop.progress() if loop is not None else (0, 0))
        model_state = unwrap_model(self.model).state_dict()
        self._check_finite(model_state, iteration, path)
        checkpoint_meta = dict(meta or {})
        # Batches of the current pass over the dataloader already trained on.
        position = loop.position(epoch, iteration) if loop is not None else 0
        checkpoint_meta.update(
            epoch=epoch, iter=iteration, seed=self.seed, deterministic=self.deterministic,
            experiment_name=self.experiment_name, time=time.strftime('%Y%m%d_%H%M%S'),
            fengine_version=__version__, torch_version=str(torch.__version__),
            dataloader_position=position, rng=get_rng_state())
        if position and loop is not None and loop.pass_rng is not None:
            # Resuming in the middle of a pass recreates its iterator under these.
            checkpoint_meta['pass_rng'] = loop.pass_rng
        checkpoint: dict[str, Any] = {
            'meta': checkpoint_meta,
            'state_dict': model_state,
            'message_hub': self.message_hub.state_dict(),
        }
        if save_optimizer and self.optim_wrapper is not None and \
                not isinstance(self.optim_wrapper, dict):
            checkpoint['optimizer'] = _optimizer_state(self.optim_wrapper)
        if save_param_scheduler and self.param_schedulers:
            checkpoint['param_schedulers'] = _scheduler_states(self.param_schedulers)
        self.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        if is_main_process():
            atomic_save(checkpoint, path)
            # Absolute: find_last_checkpoint reads the pointer from another current
            # directory, and resolves a relative one against work_dir, not out_dir.
            write_text_atomic(self.work_dir / LAST_CHECKPOINT, str(path.resolve()))
            self.logger.info(f'Saved checkpoint {path.name} (epoch {epoch}, iter {iteration})')
        return path
