"""The ``fengine`` logger, :class:`MMLogger` and :func:`print_log` (MMEngine:
``mmengine.logging``); ``MessageHub`` and ``HistoryBuffer`` are importable from here too.

Nothing here runs at import time: the console handler is attached the first time
the logger is asked for, so ``import fengine`` never prints and never touches the
root logger.
"""
from __future__ import annotations

import collections
import logging
import logging.handlers
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .utils import ManagerMixin

__all__ = ['LOGGER_NAME', 'get_logger', 'print_log', 'MMLogger', 'MessageHub',
           'HistoryBuffer', 'parse_level', 'configure_run_logging']

LOGGER_NAME = 'fengine'

# MMEngine's line format: ``08/19 00:58:14 - fengine - INFO - message``.
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

    def emit(self, record: logging.LogRecord) -> None:
        # A validation or test run on a terminal shows a tqdm bar (fengine.runner.loops):
        # a line is printed above it, not into it.
        tqdm = sys.modules.get('tqdm')
        if tqdm is None or not getattr(tqdm.tqdm, '_instances', None):
            super().emit(record)
            return
        with tqdm.tqdm.external_write_mode(file=self.stream):
            super().emit(record)


class _EarlyRecords(logging.Handler):
    """Keeps what the ``fengine`` logger printed before the process's first run log.

    A script logs before it builds its Runner (e.g. the example's line about the
    synthetic dataset); the run's log file starts with those lines, so the file holds
    everything the console showed. Collecting stops once the first run's log file is
    open: later lines reach a run's file directly.
    """

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=capacity)
        self.open = True

    def emit(self, record: logging.LogRecord) -> None:
        if self.open:
            self.records.append(record)

    def flush_into(self, handler: logging.Handler) -> None:
        """Write the kept records through ``handler`` and stop collecting."""
        for record in self.records:
            handler.handle(record)
        self.records.clear()
        self.open = False


def _formatter() -> logging.Formatter:
    return logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT)


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """Return the ``fengine`` logger (or a child of it), ready to print.

    The first call gives the ``fengine`` logger a console handler in MMEngine's
    format and, unless the user set a level on it already, level INFO. It does not
    propagate to the root logger, so a user who configured ``logging.basicConfig``
    does not see every line twice (MMEngine's ``MMLogger`` behaves the same way).

    Args:
        name: ``'fengine'`` or a dotted child such as ``'fengine.runner'``.
    """
    root = logging.getLogger(LOGGER_NAME)
    if not getattr(root, '_fengine_configured', False):
        handler = _StdoutHandler()
        handler.setFormatter(_formatter())
        root.addHandler(handler)
        root.addHandler(_EarlyRecords())
        if root.level == logging.NOTSET:  # a level the user set is theirs to keep
            root.setLevel(logging.INFO)
        root.propagate = False
        root._fengine_configured = True  # type: ignore[attr-defined]
    return logging.getLogger(name)


def parse_level(log_level: str | int, what: str = 'log_level') -> int:
    """A logging level from a name (``'DEBUG'``, any case) or an int.

    Raises:
        ValueError: an unknown name or a negative int (the message lists the names).
    """
    names = ('CRITICAL', 'ERROR', 'WARNING', 'INFO', 'DEBUG', 'NOTSET')
    if isinstance(log_level, int) and not isinstance(log_level, bool) and log_level >= 0:
        return log_level
    if isinstance(log_level, str) and log_level.upper() in names:
        return logging.getLevelName(log_level.upper())
    raise ValueError(f'{what} must be a logging level, one of {", ".join(names)} or an int '
                     f'>= 0, but got {log_level!r}')


class _RunFileHandler(logging.FileHandler):
    """The log file of one run; a newer run's file replaces it on the ``fengine`` logger."""


