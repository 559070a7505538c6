"""Read some rows of a checkpoint's tensors without reading the rest of the file.

A rank of a model sharded by rows (FSDP2's ``Shard(0)``) needs rows
``[first, stop)`` of each parameter. :func:`open_rows` opens a checkpoint and returns,
per key, a :class:`RowSource` that knows the tensor's shape from the file's header
and reads rows on demand:

- ``.safetensors``: ``safe_open`` checks the header; the rows' bytes are then read at
  the offsets the header gives, and nothing else;
- torch's zip format (``torch.save``'s default for ``.pth``, ``.pt``, ``.bin``):
  ``torch.load(mmap=True, weights_only=True)`` maps the storages from the file, so
  only the pages of the rows copied out are read, and :meth:`RowSource.release`
  drops them from the process once copied;
- the legacy format (``torch.save(..., _use_new_zipfile_serialization=False)``)
  cannot be mapped: it is read whole, and a log line says so.

A URL is downloaded once into ``torch.hub``'s cache and then read like a local file.
The safety rules are :func:`~fengine.checkpoint.load_checkpoint_file`'s: ``weights_only``
by default, the same errors for a missing, truncated or untrusted file.
"""
from __future__ import annotations

import ctypes
import json
import logging
import math
import mmap
import os
import struct
import sys
import zipfile
from typing import Any

import torch

from . import checkpoint as ckpt
from .logging import print_log

__all__ = ['RowSource', 'open_rows']


class RowSource:
    """One tensor of a checkpoint, read only when and as far as asked.

    Attributes:
        shape: The tensor's full shape, from the file's header (nothing read yet).
    """

    def __init__(self, shape: torch.Size, read_rows, read_all, release=None) -> None:
        self.shape = torch.Size(shape)
        self._read_rows = read_rows
        self._read_all = read_all
        self._release = release

    def rows(self, first: int, stop: int) -> torch.Tensor:
        """Rows ``[first, stop)`` along dim 0 (the whole tensor for a 0-dim one).

        For a memory-mapped file the result is a view whose pages are read when it is
        copied; for safetensors it is a new tensor holding just those rows.
        """
        if not self.shape:
            return self._read_all()
        if not 0 <= first <= stop <= self.shape[0]:
            raise IndexError(f'rows [{first}, {stop}) are outside a tensor of shape '
                             f'{tuple(self.shape)}')
        return self._read_rows(first, stop)

    def read(self) -> torch.Tensor:
        """The whole tensor."""
        return self._read_all()

    def release(self) -> None:
        """Say that what :meth:`rows` returned has been copied: a memory-mapped tensor's
        pages leave the process's resident memory."""
        if self._release is not None:
            self._release()

    @property
    def row_numel(self) -> int:
        """Elements in one row: turns a flat (row-major) offset into a row."""
        return math.prod(self.shape[1:])

    def __repr__(self) -> str:
        return f'RowSource(shape={tuple(self.shape)})'


def _tensor_source(tensor: torch.Tensor) -> RowSource:
    return RowSource(tensor.shape, lambda first, stop: tensor[first:stop], lambda: tensor)


def _mapped_source(tensor: torch.Tensor) -> RowSource:
    """A source over a tensor memory-mapped from the file: rows are views, read when
    copied; :meth:`RowSource.release` drops the pages (they stay in the page cache)."""
    return RowSource(tensor.shape, lambda first, stop: tensor[first:stop],
                     lambda: tensor.clone(), lambda: _drop_pages(tensor))


def _drop_pages(tensor: torch.Tensor) -> None:
    """``madvise(MADV_DONTNEED)`` on the whole pages of ``tensor``'s mapped storage.

    Touching some rows maps more of the file than those rows (the kernel maps large page
    cache folios whole), which would count in the process's resident memory as if the
    file had been read whole. The mapping is private and never written, so dropped pages
    are only read again from the file if touched again. Only called for storages that
    ``torch.load(mmap=True)`` returned (anonymous memory would be zeroed).
    """
    if _MADVISE is None:
        return
    storage = tensor.untyped_storage()
    start, page = storage.data_ptr(), mmap.PAGESIZE
    low = -(-start // page) * page
    high = (start + storage.nbytes()) // page * page
    if high > low:
        _MADVISE(low, high - low, _MADV_DONTNEED)  # advice: a failure changes no value


def _madvise():
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADV_DONTNEED = 4  # Linux's value
_MADVISE = _madvise()


# safetensors' dtype names, for the ones torch has.
_SAFETENSORS_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
    'U8': torch.uint8, 'BOOL': torch.bool, 'F8_E4M3': torch.float8_e4m3fn,
    'F8_E5M2': torch.float8_e5m2,
}


