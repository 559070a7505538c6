"""Where compiled steps are kept between runs: fengine's compile cache folder.

Inductor and AOTAutograd keep what they compiled on disk (the FX graph cache and the
AOTAutograd cache, both on by default) under ``TORCHINDUCTOR_CACHE_DIR``, which torch
puts under the system's temporary folder, where it is cleared at reboot or by other
users' clean-ups. fengine points it at a folder of its own, so that the second run of a
job skips inductor's code generation and C++ compilation (dynamo's tracing still runs).

The folder, first match wins:

1. ``TORCHINDUCTOR_CACHE_DIR`` when the user set it (fengine leaves it alone);
2. ``FENGINE_COMPILE_CACHE``;
3. ``$XDG_CACHE_HOME/fengine/compile``, that is ``~/.cache/fengine/compile`` by default.

Nothing happens at import time: :func:`use_compile_cache` is called when a step is
compiled with inductor, and only then sets the variable, for this process and the
compile workers it starts.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from ..logging import print_log

__all__ = ['COMPILE_CACHE_ENV', 'compile_cache_dir', 'use_compile_cache']

COMPILE_CACHE_ENV = 'FENGINE_COMPILE_CACHE'
_TORCH_ENV = 'TORCHINDUCTOR_CACHE_DIR'
_announced: set[str] = set()  # the folders already logged in this process


def _torch_default() -> str | None:
    """The folder torch picks when nobody sets one (``/tmp/torchinductor_<user>``).

    Torch writes its choice back into ``TORCHINDUCTOR_CACHE_DIR`` the first time it asks
    for the folder, so a value equal to this one was not necessarily set by the user.
    """
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # an older torch without the helper
        return None
    return os.path.abspath(default_cache_dir())


def compile_cache_dir() -> Path:
    """The folder compiled steps are cached in: a ``TORCHINDUCTOR_CACHE_DIR`` set by the
    user, else ``FENGINE_COMPILE_CACHE``, else ``~/.cache/fengine/compile``; creates nothing.

    No MMEngine equivalent (MMEngine leaves torch's default under the temporary folder).
    """
    given = os.environ.get(_TORCH_ENV)
    if given and os.path.abspath(given) != _torch_default():
        return Path(given)
    own = os.environ.get(COMPILE_CACHE_ENV)
    if own:
        return Path(own).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(Path.home(), '.cache')
    if not os.path.isabs(base):  # the XDG rule: a relative value is to be ignored
        base = os.path.join(Path.home(), '.cache')
    return Path(base) / 'fengine' / 'compile'


def use_compile_cache() -> Path:
    """Point inductor's caches at :func:`compile_cache_dir`; return the folder.

    A folder that cannot be created (a read-only home) leaves torch's default in place,
    with a warning that names it. Logged once per folder and process.
    """
    folder = compile_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fallback = _torch_default() or tempfile.gettempdir()
        if fallback not in _announced:
            _announced.add(fallback)
            print_log(f'the compile cache folder {folder} cannot be created ({exc}); '
                      f'compiled steps are cached in {fallback} instead (set '
                      f'{COMPILE_CACHE_ENV} to choose another folder)',
                      logger='current', level=logging.WARNING)
        return Path(fallback)
    os.environ[_TORCH_ENV] = str(folder)
    if str(folder) not in _announced:
        _announced.add(str(folder))
        print_log(f'compiled steps are cached in {folder}, so the next run of this job '
                  f'compiles faster (set {COMPILE_CACHE_ENV} to move it)', logger='current')
    return folder
