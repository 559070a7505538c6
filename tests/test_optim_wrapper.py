"""OptimWrapper and AmpOptimWrapper: each checked against doing the same thing by hand."""
from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fengine.optim import AmpOptimWrapper, OptimWrapper
from fengine.optim import amp_optim_wrapper


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 4, generator=generator), torch.randn(6, 1, generator=generator))
            for _ in range(n)]


def loss_of(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return (model(x) - y).pow(2).mean()


def assert_same_params(a: nn.Module, b: nn.Module, **tolerance) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, msg=f'{name} differs', **tolerance)


# -- update_params ------------------------------------------------------------------
def test_update_params_equals_a_hand_written_backward_step_zero_grad_loop():
    model = make_model()
    reference = copy.deepcopy(model)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for batch in batches(3):
        wrapper.update_params(loss_of(model, batch))
        loss_of(reference, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        assert_same_params(model, reference, rtol=0, atol=0)
        assert all(p.grad is None for p in model.parameters())
    assert wrapper.inner_count == 3 and wrapper.log_vars == {}


def test_update_params_passes_step_and_zero_grad_keyword_arguments():
    model = make_model()
    wrapper = OptimWrapper(torch.optim.LBFGS(model.parameters(), lr=0.1))
    batch = batches(1)[0]

    def closure():
        wrapper.optimizer.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        return loss

    before = loss_of(model, batch).item()
    wrapper.update_params(loss_of(model, batch), step_kwargs=dict(closure=closure),
                          zero_kwargs=dict(set_to_none=False))
    assert loss_of(model, batch).item() < before
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())


# -- gradient accumulation ----------------------------------------------------------
def test_accumulating_four_steps_equals_one_step_on_the_averaged_loss():
    model = make_model()
    reference = copy.deepcopy(model)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=4)
    data = batches(4)
    start = copy.deepcopy(model)
    for i, batch in enumerate(data):
        wrapper.update_params(loss_of(model, batch))
        if i < 3:  # no update before the window is full
            assert_same_params(model, start, rtol=0, atol=0)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    (sum(loss_of(reference, b) for b in data) / 4).backward()
    optimizer.step()
    assert_same_params(model, reference)


def test_a_shorter_last_window_divides_by_its_own_length():
    model = make_model()
    reference = copy.deepcopy(model)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=4)
    wrapper.initialize_count_status(model, 0, 10)
    data = batches(10)
    for batch in data:
        wrapper.update_params(loss_of(model, batch))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for window in (data[0:4], data[4:8], data[8:10]):
        (sum(loss_of(reference, b) for b in window) / len(window)).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert_same_params(model, reference)
    assert wrapper.inner_count == 10


def test_the_loss_factors_and_update_steps_follow_the_windows():
    wrapper = OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1),
                           accumulative_counts=4)
    wrapper.initialize_count_status(nn.Linear(1, 1), 0, 10)
    factors, syncs, updates = [], [], []
    for _ in range(10):
        factors.append(wrapper.scale_loss(torch.tensor(8.0)).item())
        syncs.append(wrapper.should_sync())
        wrapper._inner_count += 1  # what backward() does
        updates.append(wrapper.should_update())
    assert factors == [2.0] * 8 + [4.0] * 2
    assert syncs == updates == [False, False, False, True] * 2 + [False, True]


def test_resuming_mid_window_averages_what_the_first_window_saw_and_warns(fengine_log):
    wrapper = OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1),
                           accumulative_counts=4)
    wrapper.initialize_count_status(nn.Linear(1, 1), 2, 10)
    steps = [wrapper.next_micro_step() for _ in range(8)]
    # MMEngine divides micro-steps 8 and 9 by zero here (remainder of (10 - 2) % 4).
    assert steps == [(2, False), (2, True), (4, False), (4, False), (4, False), (4, True),
                     (2, False), (2, True)]
    assert 'not a multiple of accumulative_counts=4' in fengine_log.text
    assert 'first update averages only 2' in fengine_log.text


def test_accumulation_warns_about_batch_norm(fengine_log):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    wrapper.initialize_count_status(model, 0, 4)
    assert 'BatchNorm' in fengine_log.text
    assert not [m for m in fengine_log.messages() if 'not a multiple' in m]


