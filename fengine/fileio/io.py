"""``load`` and ``dump`` for JSON, YAML and pickle (MMEngine: ``mmengine.fileio.load/dump``).

Differences from MMEngine: YAML is read with ``yaml.safe_load`` and written with
``yaml.safe_dump``; a pickle is loaded only when the caller passes
``allow_pickle=True`` (unpickling runs whatever code the file names); files are
written atomically.
"""
from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import IO, Any

from .._errors import choices_text
from .._io import atomic_write

__all__ = ['load', 'dump', 'FILE_FORMATS']

#: The formats, by name and the suffixes that select them.
FILE_FORMATS = {'json': 'json', 'yaml': 'yaml', 'yml': 'yaml', 'pickle': 'pickle',
                'pkl': 'pickle'}


def _plain(obj: Any) -> Any:
    """Dict subclasses as dicts and tuples as lists: what JSON and safe YAML can write."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _format(file: Any, file_format: str | None) -> str:
    if file_format is None:
        if not isinstance(file, (str, os.PathLike)):
            raise ValueError('file_format is needed for a file object (or for dump without '
                             f'a file): one of {choices_text(FILE_FORMATS)}')
        suffix = Path(file).suffix.lstrip('.')
        if suffix not in FILE_FORMATS:
            raise ValueError(f'cannot tell the format of {os.fspath(file)!r} from its suffix; '
                             f'pass file_format= one of {choices_text(FILE_FORMATS)}')
        return FILE_FORMATS[suffix]
    if file_format not in FILE_FORMATS:
        raise ValueError(f'file_format must be one of {choices_text(FILE_FORMATS)}, but got '
                         f'{file_format!r}')
    return FILE_FORMATS[file_format]


def _read(stream: IO, file_format: str, kwargs: dict) -> Any:
    if file_format == 'pickle':
        return pickle.load(stream, **kwargs)
    data = stream.read()
    if isinstance(data, bytes):
        data = data.decode('utf-8')
    if file_format == 'json':
        return json.loads(data, **kwargs)
    import yaml

    if kwargs:
        raise TypeError(f'YAML is read with yaml.safe_load, which takes no options; got '
                        f'{sorted(kwargs)}')
    return yaml.safe_load(data)


def load(file: str | os.PathLike | IO, file_format: str | None = None, *,
         allow_pickle: bool = False, **kwargs: Any) -> Any:
    """Read a JSON, YAML or pickle file (MMEngine: ``mmengine.fileio.load``).

    Args:
        file: A path, or an open file (text or binary; binary for pickle).
        file_format: ``'json'``, ``'yaml'``/``'yml'``, ``'pickle'``/``'pkl'``; by
            default the path's suffix.
        allow_pickle: Required to read a pickle. Unpickling runs whatever code the file
            names, so only pass it for files you trust.
        **kwargs: Passed to ``json.loads`` or ``pickle.load``.

    Raises:
        ValueError: An unknown format, or a pickle without ``allow_pickle=True``.
        FileNotFoundError: The path does not exist.

    Example:
        >>> load(io.StringIO('{"a": [1, 2]}'), file_format='json')
        {'a': [1, 2]}
    """
    file_format = _format(file, file_format)
    if file_format == 'pickle' and not allow_pickle:
        name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else 'a pickle'
        raise ValueError(f'refusing to load {name}: unpickling can run arbitrary code. If you '
                         'trust the file, call load(..., allow_pickle=True)')
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f'{os.fspath(file)!r} does not exist')
        with open(path, 'rb') as stream:
            return _read(stream, file_format, kwargs)
    return _read(file, file_format, kwargs)


def _encode(obj: Any, file_format: str, kwargs: dict) -> bytes | str:
    if file_format == 'pickle':
        return pickle.dumps(obj, **kwargs)
    if file_format == 'json':
        return json.dumps(_plain(obj), **kwargs)
    import yaml

    kwargs.setdefault('sort_keys', False)
    return yaml.safe_dump(_plain(obj), **kwargs)


def dump(obj: Any, file: str | os.PathLike | IO | None = None,
         file_format: str | None = None, **kwargs: Any) -> str | bytes | None:
    """Write ``obj`` as JSON, YAML or a pickle (MMEngine: ``mmengine.fileio.dump``).

    Dicts of any kind are written as dicts and tuples as lists in JSON and YAML.

    Args:
        obj: What to write.
        file: A path (replaced atomically: a crash leaves the old file or the new
            one), an open file, or ``None`` to get the text back.
        file_format: ``'json'``, ``'yaml'``/``'yml'``, ``'pickle'``/``'pkl'``; by
            default the path's suffix (needed without a path).
        **kwargs: Passed to ``json.dumps``, ``yaml.safe_dump`` or ``pickle.dumps``.

    Returns:
        The text (``bytes`` for pickle) when ``file`` is ``None``, else ``None``.

    Example:
        >>> dump(dict(a=(1, 2)), file_format='json')
        '{"a": [1, 2]}'
    """
    file_format = _format(file, file_format)
    data = _encode(obj, file_format, kwargs)
    if file is None:
        return data
    raw = data.encode('utf-8') if isinstance(data, str) else data
    if isinstance(file, (str, os.PathLike)):
        atomic_write(file, lambda stream: stream.write(raw))
    elif isinstance(file, io.TextIOBase):
        if isinstance(data, bytes):
            raise TypeError('a pickle is bytes: open the file in binary mode ("wb")')
        file.write(data)
    else:
        file.write(raw)
    return None
