"""Reading a config file into a plain dict: ``_base_`` inheritance, text substitutions,
running a Python config (MMEngine: ``Config._file2dict``).

The steps for one file:

1. Its text gets ``{{ fileDirname }}``-style predefined variables and
   ``{{$ENV_VAR:default}}`` environment variables substituted, and each
   ``{{_base_.a.b}}`` replaced by a quoted placeholder string.
2. Its ``_base_`` files (a path or a list, relative to the file) are read the same way,
   recursively; a cycle is an error naming the chain. Base files may not define the
   same key twice.
3. A Python file is run with ``_base_`` bound to (a deep copy of) its bases' merged
   values; JSON and YAML files are parsed (YAML with ``safe_load`` only). Names that
   start with ``__``, modules, functions and the names a top-level ``import`` binds
   are not config values.
4. Placeholders are replaced by the base values they name, then the file's values are
   merged over its bases' (:func:`fengine.config.merge.merge_into`).

MMEngine's pure-Python style is read too: ``with read_base():`` holding relative imports
(``from .base import *``, ``from .schedule import optim_wrapper as optim``) binds those
base values (copies) as plain Python names before the file runs; the file then changes
them with Python (``optim.optimizer.lr = 0.1``), and what it ends with is the config, as
in MMEngine. Other imports in such a file run normally (MMEngine defers them).

Nothing is written to disk: the substituted text is compiled under the file's own
name, so a traceback points at the config's real lines.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import re
import types
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import suggest
from .config_dict import ConfigDict
from .merge import merge_into

__all__ = ['BASE_KEY', 'FORMATS', 'LoadedConfig', 'load_config_file']

BASE_KEY = '_base_'
DEPRECATION_KEY = '_deprecation_'
FORMATS = ('.py', '.json', '.yaml', '.yml')

_PREDEFINED = ('fileDirname', 'fileBasename', 'fileBasenameNoExtension', 'fileExtname')
_ENV_VAR = re.compile(r'\{\{[\'"]?\s*\$(\w+)\s*:\s*(\S*?)\s*[\'"]?\}\}')
_BASE_VAR = re.compile(r'\{\{\s*' + BASE_KEY + r'\.([\w.]+)\s*\}\}')


@dataclass
class LoadedConfig:
    """What reading a config file gives: its values, text and environment variables."""
    values: dict
    text: str
    env_variables: dict = field(default_factory=dict)


def _substitute_predefined(text: str, path: Path) -> str:
    values = dict(fileDirname=str(path.parent), fileBasename=path.name,
                  fileBasenameNoExtension=path.stem, fileExtname=path.suffix)
    for name in _PREDEFINED:
        # Forward slashes: a Windows path must not put escapes into a string literal.
        text = re.sub(r'\{\{\s*' + name + r'\s*\}\}',
                      lambda _, v=values[name]: v.replace('\\', '/'), text)
    return text


def _substitute_env(text: str, path: Path) -> tuple[str, dict]:
    used: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            used[name] = os.environ[name]
            return os.environ[name]
        if not default:
            raise KeyError(f'{path}: the environment variable {name!r} is not set and '
                           f'{match.group(0)} gives no default; set it, or write '
                           f'{{{{${name}:default}}}}')
        return default

    return _ENV_VAR.sub(replace, text), used


def _mark_base_vars(text: str) -> tuple[str, dict[str, str]]:
    """Replace each ``{{_base_.x.y}}`` with a unique quoted placeholder."""
    placeholders: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        token = f'_{match.group(1)}_{uuid.uuid4().hex[:8]}'
        placeholders[token] = match.group(1)
        return f'"{token}"'

    return _BASE_VAR.sub(replace, text), placeholders


def _lookup(base: dict, dotted: str, path: Path) -> Any:
    value: Any = base
    walked = []
    for part in dotted.split('.'):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            keys = list(value) if isinstance(value, dict) else []
            where = '_base_' + ''.join(f'.{w}' for w in walked)
            raise KeyError(f'{path}: {{{{_base_.{dotted}}}}} names {part!r}, which {where} '
                           f'does not have.{suggest(part, map(str, keys))} '
                           f'Keys there: {", ".join(map(repr, keys)) or "none"}')
        walked.append(part)
    return copy.deepcopy(value)


def _fill_base_vars(value: Any, placeholders: dict[str, str], base: dict, path: Path) -> Any:
    if isinstance(value, str) and value in placeholders:
        return _lookup(base, placeholders[value], path)
    if isinstance(value, dict):
        return {k: _fill_base_vars(v, placeholders, base, path) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_fill_base_vars(v, placeholders, base, path) for v in value)
    return value


def _parse_python(text: str, path: Path) -> ast.Module:
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise SyntaxError(f'config file {path}, line {exc.lineno}: {exc.msg}',
                          (str(path), exc.lineno, exc.offset, exc.text)) from None


def _python_bases(tree: ast.Module, path: Path) -> list:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(f'{path}, line {node.lineno}: {BASE_KEY} must be a path or '
                                 'a list of paths written as string literals') from None
    return []


def _is_read_base(node: ast.stmt) -> bool:
    if not (isinstance(node, ast.With) and len(node.items) == 1):
        return False
    call = node.items[0].context_expr
    return isinstance(call, ast.Call) and (
        isinstance(call.func, ast.Name) and call.func.id == 'read_base'
        or isinstance(call.func, ast.Attribute) and call.func.attr == 'read_base')


def _take_read_base(tree: ast.Module, path: Path) -> list[tuple[Path, list | None, int]]:
    """Remove the ``with read_base():`` blocks; return what they import.

    Each import is ``(file, [(name, alias), ...] or None for *, line)``.
    """
    found: list[tuple[Path, list | None, int]] = []
    body = []
    for node in tree.body:
        if not _is_read_base(node):
            body.append(node)
            continue
        for item in node.body:
            if not (isinstance(item, ast.ImportFrom) and item.level > 0 and item.module):
                raise ValueError(
                    f'{path}, line {item.lineno}: inside "with read_base():" only relative '
                    'imports of config files are allowed, such as "from .base import *" or '
                    '"from ..schedules.sgd import optim_wrapper"')
            parts = ['..'] * (item.level - 1) + item.module.split('.')
            base_path = path.parent.joinpath(*parts[:-1], parts[-1] + '.py')
            names = None if item.names[0].name == '*' else [
                (alias.name, alias.asname or alias.name) for alias in item.names]
            found.append((base_path, names, item.lineno))
    tree.body = body
    return found


def _check_base_list(bases: Any, path: Path) -> list[str]:
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, (list, tuple)) or not all(isinstance(b, str) for b in bases):
        raise TypeError(f'{path}: {BASE_KEY} must be a path or a list of paths, but got '
                        f'{bases!r}')
    for base in bases:
        if '::' in base:
            raise ValueError(f'{path}: {BASE_KEY} entry {base!r} names a config of another '
                             "package ('package::path'), which fengine does not support; "
                             'copy the file next to this one and name it by its path')
    return list(bases)


def _strip_base_assignments(tree: ast.Module) -> ast.Module:
    """The module without ``_base_ = ...``: ``_base_`` must stay bound to the bases."""
    tree.body = [node for node in tree.body if not (
        isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets))]
    return tree


def _imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split('.')[0])
    return names


def _run_python(tree: ast.Module, path: Path, base: dict, inherited: dict) -> dict:
    namespace: dict[str, Any] = {BASE_KEY: ConfigDict(copy.deepcopy(base)),
                                 '__file__': str(path), '__name__': '__fengine_config__'}
    namespace.update(ConfigDict(copy.deepcopy(inherited)))
    code = compile(tree, str(path), 'exec')
    try:
        exec(code, namespace)  # noqa: S102 - running the config file is what loading it means
    except Exception as exc:
        if hasattr(exc, 'add_note'):
            exc.add_note(f'(while running the config file {path})')
        raise
    skip = _imported_names(tree) | {BASE_KEY}
    return {key: value for key, value in namespace.items()
            if not key.startswith('__') and key not in skip
            and not isinstance(value, (types.ModuleType, types.FunctionType))}


def _parse_data(text: str, path: Path) -> dict:
    try:
        if path.suffix == '.json':
            values = json.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError
        raise ValueError(f'config file {path} is not valid JSON: {exc}') from None
    except Exception as exc:
        if type(exc).__module__.startswith('yaml'):
            raise ValueError(f'config file {path} is not valid YAML: {exc}') from None
        raise
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise TypeError(f'config file {path} must hold a mapping at the top, but holds a '
                        f'{type(values).__name__}')
    return values


def load_config_file(filename: str | os.PathLike,
                     use_predefined_variables: bool = True,
                     use_environment_variables: bool = True,
                     _chain: tuple[Path, ...] = ()) -> LoadedConfig:
    """Read a ``.py``, ``.json``, ``.yaml`` or ``.yml`` config with its ``_base_`` files.

    Args:
        filename: The config file.
        use_predefined_variables: Substitute ``{{ fileDirname }}``, ``{{ fileBasename }}``,
            ``{{ fileBasenameNoExtension }}`` and ``{{ fileExtname }}``.
        use_environment_variables: Substitute ``{{$NAME:default}}`` with the variable's
            value, else the default.

    Returns:
        The merged values (plain dicts), the text of every file read (each preceded by
        its path, bases first) and the environment variables used.

    Raises:
        FileNotFoundError: The file (or a base file) does not exist.
        ValueError: An unsupported suffix, a ``_base_`` cycle, invalid JSON/YAML.
        SyntaxError: A Python config does not parse (the message names file and line).
        KeyError: Base files define the same key, or ``{{_base_.x}}`` names a key the
            bases lack.
    """
    # normpath: 'configs/../base.py' is 'base.py' (cycles and messages see one name).
    path = Path(os.path.normpath(Path(filename).expanduser().absolute()))
    if path.suffix not in FORMATS:
        raise ValueError(f'config file {path} has the suffix {path.suffix!r}; config files '
                         f'are {", ".join(FORMATS)}')
    if path in _chain:
        chain = ' -> '.join(str(p) for p in (*_chain[_chain.index(path):], path))
        raise ValueError(f'the {BASE_KEY} files form a cycle: {chain}')
    if not path.is_file():
        where = f' (a {BASE_KEY} of {_chain[-1]})' if _chain else ''
        raise FileNotFoundError(f'config file {path} does not exist{where}')
    original = path.read_text(encoding='utf-8')
    text = _substitute_predefined(original, path) if use_predefined_variables else original
    env_variables: dict[str, str] = {}
    if use_environment_variables:
        text, env_variables = _substitute_env(text, path)
    text, placeholders = _mark_base_vars(text)

    if path.suffix == '.py':
        tree = _parse_python(text, path)
        bases = _python_bases(tree, path)
        base_imports = _take_read_base(tree, path)
        if bases and base_imports:
            raise ValueError(f'{path} uses both {BASE_KEY} and "with read_base():"; '
                             'inherit in one way only')
    else:
        data = _parse_data(text, path)
        bases = data.pop(BASE_KEY, [])
    base_values: dict = {}
    base_origin: dict[str, Path] = {}
    texts = []
    for base in _check_base_list(bases, path):
        base_path = (path.parent / base).absolute()
        loaded = load_config_file(base_path, use_predefined_variables,
                                  use_environment_variables, (*_chain, path))
        duplicates = [k for k in loaded.values if k in base_values]
        if duplicates:
            raise KeyError(f'{path}: the {BASE_KEY} files {base_origin[duplicates[0]]} and '
                           f'{base_path} both define {duplicates}; a key may come from '
                           'one base only')
        base_values.update(loaded.values)
        base_origin.update(dict.fromkeys(loaded.values, base_path))
        env_variables.update(loaded.env_variables)
        texts.append(loaded.text)

    if path.suffix == '.py':
        inherited: dict = {}
        for base_path, names, line in base_imports:
            loaded = load_config_file(base_path, use_predefined_variables,
                                      use_environment_variables, (*_chain, path))
            texts.append(loaded.text)
            env_variables.update(loaded.env_variables)
            for name, alias in names or [(k, k) for k in loaded.values]:
                if name not in loaded.values:
                    raise ImportError(f'{path}, line {line}: {base_path} has no config value '
                                      f'{name!r}.{suggest(name, loaded.values)} Values there: '
                                      f'{", ".join(map(repr, loaded.values)) or "none"}')
                inherited[alias] = loaded.values[name]
        values = _run_python(_strip_base_assignments(tree), path, base_values, inherited)
    else:
        values = data
    values = _fill_base_vars(values, placeholders, base_values, path)
    if DEPRECATION_KEY in values:
        info = values.pop(DEPRECATION_KEY) or {}
        message = f'the config file {path} is deprecated.'
        if isinstance(info, dict) and 'expected' in info:
            message += f' Use {info["expected"]} instead.'
        if isinstance(info, dict) and 'reference' in info:
            message += f' See {info["reference"]}.'
        warnings.warn(message, DeprecationWarning, stacklevel=2)
    merged = merge_into(values, base_values)
    texts.append(f'{path}\n{original}')
    return LoadedConfig(values=merged, text='\n'.join(texts), env_variables=env_variables)