def test_without_accumulation_the_loss_is_not_rescaled():
    wrapper = OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1))
    loss = torch.tensor(3.0)
    assert wrapper.scale_loss(loss) is loss
    assert wrapper.should_sync() and wrapper.next_micro_step() == (1, True)


@pytest.mark.parametrize('init, max_counts, error, match', [
    (-1, 4, ValueError, 'init_counts must be >= 0, but got -1'),
    (3, 2, ValueError, 'max_counts must be >= 3, but got 2'),
    (0, 2.5, TypeError, 'max_counts must be an int, but got float'),
])
def test_initialize_count_status_rejects_bad_counts(init, max_counts, error, match):
    wrapper = OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1))
    with pytest.raises(error, match=match):
        wrapper.initialize_count_status(nn.Linear(1, 1), init, max_counts)


@pytest.mark.parametrize('counts, error, match', [
    (0, ValueError, 'accumulative_counts must be >= 1, but got 0'),
    (2.0, TypeError, 'accumulative_counts must be an int, but got float'),
    (True, TypeError, 'accumulative_counts must be an int, but got bool'),
])
def test_accumulative_counts_must_be_a_positive_int(counts, error, match):
    with pytest.raises(error, match=match):
        OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1),
                     accumulative_counts=counts)


def test_a_wrapper_of_something_else_than_an_optimizer_names_its_type():
    model = make_model()
    with pytest.raises(TypeError, match=r'wraps a torch.optim.Optimizer, but got '
                                        r'builtins.generator'):
        OptimWrapper(model.parameters())
    with pytest.raises(TypeError, match=r'but got builtins.dict'):
        OptimWrapper(dict(type='SGD', lr=0.1))


# -- DDP -----------------------------------------------------------------------------
@pytest.fixture
def gloo_group():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_skips_gradient_sync_on_micro_steps_that_do_not_update(gloo_group, monkeypatch):
    ddp = DistributedDataParallel(make_model())
    reference = copy.deepcopy(ddp.module)
    entered = []
    no_sync = ddp.no_sync

    def recording_no_sync():
        entered.append(wrapper.inner_count + 1)
        return no_sync()

    monkeypatch.setattr(ddp, 'no_sync', recording_no_sync)
    wrapper = OptimWrapper(torch.optim.SGD(ddp.parameters(), lr=0.1), accumulative_counts=4)
    wrapper.initialize_count_status(ddp, 0, 6)
    data = batches(6)
    for batch in data:
        with wrapper.optim_context(ddp):
            loss = loss_of(ddp, batch)
        wrapper.update_params(loss)
    assert entered == [1, 2, 3, 5]
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for window in (data[:4], data[4:]):
        (sum(loss_of(reference, b) for b in window) / len(window)).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert_same_params(ddp.module, reference)


def test_optim_context_is_empty_for_a_plain_model():
    model = make_model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=4)
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.float32


# -- clipping -----------------------------------------------------------------------
def test_clip_by_norm_records_torchs_grad_norm_and_clips():
    model = make_model()
    reference = copy.deepcopy(model)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                           clip_grad=dict(max_norm=0.1, norm_type=2))
    batch = batches(1)[0]
    loss_of(model, batch).backward()
    wrapper.step()
    loss_of(reference, batch).backward()
    expected = nn.utils.clip_grad_norm_(reference.parameters(), max_norm=0.1, norm_type=2)
    assert expected > 0.1  # the test clips for real
    assert isinstance(wrapper.log_vars['grad_norm'], torch.Tensor)
    torch.testing.assert_close(wrapper.log_vars['grad_norm'], expected)
    clipped = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    torch.testing.assert_close(clipped, torch.tensor(0.1), rtol=1e-4, atol=1e-6)
    torch.optim.SGD(reference.parameters(), lr=0.1).step()
    assert_same_params(model, reference)


