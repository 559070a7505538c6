"""One object that sends scalars, configs and images to every backend (MMEngine: ``Visualizer``).

MMEngine's ``Visualizer`` also draws on images with matplotlib (``draw_bboxes``,
``draw_texts``, ``show``...); fengine keeps its recording half: scalars, configs,
images given as arrays, and the image a subclass draws on (``set_image``/``get_image``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..dist import master_only
from ..registry import VISBACKENDS, VISUALIZERS, build_from_cfg
from ..utils import ManagerMixin
from .backends import BaseVisBackend, check_image

__all__ = ['Visualizer', 'build_visualizer']


@VISUALIZERS.register_module()
class Visualizer(ManagerMixin):
    """Forwards scalars, configs and images to its backends (MMEngine: ``Visualizer``).

    Reached from anywhere by name, as MMEngine's (``fengine.utils.ManagerMixin``):
    ``Visualizer.get_instance(name, vis_backends=..., save_dir=...)`` builds it once,
    ``Visualizer.get_current_instance()`` returns the newest one, also when it is a
    subclass's. The Runner builds its own and registers it under its experiment name.
    Every backend built from a config writes to ``save_dir/vis_data`` (MMEngine's
    layout) unless its config names its own ``save_dir``.

    Args:
        name: The instance's name.
        image: An RGB image (H, W, 3) to start from, see :meth:`set_image`.
        vis_backends: Backend configs (``dict(type='LocalVisBackend')``, optionally
            with a ``name``) or backend instances; a single one may be given bare.
            ``None`` or ``[]``: none, as in MMEngine (the Runner's default is one
            ``LocalVisBackend``).
        save_dir: The run's folder; backends write to ``save_dir/vis_data``. With
            ``None``, backend configs that name no ``save_dir`` of their own are
            skipped with a warning, as MMEngine does.

    Raises:
        TypeError: A backend is neither a dict nor a :class:`BaseVisBackend`.
        KeyError: A backend type is not registered (the message lists close names).
        ValueError: Two backends have the same name; give one a ``name``.

    Example:
        >>> import json, tempfile
        >>> run_dir = tempfile.mkdtemp()
        >>> vis = Visualizer.get_instance('demo', vis_backends=[dict(type='LocalVisBackend')],
        ...                               save_dir=run_dir)
        >>> Visualizer.get_current_instance() is vis
        True
        >>> vis.add_scalars({'loss': 0.25}, step=10)
        >>> path = vis.get_backend('LocalVisBackend').save_dir / 'scalars.json'
        >>> path.relative_to(run_dir).as_posix(), json.loads(path.read_text())
        ('vis_data/scalars.json', {'loss': 0.25, 'step': 10})
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: np.ndarray | None = None,
                 vis_backends: Any = None,
                 save_dir: str | os.PathLike | None = None) -> None:
        super().__init__(name)
        if save_dir is not None and not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f'Visualizer: save_dir must be None, a str or a path, but got '
                            f'{type(save_dir).__name__}: {save_dir!r}')
        self.name = name
        self.save_dir = None if save_dir is None else Path(save_dir)
        self._dataset_meta: dict | None = None
        self._image: np.ndarray | None = None
        if vis_backends is None:
            vis_backends = []
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
        if image is not None:
            self.set_image(image)

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
                warnings.warn(f'Visualizer: skipped the backend {cfg.get("type")!r}: it needs '
                              'a save_dir; give the Visualizer a save_dir or the backend '
                              'config its own', stacklevel=3)
                return None
            cfg['save_dir'] = self.vis_data_dir
        backend = VISBACKENDS.build(cfg)
        if not isinstance(backend, BaseVisBackend):
            raise TypeError(f'Visualizer: {cfg!r} built a {type(backend).__name__}, which is '
                            'not a BaseVisBackend')
        return (name or type(backend).__name__), backend

    @classmethod
    def get_instance(cls, name: str, **kwargs: Any) -> Visualizer:
        """The instance called ``name``, built with ``kwargs`` if there is none yet.

        A subclass's instance is also recorded on ``Visualizer``, so code that knows
        only the base class finds it with ``Visualizer.get_current_instance()``
        (MMEngine does the same).
        """
        instance = super().get_instance(name, **kwargs)
        Visualizer._instance_dict[name] = instance
        return instance

    @property
    def dataset_meta(self) -> dict | None:
        """Meta information of the dataset (class names, palette...) for subclasses that draw."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict | None) -> None:
        self._dataset_meta = dataset_meta

    @property
    def backends(self) -> dict[str, BaseVisBackend]:
        """The backends by name (a copy)."""
        return dict(self._vis_backends)

    def get_backend(self, name: str) -> BaseVisBackend | None:
        """The backend named ``name`` (its class name unless its config gave one), or None."""
        return self._vis_backends.get(name)

    def set_image(self, image: np.ndarray) -> None:
        """Set the RGB image (H, W, 3) that :meth:`get_image` returns and a subclass draws on.

        Raises:
            TypeError, ValueError: ``image`` is not an (H, W, 3) array.
        """
        self._image = check_image('Visualizer.set_image', image)

    def get_image(self) -> np.ndarray:
        """The image set last, as ``uint8`` RGB (H, W, 3).

        Raises:
            RuntimeError: No image was set.
        """
        if self._image is None:
            raise RuntimeError('Visualizer.get_image: no image was set; call '
                               'set_image(image) or pass image= when building it')
        return self._image

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Record the run's config in every backend."""
        for backend in self._vis_backends.values():
            backend.add_config(config, **kwargs)

    @master_only
    def add_image(self, name: str, image: np.ndarray, step: int = 0) -> None:
        """Record an RGB image (H, W, 3) in every backend that stores images."""
        for backend in self._vis_backends.values():
            backend.add_image(name, image, step)

    @master_only
    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        """Record one scalar at ``step`` in every backend."""
        for backend in self._vis_backends.values():
            backend.add_scalar(name, value, step, **kwargs)

    @master_only
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

    @master_only
    def add_datasample(self, name: str, image: np.ndarray, data_sample: Any = None,
                       draw_gt: bool = True, draw_pred: bool = True, show: bool = False,
                       wait_time: float = 0, step: int = 0) -> None:
        """Draw a sample's ground truth and prediction; the base class draws nothing.

        MMEngine's base ``add_datasample`` does nothing either: task visualizers (a
        detection one, say) override it, and hooks call it without knowing which.
        """

    def close(self) -> None:
        """Close every backend."""
        for backend in self._vis_backends.values():
            backend.close()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(name={self.name!r}, save_dir={self.save_dir}, '
                f'vis_backends={list(self._vis_backends.values())!r})')


