"""MMEngine's documentation pages on configs, run with ``fengine``.

- ``docs/en/advanced_tutorials/config.md``: every config file the page shows is written
  into a temporary folder and each snippet's claim is checked. Left out: the
  cross-repository ``_base_`` (``'mmdet::...'``; fengine refuses it by name, tested
  below) and ``mmengine.hub.get_config``/``get_model`` (no ``fengine.hub``).
- ``docs/en/tutorials/runner.md``, section "Best practice of the Runner - config files":
  ``Config.fromfile`` then ``Runner.from_cfg`` then ``train()``, on the page's model and
  dataset (sizes shrunk). ``env_cfg`` is left out of the config (an argument the Runner
  gains in another area's work); the rest of the page's config is kept.
"""
from __future__ import annotations

import json
import runpy
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fengine import Runner
from fengine.config import Config
from fengine.model import BaseModel
from fengine.registry import DATASETS, MODELS, OPTIMIZERS


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def page(tmp_path, monkeypatch):
    """The page's files, in the current folder as the page has them (after its wget)."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'learn_read_config.py', """
        test_int = 1
        test_list = [1, 2, 3]
        test_dict = dict(key1='value1', key2=0.1)
    """)
    write(tmp_path, 'config_sgd.py',
          "optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001)\n")
    write(tmp_path, 'optimizer_cfg.py',
          "optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)\n")
    write(tmp_path, 'resnet50.py', """
        _base_ = ['optimizer_cfg.py']
        model = dict(type='ResNet', depth=50)
    """)
    write(tmp_path, 'runtime_cfg.py', 'gpu_ids = [0, 1]\n')
    write(tmp_path, 'resnet50_runtime.py', """
        _base_ = ['optimizer_cfg.py', 'runtime_cfg.py']
        model = dict(type='ResNet', depth=50)
    """)
    write(tmp_path, 'resnet50_lr0.01.py', """
        _base_ = ['optimizer_cfg.py', 'runtime_cfg.py']
        model = dict(type='ResNet', depth=50)
        optimizer = dict(lr=0.01)
    """)
    write(tmp_path, 'resnet50_delete_key.py', """
        _base_ = ['optimizer_cfg.py', 'runtime_cfg.py']
        model = dict(type='ResNet', depth=50)
        optimizer = dict(_delete_=True, type='SGD', lr=0.01)
    """)
    write(tmp_path, 'refer_base_var.py', """
        _base_ = ['resnet50.py']
        a = {{_base_.model}}
    """)
    write(tmp_path, 'modify_base_var.py', """
        _base_ = ['resnet50.py']
        a = _base_.model
        a.type = 'MobileNet'
    """)
    write(tmp_path, 'predefined_var.py',
          "work_dir = './work_dir/{{ fileBasenameNoExtension }}'\n")
    write(tmp_path, 'example.py', """
        model = dict(type='CustomModel', in_channels=[1, 2, 3])
        optimizer = dict(type='SGD', lr=0.01)
    """)
    return tmp_path


def test_the_three_formats_read_the_same_and_print_as_the_page_shows(page, capsys):
    (page / 'config.json').write_text(json.dumps(dict(
        test_int=1, test_list=[1, 2, 3], test_dict=dict(key1='value1', key2=0.1))))
    write(page, 'config.yml', """
        test_int: 1
        test_list: [1, 2, 3]
        test_dict:
          key1: "value1"
          key2: 0.1
    """)
    cfg = Config.fromfile('learn_read_config.py')
    print(cfg)
    assert capsys.readouterr().out == (
        "Config (path: learn_read_config.py): {'test_int': 1, 'test_list': [1, 2, 3], "
        "'test_dict': {'key1': 'value1', 'key2': 0.1}}\n")
    assert Config.fromfile('config.json') == Config.fromfile('config.yml') == cfg


def test_values_read_and_write_as_attributes_and_items(page, capsys):
    cfg = Config.fromfile('learn_read_config.py')
    print(cfg.test_int)
    print(cfg.test_list)
    print(cfg.test_dict)
    cfg.test_int = 2
    print(cfg['test_int'])
    print(cfg['test_list'])
    print(cfg['test_dict'])
    cfg['test_list'][1] = 3
    print(cfg['test_list'])
    assert capsys.readouterr().out == textwrap.dedent("""\
        1
        [1, 2, 3]
        {'key1': 'value1', 'key2': 0.1}
        2
        [1, 2, 3]
        {'key1': 'value1', 'key2': 0.1}
        [1, 3, 3]
    """)


def test_a_config_builds_an_optimizer_through_the_registry(page):
    cfg = Config.fromfile('config_sgd.py')
    model = nn.Conv2d(1, 1, 1)
    cfg.optimizer.params = model.parameters()
    optimizer = OPTIMIZERS.build(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group['lr'], group['momentum'], group['weight_decay']) == (0.1, 0.9, 0.0001)


def test_inheritance_modification_and_deletion_give_what_the_page_prints(page, capsys):
    print(Config.fromfile('resnet50.py').optimizer)
    runtime = Config.fromfile('resnet50_runtime.py')
    print(runtime.optimizer)
    print(Config.fromfile('resnet50_lr0.01.py').optimizer)
    print(Config.fromfile('resnet50_delete_key.py').optimizer)
    print(Config.fromfile('refer_base_var.py').a)
    print(Config.fromfile('modify_base_var.py').a)
    assert capsys.readouterr().out == textwrap.dedent("""\
        {'type': 'SGD', 'lr': 0.02, 'momentum': 0.9, 'weight_decay': 0.0001}
        {'type': 'SGD', 'lr': 0.02, 'momentum': 0.9, 'weight_decay': 0.0001}
        {'type': 'SGD', 'lr': 0.01, 'momentum': 0.9, 'weight_decay': 0.0001}
        {'type': 'SGD', 'lr': 0.01}
        {'type': 'ResNet', 'depth': 50}
        {'type': 'MobileNet', 'depth': 50}
    """)
    assert set(runtime) == {'model', 'optimizer', 'gpu_ids'}


def test_non_dict_fields_are_overwritten_whole(page):
    path = write(page, 'gpu0.py', """
        _base_ = ['optimizer_cfg.py', 'runtime_cfg.py']
        model = dict(type='ResNet', depth=50)
        gpu_ids = [0]
    """)
    assert Config.fromfile(path).gpu_ids == [0]


def test_changing_a_double_brace_copy_fails_as_the_page_warns(page):
    write(page, 'bad.py', """
        _base_ = ['resnet50.py']
        a = {{_base_.model}}
        a['type'] = 'MobileNet'
    """)
    with pytest.raises(TypeError):
        Config.fromfile('bad.py')


def test_dumps_stand_alone_in_each_format(page):
    cfg = Config.fromfile('resnet50.py')
    cfg.dump('resnet50_dump.py')
    assert Path('resnet50_dump.py').read_text() == (
        "optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)\n"
        "model = dict(type='ResNet', depth=50)\n")
    cfg.dump('resnet50_dump.yaml')
    cfg.dump('resnet50_dump.json')
    assert json.loads(Path('resnet50_dump.json').read_text()) == cfg.to_dict()
    for name in ('resnet50_dump.py', 'resnet50_dump.yaml', 'resnet50_dump.json'):
        assert Config.fromfile(name).to_dict() == cfg.to_dict()  # no _base_ file needed
    Config(dict(a=1, b=2)).dump('dump_dict.py')
    assert Path('dump_dict.py').read_text() == 'a = 1\nb = 2\n'


def test_predefined_fields(page, capsys):
    cfg = Config.fromfile('./predefined_var.py')
    print(cfg.work_dir)
    assert capsys.readouterr().out == './work_dir/predefined_var\n'


DEMO_TRAIN = """
    import argparse

    from fengine.config import Config, DictAction


    def parse_args():
        parser = argparse.ArgumentParser(description='Train a model')
        parser.add_argument('config', help='train config file path')
        parser.add_argument(
            '--cfg-options',
            nargs='+',
            action=DictAction,
            help='override some settings in the used config')
        args = parser.parse_args()
        return args


    def main():
        args = parse_args()
        cfg = Config.fromfile(args.config)
        if args.cfg_options is not None:
            cfg.merge_from_dict(args.cfg_options)
        print(cfg)


    if __name__ == '__main__':
        main()