def test_clip_by_value_clamps_every_gradient_and_records_nothing():
    model = make_model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                           clip_grad=dict(type='value', clip_value=0.01))
    loss_of(model, batches(1)[0]).backward()
    raw = [p.grad.clone() for p in model.parameters()]
    wrapper.step()
    assert any(g.abs().max() > 0.01 for g in raw)
    for g, p in zip(raw, model.parameters()):
        assert torch.equal(p.grad, g.clamp(-0.01, 0.01))
    assert wrapper.log_vars == {}


def test_the_grad_norm_is_kept_from_the_latest_update_only():
    model = make_model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2,
                           clip_grad=dict(max_norm=1.0))
    data = batches(3)
    wrapper.update_params(loss_of(model, data[0]))
    assert wrapper.log_vars == {}
    wrapper.update_params(loss_of(model, data[1]))
    first = wrapper.log_vars['grad_norm']
    wrapper.update_params(loss_of(model, data[2]))  # accumulating: nothing new yet
    assert wrapper.log_vars['grad_norm'] is first


def test_the_clip_config_of_the_caller_is_not_changed():
    clip_grad = dict(type='value', clip_value=1.0)
    OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1), clip_grad=clip_grad)
    assert clip_grad == dict(type='value', clip_value=1.0)


@pytest.mark.parametrize('clip_grad, error, match', [
    ([1.0], TypeError, r'clip_grad must be None or a dict .* but got list'),
    (dict(max_nrom=1.0), ValueError, r"unknown key 'max_nrom'. Did you mean 'max_norm'\?"),
    (dict(clip_value=1.0), ValueError, r"'clip_value' belongs to type='value'"),
    (dict(type='nrom', max_norm=1.0), ValueError,
     r"clip_grad type must be one of 'norm', 'value', but got 'nrom'. Did you mean 'norm'"),
    ({}, ValueError, r"type='norm' needs 'max_norm', e.g. dict\(max_norm=1.0\)"),
    (dict(type='value'), ValueError, r"needs 'clip_value', e.g. dict\(type='value'"),
    (dict(max_norm=-1.0), ValueError, r'max_norm must be a positive number, but got -1.0'),
    (dict(max_norm='1'), ValueError, r"max_norm must be a positive number, but got '1'"),
    (dict(max_norm=1.0, norm_type='l2'), ValueError, r"norm_type must be a positive number "
                                                    r"or 'inf', but got 'l2'"),
    (dict(max_norm=1.0, foreach=1), TypeError, r'foreach must be a bool, but got 1'),
])
def test_a_bad_clip_config_is_a_clear_error(clip_grad, error, match):
    with pytest.raises(error, match=match):
        OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1), clip_grad=clip_grad)


# -- the optimizer's hyper-parameters and state --------------------------------------
def test_get_lr_and_get_momentum_read_sgd_groups():
    model = make_model()
    optimizer = torch.optim.SGD([{'params': model[0].parameters(), 'lr': 0.5},
                                 {'params': model[2].parameters()}], lr=0.1, momentum=0.9)
    wrapper = OptimWrapper(optimizer)
    # Several groups: MMEngine's base group (the optimizer's defaults) is listed too.
    assert wrapper.get_lr() == {'base_lr': [0.1], 'lr': [0.5, 0.1]}
    assert wrapper.get_momentum() == {'momentum': [0.9, 0.9]}
    assert wrapper.param_groups[:2] == optimizer.param_groups
    assert wrapper.param_groups[2] is wrapper.base_param_settings
    assert wrapper.defaults is optimizer.defaults
    single = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    assert single.param_groups is single.optimizer.param_groups


def test_get_momentum_reads_adams_first_beta_and_zero_without_momentum():
    model = make_model()
    adam = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99)))
    assert adam.get_lr() == {'lr': [1e-3]}
    assert adam.get_momentum() == {'momentum': [0.8]}
    adagrad = OptimWrapper(torch.optim.Adagrad(model.parameters(), lr=1e-2))
    assert adagrad.get_momentum() == {'momentum': [0]}


