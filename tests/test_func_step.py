"""The compiled training step: one graph, eager numerics, few compiles, no host syncs."""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch.utils._python_dispatch import TorchDispatchMode

from fengine.func import make_train_step
from fengine.func._optim_state import init_state_
from fengine.model import BaseModel
from seed_models import NeuralNetwork
from fengine.optim import AmpOptimWrapper, OptimWrapper


class MLP(BaseModel):

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x, y, mode='tensor'):
        out = self.net(x)
        return dict(loss=nn.functional.cross_entropy(out, y)) if mode == 'loss' else out


class CNN(BaseModel):

    def __init__(self):
        super().__init__()
        # No conv bias in front of BatchNorm, as usual: its true gradient is zero, and
        # Adam would turn the last-bit rounding noise of that zero into full-size steps.
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(4 * 6 * 6, 10))

    def forward(self, x, y, mode='tensor'):
        out = self.net(x)
        return dict(loss=nn.functional.cross_entropy(out, y)) if mode == 'loss' else out


OPTIMIZERS = {
    'SGD with momentum': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    'Adam': lambda p: torch.optim.Adam(p, lr=1e-3),
    'AdamW': lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}


def batches(count, size=16, seed=1, shape=(1, 8, 8)):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=gen), torch.randint(0, 10, (size,),
                                                                       generator=gen))
            for _ in range(count)]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def twins(model_cls, make_optimizer, wrapper_cls=OptimWrapper, **wrapper_kwargs):
    torch.manual_seed(0)
    eager = model_cls()
    compiled = copy.deepcopy(eager)
    return (eager, wrapper_cls(optimizer=make_optimizer(eager.parameters()), **wrapper_kwargs),
            compiled,
            wrapper_cls(optimizer=make_optimizer(compiled.parameters()), **wrapper_kwargs))


def assert_same_training(eager, eager_wrapper, compiled, step, data, tol=1e-5):
    state = step.state
    for batch in data:
        expected = eager.train_step(batch, eager_wrapper)
        state, got = step(state, batch)
        assert got.keys() == expected.keys()
        for key in expected:
            assert relative(got[key], expected[key]) <= tol, key
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert relative(b, a) <= tol, name
    for (name, a), b in zip(eager.named_buffers(), compiled.buffers()):
        if a.numel():
            assert relative(b.double(), a.double()) <= tol, name


@pytest.mark.parametrize('model_cls', [MLP, CNN])
@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
def test_twenty_compiled_steps_match_eager_train_step(model_cls, optimizer):
    eager, eager_wrapper, compiled, wrapper = twins(model_cls, OPTIMIZERS[optimizer])
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    assert_same_training(eager, eager_wrapper, compiled, step, batches(20))


def test_the_seed_model_step_is_one_graph_with_no_breaks():
    model = NeuralNetwork()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    step = make_train_step(model, wrapper, compile=False)
    state = step.state
    for param in state.params.values():
        param.grad = torch.zeros_like(param)
    batch = batches(1, size=8, shape=(1, 28, 28))[0]
    explained = torch._dynamo.explain(step._step)(state, batch, torch.tensor(1.0), True)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    graph = explained.graphs[0].code
    # forward, backward and the optimizer update are all in that graph
    assert 'functional_call' in graph or 'linear' in graph
    assert 'grad' in graph and ('add_' in graph or 'sgd' in graph.lower())


@contextlib.contextmanager
def count_compiles():
    """A counting aot_eager backend; recompile reasons are logged, shown if a test fails."""
    counter = CompileCounterWithBackend('aot_eager')
    torch._logging.set_logs(recompiles=True)
    try:
        yield counter
    finally:
        torch._logging.set_logs()


def test_a_smaller_last_batch_recompiles_at_most_once_and_then_never():
    torch._dynamo.reset()
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    with count_compiles() as counter:
        step = make_train_step(model, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for size in [32, 32, 32, 7]:
            state, _ = step(state, batches(1, size=size)[0])
        # At least once: 0 would mean the step ran eagerly and counted nothing.
        compiles = counter.frame_count
        assert 1 <= compiles <= 2, f'{compiles} compiles'
        for epoch in range(24):  # 100 steps with last batches of many sizes
            for size in [32, 32, 32, 3 + epoch]:
                state, _ = step(state, batches(1, size=size, seed=epoch)[0])
        assert counter.frame_count == compiles, f'{counter.frame_count} compiles'


def _decaying(step: int) -> float:
    return 1.0 / (1.0 + 0.1 * step)


SCHEDULES = {
    'LambdaLR': lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, _decaying),
    # OneCycleLR also cycles SGD's momentum / Adam's betas[0], assigning new floats.
    'OneCycleLR': lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=20),
}


