"""Spec for :mod:`fengine.logging`: the ``fengine`` logger, its line format and print_log."""
from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap

import pytest

from fengine.logging import LOGGER_NAME, get_logger, print_log

# ``08/19 00:58:14 - fengine - INFO - message``
LINE = re.compile(r'^(?P<month>\d\d)/(?P<day>\d\d) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d) - '
                  r'(?P<name>[\w.]+) - (?P<level>[A-Z]+) - (?P<msg>.*)$')


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def recorded():
    """Attach a recorder to a logger by name for the test, then detach it."""
    attached: list[tuple[logging.Logger, Recorder]] = []

    def attach(logger: logging.Logger) -> Recorder:
        recorder = Recorder()
        logger.addHandler(recorder)
        attached.append((logger, recorder))
        return recorder

    yield attach
    for logger, recorder in attached:
        logger.removeHandler(recorder)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


# -------------------------------------------------------------------------- line format
def test_a_current_line_is_formatted_like_the_seed(capsys):
    print_log('hello fengine', logger='current')
    out = lines(capsys.readouterr().out)
    assert len(out) == 1, out
    match = LINE.match(out[0])
    assert match, f'{out[0]!r} does not look like "08/19 00:58:14 - fengine - INFO - message"'
    assert match['name'] == 'fengine'
    assert match['level'] == 'INFO'
    assert match['msg'] == 'hello fengine'
    assert 1 <= int(match['month']) <= 12 and 1 <= int(match['day']) <= 31
    assert int(match['h']) < 24 and int(match['m']) < 60 and int(match['s']) < 62


def test_a_warning_is_printed_at_level_warning(capsys):
    print_log('careful', logger='current', level=logging.WARNING)
    (line,) = lines(capsys.readouterr().out)
    match = LINE.match(line)
    assert match and match['level'] == 'WARNING' and match['msg'] == 'careful'


def test_debug_lines_are_not_printed_at_the_default_level(capsys):
    print_log('noise', logger='current', level=logging.DEBUG)
    assert capsys.readouterr().out == ''


def test_a_child_logger_prints_once_in_the_seed_format_with_its_name(capsys):
    print_log('from the runner', logger='fengine.runner')
    (line,) = lines(capsys.readouterr().out)
    match = LINE.match(line)
    assert match and match['name'] == 'fengine.runner' and match['msg'] == 'from the runner'


def test_get_logger_returns_the_fengine_logger_and_its_children():
    assert get_logger() is logging.getLogger(LOGGER_NAME) and LOGGER_NAME == 'fengine'
    assert get_logger('fengine.hooks') is logging.getLogger('fengine.hooks')


def test_get_logger_configures_the_handler_only_once():
    handlers = list(get_logger().handlers)
    get_logger()
    get_logger('fengine.child')
    assert get_logger().handlers == handlers


# ---------------------------------------------------------------------------- print_log
def test_print_log_without_a_logger_prints(capsys, fengine_log):
    print_log('plain', logger=None)
    assert capsys.readouterr().out == 'plain\n'
    assert fengine_log.messages() == []


def test_print_log_silent_prints_and_logs_nothing(capsys, fengine_log):
    print_log('hush', logger='silent')
    assert capsys.readouterr() == ('', '')
    assert fengine_log.messages() == []


def test_print_log_current_uses_the_fengine_logger(fengine_log):
    print_log('through fengine', logger='current', level=logging.WARNING)
    assert fengine_log.messages(logging.WARNING) == ['through fengine']
    assert fengine_log.records[0].name == 'fengine'


def test_print_log_uses_a_logger_instance_as_it_is(capsys, recorded, fengine_log):
    logger = logging.getLogger('test_logging.instance')
    logger.setLevel(logging.INFO)
    recorder = recorded(logger)
    print_log('to my logger', logger=logger, level=logging.INFO)
    assert recorder.messages == ['to my logger']
    assert recorder.records[0].levelno == logging.INFO
    assert fengine_log.messages() == []


