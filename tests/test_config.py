"""fengine.config.Config and ConfigDict: reading config files, inheritance, access, dumps."""
from __future__ import annotations

import copy
import json
import pickle
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from fengine.config import Config, ConfigDict
from fengine.registry import OPTIMIZERS


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


VALUES = dict(test_int=1, test_list=[1, 2, 3], test_dict=dict(key1='value1', key2=0.1))


# -- reading the three formats ------------------------------------------------------------
def test_python_json_and_yaml_files_give_the_same_values(tmp_path):
    py = write(tmp_path, 'c.py', """
        test_int = 1
        test_list = [1, 2, 3]
        test_dict = dict(key1='value1', key2=0.1)
    """)
    js = tmp_path / 'c.json'
    js.write_text(json.dumps(VALUES))
    yml = write(tmp_path, 'c.yml', """
        test_int: 1
        test_list: [1, 2, 3]
        test_dict:
          key1: "value1"
          key2: 0.1
    """)
    for path in (py, js, yml):
        cfg = Config.fromfile(path)
        assert cfg.to_dict() == VALUES
        assert cfg.filename == str(path)
        assert isinstance(cfg.test_dict, ConfigDict)


def test_yaml_is_read_safely(tmp_path):
    path = write(tmp_path, 'c.yaml', "a: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ValueError, match=r'c\.yaml is not valid YAML'):
        Config.fromfile(path)


def test_a_missing_file_or_an_unknown_suffix_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'config file .*nope\.py does not exist'):
        Config.fromfile(tmp_path / 'nope.py')
    (tmp_path / 'c.toml').write_text('a = 1')
    with pytest.raises(ValueError, match=r"suffix '\.toml'; config files are \.py, \.json"):
        Config.fromfile(tmp_path / 'c.toml')


def test_a_syntax_error_names_the_file_and_the_line(tmp_path):
    path = write(tmp_path, 'bad.py', """
        a = 1
        b = dict(x=1,
        c = 3 3
    """)
    with pytest.raises(SyntaxError, match=r'config file .*bad\.py, line \d') as info:
        Config.fromfile(path)
    assert info.value.filename == str(path)


def test_an_error_while_running_a_config_points_at_the_file(tmp_path):
    path = write(tmp_path, 'bad.py', 'a = 1\nb = undefined_name\n')
    with pytest.raises(NameError, match='undefined_name') as info:
        Config.fromfile(path)
    assert info.traceback[-1].path == path
    assert any(str(path) in note for note in getattr(info.value, '__notes__', [str(path)]))


def test_modules_functions_imported_names_and_dunder_names_are_not_config_values(tmp_path):
    path = write(tmp_path, 'c.py', """
        import os
        import os.path as osp
        from collections import OrderedDict
        from math import pi as PI
        def helper(x):
            return x * 2
        __private = 1
        width = helper(4)
        folder = osp.join('a', 'b')
        class Custom:
            pass
        kind = Custom
    """)
    modules = set(sys.modules)
    cfg = Config.fromfile(path)
    assert list(cfg) == ['width', 'folder', 'Custom', 'kind']
    assert cfg.width == 8 and cfg.folder == 'a/b' and cfg.kind is cfg.Custom
    assert set(sys.modules) == modules  # nothing registered as a module


# -- _base_ inheritance -------------------------------------------------------------------
@pytest.fixture
def bases(tmp_path):
    write(tmp_path, 'optimizer_cfg.py',
          "optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)\n")
    write(tmp_path, 'runtime_cfg.py', 'gpu_ids = [0, 1]\n')
    return tmp_path


def test_a_base_given_as_a_str_or_a_list_is_inherited(bases):
    one = write(bases, 'one.py', "_base_ = './optimizer_cfg.py'\nmodel = dict(depth=50)\n")
    two = write(bases, 'two.py', "_base_ = ['optimizer_cfg.py', 'runtime_cfg.py']\n")
    assert Config.fromfile(one).optimizer.lr == 0.02
    assert list(Config.fromfile(one)) == ['optimizer', 'model']
    assert Config.fromfile(two).to_dict() == dict(
        optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001),
        gpu_ids=[0, 1])


