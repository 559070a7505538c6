"""fengine: MMEngine's model API on a functional, compiled core."""
from . import func, logging, model, optim, registry

__version__ = '0.1.0'

__all__ = ['__version__', 'func', 'logging', 'model', 'optim', 'registry']
