"""MMEngine's tutorials 'Parameter Scheduler' and 'OptimWrapper', and its example 'Train a GAN'.

Each test runs what a snippet of the page does, with ``fengine`` imports, tensors for
datasets and the CPU for CUDA, and checks what the page says it does. Left out: the
page's plain-PyTorch snippets (no MMEngine API in them) and its learning-rate plots.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import SGD
from torch.utils.data import DataLoader, TensorDataset

from fengine.logging import print_log
from fengine.model import BaseModel
from fengine.optim import (AmpOptimWrapper, DefaultOptimWrapperConstructor, OptimWrapper,
                           OptimWrapperDict, build_optim_wrapper, build_param_schedulers)
from fengine.optim.scheduler import MultiStepLR
from fengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from fengine.runner import Runner


# == 'Parameter Scheduler' ===================================================================
class Tiny(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x, y, mode='tensor'):
        return dict(loss=F.mse_loss(self.linear(x), y))


def tiny_loader(batches=2):
    data = torch.randn(batches * 2, 1)
    return DataLoader(TensorDataset(data, 2 * data), batch_size=2)


class LrPerEpoch:
    """A hook recording the lr each epoch trains with."""

    priority = 'NORMAL'

    def __init__(self):
        self.lrs = []

    def __getattr__(self, name):  # the other hook methods do nothing
        if name.startswith(('before_', 'after_')):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def before_train_epoch(self, runner):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def run_epochs(tmp_path, model, optim_wrapper, param_scheduler, epochs=12):
    from fengine.hooks import Hook

    recorder = type('Recorder', (LrPerEpoch, Hook), {})()
    runner = Runner(model=model, work_dir=tmp_path, train_dataloader=tiny_loader(),
                    train_cfg=dict(by_epoch=True, max_epochs=epochs),
                    optim_wrapper=optim_wrapper, param_scheduler=param_scheduler,
                    custom_hooks=[recorder], default_hooks=dict(checkpoint=None))
    runner.train()
    return recorder.lrs


def multistep_by_epoch(lr=0.01):
    # lr times 0.1 at the end of epochs 8 and 11 (the page's words)
    return [lr] * 8 + [lr * 0.1] * 3 + [lr * 0.01]


def test_a_scheduler_built_by_hand_goes_to_the_runner(tmp_path):
    model = Tiny()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    param_scheduler = MultiStepLR(optimizer, milestones=[8, 11], gamma=0.1)
    lrs = run_epochs(tmp_path, model, dict(optimizer=optimizer), param_scheduler)
    assert lrs == pytest.approx(multistep_by_epoch())


def test_a_scheduler_config_is_built_by_the_runner(tmp_path):
    param_scheduler = dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11], gamma=0.1)
    lrs = run_epochs(tmp_path, Tiny(), dict(optimizer=dict(type='SGD', lr=0.01)),
                     param_scheduler)
    assert lrs == pytest.approx(multistep_by_epoch())


def lrs_by_iteration(cfg, iterations, epoch_length=None, lr=0.01, momentum=None):
    """The lr (or momentum) each iteration uses, stepping as ParamSchedulerHook does."""
    optimizer = SGD(nn.Linear(1, 1).parameters(), lr=lr, momentum=momentum or 0.9)
    schedulers = build_param_schedulers(cfg, optimizer, epoch_length=epoch_length)
    values = []
    for iteration in range(iterations):
        group = optimizer.param_groups[0]
        values.append(group['momentum'] if momentum else group['lr'])
        for scheduler in schedulers:
            if not scheduler.by_epoch:
                scheduler.step()
        if epoch_length and (iteration + 1) % epoch_length == 0:
            for scheduler in schedulers:
                if scheduler.by_epoch:
                    scheduler.step()
    return values


def test_milestones_count_iterations_when_by_epoch_is_false():
    lrs = lrs_by_iteration(dict(type='MultiStepLR', by_epoch=False, milestones=[600, 800],
                                gamma=0.1), 1000)
    assert lrs[599] == pytest.approx(0.01) and lrs[600] == pytest.approx(0.001)
    assert lrs[799] == pytest.approx(0.001) and lrs[800] == pytest.approx(0.0001)


def test_build_iter_from_epoch_and_convert_to_iter_based_count_epochs_in_iterations():
    epoch_length = len(tiny_loader(5))
    optimizer = SGD(nn.Linear(1, 1).parameters(), lr=0.01)
    by_hand = MultiStepLR.build_iter_from_epoch(optimizer, milestones=[8, 11], gamma=0.1,
                                                epoch_length=epoch_length)
    assert by_hand.by_epoch is False
    assert by_hand.kwargs['milestones'] == [8 * epoch_length, 11 * epoch_length]
    lrs = lrs_by_iteration(dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11],
                                gamma=0.1, convert_to_iter_based=True), 12 * epoch_length,
                           epoch_length)
    assert lrs[::epoch_length] == pytest.approx(multistep_by_epoch())


def test_a_converted_cosine_changes_inside_epochs_and_agrees_at_their_ends():
    epoch_length = 4
    by_epoch = lrs_by_iteration(dict(type='CosineAnnealingLR', by_epoch=True, T_max=12),
                                12 * epoch_length, epoch_length)
    smooth = lrs_by_iteration(dict(type='CosineAnnealingLR', by_epoch=True, T_max=12,
                                   convert_to_iter_based=True), 12 * epoch_length, epoch_length)
    assert smooth[::epoch_length] == pytest.approx(by_epoch[::epoch_length])
    assert len(set(by_epoch[4:8])) == 1 and len(set(smooth[4:8])) == 4


def test_a_warmup_by_iteration_then_milestones_by_epoch():
    epoch_length = 20
    lrs = lrs_by_iteration([
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=50),
        dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11], gamma=0.1),
    ], 12 * epoch_length, epoch_length)
    assert lrs[0] == pytest.approx(0.01 * 0.001)
    assert lrs[49] == pytest.approx(0.01) and lrs[50:160] == pytest.approx([0.01] * 110)
    assert lrs[8 * epoch_length] == pytest.approx(0.001)
    assert lrs[11 * epoch_length] == pytest.approx(0.0001)


def test_a_warmup_then_a_cosine_over_the_following_800_iterations():
    lrs = lrs_by_iteration([
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
        dict(type='CosineAnnealingLR', T_max=800, by_epoch=False, begin=100, end=900),
    ], 1000)
    assert lrs[100] == pytest.approx(0.01)
    assert lrs[500] == pytest.approx(0.005)
    assert lrs[899] == pytest.approx(0.01 * (1 + math.cos(math.pi * 799 / 800)) / 2)
    assert lrs[999] == lrs[900]  # no scheduler after 900: it stays


def test_a_momentum_scheduler_is_listed_beside_the_lr_scheduler():
    cfg = [dict(type='LinearLR'),
           dict(type='LinearMomentum', start_factor=0.001, by_epoch=False, begin=0, end=1000)]
    momenta = lrs_by_iteration(cfg, 1000, momentum=0.9)
    assert momenta[0] == pytest.approx(0.9 * 0.001)
    assert momenta[999] == pytest.approx(0.9)


def test_a_generic_scheduler_of_lr_equals_the_lr_scheduler():
    generic = lrs_by_iteration([dict(type='LinearParamScheduler', param_name='lr',
                                     start_factor=0.001, by_epoch=False, begin=0, end=1000)],
                               1000)
    lr = lrs_by_iteration([dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
                                end=1000)], 1000)
    assert generic == lr


def test_a_generic_scheduler_adjusts_sgds_weight_decay():
    optimizer = SGD(nn.Linear(1, 1).parameters(), lr=0.01, weight_decay=1e-4)
    (scheduler,) = build_param_schedulers([dict(
        type='LinearParamScheduler', param_name='weight_decay', start_factor=0.001,
        by_epoch=False, begin=0, end=1000)], optimizer)
    assert optimizer.param_groups[0]['weight_decay'] == pytest.approx(1e-7)
    for _ in range(999):
        scheduler.step()
    assert optimizer.param_groups[0]['weight_decay'] == pytest.approx(1e-4)
    assert optimizer.param_groups[0]['lr'] == 0.01


# == 'OptimWrapper' ==========================================================================
def tensors():
    return [torch.zeros(10, 1, 1)] * 10, [torch.ones(10, 1, 1)] * 10


def test_update_params_is_backward_step_zero_grad():
    inputs, targets = tensors()
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    reference = nn.Linear(1, 1)
    reference.load_state_dict(model.state_dict())
    optimizer, reference_optimizer = (SGD(m.parameters(), lr=0.01) for m in (model, reference))
    optim_wrapper = OptimWrapper(optimizer=optimizer)
    initial = model.bias.detach().clone()
    for input, target in zip(inputs, targets):
        optim_wrapper.update_params(F.l1_loss(model(input), target))
        F.l1_loss(reference(input), target).backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
    assert torch.equal(model.bias, reference.bias) and model.bias.grad is None
    assert not torch.equal(model.bias, initial)  # the zero inputs train only the bias


def test_mixed_precision_runs_the_forward_under_autocast():
    # On the CPU: bfloat16 (the page runs float16 on CUDA).
    inputs, targets = tensors()
    model = nn.Linear(1, 1)
    optim_wrapper = AmpOptimWrapper(optimizer=SGD(model.parameters(), lr=0.01))
    before = model.bias.detach().clone()
    for input, target in zip(inputs, targets):
        with optim_wrapper.optim_context(model):
            output = model(input)
        assert output.dtype == torch.bfloat16
        optim_wrapper.update_params(F.l1_loss(output.float(), target))
    assert not torch.equal(model.bias, before)


def test_accumulative_counts_steps_every_other_call():
    inputs, targets = tensors()
    model = nn.Linear(1, 1)
    optim_wrapper = AmpOptimWrapper(optimizer=SGD(model.parameters(), lr=0.01),
                                    accumulative_counts=2)
    before, weights = model.bias.detach().clone(), []
    for input, target in zip(inputs, targets):
        with optim_wrapper.optim_context(model):
            output = model(input)
        optim_wrapper.update_params(F.l1_loss(output, target))
        weights.append(model.bias.detach().clone())
    # The inputs are zeros: only the bias learns. Calls 1, 3, ... accumulate; 2, 4, ... step.
    changed = [not torch.equal(a, b) for a, b in zip([before] + weights, weights)]
    assert changed == [False, True] * 5


def test_backward_step_and_zero_grad_can_be_called_one_by_one():
    inputs, targets = tensors()
    model = nn.Linear(1, 1)
    optimizer = SGD(model.parameters(), lr=0.01)
    optim_wrapper = AmpOptimWrapper(optimizer=optimizer, accumulative_counts=2)
    before = model.bias.detach().clone()
    for idx, (input, target) in enumerate(zip(inputs, targets)):
        optimizer.zero_grad()
        with optim_wrapper.optim_context(model):
            output = model(input)
        optim_wrapper.backward(F.l1_loss(output, target))
        if idx % 2 == 0:
            optim_wrapper.step()
            optim_wrapper.zero_grad()
    assert not torch.equal(model.bias, before)


def test_gradient_clipping_configs():
    optimizer = SGD(nn.Linear(1, 1).parameters(), lr=0.01)
    assert AmpOptimWrapper(optimizer=optimizer, clip_grad=dict(max_norm=1)).clip_grad_kwargs \
        == dict(max_norm=1)
    # The page's `dict(clip_value=0.2)` leaves type at 'norm', whose torch function takes
    # no clip_value (MMEngine fails at the first step); fengine says so when it is built.
    with pytest.raises(ValueError, match=r"clip_grad with type='norm' got the unknown key "
                                         r"'clip_value'. 'clip_value' belongs to type='value'"):
        AmpOptimWrapper(optimizer=optimizer, clip_grad=dict(clip_value=0.2))
    assert AmpOptimWrapper(optimizer=optimizer,
                           clip_grad=dict(type='value', clip_value=0.2)).clip_grad_kwargs == \
        dict(clip_value=0.2)


def test_get_lr_and_get_momentum_print_as_on_the_page(capsys):
    model = nn.Linear(1, 1)
    optimizer = SGD(model.parameters(), lr=0.01)
    optim_wrapper = OptimWrapper(optimizer)
    print(optimizer.param_groups[0]['lr'])
    print(optimizer.param_groups[0]['momentum'])
    print(optim_wrapper.get_lr())
    print(optim_wrapper.get_momentum())
    assert capsys.readouterr().out.splitlines() == [
        '0.01', '0', "{'lr': [0.01]}", "{'momentum': [0]}"]


def test_state_dicts_export_and_load_with_the_scaler():
    model = nn.Linear(1, 1)
    optimizer = SGD(model.parameters(), lr=0.01)
    optim_wrapper = OptimWrapper(optimizer=optimizer)
    # float16 on the CPU (the page's CUDA default), so the scaler is on.
    amp_optim_wrapper = AmpOptimWrapper(optimizer=optimizer, dtype='float16')
    optim_state_dict = optim_wrapper.state_dict()
    amp_optim_state_dict = amp_optim_wrapper.state_dict()
    assert set(optim_state_dict) == {'state', 'param_groups'}
    assert optim_state_dict['param_groups'][0]['lr'] == 0.01
    assert amp_optim_state_dict['loss_scaler']['scale'] == 65536.0
    assert amp_optim_state_dict['loss_scaler']['growth_interval'] == 2000
    amp_optim_wrapper_new = AmpOptimWrapper(optimizer=optimizer, dtype='float16')
    optim_wrapper_new = OptimWrapper(optimizer=optimizer)
    amp_optim_wrapper_new.load_state_dict(amp_optim_state_dict)
    optim_wrapper_new.load_state_dict(optim_state_dict)
    assert amp_optim_wrapper_new.loss_scaler.state_dict() == amp_optim_state_dict['loss_scaler']


def test_an_optim_wrapper_dict_lists_lrs_and_momenta_of_each():
    gen, disc = nn.Linear(1, 1), nn.Linear(1, 1)
    optim_dict = OptimWrapperDict(gen=OptimWrapper(optimizer=SGD(gen.parameters(), lr=0.01)),
                                  disc=OptimWrapper(optimizer=SGD(disc.parameters(), lr=0.01)))
    assert optim_dict.get_lr() == {'gen.lr': [0.01], 'disc.lr': [0.01]}
    assert optim_dict.get_momentum() == {'gen.momentum': [0], 'disc.momentum': [0]}


@pytest.mark.parametrize('cfg, wrapper_type, counts', [
    (dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9,
                                              weight_decay=0.0001)), OptimWrapper, 1),
    (dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)),
     OptimWrapper, 1),
    (dict(type='AmpOptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9,
                                                 weight_decay=0.0001), accumulative_counts=2),
     AmpOptimWrapper, 2),
])
def test_runner_configs_build_the_wrapper(cfg, wrapper_type, counts):
    wrapper = build_optim_wrapper(nn.Linear(1, 1), cfg)
    assert type(wrapper) is wrapper_type
    assert wrapper.accumulative_counts == counts
    assert wrapper.get_momentum() == {'momentum': [0.9]}


class ToyModel(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict(dict(layer0=nn.Linear(1, 1), layer1=nn.Linear(1, 1)))
        self.head = nn.Sequential(OrderedDict(linear=nn.Linear(1, 1), bn=nn.BatchNorm1d(1)))


def groups_by_name(model, wrapper, key):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g['params'][0])]: g[key] for g in wrapper.optimizer.param_groups}


def test_norm_decay_mult_zero_stops_decaying_the_norm_layer():
    model = ToyModel()
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.01, weight_decay=0.0001),
        paramwise_cfg=dict(norm_decay_mult=0)))
    decay = groups_by_name(model, wrapper, 'weight_decay')
    assert decay == {'backbone.layer0.weight': 0.0001, 'backbone.layer0.bias': 0.0001,
                     'backbone.layer1.weight': 0.0001, 'backbone.layer1.bias': 0.0001,
                     'head.linear.weight': 0.0001, 'head.linear.bias': 0.0001,
                     'head.bn.weight': 0.0, 'head.bn.bias': 0.0}


def test_custom_keys_set_lr_and_decay_per_module_the_longest_key_first():
    model = ToyModel()
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.01, weight_decay=0.0001),
        paramwise_cfg=dict(custom_keys={'backbone.layer0': dict(lr_mult=0, decay_mult=0),
                                        'backbone': dict(lr_mult=1),
                                        'head': dict(lr_mult=0.1)})))
    lrs = groups_by_name(model, wrapper, 'lr')
    decay = groups_by_name(model, wrapper, 'weight_decay')
    for name in lrs:
        part = ('layer0' if 'layer0' in name else 'layer1' if 'layer1' in name else 'head')
        assert lrs[name] == pytest.approx({'layer0': 0.0, 'layer1': 0.01, 'head': 0.001}[part])
        assert decay[name] == pytest.approx(0.0 if part == 'layer0' else 0.0001)


@pytest.fixture
def layer_decay_constructor():
    """The page's LayerDecayOptimWrapperConstructor, registered for the test only."""

    class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):

        def __init__(self, optim_wrapper_cfg, paramwise_cfg=None):
            super().__init__(optim_wrapper_cfg, paramwise_cfg=None)
            self.decay_factor = paramwise_cfg.get('decay_factor', 0.5)
            super().__init__(optim_wrapper_cfg, paramwise_cfg)

        def add_params(self, params, module, prefix='', lr=None):
            if lr is None:
                lr = self.base_lr
            for name, param in module.named_parameters(recurse=False):
                params.append(dict(params=[param], lr=lr))
                full_name = f'{prefix}.{name}' if prefix else name
                print_log(f'{full_name} : lr={lr}', logger='current')
            for name, child in module.named_children():
                child_prefix = f'{prefix}.{name}' if prefix else name
                self.add_params(params, child, child_prefix, lr=lr * self.decay_factor)

    OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=LayerDecayOptimWrapperConstructor,
                                               force=True)
    yield
    OPTIM_WRAPPER_CONSTRUCTORS._module_dict.pop('LayerDecayOptimWrapperConstructor')


