"""Runs inside each rank of ``torchrun --nproc-per-node=2`` for test_fsdp_pretrained_dist.py.

The checkpoints are written by the test before the launch, into ``$FSDP_TEST_OUT``; each
rank writes what it saw in every scenario to ``$FSDP_TEST_OUT/rank<r>.pt``.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fsdp_models import INIT_CFG, INIT_SEED, TinyGPT  # noqa: E402

import fengine.checkpoint as ckpt_module  # noqa: E402
from fengine import dist  # noqa: E402
from fengine.checkpoint_rows import RowSource  # noqa: E402
from fengine.model import FSDP  # noqa: E402


class Lines(logging.Handler):

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.getMessage()))


class Reads:
    """Counts the elements row sources hand out; a whole-file read raises."""

    def __init__(self) -> None:
        self.rows = 0
        self.whole: list[tuple[int, ...]] = []
        rows, read = RowSource.rows, RowSource.read

        def spy_rows(source, first, stop):
            part = rows(source, first, stop)
            self.rows += part.numel()
            return part

        def spy_read(source):
            self.whole.append(tuple(source.shape))
            return read(source)

        def refuse(*args, **kwargs):
            raise AssertionError('a whole checkpoint was read under FSDP')

        RowSource.rows, RowSource.read = spy_rows, spy_read
        ckpt_module.load_checkpoint_file = refuse


def bits(param) -> torch.Tensor:
    return param.to_local().detach().view(torch.int32).clone()


def scenario(init_cfg, reads: Reads) -> dict:
    with torch.device('meta'):
        net = TinyGPT(init_cfg=init_cfg)
    model = FSDP(net, shard_modules=['Block'])
    # Compared as bits: storage from to_empty may hold NaNs, which equal nothing.
    before = {n: bits(p) for n, p in model.module.named_parameters()}
    reads.rows, reads.whole = 0, []
    logger = logging.getLogger('fengine')
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    error = None
    try:
        model.init_weights(seed=INIT_SEED)
    except (RuntimeError, FileNotFoundError, KeyError) as exc:
        error = f'{type(exc).__name__}: {exc}'
    finally:
        logger.removeHandler(lines)
    params = dict(model.module.named_parameters())
    seen = dict(error=error, rows_read=reads.rows, whole_reads=reads.whole,
                local=sum(p.to_local().numel() for p in params.values()),
                dtensors=all(isinstance(p, DTensor) for p in params.values()),
                report=[m for _, m in lines.records if 'torch.Size' in m],
                warnings=[m for level, m in lines.records if level >= logging.WARNING],
                unchanged=all(torch.equal(bits(p), before[n]) for n, p in params.items()))
    if error is None:
        seen['params'] = {n: p.full_tensor().detach().clone() for n, p in params.items()}
    return seen


def main() -> None:
    out = Path(os.environ['FSDP_TEST_OUT'])
    dist.init_dist()
    reads = Reads()
    safetensors, pth = str(out / 'gpt.safetensors'), str(out / 'gpt.pth')
    seen = {
        'safetensors': scenario(dict(type='Pretrained', checkpoint=safetensors), reads),
        'pth': scenario(dict(type='Pretrained', checkpoint=pth), reads),
        'prefix': scenario(dict(type='Pretrained', checkpoint=str(out / 'student.pth'),
                                prefix='student.'), reads),
        # The blocks from the checkpoint, by an override on the last entry (a later
        # Constant for LayerNorm would replace their norms).
        'mixed': scenario(INIT_CFG[:1] + INIT_CFG[2:] + [dict(
            type='Normal', layer='Embedding', std=0.05,
            override=dict(name='net.blocks', type='Pretrained', checkpoint=safetensors,
                          prefix='net.blocks.'))], reads),
        'partial': scenario(INIT_CFG + [dict(type='Pretrained',
                                             checkpoint=str(out / 'partial.safetensors'))],
                            reads),
        'truncated': scenario(INIT_CFG + [dict(type='Pretrained',
                                               checkpoint=str(out / 'truncated.pth'))], reads),
    }
    torch.save(seen, out / f'rank{dist.get_rank()}.pt')


if __name__ == '__main__':
    main()
