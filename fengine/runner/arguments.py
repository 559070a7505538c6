"""Checks and merges of the Runner's arguments (MMEngine: ``Runner.__init__``'s).

Each function takes what a user passed and returns it checked (or merged with the
config's key of the same name), raising an error that names the argument otherwise.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from .._errors import check_bool, check_choice, check_int, check_keys, choices_text

__all__ = ['LAUNCHERS', 'check_launcher', 'check_auto_scale_lr', 'train_batch_size',
           'merge_cfg_key', 'wrapper_extras', 'check_sync_bn', 'check_runner_type',
           'experiment_name_of', 'with_preprocessor', 'refuse_loop_num_batches']

LAUNCHERS = ('none', 'pytorch')
_AUTO_SCALE_LR_KEYS = ('base_batch_size', 'enable')
_SYNC_BN = ('torch',)


def check_launcher(launcher: Any) -> str:
    """``launcher``, if fengine supports it; MMEngine's ``'slurm'``/``'mpi'`` point to torchrun."""
    if launcher in ('slurm', 'mpi'):
        raise ValueError(f"launcher={launcher!r} (MMEngine's) is not supported: fengine joins "
                         "the process group that torchrun sets up. Start the script with "
                         "torchrun and pass launcher='pytorch' (supported: "
                         f'{choices_text(LAUNCHERS)})')
    check_choice('launcher', launcher, LAUNCHERS)
    return launcher


def check_auto_scale_lr(auto_scale_lr: Any) -> dict | None:
    """``auto_scale_lr`` as a dict (``base_batch_size`` required with ``enable=True``)."""
    if auto_scale_lr is None:
        return None
    if not isinstance(auto_scale_lr, Mapping):
        raise TypeError(f'auto_scale_lr must be a dict such as dict(base_batch_size=16, '
                        f'enable=True), but got {type(auto_scale_lr).__name__}: '
                        f'{auto_scale_lr!r}')
    cfg = dict(auto_scale_lr)
    check_keys('auto_scale_lr', cfg, _AUTO_SCALE_LR_KEYS)
    check_bool('auto_scale_lr enable', cfg.get('enable', False))
    if cfg.get('enable', False) or 'base_batch_size' in cfg:
        if 'base_batch_size' not in cfg:
            raise ValueError("auto_scale_lr with enable=True needs 'base_batch_size', the "
                             'batch size the learning rates were set for')
        check_int('auto_scale_lr base_batch_size', cfg['base_batch_size'], minimum=1,
                  accepted='a positive int')
    return cfg


def train_batch_size(dataloader: Any) -> int:
    """The batch size of a training dataloader or its config (MMEngine's rule)."""
    if isinstance(dataloader, DataLoader):
        size = dataloader.batch_size
        if size is None:
            size = getattr(dataloader.batch_sampler, 'batch_size', None)
    elif isinstance(dataloader, dict):
        sampler = dataloader.get('batch_sampler')
        size = dataloader.get('batch_size', sampler.get('batch_size')
                              if isinstance(sampler, dict) else None)
    else:
        size = None
    if not isinstance(size, int):
        raise ValueError('auto_scale_lr needs the batch size of the training dataloader, but '
                         'it has none to read: set batch_size (or batch_sampler=dict(..., '
                         'batch_size=...))')
    return size


def merge_cfg_key(key: str, argument: Any, cfg_read: dict, unset: tuple = (None,)) -> Any:
    """The argument, or the config's value of the same name; both and different: an error."""
    if key not in cfg_read:
        return argument
    value = cfg_read[key]
    if any(argument is u for u in unset) or argument == value:
        return value
    raise ValueError(f'{key} is given both as an argument ({argument!r}) and in cfg '
                     f'({value!r}): keep one')


def wrapper_extras(cfg_read: dict, model_wrapper_cfg: dict | None) -> dict:
    """DDP options the config gives outside ``model_wrapper_cfg`` (MMEngine's keys)."""
    if 'find_unused_parameters' not in cfg_read:
        return {}
    value = check_bool('find_unused_parameters', cfg_read['find_unused_parameters'])
    if model_wrapper_cfg is not None and \
            model_wrapper_cfg.get('find_unused_parameters', value) != value:
        raise ValueError(f'find_unused_parameters={value!r} in the config, but '
                         f'model_wrapper_cfg sets {model_wrapper_cfg["find_unused_parameters"]!r}'
                         ': keep one')
    return {'find_unused_parameters': value}


def check_sync_bn(sync_bn: Any) -> str | None:
    """The config's ``sync_bn``: ``None`` or ``'torch'`` (MMCV's is refused by name)."""
    if sync_bn is None:
        return None
    if sync_bn == 'mmcv':
        raise ValueError("sync_bn='mmcv' needs MMCV's SyncBatchNorm, which fengine does not "
                         "have: use sync_bn='torch' (torch.nn.SyncBatchNorm)")
    check_choice('sync_bn', sync_bn, _SYNC_BN)
    return sync_bn


def check_runner_type(runner_type: Any) -> None:
    """Refuse a ``runner_type`` other than ``'Runner'`` (FlexibleRunner is not implemented)."""
    if runner_type is None or runner_type == 'Runner' or \
            getattr(runner_type, '__name__', None) == 'Runner':
        return
    raise ValueError(f'runner_type={runner_type!r} is not supported: fengine has one Runner '
                     "(MMEngine's FlexibleRunner and its DeepSpeed, FSDP and ColossalAI "
                     "strategies are not implemented); use runner_type='Runner' or drop it")


def experiment_name_of(name: str | None, cfg: Mapping, timestamp: str) -> str:
    """MMEngine's rule: ``<name>_<timestamp>``, else ``<config file stem>_<timestamp>``,
    else the timestamp."""
    if name is not None:
        if not isinstance(name, str) or not name:
            raise TypeError(f'experiment_name must be a non-empty str, but got {name!r}')
        return f'{name}_{timestamp}'
    filename = getattr(cfg, 'filename', None)
    if filename:
        return f'{Path(filename).stem}_{timestamp}'
    return timestamp


def with_preprocessor(model: Any, data_preprocessor: Any) -> Any:
    """MMEngine's ``data_preprocessor`` argument: the ``data_preprocessor`` of a model config."""
    if data_preprocessor is None:
        return model
    if not isinstance(model, dict):
        raise ValueError(f'data_preprocessor is given, but the model is built already '
                         f'({type(model).__name__}), so it cannot take it: pass it to the '
                         "model's constructor, or give the model as a config")
    own = model.get('data_preprocessor')
    if own is not None and own != data_preprocessor:
        raise ValueError(f'the model config has data_preprocessor={own!r} and the Runner got '
                         f'data_preprocessor={data_preprocessor!r}: keep one')
    return {**model, 'data_preprocessor': data_preprocessor}


def refuse_loop_num_batches(mode: str, cfg: dict) -> None:
    """``num_batch_per_epoch`` belongs to the dataloader's config: say so."""
    if 'num_batch_per_epoch' in cfg:
        raise ValueError(f'{mode}_cfg sets num_batch_per_epoch, which is a key of the '
                         f'dataloader (as in MMEngine): {mode}_dataloader=dict(..., '
                         f"num_batch_per_epoch={cfg['num_batch_per_epoch']!r})")
