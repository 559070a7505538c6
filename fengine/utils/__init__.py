"""Utilities shared across fengine (MMEngine: ``mmengine.utils``)."""
from .manager import ManagerMeta, ManagerMixin

__all__ = ['ManagerMeta', 'ManagerMixin']
