"""Named, globally reachable instances (MMEngine: ``mmengine.utils.ManagerMixin``).

A class that mixes this in keeps a table of its instances by name: ``get_instance``
creates one on first use and returns the same object after, ``get_current_instance``
returns the newest one. The Runner's ``MessageHub`` and ``Visualizer`` and the
registry's ``DefaultScope`` are reached this way from code that has no runner at hand.
"""
from __future__ import annotations

import inspect
import threading
import warnings
from collections import OrderedDict
from typing import Any, TypeVar

__all__ = ['ManagerMeta', 'ManagerMixin']

T = TypeVar('T')
# One lock for every managed class: creating an instance and reading the newest one
# must not interleave between threads (a DataLoader thread may log while a hook creates).
_LOCK = threading.RLock()


class ManagerMeta(type):
    """Gives each managed class its own instance table (MMEngine: ``ManagerMeta``).

    Raises:
        TypeError: The class's ``__init__`` takes no ``name`` argument, so
            ``get_instance(name)`` could not create it.
    """

    def __init__(cls, *args: Any) -> None:
        cls._instance_dict: OrderedDict[str, Any] = OrderedDict()
        parameters = inspect.signature(cls.__init__).parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if 'name' not in parameters and not takes_kwargs:
            raise TypeError(f'{cls.__qualname__}.__init__ must take a `name` argument to be '
                            'managed by ManagerMixin (get_instance(name) creates it by name)')
        super().__init__(*args)


class ManagerMixin(metaclass=ManagerMeta):
    """Base of classes whose instances are reached by name from anywhere.

    MMEngine: ``mmengine.utils.ManagerMixin``.

    Args:
        name: The instance's name, a non-empty string.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: ``name`` is empty.

    Example:
        >>> class Counter(ManagerMixin):
        ...     def __init__(self, name: str = '', start: int = 0):
        ...         super().__init__(name)
        ...         self.value = start
        >>> first = Counter.get_instance('steps', start=3)
        >>> Counter.get_instance('steps') is first
        True
        >>> Counter.get_current_instance().instance_name
        'steps'
    """

    def __init__(self, name: str = '', **kwargs: Any) -> None:
        _check_name(name)
        self._instance_name = name

    @classmethod
    def get_instance(cls: type[T], name: str, **kwargs: Any) -> T:
        """The instance called ``name``, created with ``kwargs`` if it does not exist.

        Arguments given for an instance that exists already are not applied: a
        warning says so.

        Raises:
            TypeError, ValueError: ``name`` is not a non-empty str.
        """
        _check_name(name)
        with _LOCK:
            instances = cls._instance_dict  # type: ignore[attr-defined]
            if name not in instances:
                instances[name] = cls(name=name, **kwargs)  # type: ignore[call-arg]
            elif kwargs:
                warnings.warn(f'{cls.__name__} instance {name!r} exists already; the '
                              f'arguments {sorted(kwargs)} given to get_instance are ignored',
                              stacklevel=2)
            return instances[name]

    @classmethod
    def get_current_instance(cls: type[T]) -> T:
        """The instance created last.

        Raises:
            RuntimeError: No instance was created yet.
        """
        with _LOCK:
            instances = cls._instance_dict  # type: ignore[attr-defined]
            if not instances:
                raise RuntimeError(f'{cls.__name__}.get_current_instance() needs an instance: '
                                   f'call {cls.__name__}.get_instance(name, ...) first')
            return next(reversed(instances.values()))

    @classmethod
    def check_instance_created(cls, name: str) -> bool:
        """Whether an instance called ``name`` exists."""
        return name in cls._instance_dict  # type: ignore[attr-defined]

    @property
    def instance_name(self) -> str:
        """The name this instance is reached by."""
        return self._instance_name


def _check_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f'an instance name must be a str, but got {type(name).__name__}: '
                        f'{name!r}')
    if not name:
        raise ValueError('an instance name must be a non-empty str')
