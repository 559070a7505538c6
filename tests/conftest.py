"""Strict defaults for every test: fixed seeds, deterministic kernels, captured fengine logs."""
from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch

import fengine.logging as flog


@pytest.fixture(autouse=True)
def _fresh_logger():
    """A Runner attaches its log file to the ``fengine`` logger and sets its level (as
    MMEngine's logger, for the rest of the process); each test starts without them."""
    yield
    logger = flog.get_logger()
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)


@pytest.fixture(autouse=True)
def _no_default_scope_leaks():
    """A Runner creates a DefaultScope for the rest of the process (as MMEngine's); a bare
    name built by a later test must not resolve in an earlier test's scope."""
    from fengine.registry import DefaultScope
    scopes = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(scopes)


@pytest.fixture(autouse=True)
def _no_compile_left_running():
    """A compiled model's first steps start a compiling thread (compile_background.py);
    the next test must not share dynamo with it."""
    yield
    from fengine.func.compile_background import wait_for_background_compiles
    assert wait_for_background_compiles(600), 'a background compilation is still running'


@pytest.fixture(autouse=True)
def _own_compile_cache(tmp_path, monkeypatch):
    """Each test compiles into a cache folder of its own: a precompiled step that an
    earlier test (or run) left must not be loaded (compile_precompiled.py)."""
    monkeypatch.delenv('TORCHINDUCTOR_CACHE_DIR', raising=False)
    monkeypatch.setenv('FENGINE_COMPILE_CACHE', str(tmp_path / 'compile-cache'))


@pytest.fixture(autouse=True)
def _deterministic():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


class LogRecorder(logging.Handler):
    """Collects what the fengine logger emits, formatted as the console shows it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int | None = None) -> list[str]:
        return [r.getMessage() for r in self.records if level is None or r.levelno == level]

    @property
    def text(self) -> str:
        return '\n'.join(self.messages())


@pytest.fixture
def fengine_log():
    """The messages the ``fengine`` logger emits during the test."""
    logger = flog.get_logger()
    recorder = LogRecorder()
    logger.addHandler(recorder)
    yield recorder
    logger.removeHandler(recorder)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for item in items:
        if 'cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fresh_registries():
    """What a test registers in fengine's root registries (entries, child registries) and
    the default scopes it creates are undone after it. fengine's own built-ins are imported
    first (the registries' ``locations``), so they are part of what is kept."""
    from fengine import registry
    from fengine.registry import DefaultScope
    tables = [r for r in vars(registry).values() if isinstance(r, registry.Registry)]
    for table in tables:
        table.import_from_location()
    saved = [(dict(t._module_dict), dict(t._builtins), dict(t._children),
              list(t._unscoped_children)) for t in tables]
    scopes = dict(DefaultScope._instance_dict)
    yield
    for table, (entries, builtins, children, unscoped) in zip(tables, saved):
        for current, kept in ((table._module_dict, entries), (table._builtins, builtins),
                              (table._children, children)):
            current.clear()
            current.update(kept)
        table._unscoped_children[:] = unscoped
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(scopes)


@pytest.fixture
def tmp_packages(tmp_path, monkeypatch):
    """Write small packages (``{'mmalpha/registry.py': source, ...}``) that can be
    imported; they leave ``sys.path`` and ``sys.modules`` after the test."""
    import importlib
    import sys
    import textwrap

    monkeypatch.syspath_prepend(str(tmp_path))
    written: set[str] = set()

    def write(files: dict[str, str]) -> None:
        for relative, source in files.items():
            path = tmp_path / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            for folder in path.relative_to(tmp_path).parents:
                if folder.parts and not (tmp_path / folder / '__init__.py').exists():
                    (tmp_path / folder / '__init__.py').write_text('')
            path.write_text(textwrap.dedent(source))
            written.add(relative.split('/')[0].removesuffix('.py'))
        importlib.invalidate_caches()

    yield write
    for name in list(sys.modules):
        if name.split('.')[0] in written:
            del sys.modules[name]
