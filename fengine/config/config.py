"""``Config``: a config file's values with attribute access (MMEngine: ``mmengine.Config``)."""
from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from .._errors import check_bool, choices_text
from .._io import write_text_atomic
from ..logging import print_log
from .config_dict import ConfigDict
from .loader import FORMATS, load_config_file
from .merge import merge_into
from .pretty import format_config, is_literal

__all__ = ['Config', 'RESERVED_KEYS', 'read_base']

#: Top-level keys a config may not define: they are ``Config`` properties.
RESERVED_KEYS = ('filename', 'text', 'pretty_text', 'env_variables')

_DUMP_FORMATS = ('.py', '.json', '.yaml', '.yml')


def _import_custom_modules(spec: Any, filename: str | None = None) -> None:
    """Import the modules of ``custom_imports=dict(imports=[...], allow_failed_imports=False)``.

    Raises:
        TypeError: ``spec`` is not such a dict (unknown keys are named).
        ImportError: A module fails to import and ``allow_failed_imports`` is False; the
            message names the module and the config file.
    """
    where = f' in {filename}' if filename else ''
    if not isinstance(spec, dict):
        raise TypeError(f'custom_imports{where} must be a dict such as dict(imports=['
                        f"'my_module'], allow_failed_imports=False), but got {spec!r}")
    unknown = [k for k in spec if k not in ('imports', 'allow_failed_imports')]
    if unknown:
        raise TypeError(f'custom_imports{where} has unknown key(s) {unknown}; accepted: '
                        "'imports', 'allow_failed_imports'")
    imports = spec.get('imports', [])
    imports = [imports] if isinstance(imports, str) else imports
    if not isinstance(imports, (list, tuple)) or not all(isinstance(m, str) for m in imports):
        raise TypeError(f'custom_imports.imports{where} must be a module name or a list of '
                        f'them, but got {imports!r}')
    allow_failed = check_bool(f'custom_imports.allow_failed_imports{where}',
                              spec.get('allow_failed_imports', False))
    for name in imports:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if allow_failed:
                print_log(f'custom_imports{where}: {name!r} failed to import and is skipped '
                          f'({exc})', logger='current', level=logging.WARNING)
                continue
            raise ImportError(
                f'custom_imports{where}: module {name!r} failed to import: {exc}. Is the '
                'folder that holds it on sys.path (PYTHONPATH)?', name=name) from exc


def _check_reserved(values: Mapping) -> None:
    for key in values:
        if key in RESERVED_KEYS:
            raise KeyError(f'{key!r} cannot be a config key: it is a property of Config '
                           f'(reserved: {choices_text(RESERVED_KEYS)})')


def _non_literal_path(value: Any, prefix: str = '') -> str | None:
    """The dotted key of the first value a config file cannot write, or ``None``."""
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_literal_path(item, f'{prefix}.{key}' if prefix else str(key))
            if found is not None:
                return found
        return None
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            found = _non_literal_path(item, f'{prefix}.{index}')
            if found is not None:
                return found
        return None
    return None if is_literal(value) else prefix


@contextlib.contextmanager
def read_base() -> Iterator[None]:
    """Marks the imports of base config files in a pure-Python config (MMEngine name).

    ``Config.fromfile`` reads the ``with read_base():`` block itself (its relative
    imports name config files, e.g. ``from .base import *``) and never runs it; the
    context manager exists so the config file is valid Python for editors and linters.
    """
    yield


