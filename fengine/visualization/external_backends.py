"""MMEngine's backends for experiment trackers, refused clearly.

MMEngine: ``WandbVisBackend``, ``MLflowVisBackend``, ``ClearMLVisBackend``,
``NeptuneVisBackend``, ``DVCLiveVisBackend``, ``AimVisBackend``. Each needs its
tracker's package, and fengine does not write to any of them yet. A config naming one
fails when the visualizer is built, before training, saying which package it needs
(when that is missing) or that fengine does not implement it (when it is installed),
instead of failing with an unknown-type error or, worse, training without the logs
the user expects.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from ..registry import VISBACKENDS
from .backends import BaseVisBackend

__all__ = ['WandbVisBackend', 'MLflowVisBackend', 'ClearMLVisBackend', 'NeptuneVisBackend',
           'DVCLiveVisBackend', 'AimVisBackend']


class _TrackerBackend(BaseVisBackend):
    """A tracker backend fengine does not implement; building one raises."""

    package: str

    def __init__(self, save_dir: Any = None, **kwargs: Any) -> None:
        name = type(self).__name__
        if importlib.util.find_spec(self.package) is None:
            raise ImportError(
                f'{name} needs the {self.package} package (pip install {self.package}), '
                'and fengine does not implement it yet either: use LocalVisBackend or '
                'TensorboardVisBackend')
        raise NotImplementedError(
            f'fengine does not implement {name} yet (the {self.package} package is '
            'installed, but nothing would be written to it): use LocalVisBackend or '
            'TensorboardVisBackend')


def _tracker(name: str, package: str, tracker: str) -> type[_TrackerBackend]:
    """Register the refusing backend ``name`` for ``tracker`` (needs ``package``)."""
    backend = type(name, (_TrackerBackend,), {
        'package': package, '__module__': __name__,
        '__doc__': f"MMEngine's {tracker} backend: refused (needs ``{package}``)."})
    VISBACKENDS.register_module(module=backend)
    return backend


WandbVisBackend = _tracker('WandbVisBackend', 'wandb', 'Weights & Biases')
MLflowVisBackend = _tracker('MLflowVisBackend', 'mlflow', 'MLflow')
ClearMLVisBackend = _tracker('ClearMLVisBackend', 'clearml', 'ClearML')
NeptuneVisBackend = _tracker('NeptuneVisBackend', 'neptune', 'Neptune')
DVCLiveVisBackend = _tracker('DVCLiveVisBackend', 'dvclive', 'DVCLive')
AimVisBackend = _tracker('AimVisBackend', 'aim', 'Aim')
