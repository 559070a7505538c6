"""Reading and writing JSON, YAML and pickle files (MMEngine: ``mmengine.fileio``)."""
from .io import FILE_FORMATS, dump, load

__all__ = ['FILE_FORMATS', 'dump', 'load']
