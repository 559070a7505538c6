"""Several optimizers: OptimWrapperDict, building it from configs, schedulers and checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fengine.func import make_train_step
from fengine.model import BaseModel
from fengine.optim import (MultiOptimWrapperConstructor, OptimWrapper, OptimWrapperDict,
                           build_optim_wrapper, build_param_schedulers)


class TwoPart(BaseModel):

    def __init__(self):
        super().__init__()
        self.generator = nn.Linear(3, 3)
        self.discriminator = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))

    def forward(self, x, mode='tensor'):
        out = self.discriminator(self.generator(x))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


def wrappers(model=None):
    model = model or TwoPart()
    return OptimWrapperDict(
        generator=OptimWrapper(torch.optim.SGD(model.generator.parameters(), lr=0.1,
                                               momentum=0.9)),
        discriminator=OptimWrapper(torch.optim.Adam(model.discriminator.parameters(),
                                                    lr=0.01, betas=(0.5, 0.999))))


# -- the dict ------------------------------------------------------------------------------
def test_each_wrapper_is_reached_by_name_and_the_dict_lists_them():
    wrapper_dict = wrappers()
    assert list(wrapper_dict.keys()) == ['generator', 'discriminator']
    assert [w for w in wrapper_dict.values()] == [wrapper_dict['generator'],
                                                   wrapper_dict['discriminator']]
    assert 'generator' in wrapper_dict and 'encoder' not in wrapper_dict
    assert len(wrapper_dict) == 2
    assert isinstance(wrapper_dict, OptimWrapper)  # as MMEngine's, for isinstance checks


def test_lrs_and_momenta_are_listed_per_optimizer_name():
    wrapper_dict = wrappers()
    assert wrapper_dict.get_lr() == {'generator.lr': [0.1], 'discriminator.lr': [0.01]}
    assert wrapper_dict.get_momentum() == {'generator.momentum': [0.9],
                                           'discriminator.momentum': [0.5]}
    groups = wrapper_dict.param_groups
    assert groups['generator'] is wrapper_dict['generator'].param_groups


def test_zero_grad_reaches_every_optimizer_with_its_arguments():
    model = TwoPart()
    wrapper_dict = wrappers(model)
    model(torch.ones(2, 3), mode='loss')['loss'].backward()
    wrapper_dict.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    wrapper_dict.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize('method, args', [('update_params', (torch.ones(()),)),
                                          ('backward', (torch.ones(()),)), ('step', ())])
def test_what_updates_parameters_belongs_to_one_wrapper(method, args):
    with pytest.raises(NotImplementedError, match=rf"OptimWrapperDict.{method}\(\) is "
                                                  r"ambiguous: call it on one of the wrappers "
                                                  r"\('discriminator', 'generator'\), e.g. "
                                                  rf"optim_wrapper\['generator'\].{method}"):
        getattr(wrappers(), method)(*args)
    with pytest.raises(NotImplementedError, match=r'optim_context\(\) is ambiguous'):
        with wrappers().optim_context(nn.Linear(1, 1)):
            pass


def test_an_unknown_name_lists_the_optimizers():
    with pytest.raises(KeyError, match=r"no optimizer wrapper named 'generater'; the optimizers "
                                       r"are 'discriminator', 'generator'. Did you mean "
                                       r"'generator'"):
        wrappers()['generater']


def test_only_optimizer_wrappers_are_taken():
    with pytest.raises(TypeError, match=r'takes OptimWrapper instances by name, but generator= '
                                        r'is a SGD'):
        OptimWrapperDict(generator=torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1))


def test_state_dict_round_trip_restores_every_optimizer():
    model = TwoPart()
    wrapper_dict = wrappers(model)
    for name in ('generator', 'discriminator'):
        wrapper_dict[name].update_params(model(torch.ones(2, 3), mode='loss')['loss'])
    state = wrapper_dict.state_dict()
    assert sorted(state) == ['discriminator', 'generator']
    fresh = wrappers(TwoPart())
    fresh.load_state_dict(state)
    assert fresh['discriminator'].optimizer.state_dict()['state'][0]['step'] == 1


def test_a_state_of_other_optimizers_loads_nothing():
    fresh = wrappers()
    before = fresh.state_dict()
    with pytest.raises(KeyError, match=r"the optimizer state has entries for 'gen', but the "
                                       r"optimizers are .* Nothing was loaded"):
        fresh.load_state_dict({'generator': before['generator'], 'gen': {}})


def test_initialize_count_status_does_nothing_as_in_mmengine():
    wrapper_dict = wrappers()
    wrapper_dict.initialize_count_status(TwoPart(), 3, 10)
    assert wrapper_dict['generator'].inner_count == 0


# -- built from configs --------------------------------------------------------------------
CONFIG = dict(generator=dict(optimizer=dict(type='Adam', lr=2e-4, betas=(0.5, 0.999))),
              discriminator=dict(optimizer=dict(type='SGD', lr=0.01),
                                 paramwise_cfg=dict(bias_lr_mult=2.0)))


@pytest.mark.parametrize('cfg', [CONFIG, dict(constructor='MultiOptimWrapperConstructor',
                                              **CONFIG)])
def test_a_config_by_optimizer_name_builds_one_wrapper_per_submodule(cfg):
    model = TwoPart()
    wrapper_dict = build_optim_wrapper(model, cfg)
    assert isinstance(wrapper_dict, OptimWrapperDict)
    generator = wrapper_dict['generator'].optimizer
    assert isinstance(generator, torch.optim.Adam)
    assert generator.param_groups[0]['params'] == list(model.generator.parameters())
    discriminator = wrapper_dict['discriminator']
    assert [g['lr'] for g in discriminator.optimizer.param_groups] == [0.01, 0.02, 0.01, 0.02]


def test_a_dict_of_built_wrappers_becomes_an_optim_wrapper_dict():
    built = dict(wrappers().items())
    wrapper_dict = build_optim_wrapper(TwoPart(), built)
    assert dict(wrapper_dict.items()) == built


def test_modules_name_the_parts_of_one_optimizer():
    model = TwoPart()
    wrapper_dict = MultiOptimWrapperConstructor(dict(
        both=dict(modules=['generator', r'discriminator\.1'],
                  optimizer=dict(type='SGD', lr=0.1))))(model)
    params = wrapper_dict['both'].optimizer.param_groups[0]['params']
    assert params == [*model.generator.parameters(), *model.discriminator[1].parameters()]


def test_an_optimizer_name_that_is_no_submodule_lists_the_children():
    with pytest.raises(KeyError, match=r"optimizer 'genrator': TwoPart has no submodule "
                                       r"'genrator' to optimize. Did you mean 'generator'.* "
                                       r"Its children: .*'discriminator'"):
        build_optim_wrapper(TwoPart(), dict(genrator=dict(optimizer=dict(type='SGD', lr=0.1))))


def test_paramwise_cfg_belongs_to_each_optimizer():
    with pytest.raises(ValueError, match=r"takes paramwise_cfg in each optimizer's config"):
        build_optim_wrapper(TwoPart(), dict(constructor='MultiOptimWrapperConstructor',
                                            paramwise_cfg=dict(bias_lr_mult=2.0), **CONFIG))


def test_a_single_optimizer_config_is_not_taken_for_several():
    with pytest.raises(ValueError, match=r"got a single optimizer's config"):
        MultiOptimWrapperConstructor(dict(optimizer=dict(type='SGD', lr=0.1)))


# -- schedulers ----------------------------------------------------------------------------
def test_schedulers_by_optimizer_name_schedule_each_its_own():
    wrapper_dict = wrappers()
    schedulers = build_param_schedulers(dict(
        generator=[dict(type='MultiStepLR', milestones=[1], gamma=0.5, by_epoch=False)],
        discriminator=dict(type='LinearMomentum', start_factor=0.5, by_epoch=False, end=3)),
        wrapper_dict)
    assert sorted(schedulers) == ['discriminator', 'generator']
    for inner in schedulers.values():
        for scheduler in inner:
            scheduler.step()
    assert wrapper_dict.get_lr() == {'generator.lr': [0.05], 'discriminator.lr': [0.01]}
    # betas[0] = 0.5: 0.25 at the start, halfway to 0.5 after one of two steps
    assert wrapper_dict.get_momentum()['discriminator.momentum'] == [pytest.approx(0.375)]


def test_one_schedule_for_all_is_built_for_each_optimizer():
    wrapper_dict = wrappers()
    schedulers = build_param_schedulers(dict(type='ConstantLR', factor=0.5, by_epoch=False,
                                             end=4), wrapper_dict)
    assert [s[0].optimizer for s in schedulers.values()] == [
        w.optimizer for w in wrapper_dict.values()]
    assert wrapper_dict.get_lr() == {'generator.lr': [0.05], 'discriminator.lr': [0.005]}


def test_a_schedule_for_an_unknown_optimizer_is_named():
    with pytest.raises(KeyError, match=r"param_scheduler has schedules for 'gen', but the "
                                       r"optimizers are 'discriminator', 'generator'"):
        build_param_schedulers(dict(gen=[]), wrappers())


def test_a_scheduler_given_the_dict_says_to_pick_one_optimizer():
    from fengine.optim import LinearLR

    with pytest.raises(TypeError, match=r"schedules one optimizer, but got a OptimWrapperDict "
                                        r"of several \('discriminator', 'generator'\)"):
        LinearLR(wrappers())


# -- the compiled step ---------------------------------------------------------------------
def test_the_default_train_step_says_to_override_it_for_several_optimizers():
    with pytest.raises(NotImplementedError, match=r'A model trained with several optimizers '
                                                  r'overrides train_step'):
        TwoPart().train_step((torch.ones(2, 3),), wrappers())


def test_a_compiled_step_refuses_several_optimizers_with_the_reason():
    with pytest.raises(TypeError, match=r'a compiled training step updates one optimizer, but '
                                        r'got a OptimWrapperDict of several; a model trained '
                                        r'with several optimizers overrides train_step'):
        make_train_step(TwoPart(), wrappers(), compile=dict(backend='eager'))


# -- the Runner: checkpoints of several optimizers ------------------------------------------
class TrainsBoth(TwoPart):

    def train_step(self, data, optim_wrapper):
        (x,) = data
        losses = {}
        for name in optim_wrapper.keys():
            loss = self(x, mode='loss')['loss']
            optim_wrapper[name].update_params(loss)
            losses[f'loss_{name}'] = loss.detach()
        return losses


def gan_runner(tmp_path, optim_wrapper, **kwargs):
    from torch.utils.data import DataLoader, TensorDataset

    from fengine.runner import Runner

    return Runner(TrainsBoth(), work_dir=tmp_path,
                  train_dataloader=DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4),
                  train_cfg=dict(by_epoch=True, max_epochs=1), optim_wrapper=optim_wrapper,
                  log_level='WARNING', **kwargs)


def test_a_checkpoint_of_other_optimizers_is_refused_before_anything_loads(tmp_path):
    gan_runner(tmp_path, CONFIG, param_scheduler=dict(
        generator=[dict(type='ConstantLR', factor=0.5, by_epoch=False, end=10)])).train()
    one = dict(generator=CONFIG['generator'])
    runner = gan_runner(tmp_path, one, resume=True)
    with pytest.raises(RuntimeError, match=r"has the optimizers \['discriminator', 'generator'\], "
                                           r"this run has \['generator'\].* Nothing was loaded"):
        runner.train()


def test_a_checkpoint_with_schedulers_of_other_optimizers_is_refused(tmp_path):
    gan_runner(tmp_path, CONFIG, param_scheduler=dict(
        generator=[dict(type='ConstantLR', factor=0.5, by_epoch=False, end=10)])).train()
    runner = gan_runner(tmp_path, CONFIG, resume=True, param_scheduler=dict(
        discriminator=[dict(type='ConstantLR', factor=0.5, by_epoch=False, end=10)]))
    # The generator's list is checked first: one ConstantLR saved, none in this run.
    with pytest.raises(RuntimeError, match=r"has the schedulers \['ConstantLR'\], this run has "
                                           r"\[\]: the param_scheduler config differs"):
        runner.train()
