"""FSDP2 through ``fengine.model.FSDP``: two CPU ranks over Gloo against one process.

One ``torchrun --nproc-per-node=2`` launch runs every scenario of ``fsdp_worker.py`` (each
launch costs seconds on this machine); the tests below read what each rank saw and compare
it with the same model initialized and trained here, in one process, on the global batch.
Every subprocess has a timeout, and one that overruns is killed with its process group.
"""
from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from fsdp_models import INIT_SEED, TinyGPT, token_batches  # noqa: E402
from test_runner_distributed import _start_two_ranks, _torchrun_retrying  # noqa: E402

from fengine.model import FSDP, ImgDataPreprocessor, MMFullyShardedDataParallel  # noqa: E402
from fengine.model.fsdp import _shard_targets, parameters_on_meta  # noqa: E402
from fengine.optim import OptimWrapper  # noqa: E402

STEPS = 10


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """What each rank saw, from one torchrun launch of fsdp_worker.py."""
    out = tmp_path_factory.mktemp('fsdp')
    worker = TESTS / 'fsdp_worker.py'
    _torchrun_retrying(worker, 420, FENGINE_DIST_TIMEOUT='120', FSDP_TEST_OUT=str(out))
    return [torch.load(out / f'rank{r}.pt', weights_only=False) for r in (0, 1)]


@pytest.fixture(scope='module')
def one_process():
    """The same model initialized and trained in one process with the global batch (8)."""
    model = TinyGPT()
    model.init_weights(seed=INIT_SEED)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-2),
                           clip_grad=dict(max_norm=1.0))
    losses, norms = [], []
    for (batch,) in token_batches(STEPS, 8):
        out = model.train_step((batch,), wrapper)
        losses.append(float(out['loss']))
        norms.append(float(out['grad_norm']))
    return dict(initial=initial, losses=losses, grad_norms=norms,
                params={n: p.detach() for n, p in model.named_parameters()})


def _relative(params: dict, reference: dict) -> float:
    """Relative distance of all parameters together, leaving out the attention's key bias.

    Adding a constant to every key of a row shifts all its scores alike, which softmax
    ignores: the key bias has a zero true gradient, and Adam normalizes the rounding noise
    it gets into full-size steps, differently for a different summation order.
    """
    def flat(tree):
        parts = []
        for name in reference:
            tensor = tree[name]
            if name.endswith('attn.qkv.bias'):
                width = tensor.numel() // 3
                tensor = torch.cat([tensor[:width], tensor[2 * width:]])
            parts.append(tensor.flatten())
        return torch.cat(parts)
    a, b = flat(params), flat(reference)
    return float((a - b).norm() / b.norm())


# -- initialization -----------------------------------------------------------------------
def test_two_ranks_initialize_from_meta_to_the_bits_of_one_process(ranks, one_process):
    for seen in ranks:
        gathered = seen['init']['params']
        assert seen['init']['dtensors']
        for name, value in one_process['initial'].items():
            assert torch.equal(gathered[name], value), name
    # The uneven shard: 37 embedding rows on 2 ranks.
    assert gathered['net.tok_emb.weight'].shape == (37, 18)


def test_each_rank_holds_about_half_of_the_parameters_and_optimizer_state(ranks):
    total = ranks[0]['init']['total']
    assert total == sum(t.numel() for t in ranks[0]['init']['params'].values())
    for seen in ranks:
        assert seen['init']['local'] / total == pytest.approx(0.5, abs=0.02)
        state = seen['eager']
        assert state['local_state'] / state['global_state'] == pytest.approx(0.5, abs=0.02)
    assert ranks[0]['init']['local'] + ranks[1]['init']['local'] == total


def test_the_init_report_is_written_once_by_rank_0_as_in_one_process(ranks, fengine_log):
    model = TinyGPT()
    model.init_weights(seed=INIT_SEED)
    single = [r.getMessage() for r in fengine_log.records if 'torch.Size' in r.getMessage()]
    assert ranks[0]['init']['report'] == single and len(single) == 28
    assert 'TruncNormalInit: a=-2, b=2, mean=0, std=0.02, bias=0.01' in single[-5]
    assert ranks[1]['init']['report'] == []


