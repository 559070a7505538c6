"""A tiny model sharded with torch's ``fully_shard``, for the sharded checkpoint tests.

Imported by the tests and by the scripts they start under ``torchrun``.
"""
from __future__ import annotations

import tempfile

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import TensorDataset

from fengine.model import BaseModel


class TinyNet(BaseModel):
    """Two blocks and a head; each block is sharded on its own (as a transformer's).

    Dropout draws random numbers, so an exact resume needs the random states back.
    """

    def __init__(self, width: int = 12) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8 if i == 0 else width, width),
                                                   nn.ReLU(), nn.Dropout(0.1))
                                     for i in range(2)])
        self.head = nn.Linear(width, 3)

    def forward(self, x, label=None, mode='tensor'):
        for block in self.blocks:
            x = block(x)
        logits = self.head(x)
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(logits, label))
        if mode == 'predict':
            return logits.argmax(1), label
        return logits


def tiny_net(width: int = 12) -> TinyNet:
    """The same initial weights every time."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyNet(width)


def shard(model: nn.Module) -> nn.Module:
    """``fully_shard`` each block, then the whole model (FSDP2's usual recipe)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model.head)
    fully_shard(model)
    return model


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter whole (gathered from the ranks when sharded), on the CPU."""
    return {name: (p.full_tensor() if hasattr(p, 'full_tensor') else p).detach().cpu().clone()
            for name, p in model.named_parameters()}


def assert_equal_tensors(a: dict, b: dict) -> None:
    """The same keys, and bit-identical tensors under each (the differing keys named)."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def samples(n: int = 48, seed: int = 0) -> TensorDataset:
    """Learnable data: the label sets the sign of a few inputs."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    x = torch.randn(n, 8, generator=generator)
    x[:, :3] += 2.0 * nn.functional.one_hot(labels, 3)
    return TensorDataset(x, labels)


def init_single_rank_group() -> None:
    """A process group of one rank (gloo), so ``fully_shard`` works in this process."""
    store = torch_dist.FileStore(tempfile.mktemp(prefix='fengine-store-'), 1)
    torch_dist.init_process_group('gloo', store=store, rank=0, world_size=1)
