"""One object that sends scalars and configs to every backend (MMEngine: ``Visualizer``).

MMEngine's ``Visualizer`` also draws images; fengine keeps its recording half: the
scalars a ``LoggerHook`` sends and the run's config.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

from ..registry import VISBACKENDS, Registry
from .backends import BaseVisBackend

__all__ = ['Visualizer', 'build_visualizer']


class Visualizer:
    """Forwards ``add_scalars``/``add_config`` to its backends (MMEngine: ``Visualizer``).

    Every backend built from a config writes to ``save_dir/vis_data`` (MMEngine's
    layout, so a Runner's scalars land in ``work_dir/<timestamp>/vis_data/scalars.json``)
    unless its config names its own ``save_dir``.

    Args:
        save_dir: The run's folder; backends write to ``save_dir/vis_data``. With
            ``None``, backend configs that name no ``save_dir`` of their own are
            skipped, as MMEngine does: nothing is written.
        vis_backends: Backend configs (``dict(type='LocalVisBackend')``, optionally
            with a ``name``) or backend instances; a single one may be given bare.
            ``None`` means ``[dict(type='LocalVisBackend')]``; ``[]`` means none.
        name: The instance's name (MMEngine's ``ManagerMixin`` name). The class
            keeps the current instance alive; the others only while something else
            (a Runner, say) holds them.

    Raises:
        TypeError: A backend is neither a dict nor a :class:`BaseVisBackend`.
        KeyError: A backend type is not registered (the message lists close names).
        ValueError: Two backends have the same name; give one a ``name``.

    Example:
        >>> import json, tempfile
        >>> run_dir = tempfile.mkdtemp()
        >>> vis = Visualizer(save_dir=run_dir)
        >>> vis.add_scalars({'loss': 0.25}, step=10)
        >>> path = vis.get_backend('LocalVisBackend').save_dir / 'scalars.json'
        >>> path.relative_to(run_dir).as_posix(), json.loads(path.read_text())
        ('vis_data/scalars.json', {'loss': 0.25, 'step': 10})
    """

    # Weak, so that a finished run's visualizer (and its open TensorBoard writer) is
    # freed with the run instead of living as long as the process; the current
    # instance alone is held strongly, so get_current_instance() keeps working for
    # an instance nobody else holds (MMEngine's ManagerMixin keeps every one).
    _instances: weakref.WeakValueDictionary[str, Visualizer] = weakref.WeakValueDictionary()
    _current: Visualizer | None = None

    def __init__(self,
                 save_dir: str | os.PathLike | None = None,
                 vis_backends: Any = None,
                 name: str = 'visualizer') -> None:
        if save_dir is not None and not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f'Visualizer: save_dir must be None, a str or a path, but got '
                            f'{type(save_dir).__name__}: {save_dir!r}')
        self.name = name
        self.save_dir = None if save_dir is None else Path(save_dir)
        if vis_backends is None:
            vis_backends = [dict(type='LocalVisBackend')]
        elif isinstance(vis_backends, (dict, BaseVisBackend)):
            vis_backends = [vis_backends]
        elif not isinstance(vis_backends, (list, tuple)):
            raise TypeError(f'Visualizer: vis_backends must be None, a list of backend '
                            f'configs (dicts) or backends, but got '
                            f'{type(vis_backends).__name__}: {vis_backends!r}')
        self._vis_backends: dict[str, BaseVisBackend] = {}
        for backend_cfg in vis_backends:
            built = self._build_backend(backend_cfg)
            if built is None:
                continue
            backend_name, backend = built
            if backend_name in self._vis_backends:
                raise ValueError(
                    f'Visualizer: two backends are named {backend_name!r}; give one a '
                    f"different name, e.g. dict(type='{type(backend).__name__}', "
                    f"name='{backend_name}_2')")
            self._vis_backends[backend_name] = backend
        Visualizer._instances[name] = self
        Visualizer._current = self

    @property
    def vis_data_dir(self) -> Path | None:
        """``save_dir/vis_data``, where the backends write (``None`` without a save_dir)."""
        return None if self.save_dir is None else self.save_dir / 'vis_data'

    def _build_backend(self, cfg: Any) -> tuple[str, BaseVisBackend] | None:
        if isinstance(cfg, BaseVisBackend):
            return type(cfg).__name__, cfg
        if not isinstance(cfg, dict):
            raise TypeError(f'Visualizer: each of vis_backends must be a dict such as '
                            f"dict(type='LocalVisBackend') or a backend instance, but got "
                            f'{type(cfg).__name__}: {cfg!r}')
        cfg = dict(cfg)
        name = cfg.pop('name', None)
        if 'save_dir' not in cfg:
            if self.vis_data_dir is None:
                return None
            cfg['save_dir'] = self.vis_data_dir
        backend = VISBACKENDS.build(cfg)
        if not isinstance(backend, BaseVisBackend):
            raise TypeError(f'Visualizer: {cfg!r} built a {type(backend).__name__}, which is '
                            'not a BaseVisBackend')
        return (name or type(backend).__name__), backend

    @classmethod
    def get_instance(cls, name: str, **kwargs: Any) -> 'Visualizer':
        """The visualizer named ``name``, built from ``kwargs`` if there is none yet.

        MMEngine's ``ManagerMixin.get_instance``: hooks find the run's visualizer
        without holding the runner.
        """
        instance = cls._instances.get(name)
        if instance is None:
            instance = cls(name=name, **kwargs)
        cls._current = instance
        return instance

    @classmethod
    def get_current_instance(cls) -> 'Visualizer':
        """The visualizer built (or fetched with :meth:`get_instance`) last.

        Raises:
            RuntimeError: No visualizer has been built yet.
        """
        if cls._current is None:
            raise RuntimeError('no Visualizer has been built yet; build one with '
                               'Visualizer(save_dir=...) or Visualizer.get_instance(name)')
        return cls._current

    @property
    def backends(self) -> dict[str, BaseVisBackend]:
        """The backends by name (a copy)."""
        return dict(self._vis_backends)

    def get_backend(self, name: str) -> BaseVisBackend | None:
        """The backend named ``name`` (its class name unless its config gave one), or None."""
        return self._vis_backends.get(name)

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Record the run's config in every backend."""
        for backend in self._vis_backends.values():
            backend.add_config(config, **kwargs)

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        """Record one scalar at ``step`` in every backend."""
        for backend in self._vis_backends.values():
            backend.add_scalar(name, value, step, **kwargs)

    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: str | None = None,
                    **kwargs: Any) -> None:
        """Record several scalars at ``step`` in every backend.

        Args:
            scalar_dict: Names to numbers (one-element tensors are fine).
            step: The iteration (or epoch) the values belong to.
            file_path: For :class:`LocalVisBackend`, a second ``.json`` file to append to.
        """
        for backend in self._vis_backends.values():
            if file_path is not None:
                backend.add_scalars(scalar_dict, step, file_path=file_path, **kwargs)
            else:
                backend.add_scalars(scalar_dict, step, **kwargs)

    def close(self) -> None:
        """Close every backend."""
        for backend in self._vis_backends.values():
            backend.close()

    def __repr__(self) -> str:
        return (f'Visualizer(name={self.name!r}, save_dir={self.save_dir}, '
                f'vis_backends={list(self._vis_backends.values())!r})')