def _safetensors_rows(path: str, filename: str) -> dict[str, RowSource]:
    from safetensors import SafetensorError, safe_open

    def reading(read):
        def guarded(*args, **kwargs):
            try:
                return read(*args, **kwargs)
            except (SafetensorError, OSError) as exc:
                raise ckpt.corrupt_safetensors(filename, exc) from exc
        return guarded

    # safe_open checks the header and that the data covers the file exactly; the handle
    # stays open while any of its sources is referenced.
    handle = reading(safe_open)(path, framework='pt', device='cpu')
    with open(path, 'rb') as f:
        (size,) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(size))
    sources = {}
    for key in handle.keys():
        entry = header[key]
        dtype = _SAFETENSORS_DTYPES.get(entry['dtype'])
        read_all = reading(lambda key=key: handle.get_tensor(key))
        if dtype is None:
            part = reading(handle.get_slice)(key)
            read_rows = reading(lambda first, stop, part=part: part[first:stop])
        else:
            # Plain reads, not safetensors' slices of its memory map: touching some rows of a
            # mapped file can map much more of it into the process (large page-cache folios).
            start = 8 + size + entry['data_offsets'][0]
            read_rows = reading(lambda first, stop, entry=entry, dtype=dtype, start=start:
                                _read_rows(path, filename, start, entry['shape'], dtype,
                                           first, stop))
        sources[key] = RowSource(entry['shape'], read_rows, read_all)
    return sources


def _read_rows(path: str, filename: str, start: int, shape: list[int], dtype: torch.dtype,
               first: int, stop: int) -> torch.Tensor:
    """Rows ``[first, stop)`` of a row-major tensor stored at byte ``start`` of ``path``."""
    out = torch.empty((stop - first, *shape[1:]), dtype=dtype)
    if out.numel() == 0:
        return out
    buffer = out.view(-1).view(torch.uint8).numpy()
    with open(path, 'rb') as f:
        f.seek(start + first * buffer.nbytes // (stop - first))
        got = f.readinto(buffer)
    if got != buffer.nbytes:
        raise OSError(f'the file ends {buffer.nbytes - got} bytes early')
    return out


def open_rows(filename: str, map_location: Any = 'cpu',
              weights_only: bool = True) -> dict[str, RowSource]:
    """Open a checkpoint for reading rows of its tensors; the state dict, lazily.

    The keys are those :func:`~fengine.checkpoint.state_dict_from` gives for the same
    file: a ``state_dict`` or ``model`` entry is looked into, and a leading
    ``module.`` is stripped.

    Args:
        filename: A local path or an http(s) URL.
        map_location: As for ``torch.load``; a device is only where a file that cannot
            be mapped is read to (rows are read to the CPU and copied where the
            parameter lives), a function is passed on to ``torch.load``.
        weights_only: Refuse to unpickle anything but tensors (the default).

    Returns:
        Key -> :class:`RowSource`. The file has been opened and its header checked;
        no tensor data has been read.

    Raises:
        FileNotFoundError, ConnectionError, RuntimeError, TypeError: as
            :func:`~fengine.checkpoint.load_checkpoint_file` and
            :func:`~fengine.checkpoint.state_dict_from`.
    """
    path = ckpt.local_checkpoint_path(filename)
    filename = os.fspath(filename)
    if path.endswith('.safetensors'):
        return ckpt.strip_ddp_prefix(_safetensors_rows(path, filename))
    if zipfile.is_zipfile(path):
        if callable(map_location):
            # Where the function puts the storages is its own: read them as plain tensors.
            raw = ckpt.torch_load(path, filename, map_location, weights_only, mmap=True)
            mapped = False
        else:
            # A device map_location would copy every storage there: map on the CPU instead.
            raw = ckpt.torch_load(path, filename, 'cpu', weights_only, mmap=True)
            mapped = True
        state = ckpt.state_dict_from(raw, filename)
        make = _mapped_source if mapped else _tensor_source
        return {key: make(tensor) for key, tensor in state.items()}
    raw = ckpt.torch_load(path, filename, map_location, weights_only)
    print_log(f'checkpoint {filename!r} is in the legacy (non-zip) torch.save format, '
              'which cannot be memory-mapped, so it was read whole. Save it again with '
              "torch.save's default format to read only each rank's rows.",
              logger='current', level=logging.INFO)
    state = ckpt.state_dict_from(raw, filename)
    return {key: _tensor_source(tensor) for key, tensor in state.items()}