def configure_run_logging(log_file: str | os.PathLike | None, log_level: str | int,
                          rank: int = 0, world_size: int = 1) -> logging.Logger:
    """Set the ``fengine`` logger up for a run (what a Runner's ``log_level`` does).

    MMEngine: ``Runner.build_logger``. The logger gets ``log_level``; the run's log file
    (``log_file``) replaces an earlier run's; the first run's file begins with the lines
    the logger printed before it was opened. Only rank 0 prints and writes the file;
    the other ranks print errors only, and at ``DEBUG`` each writes its own file,
    ``<name>_rank<rank>.log`` beside rank 0's, as MMEngine does.

    Args:
        log_file: Rank 0's log file; ``None``: no file.
        log_level: A level name or int.
        rank, world_size: This process's rank and the number of processes.

    Raises:
        ValueError: ``log_level`` is not a level.
    """
    level = parse_level(log_level)
    logger = get_logger()
    logger.setLevel(level)
    for handler in logger.handlers:
        if isinstance(handler, _StdoutHandler):
            handler.setLevel(logging.NOTSET if rank == 0 else logging.ERROR)
    for handler in [h for h in logger.handlers if isinstance(h, _RunFileHandler)]:
        logger.removeHandler(handler)
        handler.close()
    if log_file is None:
        return logger
    path = Path(log_file)
    if rank != 0:
        if not (level <= logging.DEBUG and world_size > 1):
            logger.setLevel(max(level, logging.ERROR))
            return logger
        path = path.with_name(f'{path.stem}_rank{rank}{path.suffix}')
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _RunFileHandler(path, encoding='utf-8')
    handler.setFormatter(_formatter())
    for early in [h for h in logger.handlers if isinstance(h, _EarlyRecords)]:
        early.flush_into(handler)
    logger.addHandler(handler)
    _copy_warnings_to_run_file()
    return logger


def _copy_warnings_to_run_file() -> None:
    """Python warnings still print as before; the run's log file gets a copy of each.

    Warnings (``warnings.warn`` in fengine, torch or the user's code) print to stderr
    through ``warnings.showwarning``, outside the logger, so without this a run's log
    file would miss lines its console showed. ``showwarning`` is wrapped, not replaced:
    whatever printed warnings before still does (pytest's recording included).
    """
    if getattr(warnings.showwarning, 'copies_to_run_file', False):
        return
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        shown(message, category, filename, lineno, file, line)
        if file is not None:  # written to a file of the caller's choosing: not the console
            return
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        record = logging.LogRecord('py.warnings', logging.WARNING, filename, lineno, text,
                                   None, None)
        for handler in get_logger().handlers:
            if isinstance(handler, _RunFileHandler):
                handler.handle(record)

    showwarning.copies_to_run_file = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


class MMLogger(logging.Logger, ManagerMixin):
    """A named logger reached from anywhere (MMEngine: ``mmengine.logging.MMLogger``).

    An ``MMLogger`` hands its records to the standard ``fengine`` logger, so they are
    printed by its console handler, written to the run's log file and filtered by its
    level (``logging.getLogger('fengine').setLevel(...)`` applies). Reach one with
    ``MMLogger.get_instance(name, ...)`` or ``MMLogger.get_current_instance()`` (the
    newest; one named ``'fengine'`` is created if none exists).

    Args:
        name: The instance's name.
        logger_name: The name the records carry (shown in each line).
        log_file: A file this logger also writes to.
        log_level: This logger's own level; ``None`` (default) follows the ``fengine``
            logger's. (MMEngine's default is ``'INFO'``; following the standard logger
            keeps a level its user set.)
        file_mode: How ``log_file`` is opened (``'w'`` or ``'a'``).
        distributed: Every rank writes its own ``<name>_rank<rank>`` file (also at
            ``DEBUG``), else only rank 0 writes ``log_file``.
        file_handler_cfg: ``dict(type=<a logging.handlers class name or
            'FileHandler'>, ...)`` for another file handler, e.g.
            ``dict(type='RotatingFileHandler', maxBytes=2**20, backupCount=3)``.

    Raises:
        ValueError: an unknown ``log_level``, ``file_mode`` or handler type.

    Example:
        >>> logger = MMLogger.get_instance('doc_logger')
        >>> logger.name, logger.instance_name
        ('fengine', 'doc_logger')
    """

    def __init__(self, name: str, logger_name: str = LOGGER_NAME,
                 log_file: str | os.PathLike | None = None,
                 log_level: str | int | None = None, file_mode: str = 'w',
                 distributed: bool = False, file_handler_cfg: dict | None = None) -> None:
        logging.Logger.__init__(self, logger_name)
        ManagerMixin.__init__(self, name)
        if file_mode not in ('w', 'a'):
            raise ValueError(f"MMLogger: file_mode must be 'w' or 'a', but got {file_mode!r}")
        level = logging.NOTSET if log_level is None else \
            parse_level(log_level, 'MMLogger log_level')
        self.setLevel(level)
        self.parent = get_logger()
        self._log_file: str | None = None
        if log_file is None:
            return
        from .dist import get_rank, get_world_size

        rank, world_size = get_rank(), get_world_size()
        path = Path(log_file)
        per_rank = (distributed or logging.NOTSET < level <= logging.DEBUG) and world_size > 1
        if per_rank:
            path = path.with_name(f'{path.stem}_rank{rank}{path.suffix}')
        if rank != 0 and not per_rank:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _file_handler(path, file_mode, file_handler_cfg)
        handler.setFormatter(_formatter())
        self.addHandler(handler)
        self._log_file = str(path)

    @property
    def log_file(self) -> str | None:
        """The file this logger writes to (this rank's), or ``None``."""
        return self._log_file

    @classmethod
    def get_current_instance(cls) -> MMLogger:
        """The newest MMLogger; one named ``'fengine'`` is created if there is none."""
        if not cls._instance_dict:
            cls.get_instance(LOGGER_NAME)
        return super().get_current_instance()

    def setLevel(self, level: str | int) -> None:  # noqa: N802 - logging's name
        self.level = logging._checkLevel(level)  # type: ignore[attr-defined]

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        # Not cached: this logger is not in logging's registry, so a level set on the
        # fengine logger would not clear a cache here.
        if self.disabled or self.manager.disable >= level:
            return False
        return level >= self.getEffectiveLevel()


