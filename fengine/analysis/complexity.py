"""FLOPs, activations and parameters of a model (MMEngine: ``mmengine.analysis``).

Counted with torch's own ``torch.utils.flop_counter.FlopCounterMode``, which sees every
aten operator a forward pass runs (no tracing, so Python control flow and any input
types work). Two conventions differ from MMEngine's fvcore-based counter:

- torch counts a multiply-add as 2 FLOPs, fvcore (and MMEngine) as 1. fengine reports
  MMEngine's convention: torch's count halved, so ``flops`` of a convolution or a
  linear layer are the same number MMEngine prints.
- Only the operators torch has formulas for are counted: matrix products
  (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and the CUDA attention
  kernels (``scaled_dot_product_attention`` on the CPU counts 0). fvcore also
  counts normalization, pooling, upsampling and some element-wise operators (a few
  FLOPs per element), so MMEngine's totals are a little higher for models with many
  of those: torchvision's ResNet-50 at 224x224 is 4.089G here, 4.145G in MMEngine
  (parameters, 25.557M, and activations, 11.115M, are the same).

Activations are counted as fvcore does: the number of elements each convolution and
matrix product outputs.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.modules.module import _addindent
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['FlopAnalyzer', 'ActivationAnalyzer', 'flop_count', 'activation_count',
           'parameter_count', 'parameter_count_table', 'get_model_complexity_info']

_aten = torch.ops.aten
# Operators whose output fvcore counts as activations.
_ACTIVATION_OPS = (_aten.convolution, _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm)


def _output_numel(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return math.prod(out_shape)


class _Analyzer:
    """Runs ``model(*inputs)`` once under ``FlopCounterMode`` and keeps the counts per
    module (``''`` is the whole model) and per operator."""

    _halve = False
    _custom: dict = {}

    def __init__(self, model: nn.Module, inputs: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f'{type(self).__name__} analyzes an nn.Module, but got '
                            f'{type(model).__name__}')
        self._model = model
        self._inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        self._counts: dict[str, dict[str, int]] | None = None

    def _run(self) -> dict[str, dict[str, int]]:
        if self._counts is None:
            counter = FlopCounterMode(display=False, custom_mapping=self._custom)
            ran: set[int] = set()
            # FlopCounterMode lists only modules that counted something; a module that
            # ran and counted nothing reads 0, one that never ran N/A.
            hook = nn.modules.module.register_module_forward_hook(
                lambda module, args, output: ran.add(id(module)))
            try:
                with torch.no_grad(), counter:
                    self._model(*self._inputs)
            finally:
                hook.remove()
            root = type(self._model).__name__
            counts: dict[str, dict[str, int]] = {}
            for tracked, by_op in counter.get_flop_counts().items():
                if tracked == 'Global':
                    continue
                # FlopCounterMode names modules '<RootClass>.<path>'.
                name = '' if tracked == root else tracked[len(root) + 1:]
                counts[name] = {str(op).split('.')[-1]: self._convert(op, n)
                                for op, n in by_op.items() if self._keeps(op)}
            for name, module in self._model.named_modules():
                if id(module) in ran:
                    counts.setdefault(name, {})
            counts.setdefault('', {})
            self._counts = counts
        return self._counts

    def _keeps(self, op: Any) -> bool:
        return True

    def _convert(self, op: Any, count: int) -> int:
        return count // 2 if self._halve else count

    def total(self, module_name: str = '') -> int:
        """The count of the module called ``module_name`` (``''``: the whole model); 0
        for a module that counted nothing.

        Raises:
            KeyError: ``module_name`` is not a module of the model (close names listed).
        """
        modules = dict(self._model.named_modules())
        if module_name not in modules:
            from .._errors import suggest

            raise KeyError(f'{module_name!r} is not a module of {type(self._model).__name__}.'
                           f'{suggest(module_name, modules)}')
        return sum(self._run().get(module_name, {}).values())

    def by_operator(self, module_name: str = '') -> dict[str, int]:
        """The counts of the module ``module_name`` by operator name (``'convolution'``...)."""
        self.total(module_name)
        return dict(self._run().get(module_name, {}))

    def by_module(self) -> dict[str, int]:
        """Every module that ran: its total, by module name."""
        return {name: sum(ops.values()) for name, ops in self._run().items()}

    def by_module_and_operator(self) -> dict[str, dict[str, int]]:
        """Every module's counts by operator."""
        return {name: dict(ops) for name, ops in self._run().items()}


