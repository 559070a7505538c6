"""Initialize a torchvision model from an ``init_cfg``, built on meta, straight on the device.

    python examples/init_demo.py                      # ResNet-50 on the CPU
    python examples/init_demo.py --model vit_b_16 --device cuda

The model is constructed under ``torch.device('meta')`` (no memory, no default
initialization), then ``init_weights(device=...)`` creates every parameter once, on the
target device, from the ``init_cfg`` below, and logs what set each one.
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from fengine.model import BaseModule

INIT_CFG = [
    dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
    dict(type='Constant', layer=['BatchNorm2d', 'LayerNorm'], val=1, bias=0),
    dict(type='TruncNormal', layer='Linear', std=0.02),
]


class Classifier(BaseModule):
    """A torchvision classifier whose initialization comes from ``init_cfg``."""

    def __init__(self, arch: str, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.net = getattr(torchvision.models, arch)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default='resnet50', help='a torchvision model name')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    with torch.device('meta'):
        model = Classifier(args.model, init_cfg=INIT_CFG)
    built = time.perf_counter()
    model.init_weights(seed=args.seed, device=args.device)
    if torch.device(args.device).type == 'cuda':
        torch.cuda.synchronize()
    done = time.perf_counter()

    count = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 224, 224, device=args.device))
    print(f'\n{args.model}: {count / 1e6:.1f}M parameters on {args.device}; '
          f'built on meta in {built - start:.3f} s, initialized in {done - built:.3f} s; '
          f'forward on 2 images gives logits of shape {tuple(out.shape)}, '
          f'finite: {bool(out.isfinite().all())}')


if __name__ == '__main__':
    main()
