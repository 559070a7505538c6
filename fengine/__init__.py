"""fengine: MMEngine's model API on a functional, compiled core."""
from . import func, logging, model, optim, registry

__version__ = '0.1.0'

from .runner import Runner  # noqa: E402 - the checkpoint meta reads __version__ lazily

__all__ = ['__version__', 'Runner', 'func', 'logging', 'model', 'optim', 'registry']
