"""``Pretrained`` in :func:`fengine.func.init_shards`: each shard reads only its rows.

No process group here: as in tests/test_func_shard.py the "ranks" are FSDP2's row blocks
of every parameter, initialized one after the other in this process. The two-rank run
under real FSDP is tests/test_fsdp_pretrained_dist.py.
"""
from __future__ import annotations

import logging
import math
import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import fengine.checkpoint as ckpt_module
from fengine.checkpoint_rows import RowSource, open_rows
from fengine.func import init_plan, init_shards, row_shard
from fengine.model import BaseModule

SEED = 5


# -- models: first dimensions 7, 5 and 3 do not split evenly over 2 or 3 ranks ----------
class Encoder(BaseModule):

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self.emb = nn.Embedding(7, 6)
        self.fc = nn.Linear(6, 5)
        self.norm = nn.BatchNorm1d(5)
        self.scale = nn.Parameter(torch.ones(()))  # 0-dim: read whole by every rank


class Net(BaseModule):

    def __init__(self, init_cfg=None, encoder_cfg=None):
        super().__init__(init_cfg)
        self.encoder = Encoder(encoder_cfg)
        self.head = nn.Linear(5, 3)


def random_state(model: nn.Module, seed: int = 11) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point()
             else torch.full_like(v, 4) for k, v in model.state_dict().items()}
    state['encoder.norm.running_var'] = state['encoder.norm.running_var'].abs() + 0.5
    return state


def save(state: dict, path) -> str:
    path = str(path)
    if path.endswith('.safetensors'):
        save_file(state, path)
    elif path.endswith('legacy.pth'):
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(state, path)
    return path


