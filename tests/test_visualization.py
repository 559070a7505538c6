"""Visualizer and its backends: scalars.json lines, config.json, TensorBoard events."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from fengine.registry import VISBACKENDS
from fengine.visualization import (BaseVisBackend, LocalVisBackend, TensorboardVisBackend,
                                   Visualizer, build_visualizer)
from fengine.visualization import backends as backends_module


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc, {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
                 for tag in acc.Tags()['scalars']}


# -- LocalVisBackend ---------------------------------------------------------------------

def test_local_backend_appends_one_json_line_per_call_that_parses_back_exactly(tmp_path):
    backend = LocalVisBackend(tmp_path)
    backend.add_scalars({'loss': torch.tensor(0.5), 'acc': np.float32(0.25), 'n': 3,
                         'lr': 1e-3, 'grad': torch.tensor([0.1])}, step=1)
    backend.add_scalars({'loss': 0.125}, step=torch.tensor(2))

    assert read_lines(tmp_path / 'scalars.json') == [
        {'loss': 0.5, 'acc': 0.25, 'n': 3, 'lr': 1e-3, 'grad': torch.tensor(0.1).item(),
         'step': 1},
        {'loss': 0.125, 'step': 2},
    ]


def test_local_backend_keeps_a_step_already_in_the_dict_as_mmengine_does(tmp_path):
    backend = LocalVisBackend(tmp_path)
    backend.add_scalars({'loss': 1.0, 'step': 7}, step=3)
    backend.add_scalar('lr', 0.01, step=4)

    assert read_lines(tmp_path / 'scalars.json') == [{'loss': 1.0, 'step': 7},
                                                     {'lr': 0.01, 'step': 4}]


def test_local_backend_writes_each_line_in_one_write_on_a_file_opened_to_append(
        tmp_path, monkeypatch):
    calls = []

    class Recorder:
        def __init__(self, path, mode, **kwargs):
            calls.append(('open', mode))

        def write(self, text):
            calls.append(('write', text))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(backends_module, 'open', Recorder, raising=False)
    LocalVisBackend(tmp_path).add_scalars({'loss': 0.5, 'acc': 1}, step=2)

    assert calls == [('open', 'a'), ('write', '{"loss": 0.5, "acc": 1, "step": 2}\n')]


def test_local_backend_also_writes_to_file_path_when_given(tmp_path):
    backend = LocalVisBackend(tmp_path)
    backend.add_scalars({'acc': 0.5}, step=1, file_path='val.json')

    assert read_lines(tmp_path / 'val.json') == [{'acc': 0.5, 'step': 1}]
    assert read_lines(tmp_path / 'scalars.json') == [{'acc': 0.5, 'step': 1}]
    with pytest.raises(ValueError, match="file_path 'scalars.json' is the scalar file"):
        backend.add_scalars({'acc': 0.5}, file_path='scalars.json')
    with pytest.raises(ValueError, match="ending in \".json\", but got 'val.txt'"):
        backend.add_scalars({'acc': 0.5}, file_path='val.txt')


def test_local_backend_refuses_a_tensor_of_several_values_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"scalar 'loss' .* shape \(2,\)"):
        LocalVisBackend(tmp_path).add_scalars({'loss': torch.ones(2)})
    with pytest.raises(TypeError, match='scalar_dict must be a dict'):
        LocalVisBackend(tmp_path).add_scalars([('loss', 1.0)])
    assert not (tmp_path / 'scalars.json').exists()


@pytest.mark.parametrize('value, one', [
    (torch.tensor(0.5), True), (torch.tensor([2]), True), (torch.tensor([1.0, 2.0]), False),
    (np.float32(0.25), True), (np.array([3]), True), (np.zeros(2), False),
    (0.5, False), (3, False), ('x', False), (None, False),
])
def test_scalar_config_and_log_line_conversions_agree_on_what_is_one_element(value, one):
    from fengine.hooks.runtime_info_hook import _is_scalar as _is_number

    assert backends_module._is_one_element(value) is one
    if one:
        number = value.item()
        assert backends_module._scalar('v', value) == number
        assert backends_module._jsonable(value) == number
        assert _is_number(value)
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        with pytest.raises(ValueError, match="'v'"):
            backends_module._scalar('v', value)
        assert backends_module._jsonable(value) == repr(value)
        assert not _is_number(value)
    else:
        assert backends_module._scalar('v', value) is value
        assert _is_number(value) == isinstance(value, (int, float))
    assert not _is_number(True) and not _is_number(torch.tensor([]))


def test_local_backend_writes_the_config_as_json_with_repr_for_the_rest(tmp_path):
    class Marker:
        def __repr__(self):
            return '<Marker>'

    LocalVisBackend(tmp_path).add_config(
        {'model': {'type': 'Net', 'channels': (1, 2)}, 'lr': torch.tensor(0.5),
         'hook': Marker(), 3: None})

    assert json.loads((tmp_path / 'config.json').read_text()) == {
        'model': {'type': 'Net', 'channels': [1, 2]}, 'lr': 0.5, 'hook': '<Marker>', '3': None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']


def test_backends_create_their_folder_only_on_the_first_write(tmp_path):
    local = LocalVisBackend(tmp_path / 'local' / 'deep')
    board = TensorboardVisBackend(tmp_path / 'board')
    Visualizer(save_dir=tmp_path / 'run')

    assert list(tmp_path.iterdir()) == []
    local.add_scalar('loss', 1.0)
    board.add_scalar('loss', 1.0)
    board.close()
    assert (tmp_path / 'local' / 'deep' / 'scalars.json').is_file()
    assert any((tmp_path / 'board').iterdir())


# -- TensorboardVisBackend ---------------------------------------------------------------

def test_tensorboard_backend_writes_scalars_tensorboard_reads_back(tmp_path):
    backend = TensorboardVisBackend(tmp_path)
    backend.add_scalars({'loss': torch.tensor(0.5), 'acc': np.float64(0.75), 'mode': 'train',
                         'none': None}, step=3)
    backend.add_scalar('loss', 0.25, step=4)
    backend.close()

    _, scalars = tensorboard_scalars(tmp_path)
    assert scalars == {'loss': [(3, 0.5), (4, 0.25)], 'acc': [(3, 0.75)]}


def test_tensorboard_backend_records_the_config_as_text(tmp_path):
    backend = TensorboardVisBackend(tmp_path)
    backend.add_config({'model': 'Net'})
    backend.close()

    acc, _ = tensorboard_scalars(tmp_path)
    [event] = acc.Tensors('config/text_summary')
    text = event.tensor_proto.string_val[0].decode()
    assert '"model": "Net"' in text


def test_tensorboard_backend_opens_a_new_file_after_close(tmp_path):
    backend = TensorboardVisBackend(tmp_path)
    backend.add_scalar('loss', 1.0, step=1)
    backend.close()
    backend.add_scalar('loss', 2.0, step=2)
    backend.close()

    assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 2


def test_tensorboard_backend_without_tensorboard_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'tensorboard', None)

    with pytest.raises(ImportError, match=r'pip install tensorboard .*fengine\[tensorboard\]'):
        TensorboardVisBackend(tmp_path)


# -- Visualizer and build_visualizer -----------------------------------------------------

def test_both_backends_are_registered_under_their_class_names():
    assert VISBACKENDS.get('LocalVisBackend') is LocalVisBackend
    assert VISBACKENDS.get('TensorboardVisBackend') is TensorboardVisBackend


def test_visualizer_writes_scalars_to_save_dir_vis_data(tmp_path):
    vis = Visualizer(save_dir=tmp_path, vis_backends=[dict(type='LocalVisBackend')])
    vis.add_scalars({'loss': torch.tensor(0.5)}, step=10)
    vis.add_scalar('lr', 0.1, step=10)
    vis.close()

    assert list(vis.backends) == ['LocalVisBackend']
    assert read_lines(tmp_path / 'vis_data' / 'scalars.json') == [
        {'loss': 0.5, 'step': 10}, {'lr': 0.1, 'step': 10}]


def test_a_visualizer_has_no_backend_unless_given_one_as_in_mmengine(tmp_path):
    vis = Visualizer(save_dir=tmp_path)
    vis.add_scalars({'loss': 1.0})
    assert vis.backends == {} and list(tmp_path.iterdir()) == []


def test_visualizer_sends_scalars_and_config_to_every_backend(tmp_path):
    vis = build_visualizer(dict(type='Visualizer', vis_backends=[
        dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]), save_dir=tmp_path)
    vis.add_config({'seed': 0})
    vis.add_scalars({'loss': 0.5}, step=1)
    vis.close()

    vis_data = tmp_path / 'vis_data'
    assert read_lines(vis_data / 'scalars.json') == [{'loss': 0.5, 'step': 1}]
    assert json.loads((vis_data / 'config.json').read_text()) == {'seed': 0}
    assert tensorboard_scalars(vis_data)[1] == {'loss': [(1, 0.5)]}


def test_build_visualizer_accepts_none_an_instance_a_dict_and_a_list(tmp_path):
    existing = Visualizer(save_dir=tmp_path / 'a')

    assert build_visualizer(existing, save_dir=tmp_path / 'b') is existing
    assert list(build_visualizer(None, save_dir=tmp_path).backends) == ['LocalVisBackend']
    from_dict = build_visualizer(
        dict(vis_backends=[dict(type='LocalVisBackend', name='local')]), save_dir=tmp_path)
    assert list(from_dict.backends) == ['local']
    from_list = build_visualizer([dict(type='TensorboardVisBackend')], save_dir=tmp_path)
    assert list(from_list.backends) == ['TensorboardVisBackend']
    assert from_list.get_backend('TensorboardVisBackend').save_dir == tmp_path / 'vis_data'


def test_an_empty_backend_list_writes_nothing(tmp_path):
    vis = build_visualizer([], save_dir=tmp_path)
    vis.add_scalars({'loss': 1.0})
    vis.add_config({'a': 1})

    assert vis.backends == {} and list(tmp_path.iterdir()) == []


def test_backends_without_a_save_dir_are_skipped_with_a_warning_unless_they_name_one(tmp_path):
    with pytest.warns(UserWarning, match="skipped the backend 'TensorboardVisBackend': it needs "
                                         "a save_dir"):
        vis = Visualizer(vis_backends=[dict(type='TensorboardVisBackend'),
                                       dict(type='LocalVisBackend', save_dir=tmp_path)])
    vis.add_scalars({'loss': 1.0})

    assert list(vis.backends) == ['LocalVisBackend']
    assert read_lines(tmp_path / 'scalars.json') == [{'loss': 1.0, 'step': 0}]


def test_backend_instances_are_used_as_they_are(tmp_path):
    backend = LocalVisBackend(tmp_path / 'mine')
    vis = Visualizer(save_dir=tmp_path / 'run', vis_backends=backend)

    assert vis.get_backend('LocalVisBackend') is backend
    assert vis.get_backend('TensorboardVisBackend') is None


@pytest.fixture
def forget_visualizers():
    """Visualizers registered by the test are forgotten after it."""
    before = dict(Visualizer._instance_dict)
    yield
    for cls in (Visualizer, Subclassed):
        cls._instance_dict.clear()
    Visualizer._instance_dict.update(before)


class Subclassed(Visualizer):
    pass


def test_get_instance_builds_once_and_get_current_instance_returns_the_newest(
        tmp_path, forget_visualizers):
    plain = Visualizer(save_dir=tmp_path, name='not registered')
    first = Visualizer.get_instance('first', save_dir=tmp_path / 'a')
    second = Visualizer.get_instance('second', vis_backends=[dict(type='LocalVisBackend')],
                                     save_dir=tmp_path / 'b')

    assert first.instance_name == 'first' and first.save_dir == tmp_path / 'a'
    assert Visualizer.get_instance('first') is first
    assert Visualizer.get_current_instance() is second
    assert plain is not Visualizer.get_current_instance()  # only get_instance registers
    assert list(second.backends) == ['LocalVisBackend']


def test_a_subclass_instance_is_the_current_visualizer_too(tmp_path, forget_visualizers):
    made = Subclassed.get_instance('task visualizer', save_dir=tmp_path)
    assert Subclassed.get_current_instance() is made
    assert Visualizer.get_current_instance() is made


def test_build_visualizer_registers_the_run_visualizer_under_its_name(
        tmp_path, forget_visualizers):
    old = build_visualizer(None, save_dir=tmp_path / 'old', name='run')
    new = build_visualizer(None, save_dir=tmp_path / 'new', name='run')
    # Two runs with one name (started in the same second): each gets its own.
    assert new is not old and new.save_dir == tmp_path / 'new'
    assert Visualizer.get_instance('run') is new
    assert Visualizer.get_current_instance() is new
    custom = build_visualizer(dict(type=Subclassed, name='custom'), save_dir=tmp_path)
    assert type(custom) is Subclassed and Visualizer.get_current_instance() is custom


def test_visualizers_are_registered_in_visualizers():
    from fengine.registry import VISUALIZERS

    assert VISUALIZERS.get('Visualizer') is Visualizer


def test_add_image_writes_a_png_and_a_tensorboard_image(tmp_path):
    from PIL import Image

    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[..., 0] = 255  # red
    vis = Visualizer(save_dir=tmp_path, vis_backends=[dict(type='LocalVisBackend'),
                                                      dict(type='TensorboardVisBackend')])
    vis.add_image('demo', image, step=3)
    vis.close()

    png = np.asarray(Image.open(tmp_path / 'vis_data' / 'vis_image' / 'demo_3.png'))
    assert png.shape == (4, 6, 3) and (png == image).all()
    acc, _ = tensorboard_scalars(tmp_path / 'vis_data')
    assert acc.Tags()['images'] == ['demo']
    assert [(e.step, e.width, e.height) for e in acc.Images('demo')] == [(3, 6, 4)]


def test_backends_without_images_ignore_them_as_in_mmengine(tmp_path):
    class Memory(BaseVisBackend):
        def add_scalars(self, scalar_dict, step=0, **kwargs):
            pass

    Visualizer(vis_backends=[Memory(tmp_path)]).add_image('x', np.zeros((2, 2, 3)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('image, error, match', [
    ([[0]], TypeError, 'image must be a numpy array of shape \\(H, W, 3\\) in RGB order, but '
                       'got list'),
    (np.zeros((2, 2)), ValueError, 'image must have shape \\(H, W, 3\\) in RGB order, but '
                                   'got shape \\(2, 2\\)'),
])
def test_a_bad_image_is_refused_naming_what_it_is(tmp_path, image, error, match):
    vis = Visualizer(save_dir=tmp_path, vis_backends=[dict(type='LocalVisBackend')])
    with pytest.raises(error, match=f'LocalVisBackend: {match}'):
        vis.add_image('bad', image)
    with pytest.raises(error, match=f'Visualizer.set_image: {match}'):
        vis.set_image(image)


def test_set_image_keeps_an_rgb_uint8_copy_that_get_image_returns():
    vis = Visualizer(image=np.full((2, 3, 3), 7.9))
    assert vis.get_image().dtype == np.uint8 and vis.get_image().shape == (2, 3, 3)
    assert (vis.get_image() == 7).all()
    with pytest.raises(RuntimeError, match='no image was set; call set_image'):
        Visualizer().get_image()


def test_add_datasample_of_the_base_class_draws_nothing_and_dataset_meta_is_kept(tmp_path):
    vis = Visualizer(save_dir=tmp_path, vis_backends=[dict(type='LocalVisBackend')])
    assert vis.add_datasample('sample', np.zeros((2, 2, 3), np.uint8), step=1) is None
    assert list(tmp_path.iterdir()) == []
    vis.dataset_meta = dict(classes=('cat', 'dog'))
    assert vis.dataset_meta == dict(classes=('cat', 'dog'))


def test_an_unknown_backend_type_names_the_close_match(tmp_path):
    with pytest.raises(KeyError, match="'LocalVisBackent' is not in the visualization "
                                       "backend registry. Did you mean 'LocalVisBackend'"):
        Visualizer(save_dir=tmp_path, vis_backends=[dict(type='LocalVisBackent')])


def test_an_unknown_visualizer_type_names_the_close_match(tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'Visualizer'"):
        build_visualizer(dict(type='Visualiser'), save_dir=tmp_path)


def test_a_misspelt_visualizer_argument_lists_the_accepted_ones(tmp_path):
    with pytest.raises(TypeError, match='vis_backend.*Accepted arguments: name, image, '
                                        'vis_backends, save_dir'):
        build_visualizer(dict(vis_backend=[dict(type='LocalVisBackend')]), save_dir=tmp_path)


def test_a_misspelt_backend_argument_lists_the_accepted_ones(tmp_path):
    with pytest.raises(TypeError, match='cannot build LocalVisBackend.*Accepted arguments: '
                                        'save_dir, scalar_save_file, config_save_file'):
        Visualizer(save_dir=tmp_path, vis_backends=[dict(type='LocalVisBackend', dir='x')])


@pytest.mark.parametrize('vis_backends, match', [
    (['LocalVisBackend'], "must be a dict such as dict.*got str: 'LocalVisBackend'"),
    ('LocalVisBackend', "vis_backends must be None, a list.*got str"),
    ([dict(type=dict)], 'built a dict, which is not a BaseVisBackend'),
])
def test_backends_that_are_not_configs_or_backends_are_refused(tmp_path, vis_backends, match):
    with pytest.raises(TypeError, match=match):
        Visualizer(save_dir=tmp_path, vis_backends=vis_backends)


def test_two_backends_with_one_name_are_refused(tmp_path):
    with pytest.raises(ValueError, match="two backends are named 'LocalVisBackend'"):
        Visualizer(save_dir=tmp_path,
                   vis_backends=[dict(type='LocalVisBackend'), dict(type='LocalVisBackend')])


def test_build_visualizer_refuses_other_types(tmp_path):
    with pytest.raises(TypeError, match='visualizer must be None, a Visualizer.*got int: 42'):
        build_visualizer(42, save_dir=tmp_path)


def test_the_base_backend_is_what_subclasses_fill_in(tmp_path):
    class Memory(BaseVisBackend):
        def __init__(self, save_dir):
            super().__init__(save_dir)
            self.seen = []

        def add_scalars(self, scalar_dict, step=0, **kwargs):
            self.seen.append((scalar_dict, step))

    backend = Memory(tmp_path)
    Visualizer(vis_backends=[backend]).add_scalar('loss', 2.0, step=5)

    assert backend.seen == [({'loss': 2.0}, 5)]
    with pytest.raises(NotImplementedError):
        BaseVisBackend(tmp_path).add_scalars({})


def test_a_second_visualizer_built_under_a_taken_name_gets_its_own_backends(tmp_path):
    # Two runs started in the same second share the default name (the timestamp).
    first = build_visualizer([dict(type='LocalVisBackend', name='a')], save_dir=tmp_path / '1',
                             name='same second')
    second = build_visualizer([dict(type='LocalVisBackend', name='b')],
                              save_dir=tmp_path / '2', name='same second')

    assert second is not first and list(second.backends) == ['b']
    assert Visualizer.get_current_instance() is second
