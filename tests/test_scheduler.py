"""Parameter schedulers: torch's lr sequences, MMEngine's begin/end/by_epoch, resume, tensor lrs."""
from __future__ import annotations

import inspect
import io
import math

import pytest
import torch
from torch.optim import lr_scheduler

from fengine.optim import OptimWrapper, ParamScheduler, build_param_schedulers
from fengine.optim.scheduler import INF
from fengine.registry import PARAM_SCHEDULERS

LR = 0.5

# One config per supported type, with the arguments torch needs; 12 steps stay inside
# every schedule (OneCycleLR refuses to step past total_steps).
CONFIGS = {
    'StepLR': dict(step_size=3, gamma=0.5),
    'MultiStepLR': dict(milestones=[2, 5, 9], gamma=0.1),
    'CosineAnnealingLR': dict(T_max=8, eta_min=0.01),
    'LinearLR': dict(start_factor=0.2, end_factor=1.0, total_iters=4),
    'OneCycleLR': dict(max_lr=1.0, total_steps=20),
    'ExponentialLR': dict(gamma=0.8),
    'ConstantLR': dict(factor=0.25, total_iters=3),
    'PolynomialLR': dict(total_iters=10, power=2.0),
    'CosineAnnealingWarmRestarts': dict(T_0=3, T_mult=2, eta_min=0.05),
}
STEPS = 12


def make_optimizer(lr=LR, kind='SGD'):
    params = [torch.nn.Parameter(torch.zeros(2))]
    if kind == 'Adam':
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def lr_of(optimizer) -> float:
    return float(optimizer.param_groups[0]['lr'])


def torch_sequence(name: str, steps: int = STEPS, lr=LR, kind='SGD') -> list[float]:
    """The lr after construction and after each step, running torch's scheduler by hand."""
    optimizer = make_optimizer(lr, kind)
    scheduler = getattr(lr_scheduler, name)(optimizer, **CONFIGS[name])
    lrs = [lr_of(optimizer)]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(lr_of(optimizer))
    return lrs


def our_sequence(scheduler: ParamScheduler, optimizer, steps: int = STEPS) -> list[float]:
    lrs = [lr_of(optimizer)]
    for _ in range(steps):
        scheduler.step()
        lrs.append(lr_of(optimizer))
    return lrs


def build(name: str, optimizer, **overrides) -> ParamScheduler:
    cfg = dict(type=name, **CONFIGS[name])
    cfg.update(overrides)
    return PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=optimizer))


# -- the registry and torch's own math ---------------------------------------------------
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_each_type_is_registered_and_builds_a_param_scheduler(name):
    scheduler = build(name, make_optimizer())
    assert isinstance(scheduler, ParamScheduler)
    assert isinstance(scheduler.scheduler, getattr(lr_scheduler, name))
    assert scheduler.by_epoch is True and scheduler.begin == 0 and scheduler.end == INF


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_each_type_gives_the_lrs_of_the_torch_scheduler_run_by_hand(name):
    optimizer = make_optimizer()
    ours = our_sequence(build(name, optimizer), optimizer)
    expected = torch_sequence(name)
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert len(set(round(v, 12) for v in expected)) > 1  # the schedule does change the lr


def test_get_last_lr_is_the_lr_after_the_latest_step():
    optimizer = make_optimizer()
    scheduler = build('StepLR', optimizer)
    for _ in range(4):
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(LR * 0.5)]
    assert scheduler.global_step == 4


# -- begin / end -------------------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_the_schedule_runs_from_begin_and_freezes_at_end(name):
    begin, end, steps = 3, 10, 14
    optimizer = make_optimizer()
    ours = our_sequence(build(name, optimizer, begin=begin, end=end), optimizer, steps)
    reference = torch_sequence(name, steps)
    expected = ([LR] * begin + reference[:end - begin]
                + [reference[end - begin - 1]] * (steps + 1 - end))
    assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize('name', ['LinearLR', 'ConstantLR', 'OneCycleLR'])
