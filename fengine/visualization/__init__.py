"""Recording scalars, configs and images (MMEngine: ``mmengine.visualization``)."""
from .backends import BaseVisBackend, LocalVisBackend, TensorboardVisBackend
from .external_backends import (AimVisBackend, ClearMLVisBackend, DVCLiveVisBackend,
                                MLflowVisBackend, NeptuneVisBackend, WandbVisBackend)
from .visualizer import Visualizer, build_visualizer

__all__ = ['BaseVisBackend', 'LocalVisBackend', 'TensorboardVisBackend', 'Visualizer',
           'build_visualizer', 'WandbVisBackend', 'MLflowVisBackend', 'ClearMLVisBackend',
           'NeptuneVisBackend', 'DVCLiveVisBackend', 'AimVisBackend']
