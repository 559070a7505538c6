"""Pure initializers: recipes that turn (seed, path, shape, dtype, device) into a tensor.

Two levels, both plain data:

- :class:`TensorInit` fills one tensor: ``constant``, ``normal``, ``uniform``,
  ``trunc_normal``, and the fan-scaled ``xavier`` and ``kaiming``, whose scale is
  computed from the shape exactly as ``torch.nn.init`` does.
- :class:`LayerInit` is MMEngine's module-level initializer as data: a recipe for
  every ``weight`` leaf, one for every ``bias`` leaf, the info string the init
  report prints, and the ``layer`` class names it selects.

Example:
    >>> import torch
    >>> from fengine.func import kaiming
    >>> w = kaiming(mode='fan_in')((64, 3, 3, 3), seed=0, path='conv.weight')
    >>> w.shape
    torch.Size([64, 3, 3, 3])
    >>> torch.equal(w, kaiming(mode='fan_in')((64, 3, 3, 3), seed=0, path='conv.weight'))
    True
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from .._errors import check_choice
from .rng import fold_in
from .sample import Distribution, sample
from .tree import fan_in_and_fan_out, leaf_name

__all__ = ['TensorInit', 'LayerInit', 'constant', 'normal', 'uniform', 'trunc_normal',
           'xavier', 'kaiming', 'NONLINEARITIES']

NONLINEARITIES = ('linear', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d',
                  'conv_transpose2d', 'conv_transpose3d', 'sigmoid', 'tanh', 'relu',
                  'leaky_relu', 'selu')
DISTRIBUTIONS = ('normal', 'uniform')
MODES = ('fan_in', 'fan_out')


def _check_number(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{what} must be a number, but got {type(value).__name__}: {value!r}')
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class TensorInit:
    """A pure recipe for one tensor.

    ``kind`` is one of ``constant``, ``normal``, ``uniform``, ``trunc_normal``,
    ``xavier`` and ``kaiming``; ``args`` are its arguments as ``(name, value)``
    pairs. Build one with the factory of the same name.
    """
    kind: str
    args: tuple[tuple[str, object], ...]

    def distribution(self, shape: torch.Size | tuple[int, ...], path: str = '') -> Distribution:
        """The distribution this recipe draws from for a tensor of ``shape``."""
        args = dict(self.args)
        if math.prod(shape) == 0:
            return Distribution('constant', (0.0,))  # nothing to fill, as torch.nn.init
        if self.kind == 'constant':
            return Distribution('constant', (args['val'],))
        if self.kind == 'normal':
            return Distribution('normal', (args['mean'], args['std']))
        if self.kind == 'uniform':
            return Distribution('uniform', (args['a'], args['b']))
        if self.kind == 'trunc_normal':
            return Distribution('trunc_normal', (args['mean'], args['std'], args['a'], args['b']))
        fan_in, fan_out = fan_in_and_fan_out(shape, path)
        if self.kind == 'xavier':
            std = args['gain'] * math.sqrt(2.0 / float(fan_in + fan_out))
        else:  # kaiming
            gain = nn.init.calculate_gain(args['nonlinearity'], args['a'])
            std = gain / math.sqrt(fan_in if args['mode'] == 'fan_in' else fan_out)
        if args['distribution'] == 'uniform':
            bound = math.sqrt(3.0) * std
            return Distribution('uniform', (-bound, bound))
        return Distribution('normal', (0.0, std))

    def __call__(self, shape: torch.Size | tuple[int, ...], *, seed: int, path: str,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = 'cpu',
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """A new tensor (or ``out``, filled); the same arguments give the same values."""
        dist = self.distribution(shape, path)
        return sample(dist, shape, key=fold_in(seed, path), dtype=dtype, device=device,
                      out=out)

    def __str__(self) -> str:
        return f'{self.kind}(' + ', '.join(f'{k}={v}' for k, v in self.args) + ')'


def constant(val: float) -> TensorInit:
    """Every element equals ``val`` (``torch.nn.init.constant_``)."""
    return TensorInit('constant', (('val', _check_number('val', val)),))


def normal(mean: float = 0.0, std: float = 1.0) -> TensorInit:
    """Normal ``N(mean, std^2)`` (``torch.nn.init.normal_``)."""
    _check_number('mean', mean)
    if _check_number('std', std) < 0:
        raise ValueError(f'std must be >= 0, but got {std}')
    return TensorInit('normal', (('mean', mean), ('std', std)))


def uniform(a: float = 0.0, b: float = 1.0) -> TensorInit:
    """Uniform on ``[a, b)`` (``torch.nn.init.uniform_``)."""
    if _check_number('a', a) > _check_number('b', b):
        raise ValueError(f'uniform needs a <= b, but got a={a}, b={b}')
    return TensorInit('uniform', (('a', a), ('b', b)))


def trunc_normal(mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                 b: float = 2.0) -> TensorInit:
    """Normal ``N(mean, std^2)`` truncated to ``[a, b]`` (``torch.nn.init.trunc_normal_``)."""
    _check_number('mean', mean)
    if _check_number('std', std) <= 0:
        raise ValueError(f'std must be > 0, but got {std}')
    if _check_number('a', a) >= _check_number('b', b):
        raise ValueError(f'trunc_normal needs a < b, but got a={a}, b={b}')
    return TensorInit('trunc_normal', (('mean', mean), ('std', std), ('a', a), ('b', b)))


def xavier(gain: float = 1.0, distribution: str = 'normal') -> TensorInit:
    """Glorot/Xavier, scaled by ``fan_in + fan_out`` (``torch.nn.init.xavier_*_``)."""
    _check_number('gain', gain)
    check_choice('distribution', distribution, DISTRIBUTIONS)
    return TensorInit('xavier', (('gain', gain), ('distribution', distribution)))


def kaiming(a: float = 0.0, mode: str = 'fan_out', nonlinearity: str = 'relu',
            distribution: str = 'normal') -> TensorInit:
    """He/Kaiming, scaled by fan-in or fan-out (``torch.nn.init.kaiming_*_``)."""
    _check_number('a', a)
    check_choice('mode', mode, MODES)
    check_choice('nonlinearity', nonlinearity, NONLINEARITIES)
    check_choice('distribution', distribution, DISTRIBUTIONS)
    return TensorInit('kaiming', (('a', a), ('mode', mode), ('nonlinearity', nonlinearity),
                                  ('distribution', distribution)))


@dataclass(frozen=True)
class LayerInit:
    """MMEngine's module-level initializer as data.

    Applied to a parameter tree it sets every leaf named ``weight`` with
    ``weight`` and every leaf named ``bias`` with ``bias``; other leaves are
    left alone. ``layer`` names the module classes it selects (empty: the
    modules it is given, as MMEngine's ``override``).
    """
    weight: TensorInit
    bias: TensorInit
    info: str
    layer: tuple[str, ...] = field(default=())

    def fills(self, paths) -> dict[str, TensorInit]:
        """The recipe for each ``weight``/``bias`` path in ``paths``."""
        recipes = {'weight': self.weight, 'bias': self.bias}
        return {p: recipes[leaf_name(p)] for p in paths if leaf_name(p) in recipes}

    def __call__(self, tree: Mapping[str, torch.Tensor], *,
                 seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """New tensors for the ``weight``/``bias`` leaves of ``tree`` and, per path, the info.

        Pure: ``tree`` is read for shapes, dtypes and devices only.
        """
        new, info = {}, {}
        for path, recipe in self.fills(tree).items():
            like = tree[path]
            new[path] = recipe(like.shape, seed=seed, path=path, dtype=like.dtype,
                               device=like.device)
            info[path] = self.info
        return new, info
