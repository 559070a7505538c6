"""fengine.fileio.load/dump: JSON, YAML and pickle, paths and file objects."""
from __future__ import annotations

import io
import pickle

import pytest

from fengine.config import ConfigDict
from fengine.fileio import dump, load

DATA = dict(a=1, b=[1.5, 'x', None, True], c=dict(d=dict(e='f')))


@pytest.mark.parametrize('suffix', ['json', 'yaml', 'yml', 'pkl', 'pickle'])
def test_dump_then_load_through_a_path_gives_the_object_back(tmp_path, suffix):
    path = tmp_path / f'data.{suffix}'
    assert dump(DATA, path) is None
    kwargs = dict(allow_pickle=True) if suffix in ('pkl', 'pickle') else {}
    assert load(path, **kwargs) == DATA
    assert load(str(path), **kwargs) == DATA


@pytest.mark.parametrize('file_format', ['json', 'yaml'])
def test_text_formats_go_through_text_and_binary_file_objects(file_format):
    text = dump(DATA, file_format=file_format)
    assert isinstance(text, str)
    assert load(io.StringIO(text), file_format=file_format) == DATA
    assert load(io.BytesIO(text.encode()), file_format=file_format) == DATA
    stream = io.StringIO()
    dump(DATA, stream, file_format=file_format)
    assert stream.getvalue() == text


def test_pickle_goes_through_bytes():
    raw = dump(DATA, file_format='pickle')
    assert isinstance(raw, bytes) and pickle.loads(raw) == DATA
    stream = io.BytesIO()
    dump(DATA, stream, file_format='pkl')
    stream.seek(0)
    assert load(stream, file_format='pickle', allow_pickle=True) == DATA
    with pytest.raises(TypeError, match=r'a pickle is bytes: open the file in binary mode'):
        dump(DATA, io.StringIO(), file_format='pickle')


def test_pickles_load_only_when_asked_for(tmp_path):
    path = tmp_path / 'data.pkl'
    dump(DATA, path)
    with pytest.raises(ValueError, match=r'refusing to load .*data\.pkl: unpickling can run '
                                         r'arbitrary code\. .*allow_pickle=True'):
        load(path)
    with pytest.raises(ValueError, match='allow_pickle=True'):
        load(io.BytesIO(pickle.dumps(1)), file_format='pickle')


def test_config_dicts_and_tuples_are_written_as_plain_dicts_and_lists():
    value = ConfigDict(a=(1, 2), b=dict(c=(3,)))
    assert load(io.StringIO(dump(value, file_format='yaml')), file_format='yaml') == dict(
        a=[1, 2], b=dict(c=[3]))
    assert dump(value, file_format='json') == '{"a": [1, 2], "b": {"c": [3]}}'


def test_yaml_is_read_safely():
    with pytest.raises(Exception, match='python/object/apply'):
        load(io.StringIO("!!python/object/apply:os.system ['echo hi']"), file_format='yaml')


def test_keyword_arguments_reach_the_format(tmp_path):
    assert dump([1], file_format='json', indent=2) == '[\n  1\n]'
    assert load(io.StringIO('{"a": 1.5}'), file_format='json', parse_float=str) == {'a': '1.5'}
    with pytest.raises(TypeError, match=r"yaml\.safe_load, which takes no options; got "
                                        r"\['Loader'\]"):
        load(io.StringIO('a: 1'), file_format='yaml', Loader=None)


def test_unknown_formats_and_missing_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"cannot tell the format of .*data\.txt.*'json'"):
        dump(DATA, tmp_path / 'data.txt')
    with pytest.raises(ValueError, match=r"file_format must be one of .* but got 'toml'"):
        dump(DATA, file_format='toml')
    with pytest.raises(ValueError, match='file_format is needed for a file object'):
        load(io.StringIO('{}'))
    with pytest.raises(ValueError, match='file_format is needed'):
        dump(DATA)
    with pytest.raises(FileNotFoundError, match=r'absent\.json'):
        load(tmp_path / 'absent.json')


def test_a_failed_dump_leaves_the_old_file(tmp_path):
    path = tmp_path / 'data.json'
    dump(dict(old=1), path)
    with pytest.raises(TypeError):
        dump(dict(bad=object()), path)
    assert load(path) == dict(old=1)
    assert [p.name for p in tmp_path.iterdir()] == ['data.json']