class FlopAnalyzer(_Analyzer):
    """FLOPs of one forward pass, a multiply-add counted once (MMEngine: ``FlopAnalyzer``).

    Args:
        model: The model.
        inputs: Its inputs: a tuple is passed as ``model(*inputs)``, anything else as
            ``model(inputs)``.

    Example:
        >>> FlopAnalyzer(nn.Linear(8, 4), torch.randn(2, 8)).total()
        64
    """

    _halve = True


class ActivationAnalyzer(_Analyzer):
    """Elements output by the convolutions and matrix products of one forward pass
    (MMEngine: ``ActivationAnalyzer``).

    Example:
        >>> ActivationAnalyzer(nn.Linear(8, 4), torch.randn(2, 8)).total()
        8
    """

    _custom = {op: _output_numel for op in _ACTIVATION_OPS}

    def _keeps(self, op: Any) -> bool:
        return op in _ACTIVATION_OPS


def flop_count(model: nn.Module, inputs: Any) -> dict[str, int]:
    """FLOPs of one forward pass by operator (MMEngine: ``flop_count``)."""
    return FlopAnalyzer(model, inputs).by_operator()


def activation_count(model: nn.Module, inputs: Any) -> dict[str, int]:
    """Activations of one forward pass by operator (MMEngine: ``activation_count``)."""
    return ActivationAnalyzer(model, inputs).by_operator()


def parameter_count(model: nn.Module) -> defaultdict[str, int]:
    """Parameter elements per parameter and per module (MMEngine: ``parameter_count``).

    Returns:
        A ``defaultdict(int)``: each parameter's name and each module's name (prefix)
        to its number of elements; ``''`` is the whole model. Shared parameters count
        once, as ``named_parameters`` yields them once.

    Example:
        >>> counts = parameter_count(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1)))
        >>> counts[''], counts['0'], counts['1.weight']
        (11, 8, 2)
    """
    counts: defaultdict[str, int] = defaultdict(int)
    for name, param in model.named_parameters():
        parts = name.split('.')
        for depth in range(len(parts) + 1):
            counts['.'.join(parts[:depth])] += param.numel()
    return counts


def _format_size(x: int, sig_figs: int = 3) -> str:
    """``x`` with a K/M/G/T/P suffix, as MMEngine prints it (``25.557M``)."""
    for bound, divisor, suffix in ((1e14, 1e15, 'P'), (1e11, 1e12, 'T'), (1e8, 1e9, 'G'),
                                   (1e5, 1e6, 'M'), (1e2, 1e3, 'K')):
        if abs(x) > bound:
            return f'{x / divisor:.{sig_figs}f}'.rstrip('0').rstrip('.') + suffix
    return str(x)


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    rows = [header] + list(rows)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rule = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'
    lines = [' '.join(['|'] + [f'{cell:<{w}} |' for cell, w in zip(row, widths)])
             for row in rows]
    return '\n'.join([rule, lines[0], rule, *lines[1:], rule])


def parameter_count_table(model: nn.Module, max_depth: int = 3) -> str:
    """An ASCII table of the parameter count of each module down to ``max_depth``
    (MMEngine: ``parameter_count_table``).

    Example:
        >>> print(parameter_count_table(nn.Sequential(nn.Linear(3, 2))))
        +------------+--------------------+
        | name       | #elements or shape |
        +------------+--------------------+
        | model      | 8                  |
        |  0         |  8                 |
        |   0.weight |   (2, 3)           |
        |   0.bias   |   (2,)             |
        +------------+--------------------+
    """
    counts = parameter_count(model)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    rows = [('model', _format_size(counts[''], 1))]
    for name, count in counts.items():
        depth = name.count('.')
        if name and depth < max_depth:
            indent = ' ' * (depth + 1)
            value = str(shapes[name]) if name in shapes else _format_size(count, 1)
            rows.append((indent + name, indent + value))
    return _table(('name', '#elements or shape'), rows)


def _make_inputs(model: nn.Module, input_shape: Any, inputs: Any) -> tuple:
    if (input_shape is None) == (inputs is None):
        raise ValueError('get_model_complexity_info needs exactly one of input_shape and '
                         f'inputs, but got {"both" if inputs is not None else "neither"}')
    if inputs is not None:
        return inputs if isinstance(inputs, tuple) else (inputs,)

    def is_shape(value: Any) -> bool:
        return isinstance(value, tuple) and all(
            isinstance(d, int) and not isinstance(d, bool) for d in value)

    if is_shape(input_shape):
        shapes = [input_shape]
    elif isinstance(input_shape, tuple) and input_shape and all(map(is_shape, input_shape)):
        shapes = list(input_shape)
    else:
        raise ValueError('input_shape must be a tuple of ints (one input, without the batch '
                         'dimension, e.g. (3, 224, 224)) or a tuple of such tuples (one per '
                         f'input), but got {input_shape!r}')
    device = next(model.parameters(), torch.empty(0)).device
    return tuple(torch.randn(1, *shape, device=device) for shape in shapes)


