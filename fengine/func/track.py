"""Exact record of which parameters opaque code wrote, without reading any values.

User-defined ``init_weights`` and custom initializers run under
:class:`WriteTracker`, a ``TorchDispatchMode`` that looks at the schema of every
ATen op and notes the storages of the tensors it mutates. It sees writes made
through ``.data``, through views and through ``torch.nn.init``, including writes
that keep the mean (which MMEngine's mean comparison misses), and it costs no
device synchronization: only tensor metadata is read.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ['WriteTracker', 'storage_ref', 'paused']

_PAUSED = [0]


def storage_ref(tensor: torch.Tensor) -> StorageWeakRef:
    """A hashable handle on the storage behind ``tensor`` (meta tensors included)."""
    return StorageWeakRef(tensor.untyped_storage())


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Writes made inside are fengine's own, recorded by their caller; trackers skip them."""
    _PAUSED[0] += 1
    try:
        yield
    finally:
        _PAUSED[0] -= 1


class WriteTracker(TorchDispatchMode):
    """Record, per parameter path, the label of the last code that wrote it.

    Args:
        storages: The storage of each tracked path.
        label: What a write seen by the tracker is attributed to.
    """

    def __init__(self, storages: Mapping[str, torch.Tensor], label: str) -> None:
        super().__init__()
        self.label = label
        self._paths: dict[StorageWeakRef, list[str]] = {}
        for path, tensor in storages.items():
            self._paths.setdefault(storage_ref(tensor), []).append(path)
        self.written: dict[str, str] = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Torch otherwise wraps __torch_dispatch__ in torch._disable_dynamo, whose first
        # call imports torch._dynamo (~4 s on 2 cores) in a process that may never
        # compile. Initialization code is not compiled, so there is nothing to disable.
        return False

    def mark(self, paths, label: str) -> None:
        """Attribute ``paths`` to ``label`` (used by fengine's own nested writes)."""
        for path in paths:
            self.written[path] = label

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _PAUSED[0]:
            for index, argument in enumerate(func._schema.arguments):
                alias = argument.alias_info
                if alias is None or not alias.is_write:
                    continue
                if argument.kwarg_only or index >= len(args):
                    value = kwargs.get(argument.name)
                else:
                    value = args[index]
                for tensor in (value if isinstance(value, (list, tuple)) else (value,)):
                    if isinstance(tensor, torch.Tensor):
                        for path in self._paths.get(storage_ref(tensor), ()):
                            self.written[path] = self.label
        return func(*args, **kwargs)
