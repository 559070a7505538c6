"""Writing training checkpoints atomically, and finding the last one.

A checkpoint is first written to a temporary file in its final folder, flushed and
fsync'ed, then renamed over the final name (``os.replace`` is atomic on POSIX and
Windows), and the folder is fsync'ed so the rename survives a power cut. A process
killed at any moment leaves the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ['atomic_save', 'write_text_atomic', 'LAST_CHECKPOINT', 'find_last_checkpoint']

LAST_CHECKPOINT = 'last_checkpoint'


def _fsync_dir(folder: Path) -> None:
    if os.name != 'posix':
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Interrupted or failed: the temporary file goes, the old checkpoint stays.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (see the module docstring)."""
    return _atomic_write(Path(path), lambda file: torch.save(obj, file))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace a small text file atomically (the ``last_checkpoint`` pointer)."""
    return _atomic_write(Path(path), lambda file: file.write(text.encode()))


def find_last_checkpoint(work_dir: str | os.PathLike) -> Path | None:
    """The checkpoint ``work_dir/last_checkpoint`` points to, or ``None``.

    MMEngine: ``find_latest_checkpoint``. A pointer to a file that no longer exists
    falls back to the newest ``*.pth`` in ``work_dir``.
    """
    work_dir = Path(work_dir)
    pointer = work_dir / LAST_CHECKPOINT
    if pointer.is_file():
        target = Path(pointer.read_text().strip())
        if not target.is_absolute():
            target = work_dir / target
        if target.is_file():
            return target
    candidates = [p for p in work_dir.glob('*.pth') if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