def test_state_dict_round_trip_resumes_the_same_trajectory():
    model = make_model()
    wrapper = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-2))
    data = batches(3)
    wrapper.update_params(loss_of(model, data[0]))
    resumed_model = copy.deepcopy(model)
    resumed = OptimWrapper(torch.optim.Adam(resumed_model.parameters(), lr=1e-2))
    # A deep copy, as saving and loading a checkpoint makes (load_state_dict keeps the
    # very tensors it is given when their dtype and device already fit).
    resumed.load_state_dict(copy.deepcopy(wrapper.state_dict()))
    for batch in data[1:]:
        wrapper.update_params(loss_of(model, batch))
        resumed.update_params(loss_of(resumed_model, batch))
    assert_same_params(model, resumed_model, rtol=0, atol=0)


def test_repr_names_the_wrapper_its_settings_and_the_optimizer():
    wrapper = OptimWrapper(torch.optim.SGD(make_model().parameters(), lr=0.1),
                           accumulative_counts=2, clip_grad=dict(max_norm=1.0))
    text = repr(wrapper)
    assert text.startswith("OptimWrapper(accumulative_counts=2, clip_grad={'type': 'norm', "
                           "'max_norm': 1.0}")
    assert 'SGD (' in text


# -- AmpOptimWrapper ----------------------------------------------------------------
def test_bf16_on_cpu_runs_under_autocast_and_tracks_float32():
    model = make_model()
    reference = copy.deepcopy(model)
    wrapper = AmpOptimWrapper(dtype='bfloat16',
                              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    assert wrapper.cast_dtype == torch.bfloat16 and not wrapper.loss_scaler.is_enabled()
    for batch in batches(3):
        with wrapper.optim_context(model):
            out = model(batch[0])
        assert out.dtype == torch.bfloat16
        wrapper.update_params((out.float() - batch[1]).pow(2).mean())
        loss_of(reference, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert model(batches(1)[0][0]).dtype == torch.float32  # autocast ended with the context
    assert_same_params(model, reference, rtol=0.05, atol=0.02)


def test_dtype_defaults_to_bf16_for_cpu_parameters():
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))
    assert wrapper.cast_dtype == torch.bfloat16
    explicit = AmpOptimWrapper(dtype=torch.bfloat16, optimizer=wrapper.optimizer)
    assert explicit.cast_dtype == torch.bfloat16


@pytest.mark.skipif(not amp_optim_wrapper._fp16_autocast_works('cpu'),
                    reason='this torch has no float16 CPU autocast with a CPU GradScaler')
def test_fp16_on_cpu_works_with_a_grad_scaler_where_torch_supports_it():
    model = make_model()
    reference = copy.deepcopy(model)
    # A scale that cannot overflow float16 here, so no step is skipped.
    wrapper = AmpOptimWrapper(dtype='float16', loss_scale=dict(init_scale=1024.0),
                              clip_grad=dict(max_norm=1e9),
                              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    assert wrapper.loss_scaler.is_enabled() and wrapper.loss_scaler.get_scale() == 1024.0
    for batch in batches(3):
        with wrapper.optim_context(model):
            out = model(batch[0])
        assert out.dtype == torch.float16
        loss = (out.float() - batch[1]).pow(2).mean()
        wrapper.backward(wrapper.scale_loss(loss))
        wrapper.step()
        # Unscaled before clipping: the norm is in true units, not 1024 times larger.
        expected = torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
        torch.testing.assert_close(wrapper.log_vars['grad_norm'], expected)
        wrapper.zero_grad()
        loss_of(reference, batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert_same_params(model, reference, rtol=0.01, atol=0.01)


def test_fp16_where_torch_cannot_autocast_it_says_to_use_bf16(monkeypatch):
    monkeypatch.setattr(amp_optim_wrapper, '_fp16_autocast_works', lambda device: False)
    with pytest.raises(ValueError, match=r"float16 autocast with a GradScaler needs CUDA.*"
                                         r"bfloat16 works on the CPU.*dtype='bfloat16'"):
        AmpOptimWrapper(dtype=torch.float16,
                        optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))


def test_amp_state_dict_round_trip_restores_the_scaler():
    model = make_model()
    wrapper = AmpOptimWrapper(dtype='float16', loss_scale=dict(init_scale=1024.0),
                              optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))
    with wrapper.optim_context(model):
        loss = loss_of(model, batches(1)[0])
    wrapper.update_params(loss * float('inf'))  # an overflow: skipped, the scale backs off
    assert wrapper.loss_scaler.get_scale() == 512.0
    wrapper.update_params(loss_of(model, batches(1)[0]))
    state = wrapper.state_dict()
    assert state['loss_scaler']['scale'] == 512.0 and state['loss_scaler']['_growth_tracker'] == 1
    resumed = AmpOptimWrapper(dtype='float16',
                              optimizer=torch.optim.Adam(model.parameters(), lr=1e-2))
    resumed.load_state_dict(state)
    assert 'loss_scaler' in state  # the caller's dict is left whole
    assert resumed.loss_scaler.state_dict() == state['loss_scaler']
    assert resumed.optimizer.state_dict()['state'].keys() == state['state'].keys()