def test_base_paths_are_relative_to_the_file_that_names_them(bases, monkeypatch):
    write(bases, 'sub/deeper/child.py', "_base_ = ['../../optimizer_cfg.py']\nx = 1\n")
    monkeypatch.chdir(bases / 'sub')
    assert Config.fromfile('deeper/child.py').optimizer.type == 'SGD'


def test_json_and_yaml_configs_inherit_too_also_across_formats(bases):
    write(bases, 'child.json', '{"_base_": ["optimizer_cfg.py"], "optimizer": {"lr": 0.5}}')
    write(bases, 'child.yaml', '_base_: child.json\noptimizer:\n  momentum: 0\n')
    cfg = Config.fromfile(bases / 'child.yaml')
    assert cfg.optimizer == dict(type='SGD', lr=0.5, momentum=0, weight_decay=0.0001)


def test_delete_in_a_child_replaces_the_base_dict(bases):
    path = write(bases, 'c.py', """
        _base_ = ['optimizer_cfg.py']
        optimizer = dict(_delete_=True, type='SGD', lr=0.01)
    """)
    assert Config.fromfile(path).optimizer.to_dict() == dict(type='SGD', lr=0.01)


def test_base_files_may_not_define_the_same_key(bases):
    write(bases, 'other.py', 'gpu_ids = [2]\n')
    path = write(bases, 'c.py', "_base_ = ['runtime_cfg.py', 'other.py']\n")
    with pytest.raises(KeyError, match=r"runtime_cfg\.py and .*other\.py both define "
                                       r"\['gpu_ids'\]"):
        Config.fromfile(path)


def test_a_missing_base_file_names_the_config_that_asked_for_it(bases):
    path = write(bases, 'c.py', "_base_ = 'absent.py'\n")
    with pytest.raises(FileNotFoundError, match=r'absent\.py does not exist \(a _base_ of '
                                                r'.*c\.py\)'):
        Config.fromfile(path)


def test_a_base_cycle_is_an_error_naming_the_chain(tmp_path):
    write(tmp_path, 'a.py', "_base_ = 'b.py'\n")
    write(tmp_path, 'b.py', "_base_ = 'c.py'\n")
    write(tmp_path, 'c.py', "_base_ = 'b.py'\n")
    with pytest.raises(ValueError, match=r'cycle: .*b\.py -> .*c\.py -> .*b\.py'):
        Config.fromfile(tmp_path / 'a.py')
    write(tmp_path, 'self.py', "_base_ = 'self.py'\n")
    with pytest.raises(ValueError, match=r'cycle: .*self\.py -> .*self\.py'):
        Config.fromfile(tmp_path / 'self.py')


def test_a_base_of_another_package_is_refused_by_name(tmp_path):
    path = write(tmp_path, 'c.py', "_base_ = ['mmdet::_base_/default_runtime.py']\n")
    with pytest.raises(ValueError, match=r"'mmdet::_base_/default_runtime\.py' names a config "
                                         'of another package'):
        Config.fromfile(path)


def test_base_must_be_paths(tmp_path):
    with pytest.raises(TypeError, match=r'_base_ must be a path or a list of paths, but got '
                                        r'\[1\]'):
        Config.fromfile(write(tmp_path, 'c.py', '_base_ = [1]\n'))


def test_a_dict_over_a_base_value_that_is_not_a_dict_is_refused(bases):
    path = write(bases, 'c.py', "_base_ = 'runtime_cfg.py'\ngpu_ids = dict(a=1)\n")
    with pytest.raises(TypeError, match=r'gpu_ids: the config gives a dict .*base value is a '
                                        'list'):
        Config.fromfile(path)


