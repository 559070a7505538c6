"""Spec for the pure initializers of :mod:`fengine.func` (init.py, sample.py, rng.py, tree.py).

Statistics are checked on ~1e6 draws with tolerances of six standard errors, so a
correct sampler fails with probability far below one in a million; the seeds are
fixed anyway, so every run sees the same draws.
"""
from __future__ import annotations

import hashlib
import math

import pytest
import torch

from fengine.func import (Distribution, LayerInit, TensorInit, constant, fan_in_and_fan_out,
                          fold_in, kaiming, normal, sample, trunc_normal, uniform, xavier)

N = 1_000_000
BIG = (1000, 1000)
SIGMAS = 6.0


# ----------------------------------------------------------------------------- helpers
def assert_moments(x: torch.Tensor, mean: float, std: float, slack: float = 0.0) -> None:
    """Sample mean and std of ``x`` lie within six standard errors of ``mean`` and ``std``.

    The standard error of the sample std is taken as ``std / sqrt(2n)``, exact for a
    normal and an over-estimate for the lighter-tailed uniform and truncated normal.
    ``slack`` widens both bounds (rounding of low-precision dtypes).
    """
    x = x.detach().double().flatten()
    n = x.numel()
    got_mean, got_std = x.mean().item(), x.std().item()
    tol_mean = SIGMAS * std / math.sqrt(n) + slack
    tol_std = SIGMAS * std / math.sqrt(2 * n) + slack
    assert abs(got_mean - mean) <= tol_mean, (
        f'sample mean {got_mean:.6g} is not within {tol_mean:.3g} of {mean:.6g} (n={n})')
    assert abs(got_std - std) <= tol_std, (
        f'sample std {got_std:.6g} is not within {tol_std:.3g} of {std:.6g} (n={n})')


def _phi(x: float) -> float:
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return (1 + math.erf(x / math.sqrt(2))) / 2


def truncated_normal_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and std of N(mean, std^2) truncated to [a, b], from the textbook formulas."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    z = _cdf(beta) - _cdf(alpha)
    shift = (_phi(alpha) - _phi(beta)) / z
    var = std**2 * (1 + (alpha * _phi(alpha) - beta * _phi(beta)) / z - shift**2)
    return mean + std * shift, math.sqrt(var)


def gain(nonlinearity: str, a: float = 0.0) -> float:
    """The gains of ``torch.nn.init.calculate_gain``, written out by hand."""
    return {
        'linear': 1.0,
        'conv2d': 1.0,
        'sigmoid': 1.0,
        'tanh': 5.0 / 3,
        'relu': math.sqrt(2.0),
        'leaky_relu': math.sqrt(2.0 / (1 + a**2)),
        'selu': 3.0 / 4,
    }[nonlinearity]


def implied_std(dist: Distribution) -> float:
    """The std of a normal or a symmetric uniform ``Distribution``."""
    if dist.kind == 'normal':
        assert dist.args[0] == 0.0
        return dist.args[1]
    assert dist.kind == 'uniform'
    low, high = dist.args
    assert low == pytest.approx(-high)
    return (high - low) / math.sqrt(12)


# ------------------------------------------------------------------ plain distributions
def test_constant_fills_every_element_with_exactly_the_value():
    w = constant(0.37)(BIG, seed=0, path='w')
    assert w.shape == BIG and w.dtype == torch.float32
    assert torch.equal(w, torch.full(BIG, 0.37))


def test_constant_keeps_the_value_exactly_in_float64():
    w = constant(0.1)((3, 4), seed=0, path='w', dtype=torch.float64)
    assert w.dtype == torch.float64
    assert (w == 0.1).all()


@pytest.mark.parametrize('mean, std', [(0.0, 1.0), (0.5, 0.02), (-3.0, 2.5)])
def test_normal_draws_have_the_requested_mean_and_std(mean, std):
    w = normal(mean, std)(BIG, seed=0, path='fc.weight')
    assert_moments(w, mean, std)


def test_normal_with_std_zero_is_the_mean_everywhere():
    w = normal(1.5, 0.0)((10, 10), seed=0, path='w')
    assert (w == 1.5).all()