def _register(instance: Visualizer) -> Visualizer:
    """Make ``instance`` the one its name reaches, and the current one, on its class and
    on ``Visualizer``; it replaces an earlier instance of that name."""
    for cls in {type(instance), Visualizer}:
        cls._instance_dict.pop(instance.instance_name, None)
        cls._instance_dict[instance.instance_name] = instance
    return instance


def build_visualizer(cfg: Any, save_dir: str | os.PathLike | None = None,
                     name: str = 'visualizer') -> Visualizer:
    """The :class:`Visualizer` of a run, from what a user passed as ``Runner(visualizer=...)``.

    MMEngine: ``Runner.build_visualizer``. A visualizer built here is registered under
    ``name`` (the Runner passes its experiment name), so ``Visualizer.get_instance(name)``
    and ``Visualizer.get_current_instance()`` return it; it replaces an earlier instance
    of that name, so two runs that start in the same second do not share one.

    Args:
        cfg: ``None`` (one ``LocalVisBackend``), a :class:`Visualizer` (used as it is),
            ``dict(type='Visualizer', vis_backends=[...])`` (``type`` defaults to
            ``'Visualizer'``; any class registered in ``VISUALIZERS``), or a list of
            backend configs (``[]``: none).
        save_dir: The run's folder, unless ``cfg`` names its own; backends write to
            ``save_dir/vis_data``.
        name: The instance's name, unless ``cfg`` names its own.

    Raises:
        TypeError: ``cfg`` is of another type, or a dict with unknown arguments.
        KeyError: A visualizer or backend type that is not registered (the messages list
            close names).

    Example:
        >>> import tempfile
        >>> cfg = dict(vis_backends=[dict(type='LocalVisBackend', name='local')])
        >>> vis = build_visualizer(cfg, save_dir=tempfile.mkdtemp(), name='run 1')
        >>> list(vis.backends), Visualizer.get_instance('run 1') is vis
        (['local'], True)
    """
    if cfg is None:
        cfg = dict(vis_backends=[dict(type='LocalVisBackend')])
    if isinstance(cfg, Visualizer):
        return cfg
    if isinstance(cfg, BaseVisBackend):
        cfg = dict(vis_backends=[cfg])
    elif isinstance(cfg, (list, tuple)):
        cfg = dict(vis_backends=list(cfg))
    if not isinstance(cfg, dict):
        raise TypeError('visualizer must be None, a Visualizer, a dict such as '
                        "dict(vis_backends=[dict(type='LocalVisBackend')]) or a list of "
                        f'backend configs, but got {type(cfg).__name__}: {cfg!r}')
    cfg = dict(cfg)
    cfg.setdefault('type', 'Visualizer')
    cfg.setdefault('save_dir', save_dir)
    cfg.setdefault('name', name)
    # The registry builds a ManagerMixin class through get_instance, which would hand
    # back an earlier run's visualizer of the same name: forget that one first.
    kind = VISUALIZERS.get(cfg['type']) if isinstance(cfg['type'], str) else cfg['type']
    for cls in {kind, Visualizer}:
        getattr(cls, '_instance_dict', {}).pop(cfg['name'], None)
    built = build_from_cfg(cfg, VISUALIZERS)
    if not isinstance(built, Visualizer):
        raise TypeError(f'visualizer type {cfg["type"]!r} built a {type(built).__name__}, '
                        'which is not a Visualizer')
    return _register(built)
