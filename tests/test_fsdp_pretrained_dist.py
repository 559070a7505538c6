"""``Pretrained`` under FSDP2 on two CPU ranks (Gloo): each rank reads only its rows.

One ``torchrun --nproc-per-node=2`` launch of ``fsdp_pretrained_worker.py`` runs every
scenario; the tests compare what the ranks gathered with the same model initialized here
in one process. TinyGPT's vocabulary (37 rows) and widths (18, 54, 72) give uneven shards.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from fsdp_models import INIT_CFG, INIT_SEED, TinyGPT  # noqa: E402
from test_runner_distributed import _torchrun_retrying  # noqa: E402


def random_state(seed: int = 21) -> dict[str, torch.Tensor]:
    """A TinyGPT state dict; the tied output layer a copy of the token embedding."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in TinyGPT().state_dict().items()}
    state['net.lm_head.weight'] = state['net.tok_emb.weight'].clone()
    return state


def numel(prefix: str = '') -> int:
    return sum(p.numel() for n, p in TinyGPT().named_parameters() if n.startswith(prefix))


MIXED = INIT_CFG[:1] + INIT_CFG[2:] + [dict(type='Normal', layer='Embedding', std=0.05)]


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp('fsdp_pretrained')
    state = random_state()
    save_file(state, str(out / 'gpt.safetensors'))
    torch.save({'state_dict': state, 'meta': {'epoch': 1}}, out / 'gpt.pth')
    torch.save({f'student.{k}': v for k, v in random_state(22).items()}
               | {'teacher.net.ln_f.weight': torch.zeros(18)}, out / 'student.pth')
    partial = dict(state)
    del partial['net.blocks.1.mlp.fc.bias']
    partial['net.pos_emb.weight'] = torch.ones(7, 18)
    save_file(partial, str(out / 'partial.safetensors'))
    data = (out / 'gpt.pth').read_bytes()
    (out / 'truncated.pth').write_bytes(data[:len(data) // 2])
    return out


@pytest.fixture(scope='module')
def ranks(checkpoints):
    worker = TESTS / 'fsdp_pretrained_worker.py'
    _torchrun_retrying(worker, 300, FENGINE_DIST_TIMEOUT='120', FSDP_TEST_OUT=str(checkpoints))
    return [torch.load(checkpoints / f'rank{r}.pt', weights_only=False) for r in (0, 1)]


def one_process(init_cfg) -> dict[str, torch.Tensor]:
    with torch.device('meta'):
        model = TinyGPT(init_cfg=init_cfg)
    model.init_weights(seed=INIT_SEED, device='cpu')
    return {n: p.detach() for n, p in model.named_parameters()}


def assert_same(gathered: dict, expected: dict) -> None:
    """Equal bit for bit on every key of ``gathered`` (a checkpoint also has the tied key)."""
    assert set(gathered) <= set(expected)
    for name, value in gathered.items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize('scenario, file', [('safetensors', 'gpt.safetensors'),
                                            ('pth', 'gpt.pth')])
def test_two_ranks_load_the_checkpoint_bit_for_bit_as_one_process(ranks, checkpoints,
                                                                  scenario, file):
    expected = one_process(dict(type='Pretrained', checkpoint=str(checkpoints / file)))
    assert_same(expected, random_state())  # the reference is the checkpoint itself
    for seen in ranks:
        assert seen[scenario]['error'] is None
        assert seen[scenario]['dtensors']
        assert_same(seen[scenario]['params'], expected)
    assert ranks[0][scenario]['params']['net.tok_emb.weight'].shape == (37, 18)


@pytest.mark.parametrize('scenario', ['safetensors', 'pth', 'prefix', 'mixed'])
def test_each_rank_reads_only_its_own_rows(ranks, scenario):
    for seen in ranks:
        assert seen[scenario]['whole_reads'] == []  # no parameter or buffer read whole
    if scenario == 'mixed':  # only the blocks come from the checkpoint
        assert all(0 < seen['mixed']['rows_read'] < seen['mixed']['local'] for seen in ranks)
        assert sum(seen['mixed']['rows_read'] for seen in ranks) == numel('net.blocks.')
    else:
        for seen in ranks:
            assert seen[scenario]['rows_read'] == seen[scenario]['local']
    total = numel()
    assert ranks[0]['pth']['local'] + ranks[1]['pth']['local'] == total
    assert ranks[0]['pth']['local'] / total == pytest.approx(0.5, abs=0.05)


def test_prefix_loads_the_entries_under_it(ranks, checkpoints):
    cfg = dict(type='Pretrained', checkpoint=str(checkpoints / 'student.pth'),
               prefix='student.')
    expected = one_process(cfg)
    assert_same(expected, random_state(22))
    for seen in ranks:
        assert_same(seen['prefix']['params'], expected)


def test_pretrained_by_override_for_the_blocks_and_initializers_for_the_rest(
        ranks, checkpoints, fengine_log):
    path = str(checkpoints / 'gpt.safetensors')
    cfg = MIXED[:-1] + [dict(MIXED[-1], override=dict(
        name='net.blocks', type='Pretrained', checkpoint=path, prefix='net.blocks.'))]
    expected = one_process(cfg)
    single = [r.getMessage() for r in fengine_log.records if 'torch.Size' in r.getMessage()]

    for seen in ranks:
        assert_same(seen['mixed']['params'], expected)
    assert torch.equal(expected['net.blocks.0.attn.qkv.weight'],
                       random_state()['net.blocks.0.attn.qkv.weight'])
    assert not torch.equal(expected['net.tok_emb.weight'], random_state()['net.tok_emb.weight'])
    # The init report: written once, by rank 0, the same as in one process.
    assert ranks[0]['mixed']['report'] == single and len(single) == 28
    assert ranks[1]['mixed']['report'] == []
    assert f'PretrainedInit: load from {path}' in single[5]


def test_a_missing_key_and_a_wrong_shape_are_named_and_those_parameters_keep_their_init(
        ranks, checkpoints):
    expected = one_process(INIT_CFG + [dict(type='Pretrained',
                                             checkpoint=str(checkpoints / 'partial.safetensors'))])
    state = random_state()
    for seen in ranks:
        partial = seen['partial']
        assert partial['error'] is None
        warning = '\n'.join(partial['warnings'])
        assert 'missing keys in source state_dict: net.blocks.1.mlp.fc.bias' in warning
        assert ('size mismatch for net.pos_emb.weight: copying a param with shape (7, 18) '
                'from checkpoint, the shape in current model is (8, 18).') in warning
        assert_same(partial['params'], expected)
        assert not torch.equal(partial['params']['net.pos_emb.weight'][:7],
                               state['net.pos_emb.weight'][:7])
        assert torch.equal(partial['params']['net.blocks.1.mlp.fc.bias'],
                           torch.full((72,), 0.01))  # TruncNormal's bias
    report = {line.split(' - ')[0].strip(): line for line in ranks[0]['partial']['report']}
    assert 'NormalInit: mean=0, std=0.05' in report['net.pos_emb.weight']
    assert 'TruncNormalInit' in report['net.blocks.1.mlp.fc.bias']


def test_a_truncated_checkpoint_fails_on_every_rank_and_no_shard_changes(ranks, checkpoints):
    path = str(checkpoints / 'truncated.pth')
    for seen in ranks:
        error = seen['truncated']['error']
        assert error.startswith('RuntimeError: ') and path in error and 'corrupt' in error
        assert seen['truncated']['unchanged']
        assert seen['truncated']['rows_read'] == 0
        assert 'params' not in seen['truncated']