def test_building_with_a_later_begin_leaves_the_param_groups_untouched(name):
    optimizer = make_optimizer()
    before = {k: v for k, v in optimizer.param_groups[0].items() if k != 'params'}
    scheduler = build(name, optimizer, begin=4)
    after = {k: v for k, v in optimizer.param_groups[0].items() if k != 'params'}
    assert after == {**before, 'initial_lr': LR}  # no lr, momentum or max_lr written
    assert scheduler.scheduler is None
    for _ in range(3):
        scheduler.step()
        assert lr_of(optimizer) == LR
    scheduler.step()
    assert lr_of(optimizer) != LR and scheduler.scheduler is not None


def test_a_bad_value_is_reported_when_built_not_when_begin_is_reached():
    with pytest.raises(ValueError, match='T_0'):
        build('CosineAnnealingWarmRestarts', make_optimizer(), T_0=0, begin=5)


def test_lengths_default_from_begin_and_end_as_in_mmengine():
    optimizer = make_optimizer()
    cosine = PARAM_SCHEDULERS.build(dict(type='CosineAnnealingLR', begin=2, end=12),
                                    default_args=dict(optimizer=optimizer))
    linear = PARAM_SCHEDULERS.build(dict(type='LinearLR', begin=0, end=500),
                                    default_args=dict(optimizer=optimizer))
    one_cycle = PARAM_SCHEDULERS.build(dict(type='OneCycleLR', max_lr=1.0, end=30),
                                       default_args=dict(optimizer=make_optimizer()))
    assert cosine.kwargs['T_max'] == 10
    assert linear.kwargs['total_iters'] == 499  # the last step inside [0, 500) reaches 1.0
    assert one_cycle.scheduler.total_steps == 30


def test_linear_warmup_reaches_the_base_lr_on_the_last_step_before_end():
    optimizer = make_optimizer()
    warmup = PARAM_SCHEDULERS.build(
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
        default_args=dict(optimizer=optimizer))
    lrs = our_sequence(warmup, optimizer, 6)
    assert lrs == pytest.approx([LR * f for f in (0.1, 0.325, 0.55, 0.775, 1.0, 1.0, 1.0)])


# -- composition -------------------------------------------------------------------------
def run_like_the_runner(schedulers, optimizer, epochs: int, epoch_length: int) -> list[float]:
    """The lr each training iteration uses, stepping as the Runner does."""
    lrs = []
    for _ in range(epochs):
        for _ in range(epoch_length):
            lrs.append(lr_of(optimizer))
            for scheduler in schedulers:
                if not scheduler.by_epoch:
                    scheduler.step()
        for scheduler in schedulers:
            if scheduler.by_epoch:
                scheduler.step()
    return lrs


def test_an_iteration_warmup_and_an_epoch_multistep_compose_as_in_mmengine():
    optimizer = make_optimizer(lr=1.0)
    schedulers = build_param_schedulers(
        [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
         dict(type='MultiStepLR', by_epoch=True, milestones=[2, 3], gamma=0.1)],
        OptimWrapper(optimizer), max_epochs=4)
    lrs = run_like_the_runner(schedulers, optimizer, epochs=4, epoch_length=3)
    # warm-up factors 0.1, 0.4, 0.7, 1.0 over iterations 0-3; x0.1 after epochs 2 and 3
    expected = [0.1, 0.4, 0.7, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01]
    assert lrs == pytest.approx(expected)


def test_an_epoch_milestone_during_warmup_scales_the_warmup():
    optimizer = make_optimizer(lr=1.0)
    schedulers = build_param_schedulers(
        [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=7),
         dict(type='MultiStepLR', milestones=[1], gamma=0.5)], optimizer)
    lrs = run_like_the_runner(schedulers, optimizer, epochs=3, epoch_length=3)
    assert lrs == pytest.approx([0.1, 0.25, 0.4, 0.275, 0.35, 0.425, 0.5, 0.5, 0.5])


# -- convert_to_iter_based ---------------------------------------------------------------
CONVERTIBLE = [name for name in sorted(CONFIGS) if name != 'OneCycleLR']


