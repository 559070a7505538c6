"""Spec for :mod:`fengine.logging`: the ``fengine`` logger, its line format and print_log."""
from __future__ import annotations

import io
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
        'imported': sorted(m for m in ('torch', 'numpy', 'torchvision', 'triton', 'mmengine')
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


def test_import_fengine_imports_neither_torch_numpy_torchvision_triton_nor_mmengine(
        fresh_import):
    assert fresh_import['probe']['imported'] == []


# ------------------------------------------------------- the console and the log file
def test_a_line_logged_while_a_progress_bar_shows_is_printed_above_the_bar(monkeypatch):
    tqdm = pytest.importorskip('tqdm')
    out = io.StringIO()
    monkeypatch.setattr(sys, 'stdout', out)
    bar = tqdm.tqdm(total=3, file=out, desc='val')
    try:
        get_logger().info('a line')
    finally:
        bar.close()
    (segment,) = [s for s in out.getvalue().split('\r') if 'a line' in s]
    # The bar was cleared first, so the line begins where the bar was.
    assert LINE.match(segment.splitlines()[0]), out.getvalue()


EARLY_PROBE = textwrap.dedent('''
    import logging, sys
    from fengine.logging import configure_run_logging, print_log
    print_log('before any run', logger='current', level=logging.WARNING)
    print_log('a debug line nobody sees', logger='current', level=logging.DEBUG)
    configure_run_logging(sys.argv[1], 'INFO')
    print_log('in the first run', logger='current')
    configure_run_logging(sys.argv[2], 'INFO')
    print_log('in the second run', logger='current')
''')


def test_the_first_run_log_begins_with_the_lines_printed_before_it(tmp_path):
    first, second = tmp_path / 'a' / 'first.log', tmp_path / 'b' / 'second.log'
    done = subprocess.run([sys.executable, '-c', EARLY_PROBE, str(first), str(second)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    console = [LINE.match(line)['msg'] for line in lines(done.stdout)]
    assert console == ['before any run', 'in the first run', 'in the second run']
    assert [LINE.match(line)['msg'] for line in lines(first.read_text())] == console[:2]
    assert [LINE.match(line)['msg'] for line in lines(second.read_text())] == console[2:]


# ------------------------------------------------------------------------ levels
LEVEL_PROBE = textwrap.dedent('''
    import logging
    logging.getLogger('fengine').setLevel(logging.WARNING)
    from fengine.logging import get_logger, print_log
    print_log('info is hidden', logger='current')
    print_log('a warning shows', logger='current', level=logging.WARNING)
    print(logging.getLevelName(get_logger().level))
''')


def test_a_level_the_user_set_before_fengine_logs_is_kept():
    done = subprocess.run([sys.executable, '-c', LEVEL_PROBE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert [LINE.match(line)['msg'] for line in out[:-1]] == ['a warning shows']
    assert out[-1] == 'WARNING'


def seed_free_runner(tmp_path, **kwargs):
    from fengine import Runner
    from seed_models import NeuralNetwork

    return Runner(model=NeuralNetwork(), work_dir=tmp_path, **kwargs)


def test_the_runners_log_level_sets_the_fengine_logger(tmp_path):
    get_logger().setLevel(logging.WARNING)
    seed_free_runner(tmp_path, log_level='DEBUG')
    assert get_logger().level == logging.DEBUG


def test_log_level_debug_writes_debug_lines_to_the_console_and_the_log_file(tmp_path, capsys):
    runner = seed_free_runner(tmp_path, log_level='DEBUG')
    print_log('a debug line', logger='current', level=logging.DEBUG)
    out = [LINE.match(line) for line in lines(capsys.readouterr().out)]
    assert any(m and m['level'] == 'DEBUG' and m['msg'].startswith('log processor: ')
               for m in out)
    log = (runner.log_dir / f'{runner.timestamp}.log').read_text()
    assert '- DEBUG - a debug line' in log and '- DEBUG - log processor: LogProcessor(' in log


def test_log_level_info_hides_debug_lines(tmp_path, capsys):
    runner = seed_free_runner(tmp_path, log_level='INFO')
    print_log('a debug line', logger='current', level=logging.DEBUG)
    assert 'DEBUG' not in capsys.readouterr().out
    assert 'DEBUG' not in (runner.log_dir / f'{runner.timestamp}.log').read_text()


@pytest.mark.parametrize('level', ['LOUD', -1, None, True])
def test_a_bad_log_level_names_the_choices(tmp_path, level):
    with pytest.raises(ValueError, match=r'log_level must be a logging level, one of CRITICAL, '
                                         rf'ERROR, WARNING, INFO, DEBUG, NOTSET .*{level!r}'):
        seed_free_runner(tmp_path, log_level=level)


def test_other_ranks_print_only_errors_and_write_no_file(tmp_path, capsys):
    from fengine.logging import configure_run_logging

    logger = configure_run_logging(tmp_path / 'run.log', 'INFO', rank=1, world_size=2)
    logger.info('rank 1 info')
    logger.error('rank 1 error')
    assert [LINE.match(x)['msg'] for x in lines(capsys.readouterr().out)] == ['rank 1 error']
    assert list(tmp_path.iterdir()) == []
    configure_run_logging(None, 'INFO')  # back to rank 0's console


def test_at_debug_every_rank_writes_its_own_log_file(tmp_path, capsys):
    from fengine.logging import configure_run_logging

    logger = configure_run_logging(tmp_path / 'run.log', 'DEBUG', rank=3, world_size=4)
    logger.debug('rank 3 details')
    assert capsys.readouterr().out == ''  # the console of another rank shows errors only
    assert 'rank 3 details' in (tmp_path / 'run_rank3.log').read_text()
    configure_run_logging(None, 'INFO')


# ---------------------------------------------------------------------------- MMLogger
@pytest.fixture
def fresh_mmloggers():
    from fengine.logging import MMLogger

    saved = MMLogger._instance_dict.copy()
    MMLogger._instance_dict.clear()
    yield MMLogger
    for logger in MMLogger._instance_dict.values():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    MMLogger._instance_dict.clear()
    MMLogger._instance_dict.update(saved)


def test_mmlogger_current_instance_is_created_on_demand_and_prints_as_fengine(
        fresh_mmloggers, capsys):
    logger = fresh_mmloggers.get_current_instance()
    assert logger.instance_name == 'fengine' and logger.name == 'fengine'
    assert isinstance(logger, logging.Logger)
    logger.info('from the current MMLogger')
    (line,) = lines(capsys.readouterr().out)
    assert LINE.match(line)['msg'] == 'from the current MMLogger'


def test_mmlogger_instances_are_found_by_name_and_print_log_uses_them(
        fresh_mmloggers, tmp_path, fengine_log):
    mine = fresh_mmloggers.get_instance('mine', logger_name='fengine.mine',
                                        log_file=str(tmp_path / 'mine.log'))
    assert fresh_mmloggers.get_instance('mine') is mine
    assert fresh_mmloggers.get_current_instance() is mine
    assert mine.log_file == str(tmp_path / 'mine.log')
    print_log('by instance name', logger='mine')
    print_log('through current', logger='current', level=logging.WARNING)
    assert fengine_log.messages() == ['by instance name', 'through current']
    assert {r.name for r in fengine_log.records} == {'fengine.mine'}
    text = (tmp_path / 'mine.log').read_text()
    assert '- fengine.mine - INFO - by instance name' in text
    assert '- WARNING - through current' in text


def test_mmlogger_follows_the_fengine_loggers_level_unless_given_one(fresh_mmloggers,
                                                                      fengine_log):
    follows = fresh_mmloggers.get_instance('follows')
    own = fresh_mmloggers.get_instance('own', log_level='DEBUG')
    follows.debug('hidden')
    own.debug('shown')
    get_logger().setLevel(logging.ERROR)
    follows.warning('hidden too')
    assert fengine_log.messages() == ['shown']


def test_mmlogger_takes_a_file_handler_config(fresh_mmloggers, tmp_path):
    logger = fresh_mmloggers.get_instance('rotating', log_file=str(tmp_path / 'r.log'),
                                          file_handler_cfg=dict(type='RotatingFileHandler',
                                                                maxBytes=1000, backupCount=1))
    assert type(logger.handlers[0]).__name__ == 'RotatingFileHandler'
    with pytest.raises(ValueError, match=r"file_handler_cfg type 'RotatingHandler' is not a "
                                         r"file handler of logging Did you mean "
                                         r"'RotatingFileHandler'"):
        fresh_mmloggers.get_instance('bad_handler', log_file=str(tmp_path / 'b.log'),
                                     file_handler_cfg=dict(type='RotatingHandler'))
    with pytest.raises(ValueError, match="file_mode must be 'w' or 'a', but got 'x'"):
        fresh_mmloggers.get_instance('bad_mode', file_mode='x')


def test_message_hub_and_history_buffer_are_importable_from_fengine_logging():
    import fengine.logging as flog
    from fengine.runner import HistoryBuffer, MessageHub

    assert flog.MessageHub is MessageHub and flog.HistoryBuffer is HistoryBuffer
    with pytest.raises(AttributeError, match="has no attribute 'LogBuffer'"):
        flog.LogBuffer  # noqa: B018


def test_a_python_warning_during_a_run_is_shown_as_before_and_written_to_the_log_file(
        tmp_path):
    import warnings

    from fengine.logging import configure_run_logging

    logger = logging.getLogger('fengine')
    level = logger.level
    log_file = tmp_path / 'run.log'
    shown = []
    try:
        with warnings.catch_warnings():  # restores warnings.showwarning after the test
            warnings.simplefilter('always')
            # What prints warnings before the run (stderr, or pytest's recorder) still does.
            warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
            configure_run_logging(log_file, 'INFO')
            warnings.warn('the learning rate looks large', UserWarning)
    finally:
        configure_run_logging(None, logging.getLevelName(level) if level else 'INFO')
    assert shown == ['the learning rate looks large']
    assert 'UserWarning: the learning rate looks large' in log_file.read_text()