def test_a_custom_constructor_with_its_own_paramwise_key(layer_decay_constructor,
                                                         fengine_log):
    class Layered(nn.Module):

        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleDict(dict(linear=nn.Linear(1, 1)))
            self.linear = nn.Linear(1, 1)

    build_optim_wrapper(Layered(), dict(
        optimizer=dict(type='SGD', lr=0.01, weight_decay=0.0001),
        paramwise_cfg=dict(decay_factor=0.5), constructor='LayerDecayOptimWrapperConstructor'))
    assert [m for m in fengine_log.messages() if ' : lr=' in m] == [
        'layer.linear.weight : lr=0.0025', 'layer.linear.bias : lr=0.0025',
        'linear.weight : lr=0.005', 'linear.bias : lr=0.005']


# == 'Train a GAN' ===========================================================================
def test_the_gan_pages_model_trains_with_a_hand_built_optim_wrapper_dict(tmp_path):
    """The page's code (fengine imports; random tensors for MNIST; two iterations)."""
    import numpy as np
    from fengine.model import ImgDataPreprocessor

    class Generator(nn.Module):
        def __init__(self, noise_size, img_shape):
            super().__init__()
            self.img_shape, self.noise_size = img_shape, noise_size

            def block(in_feat, out_feat, normalize=True):
                layers = [nn.Linear(in_feat, out_feat)]
                if normalize:
                    layers.append(nn.BatchNorm1d(out_feat, 0.8))
                layers.append(nn.LeakyReLU(0.2, inplace=True))
                return layers

            self.model = nn.Sequential(*block(noise_size, 128, normalize=False),
                                       *block(128, 256), nn.Linear(256, int(np.prod(img_shape))),
                                       nn.Tanh())

        def forward(self, z):
            return self.model(z).view(z.size(0), *self.img_shape)

    class Discriminator(nn.Module):
        def __init__(self, img_shape):
            super().__init__()
            self.model = nn.Sequential(nn.Linear(int(np.prod(img_shape)), 64),
                                       nn.LeakyReLU(0.2, inplace=True), nn.Linear(64, 1),
                                       nn.Sigmoid())

        def forward(self, img):
            return self.model(img.view(img.size(0), -1))

    def set_requires_grad(nets, requires_grad=False):
        for net in nets if isinstance(nets, list) else [nets]:
            for param in net.parameters():
                param.requires_grad = requires_grad

    class GAN(BaseModel):
        def __init__(self, generator, discriminator, noise_size, data_preprocessor):
            super().__init__(data_preprocessor=data_preprocessor)
            self.generator, self.discriminator = generator, discriminator
            self.noise_size = noise_size

        def train_step(self, data, optim_wrapper):
            inputs_dict = self.data_preprocessor(data, True)
            disc_optimizer_wrapper = optim_wrapper['discriminator']
            with disc_optimizer_wrapper.optim_context(self.discriminator):
                log_vars = self.train_discriminator(inputs_dict, disc_optimizer_wrapper)
            set_requires_grad(self.discriminator, False)
            gen_optimizer_wrapper = optim_wrapper['generator']
            with gen_optimizer_wrapper.optim_context(self.generator):
                log_vars.update(self.train_generator(inputs_dict, gen_optimizer_wrapper))
            set_requires_grad(self.discriminator, True)
            return log_vars

        def forward(self, batch_inputs, data_samples=None, mode=None):
            return self.generator(batch_inputs)

        def train_discriminator(self, inputs, optimizer_wrapper):
            real_imgs = inputs['inputs']
            z = torch.randn((real_imgs.shape[0], self.noise_size)).type_as(real_imgs)
            with torch.no_grad():
                fake_imgs = self.generator(z)
            fake, real = self.discriminator(fake_imgs), self.discriminator(real_imgs)
            loss, log_vars = self.parse_losses(dict(
                loss_disc_fake=F.binary_cross_entropy(fake, torch.zeros_like(fake)),
                loss_disc_real=F.binary_cross_entropy(real, torch.ones_like(real))))
            optimizer_wrapper.update_params(loss)
            return log_vars

        def train_generator(self, inputs, optimizer_wrapper):
            real_imgs = inputs['inputs']
            z = torch.randn(real_imgs.shape[0], self.noise_size).type_as(real_imgs)
            fake = self.discriminator(self.generator(z))
            loss, log_vars = self.parse_losses(dict(
                loss_gen=F.binary_cross_entropy(fake, torch.ones_like(fake))))
            optimizer_wrapper.update_params(loss)
            return log_vars

    generator = Generator(100, (1, 28, 28))
    discriminator = Discriminator((1, 28, 28))
    model = GAN(generator, discriminator, 100, ImgDataPreprocessor(mean=([127.5]),
                                                                     std=([127.5])))
    opt_g = torch.optim.Adam(generator.parameters(), lr=0.0001, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=0.0001, betas=(0.5, 0.999))
    opt_wrapper_dict = OptimWrapperDict(generator=OptimWrapper(opt_g),
                                        discriminator=OptimWrapper(opt_d))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    samples = [dict(inputs=image) for image in images]
    train_dataloader = DataLoader(samples, batch_size=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    runner = Runner(model, work_dir=tmp_path, train_dataloader=train_dataloader,
                    train_cfg=dict(by_epoch=True, max_epochs=1), optim_wrapper=opt_wrapper_dict)
    runner.train()
    assert runner.iter == 2
    for part in ('generator', 'discriminator'):
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters()
                   if n.startswith(part)), part
    assert opt_g.state_dict()['state'][0]['step'] == 2