# -- training -------------------------------------------------------------------------------
@pytest.mark.parametrize('mode', ['eager', 'compiled', 'compiled_model'])
def test_ten_adamw_steps_on_two_ranks_match_one_process_of_the_global_batch(
        ranks, one_process, mode):
    rank0, rank1 = (seen[mode] for seen in ranks)
    assert rank0['losses'] == pytest.approx(one_process['losses'], rel=1e-5)
    assert rank0['grad_norms'] == pytest.approx(one_process['grad_norms'], rel=1e-5)
    assert rank1['losses'] == rank0['losses']
    assert _relative(rank0['params'], one_process['params']) < 1e-5
    for name, value in rank0['params'].items():
        assert torch.equal(value, rank1['params'][name])


def test_compile_scope_block_compiles_each_sharded_block_on_its_own(ranks):
    assert ranks[0]['compiled']['graphs'] == 2  # TinyGPT has two blocks


def test_compile_scope_model_compiles_one_block_graph_and_the_loss(ranks):
    # The blocks share one compiled forward; the loss after GPT's loop over the blocks
    # (which runs uncompiled: a hook splits each iteration) is a graph of its own, and
    # so is the input slicing before it.
    assert ranks[0]['compiled_model']['graphs'] == 3


@pytest.mark.parametrize('mode', ['accumulate', 'compiled_accumulate'])
def test_accumulating_two_micro_batches_per_rank_trains_like_the_global_batch(
        ranks, one_process, mode):
    rank0 = ranks[0][mode]
    assert rank0['grad_norms'] == pytest.approx(one_process['grad_norms'], rel=1e-5)
    assert _relative(rank0['params'], one_process['params']) < 1e-5


def test_activation_checkpointing_of_the_sharded_blocks_changes_no_value(ranks):
    checkpointed, plain = ranks[0]['checkpointed'], ranks[0]['eager_3']
    assert checkpointed['losses'] == plain['losses']
    for name, value in plain['params'].items():
        assert torch.equal(checkpointed['params'][name], value), name


def test_bfloat16_mixed_precision_trains_close_to_float32(ranks):
    bf16, fp32 = ranks[0]['bf16'], ranks[0]['eager_3']
    assert bf16['losses'] != fp32['losses']  # the forward did run in bfloat16
    assert bf16['losses'] == pytest.approx(fp32['losses'], rel=2e-2)
    assert all(v.dtype == torch.float32 for v in bf16['params'].values())  # shards stay fp32


@pytest.mark.parametrize('name,wrapper', [('runner', 'FSDP'),
                                          ('runner_mmengine', 'MMFullyShardedDataParallel')])
def test_the_runner_builds_on_meta_shards_and_trains_like_one_process(
        ranks, one_process, name, wrapper):
    seen = ranks[0][name]
    assert seen['wrapper'] == wrapper
    # The MMEngine-style config also compiles (the whole model, by default) and
    # checkpoints the blocks.
    assert seen['compiled_blocks'] == (name == 'runner_mmengine')
    assert seen['compile_scope'] == 'model'
    assert seen['losses'] == pytest.approx(one_process['losses'], rel=1e-5)
    assert _relative(seen['params'], one_process['params']) < 1e-5


# -- a rank that dies -----------------------------------------------------------------------
DIE = textwrap.dedent('''
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    from fsdp_models import TinyGPT, token_batches
    from fengine import dist
    from fengine.model import FSDP
    from fengine.optim import OptimWrapper

    dist.init_dist()
    with torch.device('meta'):
        net = TinyGPT()
    model = FSDP(net, shard_modules=['Block'])
    model.init_weights(seed=0)
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-2))
    for step, (batch,) in enumerate(token_batches(20, 4)):
        if step == 2 and dist.get_rank() == 1:
            print('rank 1 dies on purpose', flush=True)
            os._exit(3)
        model.train_step((batch,), wrapper)
    print('rank 0 finished training', flush=True)
''')


