"""Writing files atomically, with no fengine dependencies (so any fengine package can
import it without an import cycle).

A file is first written to a temporary file in its final folder, flushed and fsync'ed,
then renamed over the final name (``os.replace`` is atomic on POSIX and Windows), and
the folder is fsync'ed so the rename survives a power cut. A process killed at any
moment leaves the old file or the new one, never a truncated one.

A process killed while writing leaves its temporary file behind
(``.<name>.<random>.tmp``: hidden, and never ending in ``.pth``, so it is never taken
for a checkpoint). The next write into that folder removes such leftovers, but only
those older than the current process: a file another live writer is still writing
is newer than that.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Callable

__all__ = ['atomic_write', 'write_text_atomic', 'remove_stale_temporaries', 'is_temporary',
           'fsync_dir']

_TMP_SUFFIX = '.tmp'
# What tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp') makes: a dot, the final
# name, a dot, 8 characters of tempfile's alphabet, '.tmp'.
_TMP_PATTERN = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


def _process_start_time() -> float:
    """When this process started (wall clock); now, where ``/proc`` is missing."""
    try:
        # Field 22 of /proc/self/stat: the start, in clock ticks after boot.
        ticks = int(Path('/proc/self/stat').read_text().rsplit(')', 1)[1].split()[19])
        uptime = float(Path('/proc/uptime').read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


# Per process id: a process forked after this module was imported (a forkserver's
# child, a dataloader worker) has started later than its parent.
_started: dict[int, float] = {}
# The slack absorbs the coarse clocks of /proc's start time and of file times; a
# leftover younger than that is removed by a later save.
_SLACK_S = 0.25


def _start_time() -> float:
    pid = os.getpid()
    if pid not in _started:
        _started[pid] = min(_process_start_time(), time.time()) - _SLACK_S
    return _started[pid]


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like one of :func:`atomic_write`'s temporary files."""
    return bool(_TMP_PATTERN.match(Path(path).name))


def remove_stale_temporaries(folder: str | os.PathLike, *,
                             directories: bool = False) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``.

    Only files named like this module's temporaries (see :func:`is_temporary`) and
    last modified before the current process started are removed; with
    ``directories``, such directories too (those of sharded checkpoints, with all
    they hold).

    Returns:
        The removed paths.
    """
    removed: list[Path] = []
    started = _start_time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not (entry.name.endswith(_TMP_SUFFIX) and _TMP_PATTERN.match(entry.name)):
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= started:
                continue
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            elif directories and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # another process cleaned it up first
            continue
    return removed


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op outside POSIX."""
    if os.name != 'posix':
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Replace ``path`` atomically with what ``write(file)`` writes to a binary file.

    Leftover temporary files of killed writers in the same folder are removed first
    (see :func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Interrupted or failed: the temporary file goes, the old file stays.
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace a small text file atomically (the ``last_checkpoint`` pointer).

    Leftover temporary files in its folder are removed first, as by :func:`atomic_write`.
    """
    return atomic_write(path, lambda file: file.write(text.encode()))
