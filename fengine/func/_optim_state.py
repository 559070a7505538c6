"""Ready a ``torch.optim`` optimizer for a compiled step: no recompiles after warm-up.

Dynamo guards on what the optimizer step reads from Python. These change between steps
and would each recompile the training step:

- A float learning rate is a constant in the graph, guarded by value: every change by
  a scheduler is a new graph, and the ninth hits ``recompile_limit`` (a hard error
  under ``fullgraph=True``). A 0-d tensor is a graph input instead; torch's
  ``LRScheduler`` writes tensor learning rates in place with ``fill_``
  (``_update_param_group_val`` in ``torch/optim/lr_scheduler.py``), and fengine's
  schedulers do too, for every key they schedule. Adam's ``betas[0]``, which
  momentum schedules change, likewise. SGD's ``momentum`` too: torch's SGD branches
  on ``momentum != 0`` in Python (a tensor there is a graph break) and passes it as
  ``alpha=`` (a changing float there is a recompile per value), so a group holding a
  tensor momentum is updated by :func:`sgd_tensor_step`, torch's single-tensor SGD
  with the branch decided by the group's structure instead of its value. SGD's
  ``weight_decay`` is held the same way when a scheduler changes it
  (``initial_weight_decay`` in the group). Other scheduled keys stay Python numbers
  (torch.optim branches on them), and each new value compiles a new graph.
- The optimizer state (momentum buffers, Adam's moments and step counters) appears in
  the first step; the second call sees a different state dict and compiles again.
  Creating it beforehand, exactly as the first step would, leaves one compile.

All of it is done outside the graph, on the caller's side of the compiled function.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Callable

import torch
from torch.optim import Optimizer

__all__ = ['hold_hyperparams_', 'release_hyperparams_', 'init_state_', 'optimizer_update',
           'sgd_tensor_step']

# (group index, key: 'lr', 'beta1', 'momentum', 'weight_decay') -> (the tensor in the
# group, the float last written)
Held = dict[tuple[int, str], tuple[torch.Tensor, float]]


def _device(group: dict) -> torch.device | None:
    params = group.get('params') or []
    return params[0].device if params else None


def _capturable_ok(device: torch.device) -> bool:
    from torch.optim.optimizer import _get_capturable_supported_devices

    return device.type in _get_capturable_supported_devices()


def _is_float(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, torch.Tensor))


def _tensor_for(held: Held, key: tuple[int, str], value: float,
                device: torch.device) -> torch.Tensor:
    tensor, _ = held.get(key, (None, None))
    if tensor is None or tensor.device != device:
        tensor = torch.tensor(float(value), dtype=torch.float32, device=device)
    else:
        tensor.fill_(float(value))
    held[key] = tensor, float(value)
    return tensor


def _plain_sgd(optimizer: Optimizer) -> bool:
    """Whether ``optimizer`` steps with torch's own ``SGD.step`` (not a subclass's)."""
    return type(optimizer).step is torch.optim.SGD.step


def _sgd_keys(optimizer: Optimizer, group: dict) -> list[str]:
    """The SGD keys of ``group`` to hold as tensors (see the module docstring)."""
    if not _plain_sgd(optimizer) or group.get('fused') or group.get('differentiable'):
        return []
    keys = []
    momentum = group.get('momentum')
    if _is_float(momentum) and momentum != 0:
        keys.append('momentum')
    decay = group.get('weight_decay')
    if _is_float(decay) and decay != 0 and 'initial_weight_decay' in group:
        keys.append('weight_decay')
    return keys


def hold_hyperparams_(optimizer: Optimizer, held: Held) -> None:
    """Make every float ``lr`` (and Adam's ``betas[0]``, SGD's ``momentum``) a 0-d tensor.

    Called before every compiled step (a few dict operations): a scheduler or user that
    assigns a float (``group['lr'] = 0.1``, OneCycleLR's ``group['betas'] = (m, b2)``)
    instead of filling the tensor gets that value written into the group's tensor, so
    the graph never sees a float.

    The tensors are float32: a float64 0-d tensor is taken by dynamo for a Python float
    and guarded with ``.item()`` (a device sync per call on CUDA, and one extra
    compile). The kernels round ``alpha=lr`` to the parameters' float32 anyway.

    Groups with ``foreach=True`` and ``capturable=False`` (Adam and kin), for which
    torch.optim refuses a tensor ``lr``, get ``capturable=True`` on devices that support
    it and ``foreach=False`` on the others (the CPU).
    """
    for index, group in enumerate(optimizer.param_groups):
        device = _device(group)
        lr = group.get('lr')
        betas = group.get('betas')
        # AdamW subclasses Adam only in recent torch: name both.
        tensor_betas = (isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
                        and not group.get('fused')
                        and isinstance(betas, (tuple, list)) and _is_float(betas[0]))
        sgd_keys = _sgd_keys(optimizer, group)
        if device is None or not (_is_float(lr) or tensor_betas or sgd_keys):
            continue
        if group.get('foreach') and group.get('capturable') is False:
            # torch.optim refuses tensor hyper-parameters with foreach=True and
            # capturable=False (Adam and kin). Where capturable exists, use it; elsewhere
            # (the CPU, whose foreach kernels are per-tensor loops anyway) turn foreach
            # off, as torch's own adam() does for a tensor lr when foreach is left to it.
            if _capturable_ok(device):
                group['capturable'] = True
            else:
                group['foreach'] = False
        if _is_float(lr):
            group['lr'] = _tensor_for(held, (index, 'lr'), lr, device)
        if tensor_betas:
            group['betas'] = (_tensor_for(held, (index, 'beta1'), betas[0], device),
                              *betas[1:])
        for key in sgd_keys:
            group[key] = _tensor_for(held, (index, key), group[key], device)


def release_hyperparams_(optimizer: Optimizer, held: Held) -> None:
    """Put back the floats :func:`hold_hyperparams_` replaced (for eager steps).

    Eager torch.optim reads a tensor ``lr`` back with ``.item()`` (a device sync per step
    on CUDA) and rounds it differently; a step that falls back to eager uses floats.
    """
    def value_of(key: tuple[int, str], current: object) -> object:
        tensor, value = held.get(key, (None, None))
        if tensor is None or current is not tensor:
            return current
        # The float we were given, unless a scheduler has filled in another since.
        now = tensor.item()
        return value if torch.tensor(value, dtype=tensor.dtype).item() == now else now

    for index, group in enumerate(optimizer.param_groups):
        for key in ('lr', 'momentum', 'weight_decay'):
            if key in group:
                group[key] = value_of((index, key), group[key])
        betas = group.get('betas')
        if isinstance(betas, (tuple, list)) and betas:
            group['betas'] = (value_of((index, 'beta1'), betas[0]), *betas[1:])
    held.clear()


def init_state_(optimizer: Optimizer) -> bool:
    """Create the optimizer's state for every parameter with a ``.grad``, as step 1 would.

    Most optimizers create their state in ``_init_group`` (zeros, a zero step counter):
    calling it is what dynamo itself does while tracing (``OptimizerVariable`` in
    ``torch/_dynamo/variables/optimizer.py``), only now before the first call. Groups on
    a device with capturable support get ``capturable=True`` first, as dynamo's
    ``_set_capturable`` does for fresh state, so their step counters live on the device
    and the eager fallback needs no host reads.

    SGD keeps ``momentum_buffer=None`` until its first step, which then sets the buffer
    to a copy of the gradient. With ``dampening == 0`` a zero buffer gives the very same
    numbers (``0 * momentum + 1 * grad``, up to the sign of a zero), so it is created
    here; with dampening, the first step differs (``grad`` instead of
    ``(1 - dampening) * grad``) and the state is left to the step.

    An optimizer without ``_init_group`` (a user's or a third-party one) creates its
    state inside ``step()``, in a way that cannot be known from outside: nothing is
    created here, and its state counts as complete once it exists (after a step, or
    loaded from a checkpoint). A stateless one therefore never counts as complete.

    Returns:
        Whether every parameter with a ``.grad`` now has all the state the optimizer's
        step reads, so that a step creates none. Where not, the first compiled call
        compiles once more (the same math), and a fp16 step that is skipped on inf
        gradients could not undo the state it created (see ``step.py``).
    """
    complete = True
    with torch.no_grad():
        for group in optimizer.param_groups:
            params = [p for p in group['params'] if p.grad is not None]
            if not params:
                continue
            if isinstance(optimizer, torch.optim.SGD):
                # A held (tensor) momentum is non-zero by construction: no host read.
                if isinstance(group['momentum'], torch.Tensor) or group['momentum'] != 0:
                    for p in params:
                        # `.get`: no empty state entries where nothing is created.
                        if optimizer.state.get(p, {}).get('momentum_buffer') is not None:
                            continue
                        if group['dampening'] == 0:
                            optimizer.state[p]['momentum_buffer'] = torch.zeros_like(
                                p, memory_format=torch.preserve_format)
                        else:
                            complete = False
                continue
            init_group = getattr(optimizer, '_init_group', None)
            if init_group is None:
                # `optimizer.state` is a defaultdict: `.get` creates no empty entries.
                complete = complete and all(optimizer.state.get(p) for p in params)
                continue
            fresh = all(p not in optimizer.state or not optimizer.state[p] for p in params)
            if ('capturable' in group and not group['capturable'] and not group.get('fused')
                    and fresh and all(_capturable_ok(p.device) for p in params)):
                group['capturable'] = True
            # _init_group(group, params, grads, state lists...): it fills the lists we
            # pass and creates missing state.
            lists = len(inspect.signature(init_group).parameters) - 1
            init_group(group, *([] for _ in range(lists)))
            if group.get('capturable'):
                for p in params:  # a resumed, non-capturable state keeps `step` on the CPU
                    step = optimizer.state[p].get('step')
                    if isinstance(step, torch.Tensor) and step.device != p.device:
                        optimizer.state[p]['step'] = step.to(p.device)
    return complete


def optimizer_update(optimizer: Optimizer) -> Callable[[Optimizer], None]:
    """The update a compiled step applies to ``optimizer``: torch's own ``step``, undecorated.

    ``Optimizer.step`` is wrapped by ``_use_grad_for_differentiable``, whose graph break
    would split the step, so the undecorated function is returned (the caller runs it
    under ``no_grad``). For torch's SGD, groups whose momentum is held as a tensor are
    updated by :func:`sgd_tensor_step` instead (decided while tracing, by type).
    """
    torch_step = inspect.unwrap(type(optimizer).step)
    if not _plain_sgd(optimizer):
        return torch_step

    def update(opt: Optimizer) -> None:
        if any(isinstance(group.get(key), torch.Tensor) for group in opt.param_groups
               for key in ('momentum', 'weight_decay')):
            sgd_tensor_step(opt)
        else:
            torch_step(opt)

    return update


def sgd_tensor_step(optimizer: torch.optim.SGD,
                    grads: dict[torch.Tensor, torch.Tensor] | None = None) -> None:
    """One ``torch.optim.SGD`` step whose ``momentum``/``weight_decay`` may be 0-d tensors.

    The operations of torch's ``_single_tensor_sgd``, in its order; only the two
    ``!= 0`` tests are decided without reading a tensor (a tensor value was non-zero
    when it was held, see :func:`hold_hyperparams_`), so the step traces into one graph
    and a new value is a new input, not a new graph. Sparse gradients and
    ``differentiable=True`` are not supported here (such groups are never held).

    Args:
        optimizer: The SGD optimizer.
        grads: The gradients by parameter (``_grad_update.py``); ``None``: each
            parameter's ``.grad``.
    """
    for group in optimizer.param_groups:
        lr, momentum = group['lr'], group['momentum']
        decay, dampening = group['weight_decay'], group['dampening']
        with_momentum = isinstance(momentum, torch.Tensor) or momentum != 0
        with_decay = isinstance(decay, torch.Tensor) or decay != 0
        for param in group['params']:
            grad = param.grad if grads is None else grads.get(param)
            if grad is None:
                continue
            if group['maximize']:
                grad = -grad
            if with_decay:
                grad = grad.add(param, alpha=decay)
            if with_momentum:
                state = optimizer.state[param]
                buf = state.get('momentum_buffer')
                if buf is None:
                    buf = grad.detach().clone()
                    state['momentum_buffer'] = buf
                else:
                    buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                grad = grad.add(buf, alpha=momentum) if group['nesterov'] else buf
            param.add_(grad, alpha=-lr)
