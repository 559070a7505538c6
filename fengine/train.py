"""Train from a config file (MMEngine: OpenMMLab's ``tools/train.py``).

    python -m fengine.train CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
                                   [--cfg-options KEY=VALUE ...] [--launcher none|pytorch]
    torchrun --nproc-per-node=2 -m fengine.train CONFIG --launcher pytorch

The config is read with :meth:`fengine.config.Config.fromfile`, the options are applied
to it, and ``Runner.from_cfg(cfg).train()`` runs.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from .config import Config, DictAction

__all__ = ['parse_args', 'apply_args', 'main']

_AMP_FROM = 'OptimWrapper'
_AMP_TO = 'AmpOptimWrapper'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m fengine.train`` (``tools/train.py``'s arguments)."""
    parser = argparse.ArgumentParser(
        prog='python -m fengine.train',
        description='Train a model from a config file (a .py, .json, .yaml or .yml '
                    'file holding the Runner arguments).')
    parser.add_argument('config', help='the config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: the '
                        "config's work_dir, else ./work_dirs/<config file name>)")
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CHECKPOINT',
                        help='resume training from CHECKPOINT; without one, from the '
                        "work dir's last checkpoint")
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training: the optim wrapper becomes an '
                        "AmpOptimWrapper with loss_scale='dynamic'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config values: a.b=1 c=[1,2] d=(3,4) e=None f=true '
                        'g=x,y (a list); digits index lists, e.g. a.0.b=2')
    parser.add_argument('--launcher', choices=('none', 'pytorch'), default='none',
                        help="'pytorch' under torchrun (one process per device)")
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to ``cfg`` in place, as ``tools/train.py`` does, and return it.

    ``--cfg-options`` are merged first; the work dir is ``--work-dir``, else the
    config's ``work_dir``, else ``./work_dirs/<config stem>``.

    Raises:
        ValueError: ``--amp`` with an optim wrapper of another type than
            ``OptimWrapper``/``AmpOptimWrapper``, or without ``optim_wrapper``.
    """
    from .logging import print_log

    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('./work_dirs', Path(args.config).stem)
    if args.amp:
        wrapper = cfg.get('optim_wrapper')
        if not isinstance(wrapper, dict):
            raise ValueError(f'--amp changes the optim_wrapper config, but {args.config} has '
                             f'none (optim_wrapper={wrapper!r})')
        kind = wrapper.get('type', _AMP_FROM)
        if kind == _AMP_TO:
            print_log('--amp: the config uses AmpOptimWrapper already', logger='current',
                      level=logging.WARNING)
        elif kind == _AMP_FROM:
            wrapper.type = _AMP_TO
            wrapper.setdefault('loss_scale', 'dynamic')
        else:
            raise ValueError(f'--amp turns an OptimWrapper into an AmpOptimWrapper, but the '
                             f'optim wrapper is {kind!r}')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv: list[str] | None = None) -> Any:
    """Parse the command line, read the config, build the Runner and train.

    Returns:
        The :class:`~fengine.runner.Runner`, after training.
    """
    args = parse_args(argv)
    cfg = apply_args(Config.fromfile(args.config), args)
    from .runner import Runner  # after the arguments: --help needs no Runner

    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