# Lets build_visualizer check a config's type and arguments with the registry's messages.
_VISUALIZERS = Registry('visualizer')
_VISUALIZERS.register_module(module=Visualizer)


def build_visualizer(cfg: Any, save_dir: str | os.PathLike | None = None) -> Visualizer:
    """A :class:`Visualizer` from what a user passed as ``Runner(visualizer=...)``.

    Args:
        cfg: ``None`` (the default ``LocalVisBackend``), a :class:`Visualizer` (used
            as it is), ``dict(type='Visualizer', vis_backends=[...])`` or
            ``dict(vis_backends=[...])``, or a list of backend configs (``[]``: none).
        save_dir: The run's folder, unless ``cfg`` names its own; backends write to
            ``save_dir/vis_data``.

    Raises:
        TypeError: ``cfg`` is of another type, or a dict with unknown arguments.
        KeyError: A ``type`` that is not ``'Visualizer'`` or a backend type that is not
            registered (the messages list close names).

    Example:
        >>> import tempfile
        >>> cfg = dict(vis_backends=[dict(type='LocalVisBackend', name='local')])
        >>> list(build_visualizer(cfg, save_dir=tempfile.mkdtemp()).backends)
        ['local']
    """
    if cfg is None:
        return Visualizer(save_dir=save_dir)
    if isinstance(cfg, Visualizer):
        return cfg
    if isinstance(cfg, BaseVisBackend):
        return Visualizer(save_dir=save_dir, vis_backends=[cfg])
    if isinstance(cfg, (list, tuple)):
        return Visualizer(save_dir=save_dir, vis_backends=list(cfg))
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        cfg.setdefault('type', 'Visualizer')
        cfg.setdefault('save_dir', save_dir)
        return _VISUALIZERS.build(cfg)
    raise TypeError('visualizer must be None, a Visualizer, a dict such as '
                    "dict(vis_backends=[dict(type='LocalVisBackend')]) or a list of backend "
                    f'configs, but got {type(cfg).__name__}: {cfg!r}')
