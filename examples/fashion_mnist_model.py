"""The model, metric and data of MMEngine's tutorial 'Model', registered by name.

``examples/fashion_mnist.py`` builds them in Python; the config file
``examples/configs/fashion_mnist.py`` names them (``type='NeuralNetwork'``) and imports
this module through ``custom_imports``, so this folder must be on ``PYTHONPATH``:

    PYTHONPATH=examples python -m fengine.train examples/configs/fashion_mnist.py

The classes are the tutorial's code with ``mmengine`` replaced by ``fengine`` and a
registry decorator added.
"""
from __future__ import annotations

from torch import nn
from torch.utils.data import Dataset, Subset

from fengine.datasets import SyntheticFashionMNIST, load_fashion_mnist
from fengine.evaluator import BaseMetric
from fengine.model import BaseModel
from fengine.registry import DATASETS, METRICS, MODELS


@MODELS.register_module()
class NeuralNetwork(BaseModel):
    def __init__(self, data_preprocessor=None):
        super(NeuralNetwork, self).__init__(data_preprocessor)
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28*28, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 10),
        )
        self.loss = nn.CrossEntropyLoss()

    def forward(self, img, label, mode='tensor'):
        x = self.flatten(img)
        pred = self.linear_relu_stack(x)
        loss = self.loss(pred, label)
        if mode == 'loss':
            return dict(loss=loss)
        else:
            return pred.argmax(1), loss.item()


@METRICS.register_module()
class FashionMnistMetric(BaseMetric):
    def process(self, data, preds) -> None:
        self.results.append(((data[1] == preds[0].cpu()).sum(), preds[1], len(preds[0])))

    def compute_metrics(self, results):
        correct, loss, batch_size = zip(*results)
        test_loss, correct = sum(loss) / len(self.results), sum(correct) / sum(batch_size)
        return dict(Accuracy=correct, Avg_loss=test_loss)


@DATASETS.register_module()
def FashionMNISTSplit(root: str = 'data', train: bool = True, data: str = 'auto',
                      size: int | None = None, seed: int = 0) -> Dataset:
    """One FashionMNIST split as the tutorial loads it (images through ``ToTensor``).

    Args:
        root: Where FashionMNIST is, or is downloaded to.
        train: The training split, else the test split.
        data: ``'auto'`` (real data, else a synthetic stand-in), ``'real'`` or
            ``'synthetic'`` (see :func:`fengine.datasets.load_fashion_mnist`).
        size: Keep the first ``size`` images (all by default).
        seed: The synthetic data's seed.
    """
    from torchvision.transforms import ToTensor

    if data == 'synthetic':
        return SyntheticFashionMNIST(train=train, size=size, seed=seed, transform=ToTensor())
    train_split, test_split, _ = load_fashion_mnist(root, data=data, transform=ToTensor())
    split = train_split if train else test_split
    return split if size is None else Subset(split, range(min(size, len(split))))