@pytest.mark.parametrize('a, b', [(0.0, 1.0), (-2.0, 3.0), (-0.01, 0.01)])
def test_uniform_draws_lie_in_a_to_b_with_the_uniform_moments(a, b):
    w = uniform(a, b)(BIG, seed=0, path='fc.weight')
    assert w.min().item() >= a
    assert w.max().item() < b
    assert_moments(w, (a + b) / 2, (b - a) / math.sqrt(12))
    # The draws fill the interval: both ends are approached to within 1e-4 of its width.
    assert w.min().item() - a < 1e-4 * (b - a)
    assert b - w.max().item() < 1e-4 * (b - a)


def test_uniform_with_equal_bounds_is_that_value_everywhere():
    w = uniform(0.25, 0.25)((10, 10), seed=0, path='w')
    assert (w == 0.25).all()


@pytest.mark.parametrize('mean, std, a, b', [
    (0.0, 1.0, -2.0, 2.0),     # torch.nn.init.trunc_normal_'s defaults
    (0.0, 0.02, -0.04, 0.04),  # ViT-style: two std each side
    (0.5, 1.0, -1.0, 3.0),     # asymmetric truncation shifts the mean
    (0.0, 1.0, 0.0, 5.0),      # one-sided: a half-normal
])
def test_trunc_normal_lies_in_a_to_b_with_the_truncated_normal_moments(mean, std, a, b):
    w = trunc_normal(mean, std, a, b)(BIG, seed=0, path='fc.weight')
    assert w.min().item() >= a
    assert w.max().item() <= b
    want_mean, want_std = truncated_normal_moments(mean, std, a, b)
    assert_moments(w, want_mean, want_std)


def test_trunc_normal_with_wide_bounds_is_the_plain_normal():
    w = trunc_normal(1.0, 0.5, -100.0, 100.0)(BIG, seed=0, path='w')
    assert_moments(w, 1.0, 0.5)


def test_sample_draws_a_distribution_given_as_data():
    w = sample(Distribution('normal', (2.0, 3.0)), BIG, key=fold_in(0, 'w'))
    assert_moments(w, 2.0, 3.0)
    w = sample(Distribution('uniform', (-1.0, 1.0)), BIG, key=1)
    assert_moments(w, 0.0, 2 / math.sqrt(12))
    assert torch.equal(sample(Distribution('constant', (7.0,)), (2, 3), key=5),
                       torch.full((2, 3), 7.0))


def test_a_tensor_init_draws_exactly_what_sample_draws_with_the_folded_key():
    init = trunc_normal(0.0, 0.02)
    w = init((64, 32), seed=3, path='head.fc.weight')
    same = sample(init.distribution((64, 32)), (64, 32), key=fold_in(3, 'head.fc.weight'))
    assert torch.equal(w, same)


def test_sample_rejects_an_unknown_distribution_kind_and_lists_the_known_ones():
    with pytest.raises(ValueError, match="'gaussian'") as exc:
        sample(Distribution('gaussian', (0.0, 1.0)), (4,), key=0)
    for kind in ('constant', 'normal', 'uniform', 'trunc_normal'):
        assert kind in str(exc.value)


def test_sample_rejects_random_draws_into_an_integer_dtype():
    with pytest.raises(TypeError, match='int64'):
        normal()((4, 4), seed=0, path='w', dtype=torch.int64)


# ------------------------------------------------------------------------------- fans
FAN_SHAPES = {
    'Linear (out, in)': (10, 20),
    'Conv1d (out, in, k)': (8, 4, 3),
    'Conv2d (out, in, kh, kw)': (8, 4, 3, 5),
    'Conv3d (out, in, kd, kh, kw)': (8, 4, 3, 5, 7),
    'grouped Conv2d (out, in/groups, kh, kw)': (64, 1, 3, 3),
}


@pytest.mark.parametrize('shape', FAN_SHAPES.values(), ids=FAN_SHAPES.keys())
def test_fan_in_and_fan_out_equal_torch_nn_init(shape):
    receptive = math.prod(shape[2:])
    assert fan_in_and_fan_out(shape) == (shape[1] * receptive, shape[0] * receptive)
    want = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape, device='meta'))
    assert fan_in_and_fan_out(shape) == want
    assert fan_in_and_fan_out(torch.Size(shape)) == want


@pytest.mark.parametrize('shape', [(5,), ()], ids=['1-D', '0-D'])
def test_fan_of_a_shape_with_fewer_than_two_dims_raises_naming_the_parameter(shape):
    with pytest.raises(ValueError, match=r"'fc\.bias'"):
        fan_in_and_fan_out(shape, 'fc.bias')


