"""MMEngine's initializers, as thin shells over the pure recipes of :mod:`fengine.func.init`.

Each ``*Init`` class validates its arguments, says which recipe sets ``weight`` and
formats the info line of the init report; the numbers come from
:class:`~fengine.func.init.TensorInit`. Calling one on a module, or calling a
``*_init`` helper, builds a one-step plan and runs it in place.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import checkpoint_rows
from ..checkpoint_rows import RowSource
from ..func import init as F
from ..func.apply import apply_plan_, current_session
from ..func.plan import config_plan, initializer_plan
from ..logging import print_log
from ..registry import WEIGHT_INITIALIZERS

__all__ = [
    'BaseInit', 'ConstantInit', 'XavierInit', 'NormalInit', 'TruncNormalInit', 'UniformInit',
    'KaimingInit', 'Caffe2XavierInit', 'PretrainedInit', 'initialize', 'constant_init',
    'xavier_init', 'normal_init', 'trunc_normal_init', 'uniform_init', 'kaiming_init',
    'caffe2_xavier_init', 'bias_init_with_prob'
]


def bias_init_with_prob(prior_prob: float) -> float:
    """The bias that makes ``sigmoid(bias) == prior_prob`` (MMEngine: same name)."""
    if isinstance(prior_prob, bool) or not isinstance(prior_prob, numbers.Real) \
            or not 0 < prior_prob < 1:
        raise ValueError(f'prior_prob must be a probability in (0, 1), but got {prior_prob!r}')
    return float(-math.log((1 - prior_prob) / prior_prob))


def _fresh_seed() -> int:
    # Standalone calls follow torch.manual_seed, as MMEngine's do, and two calls
    # give different values; one draw from the CPU generator, no device sync.
    return int(torch.empty((), dtype=torch.int64).random_())


def _run(plan) -> None:
    """Run a one-step plan in place: nested in an initialization, or standalone."""
    apply_plan_(plan, seed=None if current_session() else _fresh_seed())


def _prefix_of(module: nn.Module) -> str:
    session = current_session()
    return session.path_of(module) if session else ''


class BaseInit:
    """The arguments every weight initializer shares (MMEngine: ``BaseInit``).

    Args:
        bias: The value ``bias`` parameters are set to.
        bias_prob: If given, ``bias`` is ``bias_init_with_prob(bias_prob)``.
        layer: Module class name(s) to initialize. fengine matches the class and
            every class in its MRO (MMEngine: the class and its direct bases).
    """

    def __init__(self, *, bias: float = 0, bias_prob: float | None = None,
                 layer: str | list[str] | None = None) -> None:
        self.wholemodule = False
        if isinstance(bias, bool) or not isinstance(bias, numbers.Real):
            raise TypeError(f'bias must be a number, but got {type(bias).__name__}: {bias!r}')
        if bias_prob is not None and not isinstance(bias_prob, float):
            raise TypeError(f'bias_prob must be a float, but got {type(bias_prob).__name__}: '
                            f'{bias_prob!r}')
        if layer is None:
            layer = []
        elif isinstance(layer, str):
            layer = [layer]
        elif not (isinstance(layer, list) and all(isinstance(x, str) for x in layer)):
            raise TypeError(f'layer must be a str or a list of str (module class names), but '
                            f'got {type(layer).__name__}: {layer!r}')
        self.bias = bias_init_with_prob(bias_prob) if bias_prob is not None else bias
        self.layer = layer

    def weight_init(self) -> F.TensorInit:
        """The recipe for ``weight`` parameters."""
        raise NotImplementedError(f'{type(self).__name__} must define weight_init()')

    def layer_init(self) -> F.LayerInit:
        """This initializer as data (see :class:`fengine.func.LayerInit`)."""
        return F.LayerInit(self.weight_init(), F.constant(self.bias), self._get_init_info(),
                           tuple(self.layer))

    def _get_init_info(self) -> str:
        return f'{type(self).__name__}, bias={self.bias}'

    def __call__(self, module: nn.Module) -> None:
        """Initialize ``module``'s matching submodules in place (all when ``wholemodule``)."""
        _run(initializer_plan(module, self, prefix=_prefix_of(module),
                              whole_module=self.wholemodule))