def blocks(rows: int, world: int) -> list[tuple[int, int]]:
    """FSDP2's split of ``rows``: ceil(rows / world) per rank, the last ones shorter."""
    per = -(-rows // world)
    return [(min(r * per, rows), min((r + 1) * per, rows)) for r in range(world)]


def sharded(build, world: int, rank: int, fill: float = -3.0):
    """``rank``'s rows of a model built on meta, initialized by init_shards.

    Returns (path -> local rows, the InitResult, the model). Local tensors start as
    ``fill``, so a row no step writes is recognisable.
    """
    with torch.device('meta'):
        model = build()
    plan = init_plan(model, own_init_cfg=True)
    shards, inputs = {}, {}
    for path, param in plan.params.items():
        rows = param.shape[0] if param.dim() else 1
        first, last = blocks(rows, world)[rank] if param.dim() else (0, 1)
        local = torch.full((last - first, *param.shape[1:]) if param.dim() else (), fill)
        shards[path] = row_shard(param.shape, first, local)
        inputs[path] = torch.empty(param.shape, device='meta')
    locals_ = {p: s.local for p, s in shards.items()}
    result = init_shards(plan, shards, seed=SEED, inputs=inputs, out=locals_)
    return locals_, result, model


def gathered(build, world: int) -> tuple[dict[str, torch.Tensor], list]:
    parts = [sharded(build, world, rank) for rank in range(world)]
    params = {}
    for path, local in parts[0][0].items():
        if local.dim():
            params[path] = torch.cat([part[0][path] for part in parts])
        else:
            params[path] = local
            for part in parts:
                assert torch.equal(part[0][path], local), path  # every rank: the same value
    return params, [part[1] for part in parts]


def one_process(build) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The same model initialized whole, in one process (the reference)."""
    with torch.device('meta'):
        model = build()
    model.init_weights(seed=SEED, device='cpu')
    return ({n: p.detach() for n, p in model.named_parameters()},
            {n: b.detach() for n, b in model.named_buffers()})


@pytest.fixture
def reads(monkeypatch):
    """Every read the row sources make: ('rows', shape, first, stop) or ('read', shape).

    A whole-file reader called during the test fails it.
    """
    seen: list[tuple] = []
    rows, read = RowSource.rows, RowSource.read

    def spy_rows(self, first, stop):
        seen.append(('rows', tuple(self.shape), first, stop))
        return rows(self, first, stop)

    def spy_read(self):
        seen.append(('read', tuple(self.shape)))
        return read(self)

    def refuse(*args, **kwargs):
        raise AssertionError('a whole checkpoint was read for a sharded initialization')

    monkeypatch.setattr(RowSource, 'rows', spy_rows)
    monkeypatch.setattr(RowSource, 'read', spy_read)
    monkeypatch.setattr(ckpt_module, 'load_checkpoint_file', refuse)
    monkeypatch.setattr('safetensors.torch.load_file', refuse)
    return seen


# -- the values -------------------------------------------------------------------------
@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
@pytest.mark.parametrize('world', [2, 3])
def test_the_shards_put_together_are_the_one_process_pretrained_load_bit_for_bit(
        tmp_path, suffix, world):
    state = random_state(Net())
    path = save(state, tmp_path / f'net{suffix}')

    def build():
        return Net(init_cfg=dict(type='Pretrained', checkpoint=path))

    params, results = gathered(build, world)
    whole, buffers = one_process(build)

    for name, value in whole.items():
        assert torch.equal(params[name], value), name
        assert torch.equal(value, state[name]), name
    for result in results:
        for name in ('encoder.norm.running_mean', 'encoder.norm.running_var'):
            assert torch.equal(result.buffers[name], buffers[name]), name
        assert result.info['encoder.emb.weight'] == f'PretrainedInit: load from {path}'


@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_prefix_selects_the_subtree_and_the_rows_come_from_under_it(tmp_path, suffix):
    state = {f'backbone.{k}': v for k, v in random_state(Net()).items()
             if k.startswith('encoder.')}
    state['head.weight'] = torch.zeros(3, 5)  # not under the prefix: never read
    path = save({f'module.{k}': v for k, v in state.items()}, tmp_path / f'det{suffix}')

    def build():
        return Encoder(init_cfg=dict(type='Pretrained', checkpoint=path,
                                     prefix='backbone.encoder.'))

    params, _ = gathered(build, 2)
    whole, _ = one_process(build)

    for name, value in whole.items():
        assert torch.equal(params[name], value), name
        assert torch.equal(value, state[f'backbone.encoder.{name}']), name


def test_a_legacy_torch_save_file_is_read_whole_and_says_so(tmp_path, fengine_log):
    state = random_state(Net())
    path = save(state, tmp_path / 'legacy.pth')

    def build():
        return Net(init_cfg=dict(type='Pretrained', checkpoint=path))

    params, _ = gathered(build, 2)

    for name, value in params.items():
        assert torch.equal(value, state[name]), name
    lines = [m for m in fengine_log.messages(logging.INFO) if 'read whole' in m]
    assert len(lines) == 2  # once per rank
    assert path in lines[0] and 'legacy (non-zip) torch.save format' in lines[0]


# -- what each rank reads ---------------------------------------------------------------
@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_each_rank_reads_only_its_rows_of_every_sharded_parameter(tmp_path, suffix, reads):
    state = random_state(Net())
    path = save(state, tmp_path / f'net{suffix}')

    def build():
        return Net(init_cfg=dict(type='Pretrained', checkpoint=path))

    with torch.device('meta'):
        shapes = {n: tuple(p.shape) for n, p in build().named_parameters()}
    for rank in range(2):
        reads.clear()
        locals_, _, _ = sharded(build, 2, rank)

        wanted = sorted(('rows', shapes[n], *blocks(shapes[n][0], 2)[rank])
                        for n in shapes if shapes[n])
        assert sorted(r for r in reads if r[0] == 'rows') == wanted
        # Whole tensors: the 0-dim parameter and the BatchNorm buffers, nothing else.
        assert sorted(r for r in reads if r[0] == 'read') == sorted(
            [('read', ()), ('read', (5,)), ('read', (5,)), ('read', ())])
        # The elements read are those the rank holds: about half of the parameters.
        read = sum((stop - first) * math.prod(shape[1:]) for _, shape, first, stop in wanted)
        assert read == sum(t.numel() for n, t in locals_.items() if shapes[n])
        assert read < 0.6 * sum(math.prod(s) for s in shapes.values())


def test_a_pth_file_is_memory_mapped_and_weights_only(tmp_path, monkeypatch):
    path = save(random_state(Net()), tmp_path / 'net.pth')
    calls = []
    load = torch.load

    def spy(*args, **kwargs):
        calls.append({k: kwargs.get(k) for k in ('mmap', 'weights_only', 'map_location')})
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', spy)

    sharded(lambda: Net(init_cfg=dict(type='Pretrained', checkpoint=path)), 2, 0)

    assert calls == [dict(mmap=True, weights_only=True, map_location='cpu')]


def test_open_rows_reads_nothing_but_the_header_until_asked(tmp_path, reads):
    path = save(random_state(Net()), tmp_path / 'net.safetensors')

    sources = open_rows(path)

    assert reads == []
    assert sources['encoder.emb.weight'].shape == (7, 6)
    assert torch.equal(sources['encoder.emb.weight'].rows(4, 7),
                       random_state(Net())['encoder.emb.weight'][4:7])
    with pytest.raises(IndexError, match=re.escape('rows [4, 9) are outside a tensor of '
                                                   'shape (7, 6)')):
        sources['encoder.emb.weight'].rows(4, 9)


# -- mixed init_cfg ---------------------------------------------------------------------
def test_pretrained_for_one_module_by_override_and_trunc_normal_for_the_rest(tmp_path):
    encoder_state = {k[len('encoder.'):]: v for k, v in random_state(Net()).items()
                     if k.startswith('encoder.')}
    path = save(encoder_state, tmp_path / 'encoder.safetensors')

    def build():
        return Net(init_cfg=dict(
            type='TruncNormal', layer='Linear', std=0.02, bias=0.01,
            override=[dict(name='encoder', type='Pretrained', checkpoint=path),
                      dict(name='head')]))

    params, results = gathered(build, 2)
    whole, _ = one_process(build)

    for name, value in whole.items():
        assert torch.equal(params[name], value), name
    assert torch.equal(params['encoder.fc.weight'], encoder_state['fc.weight'])
    assert 0 < params['head.weight'].abs().max() < 0.1  # TruncNormal with std 0.02
    assert torch.equal(params['head.bias'], torch.full((3,), 0.01))
    for result in results:
        assert result.info['encoder.fc.weight'] == f'PretrainedInit: load from {path}'
        assert result.info['head.weight'].startswith('TruncNormalInit: a=-2, b=2')


# -- mismatches and failures ------------------------------------------------------------
def test_a_missing_key_and_a_wrong_shape_are_warned_by_name_and_those_rows_stay(
        tmp_path, fengine_log):
    state = random_state(Net())
    del state['head.bias']
    state['encoder.emb.weight'] = torch.ones(9, 6)
    path = save(state, tmp_path / 'partial.safetensors')

    def build():
        return Net(init_cfg=[dict(type='Constant', layer='Linear', val=2, bias=0.5),
                             dict(type='Pretrained', checkpoint=path)])

    locals_, result, _ = sharded(build, 2, 1)
    whole, _ = one_process(build)

    warning = '\n'.join(fengine_log.messages(logging.WARNING))
    assert 'missing keys in source state_dict: head.bias' in warning
    assert ('size mismatch for encoder.emb.weight: copying a param with shape (9, 6) from '
            'checkpoint, the shape in current model is (7, 6).') in warning
    assert torch.equal(locals_['head.bias'], torch.full((1,), 0.5))  # Constant's bias, row 2
    assert torch.equal(locals_['head.weight'], state['head.weight'][2:])
    assert torch.equal(torch.cat([sharded(build, 2, 0)[0]['encoder.emb.weight'],
                                  locals_['encoder.emb.weight']]), whole['encoder.emb.weight'])
    assert result.info['head.bias'] == 'ConstantInit: val=2, bias=0.5'


def _truncated(tmp_path, suffix):
    path = save(random_state(Net()), tmp_path / f'net{suffix}')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return path


@pytest.mark.parametrize('make, error, text', [
    pytest.param(lambda tmp: str(tmp / 'nope.safetensors'), FileNotFoundError,
                 'nope.safetensors', id='missing-file'),
    pytest.param(lambda tmp: _truncated(tmp, '.safetensors'), RuntimeError, 'corrupt',
                 id='truncated-safetensors'),
    pytest.param(lambda tmp: _truncated(tmp, '.pth'), RuntimeError, 'corrupt',
                 id='truncated-pth'),
])
def test_a_failed_open_raises_before_any_shard_is_written(tmp_path, make, error, text):
    path = make(tmp_path)

    def build():
        return Net(init_cfg=[dict(type='Constant', layer='Linear', val=2),
                             dict(type='Pretrained', checkpoint=path)])

    with torch.device('meta'):
        model = build()
    plan = init_plan(model, own_init_cfg=True)
    shards = {p: row_shard(t.shape, 0, torch.full(t.shape, -3.0))
              for p, t in plan.params.items()}
    inputs = {p: torch.empty(t.shape, device='meta') for p, t in plan.params.items()}

    with pytest.raises(error) as info:
        init_shards(plan, shards, seed=SEED, inputs=inputs,
                    out={p: s.local for p, s in shards.items()})

    assert text in str(info.value) and path in str(info.value)
    for name, shard in shards.items():
        assert torch.equal(shard.local, torch.full(shard.local.shape, -3.0)), name


# -- models built on meta ---------------------------------------------------------------
def test_pytorch_default_init_is_skipped_for_modules_the_checkpoint_sets_whole(
        tmp_path, monkeypatch):
    state = random_state(Net())
    del state['head.bias']  # head is only partly in the checkpoint: its default init runs
    path = save(state, tmp_path / 'net.safetensors')
    calls = []
    for cls in (nn.Linear, nn.Embedding):
        reset = cls.reset_parameters

        def spy(module, reset=reset):
            if not module.weight.is_meta:  # an initialization, not the build on meta
                calls.append(tuple(module.weight.shape))
            reset(module)

        monkeypatch.setattr(cls, 'reset_parameters', spy)

    def build():
        return Net(init_cfg=dict(type='Pretrained', checkpoint=path))

    locals_, result, _ = sharded(build, 2, 0)
    whole, _ = one_process(build)

    assert calls == [(3, 5), (3, 5)]  # head only, in the shard and in one process
    assert torch.equal(locals_['head.bias'], whole['head.bias'][:2])
    assert result.info['head.bias'].startswith('PyTorch default initialization of Linear')
    assert result.info['encoder.fc.weight'] == f'PretrainedInit: load from {path}'


def test_a_bare_parameter_built_on_meta_may_come_from_the_checkpoint_alone(tmp_path):
    state = random_state(Net())
    path = save(state, tmp_path / 'net.pth')
    with torch.device('meta'):
        net = Net(init_cfg=dict(type='Pretrained', checkpoint=path))

    net.init_weights(device='cpu')

    assert torch.equal(net.encoder.scale.detach(), state['encoder.scale'])


def test_a_bare_parameter_on_meta_that_the_checkpoint_lacks_is_still_an_error(tmp_path):
    state = random_state(Net())
    del state['encoder.scale']
    path = save(state, tmp_path / 'net.pth')
    with torch.device('meta'):
        net = Net(init_cfg=dict(type='Pretrained', checkpoint=path))

    with pytest.raises(ValueError, match=re.escape(
            "nothing in the plan sets them: 'encoder.scale' (Encoder)")):
        net.init_weights(device='cpu')


def test_a_mapped_tensor_reads_the_same_after_its_pages_are_released(tmp_path):
    state = random_state(Net())
    path = save(state, tmp_path / 'net.pth')
    source = open_rows(path)['encoder.emb.weight']

    first = source.rows(0, 4).clone()
    source.release()

    assert torch.equal(first, state['encoder.emb.weight'][:4])
    assert torch.equal(source.rows(3, 7), state['encoder.emb.weight'][3:])
    assert torch.equal(source.read(), state['encoder.emb.weight'])


def test_init_shards_releases_every_source_it_copied_rows_from(tmp_path, monkeypatch):
    path = save(random_state(Net()), tmp_path / 'net.pth')
    released = []
    monkeypatch.setattr(RowSource, 'release', lambda self: released.append(tuple(self.shape)))

    sharded(lambda: Net(init_cfg=dict(type='Pretrained', checkpoint=path)), 2, 1)

    with torch.device('meta'):
        shapes = sorted(tuple(p.shape) for p in Net().parameters())
    assert sorted(released) == shapes


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64, torch.int64,
                                   torch.bool])
@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_rows_of_every_dtype_are_the_saved_rows(tmp_path, dtype, suffix):
    values = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(1)) * 9
    state = {'x': values.to(dtype), 'empty': torch.zeros(0, 4, dtype=dtype)}
    sources = open_rows(save(state, tmp_path / f'x{suffix}'))

    for first, stop in [(0, 5), (1, 3), (4, 5), (2, 2)]:
        part = sources['x'].rows(first, stop)
        assert part.dtype == dtype
        assert torch.equal(part, state['x'][first:stop]), (first, stop)
    assert sources['empty'].rows(0, 0).shape == (0, 4)
