"""Config files (MMEngine: ``mmengine.config``): ``Config``, ``ConfigDict``, ``DictAction``.

``Config.fromfile`` reads Python, JSON and YAML configs with ``_base_`` inheritance;
:func:`merge_into` is the inheritance merge on its own.
"""
from .config import Config, read_base
from .config_dict import ConfigDict
from .dict_action import DictAction
from .merge import merge_into

__all__ = ['Config', 'ConfigDict', 'DictAction', 'merge_into', 'read_base']
