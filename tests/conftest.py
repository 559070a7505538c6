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