def test_when_a_rank_dies_the_other_fails_with_a_clear_error_not_a_hang(tmp_path):
    # Two bare processes, no torchrun agent to stop the survivor (a rank on another
    # machine): only the broken connection, or the collective timeout, can end rank 0.
    script = tmp_path / 'die.py'
    script.write_text(DIE.format(tests=str(TESTS)))
    processes = _start_two_ranks(script, FENGINE_DIST_TIMEOUT='60',
                                 PYTHONPATH=str(TESTS.parent))
    try:
        output, _ = processes[0].communicate(timeout=150)
        died, _ = processes[1].communicate(timeout=30)
        assert 'rank 1 dies on purpose' in died and processes[1].returncode == 3
        assert processes[0].returncode != 0, output[-4000:]
        assert 'rank 0 finished training' not in output
        assert 'rank 0 of 2: a collective with the other ranks failed' in output, output[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


# -- arguments, checked before any process group is needed ----------------------------------
def test_fsdp_without_a_process_group_says_how_to_start_one():
    with pytest.raises(RuntimeError, match="FSDP needs a process group: launch with torchrun"):
        FSDP(TinyGPT(), shard_modules=['Block'])


def test_shard_modules_naming_no_class_lists_the_classes_present():
    with pytest.raises(ValueError, match=r"shard_modules names \['Blok'\], which no submodule "
                                         r"of TinyGPT is Did you mean 'Block'\?.*'LayerNorm'"):
        FSDP(TinyGPT(), shard_modules=['Blok'])
    with pytest.raises(TypeError, match='shard_modules must be class names'):
        FSDP(TinyGPT(), shard_modules=[nn.Linear])


def test_an_unknown_compile_scope_names_the_valid_choices():
    with pytest.raises(ValueError, match=r"FSDP compile_scope must be one of 'block', 'model', "
                                         r"but got 'models'. Did you mean 'model'\?"):
        FSDP(TinyGPT(), shard_modules=['Block'], compile_scope='models')
    with pytest.raises(ValueError, match=r"FSDP compile_scope must be one of 'block', 'model', "
                                         r"but got 'step'"):
        MMFullyShardedDataParallel(TinyGPT(), compile_scope='step')


def test_a_bad_mixed_precision_dtype_or_key_is_named():
    with pytest.raises(ValueError, match="mixed_precision param_dtype='bf17' is not a dtype"):
        FSDP(TinyGPT(), mixed_precision=dict(param_dtype='bf17'))
    with pytest.raises(TypeError, match=r"mixed_precision has unknown key\(s\) \['buffer_dtype'\]"):
        FSDP(TinyGPT(), mixed_precision=dict(buffer_dtype='float32'))


@pytest.mark.parametrize('key,value,message', [
    ('auto_wrap_policy', dict(type='size_based_auto_wrap_policy'), 'use shard_modules='),
    ('sync_module_states', True, 'every rank draws the same values'),
    ('param_init_fn', None, 'fengine initializes the shards from init_cfg'),
])
def test_mmengine_fsdp_arguments_without_an_fsdp2_meaning_are_refused_by_name(
        key, value, message):
    with pytest.raises(ValueError, match=rf"MMFullyShardedDataParallel: '{key}' is not "
                                         rf'supported \(.*{message}'):
        MMFullyShardedDataParallel(TinyGPT(), **{key: value})


def test_mmengine_fsdp_refuses_strategies_and_options_fsdp2_lacks():
    with pytest.raises(ValueError, match=r"sharding_strategy='HYBRID_SHARD' has no FSDP2 "
                                         r"equivalent here; choose one of 'FULL_SHARD', "
                                         r"'SHARD_GRAD_OP'"):
        MMFullyShardedDataParallel(TinyGPT(), sharding_strategy='HYBRID_SHARD')
    with pytest.raises(ValueError, match="'buffer_dtype' has no FSDP2 equivalent"):
        MMFullyShardedDataParallel(TinyGPT(), mixed_precision=dict(param_dtype='bf16',
                                                                   buffer_dtype='bf16'))
    with pytest.raises(ValueError, match='use_orig_params=False has no FSDP2 equivalent'):
        MMFullyShardedDataParallel(TinyGPT(), use_orig_params=False)
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['bucket_cap_mb'\]"):
        MMFullyShardedDataParallel(TinyGPT(), bucket_cap_mb=25)


def test_shard_modules_takes_class_names_over_the_mro_or_a_callable_innermost_first():
    model = TinyGPT()
    picked = [name for name, _ in _shard_targets(model, 'Block')]
    assert picked == ['net.blocks.1', 'net.blocks.0']  # fully_shard's order: inner first
    by_name = _shard_targets(model, lambda name, module: name.endswith('mlp'))
    assert [name for name, _ in by_name] == ['net.blocks.1.mlp', 'net.blocks.0.mlp']
    assert _shard_targets(model, None) == []


def test_a_model_built_for_sharding_has_meta_parameters_and_real_buffers():
    with parameters_on_meta():
        model = TinyGPT()
        model.data_preprocessor = ImgDataPreprocessor(mean=[1.0, 2.0, 3.0], std=[4.0, 8.0, 2.0])
    assert all(p.is_meta for p in model.parameters())
    assert model.data_preprocessor.mean.flatten().tolist() == [1.0, 2.0, 3.0]
    assert not nn.Linear(2, 2).weight.is_meta  # only inside the block


def test_the_fsdp_benchmark_runs_a_one_process_launch_and_reports_every_field():
    # bench/ cannot rot unnoticed; the figures themselves come from `python -m bench.fsdp_bench`.
    sys.path.insert(0, str(TESTS.parent))
    from bench import fsdp_bench

    row = fsdp_bench.launch('fsdp', 1, steps=1, warmup=0, timeout=300)
    assert row['kind'] == 'fsdp' and row['procs'] == 1 and row["params"] == 16_837_632
    assert row['state_mb'] == pytest.approx(3 * row['params'] * 4 / 2**20, rel=0.01)
    assert row['params_rank'] == row['params']  # one process holds every row
    assert row['peak_mb'] >= row['peak_steps_mb'] > 0
    assert set(row) == {'kind', 'procs', 'params', 'params_rank', 'state_mb', 'peak_mb',
                        'peak_steps_mb', 'build_s', 'init_s', 'step_s'}


def test_the_fused_one_graph_step_cannot_run_over_fsdp2_as_docs_distributed_md_says():
    # docs/distributed.md ("The compiled path under FSDP") explains the choice of the
    # compiled path with this error; if a torch version lifts it, the choice is open again.
    from bench import fsdp_compile_bench

    row = fsdp_compile_bench.launch('fused', 'aot_eager', timeout=300)
    assert row['error'] == 'Unsupported: Call to `torch._dynamo.disable()`'


def test_the_fsdp_benchmark_counts_the_parameters_of_the_model_it_builds():
    from bench import fsdp_bench
    from fengine.presets import GPT, GPTConfig

    for spec in fsdp_bench.MODELS.values():
        with torch.device('meta'):
            net = GPT(GPTConfig(**spec['config']))
        assert fsdp_bench.parameter_count(spec['config']) == \
            sum(p.numel() for p in net.parameters())


def test_the_fsdp_benchmark_skips_a_launch_that_does_not_fit_in_the_memory_available(
        monkeypatch):
    from bench import fsdp_bench

    # 204M parameters: a DDP rank holds ~3.3 GB of weights, gradients and AdamW state;
    # two ranks fit an idle 24 GB machine, four do not.
    assert 2 * 204e6 * 16 / 1e9 < fsdp_bench.estimate_gb('ddp', 2, 'gpt-200m') < 22
    assert fsdp_bench.estimate_gb('ddp', 4, 'gpt-200m') > 24
    # FSDP's share per rank falls as 1/N: four ranks need less than four DDP ranks.
    assert fsdp_bench.estimate_gb('fsdp', 4, 'gpt-200m') < \
        fsdp_bench.estimate_gb('ddp', 4, 'gpt-200m') / 2
    monkeypatch.setattr(fsdp_bench, 'mem_available_gb', lambda: 12.0)
    need = fsdp_bench.estimate_gb('ddp', 2, 'gpt-200m')
    assert fsdp_bench.fits('ddp', 2, 'gpt-200m') == (
        f'does not fit: needs ~{need:.1f} GB, 12.0 GB available (2 GB left to others)')
    assert fsdp_bench.fits('fsdp', 1, 'gpt-17m') is None
