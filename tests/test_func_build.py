"""skip_init: building on meta without PyTorch's default initialization, same model after init."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from fengine.func import apply_plan, config_plan, init_params, skip_init
from fengine.func.build import building_on_meta
from fengine.model import BaseModule
from fengine.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]


class Spy(TorchFunctionMode):
    """Records the name of every torch function that reaches it (entered outside skip_init,
    it sees what skip_init passes on)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, '__name__', repr(func)))
        return func(*args, **(kwargs or {}))


DEFAULT_INIT = {'kaiming_uniform_', 'uniform_', 'normal_', 'fill_', 'zero_', 'ones_',
                'zeros_', 'trunc_normal_', 'kaiming_normal_', 'xavier_uniform_', 'constant_'}


def mixed() -> nn.Module:
    """Layers whose reset_parameters use kaiming_uniform_, uniform_, normal_, ones_, zeros_,
    xavier_uniform_ and constant_, plus BatchNorm's buffers."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4, 6), nn.LayerNorm(6), nn.Embedding(5, 6),
                         nn.MultiheadAttention(6, 2))


def test_a_plain_meta_build_runs_the_default_initialization_and_skip_init_does_not():
    with Spy() as spy, torch.device('meta'):
        mixed()
    assert {'kaiming_uniform_', 'normal_', 'uniform_', 'fill_'} <= set(spy.names)
    with Spy() as spy, skip_init():
        model = mixed()
    assert not DEFAULT_INIT & set(spy.names), sorted(DEFAULT_INIT & set(spy.names))
    assert 'empty' in spy.names  # parameters are still created, as usual
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_skip_init_builds_the_same_structure_shapes_and_dtypes_as_a_cpu_build():
    with skip_init():
        meta = mixed()
    cpu = mixed()
    assert [(k, v.shape, v.dtype) for k, v in meta.state_dict().items()] == \
        [(k, v.shape, v.dtype) for k, v in cpu.state_dict().items()]
    assert [type(m) for m in meta.modules()] == [type(m) for m in cpu.modules()]


def test_a_model_built_in_skip_init_initializes_to_the_bits_of_a_plain_meta_build():
    with skip_init():
        skipped = mixed()
    with torch.device('meta'):
        plain = mixed()
    ours = init_params(skipped, seed=7, device='cpu')
    theirs = init_params(plain, seed=7, device='cpu')
    assert ours.keys() == theirs.keys()
    for path in ours:
        assert torch.equal(ours[path], theirs[path]), path


def test_fills_of_real_tensors_and_fills_from_tensors_still_run_inside_skip_init():
    with skip_init():
        real = torch.empty(3, device='cpu').fill_(2.0)
        drawn = torch.empty(1000, device='cpu').normal_()
        meta = torch.empty(3)
        source, value = torch.empty(3), torch.tensor(1.0)
        with Spy() as spy:
            meta.copy_(source)
            meta.fill_(value)  # a tensor value: not skipped
    assert torch.equal(real, torch.full((3,), 2.0))
    assert drawn.std() > 0.5
    assert spy.names == ['copy_', 'fill_']


def test_skip_init_ends_with_its_block():
    with skip_init():
        assert building_on_meta() is False  # the block is already skipping
        inside = nn.Linear(2, 2)
    outside = nn.Linear(2, 2)
    assert inside.weight.is_meta and not outside.weight.is_meta
    assert not building_on_meta()
    with torch.device('meta'):
        assert building_on_meta()


class MetaNet(BaseModule):
    """A BaseModule subclass with its own __init__ arguments."""

    def __init__(self, width: int = 4, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.fc = nn.Linear(width, 2)
        self.emb = nn.Embedding(3, width)


def test_a_base_module_built_under_torch_device_meta_skips_the_default_initialization():
    with Spy() as spy, torch.device('meta'):
        model = MetaNet(width=5)
    assert not DEFAULT_INIT & set(spy.names), sorted(DEFAULT_INIT & set(spy.names))
    assert model.fc.weight.shape == (2, 5) and model.fc.weight.is_meta


def test_a_base_module_built_on_the_cpu_still_gets_pytorch_s_default_initialization():
    torch.manual_seed(3)
    model = MetaNet()
    torch.manual_seed(3)
    fc, emb = nn.Linear(4, 2), nn.Embedding(3, 4)
    assert torch.equal(model.fc.weight, fc.weight) and torch.equal(model.emb.weight, emb.weight)


def test_a_base_module_subclass_keeps_its_init_signature_and_name():
    assert list(inspect.signature(MetaNet).parameters) == ['width', 'init_cfg']
    assert MetaNet.__init__.__name__ == '__init__'
    assert MetaNet.__init__.__qualname__ == 'MetaNet.__init__'


def test_a_meta_built_base_module_is_initialized_with_the_values_of_a_plain_meta_build():
    cfg = dict(type='Normal', layer='Linear', std=0.1)
    with torch.device('meta'):
        ours = MetaNet(init_cfg=cfg)
    ours.init_weights(seed=2, device='cpu')
    # The same layers built under a plain meta context, default initialization run.
    with torch.device('meta'):
        plain = nn.Module()
        plain.fc, plain.emb = nn.Linear(4, 2), nn.Embedding(3, 4)
    theirs = apply_plan(config_plan(plain, cfg), seed=2, device='cpu').params
    for path, value in theirs.items():
        assert torch.equal(ours.get_parameter(path), value), path


PROBE = """
import sys, torch
from fengine.model import BaseModule
from fengine.presets import get_preset
class Net(BaseModule):
    def __init__(self, preset):
        super().__init__(preset.init_cfg)
        self.net = preset.build()
with torch.device('meta'):
    model = Net(get_preset('debug'))
model.init_weights(seed=0, device='cpu')
assert all(p.device.type == 'cpu' for p in model.parameters())
print('torch._dynamo' in sys.modules)
"""


def test_building_on_meta_and_initializing_does_not_import_torch_dynamo():
    # In a fresh process: the import costs seconds once and is what this change removes.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == 'False'


def test_the_debug_preset_built_in_skip_init_matches_its_cpu_build_in_shape():
    preset = get_preset('debug')
    with skip_init():
        meta = preset.build()
    cpu = preset.build()
    assert {k: v.shape for k, v in meta.state_dict().items()} == \
        {k: v.shape for k, v in cpu.state_dict().items()}