@pytest.mark.parametrize('schedule, optimizer, steps, compiles, tol', [
    ('LambdaLR', 'SGD with momentum', 30, (1, 1), 1e-6),
    ('LambdaLR', 'Adam', 30, (1, 1), 1e-5),
    # SGD's momentum and Adam's betas[0] are held as tensors (one compile).
    ('OneCycleLR', 'SGD with momentum', 15, (1, 1), 1e-5),
    ('OneCycleLR', 'Adam', 15, (1, 1), 1e-5),
])
def test_a_schedule_changing_lr_and_momentum_before_every_step_compiles_once_and_matches_eager(
        schedule, optimizer, steps, compiles, tol):
    torch._dynamo.reset()
    eager, eager_wrapper, compiled, wrapper = twins(MLP, OPTIMIZERS[optimizer])
    schedulers = [SCHEDULES[schedule](w.optimizer) for w in (eager_wrapper, wrapper)]
    with count_compiles() as counter, warnings.catch_warnings():
        # A compiled update bypasses optimizer.step; the scheduler must not notice.
        warnings.simplefilter('error')
        step = make_train_step(compiled, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for batch in batches(steps):
            eager.train_step(batch, eager_wrapper)
            state, _ = step(state, batch)
            for scheduler in schedulers:
                scheduler.step()
    low, high = compiles  # at least one: 0 would mean nothing was compiled
    assert low <= counter.frame_count <= high, \
        f'{counter.frame_count} compiles for {steps} scheduled steps'
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert relative(b, a) <= tol, name
    lrs = wrapper.get_lr()['lr']
    assert type(lrs[0]) is float
    assert lrs == pytest.approx(eager_wrapper.get_lr()['lr'], rel=1e-7)
    momentum = wrapper.get_momentum()['momentum']
    assert type(momentum[0]) is float
    assert momentum == pytest.approx(eager_wrapper.get_momentum()['momentum'], rel=1e-7)


def test_a_learning_rate_assigned_as_a_float_is_taken_without_recompiling():
    torch._dynamo.reset()
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with count_compiles() as counter:
        step = make_train_step(model, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for i, batch in enumerate(batches(12)):
            wrapper.param_groups[0]['lr'] = 0.1 / (i + 1)  # not fill_: a new float
            state, _ = step(state, batch)
    assert counter.frame_count == 1, f'{counter.frame_count} compiles'
    assert wrapper.get_lr()['lr'] == [pytest.approx(0.1 / 12)]


@pytest.mark.parametrize('optimizer', ['SGD with momentum', 'Adam'])
def test_five_steps_of_one_batch_shape_compile_exactly_once(optimizer):
    torch._dynamo.reset()
    model = CNN()
    wrapper = OptimWrapper(OPTIMIZERS[optimizer](model.parameters()))
    with count_compiles() as counter:
        step = make_train_step(model, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for batch in batches(5):
            state, _ = step(state, batch)
    assert counter.frame_count == 1, f'{counter.frame_count} compiles'


class Momentum(torch.optim.Optimizer):
    """A user's momentum SGD: no ``_init_group``, its state created inside ``step()``."""

    def __init__(self, params, lr=0.05, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                if 'buf' not in state:
                    state['buf'] = p.grad.clone()
                else:
                    state['buf'].mul_(group['momentum']).add_(p.grad)
                # `* lr`, not `alpha=-lr`: the compiled step makes lr a 0-d tensor.
                p.sub_(state['buf'] * group['lr'])


# Optimizers whose state only their first update creates (init_state_ cannot).
LAZY_OPTIMIZERS = {
    # A zero buffer would change its first step.
    'SGD with dampening': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.5),
    'a custom momentum optimizer': Momentum,
}


@pytest.mark.parametrize('optimizer', [
    *OPTIMIZERS,
    *LAZY_OPTIMIZERS,
    'SGD with nesterov and weight decay',
])
def test_creating_the_optimizer_state_before_the_first_step_changes_no_number(optimizer):
    make = {**OPTIMIZERS, **LAZY_OPTIMIZERS,
            'SGD with nesterov and weight decay': lambda p: torch.optim.SGD(
                p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)}[optimizer]
    lazy, _, early, _ = twins(MLP, make)
    optimizers = [make(lazy.parameters()), make(early.parameters())]
    for param in early.parameters():
        param.grad = torch.zeros_like(param)
    complete = init_state_(optimizers[1])
    if optimizer in LAZY_OPTIMIZERS:
        # Nothing half-made: the state is all left to the first step, which says so.
        assert complete is False
        assert not optimizers[1].state
    else:
        assert complete is True
        assert all(optimizers[1].state[p] for p in early.parameters())
    for x, y in batches(3):
        for model, opt in zip((lazy, early), optimizers):
            opt.zero_grad()
            model(x, y, mode='loss')['loss'].backward()
            opt.step()
    for (name, a), b in zip(lazy.named_parameters(), early.parameters()):
        assert torch.equal(a, b), name
    for p, q in zip(lazy.parameters(), early.parameters()):
        for key, value in optimizers[0].state[p].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(
                optimizers[1].state[q][key])), key
    # Once a step has made it, the state is complete (as after resuming from a checkpoint).
    assert init_state_(optimizers[1]) is True


class _ReadSpy(TorchDispatchMode):
    """Records every tensor whose value is read back to Python (what a host sync does)."""

    def __init__(self):
        super().__init__()
        self.read = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.read.append(args[0])
        return func(*args, **(kwargs or {}))


def test_a_step_returns_tensors_and_never_reads_a_value_back():
    model = CNN()
    wrapper = OptimWrapper(torch.optim.Adam(model.parameters()), clip_grad=dict(max_norm=1.0))
    step = make_train_step(model, wrapper, compile=False)
    state = step.state
    state, _ = step(state, batches(1)[0])  # the optimizer creates its state
    counters = [s['step'] for s in state.optimizer.state.values()]
    with _ReadSpy() as spy:
        for batch in batches(3):
            state, log_vars = step(state, batch)
    # Eager torch.optim reads its step counters, which it keeps on the CPU (no device
    # sync, even for CUDA models); nothing else may be read.
    assert all(any(t is c for c in counters) for t in spy.read), len(spy.read)
    assert set(log_vars) == {'loss', 'grad_norm'}
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in log_vars.values())
    compiled = make_train_step(model, wrapper, compile=dict(backend='aot_eager'))
    _, log_vars = compiled(compiled.state, batches(1)[0])
    assert all(isinstance(v, torch.Tensor) for v in log_vars.values())


def test_gradient_clipping_matches_eager_and_logs_the_norm():
    eager, eager_wrapper, compiled, wrapper = twins(
        MLP, OPTIMIZERS['SGD with momentum'], clip_grad=dict(max_norm=0.5))
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    assert_same_training(eager, eager_wrapper, compiled, step, batches(5))


def test_gradient_accumulation_matches_eager_including_a_short_last_window():
    eager, eager_wrapper, compiled, wrapper = twins(MLP, OPTIMIZERS['Adam'],
                                                    accumulative_counts=3)
    for model, owner in ((eager, eager_wrapper), (compiled, wrapper)):
        owner.initialize_count_status(model, 0, 8)  # windows of 3, 3, then 2
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    assert_same_training(eager, eager_wrapper, compiled, step, batches(8))


def test_bf16_autocast_inside_the_compiled_step_matches_eager():
    eager, eager_wrapper, compiled, wrapper = twins(
        MLP, OPTIMIZERS['SGD with momentum'], wrapper_cls=AmpOptimWrapper,
        dtype=torch.bfloat16)
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    # bf16 keeps 8 bits of mantissa: the two paths may round an op differently.
    assert_same_training(eager, eager_wrapper, compiled, step, batches(5), tol=2e-2)


class GraphBreaking(MLP):

    def forward(self, x, y, mode='tensor'):
        torch._dynamo.graph_break()
        return super().forward(x, y, mode)


def test_a_model_that_cannot_compile_falls_back_to_eager_with_a_warning(fengine_log):
    eager, eager_wrapper, compiled, wrapper = twins(GraphBreaking, OPTIMIZERS['Adam'])
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'))
    assert_same_training(eager, eager_wrapper, compiled, step, batches(3), tol=0)
    warnings = fengine_log.messages(logging.WARNING)
    assert len(warnings) == 1
    assert 'compiling the training step of GraphBreaking failed, so it runs eagerly' in \
        warnings[0] and 'strict=True' in warnings[0]


def test_strict_raises_when_compilation_fails():
    model = GraphBreaking()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    step = make_train_step(model, wrapper, compile=dict(backend='aot_eager'), strict=True)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(torch._dynamo.exc.Unsupported):
        step(step.state, batches(1)[0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_compile_steps_switches_the_model_steps():
    eager, eager_wrapper, compiled, wrapper = twins(MLP, OPTIMIZERS['AdamW'])
    compiled.compile_steps(dict(backend='aot_eager'), strict=True)
    for batch in batches(4):
        expected = eager.train_step(batch, eager_wrapper)
        got = compiled.train_step(batch, wrapper)
        assert relative(got['loss'], expected['loss']) <= 1e-5
    assert relative(compiled.val_step(batch), eager.val_step(batch)) <= 1e-5
    compiled.compile_steps(False)
    assert compiled._compiled_steps is None


def test_the_seed_predict_step_with_item_compiles_around_the_break():
    model = NeuralNetwork().compile_steps(dict(backend='aot_eager'))
    batch = batches(1, size=4, shape=(1, 28, 28))[0]
    preds, loss = model.val_step(batch)
    assert preds.shape == (4,) and isinstance(loss, float)
    assert model.test_step(batch)[1] == loss


def test_compile_options_are_checked():
    model = MLP()
    with pytest.raises(TypeError, match='compile must be a bool or a dict'):
        model.compile_steps('inductor')


@pytest.mark.cuda
def test_reduce_overhead_replays_the_step_as_a_cuda_graph():
    eager, eager_wrapper, compiled, wrapper = twins(MLP, OPTIMIZERS['SGD with momentum'])
    eager.cuda()
    compiled.cuda()
    step = make_train_step(compiled, wrapper, compile=dict(mode='reduce-overhead'),
                           strict=True)
    data = [(x.cuda(), y.cuda()) for x, y in batches(6)]
    assert_same_training(eager, eager_wrapper, compiled, step, data, tol=1e-4)


def test_many_models_in_one_process_each_get_their_own_compile_cache():
    # Dynamo allows 8 entries per code object; a shared step method would fail at 9.
    for _ in range(10):
        model = MLP()
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        step = make_train_step(model, wrapper, compile=dict(backend='eager'), strict=True)
        step(step.state, batches(1)[0])
        model.compile_steps(dict(backend='eager'), strict=True).val_step(batches(1)[0])


def _fp16_twins(optimizer, **kwargs):
    return twins(MLP, OPTIMIZERS[optimizer] if isinstance(optimizer, str) else optimizer,
                 wrapper_cls=AmpOptimWrapper, dtype=torch.float16, **kwargs)


@pytest.mark.parametrize('optimizer, clip_grad', [('SGD with momentum', None),
                                                  ('Adam', dict(max_norm=1.0))])
def test_fp16_loss_scaling_is_compiled_skips_an_inf_step_and_halves_the_scale(
        optimizer, clip_grad):
    torch._dynamo.reset()
    eager, eager_wrapper, compiled, wrapper = _fp16_twins(optimizer, clip_grad=clip_grad)
    data = batches(6)
    data[3] = (data[3][0] * 1e5, data[3][1])  # overflows float16: inf/nan gradients
    with count_compiles() as counter:
        step = make_train_step(compiled, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for i, batch in enumerate(data):
            before = [p.detach().clone() for p in compiled.parameters()]
            expected = eager.train_step(batch, eager_wrapper)
            state, got = step(state, batch)
            assert got.keys() == expected.keys()
            assert wrapper.loss_scaler.state_dict() == eager_wrapper.loss_scaler.state_dict()
            if i == 3:
                assert all(torch.equal(a, b) for a, b in zip(before, compiled.parameters()))
                assert wrapper.loss_scaler.get_scale() == 2.0 ** 15
    assert counter.frame_count == 1, f'{counter.frame_count} compiles'
    assert wrapper.loss_scaler.state_dict()['_growth_tracker'] == 2
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert relative(b, a) <= 1e-5, name
    for p, q in zip(eager.parameters(), compiled.parameters()):
        for key, value in eager_wrapper.optimizer.state[p].items():
            # Adam's moments follow float16 gradients, clipped by a norm that the two
            # paths sum in a different order.
            assert relative(wrapper.optimizer.state[q][key].double(), value.double()) <= 1e-4


def test_a_static_fp16_loss_scale_stays_put_through_an_inf_step():
    eager, eager_wrapper, compiled, wrapper = _fp16_twins('SGD with momentum', loss_scale=512.0)
    step = make_train_step(compiled, wrapper, compile=dict(backend='aot_eager'), strict=True)
    state = step.state
    data = batches(3)
    data[1] = (data[1][0] * 1e5, data[1][1])
    for i, batch in enumerate(data):
        before = [p.detach().clone() for p in compiled.parameters()]
        eager.train_step(batch, eager_wrapper)
        state, _ = step(state, batch)
        if i == 1:
            assert all(torch.equal(a, b) for a, b in zip(before, compiled.parameters()))
        assert wrapper.loss_scaler.get_scale() == eager_wrapper.loss_scaler.get_scale() == 512
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert relative(b, a) <= 1e-5, name


def test_an_fp16_step_decides_to_skip_without_reading_a_value_back():
    model = MLP()
    wrapper = AmpOptimWrapper(optimizer=OPTIMIZERS['SGD with momentum'](model.parameters()),
                              dtype=torch.float16)
    step = make_train_step(model, wrapper, compile=False)
    state = step.state
    data = batches(3)
    data[1] = (data[1][0] * 1e5, data[1][1])
    with _ReadSpy() as spy:
        for batch in data:
            state, _ = step(state, batch)
    assert spy.read == []
    assert wrapper.loss_scaler.get_scale() == 2.0 ** 15  # it did skip one


@pytest.mark.parametrize('compile', [False, True], ids=['eager', 'aot_eager'])
@pytest.mark.parametrize('optimizer', list(LAZY_OPTIMIZERS))
def test_fp16_with_state_that_only_a_first_update_creates_runs_through_the_wrapper_until_then(
        optimizer, compile, fengine_log):
    # A skipped compiled update restores only the state that existed before it: state
    # created inside it would survive the skip as NaN and poison the next update. So the
    # steps run through the wrapper (whose scaler skips optimizer.step()) until an update
    # has created the state, and are compiled from then on.
    torch._dynamo.reset()
    eager, eager_wrapper, compiled, wrapper = _fp16_twins(LAZY_OPTIMIZERS[optimizer])
    data = batches(6)
    for i in (0, 4):  # the very first update, and one once the step is compiled
        data[i] = (data[i][0] * 1e5, data[i][1])  # overflows float16: inf/nan gradients
    with count_compiles() as counter:
        step = make_train_step(compiled, wrapper, compile=compile and dict(backend=counter),
                               strict=False)
        state = step.state
        for i, batch in enumerate(data):
            before = [p.detach().clone() for p in compiled.parameters()]
            state_before = {id(p): {k: v.clone() for k, v in s.items()}
                            for p, s in wrapper.optimizer.state.items()}
            expected = eager.train_step(batch, eager_wrapper)
            state, got = step(state, batch)
            # Through the wrapper (i < 2) the numbers are the eager ones, bit for bit.
            tol = 0 if i < 2 else 1e-5
            assert got.keys() == expected.keys()
            assert wrapper.loss_scaler.state_dict() == eager_wrapper.loss_scaler.state_dict()
            if i in (0, 4):
                assert not torch.isfinite(got['loss']) and not torch.isfinite(expected['loss'])
                assert all(torch.equal(a, b) for a, b in zip(before, compiled.parameters()))
                assert {id(p) for p in wrapper.optimizer.state} == set(state_before)
                for p, s in wrapper.optimizer.state.items():
                    assert all(torch.equal(v, state_before[id(p)][k]) for k, v in s.items())
            else:
                assert relative(got['loss'], expected['loss']) <= tol
            assert all(torch.isfinite(p).all() for p in compiled.parameters()), i
            assert len(wrapper.optimizer.state) == len(eager_wrapper.optimizer.state), i
            for p, q in zip(eager.parameters(), compiled.parameters()):
                for key, value in eager_wrapper.optimizer.state[p].items():
                    got_value = wrapper.optimizer.state[q][key]
                    assert torch.isfinite(got_value).all(), (i, key)
                    assert relative(got_value, value) <= tol, (i, key)
            for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
                assert relative(b, a) <= tol, (i, name)
    assert len(wrapper.optimizer.state) == len(list(compiled.parameters()))
    assert wrapper.loss_scaler.get_scale() == 2.0 ** 14  # it skipped two updates
    # Compiled from the third step on, once: its state no longer changes.
    assert counter.frame_count == (1 if compile else 0), f'{counter.frame_count} compiles'
    warned = fengine_log.messages(logging.WARNING)
    assert len(warned) == 1, warned
    assert 'dampening' in warned[0] and type(wrapper.optimizer).__name__ in warned[0]


@pytest.mark.parametrize('optimizer', list(LAZY_OPTIMIZERS))
def test_strict_fp16_with_state_that_only_a_first_update_creates_raises_and_changes_nothing(
        optimizer):
    model = MLP()
    wrapper = AmpOptimWrapper(optimizer=LAZY_OPTIMIZERS[optimizer](model.parameters()),
                              dtype=torch.float16)
    step = make_train_step(model, wrapper, compile=dict(backend='aot_eager'), strict=True)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NotImplementedError, match='fp16 loss scaling'):
        step(step.state, batches(1)[0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert not wrapper.optimizer.state and wrapper.inner_count == 0


def test_an_fp16_step_after_loading_optimizer_state_skips_an_inf_step_on_the_loaded_state():
    # The compiled step keeps the list of tensors an inf step puts back; a loaded optimizer
    # state (new tensors, as on resume) must replace it, or the skipped update would be
    # undone on the old tensors and the loaded ones would keep it, as NaN.
    torch._dynamo.reset()
    eager, eager_wrapper, compiled, wrapper = _fp16_twins('Adam')
    data = batches(6)
    data[4] = (data[4][0] * 1e5, data[4][1])  # overflows float16: inf/nan gradients
    with count_compiles() as counter:
        step = make_train_step(compiled, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for batch in data[:2]:
            eager.train_step(batch, eager_wrapper)
            state, _ = step(state, batch)
        cached = step._cached_layout
        state, _ = step(state, data[2])
        eager.train_step(data[2], eager_wrapper)
        assert step._cached_layout is cached  # made once, not on every step
        old = {id(t) for t in cached.restore}
        # Resume both from the eager twin's state (new optimizer state tensors).
        compiled.load_state_dict(eager.state_dict())
        wrapper.load_state_dict(copy.deepcopy(eager_wrapper.state_dict()))
        for i, batch in enumerate(data[3:], start=3):
            before = [p.detach().clone() for p in compiled.parameters()]
            state_before = [{k: v.clone() for k, v in wrapper.optimizer.state[p].items()}
                            for p in compiled.parameters()]
            expected = eager.train_step(batch, eager_wrapper)
            state, got = step(state, batch)
            if i == 4:
                assert all(torch.equal(a, b) for a, b in zip(before, compiled.parameters()))
                for p, saved in zip(compiled.parameters(), state_before):
                    for key, value in wrapper.optimizer.state[p].items():
                        assert torch.equal(value, saved[key]), key
            else:
                assert relative(got['loss'], expected['loss']) <= 1e-5
        restore = step._cached_layout.restore
        params = {id(p) for p in compiled.parameters()}
        assert not (old - params) & {id(t) for t in restore}  # no tensor of the old state
    assert counter.frame_count == 1, f'{counter.frame_count} compiles'
    for p, q in zip(eager.parameters(), compiled.parameters()):
        assert relative(q, p) <= 1e-5
        for key, value in eager_wrapper.optimizer.state[p].items():
            got_value = wrapper.optimizer.state[q][key]
            assert torch.isfinite(got_value).all(), key
            assert relative(got_value.double(), value.double()) <= 1e-4, key