def test_double_braces_copy_a_base_value_in_every_format(bases):
    write(bases, 'resnet50.py', "_base_ = ['optimizer_cfg.py']\nmodel = dict(type='ResNet')\n")
    py = write(bases, 'refer.py', """
        _base_ = ['resnet50.py']
        a = {{_base_.model}}
        lr = {{ _base_.optimizer.lr }}
        both = [{{_base_.model.type}}, {{_base_.gpu_ids}}] if False else None
    """)
    cfg = Config.fromfile(py)
    assert cfg.a == dict(type='ResNet') and cfg.lr == 0.02
    write(bases, 'refer.json', '{"_base_": "resnet50.py", "a": {{_base_.model}}}')
    assert Config.fromfile(bases / 'refer.json').a == dict(type='ResNet')
    write(bases, 'refer.yaml', '_base_: resnet50.py\nlr: {{_base_.optimizer.lr}}\n')
    assert Config.fromfile(bases / 'refer.yaml').lr == 0.02


def test_double_braces_naming_a_missing_base_key_say_which_keys_exist(bases):
    path = write(bases, 'c.py', "_base_ = 'optimizer_cfg.py'\na = {{_base_.optimizer.momentun}}\n")
    with pytest.raises(KeyError, match=r"names 'momentun', which _base_\.optimizer does not "
                                       r"have\. Did you mean 'momentum'\?"):
        Config.fromfile(path)


def test_base_references_in_python_give_copies_to_modify(bases):
    write(bases, 'resnet50.py', "model = dict(type='ResNet', depth=50)\n")
    path = write(bases, 'modify.py', """
        _base_ = ['resnet50.py']
        a = _base_.model
        a.type = 'MobileNet'
        n = len(_base_.model)
    """)
    cfg = Config.fromfile(path)
    assert cfg.a == dict(type='MobileNet', depth=50) and cfg.n == 2
    # fengine: the inherited model is not changed through `a` (MMEngine shares the dict).
    assert cfg.model == dict(type='ResNet', depth=50)


def test_an_unknown_base_attribute_in_python_names_it(bases):
    path = write(bases, 'c.py', "_base_ = 'optimizer_cfg.py'\na = _base_.optimzer\n")
    with pytest.raises(AttributeError, match=r"no key 'optimzer'\. Did you mean 'optimizer'"):
        Config.fromfile(path)


def test_the_text_holds_every_file_read_bases_first(bases):
    path = write(bases, 'c.py', "_base_ = 'runtime_cfg.py'\nx = 1\n")
    text = Config.fromfile(path).text
    assert text.index(str(bases / 'runtime_cfg.py')) < text.index('gpu_ids') < \
        text.index(str(path)) < text.index('x = 1')


# -- substitutions -----------------------------------------------------------------------
def test_predefined_variables_name_the_file(tmp_path):
    path = write(tmp_path, 'predefined_var.py', """
        work_dir = './work_dir/{{ fileBasenameNoExtension }}'
        parts = ['{{fileDirname}}', '{{ fileBasename }}', '{{ fileExtname }}']
    """)
    cfg = Config.fromfile(path)
    assert cfg.work_dir == './work_dir/predefined_var'
    assert cfg.parts == [str(tmp_path), 'predefined_var.py', '.py']
    raw = Config.fromfile(path, use_predefined_variables=False)
    assert raw.work_dir == './work_dir/{{ fileBasenameNoExtension }}'


def test_environment_variables_with_defaults(tmp_path, monkeypatch):
    path = write(tmp_path, 'c.py', """
        data_root = '{{$FENGINE_TEST_ROOT:/default/data}}/images'
        classes = {{'$FENGINE_TEST_CLASSES:80'}}
    """)
    monkeypatch.delenv('FENGINE_TEST_ROOT', raising=False)
    monkeypatch.delenv('FENGINE_TEST_CLASSES', raising=False)
    cfg = Config.fromfile(path)
    assert (cfg.data_root, cfg.classes, cfg.env_variables) == ('/default/data/images', 80, {})
    monkeypatch.setenv('FENGINE_TEST_ROOT', '/mnt/x')
    monkeypatch.setenv('FENGINE_TEST_CLASSES', '3')
    cfg = Config.fromfile(path)
    assert (cfg.data_root, cfg.classes) == ('/mnt/x/images', 3)
    assert cfg.env_variables == dict(FENGINE_TEST_ROOT='/mnt/x', FENGINE_TEST_CLASSES='3')


