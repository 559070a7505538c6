"""MMEngine's tutorial 'Model': its FashionMNIST example on fengine, with compiled steps.

    python examples/fashion_mnist.py                     # 5 epochs, compiled steps
    python examples/fashion_mnist.py --no-compile --epochs 1
    python examples/fashion_mnist.py --data synthetic    # no download at all
    python examples/fashion_mnist.py --seed 3            # the same losses every time

This is the tutorial's code with ``mmengine`` replaced by ``fengine``, the flags, and
one change: the Runner gets the model as a config, ``model=dict(type='NeuralNetwork')``,
so it builds the model after seeding and ``--seed S`` repeats a run exactly (the
tutorial's ``model=NeuralNetwork()`` draws its weights before the Runner seeds). The
tutorial's model and metric are in ``fashion_mnist_model.py`` beside this file, where
the config file ``examples/configs/fashion_mnist.py`` finds them too. ``--data auto``
(the default) uses the real FashionMNIST when it is on disk or can be downloaded; on
an offline machine it says so in one line and trains on a synthetic FashionMNIST-shaped
dataset of the same size (60000/10000 images, 10 learnable classes), and every metric
line is prefixed ``synthetic/``. ``--data real`` fails instead of falling back, and
leaves no folder behind.
"""
from __future__ import annotations

# Only the standard library up here: --help and argument errors answer before torch
# (several seconds to import on a small machine) is loaded.
import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--epochs', type=int, default=5, help='training epochs (default 5)')
    parser.add_argument('--no-compile', dest='compile', action='store_false',
                        help='run the eager steps instead of compiled, fused ones')
    parser.add_argument('--compile-backend', default='inductor',
                        help="torch.compile backend (default inductor; 'aot_eager' compiles "
                        'in a second, for a quick check)')
    parser.add_argument('--data', choices=('auto', 'real', 'synthetic'), default='auto',
                        help='auto: real FashionMNIST, else a synthetic stand-in (default); '
                        'real: fail when FashionMNIST is unavailable; synthetic: never download')
    parser.add_argument('--data-root', default='data', help='where FashionMNIST is (or goes)')
    parser.add_argument('--subset', type=int, default=None, metavar='N',
                        help='train and validate on the first N images of each split only '
                        '(a quick check; default: all of them)')
    parser.add_argument('--work-dir', default='./work_dir', help='logs and checkpoints')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of every random generator: two runs with the same seed '
                        'give the same losses and accuracy (default: one is drawn and logged)')
    args = parser.parse_args(argv)
    for name in ('epochs', 'batch_size', 'subset'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"argument --{name.replace('_', '-')}: must be at least 1, "
                         f'got {value}')
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)

    from torch.utils.data import DataLoader, Subset
    from torchvision.transforms import ToTensor

    from fashion_mnist_model import FashionMnistMetric  # the tutorial's classes, registered
    from fengine import Runner
    from fengine.datasets import load_fashion_mnist

    try:
        training_data, test_data, synthetic = load_fashion_mnist(
            args.data_root, data=args.data, transform=ToTensor())
    except RuntimeError as exc:  # --data real on a machine without the data
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
    if args.subset is not None:
        training_data, test_data = (Subset(split, range(min(args.subset, len(split))))
                                    for split in (training_data, test_data))

    train_dataloader = DataLoader(dataset=training_data, batch_size=args.batch_size)
    test_dataloader = DataLoader(dataset=test_data, batch_size=args.batch_size)

    runner = Runner(
        # A config, not NeuralNetwork(): the Runner builds it after seeding.
        model=dict(type='NeuralNetwork'),
        work_dir=args.work_dir,
        train_dataloader=train_dataloader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        train_cfg=dict(by_epoch=True, max_epochs=args.epochs, val_interval=1),
        val_cfg=dict(fp16=True),
        val_dataloader=test_dataloader,
        val_evaluator=dict(metrics=FashionMnistMetric(prefix='synthetic' if synthetic else None)),
        randomness=dict(seed=args.seed),
        compile=dict(backend=args.compile_backend) if args.compile else False)
    runner.train()
    return runner.val_loop.last_metrics


if __name__ == '__main__':
    main()
