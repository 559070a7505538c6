"""Where scalars and configs are written (MMEngine: ``mmengine.visualization.vis_backend``).

A backend gets a folder and writes nothing until it is first asked to, so building
one (on every rank, in a dry run) leaves no empty folders behind.
"""
from __future__ import annotations

import importlib
import json
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import write_text_atomic
from ..registry import VISBACKENDS

__all__ = ['BaseVisBackend', 'LocalVisBackend', 'TensorboardVisBackend']


def check_image(owner: str, image: Any) -> np.ndarray:
    """``image`` as a ``uint8`` array of shape (H, W, 3), RGB, as MMEngine's ``add_image``
    takes it (values are cast to ``uint8`` as MMEngine does).

    Raises:
        TypeError: ``image`` is not a NumPy array.
        ValueError: Its shape is not (H, W, 3).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f'{owner}: image must be a numpy array of shape (H, W, 3) in RGB '
                        f'order, but got {type(image).__name__}')
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f'{owner}: image must have shape (H, W, 3) in RGB order, but got '
                         f'shape {image.shape}')
    return np.ascontiguousarray(image.astype(np.uint8, copy=False))


def _is_one_element(value: Any) -> bool:
    """Whether ``value`` is a one-element tensor or array, or a NumPy scalar (``.item()``
    gives it as a Python scalar). The one test of the scalar conversions here and in
    ``LoggerHook``."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    return isinstance(value, (np.ndarray, np.generic)) and value.size == 1


def _scalar(name: str, value: Any) -> Any:
    """A Python number for a one-element tensor or array; other values unchanged.

    Raises:
        ValueError: ``value`` is a tensor or array with more than one element.
    """
    if _is_one_element(value):
        return value.item()
    if isinstance(value, (torch.Tensor, np.ndarray)):
        raise ValueError(f'scalar {name!r} must be a number or a one-element tensor, but got '
                         f'a {type(value).__name__} of shape {tuple(value.shape)}')
    return value


def _jsonable(obj: Any) -> Any:
    """``obj`` with every part JSON can write; anything else becomes its ``repr``."""
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if _is_one_element(obj):
        return obj.item()
    return repr(obj)


class BaseVisBackend:
    """What every backend provides (MMEngine: ``BaseVisBackend``).

    Subclasses write ``add_scalars``; ``add_scalar`` calls it with one entry.

    Args:
        save_dir: The folder the backend writes to; created on the first write.
    """

    def __init__(self, save_dir: str | os.PathLike) -> None:
        if not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f'{type(self).__name__}: save_dir must be a str or a path, but '
                            f'got {type(save_dir).__name__}: {save_dir!r}')
        self._save_dir = Path(save_dir)

    @property
    def save_dir(self) -> Path:
        """The folder the backend writes to (it may not exist yet)."""
        return self._save_dir

    @property
    def experiment(self) -> Any:
        """The underlying writer (MMEngine name); the backend itself when it has none."""
        return self

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Record the run's config."""

    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        """Record an RGB image; backends that cannot store images keep this no-op
        (MMEngine's interface does the same)."""

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        """Record one scalar at ``step``."""
        self.add_scalars({name: value}, step=step, **kwargs)

    def add_scalars(self, scalar_dict: dict, step: int = 0, **kwargs: Any) -> None:
        """Record several scalars at ``step``."""
        raise NotImplementedError(f'{type(self).__name__} must implement add_scalars(scalar_dict, '
                                  'step) (BaseVisBackend is the interface)')

    def close(self) -> None:
        """Flush and release what the backend holds."""

    def __repr__(self) -> str:
        return f'{type(self).__name__}(save_dir={str(self._save_dir)!r})'


def _check_scalar_dict(owner: str, scalar_dict: Any) -> None:
    if not isinstance(scalar_dict, dict):
        raise TypeError(f'{owner}.add_scalars: scalar_dict must be a dict, but got '
                        f'{type(scalar_dict).__name__}: {scalar_dict!r}')