def test_an_unset_environment_variable_without_default_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv('FENGINE_TEST_UNSET', raising=False)
    path = write(tmp_path, 'c.py', "a = '{{$FENGINE_TEST_UNSET:}}'\n")
    with pytest.raises(KeyError, match="'FENGINE_TEST_UNSET' is not set"):
        Config.fromfile(path)


# -- custom_imports -----------------------------------------------------------------------
@pytest.fixture
def module_folder(tmp_path, monkeypatch):
    folder = tmp_path / 'mods'
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [n for n in sys.modules if n.startswith('fengine_test_custom')]:
        del sys.modules[name]


def test_custom_imports_are_imported_when_the_config_loads(tmp_path, module_folder):
    write(module_folder, 'fengine_test_custom_optim.py', """
        from fengine.registry import OPTIMIZERS

        @OPTIMIZERS.register_module()
        class FengineTestCustomOptim:
            pass
    """)
    path = write(tmp_path, 'c.py', """
        custom_imports = dict(imports=['fengine_test_custom_optim'], allow_failed_imports=False)
        optimizer = dict(type='FengineTestCustomOptim')
    """)
    try:
        cfg = Config.fromfile(path)
        assert type(OPTIMIZERS.build(cfg.optimizer)).__name__ == 'FengineTestCustomOptim'
    finally:
        OPTIMIZERS._module_dict.pop('FengineTestCustomOptim', None)
    assert 'fengine_test_custom_optim' in sys.modules
    assert Config.fromfile(path, import_custom_modules=False).custom_imports.imports == [
        'fengine_test_custom_optim']


def test_a_failing_custom_import_names_the_module(tmp_path, module_folder, fengine_log):
    write(module_folder, 'fengine_test_custom_broken.py', 'import fengine_no_such_module\n')
    path = write(tmp_path, 'c.py',
                 "custom_imports = dict(imports=['fengine_test_custom_broken'])\n")
    with pytest.raises(ImportError, match=r"c\.py: module 'fengine_test_custom_broken' failed "
                                          "to import: No module named 'fengine_no_such_module'"):
        Config.fromfile(path)
    path = write(tmp_path, 'ok.py', "custom_imports = dict(imports=['fengine_test_custom_gone'],"
                                    ' allow_failed_imports=True)\n')
    Config.fromfile(path)
    assert "'fengine_test_custom_gone' failed to import and is skipped" in fengine_log.text


def test_allow_failed_imports_must_be_a_bool(tmp_path):
    path = write(tmp_path, 'c.py', "custom_imports = dict(imports=[], allow_failed_imports=1)\n")
    with pytest.raises(TypeError, match=r'custom_imports\.allow_failed_imports in .*c\.py must '
                                        'be a bool, but got 1'):
        Config.fromfile(path)


def test_custom_imports_with_an_unknown_key_is_refused(tmp_path):
    path = write(tmp_path, 'c.py', "custom_imports = dict(modules=['os'])\n")
    with pytest.raises(TypeError, match=r"custom_imports in .*c\.py has unknown key\(s\) "
                                        r"\['modules'\]"):
        Config.fromfile(path)


# -- reserved keys --------------------------------------------------------------------------
@pytest.mark.parametrize('key', ['filename', 'text', 'pretty_text', 'env_variables'])
def test_reserved_keys_are_refused_in_files_dicts_and_assignments(tmp_path, key):
    with pytest.raises(KeyError, match=f"'{key}' cannot be a config key"):
        Config.fromfile(write(tmp_path, 'c.py', f'{key} = 1\n'))
    with pytest.raises(KeyError, match=f"'{key}' cannot be a config key"):
        Config({key: 1})
    cfg = Config()
    with pytest.raises(KeyError, match=f"'{key}' cannot be a config key"):
        cfg[key] = 1
    with pytest.raises(KeyError, match=f"'{key}' cannot be a config key"):
        cfg.merge_from_dict({key: 1})