def test_print_log_with_another_name_goes_to_that_logger(capsys, recorded, fengine_log):
    logger = logging.getLogger('test_logging.other')
    logger.setLevel(logging.INFO)
    recorder = recorded(logger)
    print_log('to other', logger='test_logging.other', level=logging.ERROR)
    assert recorder.messages == ['to other']
    assert recorder.records[0].levelno == logging.ERROR
    assert fengine_log.messages() == []
    # Another package's logger keeps its own handlers: fengine adds none to it.
    assert logger.handlers == [recorder]


def test_print_log_with_a_name_sharing_the_prefix_is_not_a_fengine_child(recorded, fengine_log):
    logger = logging.getLogger('fengine_extras')
    logger.setLevel(logging.INFO)
    recorder = recorded(logger)
    print_log('not ours', logger='fengine_extras')
    assert recorder.messages == ['not ours']
    assert fengine_log.messages() == []


@pytest.mark.parametrize('logger', [3, ['current'], object()])
def test_print_log_with_a_wrong_logger_type_raises_type_error_naming_the_type(logger):
    with pytest.raises(TypeError) as exc:
        print_log('x', logger=logger)
    assert type(logger).__name__ in str(exc.value)
    assert 'logging.Logger' in str(exc.value)


def test_print_log_formats_non_str_messages(capsys):
    print_log({'lr': 0.1}, logger='current')
    (line,) = lines(capsys.readouterr().out)
    assert LINE.match(line)['msg'] == "{'lr': 0.1}"


# ----------------------------------------------------------------------------- the root
def test_the_fengine_logger_does_not_propagate_to_root(capsys, recorded):
    root_recorder = recorded(logging.getLogger())
    print_log('only once', logger='current')
    print_log('child only once', logger='fengine.runner')
    assert get_logger().propagate is False
    assert root_recorder.messages == []
    out = lines(capsys.readouterr().out)
    assert [LINE.match(line)['msg'] for line in out] == ['only once', 'child only once']


def test_a_user_root_handler_does_not_print_fengine_lines_twice(capsys):
    # What logging.basicConfig(stream=sys.stdout, level=logging.DEBUG) would set up.
    root = logging.getLogger()
    root_stream = logging.StreamHandler(sys.stdout)
    old_level = root.level
    root.addHandler(root_stream)
    root.setLevel(logging.DEBUG)
    try:
        print_log('alpha', logger='current')
        print_log('beta', logger='fengine.runner')
    finally:
        root.removeHandler(root_stream)
        root.setLevel(old_level)
    out = lines(capsys.readouterr().out)
    assert len(out) == 2, out
    assert [LINE.match(line)['msg'] for line in out] == ['alpha', 'beta']


# ------------------------------------------------------------------- a fresh interpreter
PROBE = textwrap.dedent('''
    import json, logging, sys
    root_handlers = list(logging.getLogger().handlers)
    import fengine
    print(json.dumps({
        'root_handlers_added': len(logging.getLogger().handlers) - len(root_handlers),
        'root_level': logging.getLevelName(logging.getLogger().level),
        'fengine_handlers': len(logging.getLogger('fengine').handlers),
        'imported': sorted(m for m in ('torchvision', 'triton', 'mmengine')
                           if m in sys.modules),
    }))
''')


@pytest.fixture(scope='module')
def fresh_import():
    """What ``import fengine`` does in a fresh interpreter: its stdout, stderr and a probe."""
    done = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    *before, probe = done.stdout.splitlines() or ['']
    return dict(stdout_before_probe='\n'.join(before), stderr=done.stderr,
                probe=json.loads(probe))


def test_import_fengine_prints_nothing(fresh_import):
    assert fresh_import['stdout_before_probe'] == ''
    assert fresh_import['stderr'] == ''


def test_import_fengine_adds_no_handler_to_the_root_logger(fresh_import):
    assert fresh_import['probe']['root_handlers_added'] == 0
    assert fresh_import['probe']['root_level'] == 'WARNING'


def test_import_fengine_does_not_configure_its_own_logger_yet(fresh_import):
    assert fresh_import['probe']['fengine_handlers'] == 0


def test_import_fengine_imports_neither_torchvision_triton_nor_mmengine(fresh_import):
    assert fresh_import['probe']['imported'] == []
