"""A small model, data and metric for the hook tests (fast on a CPU)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from fengine import Runner
from fengine.evaluator import BaseMetric
from fengine.model import BaseModel

AOT_EAGER = dict(backend='aot_eager')


class Net(BaseModel):
    """A linear layer and a BatchNorm (a buffer to average or copy)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x, y, mode='tensor'):
        out = self.bn(self.fc(x))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(out, y))
        if mode == 'predict':
            return list(zip(out.argmax(1), y))
        return out


class Accuracy(BaseMetric):
    def process(self, data_batch, data_samples) -> None:
        self.results.extend(int(p == y) for p, y in data_samples)

    def compute_metrics(self, results) -> dict:
        return dict(accuracy=100.0 * sum(results) / len(results))


class Scores(BaseMetric):
    """Validation metrics read from a list, one dict per validation."""

    def __init__(self, scores: list[dict]) -> None:
        super().__init__()
        self.scores = list(scores)

    def process(self, data_batch, data_samples) -> None:
        self.results.append(0)

    def compute_metrics(self, results) -> dict:
        return self.scores.pop(0)


def data(n: int = 32, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=generator),
                         torch.randint(0, 3, (n,), generator=generator))


def fresh_net() -> Net:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Net()


def make_runner(work_dir: Path, *, iters: int | None = None, epochs: int | None = None,
                validate: bool = False, val_interval: int | None = None, checkpoint=None,
                custom_hooks=None, compile=False, lr: float = 0.1, **kwargs) -> Runner:
    """An iteration-based (``iters``) or epoch-based (``epochs``) run of :class:`Net`
    on 32 samples in batches of 8 (4 iterations an epoch), in order, with SGD."""
    train_cfg = (dict(by_epoch=False, max_iters=iters) if iters is not None
                 else dict(by_epoch=True, max_epochs=epochs or 1))
    if val_interval is not None:
        train_cfg['val_interval'] = val_interval
    extra = {}
    if validate:
        extra = dict(val_dataloader=dict(dataset=data(16, seed=1), batch_size=8),
                     val_evaluator=Accuracy(), val_cfg=dict())
    args = dict(model=fresh_net(), work_dir=work_dir,
                train_dataloader=dict(dataset=data(), batch_size=8,
                                      sampler=dict(type='DefaultSampler', shuffle=False)),
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)),
                train_cfg=train_cfg, randomness=dict(seed=3),
                default_hooks=dict(logger=None, checkpoint=checkpoint),
                custom_hooks=custom_hooks, compile=compile, **extra)
    args.update(kwargs)
    return Runner(**args)