def test_bf16_state_dict_has_an_empty_loss_scaler_entry():
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))
    state = wrapper.state_dict()
    assert state['loss_scaler'] == {}
    wrapper.load_state_dict(state)


def test_a_static_loss_scale_never_changes():
    model = make_model()
    wrapper = AmpOptimWrapper(dtype='float16', loss_scale=512.0,
                              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = copy.deepcopy(model)
    wrapper.update_params(loss_of(model, batches(1)[0]) * float('inf'))
    assert_same_params(model, before, rtol=0, atol=0)  # the overflowing step was skipped
    assert wrapper.loss_scaler.get_scale() == 512.0
    for batch in batches(3):
        wrapper.update_params(loss_of(model, batch))
    assert wrapper.loss_scaler.get_scale() == 512.0


def test_a_dict_loss_scale_configures_the_grad_scaler():
    model = make_model()
    wrapper = AmpOptimWrapper(dtype='float16',
                              loss_scale=dict(init_scale=128.0, growth_interval=1),
                              optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    wrapper.update_params(loss_of(model, batches(1)[0]))
    assert wrapper.loss_scaler.get_scale() == 256.0


def test_bf16_with_an_explicit_loss_scale_still_scales():
    wrapper = AmpOptimWrapper(dtype='bfloat16', loss_scale=64.0,
                              optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))
    assert wrapper.loss_scaler.is_enabled() and wrapper.loss_scaler.get_scale() == 64.0


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(dtype='fp16'), ValueError, r"dtype must be one of 'bfloat16', 'float16'.*'fp16'"),
    (dict(dtype='bfloat'), ValueError, r"Did you mean 'bfloat16'"),
    (dict(dtype=torch.float32), ValueError, r'but got torch.float32'),
    (dict(loss_scale='dynmic'), ValueError, r"Did you mean 'dynamic'"),
    (dict(loss_scale=-2.0), ValueError, r'static loss_scale must be positive'),
    (dict(loss_scale=[512]), TypeError, r'loss_scale must be .* but got list'),
    (dict(loss_scale=dict(init_scal=8.0)), ValueError,
     r"unknown GradScaler argument 'init_scal'. Did you mean 'init_scale'"),
])
def test_a_bad_amp_config_is_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        AmpOptimWrapper(optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1),
                        **kwargs)


def test_amp_on_a_device_without_autocast_is_a_clear_error():
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match=r"no autocast for the device type 'meta' of "
                                           r'Linear'):
        with wrapper.optim_context(nn.Linear(2, 2, device='meta')):
            pass


def test_amp_wrapper_repr_shows_dtype_and_scaling():
    wrapper = AmpOptimWrapper(loss_scale=8.0,
                              optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1))
    assert 'cast_dtype=torch.bfloat16, loss scaling: static' in repr(wrapper)


@pytest.mark.cuda
def test_fp16_is_the_default_on_cuda_and_scales_dynamically():
    model = make_model().cuda()
    wrapper = AmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.cast_dtype == torch.float16 and wrapper.loss_scaler.is_enabled()
    x, y = (t.cuda() for t in batches(1)[0])
    with wrapper.optim_context(model):
        out = model(x)
    assert out.dtype == torch.float16
    wrapper.update_params((out.float() - y).pow(2).mean())