class Config(Mapping):
    """A config: nested values read as items or attributes (MMEngine: ``mmengine.Config``).

    A ``Config`` is a read-write :class:`collections.abc.Mapping` over its top-level keys;
    nested dicts are :class:`ConfigDict`. :meth:`fromfile` reads ``.py``, ``.json``,
    ``.yaml`` and ``.yml`` files with their ``_base_`` files.

    Args:
        cfg_dict: The values (a dict or another mapping); ``None`` is empty.
        cfg_text: The text :attr:`text` returns; defaults to the file's text when
            ``filename`` is given.
        filename: The file the values came from.
        env_variables: The environment variables substituted into the file.

    Raises:
        TypeError: ``cfg_dict`` is not a mapping.
        KeyError: A top-level key is reserved (``filename``, ``text``,
            ``pretty_text``, ``env_variables``).

    Example:
        >>> cfg = Config(dict(model=dict(type='ResNet', depth=50)))
        >>> cfg.model.depth, cfg['model']['type']
        (50, 'ResNet')
        >>> cfg.merge_from_dict({'model.depth': 101})
        >>> cfg
        Config (path: None): {'model': {'type': 'ResNet', 'depth': 101}}
    """

    def __init__(self, cfg_dict: Mapping | None = None, cfg_text: str | None = None,
                 filename: str | os.PathLike | None = None,
                 env_variables: dict | None = None) -> None:
        if cfg_dict is None:
            cfg_dict = {}
        elif isinstance(cfg_dict, Config):
            cfg_dict = cfg_dict._cfg_dict
        elif not isinstance(cfg_dict, Mapping):
            raise TypeError(f'cfg_dict must be a dict, but got {type(cfg_dict).__name__}: '
                            f'{cfg_dict!r}')
        _check_reserved(cfg_dict)
        filename = os.fspath(filename) if filename is not None else None
        if cfg_text is None:
            cfg_text = Path(filename).read_text(encoding='utf-8') \
                if filename is not None and os.path.isfile(filename) else ''
        state = dict(_cfg_dict=ConfigDict(cfg_dict), _filename=filename, _text=cfg_text,
                     _env_variables=dict(env_variables or {}))
        self.__dict__.update(state)

    # -- building -----------------------------------------------------------------------
    @staticmethod
    def fromfile(filename: str | os.PathLike, use_predefined_variables: bool = True,
                 import_custom_modules: bool = True,
                 use_environment_variables: bool = True) -> Config:
        """Read a config file (MMEngine: ``Config.fromfile``).

        Args:
            filename: A ``.py``, ``.json``, ``.yaml`` or ``.yml`` file.
            use_predefined_variables: Substitute ``{{ fileDirname }}``,
                ``{{ fileBasename }}``, ``{{ fileBasenameNoExtension }}``,
                ``{{ fileExtname }}``.
            import_custom_modules: Import the modules the ``custom_imports`` key names.
            use_environment_variables: Substitute ``{{$NAME:default}}``.

        Raises:
            FileNotFoundError: The file or one of its ``_base_`` files is missing.
            SyntaxError: A Python config does not parse (file and line named).
            ValueError: An unsupported suffix, a ``_base_`` cycle (the chain named).
            KeyError: A reserved key, a key defined by two base files, a
                ``{{_base_.x}}`` naming a missing key.
            TypeError: A dict of the file meets a base value that is not a dict.
            ImportError: A ``custom_imports`` module fails to import.
        """
        loaded = load_config_file(filename, use_predefined_variables,
                                  use_environment_variables)
        path = os.path.expanduser(os.fspath(filename))  # as given, like MMEngine
        _check_reserved(loaded.values)
        if import_custom_modules and loaded.values.get('custom_imports'):
            _import_custom_modules(loaded.values['custom_imports'], path)
        return Config(loaded.values, cfg_text=loaded.text, filename=path,
                      env_variables=loaded.env_variables)

    @staticmethod
    def fromstring(cfg_str: str, file_format: str) -> Config:
        """Read a config from text in the format of ``file_format`` (``'.py'``, ``'.json'``,
        ``'.yaml'``, ``'.yml'``) (MMEngine: ``Config.fromstring``).

        Relative ``_base_`` paths have no folder to be relative to: use :meth:`fromfile`.
        """
        if file_format not in FORMATS:
            raise ValueError(f'file_format must be one of {choices_text(FORMATS)}, but got '
                             f'{file_format!r}')
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f'config{file_format}'
            path.write_text(cfg_str, encoding='utf-8')
            cfg = Config.fromfile(path)
        return Config(cfg._cfg_dict, cfg_text=cfg_str, env_variables=cfg.env_variables)

    # -- properties ---------------------------------------------------------------------
    @property
    def filename(self) -> str | None:
        """The file the config was read from (``None`` for one built from a dict)."""
        return self._filename

    @property
    def text(self) -> str:
        """The text of the file and of its ``_base_`` files, each after its path."""
        return self._text

    @property
    def env_variables(self) -> dict:
        """The environment variables ``{{$NAME:default}}`` substituted, with their values."""
        return dict(self._env_variables)

    @property
    def pretty_text(self) -> str:
        """The values as a Python config file that :meth:`fromfile` loads back.

        Values no config file can write (a class, an object) appear by name and make the
        text fail to load; :meth:`dump` refuses them.
        """
        return format_config(self.to_dict())

    # -- mapping ------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        return self._cfg_dict[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        _check_reserved([key])
        self._cfg_dict[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._cfg_dict[key]

    def __iter__(self) -> Iterator:
        return iter(self._cfg_dict)

    def __len__(self) -> int:
        return len(self._cfg_dict)

    def __contains__(self, key: object) -> bool:
        return key in self._cfg_dict

    def keys(self):  # type: ignore[override]
        """The top-level keys."""
        return self._cfg_dict.keys()

    def values(self):  # type: ignore[override]
        """The top-level values."""
        return self._cfg_dict.values()

    def items(self):  # type: ignore[override]
        """The top-level ``(key, value)`` pairs."""
        return self._cfg_dict.items()

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._cfg_dict.get(key, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith('__') or '_cfg_dict' not in self.__dict__:
            raise AttributeError(name)
        return getattr(self._cfg_dict, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        delattr(self._cfg_dict, name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._cfg_dict == other._cfg_dict
        return isinstance(other, Mapping) and self._cfg_dict == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f'Config (path: {self.filename}): {dict.__repr__(self._cfg_dict)}'

    # -- copies and pickling ------------------------------------------------------------
    def __copy__(self) -> Config:
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, _cfg_dict=self._cfg_dict.copy())
        return other

    copy = __copy__

    def __deepcopy__(self, memo: dict) -> Config:
        other = object.__new__(type(self))
        memo[id(self)] = other
        other.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return other

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # -- changing and writing ----------------------------------------------------------
    def to_dict(self) -> dict:
        """The values as plain dicts (MMEngine: ``Config.to_dict``)."""
        return self._cfg_dict.to_dict()

    def merge_from_dict(self, options: Mapping, allow_list_keys: bool = True) -> None:
        """Set values by dotted keys, e.g. from ``--cfg-options`` (MMEngine name).

        ``{'model.backbone.depth': 50}`` sets one nested value, creating missing dicts;
        a dict value is merged into the existing dict (``_delete_=True`` replaces it).
        With ``allow_list_keys``, a digit part indexes a list: ``'pipeline.0.type'``.
        On error the config is left as it was.

        Raises:
            TypeError: A dotted key walks into a value that is not a dict (nor a list).
            IndexError: An index is past the end of its list.
        """
        tree: dict = {}
        for full_key, value in options.items():
            if not isinstance(full_key, str) or not all(full_key.split('.')):
                raise KeyError(f'merge_from_dict takes dotted keys such as "model.depth", '
                               f'but got {full_key!r}')
            node = tree
            *parents, last = full_key.split('.')
            for part in parents:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):  # 'a=1' and 'a.b=2' together
                    raise TypeError(f'merge_from_dict: {full_key!r} reaches into '
                                    f'{part!r}, which the options also set to {child!r}')
                node = child
            node[last] = value
        _check_reserved(tree)
        merged = merge_into(tree, self._cfg_dict, allow_list_keys=allow_list_keys)
        self.__dict__['_cfg_dict'] = ConfigDict(merged)

    def dump(self, file: str | os.PathLike | None = None) -> str | None:
        """Write the config to ``file``, in the format of its suffix (MMEngine name).

        ``.py`` writes :attr:`pretty_text`; ``.json``, ``.yaml`` and ``.yml`` go through
        :func:`fengine.fileio.dump` (tuples become lists there). The file is replaced
        atomically. Without ``file``, returns the text, as Python unless the config was
        read from a JSON or YAML file.

        Raises:
            ValueError: An unsupported suffix, or a value no config file can hold (a
                class, a tensor): the message names its key.
        """
        from ..fileio import dump as dump_data

        values = self.to_dict()
        if file is None:
            suffix = Path(self.filename).suffix if self.filename else '.py'
        else:
            suffix = Path(file).suffix
        if suffix not in _DUMP_FORMATS:
            raise ValueError(f'cannot dump a config to {os.fspath(file)!r}: the suffix must be '
                             f'one of {choices_text(_DUMP_FORMATS)}')
        bad = _non_literal_path(values)
        if bad is not None:
            value = self._cfg_dict
            for part in bad.split('.'):
                value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
            raise ValueError(f'cannot dump the config: {bad} is {value!r}, which a config file '
                             'cannot hold (only str, int, float, bool, None, dicts, lists and '
                             'tuples); set it to a registry name instead')
        if suffix == '.py':
            text = format_config(values)
            if file is None:
                return text
            write_text_atomic(file, text)
            return None
        file_format = 'yaml' if suffix in ('.yaml', '.yml') else 'json'
        if file is None:
            return dump_data(values, file_format=file_format)
        dump_data(values, file, file_format=file_format)
        return None