"""


@pytest.mark.parametrize('option, printed', [
    ('optimizer.lr=0.1', "Config (path: ./example.py): {'model': {'type': 'CustomModel', "
                         "'in_channels': [1, 2, 3]}, 'optimizer': {'type': 'SGD', 'lr': 0.1}}"),
    ('model.in_channels=[1, 1, 1]',
     "Config (path: ./example.py): {'model': {'type': 'CustomModel', 'in_channels': "
     "[1, 1, 1]}, 'optimizer': {'type': 'SGD', 'lr': 0.01}}"),
])
def test_the_demo_training_script_overrides_fields_from_the_command_line(
        page, monkeypatch, capsys, option, printed):
    write(page, 'demo_train.py', DEMO_TRAIN)
    # The shell hands the script these words (its quotes removed).
    monkeypatch.setattr(sys, 'argv', ['demo_train.py', './example.py', '--cfg-options',
                                      option])
    runpy.run_path('demo_train.py', run_name='__main__')
    assert capsys.readouterr().out == printed + '\n'


def test_custom_imports_register_the_module_the_config_names(page, monkeypatch):
    write(page, 'my_module.py', """
        from fengine.registry import OPTIMIZERS

        @OPTIMIZERS.register_module()
        class CustomOptim:
            pass
    """)
    write(page, 'custom_imports.py', """
        custom_imports = dict(imports=['my_module'], allow_failed_imports=False)
        optimizer = dict(type='CustomOptim')
    """)
    monkeypatch.syspath_prepend(str(page))
    sys.modules.pop('my_module', None)  # another test's my_module.py, imported before
    try:
        cfg = Config.fromfile('custom_imports.py')
        custom_optim = OPTIMIZERS.build(cfg.optimizer)
        assert repr(custom_optim).startswith('<my_module.CustomOptim object at 0x')
    finally:
        OPTIMIZERS._module_dict.pop('CustomOptim', None)
        sys.modules.pop('my_module', None)


def test_configs_of_other_packages_are_refused_by_name(page):
    write(page, 'cross_repo.py', """
        _base_ = [
            'mmdet::_base_/schedules/schedule_1x.py',
            'mmdet::_base_/datasets/coco_instance.py',
        ]
    """)
    with pytest.raises(ValueError, match=r"'mmdet::_base_/schedules/schedule_1x\.py' names a "
                                         'config of another package'):
        Config.fromfile('cross_repo.py')


# -- docs/en/tutorials/runner.md: config files --------------------------------------------
class MyAwesomeModel(BaseModel):
    def __init__(self, layers=4, activation='relu') -> None:
        super().__init__()
        act_type = dict(relu=nn.ReLU, silu=nn.SiLU, none=nn.Identity)[activation]
        sequence = [nn.Linear(2, 64), act_type()]
        for _ in range(layers - 1):
            sequence.extend([nn.Linear(64, 64), act_type()])
        self.mlp = nn.Sequential(*sequence)
        self.classifier = nn.Linear(64, 2)

    def forward(self, data, labels, mode):
        x = self.classifier(self.mlp(data))
        if mode == 'tensor':
            return x
        elif mode == 'predict':
            return F.softmax(x, dim=1), labels
        elif mode == 'loss':
            return {'loss': F.cross_entropy(x, labels)}


class MyDataset(Dataset):
    def __init__(self, is_train, size):
        generator = torch.Generator().manual_seed(0 if is_train else 3407)
        self.labels = torch.randint(0, 2, (size,), generator=generator)
        r = 3 * (self.labels + 1) + torch.randn(self.labels.shape, generator=generator)
        theta = torch.rand(self.labels.shape, generator=generator) * 2 * torch.pi
        self.data = torch.vstack([r * torch.cos(theta), r * torch.sin(theta)]).T

    def __getitem__(self, index):
        return self.data[index], self.labels[index]

    def __len__(self):
        return len(self.data)


@pytest.fixture
def page_classes():
    MODELS.register_module(module=MyAwesomeModel)
    DATASETS.register_module(module=MyDataset)
    yield
    MODELS._module_dict.pop('MyAwesomeModel')
    DATASETS._module_dict.pop('MyDataset')


EXAMPLE_CONFIG = """
    model = dict(type='MyAwesomeModel',
        layers=2,
        activation='relu')
    work_dir = 'exp/my_awesome_model'

    train_dataloader = dict(
        dataset=dict(type='MyDataset',
            is_train=True,
            size=256),
        sampler=dict(
            type='DefaultSampler',
            shuffle=True),
        collate_fn=dict(type='default_collate'),
        batch_size=64,
        pin_memory=True,
        num_workers=0)
    train_cfg = dict(
        by_epoch=True,
        max_epochs=3,
        val_begin=2,
        val_interval=1)
    optim_wrapper = dict(
        optimizer=dict(
            type='Adam',
            lr=0.001))
    param_scheduler = dict(
        type='MultiStepLR',
        by_epoch=True,
        milestones=[1, 2],
        gamma=0.1)

    val_dataloader = dict(
        dataset=dict(type='MyDataset',
            is_train=False,
            size=100),
        sampler=dict(
            type='DefaultSampler',
            shuffle=False),
        collate_fn=dict(type='default_collate'),
        batch_size=100,
        pin_memory=True,
        num_workers=0)
    val_cfg = dict()
    val_evaluator = dict(type='Accuracy')

    default_hooks = dict(
        checkpoint=dict(type='CheckpointHook', interval=1))
    launcher = 'none'
    log_level = 'INFO'
    load_from = None
    resume = False
"""


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_the_runner_pages_config_file_trains_through_from_cfg(tmp_path, monkeypatch,
                                                              page_classes):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, 'example_config.py', EXAMPLE_CONFIG)
    config = Config.fromfile('example_config.py')
    runner = Runner.from_cfg(config)
    runner.train()
    assert runner.epoch == 3 and runner.iter == 12
    assert runner.cfg == config and runner.cfg.filename == 'example_config.py'
    work = tmp_path / 'exp' / 'my_awesome_model'
    assert sorted(p.name for p in work.glob('*.pth')) == ['epoch_1.pth', 'epoch_2.pth',
                                                          'epoch_3.pth']
    (run,) = [p for p in work.iterdir() if p.is_dir()]
    log = (run / f'{run.name}.log').read_text()
    assert 'Epoch(val) [1]' not in log and 'Epoch(val) [2]' in log  # val_begin=2
    assert "work_dir = 'exp/my_awesome_model'" in log  # the config, as a Python file