@pytest.mark.parametrize('init', [kaiming(), xavier()], ids=['kaiming', 'xavier'])
def test_a_fan_scaled_init_on_a_1d_parameter_raises_naming_its_path(init):
    with pytest.raises(ValueError, match=r"'backbone\.bn\.bias'") as exc:
        init((16,), seed=0, path='backbone.bn.bias')
    assert '(16,)' in str(exc.value)


# ------------------------------------------------------------------- kaiming and xavier
KAIMING_CASES = [
    # (kwargs, gain, which fan)
    (dict(mode='fan_in', nonlinearity='relu'), gain('relu'), 'in'),
    (dict(mode='fan_out', nonlinearity='relu'), gain('relu'), 'out'),
    (dict(mode='fan_in', nonlinearity='leaky_relu', a=0.2), gain('leaky_relu', 0.2), 'in'),
    (dict(mode='fan_out', nonlinearity='leaky_relu', a=0.2), gain('leaky_relu', 0.2), 'out'),
    (dict(mode='fan_in', nonlinearity='leaky_relu', a=math.sqrt(5)),
     gain('leaky_relu', math.sqrt(5)), 'in'),  # nn.Linear's default init
    (dict(mode='fan_in', nonlinearity='linear'), 1.0, 'in'),
    (dict(mode='fan_out', nonlinearity='linear'), 1.0, 'out'),
    (dict(mode='fan_in', nonlinearity='tanh'), gain('tanh'), 'in'),
    (dict(mode='fan_out', nonlinearity='selu'), gain('selu'), 'out'),
    (dict(mode='fan_in', nonlinearity='conv2d'), 1.0, 'in'),
]
KAIMING_IDS = [','.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                        for k, v in case[0].items()) for case in KAIMING_CASES]


# Linear, Conv1d, Conv2d and Conv3d weights.
SCALE_SHAPES = [(64, 32), (64, 32, 3), (64, 32, 3, 3), (16, 8, 3, 3, 5)]


@pytest.mark.parametrize('distribution', ['normal', 'uniform'])
@pytest.mark.parametrize('kwargs, g, fan', KAIMING_CASES, ids=KAIMING_IDS)
def test_kaiming_scale_matches_torch_nn_init_formula(kwargs, g, fan, distribution):
    init = kaiming(distribution=distribution, **kwargs)
    for shape in SCALE_SHAPES:
        receptive = math.prod(shape[2:])
        fan_value = (shape[1] if fan == 'in' else shape[0]) * receptive
        dist = init.distribution(shape)
        if distribution == 'normal':
            std = g / math.sqrt(fan_value)
            assert dist == ('normal', (0.0, pytest.approx(std, rel=1e-12))), shape
        else:
            bound = g * math.sqrt(3.0 / fan_value)
            assert dist == ('uniform', pytest.approx((-bound, bound), rel=1e-12)), shape


def test_kaiming_defaults_are_mmengines_fan_out_relu_normal():
    dist = kaiming().distribution((64, 32, 3, 3))
    assert dist == Distribution('normal', (0.0, pytest.approx(math.sqrt(2 / (64 * 9)))))


@pytest.mark.parametrize('distribution', ['normal', 'uniform'])
@pytest.mark.parametrize('gain_', [1.0, 2.0, gain('relu')], ids=['gain=1', 'gain=2', 'gain=relu'])
def test_xavier_scale_matches_torch_nn_init_formula(gain_, distribution):
    init = xavier(gain_, distribution)
    for shape in SCALE_SHAPES:
        fan_sum = (shape[0] + shape[1]) * math.prod(shape[2:])
        dist = init.distribution(shape)
        if distribution == 'normal':
            std = gain_ * math.sqrt(2.0 / fan_sum)
            assert dist == ('normal', (0.0, pytest.approx(std, rel=1e-12))), shape
        else:
            bound = gain_ * math.sqrt(6.0 / fan_sum)
            assert dist == ('uniform', pytest.approx((-bound, bound), rel=1e-12)), shape