@WEIGHT_INITIALIZERS.register_module(name='Constant')
class ConstantInit(BaseInit):
    """Set weights to ``val`` and biases to ``bias`` (MMEngine: ``ConstantInit``)."""

    def __init__(self, val: float, *, bias: float = 0, bias_prob: float | None = None,
                 layer: str | list[str] | None = None) -> None:
        super().__init__(bias=bias, bias_prob=bias_prob, layer=layer)
        self.val = val
        self._weight = F.constant(val)

    def weight_init(self) -> F.TensorInit:
        return self._weight

    def _get_init_info(self) -> str:
        return f'{type(self).__name__}: val={self.val}, bias={self.bias}'


@WEIGHT_INITIALIZERS.register_module(name='Xavier')
class XavierInit(BaseInit):
    """Xavier/Glorot weights (MMEngine: ``XavierInit``).

    Args:
        gain: Scaling factor.
        distribution: ``'normal'`` or ``'uniform'``.
    """

    def __init__(self, gain: float = 1, distribution: str = 'normal', *, bias: float = 0,
                 bias_prob: float | None = None, layer: str | list[str] | None = None) -> None:
        super().__init__(bias=bias, bias_prob=bias_prob, layer=layer)
        self.gain, self.distribution = gain, distribution
        self._weight = F.xavier(gain, distribution)

    def weight_init(self) -> F.TensorInit:
        return self._weight

    def _get_init_info(self) -> str:
        return (f'{type(self).__name__}: gain={self.gain}, '
                f'distribution={self.distribution}, bias={self.bias}')


@WEIGHT_INITIALIZERS.register_module(name='Normal')
class NormalInit(BaseInit):
    """Weights from ``N(mean, std^2)`` (MMEngine: ``NormalInit``)."""

    def __init__(self, mean: float = 0, std: float = 1, *, bias: float = 0,
                 bias_prob: float | None = None, layer: str | list[str] | None = None) -> None:
        super().__init__(bias=bias, bias_prob=bias_prob, layer=layer)
        self.mean, self.std = mean, std
        self._weight = F.normal(mean, std)

    def weight_init(self) -> F.TensorInit:
        return self._weight

    def _get_init_info(self) -> str:
        return f'{type(self).__name__}: mean={self.mean}, std={self.std}, bias={self.bias}'


@WEIGHT_INITIALIZERS.register_module(name='TruncNormal')
class TruncNormalInit(BaseInit):
    """Weights from ``N(mean, std^2)`` truncated to ``[a, b]`` (MMEngine: ``TruncNormalInit``)."""

    def __init__(self, mean: float = 0, std: float = 1, a: float = -2, b: float = 2, *,
                 bias: float = 0, bias_prob: float | None = None,
                 layer: str | list[str] | None = None) -> None:
        super().__init__(bias=bias, bias_prob=bias_prob, layer=layer)
        self.mean, self.std, self.a, self.b = mean, std, a, b
        self._weight = F.trunc_normal(mean, std, a, b)

    def weight_init(self) -> F.TensorInit:
        return self._weight

    def _get_init_info(self) -> str:
        return (f'{type(self).__name__}: a={self.a}, b={self.b}, mean={self.mean}, '
                f'std={self.std}, bias={self.bias}')


@WEIGHT_INITIALIZERS.register_module(name='Uniform')
class UniformInit(BaseInit):
    """Weights from ``U(a, b)`` (MMEngine: ``UniformInit``)."""

    def __init__(self, a: float = 0, b: float = 1, *, bias: float = 0,
                 bias_prob: float | None = None, layer: str | list[str] | None = None) -> None:
        super().__init__(bias=bias, bias_prob=bias_prob, layer=layer)
        self.a, self.b = a, b
        self._weight = F.uniform(a, b)

    def weight_init(self) -> F.TensorInit:
        return self._weight

    def _get_init_info(self) -> str:
        return f'{type(self).__name__}: a={self.a}, b={self.b}, bias={self.bias}'


