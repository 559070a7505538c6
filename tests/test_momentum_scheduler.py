"""Momentum and generic parameter schedulers: any param-group key, torch's math, no recompiles."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn
from test_func_step import MLP, batches, count_compiles

from fengine.func import make_train_step
from fengine.optim import (GENERIC_SCHEDULERS, MOMENTUM_SCHEDULERS, CosineAnnealingMomentum,
                           LinearMomentum, LinearParamScheduler, OneCycleLR, OptimWrapper,
                           StepMomentum, build_param_schedulers)
from fengine.registry import PARAM_SCHEDULERS

# One config per shape; run for 10 steps inside [begin, end) = [1, 9).
SHAPES = {
    'Step': dict(step_size=3, gamma=0.5),
    'MultiStep': dict(milestones=[2, 5], gamma=0.5),
    'CosineAnnealing': dict(T_max=6, eta_min=0.1),
    'Linear': dict(start_factor=0.25, end_factor=1.0),
    'Exponential': dict(gamma=0.8),
    'Constant': dict(factor=0.5),
    'Poly': dict(eta_min=0.05, power=2.0),
    'CosineRestart': dict(periods=[3, 4], restart_weights=[1, 0.5], eta_min=0.05),
    'QuadraticWarmup': dict(),
}
WINDOW = dict(by_epoch=False, begin=1, end=9)


def sgd(value=0.8, **kwargs):
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=value, momentum=value,
                           weight_decay=value, **kwargs)


def adam(beta1=0.8):
    return torch.optim.Adam([nn.Parameter(torch.zeros(2))], lr=beta1, betas=(beta1, 0.99))


def run(scheduler, read, steps=10):
    values = [read()]
    for _ in range(steps):
        scheduler.step()
        values.append(read())
    return values


def build(type_, optimizer, **cfg):
    return PARAM_SCHEDULERS.build(dict(type=type_, **cfg), default_args=dict(optimizer=optimizer))


# -- the same math on any key --------------------------------------------------------------
@pytest.mark.parametrize('shape', sorted(SHAPES))
def test_a_momentum_schedule_follows_the_lr_schedule_of_the_same_shape(shape):
    lr_optimizer, momentum_optimizer = sgd(), sgd()
    lrs = run(build(f'{shape}LR', lr_optimizer, **SHAPES[shape], **WINDOW),
              lambda: lr_optimizer.param_groups[0]['lr'])
    momenta = run(build(f'{shape}Momentum', momentum_optimizer, **SHAPES[shape], **WINDOW),
                  lambda: momentum_optimizer.param_groups[0]['momentum'])
    assert momenta == pytest.approx(lrs, rel=1e-12)
    assert len(set(momenta)) > 1  # it did change
    assert momentum_optimizer.param_groups[0]['lr'] == 0.8  # and nothing else did


@pytest.mark.parametrize('shape', sorted(SHAPES))
def test_a_generic_schedule_of_weight_decay_follows_the_lr_schedule(shape):
    lr_optimizer, optimizer = sgd(), sgd()
    lrs = run(build(f'{shape}LR', lr_optimizer, **SHAPES[shape], **WINDOW),
              lambda: lr_optimizer.param_groups[0]['lr'])
    decays = run(build(f'{shape}ParamScheduler', optimizer, param_name='weight_decay',
                       **SHAPES[shape], **WINDOW),
                 lambda: optimizer.param_groups[0]['weight_decay'])
    assert decays == pytest.approx(lrs, rel=1e-12)
    assert optimizer.param_groups[0]['initial_weight_decay'] == 0.8


def test_every_family_is_registered_with_mmengines_names():
    assert set(MOMENTUM_SCHEDULERS) == {f'{shape}Momentum' for shape in SHAPES}
    assert set(GENERIC_SCHEDULERS) == {f'{shape}ParamScheduler' for shape in SHAPES} | {
        'OneCycleParamScheduler'}
    for name in MOMENTUM_SCHEDULERS + GENERIC_SCHEDULERS:
        assert PARAM_SCHEDULERS.get(name).__name__ == name


def test_a_generic_scheduler_takes_param_name_second_as_in_mmengine():
    optimizer = sgd()
    scheduler = LinearParamScheduler(optimizer, 'lr', start_factor=0.5, by_epoch=False, end=3)
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.4)
    assert scheduler.param_name == 'lr'


# -- Adam: betas[0] ------------------------------------------------------------------------
def test_adams_momentum_is_its_first_beta_and_the_second_is_kept():
    optimizer, reference = adam(), sgd()
    momenta = run(CosineAnnealingMomentum(optimizer, T_max=5, eta_min=0.1, by_epoch=False),
                  lambda: optimizer.param_groups[0]['betas'])
    expected = run(CosineAnnealingMomentum(reference, T_max=5, eta_min=0.1, by_epoch=False),
                   lambda: reference.param_groups[0]['momentum'])
    assert [b[0] for b in momenta] == pytest.approx(expected, rel=1e-12)
    assert {b[1] for b in momenta} == {0.99}
    assert all(type(b) is tuple for b in momenta)
    group = optimizer.param_groups[0]
    assert 'momentum' not in group and group['initial_momentum'] == 0.8
    assert OptimWrapper(optimizer).get_momentum()['momentum'] == [pytest.approx(expected[-1])]


def test_a_tensor_first_beta_is_written_in_place():
    optimizer = adam()
    beta1 = torch.tensor(0.8)
    optimizer.param_groups[0]['betas'] = (beta1, 0.99)
    scheduler = StepMomentum(optimizer, step_size=1, gamma=0.5, by_epoch=False)
    scheduler.step()
    assert optimizer.param_groups[0]['betas'][0] is beta1
    assert beta1.item() == pytest.approx(0.4)
    assert scheduler.get_last_value()[0].item() == pytest.approx(0.4)


# -- errors --------------------------------------------------------------------------------
def test_a_momentum_schedule_of_an_optimizer_without_momentum_names_its_keys():
    optimizer = torch.optim.Adagrad([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"LinearMomentum schedules the momentum, but param "
                                         r"group 0 of Adagrad has neither momentum .* nor "
                                         r"betas .*; its keys: .*'lr_decay'"):
        LinearMomentum(optimizer)


def test_a_generic_key_missing_from_a_group_is_named_with_the_keys_it_has():
    with pytest.raises(KeyError, match=r"LinearParamScheduler: param group 0 of SGD has no "
                                       r"'eps' to schedule; its keys: .*'dampening'"):
        LinearParamScheduler(sgd(), 'eps')


def test_a_fixed_key_is_not_replaced_by_param_name():
    with pytest.raises(TypeError, match=r"LinearMomentum always schedules 'momentum'; it does "
                                        r"not take param_name='lr'. Use the generic"):
        LinearMomentum(sgd(), param_name='lr')
    with pytest.raises(TypeError, match=r"LinearLR always schedules 'lr'"):
        build('LinearLR', sgd(), param_name='momentum')


def test_a_missing_param_name_is_an_error_that_names_it():
    with pytest.raises(TypeError, match='param_name'):
        build('LinearParamScheduler', sgd())


def test_cycle_momentum_is_refused_for_another_key():
    with pytest.raises(ValueError, match=r"cycle_momentum=True cycles the momentum beside the "
                                         r"lr; it cannot be used to schedule 'weight_decay'"):
        build('OneCycleParamScheduler', sgd(), param_name='weight_decay', eta_max=1.0,
              total_steps=10, cycle_momentum=True)


# -- OneCycleLR ----------------------------------------------------------------------------
def test_one_cycle_changes_only_the_lr_as_in_mmengine_unless_asked():
    plain, cycled = sgd(), sgd()
    run(OneCycleLR(plain, eta_max=1.0, total_steps=10, by_epoch=False),
        lambda: plain.param_groups[0]['lr'], steps=5)
    assert plain.param_groups[0]['momentum'] == 0.8
    momenta = run(OneCycleLR(cycled, max_lr=1.0, total_steps=10, cycle_momentum=True,
                             base_momentum=0.5, max_momentum=0.9, by_epoch=False),
                  lambda: cycled.param_groups[0]['momentum'], steps=5)
    assert momenta[0] == pytest.approx(0.9) and min(momenta) < 0.9


def test_one_cycle_takes_mmengines_eta_max_or_torchs_max_lr_but_not_both():
    a, b = sgd(), sgd()
    first = run(OneCycleLR(a, eta_max=1.0, total_steps=10, by_epoch=False),
                lambda: a.param_groups[0]['lr'])
    second = run(OneCycleLR(b, max_lr=1.0, total_steps=10, by_epoch=False),
                 lambda: b.param_groups[0]['lr'])
    assert first == second
    with pytest.raises(TypeError, match=r"got both 'eta_max' \(MMEngine's name\) and 'max_lr'"):
        OneCycleLR(sgd(), eta_max=1.0, max_lr=1.0, total_steps=10)


# -- resume --------------------------------------------------------------------------------
def save_and_load(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize('make', [sgd, adam])
def test_a_resumed_momentum_schedule_continues_with_identical_values(make):
    def read(optimizer):
        group = optimizer.param_groups[0]
        return group['momentum'] if 'momentum' in group else group['betas'][0]

    optimizer = make()
    scheduler = CosineAnnealingMomentum(optimizer, T_max=8, eta_min=0.1, by_epoch=False,
                                        begin=2)
    run(scheduler, lambda: read(optimizer), steps=5)
    saved = save_and_load(dict(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict()))
    expected = run(scheduler, lambda: read(optimizer), steps=4)

    fresh_optimizer = make(0.3)
    fresh = CosineAnnealingMomentum(fresh_optimizer, T_max=8, eta_min=0.1, by_epoch=False,
                                    begin=2)
    fresh_optimizer.load_state_dict(saved['optimizer'])
    fresh.load_state_dict(saved['scheduler'])
    assert run(fresh, lambda: read(fresh_optimizer), steps=4) == expected


def test_the_state_of_an_lr_schedule_does_not_load_into_a_momentum_schedule():
    state = build('LinearLR', sgd(), **WINDOW).state_dict()
    with pytest.raises(ValueError, match=r"cannot load the state of a LinearLR of 'lr' into one "
                                         r"of 'momentum'"):
        build('LinearMomentum', sgd(), **WINDOW).load_state_dict(state)


# -- several optimizers, the base group ----------------------------------------------------
def test_schedulers_of_a_wrapper_with_several_groups_move_its_base_lr_too():
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    wrapper = OptimWrapper(torch.optim.SGD([{'params': [params[0]]},
                                            {'params': [params[1]], 'lr': 0.2}], lr=0.5))
    schedulers = build_param_schedulers(dict(type='MultiStepLR', milestones=[1], gamma=0.1,
                                             by_epoch=False), wrapper)
    schedulers[0].step()
    assert wrapper.get_lr() == {'base_lr': [pytest.approx(0.05)],
                                'lr': [pytest.approx(0.05), pytest.approx(0.02)]}


def test_verbose_logs_each_new_value(fengine_log):
    scheduler = StepMomentum(sgd(), step_size=1, gamma=0.5, by_epoch=False, verbose=True)
    scheduler.step()
    assert 'StepMomentum: momentum of param group 0 is 4.0000e-01 at step 1' in fengine_log.text


# -- compiled steps: a momentum schedule is not a recompile -------------------------------
@pytest.fixture
def fresh_dynamo():
    """A clean dynamo cache before and after: dynamo remembers the batch shapes a step's
    code saw, and a later test compiling the same code with other shapes would start with
    a dynamic batch size."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