def get_model_complexity_info(model: nn.Module, input_shape: tuple | None = None,
                              inputs: Any = None, show_table: bool = True,
                              show_arch: bool = True) -> dict[str, Any]:
    """FLOPs, activations and parameters of ``model``, with a table and an annotated
    architecture (MMEngine: ``mmengine.analysis.get_model_complexity_info``).

    See the module docstring for how the counts relate to MMEngine's.

    Args:
        model: The model; ``model(*inputs)`` is run once under ``torch.no_grad()``.
        input_shape: One input's shape without the batch dimension, ``(3, 224, 224)``,
            or a tuple of them for several inputs; random inputs of batch size 1 are
            made on the model's device.
        inputs: The inputs themselves instead (a tuple is unpacked).
        show_table: Fill ``out_table``.
        show_arch: Fill ``out_arch``.

    Returns:
        A dict with ``flops``, ``flops_str``, ``activations``, ``activations_str``,
        ``params``, ``params_str``, ``out_table`` and ``out_arch`` (``''`` when not
        shown; otherwise starting with a newline, as MMEngine's).

    Raises:
        ValueError: Both or neither of ``input_shape`` and ``inputs``, or a malformed
            ``input_shape``.

    Example:
        >>> info = get_model_complexity_info(nn.Conv2d(3, 8, 3), input_shape=(3, 10, 10))
        >>> info['flops'], info['flops_str'], info['params'], info['activations']
        (13824, '13.824K', 224, 512)
    """
    inputs = _make_inputs(model, input_shape, inputs)
    flops = FlopAnalyzer(model, inputs)
    activations = ActivationAnalyzer(model, inputs)
    params = parameter_count(model)
    result = {
        'flops': flops.total(), 'flops_str': _format_size(flops.total()),
        'activations': activations.total(),
        'activations_str': _format_size(activations.total()),
        'params': params[''], 'params_str': _format_size(params['']),
        'out_table': '', 'out_arch': '',
    }
    flop_by_module, act_by_module = flops.by_module(), activations.by_module()
    if show_table:
        result['out_table'] = '\n' + _complexity_table(model, params, flop_by_module,
                                                       act_by_module)
    if show_arch:
        result['out_arch'] = '\n' + _complexity_arch(model, '', params, flop_by_module,
                                                     act_by_module)
    return result


def _complexity_table(model: nn.Module, params: dict[str, int], flops: dict[str, int],
                      acts: dict[str, int], max_depth: int = 3) -> str:
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}

    def cell(counts: dict[str, int], name: str) -> str:
        return _format_size(counts[name]) if name in counts else ''

    rows = [('model', _format_size(params['']), cell(flops, ''), cell(acts, ''))]
    for name, module in model.named_modules():
        depth = name.count('.')
        if not name or depth >= max_depth or not (params.get(name) or flops.get(name)):
            continue
        indent = ' ' * (depth + 1)
        rows.append((indent + name, indent + (_format_size(params[name]) if name in params
                                              else ''),
                     indent + cell(flops, name), indent + cell(acts, name)))
        if depth + 1 < max_depth:
            for pname, _ in module.named_parameters(prefix=name, recurse=False):
                rows.append((indent + ' ' + pname, indent + ' ' + str(shapes[pname]), '', ''))
    return _table(('module', '#parameters or shape', '#flops', '#activations'), rows)


def _complexity_arch(module: nn.Module, name: str, params: dict[str, int],
                     flops: dict[str, int], acts: dict[str, int]) -> str:
    """``repr(module)`` with a ``#params, #flops, #acts`` line in each module that has
    parameters, counted FLOPs or did not run (``#flops: N/A``)."""
    lines = module.extra_repr().split('\n') if module.extra_repr() else []
    n_params = params.get(name, 0)
    if n_params or flops.get(name) or name not in flops:
        def shown(counts: dict[str, int]) -> str:
            return _format_size(counts[name], 2) if name in counts else 'N/A'

        lines.append(f'#params: {_format_size(n_params, 2)}, #flops: {shown(flops)}, '
                     f'#acts: {shown(acts)}')
    children = [f'({child}): ' + _addindent(
        _complexity_arch(sub, f'{name}.{child}' if name else child, params, flops, acts), 2)
        for child, sub in module.named_children()]
    if not children and len(lines) <= 1:
        return f'{type(module).__name__}({"".join(lines)})'
    body = '\n  '.join(lines + children)
    return f'{type(module).__name__}(\n  {body}\n)'
