"""Reading ``torch.distributed.checkpoint`` (DCP) directories without arbitrary unpickling.

What DCP does as of torch 2.14: the tensors of the shard files are read with
``torch.load(weights_only=True)`` (safe), but the directory's index (``.metadata``) is
read with a plain ``pickle.load``, and non-tensor entries ("bytes" items) with
``torch.load(weights_only=False)``. Either lets a crafted checkpoint run code when it
is loaded, and torch's own weights-only unpickler cannot read ``.metadata`` (it is
written with pickle protocol 4, whose framing that unpickler refuses).

So fengine reads ``.metadata`` with an unpickler that builds only DCP's own metadata
records (dataclasses of names, sizes, offsets and dtypes) and refuses every other
global, checks that the shard files it names lie inside the directory, and refuses
bytes items altogether: fengine never writes them (non-tensor state goes to a
``weights_only`` file of its own, see :mod:`fengine.runner.sharded_checkpoint`).

This module imports ``torch.distributed.checkpoint`` (about a second), so it is
imported only when a sharded checkpoint is read or written.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from .sharded_checkpoint import METADATA_FILE

__all__ = ['read_metadata', 'SafeFileSystemReader', 'TensorsOnlyLoadPlanner']

# Every global a DCP index written by torch's FileSystemWriter refers to: its records,
# torch's dtypes, sizes and layouts, and the path it was written to (as a pathlib path).
_METADATA_RECORDS = ('Metadata', 'TensorStorageMetadata', 'BytesStorageMetadata',
                     'ChunkStorageMetadata', 'TensorProperties', 'MetadataIndex',
                     'StorageMeta', '_MEM_FORMAT_ENCODING')
_ALLOWED = {('torch.distributed.checkpoint.metadata', name) for name in _METADATA_RECORDS} | {
    ('torch.distributed.checkpoint.filesystem', '_StorageInfo'),
    ('torch', 'Size'),
    ('torch.serialization', '_get_layout'),  # a lookup of torch's layouts by name
    ('pathlib', 'PosixPath'), ('pathlib', 'WindowsPath'), ('pathlib', 'PurePosixPath'),
    ('pathlib', 'PureWindowsPath'), ('collections', 'OrderedDict'),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata records and torch dtypes; any other global is refused."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(
            f'{self._source} refers to {module}.{name}, which is not part of a '
            'torch.distributed.checkpoint index, so it was not unpickled (unpickling can '
            'run code). The directory was not written by torch.distributed.checkpoint, or '
            'it was tampered with.')


def read_metadata(directory: str | os.PathLike) -> dcp_metadata.Metadata:
    """The index of the DCP checkpoint in ``directory``, read safely.

    Raises:
        FileNotFoundError: the directory has no ``.metadata``.
        RuntimeError: the index cannot be read, holds anything but DCP's metadata
            records, or names a shard file outside the directory.
    """
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f'sharded checkpoint {os.fspath(directory)!r} has no '
                                f'{METADATA_FILE} (the index torch.distributed.checkpoint '
                                'writes last): the save did not finish')
    try:
        with open(path, 'rb') as file:
            metadata = _MetadataUnpickler(io.BufferedReader(file), os.fspath(path)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as exc:
        raise RuntimeError(f'cannot read the index {os.fspath(path)!r} of a sharded '
                           f'checkpoint: {exc}') from exc
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise RuntimeError(f'{os.fspath(path)!r} holds a {type(metadata).__name__}, not the '
                           'index of a torch.distributed.checkpoint directory')
    for info in (metadata.storage_data or {}).values():
        name = getattr(info, 'relative_path', None)
        if not isinstance(name, str) or name != os.path.basename(name) or \
                name in ('', '.', '..'):
            raise RuntimeError(f'{os.fspath(path)!r} names the shard file {name!r}, which is not '
                               'a file inside the checkpoint directory; refused')
    return metadata



class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose ``.metadata`` is read by :func:`read_metadata`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        if kwargs.get('rank') is not None:
            raise NotImplementedError('per-rank DCP indexes are not read by fengine; the '
                                      'checkpoint was written with options fengine does not use')
        metadata = read_metadata(self.path)
        if getattr(metadata, 'storage_meta', None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class TensorsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, refusing non-tensor ("bytes") items, which DCP unpickles
    with ``weights_only=False``."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        raise RuntimeError(f'the sharded checkpoint stores {read_item.dest_index.fqn!r} as a '
                           'pickled object, which fengine does not unpickle (it can run code); '
                           'fengine writes only tensors there')