@VISBACKENDS.register_module()
class LocalVisBackend(BaseVisBackend):
    """Scalars as JSON lines and the config as JSON on disk (MMEngine: ``LocalVisBackend``).

    Each :meth:`add_scalars` call appends one line ``{"loss": 0.5, ..., "step": 10}``
    to ``save_dir/scalars.json`` (MMEngine's format, read back line by line with
    ``json.loads``). A line is written with a single ``write`` call on a file opened
    in append mode, so a run killed mid-training leaves whole lines only.

    Args:
        save_dir: The folder; created on the first write.
        scalar_save_file: The scalar file's name inside ``save_dir``.
        config_save_file: The config file's name inside ``save_dir`` (MMEngine writes
            ``config.py`` from its ``Config``; fengine's configs are dicts, so JSON).

    Example:
        >>> import json, tempfile
        >>> backend = LocalVisBackend(tempfile.mkdtemp())
        >>> backend.add_scalars({'loss': torch.tensor(0.5), 'lr': 0.01}, step=3)
        >>> json.loads((backend.save_dir / 'scalars.json').read_text())
        {'loss': 0.5, 'lr': 0.01, 'step': 3}
    """

    def __init__(self,
                 save_dir: str | os.PathLike,
                 scalar_save_file: str = 'scalars.json',
                 config_save_file: str = 'config.json') -> None:
        super().__init__(save_dir)
        for what, name in (('scalar_save_file', scalar_save_file),
                           ('config_save_file', config_save_file)):
            if not isinstance(name, str) or not name.endswith('.json'):
                raise ValueError(f'LocalVisBackend: {what} must be a file name ending in '
                                 f'".json", but got {name!r}')
        self._scalar_save_file = self._save_dir / scalar_save_file
        self._config_save_file = self._save_dir / config_save_file

    def _append_line(self, path: Path, record: dict) -> None:
        line = json.dumps(record, default=repr) + '\n'
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, 'a', encoding='utf-8') as f:
            f.write(line)

    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        """Write ``image`` (RGB, (H, W, 3)) to ``save_dir/vis_image/{name}_{step}.png``.

        Raises:
            TypeError, ValueError: ``image`` is not an (H, W, 3) array.
            ImportError: Pillow, which encodes the PNG, is not installed.
        """
        image = check_image(type(self).__name__, image)
        try:  # Pillow comes with torchvision (fengine[vision]); TensorBoard uses it too
            from PIL import Image
        except ImportError as exc:
            raise ImportError('LocalVisBackend.add_image writes PNG files with Pillow: pip '
                              f'install pillow (or pip install fengine[vision]). ({exc})') from exc
        folder = self._save_dir / 'vis_image'
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f'{name}_{_scalar("step", step)}.png')

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Write ``config`` to ``save_dir/config.json``; what JSON cannot hold, as repr."""
        text = json.dumps(_jsonable(config), indent=2)
        # Written whole, then renamed: a reader never sees half a config.
        write_text_atomic(self._config_save_file, text + '\n')

    def add_scalars(self,
                    scalar_dict: dict,
                    step: int = 0,
                    file_path: str | None = None,
                    **kwargs: Any) -> None:
        """Append ``{**scalar_dict, "step": step}`` as one line of ``scalars.json``.

        One-element tensors and numpy scalars become Python numbers. As in MMEngine,
        a ``'step'`` key already in ``scalar_dict`` is kept.

        Args:
            scalar_dict: Names to numbers.
            step: The iteration (or epoch) the values belong to.
            file_path: Also append the line to this ``.json`` file inside ``save_dir``
                (MMEngine's option), e.g. ``'val.json'``.

        Raises:
            TypeError: ``scalar_dict`` is not a dict.
            ValueError: A value is a tensor of several elements, or ``file_path`` does
                not end in ``.json`` or names the scalar file itself.
        """
        _check_scalar_dict(type(self).__name__, scalar_dict)
        record = {str(k): _scalar(str(k), v) for k, v in scalar_dict.items()}
        record.setdefault('step', _scalar('step', step))
        if file_path is not None:
            if not isinstance(file_path, str) or not file_path.endswith('.json'):
                raise ValueError(f'LocalVisBackend.add_scalars: file_path must be a file '
                                 f'name ending in ".json", but got {file_path!r}')
            extra = self._save_dir / file_path
            if extra == self._scalar_save_file:
                raise ValueError(f'LocalVisBackend.add_scalars: file_path {file_path!r} is '
                                 'the scalar file itself; pass another name or None')
            self._append_line(extra, record)
        self._append_line(self._scalar_save_file, record)


def _require_tensorboard() -> None:
    try:
        importlib.import_module('tensorboard')
    except ImportError as exc:
        raise ImportError(
            'TensorboardVisBackend needs the tensorboard package: pip install tensorboard '
            f'(or pip install fengine[tensorboard]). ({exc})') from exc


@VISBACKENDS.register_module()
class TensorboardVisBackend(BaseVisBackend):
    """TensorBoard event files (MMEngine: ``TensorboardVisBackend``).

    Writes with ``torch.utils.tensorboard.SummaryWriter(save_dir)``, created on the
    first write. Values that are not numbers (strings, None, ...) are skipped.

    Args:
        save_dir: The folder of the event files; created on the first write.

    Raises:
        ImportError: tensorboard is not installed; the message says what to install.
    """

    def __init__(self, save_dir: str | os.PathLike) -> None:
        super().__init__(save_dir)
        _require_tensorboard()
        self._writer: Any = None

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter`` (created here if no write has happened yet)."""
        if self._writer is None:
            _require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self._save_dir))
        return self._writer

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Record ``config`` as the text summary ``config`` (pretty JSON)."""
        text = json.dumps(_jsonable(config), indent=2)
        # TensorBoard renders text as Markdown; indenting keeps it a code block.
        self.experiment.add_text('config', '    ' + text.replace('\n', '\n    '))
        self._writer.flush()

    def add_image(self, name: str, image: np.ndarray, step: int = 0, **kwargs: Any) -> None:
        """Record ``image`` (RGB, (H, W, 3)) as the image summary ``name`` at ``step``.

        Raises:
            TypeError, ValueError: ``image`` is not an (H, W, 3) array.
        """
        image = check_image(type(self).__name__, image)
        self.experiment.add_image(name, image, _scalar('step', step), dataformats='HWC')
        self._writer.flush()

    def add_scalars(self, scalar_dict: dict, step: int = 0, **kwargs: Any) -> None:
        """Record each numeric entry as the scalar summary of its name at ``step``.

        Raises:
            TypeError: ``scalar_dict`` is not a dict.
            ValueError: A value is a tensor of several elements.
        """
        _check_scalar_dict(type(self).__name__, scalar_dict)
        step = _scalar('step', step)
        for name, value in scalar_dict.items():
            value = _scalar(str(name), value)
            if isinstance(value, numbers.Real):
                self.experiment.add_scalar(str(name), value, step)
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Close the event file; a later write opens a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