BIG_FAN_CASES = {
    'kaiming normal fan_in relu, conv2d': (
        kaiming(mode='fan_in'), (1024, 64, 4, 4), gain('relu') / math.sqrt(64 * 16)),
    'kaiming uniform fan_out relu, linear': (
        kaiming(mode='fan_out', distribution='uniform'), BIG, gain('relu') / math.sqrt(1000)),
    'kaiming normal fan_out leaky_relu a=0.1, conv1d': (
        kaiming(a=0.1, nonlinearity='leaky_relu'), (500, 200, 10),
        gain('leaky_relu', 0.1) / math.sqrt(500 * 10)),
    'kaiming uniform fan_in linear, conv3d': (
        kaiming(mode='fan_in', nonlinearity='linear', distribution='uniform'),
        (128, 64, 5, 5, 5), 1.0 / math.sqrt(64 * 125)),
    'xavier normal, linear': (xavier(), (2000, 500), math.sqrt(2.0 / 2500)),
    'xavier uniform gain=3, conv2d': (
        xavier(3.0, 'uniform'), (256, 128, 5, 5), 3.0 * math.sqrt(2.0 / (384 * 25))),
}


@pytest.mark.parametrize('init, shape, std', BIG_FAN_CASES.values(), ids=BIG_FAN_CASES.keys())
def test_fan_scaled_draws_have_the_formula_std_on_a_big_tensor(init, shape, std):
    assert implied_std(init.distribution(shape)) == pytest.approx(std, rel=1e-12)
    w = init(shape, seed=0, path='layer.weight')
    assert w.shape == shape
    assert_moments(w, 0.0, std)


def test_kaiming_draws_have_the_same_std_as_torch_nn_init_kaiming_normal():
    torch.manual_seed(0)
    ref = torch.nn.init.kaiming_normal_(torch.empty(BIG), a=0.3, mode='fan_in',
                                        nonlinearity='leaky_relu').double()
    w = kaiming(a=0.3, mode='fan_in', nonlinearity='leaky_relu')(BIG, seed=0, path='w').double()
    # Each sample std has standard error std / sqrt(2n); their difference, std / sqrt(n).
    tol = SIGMAS * ref.std().item() / math.sqrt(N)
    assert abs(w.std().item() - ref.std().item()) <= tol
    assert abs(w.mean().item() - ref.mean().item()) <= SIGMAS * ref.std().item() * math.sqrt(2 / N)


# ------------------------------------------------------------- determinism, path keying
ALL_INITS = {
    'constant': constant(0.5),
    'normal': normal(0.1, 2.0),
    'uniform': uniform(-1.0, 2.0),
    'trunc_normal': trunc_normal(0.0, 1.0, -1.5, 0.5),
    'xavier normal': xavier(),
    'xavier uniform': xavier(distribution='uniform'),
    'kaiming normal': kaiming(),
    'kaiming uniform': kaiming(mode='fan_in', distribution='uniform'),
}
RANDOM_INITS = {k: v for k, v in ALL_INITS.items() if k != 'constant'}


@pytest.mark.parametrize('init', ALL_INITS.values(), ids=ALL_INITS.keys())
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_same_seed_path_shape_dtype_and_device_give_bit_identical_tensors(init, dtype):
    one = init((32, 16, 3), seed=7, path='block.conv.weight', dtype=dtype)
    two = init((32, 16, 3), seed=7, path='block.conv.weight', dtype=dtype)
    assert one.dtype == dtype
    assert torch.equal(one, two)
    assert one.data_ptr() != two.data_ptr()


@pytest.mark.parametrize('init', RANDOM_INITS.values(), ids=RANDOM_INITS.keys())
def test_a_different_path_gives_different_values(init):
    one = init((32, 16), seed=0, path='a.weight')
    two = init((32, 16), seed=0, path='b.weight')
    assert not torch.equal(one, two)
    # Not merely shifted or permuted: the two draws are nearly uncorrelated.
    corr = torch.corrcoef(torch.stack([one.flatten(), two.flatten()]))[0, 1].item()
    assert abs(corr) < 0.2


@pytest.mark.parametrize('init', RANDOM_INITS.values(), ids=RANDOM_INITS.keys())
def test_a_different_seed_gives_different_values(init):
    one = init((32, 16), seed=0, path='a.weight')
    two = init((32, 16), seed=1, path='a.weight')
    assert not torch.equal(one, two)


def test_paths_that_differ_only_in_how_seed_and_path_are_joined_get_different_streams():
    # "1" + "2.w" and "12" + ".w" must not collide.
    assert fold_in(1, '2.w') != fold_in(12, '.w')
    one = normal()((8, 8), seed=1, path='2.w')
    two = normal()((8, 8), seed=12, path='.w')
    assert not torch.equal(one, two)