# -- access ----------------------------------------------------------------------------------
def test_values_read_and_write_as_items_and_attributes():
    cfg = Config(dict(VALUES))
    assert cfg.test_int == cfg['test_int'] == 1
    cfg.test_int = 2
    cfg['test_list'][1] = 3
    cfg.test_dict.key3 = dict(deep=1)
    cfg.new = dict(a=dict(b=1))
    assert cfg.test_int == 2 and cfg['test_list'] == [1, 3, 3]
    assert cfg.test_dict.key3.deep == 1 and cfg.new.a.b == 1
    assert isinstance(cfg.new.a, ConfigDict)
    del cfg.new
    del cfg['test_int']
    assert list(cfg) == ['test_list', 'test_dict']


def test_a_missing_key_names_itself_and_close_keys():
    cfg = Config(dict(model=dict(depth=50), optimizer=1))
    with pytest.raises(AttributeError, match=r"no key 'modle'\. Did you mean 'model'\? Keys: "
                                             "'model', 'optimizer'"):
        cfg.modle
    with pytest.raises(AttributeError, match=r"no key 'dpeth'\. Did you mean 'depth'"):
        cfg.model.dpeth
    with pytest.raises(KeyError, match='nope'):
        cfg['nope']
    assert not hasattr(cfg.model, 'nope')


def test_a_config_is_a_mapping_with_the_dict_methods():
    cfg = Config(dict(a=1, b=dict(c=2)))
    assert isinstance(cfg, Mapping)
    assert list(cfg.keys()) == ['a', 'b'] and list(cfg) == ['a', 'b'] and len(cfg) == 2
    assert list(cfg.values()) == [1, dict(c=2)] and dict(cfg.items()) == dict(a=1, b=dict(c=2))
    assert cfg.get('a') == 1 and cfg.get('z', 5) == 5 and 'b' in cfg and 'z' not in cfg
    assert dict(**cfg) == dict(a=1, b=dict(c=2))
    assert cfg == dict(a=1, b=dict(c=2)) and cfg == Config(dict(a=1, b=dict(c=2)))
    assert cfg.pop('a') == 1 and 'a' not in cfg  # other dict methods reach the values
    assert cfg.to_dict() == dict(b=dict(c=2)) and type(cfg.to_dict()['b']) is dict


def test_nested_dicts_in_lists_and_tuples_become_config_dicts():
    cfg = Config(dict(pipeline=[dict(type='A'), (dict(type='B'),)]))
    assert cfg.pipeline[0].type == 'A' and cfg.pipeline[1][0].type == 'B'
    assert isinstance(cfg.pipeline[1], tuple)
    assert cfg.to_dict() == dict(pipeline=[dict(type='A'), (dict(type='B'),)])


def test_config_from_a_dict_with_a_filename_and_its_repr(tmp_path):
    path = write(tmp_path, 'c.py', 'a = 1\n')
    cfg = Config(dict(a=1), filename=path)
    assert cfg.filename == str(path) and cfg.text == 'a = 1\n'
    assert repr(cfg) == f"Config (path: {path}): {{'a': 1}}"
    assert repr(Config(dict(b=[1]))) == "Config (path: None): {'b': [1]}"
    with pytest.raises(TypeError, match=r'cfg_dict must be a dict, but got list: \[1\]'):
        Config([1])


def test_copies_and_pickles():
    cfg = Config(dict(a=dict(b=[1, 2])), filename='x.py', cfg_text='text')
    shallow, deep = copy.copy(cfg), copy.deepcopy(cfg)
    loaded = pickle.loads(pickle.dumps(cfg))
    assert shallow == deep == loaded == cfg
    assert (loaded.filename, loaded.text) == ('x.py', 'text')
    assert isinstance(loaded.a, ConfigDict)
    cfg.a.b.append(3)
    assert shallow.a.b == [1, 2, 3] and deep.a.b == [1, 2] and loaded.a.b == [1, 2]
    shallow.c = 1
    assert 'c' not in cfg
    assert cfg.copy() == cfg and cfg.copy() is not cfg


