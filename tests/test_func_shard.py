"""``fengine.func.init_shards``: a rank's rows of every parameter, as one process draws them.

No process group here: the "ranks" are row blocks of each parameter, the layout FSDP2's
``Shard(0)`` gives (the first ranks get one row more when the rows do not divide evenly).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fsdp_models import INIT_SEED, TinyGPT  # noqa: E402

from fengine.func import init_plan, init_shards, row_shard, use_generator  # noqa: E402
from fengine.model import BaseModule  # noqa: E402


def _blocks(rows: int, world: int) -> list[tuple[int, int]]:
    """FSDP2's row split: ceil(rows / world) per rank, the last ones shorter or empty."""
    per = -(-rows // world)
    return [(min(r * per, rows), min((r + 1) * per, rows)) for r in range(world)]


def _sharded_init(build, world: int, rank: int, dtype=torch.float32):
    """Initialize ``rank``'s rows of a model built on meta; return path -> local rows."""
    with torch.device('meta'):
        model = build()
    plan = init_plan(model, own_init_cfg=isinstance(model, BaseModule))
    shards, inputs = {}, {}
    for path, param in plan.params.items():
        rows = param.shape[0] if param.dim() else 1
        first, last = _blocks(rows, world)[rank]
        local = torch.empty((last - first, *param.shape[1:]), dtype=dtype)
        shards[path] = row_shard(param.shape, first, local)
        inputs[path] = torch.empty(param.shape, dtype=dtype, device='meta')
    result = init_shards(plan, shards, seed=INIT_SEED, inputs=inputs,
                         out={p: s.local for p, s in shards.items()})
    return {p: s.local for p, s in shards.items()}, result.info


def _whole(build, dtype=torch.float32):
    model = build().to(dtype)
    model.init_weights(seed=INIT_SEED)
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.parametrize('world', [2, 3, 4])
def test_the_shards_of_every_rank_put_together_are_the_whole_init_bit_for_bit(world):
    whole = _whole(TinyGPT)
    parts = [_sharded_init(TinyGPT, world, rank)[0] for rank in range(world)]
    for path, value in whole.items():
        assert torch.equal(torch.cat([part[path] for part in parts]), value), path


def test_the_report_of_a_shard_is_the_report_of_the_whole_model():
    _, info = _sharded_init(TinyGPT, 2, 1)
    model = TinyGPT()
    assert info == {p: e.info for p, e in init_plan(model, own_init_cfg=True).entries().items()}
    assert info['net.ln_f.weight'] == 'ConstantInit: val=1, bias=0'


class UserInit(BaseModule):
    """A user-defined init_weights (opaque code) next to an init_cfg and a meta default."""

    def __init__(self) -> None:
        super().__init__(init_cfg=dict(type='Normal', layer='Linear', std=0.5))
        self.head = nn.Linear(5, 7)
        self.body = Body()
        self.norm = nn.LayerNorm(7)  # no init_cfg entry: PyTorch's reset_parameters


class Body(BaseModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(9, 3))

    def init_weights(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.arange(27.0).view(9, 3) + torch.rand(9, 3))


@pytest.mark.parametrize('rank', [0, 1])
def test_opaque_init_code_runs_on_the_full_tensor_and_each_rank_keeps_its_rows(rank):
    local, info = _sharded_init(UserInit, 2, rank)
    with torch.device('meta'):
        model = UserInit()
    model.init_weights(seed=INIT_SEED, device='cpu')
    for path, value in model.named_parameters():
        first, last = _blocks(value.shape[0], 2)[rank]
        assert torch.equal(local[path], value.detach()[first:last]), path
    assert info['body.weight'] == 'Initialized by user-defined `init_weights` in Body'
    assert info['norm.weight'].startswith('PyTorch default initialization of LayerNorm')


def test_a_generator_without_offsets_draws_whole_and_keeps_the_rows():
    with use_generator('torch'):
        whole = _whole(TinyGPT)
        parts = [_sharded_init(TinyGPT, 2, rank)[0] for rank in range(2)]
    for path, value in whole.items():
        assert torch.equal(torch.cat([part[path] for part in parts]), value), path


def test_bfloat16_shards_are_drawn_in_float32_and_rounded_once_as_the_whole():
    whole = _whole(TinyGPT, torch.bfloat16)
    parts = [_sharded_init(TinyGPT, 2, rank, torch.bfloat16)[0] for rank in range(2)]
    for path, value in whole.items():
        assert torch.equal(torch.cat([part[path] for part in parts]), value), path


def test_a_shard_that_is_not_a_block_of_rows_is_refused():
    with pytest.raises(ValueError, match=r'a shard of shape \(2, 4\) from row 0 is not a block '
                                         r'of rows of a parameter of shape \(5, 3\)'):
        row_shard((5, 3), 0, torch.empty(2, 4))
    with pytest.raises(ValueError, match='a shard must be contiguous'):
        row_shard((5, 3), 0, torch.empty(3, 2).t())


def test_a_missing_shard_is_named():
    with torch.device('meta'):
        model = TinyGPT()
    with pytest.raises(KeyError, match=r"no shard given for \['net.tok_emb.weight'"):
        init_shards(init_plan(model, own_init_cfg=True), {}, seed=0)