@pytest.mark.parametrize('name', CONVERTIBLE)
def test_the_iteration_based_lr_at_each_epoch_boundary_equals_the_epoch_based_lr(name):
    epoch_length, epochs = 4, 11
    by_epoch_optimizer, by_iter_optimizer = make_optimizer(), make_optimizer()
    by_epoch = build(name, by_epoch_optimizer, begin=1)
    by_iter = build(name, by_iter_optimizer, begin=1, convert_to_iter_based=True,
                    epoch_length=epoch_length)
    assert by_iter.by_epoch is False and by_iter.begin == epoch_length
    epoch_lrs = our_sequence(by_epoch, by_epoch_optimizer, epochs)
    iter_lrs = our_sequence(by_iter, by_iter_optimizer, epochs * epoch_length)
    assert iter_lrs[::epoch_length] == pytest.approx(epoch_lrs, rel=1e-9)
    if name not in ('StepLR', 'MultiStepLR', 'ConstantLR'):  # smooth: changes inside epochs
        assert iter_lrs[epoch_length + 1] != pytest.approx(iter_lrs[epoch_length])


def test_conversion_scales_every_epoch_valued_argument():
    def converted(name, **cfg):
        return PARAM_SCHEDULERS.build(
            dict(type=name, convert_to_iter_based=True, epoch_length=10, **cfg),
            default_args=dict(optimizer=make_optimizer())).kwargs

    assert converted('StepLR', step_size=2)['step_size'] == 20
    assert converted('MultiStepLR', milestones=[8, 11])['milestones'] == [80, 110]
    assert converted('CosineAnnealingLR', T_max=3)['T_max'] == 30
    assert converted('LinearLR', total_iters=2)['total_iters'] == 20
    assert converted('LinearLR')['total_iters'] == 50  # torch's default, 5 epochs
    assert converted('ConstantLR', total_iters=2)['total_iters'] == 20
    assert converted('PolynomialLR', total_iters=2)['total_iters'] == 20
    assert converted('CosineAnnealingWarmRestarts', T_0=2)['T_0'] == 20
    assert converted('OneCycleLR', max_lr=1.0, total_steps=3)['total_steps'] == 30
    assert converted('OneCycleLR', max_lr=1.0, epochs=3, steps_per_epoch=1) == dict(
        max_lr=1.0, epochs=3, steps_per_epoch=10, cycle_momentum=False)
    assert converted('ExponentialLR', gamma=0.5)['gamma'] == pytest.approx(0.5 ** 0.1)


def test_a_converted_config_takes_its_end_from_max_epochs_in_iterations():
    schedulers = build_param_schedulers(
        dict(type='CosineAnnealingLR', by_epoch=True, convert_to_iter_based=True),
        make_optimizer(), epoch_length=5, max_epochs=10)
    assert (schedulers[0].end, schedulers[0].kwargs['T_max']) == (50, 50)


