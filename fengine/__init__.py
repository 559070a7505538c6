"""fengine: MMEngine's model API on a functional, compiled core."""
from . import func, logging, model, optim, registry

__version__ = '0.1.0'

# After __version__: the runner's checkpoints record it. Importing the runner brings
# its parts (dist, evaluator, hooks, visualization); fengine.datasets and fengine.kernels
# are imported on demand.
from . import dist, evaluator, hooks, runner, visualization  # noqa: E402
from .runner import Runner  # noqa: E402

__all__ = ['__version__', 'Runner', 'dist', 'evaluator', 'func', 'hooks', 'logging', 'model',
           'optim', 'registry', 'runner', 'visualization']