@WEIGHT_INITIALIZERS.register_module(name='Kaiming')
class KaimingInit(BaseInit):
    """Kaiming/He weights (MMEngine: ``KaimingInit``).

    Args:
        a: Negative slope of the rectifier (``leaky_relu`` only).
        mode: ``'fan_in'`` or ``'fan_out'``.
        nonlinearity: A ``torch.nn.init.calculate_gain`` name, e.g. ``'relu'``.
        distribution: ``'normal'`` or ``'uniform'``.
    """

    def __init__(self, a: float = 0, mode: str = 'fan_out', nonlinearity: str = 'relu',
                 distribution: str = 'normal', *, bias: float = 0,
                 bias_prob: float | None = None, layer: str | list[str] | None = None) -> None:
        super().__init__(bias=bias, bias_prob=bias_prob, layer=layer)
        self.a, self.mode, self.nonlinearity, self.distribution = (a, mode, nonlinearity,
                                                                    distribution)
        self._weight = F.kaiming(a, mode, nonlinearity, distribution)

    def weight_init(self) -> F.TensorInit:
        return self._weight

    def _get_init_info(self) -> str:
        # 'distribution =' with its space is MMEngine's exact text, kept for log parity.
        return (f'{type(self).__name__}: a={self.a}, mode={self.mode}, '
                f'nonlinearity={self.nonlinearity}, distribution ={self.distribution}, '
                f'bias={self.bias}')


@WEIGHT_INITIALIZERS.register_module(name='Caffe2Xavier')
class Caffe2XavierInit(KaimingInit):
    """Caffe2's ``XavierFill``: Kaiming uniform, fan_in, leaky_relu with a=1
    (MMEngine: ``Caffe2XavierInit``)."""

    def __init__(self, *, bias: float = 0, bias_prob: float | None = None,
                 layer: str | list[str] | None = None) -> None:
        super().__init__(a=1, mode='fan_in', nonlinearity='leaky_relu',
                         distribution='uniform', bias=bias, bias_prob=bias_prob, layer=layer)


@WEIGHT_INITIALIZERS.register_module(name='Pretrained')
class PretrainedInit:
    """Load weights from a checkpoint (MMEngine: ``PretrainedInit``).

    Args:
        checkpoint: A local path or an http(s) URL (downloaded once into
            ``torch.hub``'s cache); ``.safetensors`` files are read with safetensors.
        prefix: Load only the entries under this prefix, e.g. ``'backbone.'``, with
            the prefix stripped.
        map_location: Where ``torch.load`` puts the tensors.
        weights_only: Refuse to unpickle anything but tensors (the default). Set it
            to False only for a file you trust.
    """

    def __init__(self, checkpoint: str, prefix: str | None = None,
                 map_location: Any = 'cpu', weights_only: bool = True) -> None:
        if not isinstance(checkpoint, str):
            raise TypeError(f'checkpoint must be a path or URL string, but got '
                            f'{type(checkpoint).__name__}: {checkpoint!r}')
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f'prefix must be a str such as "backbone.", but got {prefix!r}')
        if not isinstance(weights_only, bool):
            raise TypeError(f'weights_only must be a bool, but got {weights_only!r}')
        self.checkpoint, self.prefix = checkpoint, prefix
        self.map_location, self.weights_only = map_location, weights_only
        self.wholemodule = False

    def _log_load(self) -> None:
        if self.prefix is None:
            print_log(f'load model from: {self.checkpoint}', logger='current')
        else:
            print_log(f'load {self.prefix} in model from: {self.checkpoint}', logger='current')

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        """Read the checkpoint; the state dict for the module this initializer targets."""
        self._log_load()
        raw = ckpt.load_checkpoint_file(self.checkpoint, self.map_location, self.weights_only)
        state = ckpt.state_dict_from(raw, self.checkpoint)
        if self.prefix is not None:
            state = ckpt.select_prefix(state, self.prefix, self.checkpoint)
        return state

    def open_rows(self) -> dict[str, RowSource]:
        """Open the checkpoint for reading rows; the state dict for the targeted module,
        as :meth:`load_state_dict` gives it, with tensors not read yet."""
        self._log_load()
        state = checkpoint_rows.open_rows(self.checkpoint, self.map_location,
                                          self.weights_only)
        if self.prefix is not None:
            state = ckpt.select_prefix(state, self.prefix, self.checkpoint)
        return state

    def checkpoint_loader(self) -> Callable[[], dict[str, torch.Tensor]]:
        """What a plan's Load step calls."""
        return self.load_state_dict

    def rows_opener(self) -> Callable[[], dict[str, RowSource]]:
        """What a plan's Load step calls where only some rows are wanted (a shard)."""
        return self.open_rows

    def _get_init_info(self) -> str:
        return f'{type(self).__name__}: load from {self.checkpoint}'

    def __call__(self, module: nn.Module) -> None:
        _run(initializer_plan(module, self, prefix=_prefix_of(module)))