# -- resume ------------------------------------------------------------------------------
def save_and_load(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize('begin', [0, 3, 9])
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_a_resumed_scheduler_continues_with_identical_lrs(name, begin):
    optimizer = make_optimizer()
    scheduler = build(name, optimizer, begin=begin)
    for _ in range(7):
        scheduler.step()
    checkpoint = save_and_load(dict(optimizer=optimizer.state_dict(),
                                    scheduler=scheduler.state_dict()))
    expected = our_sequence(scheduler, optimizer, 5)

    fresh_optimizer = make_optimizer(lr=0.123)
    fresh = build(name, fresh_optimizer, begin=begin)
    fresh_optimizer.load_state_dict(checkpoint['optimizer'])
    fresh.load_state_dict(checkpoint['scheduler'])
    assert fresh.get_last_lr() == pytest.approx([expected[0]])
    assert fresh.global_step == 7
    assert our_sequence(fresh, fresh_optimizer, 5) == expected


def test_loading_the_state_of_another_type_names_both():
    state = build('StepLR', make_optimizer()).state_dict()
    with pytest.raises(ValueError, match='StepLR.*MultiStepLR'):
        build('MultiStepLR', make_optimizer()).load_state_dict(state)


# -- tensor learning rates ---------------------------------------------------------------
@pytest.mark.parametrize('kind', ['SGD', 'Adam'])
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_a_tensor_lr_stays_the_same_tensor_with_the_same_values(name, kind):
    optimizer = make_optimizer(lr=torch.tensor(LR), kind=kind)
    lr_tensor = optimizer.param_groups[0]['lr']
    scheduler = build(name, optimizer, begin=2)
    lrs = our_sequence(scheduler, optimizer)
    assert optimizer.param_groups[0]['lr'] is lr_tensor
    assert isinstance(scheduler.get_last_lr()[0], torch.Tensor)
    float_optimizer = make_optimizer(kind=kind)
    expected = our_sequence(build(name, float_optimizer, begin=2), float_optimizer)
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_a_tensor_lr_stays_a_tensor_through_resume():
    optimizer = make_optimizer(lr=torch.tensor(LR), kind='Adam')
    scheduler = build('OneCycleLR', optimizer, begin=2)
    for _ in range(5):
        scheduler.step()
    state = scheduler.state_dict()
    fresh_optimizer = make_optimizer(lr=torch.tensor(LR), kind='Adam')
    fresh = build('OneCycleLR', fresh_optimizer, begin=2)
    fresh_optimizer.load_state_dict(optimizer.state_dict())
    lr_tensor = fresh_optimizer.param_groups[0]['lr']
    fresh.load_state_dict(state)
    fresh.step()
    scheduler.step()
    assert fresh_optimizer.param_groups[0]['lr'] is lr_tensor
    assert float(lr_tensor) == pytest.approx(lr_of(optimizer))


def test_get_last_lr_of_a_tensor_lr_is_its_value_after_this_schedulers_latest_step():
    # Two schedulers write the same lr tensor in place (a warmup by iteration, a decay
    # that is frozen before its begin). Each one's get_last_lr is the value right after
    # its own step, even when the other has written the tensor since.
    optimizer = make_optimizer(lr=torch.tensor(LR))
    lr_tensor = optimizer.param_groups[0]['lr']
    warmup = build('LinearLR', optimizer, end=4)
    decay = build('StepLR', optimizer, begin=6)
    for i in range(10):
        warmup.step()
        after_warmup = lr_of(optimizer)
        decay.step()
        after_decay = lr_of(optimizer)
        assert float(warmup.get_last_lr()[0]) == after_warmup, i
        assert float(decay.get_last_lr()[0]) == after_decay, i
        assert float(warmup.state_dict()['last_lr'][0]) == after_warmup, i
    assert optimizer.param_groups[0]['lr'] is lr_tensor


def test_get_last_lr_copies_a_tensor_lr_and_no_result_aliases_the_state():
    optimizer = make_optimizer(lr=torch.tensor(LR))
    scheduler = build('StepLR', optimizer, end=2)  # frozen after step 2: the lr stays put
    for _ in range(3):
        scheduler.step()
    kept = scheduler._last_lr[0]
    for _ in range(2):
        scheduler.step()
    assert scheduler._last_lr[0] is kept  # no clone per step while the lr is not written
    first = scheduler.get_last_lr()[0]
    assert first is not optimizer.param_groups[0]['lr']
    first.fill_(123.0)  # the caller's copy: changes nothing kept
    assert float(scheduler.get_last_lr()[0]) == lr_of(optimizer) == LR
    assert scheduler.state_dict()['last_lr'] == [LR]
    # A write into the group's tensor is seen by the next step.
    optimizer.param_groups[0]['lr'].fill_(0.25)
    assert float(scheduler.get_last_lr()[0]) == LR
    scheduler.step()
    assert float(scheduler.get_last_lr()[0]) == 0.25


def tensors_in(obj) -> list:
    """Every tensor inside ``obj`` (dicts, lists, tuples), to check a state is plain."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in tensors_in(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in tensors_in(value)]
    return []


@pytest.mark.parametrize('begin', [0, 3])
@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_the_state_of_a_tensor_lr_holds_plain_floats(name, begin):
    # A compiled step keeps lr as a 0-d tensor (a CUDA tensor on a GPU); the state
    # must not carry it, or the checkpoint would depend on the device.
    optimizer = make_optimizer(lr=torch.tensor(LR))
    scheduler = build(name, optimizer, begin=begin)
    for _ in range(5):
        scheduler.step()
    state = scheduler.state_dict()

    assert tensors_in(state) == []
    assert all(type(lr) is float for lr in state['last_lr'])
    assert all(type(lr) is float for lr in state['scheduler']['_last_lr'])
    assert state['last_lr'] == [float(optimizer.param_groups[0]['lr'])]


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_a_tensor_lr_resumes_from_a_plain_state_with_identical_lrs(name):
    optimizer = make_optimizer(lr=torch.tensor(LR))
    scheduler = build(name, optimizer, begin=2)
    for _ in range(5):
        scheduler.step()
    checkpoint = save_and_load(dict(optimizer=optimizer.state_dict(),
                                    scheduler=scheduler.state_dict()))
    expected = our_sequence(scheduler, optimizer, 6)

    fresh_optimizer = make_optimizer(lr=torch.tensor(LR))
    fresh = build(name, fresh_optimizer, begin=2)
    fresh_optimizer.load_state_dict(checkpoint['optimizer'])
    fresh.load_state_dict(checkpoint['scheduler'])
    # Tensors again, as in the run that saved it (so the lrs match to the bit).
    assert isinstance(fresh.get_last_lr()[0], torch.Tensor)
    assert our_sequence(fresh, fresh_optimizer, 6) == expected


@pytest.mark.cuda
def test_the_state_of_a_cuda_lr_loads_back_onto_the_device():
    device = torch.device('cuda')
    params = [torch.nn.Parameter(torch.zeros(2, device=device))]
    optimizer = torch.optim.Adam(params, lr=torch.tensor(LR, device=device))
    scheduler = build('CosineAnnealingLR', optimizer)
    for _ in range(3):
        scheduler.step()
    checkpoint = save_and_load(dict(optimizer=optimizer.state_dict(),
                                    scheduler=scheduler.state_dict()))
    assert tensors_in(checkpoint['scheduler']) == []
    expected = our_sequence(scheduler, optimizer, 4)

    fresh_params = [torch.nn.Parameter(torch.zeros(2, device=device))]
    fresh_optimizer = torch.optim.Adam(fresh_params, lr=torch.tensor(LR, device=device))
    fresh = build('CosineAnnealingLR', fresh_optimizer)
    fresh_optimizer.load_state_dict(checkpoint['optimizer'])
    fresh.load_state_dict(checkpoint['scheduler'])
    assert fresh.get_last_lr()[0].device.type == 'cuda'
    assert fresh.scheduler.base_lrs[0].device.type == 'cuda'
    assert our_sequence(fresh, fresh_optimizer, 4) == expected


# -- build_param_schedulers --------------------------------------------------------------
def test_build_accepts_a_dict_a_list_schedulers_and_torch_schedulers():
    optimizer = make_optimizer()
    wrapper = OptimWrapper(optimizer)
    ours = build('StepLR', optimizer)
    theirs = lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    built = build_param_schedulers(
        [dict(type='LinearLR', by_epoch=False, end=10), ours, theirs], wrapper)
    assert [type(s.scheduler).__name__ for s in built] == ['LinearLR', 'StepLR',
                                                          'ExponentialLR']
    assert built[1] is ours and built[2].scheduler is theirs and built[2].by_epoch
    assert len(build_param_schedulers(dict(type='StepLR', step_size=1), wrapper)) == 1
    assert build_param_schedulers(None, wrapper) == []


def test_a_wrapped_torch_scheduler_keeps_stepping_it():
    optimizer = make_optimizer()
    wrapped = build_param_schedulers(lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5),
                                     optimizer)[0]
    wrapped.step()
    wrapped.step()
    assert lr_of(optimizer) == pytest.approx(LR / 4)


def test_end_defaults_to_max_epochs_or_max_iters_by_unit():
    by_epoch, by_iter = build_param_schedulers(
        [dict(type='MultiStepLR', milestones=[1]), dict(type='LinearLR', by_epoch=False)],
        make_optimizer(), max_epochs=12, max_iters=300)
    assert (by_epoch.end, by_iter.end) == (12, 300)


# -- bad inputs --------------------------------------------------------------------------
def test_an_unknown_type_names_the_close_match():
    with pytest.raises(KeyError, match="'CosineAnnealingLR'"):
        build_param_schedulers(dict(type='CosineAnnealingLr', T_max=2), make_optimizer())


def test_an_unknown_argument_names_it_and_the_accepted_ones():
    with pytest.raises(TypeError, match=r"'step'\. Did you mean 'step_size'.*'gamma'"):
        build_param_schedulers(dict(type='StepLR', step=2), make_optimizer())


def test_a_missing_argument_is_named():
    with pytest.raises(TypeError, match="missing.*'step_size'"):
        build_param_schedulers(dict(type='StepLR'), make_optimizer())


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_a_registered_type_refuses_scheduler_cls_instead_of_building_another(name):
    # LinearLR(..., scheduler_cls=StepLR) used to build a StepLR under LinearLR's name.
    other = lr_scheduler.StepLR if name != 'StepLR' else lr_scheduler.ExponentialLR
    cls = PARAM_SCHEDULERS.get(name)
    with pytest.raises(TypeError, match=rf'^{name} always builds (torch\.optim\.lr_scheduler'
                                        rf'|fengine\.optim\._schedules)'
                                        rf'.*{getattr(lr_scheduler, name).__name__}; it does '
                                        r'not take scheduler_cls, but got scheduler_cls='):
        cls(make_optimizer(), scheduler_cls=other, step_size=1)
    with pytest.raises(TypeError, match='does not take scheduler_cls'):
        cls(make_optimizer(), other, step_size=1)
    with pytest.raises(TypeError, match='does not take scheduler_cls'):
        build_param_schedulers(dict(type=name, scheduler_cls=other, **CONFIGS[name]),
                               make_optimizer())


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_a_registered_types_signature_does_not_offer_scheduler_cls(name):
    params = inspect.signature(PARAM_SCHEDULERS.get(name)).parameters
    assert 'scheduler_cls' not in params
    assert list(params)[:2] == ['optimizer', 'by_epoch']


def test_a_subclass_with_its_own_init_keeps_its_own_signature():
    class Warmup(PARAM_SCHEDULERS.get('LinearLR')):
        def __init__(self, optimizer, warmup_iters: int = 5) -> None:
            super().__init__(optimizer, by_epoch=False, end=warmup_iters + 1)

    assert list(inspect.signature(Warmup).parameters) == ['optimizer', 'warmup_iters']
    assert isinstance(Warmup(make_optimizer()).scheduler, lr_scheduler.LinearLR)


def test_the_base_class_still_takes_any_torch_scheduler():
    scheduler = ParamScheduler(make_optimizer(), lr_scheduler.StepLR, step_size=1)
    assert isinstance(scheduler.scheduler, lr_scheduler.StepLR)


def test_last_epoch_is_refused_in_favour_of_load_state_dict():
    with pytest.raises(TypeError, match='load_state_dict'):
        build_param_schedulers(dict(type='StepLR', step_size=1, last_epoch=3),
                               make_optimizer())


def test_cosine_without_t_max_or_an_end_says_how_to_give_one():
    with pytest.raises(ValueError, match='T_max.*max_epochs'):
        build_param_schedulers(dict(type='CosineAnnealingLR'), make_optimizer())


def test_conversion_without_epoch_length_is_a_clear_error():
    with pytest.raises(ValueError, match='epoch_length'):
        build_param_schedulers(dict(type='StepLR', step_size=1, convert_to_iter_based=True),
                               make_optimizer())


def test_conversion_of_an_iteration_based_config_is_refused():
    with pytest.raises(ValueError, match='by_epoch=False'):
        build_param_schedulers(dict(type='StepLR', step_size=1, by_epoch=False,
                                    convert_to_iter_based=True), make_optimizer(),
                               epoch_length=3)


def test_conversion_of_a_scheduler_without_known_epoch_arguments_is_refused():
    with pytest.raises(ValueError, match='not supported for LambdaLR'):
        ParamScheduler(make_optimizer(), lr_scheduler.LambdaLR, lr_lambda=math.exp,
                       convert_to_iter_based=True, epoch_length=2)


@pytest.mark.parametrize('window, message', [
    (dict(begin=5, end=5), 'end must be larger than begin'),
    (dict(begin=-1), 'begin must be >= 0'),
])
def test_a_window_out_of_order_is_refused(window, message):
    with pytest.raises(ValueError, match=message):
        build('StepLR', make_optimizer(), **window)


def test_something_that_is_not_an_optimizer_is_refused():
    with pytest.raises(TypeError, match='torch.optim.Optimizer'):
        build_param_schedulers(dict(type='StepLR', step_size=1), object())


def test_an_entry_of_another_kind_is_refused():
    with pytest.raises(TypeError, match=r'param_scheduler\[1\]'):
        build_param_schedulers([dict(type='StepLR', step_size=1), 'StepLR'],
                               make_optimizer())


def test_a_scheduler_of_another_optimizer_is_refused():
    other = build('StepLR', make_optimizer())
    with pytest.raises(TypeError, match='another optimizer'):
        build_param_schedulers([other], make_optimizer())


# -- MMEngine's schedules beyond torch's, and its names -----------------------------------
def lrs_of(name, steps=10, lr=LR, groups=None, **cfg):
    """Every group's lr after building and after each of ``steps`` steps."""
    optimizer = (torch.optim.SGD(groups, lr=lr) if groups is not None else make_optimizer(lr))
    scheduler = PARAM_SCHEDULERS.build(dict(type=name, **cfg),
                                       default_args=dict(optimizer=optimizer))
    lrs = [[float(g['lr']) for g in optimizer.param_groups]]
    for _ in range(steps):
        scheduler.step()
        lrs.append([float(g['lr']) for g in optimizer.param_groups])
    return lrs


def test_poly_lr_decays_to_eta_min_over_the_window():
    # MMEngine: value_t = (base - eta_min) * (1 - t / T) ** power + eta_min, T = end - 1
    got = [lrs[0] for lrs in lrs_of('PolyLR', eta_min=0.1, power=2.0, by_epoch=False, end=6)]
    expected = [(LR - 0.1) * (1 - t / 5) ** 2 + 0.1 for t in range(6)] + [0.1] * 5
    assert got == pytest.approx(expected, rel=1e-9)


def test_cosine_restart_lr_restarts_each_period_from_its_weight():
    periods, weights, eta_min = [4, 6], [1.0, 0.5], 0.05
    got = [lrs[0] for lrs in lrs_of('CosineRestartLR', steps=12, periods=periods,
                                    restart_weights=weights, eta_min=eta_min, by_epoch=False)]
    expected = []
    for period, weight in zip(periods, weights):
        top = LR * weight
        expected += [eta_min + (top - eta_min) * (1 + math.cos(math.pi * t / period)) / 2
                     for t in range(period)]
    expected += [expected[-1]] * 3  # after the last period it stays
    assert got == pytest.approx(expected, rel=1e-9)


def test_eta_min_ratio_sets_each_groups_floor_from_its_initial_lr():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    groups = [dict(params=[params[0]]), dict(params=[params[1]], lr=0.2)]
    got = lrs_of('CosineAnnealingLR', steps=8, groups=groups, T_max=8, eta_min_ratio=0.1,
                 by_epoch=False)
    for index, base in enumerate([LR, 0.2]):
        expected = [0.1 * base + 0.9 * base * (1 + math.cos(math.pi * t / 8)) / 2
                    for t in range(9)]
        assert [lrs[index] for lrs in got] == pytest.approx(expected, rel=1e-9)


def test_quadratic_warmup_grows_with_the_square_of_the_step():
    got = [lrs[0] for lrs in lrs_of('QuadraticWarmupLR', steps=7, by_epoch=False, end=5)]
    assert got == pytest.approx([LR * ((t + 1) / 5) ** 2 for t in range(5)] + [LR] * 3)


@pytest.mark.parametrize('cfg, message', [
    (dict(type='CosineRestartLR', periods=[2]), r'CosineRestartLR needs eta_min .* or '
                                                r'eta_min_ratio'),
    (dict(type='CosineRestartLR', periods=[2, 3], restart_weights=[1], eta_min=0.0),
     r'needs one restart weight per period: got periods=\[2, 3\]'),
    (dict(type='CosineAnnealingLR', T_max=3, eta_min=0.0, eta_min_ratio=0.1),
     r'takes eta_min or eta_min_ratio, not both'),
    (dict(type='QuadraticWarmupLR'), r"QuadraticWarmupLR is missing the required argument\(s\) "
                                     r"'total_iters'"),
    (dict(type='StepLR', step_size=2, last_step=3), r'StepLR got last_step; a ParamScheduler '
                                                    r'resumes through load_state_dict\(\)'),
])
def test_a_bad_mmengine_schedule_is_a_clear_error(cfg, message):
    with pytest.raises((TypeError, ValueError), match=message):
        PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=make_optimizer()))