@pytest.mark.parametrize('init', RANDOM_INITS.values(), ids=RANDOM_INITS.keys())
def test_values_do_not_depend_on_the_global_rng(init):
    torch.manual_seed(1)
    one = init((32, 16), seed=0, path='fc.weight')
    torch.manual_seed(12345)
    torch.rand(100)
    two = init((32, 16), seed=0, path='fc.weight')
    assert torch.equal(one, two)


@pytest.mark.parametrize('init', RANDOM_INITS.values(), ids=RANDOM_INITS.keys())
def test_drawing_does_not_advance_the_global_rng(init):
    before = torch.get_rng_state()
    init((32, 16), seed=0, path='fc.weight')
    assert torch.equal(torch.get_rng_state(), before)


def test_a_small_tensor_is_not_a_prefix_of_a_bigger_one_drawn_for_another_path():
    # Sanity for path keying: two paths never share a stream, whatever the shapes.
    small = normal()((4,), seed=0, path='x')
    big = normal()((400,), seed=0, path='y')
    assert not torch.equal(small, big[:4])


def fold_in_by_hand(seed: int, path: str) -> int:
    """fold_in's definition: blake2b-64 of ``f'{seed}\\0{path}'``, little-endian, 63 bits."""
    digest = hashlib.blake2b(f'{seed}\x00{path}'.encode('utf-8'), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2**63 - 1)


def test_fold_in_is_stable_across_processes_and_versions():
    # Computed once from the blake2b definition; a change here changes every
    # checkpoint-free reproduction of an initialization.
    assert fold_in(0, 'conv.weight') == 2088250360153563136
    assert fold_in(42, 'backbone.layer1.0.conv1.weight') == 8350892220661874208


@pytest.mark.parametrize('seed, path', [(0, 'conv.weight'), (2**40 + 3, 'a.b.c'), (-5, ''),
                                        (7, 'ünïcode.wéight')])
def test_fold_in_follows_its_blake2b_definition(seed, path):
    key = fold_in(seed, path)
    assert key == fold_in_by_hand(seed, path)
    assert 0 <= key < 2**63


@pytest.mark.parametrize('seed', [1.0, '0', True, None])
def test_fold_in_rejects_a_seed_that_is_not_an_int(seed):
    with pytest.raises(TypeError, match='seed must be an int'):
        fold_in(seed, 'w')


# ---------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize('init', RANDOM_INITS.values(), ids=RANDOM_INITS.keys())
def test_float64_parameters_are_drawn_in_float64(init):
    w = init((256, 256), seed=0, path='fc.weight', dtype=torch.float64)
    assert w.dtype == torch.float64
    # float32 draws have at most 24 significant bits; float64 draws use the full mantissa.
    assert not torch.equal(w, w.float().double())


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('name, init, mean, std', [
    ('normal', normal(0.5, 2.0), 0.5, 2.0),
    ('uniform', uniform(-1.0, 3.0), 1.0, 4 / math.sqrt(12)),
    ('trunc_normal', trunc_normal(0.5, 1.0, -1.0, 3.0),
     *truncated_normal_moments(0.5, 1.0, -1.0, 3.0)),
    ('kaiming', kaiming(mode='fan_in'), 0.0, math.sqrt(2 / 1000)),
])
def test_low_precision_parameters_have_their_dtype_and_sane_statistics(name, init, mean, std,
                                                                       dtype):
    w = init(BIG, seed=0, path='fc.weight', dtype=dtype)
    assert w.dtype == dtype
    assert torch.isfinite(w).all()
    # Rounding to the dtype moves each element by at most half an ulp of its magnitude.
    eps = torch.finfo(dtype).eps
    assert_moments(w, mean, std, slack=eps * (abs(mean) + std))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_trunc_normal_stays_within_a_and_b(dtype):
    # -0.3 and 0.7 are not representable in bf16/fp16: a draw clamped to -0.3 in float32
    # and then rounded to the nearest representable value could land outside [a, b].
    w = trunc_normal(0.0, 1.0, -0.3, 0.7)((500, 500), seed=0, path='w', dtype=dtype)
    assert -0.3 <= w.min().item() and w.max().item() <= 0.7


@pytest.mark.parametrize('init', ALL_INITS.values(), ids=ALL_INITS.keys())
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_on_the_meta_device_the_result_is_a_meta_tensor_of_the_right_shape(init, dtype):
    w = init((64, 32, 3, 3), seed=0, path='conv.weight', dtype=dtype, device='meta')
    assert w.is_meta
    assert w.shape == (64, 32, 3, 3)
    assert w.dtype == dtype