OPTIMIZERS = {
    'SGD': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    'SGD nesterov': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                              weight_decay=1e-3),
    'SGD dampening': lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1),
    'Adam': lambda p: torch.optim.Adam(p, lr=1e-2),
    'AdamW': lambda p: torch.optim.AdamW(p, lr=1e-2),
}


@pytest.mark.parametrize('optimizer', list(OPTIMIZERS))
def test_a_momentum_schedule_every_iteration_compiles_the_step_once_and_matches_eager(
        optimizer, fresh_dynamo):
    torch.manual_seed(0)
    eager = MLP()
    compiled = copy.deepcopy(eager)
    wrappers = [OptimWrapper(OPTIMIZERS[optimizer](m.parameters())) for m in (eager, compiled)]
    cfg = [dict(type='CosineAnnealingMomentum', T_max=12, eta_min=0.5, by_epoch=False),
           dict(type='LinearLR', start_factor=0.2, by_epoch=False, end=6)]
    schedulers = [build_param_schedulers(cfg, w) for w in wrappers]
    data = batches(12, size=8)
    with count_compiles() as counter:
        step = make_train_step(compiled, wrappers[1], compile=dict(backend=counter), strict=True)
        state = step.state
        for batch in data:
            eager.train_step(batch, wrappers[0])
            state, _ = step(state, batch)
            for scheduler in schedulers[0] + schedulers[1]:
                scheduler.step()
    # 1 (and not 0, which would mean nothing was compiled): 12 momenta, one graph. SGD
    # with dampening creates its momentum buffers in its first update (init_state_ cannot
    # do it beforehand), which costs its one known recompile, not one per momentum.
    expected = 2 if optimizer == 'SGD dampening' else 1
    assert counter.frame_count == expected, f'{counter.frame_count} compiles'
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert ((a - b).norm() / a.norm()).item() <= 1e-5, name
    momentum = wrappers[1].get_momentum()['momentum']
    assert type(momentum[0]) is float
    assert momentum == pytest.approx(wrappers[0].get_momentum()['momentum'], rel=1e-6)
    assert momentum[0] == pytest.approx(0.5 + 0.2 * (1 + math.cos(math.pi * 12 / 12)),
                                        abs=1e-6)


def test_a_scheduled_sgd_weight_decay_compiles_once_too(fresh_dynamo):
    model = MLP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                                           weight_decay=0.1))
    scheduler = LinearParamScheduler(wrapper, 'weight_decay', start_factor=0.1, by_epoch=False,
                                     end=8)
    with count_compiles() as counter:
        step = make_train_step(model, wrapper, compile=dict(backend=counter), strict=True)
        state = step.state
        for _ in range(8):
            state, _ = step(state, batches(1, size=8)[0])
            scheduler.step()
    assert counter.frame_count == 1, f'{counter.frame_count} compiles'
    assert float(wrapper.optimizer.param_groups[0]['weight_decay']) == pytest.approx(0.1)