def test_conversion_scales_mmengines_epoch_arguments_too():
    def converted(name, **cfg):
        return PARAM_SCHEDULERS.build(
            dict(type=name, convert_to_iter_based=True, **cfg),
            default_args=dict(optimizer=make_optimizer(), epoch_length=10))

    assert converted('CosineRestartLR', periods=[2, 3], restart_weights=[1, 1],
                     eta_min=0.0).kwargs['periods'] == [20, 30]
    assert converted('PolyLR', end=4).kwargs['total_iters'] == 39
    warmup = converted('QuadraticWarmupLR', end=2)
    assert (warmup.kwargs['total_iters'], warmup.end, warmup.by_epoch) == (20, 20, False)


def test_build_iter_from_epoch_equals_convert_to_iter_based():
    a, b = make_optimizer(), make_optimizer()
    by_hand = PARAM_SCHEDULERS.get('CosineAnnealingLR').build_iter_from_epoch(
        a, T_max=3, epoch_length=4)
    from_cfg = PARAM_SCHEDULERS.build(dict(type='CosineAnnealingLR', T_max=3,
                                           convert_to_iter_based=True),
                                      default_args=dict(optimizer=b, epoch_length=4))
    assert (by_hand.by_epoch, by_hand.kwargs) == (False, dict(T_max=12))
    assert our_sequence(by_hand, a) == our_sequence(from_cfg, b)


