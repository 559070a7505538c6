"""``Runner``: builds a run from its parts and drives the loops (MMEngine: ``Runner``).

Kept deliberately thin: it validates its arguments, builds what configs describe,
seeds the run, writes the log folder, and hands the work to the loops and hooks.
Everything fast lives in the model's (optionally compiled) steps.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
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

from .._errors import check_bool, check_keys, choices_text, suggest
from ..checkpoint import load_checkpoint_file, state_dict_from
from ..dist import (all_reduce, get_comm_device, get_local_rank, get_rank, get_world_size,
                    is_main_process, sync_random_seed)
from ..evaluator import Evaluator, build_evaluator
from ..hooks import PRIORITIES, Hook, get_priority
from ..logging import configure_run_logging, get_logger
from ..model.activation_checkpointing import turn_on_activation_checkpointing
from ..model.fsdp import is_fsdp_config, parameters_on_meta
from ..model.wrappers import is_model_wrapper, unwrap_model, wrap_model
from ..optim import OptimWrapper, build_optim_wrapper
from ..optim.scheduler import build_param_schedulers
from ..registry import (HOOKS, LOG_PROCESSORS, LOOPS, MODEL_WRAPPERS, MODELS, RUNNERS,
                        DefaultScope)
from ..visualization import Visualizer, build_visualizer
from .checkpoint_io import LAST_CHECKPOINT, atomic_save, find_last_checkpoint, write_text_atomic
from .sharded_checkpoint import (checkpoint_dir_name, is_sharded_model, load_model_state,
                                 local_tensor, optimizer_state_by_index,
                                 optimizer_state_by_name, read_sharded, save_sharded)
from .arguments import (check_auto_scale_lr, check_launcher, check_runner_type,
                        check_sync_bn, experiment_name_of, merge_cfg_key,
                        refuse_loop_num_batches, train_batch_size, with_preprocessor,
                        wrapper_extras)
from .config_keys import config_text, plain_copy, split_cfg
from .data import build_dataloader
from .env import apply_env_cfg, check_env_cfg, choose_num_threads, dataloader_workers
from .log_processor import LogProcessor
from .message_hub import MessageHub, NonFiniteLossError
from .randomness import check_seed, get_rng_state, set_random_seed, set_rng_state

__all__ = ['Runner', 'DEFAULT_HOOKS']

# Numbers the runners of this process (names of their DefaultScope instances).
_RUN_NUMBERS = itertools.count()

# MMEngine's default hooks; ``default_hooks=dict(name=None)`` turns one off.
DEFAULT_HOOKS: dict[str, dict] = {
    'runtime_info': dict(type='RuntimeInfoHook'),
    'timer': dict(type='IterTimerHook'),
    'logger': dict(type='LoggerHook', interval=10),
    'param_scheduler': dict(type='ParamSchedulerHook'),
    'checkpoint': dict(type='CheckpointHook', interval=1),
    'sampler_seed': dict(type='DistSamplerSeedHook'),
}
_RANDOMNESS_KEYS = ('seed', 'diff_rank_seed', 'deterministic')


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


def _optimizer_state(wrapper: Any, model: nn.Module | None = None) -> dict:
    """What a checkpoint holds of ``wrapper``: plain hyper-parameters, by name for several.

    With ``model`` (a sharded checkpoint), the state is keyed by parameter name.
    """
    if hasattr(wrapper, 'optimizer'):
        state = _plain_hyperparams(wrapper.state_dict())
        return state if model is None else optimizer_state_by_name(state, wrapper.optimizer,
                                                                   model)
    return {name: _optimizer_state(inner, model) for name, inner in wrapper.items()}


def _checked_optimizer_state(wrapper: Any, saved: Any, filename: str,
                             model: nn.Module | None = None) -> Any:
    """``saved`` with plain hyper-parameters, after checking that it fits ``wrapper``.

    An ``OptimWrapperDict`` (several optimizers) takes a dict with the same names.
    With ``model``, ``saved`` is keyed by parameter name (a sharded checkpoint).
    """
    if hasattr(wrapper, 'optimizer'):
        if model is not None:
            saved = optimizer_state_by_index(saved, wrapper.optimizer, model, filename)
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
    return {name: _checked_optimizer_state(wrapper[name], saved[name], filename, model)
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


# MMEngine's Hook.stages: the points of a run, in order, as get_hooks_info lists them.
_HOOK_STAGES = ('before_run', 'after_load_checkpoint', 'before_train', 'before_train_epoch',
                'before_train_iter', 'after_train_iter', 'after_train_epoch', 'before_val',
                'before_val_epoch', 'before_val_iter', 'after_val_iter', 'after_val_epoch',
                'after_val', 'before_save_checkpoint', 'after_train', 'before_test',
                'before_test_epoch', 'before_test_iter', 'after_test_iter',
                'after_test_epoch', 'after_test', 'after_run')
# Hook's shared fallbacks: overriding one triggers the points of every mode.
_SHARED_STAGES = {
    '_before_epoch': ('before_train_epoch', 'before_val_epoch', 'before_test_epoch'),
    '_after_epoch': ('after_train_epoch', 'after_val_epoch', 'after_test_epoch'),
    '_before_iter': ('before_train_iter', 'before_val_iter', 'before_test_iter'),
    '_after_iter': ('after_train_iter', 'after_val_iter', 'after_test_iter'),
}


def _triggered_stages(hook: Hook) -> set[str]:
    """The points where ``hook`` does something: the methods its class overrides."""
    def overrides(name: str) -> bool:
        return getattr(type(hook), name, None) is not getattr(Hook, name, None)

    stages = {stage for stage in _HOOK_STAGES if overrides(stage)}
    for shared, points in _SHARED_STAGES.items():
        if overrides(shared):
            stages.update(points)
    return stages


@RUNNERS.register_module()
class Runner:
    """Train, validate and test a model (MMEngine: ``mmengine.runner.Runner``).

    Every argument of MMEngine's Runner is taken and honoured, or refused by name; see
    ``docs/guide/runner.md``.

    Args:
        model: A :class:`~fengine.model.BaseModel` or a ``MODELS`` config. It is moved
            to CUDA when available, else kept on the CPU.
        work_dir: Where checkpoints and ``<timestamp>/`` (log, ``vis_data/``) go.
        train_dataloader, val_dataloader, test_dataloader: ``DataLoader`` instances
            or dicts (see :meth:`build_dataloader`; ``num_batch_per_epoch=N`` keeps N
            batches per pass, MMEngine's debug trick).
        train_cfg: ``dict(by_epoch=True, max_epochs=N, val_interval=1, val_begin=1)``
            or ``dict(by_epoch=False, max_iters=N, val_interval=K)``, or
            ``dict(type=<LOOPS name>, ...)``.
        val_cfg, test_cfg: ``dict(fp16=True)`` evaluates under autocast (float16 on
            CUDA, bfloat16 on CPU); ``type`` picks another loop.
        auto_scale_lr: ``dict(base_batch_size=B, enable=True)`` multiplies every learning
            rate by ``world_size * train batch size / B`` (see :meth:`scale_lr`).
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
        data_preprocessor: The ``data_preprocessor`` of a model given as a config
            (MMEngine's argument); with a built model it is an error.
        load_from: A checkpoint whose weights are loaded before training/testing: a
            file, or a sharded checkpoint directory.
        resume: ``True`` resumes from ``load_from`` when it is given (as MMEngine),
            else from ``work_dir/last_checkpoint``; a path resumes from that file
            (weights, optimizer, schedulers, counters, RNG states) or sharded
            checkpoint directory (written by any number of ranks). A path and a
            ``load_from`` naming another file are an error.
        launcher: ``'none'`` or ``'pytorch'`` (under ``torchrun``); MMEngine's
            ``'slurm'`` and ``'mpi'`` are refused.
        env_cfg: ``dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork',
            opencv_num_threads=0), dist_cfg=dict(backend='nccl', timeout=1800),
            resource_limit=4096)`` (see :mod:`fengine.runner.env`); fengine adds
            ``num_threads``, torch's intra-op threads (default: the usable cores less
            the training DataLoader's workers and the cores other work keeps busy,
            unless already chosen; see :func:`~fengine.runner.env.choose_num_threads`).
        log_level: Level of the ``fengine`` logger for this run (``'DEBUG'`` also
            writes a log file per rank in a distributed run).
        log_processor: A :class:`~fengine.runner.LogProcessor` or its arguments
            (``dict(window_size=10, custom_cfg=[...])``; ``type`` picks another
            ``LOG_PROCESSORS`` class).
        visualizer: ``None`` (``vis_data/scalars.json``), a list of backend configs,
            or ``dict(vis_backends=[dict(type='LocalVisBackend'),
            dict(type='TensorboardVisBackend')])``.
        default_scope: The registry scope bare names resolve in (a
            :class:`~fengine.registry.DefaultScope` made for this run); ``None``: none.
        randomness: ``dict(seed=None, diff_rank_seed=False, deterministic=False)``;
            ``seed=None`` draws one (logged, and saved in checkpoints);
            ``diff_rank_seed`` seeds each process with ``seed + rank``.
        experiment_name: Names the run: ``<experiment_name>_<timestamp>`` (default: the
            config file's name, else the timestamp).
        cfg: The whole config the runner came from (a dict or a ``Config``): logged, dumped
            to ``work_dir``, kept in checkpoints' meta. The Runner also reads the keys of
            :data:`~fengine.runner.config_keys.CFG_KEYS_READ` from it: ``compile``,
            ``activation_checkpointing`` (submodule names to checkpoint),
            ``model_wrapper_cfg``, ``find_unused_parameters``, ``sync_bn``, ``runner_type``.
        compile: ``True`` or a dict of ``torch.compile`` options: the model's steps
            become compiled, fused steps (see :meth:`BaseModel.compile_steps`).
            ``cfg=dict(compile=...)`` (MMEngine's spelling) means the same.
        model_wrapper_cfg: Under ``launcher='pytorch'`` with several processes, the
            ``MODEL_WRAPPERS`` config of the wrapper (default
            ``dict(type='MMDistributedDataParallel')``; other keys go to
            ``DistributedDataParallel``, e.g. ``find_unused_parameters=True``).
            ``cfg=dict(model_wrapper_cfg=...)`` (MMEngine's spelling) means the same.

    Raises:
        TypeError, ValueError: an argument, or a key of one of the dict arguments, that
            is unknown or wrong (named, with the accepted ones).
    """

    def __init__(self, model: nn.Module | dict, work_dir: str | os.PathLike,
                 train_dataloader: DataLoader | dict | None = None,
                 val_dataloader: DataLoader | dict | None = None,
                 test_dataloader: DataLoader | dict | None = None,
                 train_cfg: dict | None = None, val_cfg: dict | None = None,
                 test_cfg: dict | None = None, auto_scale_lr: dict | None = None,
                 optim_wrapper: Any = None, param_scheduler: dict | list | None = None,
                 val_evaluator: Any = None, test_evaluator: Any = None,
                 default_hooks: dict | None = None, custom_hooks: list | None = None,
                 data_preprocessor: nn.Module | dict | None = None,
                 load_from: str | None = None, resume: bool | str = False,
                 launcher: str = 'none', env_cfg: dict | None = None,
                 log_level: str | int = 'INFO', log_processor: Any = None,
                 visualizer: Any = None,
                 default_scope: str | None = 'fengine', randomness: dict | None = None,
                 experiment_name: str | None = None, cfg: Mapping | None = None,
                 compile: bool | dict | None = None,
                 model_wrapper_cfg: dict | None = None) -> None:
        self.work_dir = Path(work_dir).expanduser().resolve()
        self.cfg, cfg_read, cfg_variables = self._read_cfg(cfg)
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
        self.auto_scale_lr = check_auto_scale_lr(auto_scale_lr)
        self.compile = merge_cfg_key('compile', compile, cfg_read, unset=(None,)) or False
        model_wrapper_cfg = merge_cfg_key('model_wrapper_cfg', model_wrapper_cfg, cfg_read)
        self._wrapper_extras = wrapper_extras(cfg_read, model_wrapper_cfg)
        self._sync_bn = check_sync_bn(cfg_read.get('sync_bn'))
        check_runner_type(cfg_read.get('runner_type'))
        if default_scope is not None and not isinstance(default_scope, str):
            raise TypeError(f'default_scope must be a str such as {"fengine"!r} or None, but '
                            f'got {type(default_scope).__name__}: {default_scope!r}')

        self._launcher = check_launcher(launcher)
        self.env_cfg = check_env_cfg(env_cfg)
        randomness = dict(randomness or {})
        check_keys('randomness', randomness, _RANDOMNESS_KEYS)
        check_seed(randomness.get('seed'))  # on every rank, before any collective
        self._randomness_cfg = randomness
        self.setup_env(self.env_cfg)
        self.set_randomness(**randomness)

        self.timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
        self.experiment_name = experiment_name_of(experiment_name, self.cfg, self.timestamp)
        self.log_dir = self.work_dir / self.timestamp
        # A name no other run has (an id() can be reused once a runner is collected).
        self.default_scope = None if default_scope is None else DefaultScope.get_instance(
            f'{self.experiment_name}-{next(_RUN_NUMBERS)}', scope_name=default_scope)
        self.logger = self._build_logger(log_level)
        for note in self._env_notes:
            self.logger.debug(note)
        self.log_processor = self.build_log_processor(log_processor)
        # Reached by MessageHub.get_current_instance() from code without the runner.
        self.message_hub = MessageHub._fresh_instance(self.experiment_name)
        self.visualizer = self.build_visualizer(visualizer)

        self.device = self._pick_device()
        # A model to shard is built with parameters on meta: each rank allocates its shards.
        with parameters_on_meta() if isinstance(model, dict) and self.world_size > 1 and \
                is_fsdp_config(model_wrapper_cfg) else contextlib.nullcontext():
            self.model = self.build_model(with_preprocessor(model, data_preprocessor))
        self._model_name = type(self.model).__name__
        self._checkpointed = cfg_read.get('activation_checkpointing')
        if self._checkpointed is not None:
            names = turn_on_activation_checkpointing(self.model, self._checkpointed)
            self.logger.info(f'Activation checkpointing is on for the submodules {names}')
        self.model = self.wrap_model(model_wrapper_cfg, self.model)
        if self.compile:
            if not hasattr(unwrap_model(self.model), 'compile_steps'):
                raise TypeError(f'compile=True needs a fengine BaseModel (with compile_steps), '
                                f'but the model is a {type(self.model).__name__}')
            unwrap_model(self.model).compile_steps(self.compile)

        self._train_dataloader, self._val_dataloader = train_dataloader, val_dataloader
        self.logger.info(choose_num_threads(self.env_cfg.get('num_threads'),
                                            dataloader_workers(train_dataloader)))
        self._test_dataloader = test_dataloader
        self._train_cfg, self._val_cfg, self._test_cfg = train_cfg, val_cfg, test_cfg
        self.optim_wrapper = optim_wrapper
        self._param_scheduler_cfg = param_scheduler
        self.param_schedulers: list | None = None
        self._val_evaluator, self._test_evaluator = val_evaluator, test_evaluator
        self._train_loop = self._val_loop = self._test_loop = None

        _check_resume(resume, load_from)
        self.load_from = load_from
        self.resume_from = resume
        self._loaded = False

        self._hooks: list[Hook] = []
        self.register_hooks(default_hooks, custom_hooks)
        self._log_environment()
        if cfg_variables:
            self.logger.info(f'Config keys the Runner does not read (config variables): '
                             f'{", ".join(cfg_variables)}')
        self.logger.info(f'Hooks will be executed in the following order:\n'
                         f'{self.get_hooks_info()}')
        self.dump_config()

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_cfg(cls, cfg: Mapping) -> Runner:
        """Build a runner from a whole config (MMEngine: ``Runner.from_cfg``).

        ``cfg`` is a dict or a ``Config`` (any Mapping): its keys that are arguments of
        :class:`Runner` become them, the whole of it is the runner's ``cfg`` (the
        original object: logged with its ``pretty_text``, dumped, kept in checkpoints),
        from which the Runner reads the keys of
        :data:`~fengine.runner.config_keys.CFG_KEYS_READ`. Other keys are config
        variables, named in the log.

        Raises:
            TypeError: ``cfg`` is not a Mapping.
            KeyError: ``model`` or ``work_dir`` is missing.
            ValueError: a key of a feature fengine does not implement, or one that looks
                like a misspelt argument (see :func:`~fengine.runner.config_keys.split_cfg`).
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f'Runner.from_cfg takes a dict or a Config (a Mapping), but got '
                            f'{type(cfg).__name__}')
        missing = [key for key in ('model', 'work_dir') if key not in cfg]
        if missing:
            raise KeyError(f'Runner.from_cfg: the config has no {" and no ".join(missing)}; '
                           'a runner needs both')
        arguments = plain_copy(cfg)
        accepted = [p for p in inspect.signature(cls.__init__).parameters
                    if p not in ('self', 'cfg')]
        return cls(**{k: v for k, v in arguments.items() if k in accepted}, cfg=cfg)

    def _read_cfg(self, cfg: Mapping | None) -> tuple[Mapping, dict, list[str]]:
        """``(the config kept as runner.cfg, the keys read from it, its variables)``."""
        if cfg is None:
            return {}, {}, []
        if not isinstance(cfg, Mapping):
            raise TypeError(f'cfg must be a dict or a Config (a Mapping), but got '
                            f'{type(cfg).__name__}: {cfg!r}')
        arguments = inspect.signature(type(self).__init__).parameters
        read, variables = split_cfg(cfg, [p for p in arguments if p != 'self'])
        # A dict is copied (the runner must not see later changes); a Config is kept as
        # it is, so its pretty_text, filename and dump() stay at hand.
        kept = plain_copy(cfg) if isinstance(cfg, dict) else cfg
        return kept, plain_copy(read), variables

    @staticmethod
    def _check_related(stage: str, **parts: Any) -> None:
        given = [k for k, v in parts.items() if v is not None]
        missing = [k for k, v in parts.items() if v is None]
        if given and missing:
            raise ValueError(f'to {stage}, the runner needs {", ".join(parts)} together; '
                             f'{", ".join(given)} {"is" if len(given) == 1 else "are"} given '
                             f'but {", ".join(missing)} {"is" if len(missing) == 1 else "are"} '
                             'missing')

    def setup_env(self, env_cfg: dict) -> None:
        """Apply ``env_cfg`` and join the process group (MMEngine: ``Runner.setup_env``).

        ``cudnn_benchmark``, ``mp_cfg`` and ``resource_limit`` set the process (see
        :mod:`fengine.runner.env`); with ``launcher='pytorch'``, ``dist_cfg`` goes to
        :func:`fengine.dist.init_dist` (``backend``, ``timeout``...).
        """
        env_cfg = check_env_cfg(env_cfg)
        # Written to the debug log once the run's log exists.
        self._env_notes = apply_env_cfg(env_cfg)
        if self.distributed:
            from ..dist import init_dist

            init_dist(self._launcher, **env_cfg.get('dist_cfg', {}))
        self.rank, self.world_size = get_rank(), get_world_size()

    def set_randomness(self, seed: int | None = None, diff_rank_seed: bool = False,
                       deterministic: bool = False) -> None:
        """Seed the run (MMEngine: ``Runner.set_randomness``).

        Rank 0's seed (given or drawn) is used on every rank, so every rank initializes
        and orders the data alike; with ``diff_rank_seed`` each rank seeds its generators
        with ``seed + rank`` (its augmentations differ), while the samplers keep rank 0's
        seed, so the ranks still split one order of the data.
        """
        check_seed(seed)
        check_bool('randomness deterministic', deterministic)
        if deterministic and self.env_cfg.get('cudnn_benchmark'):
            get_logger().warning('env_cfg cudnn_benchmark=True and randomness deterministic='
                                 'True: deterministic wins, cuDNN benchmarking stays off')
        self.deterministic = deterministic
        self._sampler_seed = sync_random_seed(seed)
        self.seed = set_random_seed(self._sampler_seed, deterministic, diff_rank_seed)

    def _pick_device(self) -> torch.device:
        if torch.cuda.is_available():
            index = get_local_rank() if self._launcher == 'pytorch' else \
                torch.cuda.current_device()
            torch.cuda.set_device(index)
            return torch.device('cuda', index)
        return torch.device('cpu')

    def build_model(self, model: nn.Module | dict) -> nn.Module:
        """A model from a ``MODELS`` config, or the module itself (MMEngine: ``build_model``).

        Raises:
            TypeError: neither an ``nn.Module`` nor a dict.
        """
        if isinstance(model, dict):
            model = MODELS.build(model)
        if not isinstance(model, nn.Module):
            raise TypeError(f'model must be an nn.Module or a MODELS config dict, but got '
                            f'{type(model).__name__}: {model!r}')
        return model

    def wrap_model(self, model_wrapper_cfg: dict | None, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device and, with several processes, wrap it.

        MMEngine: ``Runner.wrap_model`` (its argument order). The wrapper is
        ``model_wrapper_cfg`` (a ``MODEL_WRAPPERS`` config, default
        ``MMDistributedDataParallel``), with ``find_unused_parameters`` from the config
        when it sets one; ``sync_bn='torch'`` in the config turns BatchNorm layers into
        ``SyncBatchNorm`` first. In a single process nothing is wrapped (as MMEngine).

        Raises:
            TypeError: ``model_wrapper_cfg`` is not a dict, or is given for a model that
                is wrapped already.
            KeyError: a wrapper type that is not registered (checked in every process,
                so a single-process test run finds it too).
        """
        if model_wrapper_cfg is not None and not isinstance(model_wrapper_cfg, dict):
            raise TypeError(f'model_wrapper_cfg must be a dict such as dict(type='
                            f"'MMDistributedDataParallel', find_unused_parameters=True), but "
                            f'got {type(model_wrapper_cfg).__name__}')
        if is_model_wrapper(model):
            if model_wrapper_cfg is not None:
                raise TypeError(f'the model is wrapped already ({type(model).__name__}), so '
                                f'model_wrapper_cfg={model_wrapper_cfg!r} cannot apply: pass '
                                'the bare model, or no model_wrapper_cfg')
            return model
        cfg = {**self._wrapper_extras, **(model_wrapper_cfg or {})}
        kind = cfg.get('type', 'MMDistributedDataParallel')
        if isinstance(kind, str) and kind not in MODEL_WRAPPERS:
            raise KeyError(f'model_wrapper_cfg type {kind!r} is not a registered model wrapper'
                           f'{suggest(kind, MODEL_WRAPPERS)}; registered: '
                           f'{choices_text(MODEL_WRAPPERS)}')
        if not (self.world_size > 1 and is_fsdp_config(cfg)):  # FSDP places the shards
            model = model.to(self.device)
        if self.world_size > 1:
            if self._sync_bn == 'torch':
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = wrap_model(model, self.device, **cfg)
        return model

    def build_visualizer(self, visualizer: Any = None) -> Visualizer:
        """The run's visualizer (MMEngine: ``Runner.build_visualizer``).

        ``None``: ``LocalVisBackend`` under ``log_dir/vis_data``; a
        :class:`~fengine.visualization.Visualizer` as it is; a dict or a list of backend
        configs (see :func:`fengine.visualization.build_visualizer`). Only the main
        process writes: the others get a visualizer without backends.
        """
        return build_visualizer(visualizer if is_main_process() else [],
                                save_dir=self.log_dir, name=self.experiment_name)

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
        ]
        lines += [f'    {key}: {value}' for key, value in self.env_cfg.items() if value]
        lines.append('-' * 60)
        self.logger.info('\n'.join(lines))
        if self.cfg:
            self.logger.info(f'Config:\n{config_text(self.cfg)}')
            self.visualizer.add_config(plain_copy(self.cfg))

    def dump_config(self) -> None:
        """Write the config to ``work_dir`` (MMEngine: ``Runner.dump_config``).

        A ``Config`` writes itself (``cfg.dump``) under its file's name; a dict is written
        as ``<timestamp>.py``, one ``key = value`` line per key (values that are not
        Python literals, such as a built model, appear as their repr: a record, not a
        loadable file). Only the main process writes; nothing without a config.
        """
        if not self.cfg or not is_main_process():
            return
        filename = getattr(self.cfg, 'filename', None)
        name = Path(filename).name if filename else f'{self.timestamp}.py'
        self.work_dir.mkdir(parents=True, exist_ok=True)
        dump = getattr(self.cfg, 'dump', None)
        if callable(dump):
            dump(str(self.work_dir / name))
        else:
            write_text_atomic(self.work_dir / name, config_text(self.cfg) + '\n')

    # -- properties MMEngine's Runner has ----------------------------------------------
    @property
    def launcher(self) -> str:
        """``'none'`` or ``'pytorch'``."""
        return self._launcher

    @property
    def distributed(self) -> bool:
        """Whether the run was launched for several processes (``launcher != 'none'``)."""
        return self._launcher != 'none'

    @property
    def model_name(self) -> str:
        """The model's class name (of the wrapped module under a wrapper)."""
        return self._model_name

    # -- hooks ------------------------------------------------------------------------
    def register_hook(self, hook: Hook | dict, priority: int | str | None = None) -> None:
        """Add a hook, after the registered hooks of the same priority (MMEngine name).

        Args:
            hook: A :class:`~fengine.hooks.Hook` or a ``HOOKS`` config (its
                ``priority`` key sets the priority).
            priority: Overrides the hook's own priority: an int in [0, 100] or a name of
                :data:`~fengine.hooks.PRIORITIES` (``'VERY_HIGH'``...); smaller runs first.

        Raises:
            TypeError: neither a Hook nor a dict.
            ValueError: an unknown priority (the hook is neither changed nor registered).
        """
        if isinstance(hook, dict):
            hook = dict(hook)
            priority = hook.pop('priority', None) if priority is None else priority
            hook.pop('priority', None)
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

    def register_default_hooks(self, hooks: dict | None = None) -> None:
        """Register :data:`DEFAULT_HOOKS`, with ``hooks`` overriding them by name
        (``None`` removes one; a new name adds a hook). MMEngine:
        ``Runner.register_default_hooks``."""
        if hooks is not None and not isinstance(hooks, dict):
            raise TypeError(f'default_hooks must be a dict of name -> hook (or None to remove '
                            f'it), but got {type(hooks).__name__}')
        merged: dict[str, Any] = dict(DEFAULT_HOOKS)
        merged.update(hooks or {})
        for hook in merged.values():
            if hook is not None:
                self.register_hook(hook)

    def register_custom_hooks(self, hooks: Iterable[Hook | dict]) -> None:
        """Register each of ``hooks`` (MMEngine: ``Runner.register_custom_hooks``)."""
        if not isinstance(hooks, (list, tuple)):
            raise TypeError(f'custom_hooks must be a list of hooks or hook configs, but got '
                            f'{type(hooks).__name__}')
        for hook in hooks:
            self.register_hook(hook)

    def register_hooks(self, default_hooks: dict | None = None,
                       custom_hooks: Iterable[Hook | dict] | None = None) -> None:
        """Register :data:`DEFAULT_HOOKS` (as ``default_hooks`` overrides) and ``custom_hooks``."""
        self.register_default_hooks(default_hooks)
        if custom_hooks is not None:
            self.register_custom_hooks(custom_hooks)

    @property
    def hooks(self) -> list[Hook]:
        """The registered hooks, in the order they run."""
        return list(self._hooks)

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Call ``fn_name`` on every hook that has it, in priority order.

        As MMEngine, a hook without the method is passed over, so a loop may call a
        point of its own (``before_my_phase``) that only its own hooks define.
        """
        for hook in self._hooks:
            method = getattr(hook, fn_name, None)
            if method is not None:
                method(self, **kwargs)

    def get_hooks_info(self) -> str:
        """The hooks of each point, in the order they run (MMEngine: ``get_hooks_info``).

        Each point lists ``(PRIORITY) HookClass`` lines for the hooks that define it
        (those that only inherit :class:`~fengine.hooks.Hook`'s empty method are left out).
        """
        names = {value: name for name, value in PRIORITIES.items()}
        sections = []
        for stage in _HOOK_STAGES:
            lines = []
            for hook in self._hooks:
                if stage in _triggered_stages(hook):
                    priority = hook.priority
                    shown = names.get(priority, priority) if isinstance(priority, int) \
                        else str(priority).upper()
                    lines.append(f'({shown:<12}) {type(hook).__name__:<35}')
            if lines:
                sections.append(f'{stage}:\n' + '\n'.join(lines) + '\n -------------------- ')
        return '\n'.join(sections)

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

    @property
    def val_interval(self) -> int:
        return self.train_loop.val_interval

    @property
    def val_begin(self) -> int:
        return self.train_loop.val_begin

    # -- dataloaders and loops (built on first use) -----------------------------------
    @staticmethod
    def build_dataloader(dataloader: DataLoader | dict, seed: int | None = None,
                         diff_rank_seed: bool = False) -> DataLoader:
        """A ``DataLoader`` from a config, or the loader itself (MMEngine:
        ``Runner.build_dataloader``); see :func:`fengine.runner.build_dataloader`."""
        return build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def _dataloader(self, name: str) -> DataLoader | None:
        """The ``name`` dataloader, built from its config on first use."""
        loader = getattr(self, f'_{name}')
        if isinstance(loader, dict):
            # The ranks' common seed: with diff_rank_seed the samplers still agree.
            loader = build_dataloader(loader, seed=self._sampler_seed, what=name)
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
            self._train_loop = self.build_train_loop(self._train_cfg)
        return self._train_loop

    def _eval_loop(self, kind: str, doing: str):
        """The ``kind`` ('val' or 'test') loop, built on first use."""
        if getattr(self, f'_{kind}_loop') is None:
            if getattr(self, f'_{kind}_dataloader') is None:
                raise RuntimeError(f'the runner has no {kind}_dataloader (and '
                                   f'{kind}_evaluator), so it cannot {doing}; pass them to '
                                   'Runner(...)')
            setattr(self, f'_{kind}_loop', self._build_eval_loop(
                kind, getattr(self, f'_{kind}_cfg')))
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

    @property
    def val_evaluator(self):
        return self.val_loop.evaluator

    @property
    def test_evaluator(self):
        return self.test_loop.evaluator

    def build_train_loop(self, loop: Any):
        """The training loop from ``train_cfg`` (MMEngine: ``Runner.build_train_loop``).

        ``dict(by_epoch=True, max_epochs=N, ...)``, ``dict(by_epoch=False, max_iters=N,
        ...)`` or ``dict(type=<LOOPS name>, ...)``; a built loop is returned as it is.

        Raises:
            TypeError: not a dict.
            ValueError: ``type`` and ``by_epoch`` together (as MMEngine), the epochs or
                iterations missing, or ``num_batch_per_epoch`` (a dataloader key).
        """
        if not isinstance(loop, dict):
            if loop is not None and callable(getattr(loop, 'run', None)):
                return loop
            raise TypeError(f'train_cfg must be a dict such as dict(by_epoch=True, '
                            f'max_epochs=5), but got {type(loop).__name__}: {loop!r}')
        cfg = dict(loop)
        refuse_loop_num_batches('train', cfg)
        if 'type' in cfg:
            if 'by_epoch' in cfg:
                raise ValueError(f"train_cfg sets both type={cfg['type']!r} and by_epoch="
                                 f"{cfg['by_epoch']!r}: the type decides; drop by_epoch")
            loop_type = cfg.pop('type')
        else:
            by_epoch = cfg.pop('by_epoch', 'max_iters' not in cfg)
            loop_type = 'EpochBasedTrainLoop' if by_epoch else 'IterBasedTrainLoop'
            needed = 'max_epochs' if by_epoch else 'max_iters'
            if needed not in cfg:
                raise ValueError(f'train_cfg with by_epoch={by_epoch} needs {needed!r}, e.g. '
                                 f'dict(by_epoch={by_epoch}, {needed}=...); got {loop}')
        if cfg.get('val_interval') is None:  # the loop's own default
            cfg.pop('val_interval', None)
        return LOOPS.build(dict(type=loop_type, **cfg),
                           default_args=dict(runner=self, dataloader=self.train_dataloader))

    def build_val_loop(self, loop: Any):
        """The validation loop from ``val_cfg`` (MMEngine: ``Runner.build_val_loop``)."""
        return self._build_eval_loop('val', loop)

    def build_test_loop(self, loop: Any):
        """The test loop from ``test_cfg`` (MMEngine: ``Runner.build_test_loop``)."""
        return self._build_eval_loop('test', loop)

    def _build_eval_loop(self, mode: str, cfg: Any):
        if cfg is not None and not isinstance(cfg, dict):
            if callable(getattr(cfg, 'run', None)):
                return cfg
            raise TypeError(f'{mode}_cfg must be a dict such as dict(fp16=True), but got '
                            f'{type(cfg).__name__}: {cfg!r}')
        cfg = dict(cfg or {})
        refuse_loop_num_batches(mode, cfg)
        loop_type = cfg.pop('type', 'ValLoop' if mode == 'val' else 'TestLoop')
        return LOOPS.build(dict(type=loop_type, **cfg), default_args=dict(
            runner=self, dataloader=self._dataloader(f'{mode}_dataloader'),
            evaluator=self.build_evaluator(getattr(self, f'_{mode}_evaluator'))))

    def build_evaluator(self, evaluator: Any) -> Evaluator:
        """An :class:`~fengine.evaluator.Evaluator` (MMEngine: ``Runner.build_evaluator``);
        see :func:`fengine.evaluator.build_evaluator`."""
        return build_evaluator(evaluator)

    def build_optim_wrapper(self, optim_wrapper: Any) -> OptimWrapper:
        """The optimizer wrapper of the model (MMEngine: ``Runner.build_optim_wrapper``);
        see :func:`fengine.optim.build_optim_wrapper`."""
        return build_optim_wrapper(self.model, optim_wrapper)

    def build_param_scheduler(self, scheduler: Any) -> list:
        """The parameter schedulers of :attr:`optim_wrapper` (built first), with the train
        loop's length (MMEngine: ``Runner.build_param_scheduler``); see
        :func:`fengine.optim.scheduler.build_param_schedulers`."""
        if self.optim_wrapper is None or isinstance(self.optim_wrapper, dict):
            raise RuntimeError('build_param_scheduler needs the optimizer wrapper built '
                               'first: runner.optim_wrapper = runner.build_optim_wrapper(...)')
        loop = self.train_loop
        return build_param_schedulers(
            scheduler, self.optim_wrapper, epoch_length=len(self.train_dataloader),
            max_epochs=loop.max_epochs if loop.by_epoch else None, max_iters=loop.max_iters)

    def scale_lr(self, optim_wrapper: OptimWrapper, auto_scale_lr: dict | None = None) -> None:
        """Multiply the learning rates by ``real batch size / base_batch_size``.

        MMEngine: ``Runner.scale_lr`` (the linear scaling rule). The real batch size is
        ``world_size * batch_size`` of the training dataloader. Does nothing unless
        ``auto_scale_lr=dict(base_batch_size=B, enable=True)``. Call it after building
        the optimizer wrapper and before the schedulers (which record the initial lrs);
        ``train()`` does.

        Raises:
            ValueError: the training dataloader has no batch size to read.
            RuntimeError: the parameter schedulers are built already.
        """
        auto_scale_lr = check_auto_scale_lr(auto_scale_lr)
        if not auto_scale_lr or not auto_scale_lr.get('enable', False):
            return
        if self.param_schedulers:
            raise RuntimeError('scale_lr must run before the parameter schedulers are built: '
                               'they keep the learning rates they start from')
        batch_size = train_batch_size(self._train_dataloader)
        real = self.world_size * batch_size
        base = auto_scale_lr['base_batch_size']
        ratio = real / base
        self.logger.info(f'LR is set based on batch size of {base} and the current batch size '
                         f'is {real}. Scaling the original LR by {ratio}.')
        inner = getattr(optim_wrapper, 'optim_wrappers', None)
        wrappers = list(inner.values()) if isinstance(inner, dict) else [optim_wrapper]
        for wrapper in wrappers:
            for group in wrapper.optimizer.param_groups:
                group['lr'] = group['lr'] * ratio

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
        self.optim_wrapper = self.build_optim_wrapper(self.optim_wrapper)
        self.scale_lr(self.optim_wrapper, self.auto_scale_lr)
        self.param_schedulers = self.build_param_scheduler(self._param_scheduler_cfg) \
            if self._param_scheduler_cfg is not None else []
        if not (self.load_from or self.resume_from):
            self._init_weights()
        self._load_or_resume(training=True)
        self.optim_wrapper.initialize_count_status(unwrap_model(self.model), loop.iter,
                                                   loop.max_iters)
        self.call_hook('before_run')
        model = loop.run()
        self.call_hook('after_run')
        return model

    def _init_weights(self) -> None:
        # A wrapper's own init_weights first: FSDP initializes each rank's shards.
        init = getattr(self.model, 'init_weights', None) if is_model_wrapper(self.model) \
            else None
        init = init or getattr(unwrap_model(self.model), 'init_weights', None)
        if callable(init):
            init()

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
    def load_or_resume(self) -> None:
        """Apply ``resume``/``load_from`` now, once (MMEngine: ``Runner.load_or_resume``).

        Before ``train()`` the optimizer and schedulers do not exist, so a resume loads
        only the weights here; ``train()`` completes it.
        """
        self._load_or_resume()

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
                self._init_weights()
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

    def _read_checkpoint(self, filename: str | os.PathLike, map_location: Any,
                         model_only: bool = False) -> dict:
        """The checkpoint file, or sharded checkpoint directory, ``filename``.

        A directory is read into new tensors made like this run's (a sharded model's
        take this rank's shards: DCP reshards; ``map_location`` does not apply), all of
        it or, with ``model_only``, all but the optimizer state.
        """
        if os.path.isdir(os.path.expanduser(os.fspath(filename))):
            checkpoint = read_sharded(os.path.expanduser(os.fspath(filename)),
                                      self._sharded_templates(),
                                      keys=(lambda key: key.startswith('state_dict.'))
                                      if model_only else None)
            if model_only:  # its tensors were not read
                checkpoint.pop('optimizer', None)
            return checkpoint
        checkpoint = load_checkpoint_file(os.fspath(filename), map_location=map_location)
        if not isinstance(checkpoint, dict):
            raise RuntimeError(f'checkpoint {os.fspath(filename)!r} holds a '
                               f'{type(checkpoint).__name__}, not a dict')
        return checkpoint

    def _sharded_templates(self) -> dict[str, torch.Tensor]:
        """This run's tensors by their key in a sharded checkpoint (the weights and, for
        the optimizer state, the parameters); what its tensors are read like."""
        model = unwrap_model(self.model)
        templates = {f'state_dict.{k}': v for k, v in model.state_dict().items()}
        wrapper = self.optim_wrapper
        if wrapper is None or isinstance(wrapper, dict):
            return templates
        prefixes = ['optimizer.'] if hasattr(wrapper, 'optimizer') else \
            [f'optimizer.{name}.' for name in wrapper.keys()]
        for prefix in prefixes:
            templates.update({f'{prefix}state.{name}': param
                              for name, param in model.named_parameters()})
        return templates

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
        load_model_state(model, state)
        if missing:
            self.logger.warning(f'missing keys in checkpoint {filename}: {", ".join(missing)}')
        if unexpected:
            self.logger.warning(f'unexpected keys in checkpoint {filename}: '
                                f'{", ".join(unexpected)}')

    def load_checkpoint(self, filename: str | os.PathLike, map_location: Any = 'cpu',
                        strict: bool = False) -> dict:
        """Load the model weights of a checkpoint (MMEngine: ``Runner.load_checkpoint``).

        Read safely (``weights_only``); shapes are checked before anything is copied, so
        a checkpoint of another model leaves this one unchanged. ``filename`` may be a
        sharded checkpoint directory (its weights are read into new tensors, resharded
        for this run, then copied in); a sharded model also loads a single file (each
        rank keeps its shards).

        Raises:
            FileNotFoundError, RuntimeError: see :func:`fengine.checkpoint.load_checkpoint_file`;
                shape mismatches (listed); with ``strict``, missing/unexpected keys.
        """
        filename = os.fspath(filename)
        checkpoint = self._read_checkpoint(filename, map_location, model_only=True)
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

        ``filename`` may be a sharded checkpoint directory, written by any number of
        ranks: it is read into new tensors made like this run's (DCP reshards them),
        checked, then loaded. Each rank takes its own random states (rank 0's when the
        checkpoint has fewer ranks).

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
        # A sharded checkpoint keys the optimizer state by parameter name.
        by_name = unwrap_model(self.model) if os.path.isdir(os.path.expanduser(filename)) \
            else None
        if by_name is None and 'optimizer' in checkpoint and \
                is_sharded_model(unwrap_model(self.model)):
            raise RuntimeError(f'checkpoint {filename!r} is a single file, but this run\'s model '
                               'is sharded: resume it from a sharded checkpoint directory, or '
                               'load the weights alone with load_from=. Nothing was loaded.')
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
                                                       checkpoint['optimizer'], filename, by_name)
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
    def _check_finite(state: dict[str, Any], iteration: int, path: Path,
                      sharded: bool = False) -> None:
        """Refuse to write non-finite weights (one host read for the whole model).

        ``sharded``: each rank checks its shards and the ranks agree (one all-reduce),
        so every rank raises, or none.
        """
        state = {k: local_tensor(v) for k, v in state.items()}
        floats = [v for v in state.values()
                  if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()]
        finite = torch.stack([torch.isfinite(v).all().to(floats[0].device) for v in floats]) \
            .all() if floats else torch.tensor(True)
        if sharded:
            finite = all_reduce(finite.to(get_comm_device(), torch.int32), op='min')
        if bool(finite):
            return
        bad = [k for k, v in state.items() if isinstance(v, torch.Tensor)
               and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
        raise NonFiniteLossError(
            f'the model has NaN or infinite values after iteration {iteration} in '
            f'{", ".join(bad[:10]) or "the shards of another rank"}'
            f'{" ..." if len(bad) > 10 else ""}; checkpoint {path.name} '
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
        the main process writes, except for a sharded model (``DTensor`` parameters,
        FSDP2): then every rank must call it, and writes its shards into the directory
        ``out_dir/<filename without .pth>`` (see
        :mod:`fengine.runner.sharded_checkpoint`), and ``last_checkpoint`` moves once
        all ranks have finished.

        Returns:
            The checkpoint's path.

        Raises:
            NonFiniteLossError: a pending loss, or a weight, is NaN or infinite.
        """
        from .. import __version__

        self.message_hub.sync()  # raises NonFiniteLossError on a NaN/inf loss: no file
        model = unwrap_model(self.model)
        sharded = is_sharded_model(model)
        path = Path(out_dir) / (checkpoint_dir_name(filename) if sharded else filename)
        loop = self._train_loop
        epoch, iteration = (loop.progress() if loop is not None else (0, 0))
        model_state = model.state_dict()
        self._check_finite(model_state, iteration, path, sharded)
        checkpoint_meta = dict(meta or {})
        # Batches of the current pass over the dataloader already trained on.
        position = loop.position(epoch, iteration) if loop is not None else 0
        checkpoint_meta.update(
            epoch=epoch, iter=iteration, seed=self.seed, deterministic=self.deterministic,
            experiment_name=self.experiment_name, time=time.strftime('%Y%m%d_%H%M%S'),
            fengine_version=__version__, torch_version=str(torch.__version__),
            dataloader_position=position, rng=get_rng_state())
        if self.cfg:  # MMEngine's meta.cfg: the config's text
            checkpoint_meta['cfg'] = config_text(self.cfg)
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
            checkpoint['optimizer'] = _optimizer_state(self.optim_wrapper,
                                                       model if sharded else None)
        if save_param_scheduler and self.param_schedulers:
            checkpoint['param_schedulers'] = _scheduler_states(self.param_schedulers)
        self.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        if sharded:  # every rank writes its shards; complete on return
            save_sharded(path, checkpoint)
        elif is_main_process():
            atomic_save(checkpoint, path)
        if is_main_process():
            # Absolute: find_last_checkpoint reads the pointer from another current
            # directory, and resolves a relative one against work_dir, not out_dir.
            write_text_atomic(self.work_dir / LAST_CHECKPOINT, str(path.resolve()))
            self.logger.info(f'Saved checkpoint {path.name} (epoch {epoch}, iter {iteration})')
        return path
