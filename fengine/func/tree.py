"""Parameter trees: flat dicts from a parameter's dotted path to its tensor.

That is the layout ``torch.func.functional_call`` takes, and the one every pure
function in :mod:`fengine.func` reads and returns.
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import torch
from torch import nn

__all__ = ['ParamTree', 'ParamSpec', 'param_tree', 'param_specs', 'fan_in_and_fan_out',
           'leaf_name', 'join_path']

ParamTree = dict[str, torch.Tensor]


class ParamSpec(NamedTuple):
    """What a parameter is, without its values: enough to make a new one."""
    shape: torch.Size
    dtype: torch.dtype
    device: torch.device
    requires_grad: bool


def param_tree(module: nn.Module, prefix: str = '') -> ParamTree:
    """The module's parameters by path (tied parameters appear once, first path wins)."""
    return dict(module.named_parameters(prefix=prefix))


def param_specs(tree: Mapping[str, torch.Tensor]) -> dict[str, ParamSpec]:
    """Shape, dtype, device and ``requires_grad`` of every tensor in ``tree``."""
    return {path: ParamSpec(t.shape, t.dtype, t.device, t.requires_grad)
            for path, t in tree.items()}


def fan_in_and_fan_out(shape: torch.Size | tuple[int, ...], path: str = '') -> tuple[int, int]:
    """Fan-in and fan-out of a weight shape, as ``torch.nn.init`` computes them.

    ``(out, in, *kernel)``: fan_in = in * prod(kernel), fan_out = out * prod(kernel).

    Raises:
        ValueError: fewer than 2 dimensions (the message names ``path``).
    """
    if len(shape) < 2:
        where = f' {path!r}' if path else ''
        raise ValueError(f'fan_in and fan_out need a tensor with at least 2 dimensions, but '
                         f'parameter{where} has shape {tuple(shape)}. Fan-scaled '
                         'initializers (Kaiming, Xavier, Caffe2Xavier) cannot set it; use '
                         'Constant, Normal, TruncNormal or Uniform for it.')
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def leaf_name(path: str) -> str:
    """``'backbone.conv.weight'`` -> ``'weight'``."""
    return path.rpartition('.')[2]


def join_path(prefix: str, name: str) -> str:
    """Join two dotted paths, either of which may be empty."""
    return f'{prefix}.{name}' if prefix and name else prefix or name