def initialize(module: nn.Module, init_cfg: dict | list[dict]) -> None:
    """Initialize ``module`` in place from ``init_cfg`` (MMEngine: ``initialize``).

    Entries apply in order, each with its ``layer`` and ``override``. Inside an
    ``init_weights`` the values follow the initialization's seed and each
    parameter's path; standalone, they follow ``torch.manual_seed``.

    Example:
        >>> from torch import nn
        >>> from fengine.model import initialize
        >>> net = nn.Sequential(nn.Conv1d(3, 1, 3), nn.Linear(1, 2))
        >>> initialize(net, [dict(type='Constant', layer='Conv1d', val=1),
        ...                  dict(type='Constant', layer='Linear', val=2)])
        >>> net[1].weight.detach()[0, 0].item()
        2.0
    """
    _run(config_plan(module, init_cfg, prefix=_prefix_of(module)))


def _init_own(module: nn.Module, initializer: BaseInit) -> None:
    _run(initializer_plan(module, initializer, prefix=_prefix_of(module), own_only=True))


def constant_init(module: nn.Module, val: float, bias: float = 0) -> None:
    """Set ``module.weight`` to ``val`` and ``module.bias`` to ``bias``."""
    _init_own(module, ConstantInit(val, bias=bias))


def xavier_init(module: nn.Module, gain: float = 1, bias: float = 0,
                distribution: str = 'normal') -> None:
    """Xavier-initialize ``module.weight``; set ``module.bias`` to ``bias``."""
    _init_own(module, XavierInit(gain, distribution, bias=bias))


def normal_init(module: nn.Module, mean: float = 0, std: float = 1, bias: float = 0) -> None:
    """Draw ``module.weight`` from ``N(mean, std^2)``; set ``module.bias`` to ``bias``."""
    _init_own(module, NormalInit(mean, std, bias=bias))


def trunc_normal_init(module: nn.Module, mean: float = 0, std: float = 1, a: float = -2,
                      b: float = 2, bias: float = 0) -> None:
    """Draw ``module.weight`` from a truncated normal; set ``module.bias`` to ``bias``."""
    _init_own(module, TruncNormalInit(mean, std, a, b, bias=bias))


def uniform_init(module: nn.Module, a: float = 0, b: float = 1, bias: float = 0) -> None:
    """Draw ``module.weight`` from ``U(a, b)``; set ``module.bias`` to ``bias``."""
    _init_own(module, UniformInit(a, b, bias=bias))


def kaiming_init(module: nn.Module, a: float = 0, mode: str = 'fan_out',
                 nonlinearity: str = 'relu', bias: float = 0,
                 distribution: str = 'normal') -> None:
    """Kaiming-initialize ``module.weight``; set ``module.bias`` to ``bias``."""
    _init_own(module, KaimingInit(a, mode, nonlinearity, distribution, bias=bias))


def caffe2_xavier_init(module: nn.Module, bias: float = 0) -> None:
    """Caffe2's XavierFill on ``module.weight``; set ``module.bias`` to ``bias``."""
    _init_own(module, Caffe2XavierInit(bias=bias))
