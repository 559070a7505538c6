"""fengine.config.DictAction: ``--cfg-options KEY=VALUE ...`` read as MMEngine reads them."""
from __future__ import annotations

import argparse
import re

import pytest

from fengine.config import Config, DictAction
from fengine.config.dict_action import parse_value


def parse(*items: str) -> dict:
    parser = argparse.ArgumentParser(prog='train')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *items]).cfg_options


@pytest.mark.parametrize('item, value', [
    ('a=1', 1), ('a=-2', -2), ('a=1.5', 1.5), ('a=1e-3', 0.001),
    ('a=True', True), ('a=false', False), ('a=TRUE', True), ('a=None', None),
    ('a=NONE', 'NONE'), ('a=x', 'x'), ('a=', ''), ('a=b=c', 'b=c'),
    ('a=[1,2]', [1, 2]), ('a=(3,4)', (3, 4)), ('a=[(1,2),(3,4)]', [(1, 2), (3, 4)]),
    ('a=v1,v2', ['v1', 'v2']), ('a=v1,', ['v1']), ('a=[]', []), ('a=()', ()),
    ('a=[x,[y,z],(w,)]', ['x', ['y', 'z'], ('w',)]), ('a=[ 1 , 2 ]', [1, 2]),
    ('a="[(1,2),(3,4)]"', [(1, 2), (3, 4)]), ("a='[1, None]'", [1, None]),
])
def test_values_follow_mmengine_rules(item, value):
    got = parse(item)['a']
    assert got == value and type(got) is type(value)


def test_quoted_values_are_strings_as_written():
    # fengine: MMEngine turns '1' into the int 1 and drops the space of "a b".
    assert parse("a='1'", 'b="hello world"', "c=[x,'y,z']") == dict(
        a='1', b='hello world', c=['x', 'y,z'])


def test_several_items_and_repeated_options_collect_into_one_dict():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', 'a.b=1', 'c=2', '--cfg-options', 'c=3', 'd=4'])
    assert args.cfg_options == {'a.b': 1, 'c': 3, 'd': 4}


def test_the_options_merge_into_a_config():
    cfg = Config(dict(model=dict(type='CustomModel', in_channels=[1, 2, 3]),
                      optimizer=dict(type='SGD', lr=0.01)))
    cfg.merge_from_dict(parse('optimizer.lr=0.1', 'model.in_channels=[1, 1, 1]'))
    assert cfg.to_dict() == dict(model=dict(type='CustomModel', in_channels=[1, 1, 1]),
                                 optimizer=dict(type='SGD', lr=0.1))


@pytest.mark.parametrize('item, message', [
    ('nokey', r"'nokey' is not KEY=VALUE"),
    ('=1', r"'=1' is not KEY=VALUE"),
    ('a=[1,2', r"cannot read 'a=\[1,2': '\]' is missing"),
    ('a=[1,2))', r"cannot read 'a=\[1,2\)\)': unbalanced '\)'"),
    ("a=[x,'y]", r"cannot read .*the quote ' is never closed"),
])
def test_a_malformed_item_stops_argparse_naming_it(item, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse(item)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'argument --cfg-options:' in err
    assert re.search(message, err), err


def test_parse_value_on_its_own():
    assert parse_value(' (1, [2, x]) ') == (1, [2, 'x'])
    with pytest.raises(ValueError, match=r"'\)' is missing"):
        parse_value('[(1,2]')
