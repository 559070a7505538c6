"""Sharded checkpoints: one directory that every rank writes its shards into.

A model whose parameters are ``DTensor`` s (sharded with ``fully_shard``, FSDP2) is too
large for one rank to gather and ``torch.save``. Its checkpoint is a directory written
through ``torch.distributed.checkpoint`` (DCP), e.g. ``epoch_3/``:

- ``.metadata`` and ``__<rank>_0.distcp``: DCP's index and each rank's shards of every
  tensor (model weights, optimizer state). DCP reshards on load: a checkpoint written
  by N ranks loads into M ranks, or into one process with whole tensors.
- ``fengine_state.pth`` (rank 0): everything else, as plain data (meta, message hub,
  schedulers, optimizer hyper-parameters), with a placeholder where each tensor was.
- ``rank_<r>.pth`` (each rank): that rank's random states.

**Atomic at the directory level.** Every rank writes into a hidden temporary directory
``.<name>.<random>.tmp/``; once all ranks report success, rank 0 renames it to its
final name and then moves ``last_checkpoint``. A save killed at any moment leaves the
previous checkpoint and the pointer to it untouched; the next save removes the
leftover. **Safe loading**: the tensors are read with ``weights_only``, DCP's index
with an unpickler that builds only DCP's records (:mod:`fengine.runner._dcp_safe`),
and the state files with ``weights_only=True``.

A consolidated single-file export (:func:`export_consolidated`; on the command line
``python -m fengine.checkpoint export-consolidated DIR OUT``) gathers the model's
weights for inference or for ``load_from`` in a run that is not sharded.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import dist
from .._io import atomic_write, fsync_dir, is_temporary, remove_stale_temporaries
from ..checkpoint import load_checkpoint_file

__all__ = ['STATE_FILE', 'METADATA_FILE', 'is_sharded_model', 'local_tensor', 'load_model_state',
           'is_sharded_checkpoint', 'checkpoint_dir_name', 'check_sharded_checkpoint', 'split_tensors', 'join_tensors', 'save_sharded',
           'read_sharded', 'load_consolidated', 'export_consolidated', 'remove_checkpoint',
           'optimizer_state_by_name', 'optimizer_state_by_index']

STATE_FILE = 'fengine_state.pth'
# DCP's index, written last by its FileSystemWriter (named here: checking for it must not
# import torch.distributed.checkpoint, which takes a second).
METADATA_FILE = '.metadata'
_RANK_FILE = 'rank_{}.pth'
# Stands for a tensor in fengine_state.pth: (_TENSOR, its key in the DCP directory).
_TENSOR = '__fengine_sharded_tensor__'
# Per-rank entries of the meta: each rank keeps its own random states.
_RANK_META = ('rng', 'pass_rng')


def _is_dtensor(value: Any) -> bool:
    if 'torch.distributed.tensor' not in sys.modules:
        return False  # no DTensor can exist: spare the import
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def is_sharded_model(model: nn.Module) -> bool:
    """Whether ``model`` has ``DTensor`` parameters (sharded by ``fully_shard``)."""
    return any(_is_dtensor(p) for p in model.parameters())


def local_tensor(value: Any) -> Any:
    """This rank's shard of a ``DTensor``; anything else as it is."""
    return value.to_local() if _is_dtensor(value) else value


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state, strict=False)``; a sharded model also takes whole
    tensors (a single-file checkpoint): each rank keeps its shards of them."""
    if is_sharded_model(model) and not any(_is_dtensor(v) for v in state.values()):
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             set_model_state_dict)

        set_model_state_dict(model, dict(state),
                             options=StateDictOptions(full_state_dict=True, strict=False))
    else:
        model.load_state_dict(state, strict=False)


def checkpoint_dir_name(filename: str) -> str:
    """The directory a checkpoint file name stands for: ``epoch_3.pth`` -> ``epoch_3``."""
    return filename[:-len('.pth')] if filename.endswith('.pth') else filename


def _missing_files(path: Path) -> list[str]:
    return [name for name in (METADATA_FILE, STATE_FILE) if not (path / name).is_file()]


def is_sharded_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a complete sharded checkpoint directory (not a temporary one)."""
    path = Path(path)
    return path.is_dir() and not is_temporary(path) and not _missing_files(path)