# -- merge_from_dict -----------------------------------------------------------------------
def test_merge_from_dict_sets_dotted_keys_and_creates_missing_dicts():
    cfg = Config(dict(model=dict(backbone=dict(type='ResNet'))))
    cfg.merge_from_dict({'model.backbone.depth': 50, 'model.backbone.with_cp': True,
                         'optim.lr': 0.1})
    assert cfg.to_dict() == dict(model=dict(backbone=dict(type='ResNet', depth=50,
                                                          with_cp=True)),
                                 optim=dict(lr=0.1))
    assert isinstance(cfg.optim, ConfigDict)


def test_merge_from_dict_indexes_lists_with_digits():
    cfg = Config(dict(pipeline=[dict(type='LoadImage'), dict(type='LoadAnnotations')]))
    cfg.merge_from_dict({'pipeline.0.type': 'SelfLoadImage'})
    cfg.merge_from_dict({'pipeline': {'1': dict(type='Flip')}})
    assert cfg.to_dict() == dict(pipeline=[dict(type='SelfLoadImage'), dict(type='Flip')])
    with pytest.raises(TypeError, match='pipeline: the config gives a dict'):
        cfg.merge_from_dict({'pipeline.0.type': 'X'}, allow_list_keys=False)


def test_a_failed_merge_from_dict_leaves_the_config_as_it_was():
    cfg = Config(dict(a=dict(b=1), lst=[1]))
    with pytest.raises(IndexError, match=r'lst\.5: index 5 is past the end'):
        cfg.merge_from_dict({'a.b': 2, 'lst.5': 0})
    with pytest.raises(TypeError, match=r"'a\.b\.c' reaches into 'b'"):
        cfg.merge_from_dict({'a.b': 2, 'a.b.c': 3})
    with pytest.raises(KeyError, match="dotted keys such as"):
        cfg.merge_from_dict({'a..b': 2})
    assert cfg.to_dict() == dict(a=dict(b=1), lst=[1])


# -- dump and pretty_text ------------------------------------------------------------------
NESTED = dict(
    model=dict(type='ResNet', depth=50, norm_cfg=dict(type='BN', requires_grad=True),
               init_cfg=[dict(type='Kaiming', layer='Conv2d'),
                         dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])]),
    scales=((1333, 800), (1, )), empty=dict(), nothing=None, flags=[True, False],
    weird_keys={'1-a': 1, 'class': 2, 3: 'x'}, inf=float('inf'), quoted="it's \"quoted\"",
    long_list=list(range(40)))


@pytest.mark.parametrize('suffix', ['.py', '.json', '.yaml', '.yml'])
def test_dump_round_trips_through_fromfile(tmp_path, suffix):
    values = {k: v for k, v in NESTED.items() if suffix == '.py' or k not in ('scales',
                                                                          'weird_keys')}
    cfg = Config(values)
    cfg.dump(tmp_path / f'out{suffix}')
    assert Config.fromfile(tmp_path / f'out{suffix}') == cfg


def test_pretty_text_is_python_that_loads_back(tmp_path):
    cfg = Config(NESTED)
    text = cfg.pretty_text
    assert max(len(line) for line in text.splitlines()) <= 88
    (tmp_path / 'p.py').write_text(text)
    assert Config.fromfile(tmp_path / 'p.py') == cfg
    assert Config(dict(a=1, b=2)).pretty_text == 'a = 1\nb = 2\n'


def test_top_level_keys_that_are_not_names_survive_a_python_dump(tmp_path):
    cfg = Config({'my-key': 1, 'ok': [1]})
    cfg.dump(tmp_path / 'c.py')
    assert Config.fromfile(tmp_path / 'c.py').to_dict() == {'my-key': 1, 'ok': [1]}


def test_dump_without_a_file_returns_text_in_the_format_of_the_source(tmp_path):
    assert Config(dict(a=1)).dump() == 'a = 1\n'
    write(tmp_path, 'c.json', '{"a": [1, 2]}')
    assert json.loads(Config.fromfile(tmp_path / 'c.json').dump()) == dict(a=[1, 2])
    write(tmp_path, 'c.yaml', 'a: 1\n')
    assert Config.fromfile(tmp_path / 'c.yaml').dump() == 'a: 1\n'


