"""The scope a bare registry name resolves in (MMEngine: ``DefaultScope``)."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

from ..utils.manager import _LOCK, ManagerMixin

__all__ = ['DefaultScope']


class DefaultScope(ManagerMixin):
    """Names the project (``'mmdet'``, ``'myproj'``) whose registries build bare names.

    MMEngine: ``mmengine.registry.DefaultScope``. The Runner creates one from its
    ``default_scope`` argument; code without a runner at hand reads it with
    :meth:`get_current_instance`.

    Args:
        name: The instance's name.
        scope_name: The scope, e.g. ``'fengine'``.

    Example:
        >>> DefaultScope.get_instance('doctest-scope', scope_name='myproj').scope_name
        'myproj'
    """

    def __init__(self, name: str, scope_name: str) -> None:
        super().__init__(name)
        if not isinstance(scope_name, str):
            raise TypeError(f'scope_name must be a str, but got {type(scope_name).__name__}: '
                            f'{scope_name!r}')
        self._scope_name = scope_name

    @property
    def scope_name(self) -> str:
        """The scope bare names resolve in."""
        return self._scope_name

    @classmethod
    def get_current_instance(cls) -> DefaultScope | None:  # type: ignore[override]
        """The newest scope, or ``None`` when none was created (no scope is set)."""
        with _LOCK:
            return super().get_current_instance() if cls._instance_dict else None

    @classmethod
    @contextlib.contextmanager
    def overwrite_default_scope(cls, scope_name: str | None) -> Iterator[None]:
        """Make ``scope_name`` the current scope inside the ``with`` block.

        ``None`` leaves the current scope as it is.
        """
        if scope_name is None:
            yield
            return
        # A unique name, so the temporary scope is the newest instance until removed.
        name = f'overwrite-{time.monotonic_ns()}-{id(object())}'
        cls.get_instance(name, scope_name=scope_name)
        try:
            yield
        finally:
            with _LOCK:
                cls._instance_dict.pop(name, None)
