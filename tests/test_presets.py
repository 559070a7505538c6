"""The preset table: every name builds, on a device or on meta, and its init_cfg applies."""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

import fengine.presets
from fengine.model import BaseModule
from fengine.presets import PRESETS, get_preset
from fengine.registry import WEIGHT_INITIALIZERS


class Wrapped(BaseModule):
    """A preset's model under a BaseModule carrying the preset's init_cfg."""

    def __init__(self, name: str) -> None:
        preset = get_preset(name)
        super().__init__(preset.init_cfg)
        self.net = preset.build()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_debug_preset_builds_on_cpu_and_returns_logits():
    preset = get_preset('debug')
    model = preset.build()
    logits = model(preset.example_input(2))
    assert logits.shape == (2, 64, 128)
    assert logits.isfinite().all()


def test_debug_preset_builds_on_meta_without_allocating():
    preset = get_preset('debug')
    with torch.device('meta'):
        model = preset.build()
    assert all(p.is_meta for p in model.parameters())
    assert model(preset.example_input(2, device='meta')).shape == (2, 64, 128)


def test_gpt_lm_head_shares_the_token_embedding_weight():
    model = get_preset('debug').build()
    assert model.lm_head.weight is model.tok_emb.weight


def test_init_cfg_applies_through_a_fengine_base_module():
    model = Wrapped('debug')
    model.init_weights(seed=0)
    net = model.net
    assert torch.equal(net.ln_f.weight, torch.ones(32))
    assert torch.equal(net.blocks[0].ln_1.bias, torch.zeros(32))
    assert torch.equal(net.blocks[1].mlp.fc.bias, torch.zeros(128))
    for weight in (net.blocks[0].attn.qkv.weight, net.tok_emb.weight, net.pos_emb.weight):
        assert weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_debug_preset_built_on_meta_initializes_to_the_same_values_as_on_cpu():
    on_cpu = Wrapped('debug')
    on_cpu.init_weights(seed=0)
    with torch.device('meta'):
        on_meta = Wrapped('debug')
    on_meta.init_weights(seed=0, device='cpu')
    for (name, a), (_, b) in zip(on_cpu.state_dict().items(), on_meta.state_dict().items()):
        assert torch.equal(a, b), name
    logits = on_meta(get_preset('debug').example_input(1))
    assert logits.isfinite().all()


def test_every_init_cfg_names_registered_initializers():
    for preset in PRESETS.values():
        assert preset.init_cfg, preset.name
        for cfg in preset.init_cfg:
            assert cfg['type'] in WEIGHT_INITIALIZERS, (preset.name, cfg)
        assert '\n' not in preset.description and preset.description


def test_init_cfg_is_a_fresh_copy_each_time():
    preset = get_preset('debug')
    preset.init_cfg[0]['std'] = 99
    assert preset.init_cfg[0]['std'] == 0.02


def test_unknown_name_names_it_the_valid_names_and_a_close_match():
    with pytest.raises(KeyError) as info:
        get_preset('gpt-355m')
    message = info.value.args[0]
    assert "'gpt-355m'" in message
    for name in PRESETS:
        assert repr(name) in message
    assert "Did you mean 'gpt-350m'" in message


@pytest.mark.parametrize('name, expected', [('gpt-125m', 124e6), ('gpt-350m', 355e6),
                                            ('gpt-1.3b', 1.31e9)])
def test_gpt_parameter_count_matches_gpt2(name, expected):
    with torch.device('meta'):  # no memory, no initialization: cheap at any size
        model = get_preset(name).build()
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - expected) / expected < 0.05, count


def test_presets_module_imports_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, 'torchvision', None)  # `import torchvision` now raises
    # Execute the module's source afresh, under another name, so the real one is untouched.
    spec = importlib.util.spec_from_file_location('fengine._presets_probe',
                                                  fengine.presets.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    assert set(module.PRESETS) == set(PRESETS)
    with pytest.raises(ImportError):
        module.get_preset('resnet50').build()  # torchvision is needed only here


def test_vit_b_16_built_on_meta_initializes_with_its_parameter_entries():
    pytest.importorskip('torchvision')
    preset = get_preset('vit_b_16')
    with torch.device('meta'):
        model = Wrapped('vit_b_16')
    model.init_cfg = preset.init_cfg + preset.param_init_cfg
    model.init_weights(seed=0, device='cpu')
    assert not any(p.is_meta for p in model.parameters())
    assert 0.01 < model.net.class_token.std() < 0.03