@pytest.mark.parametrize('init', ALL_INITS.values(), ids=ALL_INITS.keys())
@pytest.mark.parametrize('shape', [(0, 8), (8, 0), (0, 0), (0, 8, 3, 3)])
def test_zero_element_tensors_come_back_empty_with_their_shape(init, shape):
    w = init(shape, seed=0, path='empty.weight')
    assert w.shape == shape
    assert w.numel() == 0
    assert w.dtype == torch.float32


# ---------------------------------------------------------------------- bad arguments
def test_an_unknown_distribution_is_rejected_naming_it_and_the_choices():
    for factory in (xavier, kaiming):
        with pytest.raises(ValueError, match="'gaussian'") as exc:
            factory(distribution='gaussian')
        msg = str(exc.value)
        assert 'distribution' in msg and "'normal'" in msg and "'uniform'" in msg


def test_an_unknown_mode_is_rejected_naming_it_and_the_choices():
    with pytest.raises(ValueError, match="'fan_avg'") as exc:
        kaiming(mode='fan_avg')
    msg = str(exc.value)
    assert 'mode' in msg and "'fan_in'" in msg and "'fan_out'" in msg


def test_an_unknown_nonlinearity_is_rejected_listing_the_valid_names_and_a_close_match():
    with pytest.raises(ValueError, match="'relu6'") as exc:
        kaiming(nonlinearity='relu6')
    msg = str(exc.value)
    for name in ('linear', 'conv2d', 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'selu'):
        assert f"'{name}'" in msg
    assert "Did you mean 'relu'" in msg


def test_every_nonlinearity_torch_knows_is_accepted():
    for name in ('linear', 'conv1d', 'conv2d', 'conv3d', 'conv_transpose1d',
                 'conv_transpose2d', 'conv_transpose3d', 'sigmoid', 'tanh', 'relu',
                 'leaky_relu', 'selu'):
        dist = kaiming(nonlinearity=name, mode='fan_in').distribution((4, 9))
        # kaiming's default a=0 is torch.nn.init.kaiming_normal_'s: param=0, not None.
        assert dist.args[1] == pytest.approx(torch.nn.init.calculate_gain(name, 0) / 3)


@pytest.mark.parametrize('factory', [normal, trunc_normal], ids=['normal', 'trunc_normal'])
def test_a_negative_std_is_rejected_naming_the_value(factory):
    with pytest.raises(ValueError, match='std must be .*-0.5'):
        factory(std=-0.5)


def test_trunc_normal_rejects_a_zero_std():
    with pytest.raises(ValueError, match='std must be > 0'):
        trunc_normal(std=0.0)


def test_uniform_rejects_a_greater_than_b_naming_both():
    with pytest.raises(ValueError, match='a=2.0, b=1.0'):
        uniform(2.0, 1.0)


@pytest.mark.parametrize('a, b', [(1.0, 1.0), (2.0, -2.0)])
def test_trunc_normal_rejects_a_not_below_b_naming_both(a, b):
    with pytest.raises(ValueError, match=f'a={a}, b={b}'):
        trunc_normal(a=a, b=b)


@pytest.mark.parametrize('call, what', [
    (lambda: normal(mean='0'), 'mean'),
    (lambda: normal(std=None), 'std'),
    (lambda: trunc_normal(mean=[0.0]), 'mean'),
    (lambda: uniform(a='x'), 'a'),
    (lambda: constant('1'), 'val'),
    (lambda: constant(True), 'val'),
    (lambda: xavier(gain='2'), 'gain'),
    (lambda: kaiming(a=None), 'a'),
], ids=['normal mean', 'normal std', 'trunc_normal mean', 'uniform a', 'constant str',
        'constant bool', 'xavier gain', 'kaiming a'])
def test_a_non_number_argument_raises_type_error_naming_it(call, what):
    with pytest.raises(TypeError, match=f'^{what} must be a number'):
        call()


def test_integer_arguments_are_accepted_as_numbers():
    assert normal(0, 1).distribution((2, 2)) == Distribution('normal', (0, 1))
    assert uniform(-1, 1).distribution((2, 2)) == Distribution('uniform', (-1, 1))