def check_sharded_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` as a Path, after checking that it is a complete sharded checkpoint.

    Raises:
        FileNotFoundError: no such directory, or it lacks a file every sharded
            checkpoint has (named).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f'sharded checkpoint {os.fspath(path)!r} does not exist')
    if not path.is_dir():
        raise FileNotFoundError(f'{os.fspath(path)!r} is a file, not a sharded checkpoint '
                                'directory')
    missing = _missing_files(path)
    if missing:
        raise FileNotFoundError(
            f'{os.fspath(path)!r} is not a complete sharded checkpoint: it has no '
            f'{" and no ".join(missing)} (a sharded checkpoint directory holds .metadata, '
            f'{STATE_FILE}, rank_<r>.pth and the ranks\' *.distcp shard files)')
    return path


# -- tensors apart from the rest -----------------------------------------------------------
def split_tensors(tree: Any, prefix: str = '') -> tuple[dict[str, torch.Tensor], Any]:
    """``(tensors by dotted key, the tree with a placeholder for each)``; a pure function.

    Dicts (with str or int keys), lists and tuples are walked; every tensor leaf is taken out,
    named by its path (``'optimizer.state.fc.weight.exp_avg'``). The rest of the tree
    is plain data for a ``weights_only`` file.

    Raises:
        ValueError: two paths give the same key (a dict key holding a dot), or a dict
            key is neither a str nor an int.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            if path in tensors:
                raise ValueError(f'two entries of the checkpoint are both named {path!r}; a '
                                 'sharded checkpoint names each tensor by its dotted path')
            tensors[path] = node
            return (_TENSOR, path)
        if isinstance(node, Mapping):
            bad = [k for k in node if not isinstance(k, (str, int))]
            if bad:
                raise ValueError(f'checkpoint entry {path or "(top)"!r} has keys {bad[:3]} that '
                                 'are neither str nor int; a sharded checkpoint needs them')
            return {k: walk(v, f'{path}.{k}' if path else str(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            items = [walk(v, f'{path}.{i}' if path else str(i)) for i, v in enumerate(node)]
            return items if isinstance(node, list) else tuple(items)
        return node

    return tensors, walk(tree, prefix)


def join_tensors(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of :func:`split_tensors`: the placeholders replaced by ``tensors``.

    A placeholder whose key ``tensors`` lacks stays out: its dict entry is dropped
    (the caller read only part of the checkpoint, e.g. the weights).
    """
    def is_placeholder(node: Any) -> bool:
        return isinstance(node, tuple) and len(node) == 2 and node[0] == _TENSOR

    def walk(node: Any) -> Any:
        if is_placeholder(node):
            return tensors.get(node[1])
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()
                    if not is_placeholder(v) or v[1] in tensors}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, tuple):
            return tuple(walk(v) for v in node)
        return node

    return walk(skeleton)


def _placeholders(skeleton: Any) -> list[str]:
    """The tensor keys of a state file's tree, in order."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, tuple) and len(node) == 2 and node[0] == _TENSOR:
            found.append(node[1])
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(skeleton)
    return found


# -- writing -----------------------------------------------------------------------------
def save_sharded(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` as the sharded checkpoint directory ``path``, atomically.

    Every rank must call it (it is collective; a call on one rank alone waits for the
    others until the process group's timeout) with its own ``checkpoint``: its shards of
    the model and optimizer tensors (``DTensor`` s) and its random states
    (``meta['rng']``, ``meta['pass_rng']``); the rest is taken from rank 0. Plain
    tensors (buffers, Adam's step counts) must be the same on every rank: DCP writes
    one rank's copy.

    Returns:
        The final directory, complete on every rank when this returns.

    Raises:
        RuntimeError: a rank failed to write (the checkpoint is not written, the
            previous one and ``last_checkpoint`` are untouched), on every rank.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    meta = dict(checkpoint.get('meta') or {})
    rank_state = {key: meta.pop(key) for key in _RANK_META if key in meta}
    tensors, skeleton = split_tensors({**checkpoint, 'meta': meta})
    skeleton['meta']['world_size'] = dist.get_world_size()
    rank = dist.get_rank()

    # Rank 0 names the temporary directory; the others learn the name.
    names: list[Any] = [None]
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent, directories=True)
        names[0] = tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    tmp = Path(dist.broadcast_object_list(names)[0])
    error: BaseException | None = None
    try:
        dcp.save(tensors, checkpoint_id=tmp,
                 storage_writer=dcp.FileSystemWriter(tmp, sync_files=True))
        atomic_write(tmp / _RANK_FILE.format(rank), lambda f: torch.save(rank_state, f))
        if rank == 0:
            atomic_write(tmp / STATE_FILE, lambda f: torch.save(skeleton, f))
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - reported to every rank
        error = exc
    # Doubles as the barrier: no rank goes on before every rank has written its files.
    failed = dist.all_reduce(torch.tensor([0 if error is None else 1],
                                          device=dist.get_comm_device()), op='max')
    if int(failed.item()):
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        detail = f': {_last_line(error)}' if error is not None else \
            ' (another rank failed; its log names the error)'
        raise RuntimeError(f'the sharded checkpoint {os.fspath(path)!r} was not written: rank '
                           f'{rank} of {dist.get_world_size()} reports a failure{detail}. '
                           'The previous checkpoint and last_checkpoint are unchanged.') \
            from error
    if rank == 0:
        fsync_dir(tmp)
        _replace_directory(tmp, path)
    dist.barrier()  # the final name exists for every rank when save_sharded returns
    return path


def _last_line(exc: BaseException) -> str:
    """What went wrong, in one line: DCP's errors carry each rank's whole traceback
    (the full error stays chained to the one raised)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f'{type(exc).__name__}: {lines[-1]}' if lines else type(exc).__name__


def _replace_directory(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is moved aside first, then removed.

    A rename cannot replace a non-empty directory. Between the two renames ``path`` is
    briefly missing: a process killed there leaves the new checkpoint in a temporary
    directory, and ``find_last_checkpoint`` falls back to the newest complete one.
    """
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# -- reading -----------------------------------------------------------------------------
def _read_state(path: Path) -> tuple[Any, dict]:
    """``(the state file's tree, this rank's random states)``, read with ``weights_only``."""
    skeleton = load_checkpoint_file(os.fspath(path / STATE_FILE))
    if not isinstance(skeleton, dict):
        raise RuntimeError(f'{os.fspath(path / STATE_FILE)!r} holds a '
                           f'{type(skeleton).__name__}, not the dict fengine writes')
    own = path / _RANK_FILE.format(dist.get_rank())
    rank_file = own if own.is_file() else path / _RANK_FILE.format(0)
    rank_state = load_checkpoint_file(os.fspath(rank_file)) if rank_file.is_file() else {}
    return skeleton, rank_state if isinstance(rank_state, dict) else {}


def _blank(metadata: Any, key: str, template: torch.Tensor | None, path: Path) -> torch.Tensor:
    """A tensor for DCP to load ``key`` into: shaped as ``template`` (sharded alike), or,
    without one, a whole tensor of the stored size and dtype."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    stored = metadata.state_dict_metadata.get(key)
    if not isinstance(stored, TensorStorageMetadata):
        kind = 'missing from' if stored is None else 'not a tensor in'
        raise RuntimeError(f'sharded checkpoint {os.fspath(path)!r}: the entry {key!r} is '
                           f'{kind} its index (.metadata); the directory is damaged or was '
                           'written by another program. Nothing was loaded.')
    dtype = stored.properties.dtype
    if template is not None and tuple(template.shape) == tuple(stored.size):
        return torch.empty_like(template, dtype=dtype)
    return torch.empty(tuple(stored.size), dtype=dtype)


def _template(templates: Mapping[str, torch.Tensor], key: str) -> torch.Tensor | None:
    """``templates[key]``, else the template of its parent key, else ``None``."""
    if key in templates:
        return templates[key]
    parent = key.rpartition('.')[0]
    return templates.get(parent) if parent else None


def read_sharded(path: str | os.PathLike,
                 templates: Mapping[str, torch.Tensor] | None = None,
                 keys: Any = None, alone: bool = False) -> dict[str, Any]:
    """Read the sharded checkpoint ``path`` into new tensors; the inverse of :func:`save_sharded`.

    Collective when a process group exists (every rank calls it), unless ``alone``.
    Nothing the caller
    holds is written to: the tensors are fresh, so a check that fails afterwards
    leaves the model and optimizer as they were.

    Args:
        path: The checkpoint directory.
        templates: Tensors by dotted key (``'state_dict.fc.weight'``) that the loaded
            ones are made like: a ``DTensor`` template gets this rank's shard of the
            new layout (resharding); others, and keys without one, are read whole. A
            key without a template of its own takes its parent key's when the shapes
            agree (``'optimizer.state.fc.weight.exp_avg'`` that of
            ``'optimizer.state.fc.weight'``, the parameter).
        keys: A predicate on the dotted keys, to read only some (e.g. the weights);
            ``None``: all.
        alone: Read in this process only, even when a process group exists (the
            other ranks do not call it).

    Returns:
        The checkpoint as :func:`save_sharded` got it, with this rank's random states
        in ``meta`` (rank 0's when the checkpoint has fewer ranks).

    Raises:
        FileNotFoundError: the directory or one of its files is missing (named).
        RuntimeError: a file is damaged or unsafe to read.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from ._dcp_safe import SafeFileSystemReader, TensorsOnlyLoadPlanner, read_metadata

    path = check_sharded_checkpoint(path)
    skeleton, rank_state = _read_state(path)
    metadata = read_metadata(path)
    templates = templates or {}
    wanted = [k for k in _placeholders(skeleton) if keys is None or keys(k)]
    blanks = {key: _blank(metadata, key, _template(templates, key), path) for key in wanted}
    if blanks:
        try:
            with warnings.catch_warnings():
                # Reading in one process without a group is what was asked for.
                warnings.filterwarnings('ignore', message='torch.distributed is disabled')
                dcp.load(blanks, storage_reader=SafeFileSystemReader(path),
                         planner=TensorsOnlyLoadPlanner(),
                         no_dist=alone or not dist.is_distributed())
        except (Exception, CheckpointException) as exc:  # noqa: BLE001 - DCP's error is a
            # BaseException that wraps the failures of every rank.
            raise RuntimeError(f'cannot read sharded checkpoint {os.fspath(path)!r}: a shard '
                               f'file is damaged or missing ({_last_line(exc)}). Nothing was '
                               'loaded.') from exc
    checkpoint = join_tensors(skeleton, blanks)
    meta = checkpoint.setdefault('meta', {})
    if isinstance(meta, dict):
        meta.update(rank_state)
    return checkpoint


def load_consolidated(path: str | os.PathLike) -> dict[str, Any]:
    """The whole sharded checkpoint in this process, with whole tensors on the CPU.

    MMEngine has none (its ``FSDPStrategy`` gathers a full state dict while training).

    Needs no model, and no other rank (it reads alone, also in a distributed run):
    the tensors are made from the index. Memory: every tensor of the checkpoint at
    once. The optimizer state is keyed by parameter name.
    """
    return read_sharded(path, alone=True)


def export_consolidated(directory: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the model weights of a sharded checkpoint as one weights-only file.

    MMEngine has none (its ``FSDPStrategy`` gathers a full state dict while training);
    on the command line: ``python -m fengine.checkpoint export-consolidated DIR OUT``.

    ``out`` ending in ``.safetensors`` is written with safetensors (it must be
    installed); otherwise ``torch.save`` writes ``{'state_dict': ..., 'meta': ...}``
    holding only tensors and plain values, which ``torch.load(weights_only=True)``, a
    non-sharded ``Runner(load_from=out)`` and ``Pretrained`` init read. Written
    atomically. Reads in this process alone (no process group needed; in a
    distributed run, call it on one rank). Memory: the whole model at once.

    Returns:
        ``out`` as a Path.

    Raises:
        FileNotFoundError, RuntimeError: see :func:`read_sharded`.
        ValueError: ``out`` is a directory.
        ImportError: a ``.safetensors`` output without safetensors installed.
    """
    out = Path(out).expanduser()
    if out.is_dir():
        raise ValueError(f'export_consolidated writes one file, but {os.fspath(out)!r} is a '
                         'directory; name the file, e.g. model.safetensors or model.pth')
    checkpoint = read_sharded(directory, keys=lambda key: key.startswith('state_dict.'),
                              alone=True)
    weights = {k: v.contiguous() for k, v in checkpoint.get('state_dict', {}).items()}
    meta = checkpoint.get('meta', {})
    plain = {k: meta[k] for k in ('epoch', 'iter', 'fengine_version', 'torch_version',
                                  'experiment_name', 'world_size') if k in meta}
    if out.suffix == '.safetensors':
        try:
            from safetensors.torch import save as safetensors_bytes
        except ImportError as exc:
            raise ImportError(f'writing {os.fspath(out)!r} needs safetensors (pip install '
                              'safetensors); or name a .pth file') from exc
        data = safetensors_bytes(weights, metadata={k: str(v) for k, v in plain.items()})
        atomic_write(out, lambda file: file.write(data))
    else:
        atomic_write(out, lambda file: torch.save({'state_dict': weights, 'meta': plain}, file))
    return out


def remove_checkpoint(path: str | os.PathLike) -> bool:
    """Remove a checkpoint file, or a sharded checkpoint directory (only a complete one,
    never another folder); ``True`` when something was removed."""
    path = Path(path)
    if path.is_file():
        path.unlink()
        return True
    folder = path.with_name(checkpoint_dir_name(path.name))
    if is_sharded_checkpoint(folder):
        shutil.rmtree(folder)
        return True
    return False


# -- the optimizer, keyed by parameter name ----------------------------------------------
def _group_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str | None]]:
    """The name of each parameter of each group of ``optimizer`` in ``model``."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [[names.get(id(param)) for param in group['params']]
            for group in optimizer.param_groups]


def optimizer_state_by_name(state: dict, optimizer: torch.optim.Optimizer,
                            model: nn.Module) -> dict:
    """``optimizer.state_dict()`` (keyed by position) keyed by parameter name instead.

    As DCP's ``get_optimizer_state_dict`` does: a name stays valid when another
    number of ranks, or no sharding, loads the checkpoint. Unlike it, an optimizer
    without state is not stepped to create its state first (that would count a step
    of Adam).

    Raises:
        RuntimeError: a parameter of ``optimizer`` is not one of ``model``.
    """
    groups = _group_names(model, optimizer)
    if any(name is None for names in groups for name in names):
        raise RuntimeError('the optimizer holds a parameter that is not a parameter of the '
                           'model, so a sharded checkpoint cannot name its state')
    by_index = {index: name for saved, names in zip(state['param_groups'], groups)
                for index, name in zip(saved['params'], names)}
    named = dict(state)
    named['state'] = {by_index[index]: value for index, value in state['state'].items()}
    named['param_groups'] = [{**group, 'params': [by_index[i] for i in group['params']]}
                             for group in state['param_groups']]
    return named


def optimizer_state_by_index(saved: Any, optimizer: torch.optim.Optimizer, model: nn.Module,
                             filename: str) -> dict:
    """The inverse of :func:`optimizer_state_by_name` for this run's ``optimizer``.

    Raises:
        RuntimeError: the saved groups do not name the same parameters as this run's
            (the first difference is named); nothing is changed.
    """
    if not isinstance(saved, dict) or not isinstance(saved.get('param_groups'), list) or \
            not isinstance(saved.get('state'), dict):
        raise RuntimeError(f'checkpoint {filename!r}: its optimizer entry is not an optimizer '
                           "state dict (no 'state' and 'param_groups'). Nothing was loaded.")
    groups = _group_names(model, optimizer)
    saved_groups = [list(group.get('params', ())) for group in saved['param_groups']]
    if saved_groups != groups:
        detail = (f'{len(saved_groups)} param groups, this run has {len(groups)}'
                  if len(saved_groups) != len(groups) else next(
                      f'param group {i} holds {sorted(set(a) ^ set(b))[:5]} in only one of them'
                      if set(a) != set(b) else f'param group {i} lists its parameters in '
                      'another order' for i, (a, b) in enumerate(zip(saved_groups, groups))
                      if a != b))
        raise RuntimeError(f'checkpoint {filename!r}: its optimizer does not fit this run\'s: '
                           f'{detail}; is the optim_wrapper config (paramwise options, frozen '
                           'parameters) the same? Nothing was loaded.')
    own = optimizer.state_dict()['param_groups']
    by_name = {name: index for names, group in zip(groups, own)
               for name, index in zip(names, group['params'])}
    unknown = sorted(set(saved['state']) - set(by_name))
    if unknown:
        raise RuntimeError(f'checkpoint {filename!r}: optimizer state for {unknown[:5]}, which '
                           'the optimizer does not hold. Nothing was loaded.')
    indexed = dict(saved)
    indexed['state'] = {by_name[name]: value for name, value in saved['state'].items()}
    indexed['param_groups'] = [{**group, 'params': list(own_group['params'])}
                               for group, own_group in zip(saved['param_groups'], own)]
    return indexed