def _file_handler(path: Path, file_mode: str, cfg: dict | None) -> logging.Handler:
    if cfg is None:
        return logging.FileHandler(path, file_mode, encoding='utf-8')
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f"MMLogger: file_handler_cfg must be a dict with a 'type', e.g. "
                         f"dict(type='RotatingFileHandler', maxBytes=1048576), but got {cfg!r}")
    cfg = dict(cfg)
    kind = cfg.pop('type')
    choices = {'FileHandler': logging.FileHandler}
    choices.update({n: c for n, c in vars(logging.handlers).items()
                    if isinstance(c, type) and issubclass(c, logging.FileHandler)})
    if kind not in choices:
        from ._errors import choices_text, suggest

        raise ValueError(f'MMLogger: file_handler_cfg type {kind!r} is not a file handler of '
                         f'logging{suggest(str(kind), choices)}; choose one of '
                         f'{choices_text(choices)}')
    cfg.setdefault('filename', path)
    if kind != 'TimedRotatingFileHandler':
        cfg.setdefault('mode', file_mode)
    return choices[kind](**cfg)


def print_log(msg: object,
              logger: logging.Logger | str | None = None,
              level: int = logging.INFO) -> None:
    """Print a message through a logger (MMEngine: ``mmengine.logging.print_log``).

    Args:
        msg: The message.
        logger: ``None`` prints with :func:`print`; ``'current'`` uses the newest
            :class:`MMLogger` (which prints through the fengine logger);
            ``'silent'`` drops the message; another string names an MMLogger
            instance or, if there is none of that name, a standard logger
            (``'fengine'`` and its children get MMEngine's format); a
            :class:`logging.Logger` is used as it is.
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
        get_logger()
        MMLogger.get_current_instance().log(level, msg)
    elif isinstance(logger, str):
        if MMLogger.check_instance_created(logger):
            MMLogger.get_instance(logger).log(level, msg)
        elif logger == LOGGER_NAME or logger.startswith(LOGGER_NAME + '.'):
            get_logger(logger).log(level, msg)
        else:
            logging.getLogger(logger).log(level, msg)
    else:
        raise TypeError(
            'print_log: logger must be None, "current", "silent", a logger name or a '
            f'logging.Logger, but got {type(logger).__name__}: {logger!r}')


def __getattr__(name: str) -> Any:
    # MMEngine's import path (mmengine.logging.MessageHub); loaded on first use
    # because the runner package imports this module.
    if name == 'MessageHub':
        from .runner.message_hub import MessageHub

        return MessageHub
    if name == 'HistoryBuffer':
        from .runner.history_buffer import HistoryBuffer

        return HistoryBuffer
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