def test_the_build_function_hands_epoch_length_only_to_a_conversion():
    class Plain(ParamScheduler):  # a user's scheduler without epoch_length

        def __init__(self, optimizer, gamma):
            super().__init__(optimizer, lr_scheduler.ExponentialLR, gamma=gamma)

    PARAM_SCHEDULERS.register_module(module=Plain)
    try:
        scheduler = PARAM_SCHEDULERS.build(dict(type='Plain', gamma=0.5), default_args=dict(
            optimizer=make_optimizer(), epoch_length=10))
        assert scheduler.kwargs == dict(gamma=0.5)
        with pytest.raises(ValueError, match=r'ExponentialLR has convert_to_iter_based=True but '
                                             r'no epoch_length|Plain has convert_to_iter_based'):
            PARAM_SCHEDULERS.build(dict(type='ExponentialLR', gamma=0.5,
                                        convert_to_iter_based=True),
                                   default_args=dict(optimizer=make_optimizer()))
    finally:
        PARAM_SCHEDULERS._module_dict.pop('Plain')


def test_mmengines_poly_and_torchs_polynomial_agree_without_eta_min():
    ours = [lrs[0] for lrs in lrs_of('PolyLR', power=2.0, by_epoch=False, end=11)]
    torchs = [lrs[0] for lrs in lrs_of('PolynomialLR', power=2.0, total_iters=10,
                                       by_epoch=False)]
    assert ours == pytest.approx(torchs, rel=1e-9)
