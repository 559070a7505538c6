"""Writing training checkpoints atomically, and finding the last one.

A checkpoint is first written to a temporary file in its final folder, flushed and
fsync'ed, then renamed over the final name (``os.replace`` is atomic on POSIX and
Windows), and the folder is fsync'ed so the rename survives a power cut. A process
killed at any moment leaves the old file or the new one, never a truncated one.

A process killed while writing leaves its temporary file behind
(``.<name>.<random>.tmp``: hidden, and never ending in ``.pth``, so it is never taken
for a checkpoint). The next save into that folder removes such leftovers, but only
those older than the current process: a file another live writer is still writing
is newer than that.

The atomic writing itself (and the leftover clean-up) is :mod:`fengine._io`'s; its
helpers are re-exported here for existing callers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write, is_temporary, remove_stale_temporaries, write_text_atomic
from .sharded_checkpoint import is_sharded_checkpoint

__all__ = ['atomic_save', 'write_text_atomic', 'LAST_CHECKPOINT', 'find_last_checkpoint',
           'remove_stale_temporaries', 'is_temporary']

LAST_CHECKPOINT = 'last_checkpoint'


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (see the module docstring).

    Leftover temporary files of killed writers in the same folder are removed first
    (see :func:`remove_stale_temporaries`).
    """
    return atomic_write(path, lambda file: torch.save(obj, file))


def find_last_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``work_dir/last_checkpoint`` points to, or ``None``.

    MMEngine: ``find_latest_checkpoint``. The pointer holds an absolute path (the
    runner writes one, so checkpoints in an ``out_dir`` outside ``work_dir`` are
    found); a relative one is read relative to ``work_dir``. A pointer to a file that
    no longer exists falls back to the newest ``*.pth`` in the pointer's folder, then
    in ``work_dir`` (temporary files of interrupted writes end in ``.tmp`` and are
    never candidates). A sharded checkpoint (a directory, see
    :mod:`fengine.runner.sharded_checkpoint`) counts when it is complete.
    """
    work_dir = Path(work_dir).expanduser()
    pointer = work_dir / LAST_CHECKPOINT
    folders = [work_dir]
    if pointer.is_file():
        target = Path(pointer.read_text().strip()).expanduser()
        if not target.is_absolute():
            target = work_dir / target
        if target.is_file() or is_sharded_checkpoint(target):
            return target
        # Checkpoints written to an out_dir are in the dangling pointer's folder.
        folders.insert(0, target.parent)
    for folder in folders:
        newest = _newest_checkpoint(folder)
        if newest is not None:
            return newest
    return None


def _newest_checkpoint(folder: Path) -> Path | None:
    """The most recently written ``*.pth`` or sharded checkpoint directory in ``folder``
    (never a temporary file or directory)."""
    candidates = [p for p in folder.glob('*.pth') if p.is_file() and not is_temporary(p)]
    candidates += [p for p in folder.iterdir() if is_sharded_checkpoint(p)] \
        if folder.is_dir() else []
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