# ------------------------------------------------------------------------ TensorInit
def test_a_tensor_init_is_hashable_data_equal_to_one_built_the_same_way():
    assert kaiming(mode='fan_in') == kaiming(mode='fan_in')
    assert kaiming(mode='fan_in') != kaiming(mode='fan_out')
    assert len({normal(0, 1), normal(0, 1), uniform()}) == 2
    assert isinstance(constant(1.0), TensorInit)


def test_a_tensor_init_prints_its_kind_and_arguments():
    assert str(normal(0.0, 0.02)) == 'normal(mean=0.0, std=0.02)'
    assert str(kaiming(mode='fan_in')) == (
        'kaiming(a=0.0, mode=fan_in, nonlinearity=relu, distribution=normal)')


# ------------------------------------------------------------------------- LayerInit
@pytest.fixture
def tree():
    return {
        'fc.weight': torch.zeros(64, 32),
        'fc.bias': torch.zeros(64),
        'bn.running_mean': torch.zeros(64),
        'half.weight': torch.zeros(16, 8, 3, 3, dtype=torch.bfloat16),
    }


@pytest.fixture
def layer_init():
    return LayerInit(weight=kaiming(mode='fan_in'), bias=constant(0.5),
                     info='KaimingInit: a=0, mode=fan_in, bias=0.5')


def test_layer_init_returns_new_tensors_only_for_weight_and_bias_leaves(tree, layer_init):
    new, info = layer_init(tree, seed=0)
    assert set(new) == {'fc.weight', 'fc.bias', 'half.weight'}
    for path, value in new.items():
        assert value.shape == tree[path].shape
        assert value.dtype == tree[path].dtype
        assert value.device == tree[path].device
        assert value is not tree[path]
    assert torch.equal(new['fc.bias'], torch.full((64,), 0.5))
    assert new['fc.weight'].std().item() > 0


def test_layer_init_reports_its_info_for_every_path_it_sets(tree, layer_init):
    new, info = layer_init(tree, seed=0)
    assert info == {p: 'KaimingInit: a=0, mode=fan_in, bias=0.5' for p in new}


def test_layer_init_does_not_modify_the_input_tree(tree, layer_init):
    before = {p: t.clone() for p, t in tree.items()}
    keys = list(tree)
    layer_init(tree, seed=0)
    assert list(tree) == keys
    for path, value in tree.items():
        assert torch.equal(value, before[path]), path


def test_layer_init_draws_each_leaf_as_its_tensor_init_would(tree, layer_init):
    new, _ = layer_init(tree, seed=4)
    want = kaiming(mode='fan_in')((16, 8, 3, 3), seed=4, path='half.weight',
                                  dtype=torch.bfloat16)
    assert torch.equal(new['half.weight'], want)


def test_a_leafs_values_do_not_depend_on_the_other_leaves_in_the_tree(tree, layer_init):
    alone, _ = layer_init({'fc.weight': tree['fc.weight']}, seed=0)
    together, _ = layer_init(dict(reversed(list(tree.items()))), seed=0)
    assert torch.equal(alone['fc.weight'], together['fc.weight'])


def test_layer_init_on_the_meta_device_gives_meta_tensors(layer_init):
    tree = {'fc.weight': torch.empty(64, 32, device='meta'),
            'fc.bias': torch.empty(64, device='meta')}
    new, info = layer_init(tree, seed=0)
    assert all(t.is_meta for t in new.values())
    assert set(info) == {'fc.weight', 'fc.bias'}


def test_layer_init_fills_maps_weight_and_bias_paths_to_their_recipes(layer_init):
    fills = layer_init.fills(['a.weight', 'a.bias', 'a.running_var', 'weight'])
    assert fills == {'a.weight': layer_init.weight, 'a.bias': layer_init.bias,
                     'weight': layer_init.weight}


@pytest.mark.parametrize('recipe', [normal(0.1, 2.0), uniform(-1.0, 3.0),
                                    trunc_normal(0.0, 1.0, -0.5, 0.5), kaiming(),
                                    constant(0.25)], ids=str)
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_drawing_into_an_existing_tensor_gives_the_values_of_a_new_one(recipe, dtype):
    fresh = recipe((64, 32), seed=5, path='fc.weight', dtype=dtype)
    target = torch.empty(64, 32, dtype=dtype)
    assert recipe((64, 32), seed=5, path='fc.weight', out=target) is target
    assert torch.equal(target, fresh)
    strided = torch.empty(32, 64, dtype=dtype).t()  # not contiguous
    recipe((64, 32), seed=5, path='fc.weight', out=strided)
    assert torch.equal(strided, fresh)
