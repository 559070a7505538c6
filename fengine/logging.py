"""The ``fengine`` logger and :func:`print_log` (MMEngine: ``mmengine.logging``).

Nothing here runs at import time: the console handler is attached the first time
the logger is asked for, so ``import fengine`` never prints and never touches the
root logger.
"""
from __future__ import annotations

import logging
import sys

__all__ = ['LOGGER_NAME', 'get_logger', 'print_log']

LOGGER_NAME = 'fengine'

# The seed's line format: ``08/19 00:58:14 - fengine - INFO - message``.
_FORMAT = '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
_DATE_FORMAT = '%m/%d %H:%M:%S'


class _StdoutHandler(logging.StreamHandler):
    """A console handler that looks ``sys.stdout`` up at every record.

    Looking it up late keeps working when stdout is replaced after the logger was
    first used (pytest's capture, ``contextlib.redirect_stdout``).
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler assigns it once
        pass


def _formatter() -> logging.Formatter:
    return logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """Return the ``fengine`` logger (or a child of it), ready to print.

    The first call gives the ``fengine`` logger a console handler in the seed's
    format and level INFO. It does not propagate to the root logger, so a user who
    configured ``logging.basicConfig`` does not see every line twice (MMEngine's
    ``MMLogger`` behaves the same way).

    Args:
        name: ``'fengine'`` or a dotted child such as ``'fengine.runner'``.
    """
    root = logging.getLogger(LOGGER_NAME)
    if not getattr(root, '_fengine_configured', False):
        handler = _StdoutHandler()
        handler.setFormatter(_formatter())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
        root._fengine_configured = True  # type: ignore[attr-defined]
    return logging.getLogger(name)


def print_log(msg: object,
              logger: logging.Logger | str | None = None,
              level: int = logging.INFO) -> None:
    """Print a message through a logger (MMEngine: ``mmengine.logging.print_log``).

    Args:
        msg: The message.
        logger: ``None`` prints with :func:`print`; ``'current'`` uses the fengine
            logger; ``'silent'`` drops the message; any other string names a
            logger (``'fengine'`` and its children get the seed's format);
            a :class:`logging.Logger` is used as it is.
        level: The logging level, e.g. ``logging.WARNING``.

    Raises:
        TypeError: ``logger`` is of another type.
    """
    if logger is None:
        print(msg)
    elif isinstance(logger, logging.Logger):
        logger.log(level, msg)
    elif logger == 'silent':
        pass
    elif logger == 'current':
        get_logger().log(level, msg)
    elif isinstance(logger, str):
        if logger == LOGGER_NAME or logger.startswith(LOGGER_NAME + '.'):
            get_logger(logger).log(level, msg)
        else:
            logging.getLogger(logger).log(level, msg)
    else:
        raise TypeError(
            'print_log: logger must be None, "current", "silent", a logger name or a '
            f'logging.Logger, but got {type(logger).__name__}: {logger!r}')
