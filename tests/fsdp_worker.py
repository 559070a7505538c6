"""Runs inside each rank of ``torchrun --nproc-per-node=2`` for tests/test_fsdp.py.

Every scenario runs in this one launch (each launch costs seconds); each rank writes what
it saw to ``$FSDP_TEST_OUT/rank<r>.pt``, which the tests read.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fsdp_models import INIT_SEED, TinyGPT, token_batches  # noqa: E402

from fengine import Runner, dist  # noqa: E402
from fengine.model import FSDP  # noqa: E402
from fengine.model.activation_checkpointing import turn_on_activation_checkpointing  # noqa: E402
from fengine.model.fsdp import local_numel  # noqa: E402
from fengine.optim import OptimWrapper  # noqa: E402
from fengine.registry import MODELS  # noqa: E402

STEPS, BATCH = 10, 8  # 10 updates with a global batch of 8


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def full(model) -> dict[str, torch.Tensor]:
    return {n: p.full_tensor().detach().clone() for n, p in model.module.named_parameters()}


def sharded(compile=None, checkpoint=False, **wrapper) -> FSDP:
    with torch.device('meta'):
        net = TinyGPT()
    if checkpoint:
        turn_on_activation_checkpointing(net, ['net.blocks.0', 'net.blocks.1'])
    if compile:
        net.compile_steps(compile)
    model = FSDP(net, shard_modules=['Block'], **wrapper)
    model.init_weights(seed=INIT_SEED)
    return model


def train(model, accumulate=1, steps=STEPS) -> dict:
    """AdamW with clipping; rank r takes rows [4r, 4r + 4) of each global batch of 8."""
    rank = dist.get_rank()
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-2),
                           accumulative_counts=accumulate, clip_grad=dict(max_norm=1.0))
    wrapper.initialize_count_status(model.module, 0, steps * accumulate)
    losses, norms = [], []
    for (batch,) in token_batches(steps, BATCH):
        mine = batch[rank * 4:(rank + 1) * 4]
        micro = 4 // accumulate
        for k in range(accumulate):
            out = model.train_step((mine[k * micro:(k + 1) * micro],), wrapper)
        losses.append(float(out['loss']))
        norms.append(float(out['grad_norm']))
    state = [t for s in wrapper.optimizer.state.values() for t in s.values()
             if isinstance(t, DTensor)]
    return dict(losses=losses, grad_norms=norms, params=full(model),
                local_state=sum(t.to_local().numel() for t in state),
                global_state=sum(t.numel() for t in state))


def main() -> None:
    out = Path(os.environ['FSDP_TEST_OUT'])
    dist.init_dist()
    rank = dist.get_rank()
    seen: dict = {}
    logger = logging.getLogger('fengine')
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    model = sharded()
    logger.removeHandler(lines)
    seen['init'] = dict(params=full(model), report=lines.lines, local=local_numel(model),
                        total=sum(p.numel() for p in model.parameters()),
                        dtensors=all(isinstance(p, DTensor) for p in model.parameters()))

    compile = dict(backend='aot_eager')
    seen['eager'] = train(sharded())
    graphs = torch._dynamo.utils.counters['stats']['unique_graphs']
    seen['compiled'] = train(sharded(compile=compile, compile_scope='block'))
    seen['compiled']['graphs'] = torch._dynamo.utils.counters['stats']['unique_graphs'] - graphs
    graphs = torch._dynamo.utils.counters['stats']['unique_graphs']
    seen['compiled_model'] = train(sharded(compile=compile))  # the default scope
    seen['compiled_model']['graphs'] = \
        torch._dynamo.utils.counters['stats']['unique_graphs'] - graphs
    seen['accumulate'] = train(sharded(), accumulate=2)
    seen['compiled_accumulate'] = train(sharded(compile=compile), accumulate=2)
    seen['checkpointed'] = train(sharded(checkpoint=True), steps=3)
    seen['eager_3'] = train(sharded(), steps=3)
    seen['bf16'] = train(sharded(mixed_precision=dict(param_dtype='bfloat16',
                                                      reduce_dtype='float32')), steps=3)

    # The Runner: a config builds the model on meta, the wrapper shards and initializes it.
    MODELS.register_module('FsdpTinyGPT', module=TinyGPT, force=True)
    tokens = torch.cat([b for (b,) in token_batches(STEPS, BATCH)])
    # MMEngine's name, compiled blocks and checkpointing set the way MMEngine configs do.
    mmengine_cfg = dict(model_wrapper_cfg=dict(
        type='MMFullyShardedDataParallel', shard_modules='Block',
        sharding_strategy='SHARD_GRAD_OP', use_orig_params=True),
        compile=compile, activation_checkpointing=['net.blocks.0', 'net.blocks.1'])
    for name, extra in (
            ('runner', dict(model_wrapper_cfg=dict(type='FSDP', shard_modules=['Block']))),
            ('runner_mmengine', dict(cfg=mmengine_cfg))):
        runner = Runner(
            model=dict(type='FsdpTinyGPT'), work_dir=str(out / name), launcher='pytorch',
            train_dataloader=dict(dataset=TensorDataset(tokens), batch_size=4,
                                  sampler=dict(type='DefaultSampler', shuffle=False)),
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2),
                               clip_grad=dict(max_norm=1.0)),
            train_cfg=dict(by_epoch=False, max_iters=STEPS), randomness=dict(seed=INIT_SEED),
            default_hooks=dict(checkpoint=None), log_level='WARNING', **extra)
        runner.train()
        seen[name] = dict(wrapper=type(runner.model).__name__,
                          compiled_blocks=runner.model._compiled_blocks,
                          compile_scope=runner.model.compile_scope,
                          losses=runner.message_hub.history('train/loss'),
                          params=full(runner.model))
    torch.save(seen, out / f'rank{rank}.pt')


if __name__ == '__main__':
    main()