def test_dump_refuses_values_no_config_file_can_hold_and_bad_suffixes(tmp_path):
    cfg = Config(dict(optimizer=dict(type=OPTIMIZERS, lr=1)))
    with pytest.raises(ValueError, match=r'cannot dump the config: optimizer\.type is '
                                         r"Registry\(name='optimizer'"):
        cfg.dump(tmp_path / 'c.py')
    assert not (tmp_path / 'c.py').exists()
    assert 'type=Registry(' in cfg.pretty_text  # shown for the log all the same
    with pytest.raises(ValueError, match=r"suffix must be one of '\.json', '\.py'"):
        Config(dict(a=1)).dump(tmp_path / 'c.txt')


def test_fromstring_reads_each_format():
    assert Config.fromstring('a = dict(b=1)\n', '.py').a.b == 1
    assert Config.fromstring('{"a": 1}', '.json').a == 1
    assert Config.fromstring('a: [1]\n', '.yaml').a == [1]
    with pytest.raises(ValueError, match=r"file_format must be one of .*got '\.txt'"):
        Config.fromstring('a: 1', '.txt')


# -- MMEngine's pure-Python style: with read_base() -----------------------------------------
@pytest.fixture
def pure_python(tmp_path):
    write(tmp_path, 'schedules/sgd.py', """
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
        train_cfg = dict(max_epochs=12)
    """)
    write(tmp_path, 'models/resnet.py', "model = dict(type='ResNet', depth=50)\n")
    return tmp_path


def test_read_base_binds_the_imported_base_values_as_python_names(pure_python):
    path = write(pure_python, 'configs/child.py', """
        from fengine.config import read_base
        from torch.optim import Adam

        with read_base():
            from ..models.resnet import *
            from ..schedules.sgd import optim_wrapper as optim

        model.depth = 101
        optim.optimizer.type = Adam
        optim.optimizer.update(lr=0.01)
        extra = dict(x=1)
    """)
    import torch

    cfg = Config.fromfile(path)
    assert list(cfg) == ['model', 'optim', 'extra']  # train_cfg was not imported, Adam is
    assert cfg.model == dict(type='ResNet', depth=101)  # an import, not a value
    assert cfg.optim.optimizer == dict(type=torch.optim.Adam, lr=0.01)
    assert Config.fromfile(pure_python / 'schedules/sgd.py').optim_wrapper.optimizer.lr == 0.1
    assert str(pure_python / 'models/resnet.py') in cfg.text


def test_read_base_refuses_what_is_not_a_relative_import_of_a_config(pure_python):
    path = write(pure_python, 'c.py', """
        from fengine.config import read_base
        with read_base():
            import os
    """)
    with pytest.raises(ValueError, match=r'c\.py, line 4: inside "with read_base\(\):" only '
                                         'relative imports'):
        Config.fromfile(path)
    path = write(pure_python, 'd.py', """
        from fengine.config import read_base
        with read_base():
            from .schedules.sgd import optim_wraper
    """)
    with pytest.raises(ImportError, match=r"d\.py, line 4: .*sgd\.py has no config value "
                                          r"'optim_wraper'\. Did you mean 'optim_wrapper'\?"):
        Config.fromfile(path)
    path = write(pure_python, 'e.py', """
        from fengine.config import read_base
        with read_base():
            from .nowhere import *
    """)
    with pytest.raises(FileNotFoundError, match=r'nowhere\.py does not exist \(a _base_ of'):
        Config.fromfile(path)
    path = write(pure_python, 'f.py', """
        from fengine.config import read_base
        _base_ = 'models/resnet.py'
        with read_base():
            from .schedules.sgd import *
    """)
    with pytest.raises(ValueError, match=r'f\.py uses both _base_ and "with read_base\(\):"'):
        Config.fromfile(path)


def test_read_base_as_a_context_manager_does_nothing():
    from fengine.config import read_base

    with read_base():
        value = 1
    assert value == 1
