"""A tiny GPT-style BaseModel for the FSDP tests: uneven shapes, TruncNormal/Normal/Constant."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fengine.model import BaseModel
from fengine.presets import GPT, GPTConfig

# vocab 37 and width 18: first dimensions that 2 (and 4) ranks cannot split evenly.
TINY = GPTConfig(vocab_size=37, block_size=8, n_layer=2, n_head=2, n_embd=18)
INIT_SEED = 3
INIT_CFG = [
    dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.01),
    dict(type='Normal', layer='Embedding', std=0.05),
    dict(type='Constant', layer='LayerNorm', val=1, bias=0),
]


class TinyGPT(BaseModel):
    """Next-token prediction on token ids ``(batch, block_size + 1)``."""

    def __init__(self, cfg: GPTConfig = TINY, init_cfg=None) -> None:
        super().__init__(init_cfg=INIT_CFG if init_cfg is None else init_cfg)
        self.net = GPT(cfg)

    def forward(self, tokens: torch.Tensor, mode: str = 'tensor'):
        logits = self.net(tokens[:, :-1])
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()))
        return logits


def token_batches(n: int, batch: int, cfg: GPTConfig = TINY, seed: int = 0) -> list:
    generator = torch.Generator().manual_seed(seed)
    data = torch.randint(cfg.vocab_size, (n * batch, cfg.block_size + 1), generator=generator)
    return [(data[i * batch:(i + 1) * batch],) for i in range(n)]
