"""Every argument of MMEngine's Runner: taken and honoured, or refused by name."""
from __future__ import annotations

import logging
import multiprocessing
import resource
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fengine.dist
import fengine.runner.randomness as randomness_module
from fengine import Runner
from fengine.evaluator import BaseMetric, Evaluator
from fengine.hooks import Hook
from fengine.model import BaseDataPreprocessor, BaseModel, is_model_wrapper
from fengine.optim import OptimWrapper
from fengine.registry import MODELS, DefaultScope
from fengine.runner import DefaultSampler

EAGER = dict(backend='aot_eager')


class TinyNet(BaseModel):
    def __init__(self, data_preprocessor=None, width: int = 8):
        super().__init__(data_preprocessor)
        self.body = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, width))
        self.head = nn.Linear(width, 3)

    def forward(self, x, y, mode='tensor'):
        out = self.head(self.body(x))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(out, y))
        return out.argmax(1), y


class Correct(BaseMetric):
    def process(self, data_batch, data_samples):
        pred, label = data_samples
        self.results.append(((pred == label).sum().item(), len(label)))

    def compute_metrics(self, results):
        return dict(acc=sum(r[0] for r in results) / sum(r[1] for r in results))


def data(n: int = 32, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=generator),
                         torch.randint(0, 3, (n,), generator=generator))


def tiny(**kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return TinyNet(**kwargs)


def make(tmp_path: Path, **kwargs) -> Runner:
    """A quiet runner that can train (1 epoch of 4 batches) unless told otherwise."""
    args = dict(model=tiny(), work_dir=tmp_path,
                train_dataloader=DataLoader(data(), batch_size=8),
                optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                train_cfg=dict(by_epoch=True, max_epochs=1),
                default_hooks=dict(checkpoint=None), randomness=dict(seed=0),
                log_level='WARNING')
    args.update(kwargs)
    return Runner(**args)


@pytest.fixture
def restore_torch_flags():
    benchmark = torch.backends.cudnn.benchmark
    method = multiprocessing.get_start_method(allow_none=True)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield
    torch.backends.cudnn.benchmark = benchmark
    multiprocessing.set_start_method(method, force=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


# -- env_cfg ---------------------------------------------------------------------------------
def test_env_cfg_cudnn_benchmark_turns_cudnn_autotuning_on(tmp_path, restore_torch_flags):
    torch.backends.cudnn.benchmark = False
    make(tmp_path, env_cfg=dict(cudnn_benchmark=True))
    assert torch.backends.cudnn.benchmark is True


def test_env_cfg_mp_start_method_sets_the_start_method(tmp_path, restore_torch_flags):
    multiprocessing.set_start_method('fork', force=True)
    with pytest.warns(UserWarning, match="start method was 'fork'; env_cfg sets it to 'spawn'"):
        make(tmp_path, env_cfg=dict(mp_cfg=dict(mp_start_method='spawn')))
    assert multiprocessing.get_start_method() == 'spawn'


def test_an_unknown_start_method_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"^env_cfg mp_cfg mp_start_method must be one of .*"
                                         r"'spawn'.*but got 'spwan'\. Did you mean 'spawn'\?$"):
        make(tmp_path, env_cfg=dict(mp_cfg=dict(mp_start_method='spwan')))


def test_opencv_num_threads_without_opencv_says_so_at_debug_level(tmp_path, fengine_log,
                                                                  monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == 'cv2':
            raise ImportError('No module named cv2')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_cv2)
    make(tmp_path, env_cfg=dict(mp_cfg=dict(opencv_num_threads=0)), log_level='DEBUG')
    assert any('OpenCV is not installed' in m for m in fengine_log.messages(logging.DEBUG))


def test_resource_limit_raises_the_open_file_limit(tmp_path, restore_torch_flags):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = soft + 1 if hard == resource.RLIM_INFINITY or soft < hard else soft
    make(tmp_path, env_cfg=dict(resource_limit=target))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == target


def test_dist_cfg_goes_to_init_dist_and_a_top_level_backend_joins_it(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fengine.dist, 'init_dist', lambda *a, **k: calls.append((a, k)))
    runner = make(tmp_path, launcher='pytorch',
                  env_cfg=dict(backend='gloo', dist_cfg=dict(timeout=120)))
    assert calls == [(('pytorch',), dict(backend='gloo', timeout=120))]
    assert runner.distributed and runner.launcher == 'pytorch'


@pytest.mark.parametrize('env_cfg,message', [
    (dict(cudnn_benchmrk=True), r"env_cfg has unknown key\(s\) \['cudnn_benchmrk'\] Did you "
                                r"mean 'cudnn_benchmark'\?"),
    (dict(mp_cfg=dict(start_method='fork')), r"env_cfg mp_cfg has unknown key\(s\) "
                                             r"\['start_method'\]"),
    (dict(dist_cfg=dict(backnd='gloo')), r"env_cfg dist_cfg has unknown key\(s\) \['backnd'\] "
                                         r"Did you mean 'backend'\?"),
])
def test_an_unknown_env_cfg_key_names_it(tmp_path, env_cfg, message):
    with pytest.raises(TypeError, match=message):
        make(tmp_path, env_cfg=env_cfg)


def test_two_different_backends_are_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"backend='gloo' and dist_cfg=dict\(backend='nccl'\)"):
        make(tmp_path, env_cfg=dict(backend='gloo', dist_cfg=dict(backend='nccl')))


# -- default_scope, experiment_name, attributes ------------------------------------------------
def test_default_scope_makes_a_current_scope_for_the_run(tmp_path):
    make(tmp_path, default_scope='myproj')
    assert DefaultScope.get_current_instance().scope_name == 'myproj'
    runner = make(tmp_path)
    assert runner.default_scope.scope_name == 'fengine'
    assert DefaultScope.get_current_instance() is runner.default_scope


def test_default_scope_none_makes_no_scope_and_a_bad_one_is_named(tmp_path):
    before = DefaultScope.get_current_instance()
    assert make(tmp_path, default_scope=None).default_scope is None
    assert DefaultScope.get_current_instance() is before
    with pytest.raises(TypeError, match=r"default_scope must be a str .* but got int: 3"):
        make(tmp_path, default_scope=3)


def test_the_experiment_name_ends_with_the_timestamp_as_in_mmengine(tmp_path):
    runner = make(tmp_path, experiment_name='exp')
    assert runner.experiment_name == f'exp_{runner.timestamp}'
    plain = make(tmp_path)
    assert plain.experiment_name == plain.timestamp


def test_the_runner_has_mmengines_attributes(tmp_path):
    runner = make(tmp_path, val_dataloader=DataLoader(data(8, seed=1), batch_size=8),
                  val_cfg=dict(), val_evaluator=Correct(),
                  train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1, val_begin=2))
    assert (runner.distributed, runner.launcher, runner.rank, runner.world_size) == \
        (False, 'none', 0, 1)
    assert runner.model_name == 'TinyNet' and runner.seed == 0 and not runner.deterministic
    assert runner.log_dir == tmp_path / runner.timestamp and runner.work_dir == tmp_path
    assert (runner.max_epochs, runner.max_iters, runner.epoch, runner.iter) == (2, 8, 0, 0)
    assert (runner.val_interval, runner.val_begin) == (1, 2)
    assert isinstance(runner.val_evaluator, Evaluator)
    assert runner.cfg == {} and isinstance(runner.message_hub, object)


def test_call_hook_passes_over_hooks_without_the_point(tmp_path):
    seen = []

    class MyPoint(Hook):
        def before_my_phase(self, runner, value):
            seen.append(value)

    runner = make(tmp_path, custom_hooks=[MyPoint()])
    runner.call_hook('before_my_phase', value=3)
    assert seen == [3]


# -- randomness ------------------------------------------------------------------------------
def test_diff_rank_seed_adds_the_rank_to_the_seed(monkeypatch):
    monkeypatch.setattr(randomness_module, 'get_rank', lambda: 3)
    assert randomness_module.set_random_seed(5, diff_rank_seed=True) == 8
    assert torch.initial_seed() == 8
    assert randomness_module.set_random_seed(5) == 5


def test_diff_rank_seed_seeds_the_rank_but_not_its_samplers(tmp_path, monkeypatch):
    monkeypatch.setattr(randomness_module, 'get_rank', lambda: 2)
    runner = make(tmp_path, randomness=dict(seed=10, diff_rank_seed=True),
                  train_dataloader=dict(dataset=data(), batch_size=8))
    assert runner.seed == 12 and torch.initial_seed() == 12
    # Every rank's sampler shuffles with the common seed, so the ranks split one order.
    assert runner.train_dataloader.sampler.seed == 10


def test_diff_rank_seed_must_be_a_bool(tmp_path):
    with pytest.raises(TypeError, match=r"^randomness diff_rank_seed must be a bool, but got 1$"):
        make(tmp_path, randomness=dict(seed=1, diff_rank_seed=1))


def test_cudnn_benchmark_with_deterministic_warns_that_deterministic_wins(
        tmp_path, fengine_log, restore_torch_flags):
    make(tmp_path, env_cfg=dict(cudnn_benchmark=True),
         randomness=dict(seed=0, deterministic=True))
    assert torch.backends.cudnn.benchmark is False
    assert any('deterministic wins' in m for m in fengine_log.messages(logging.WARNING))


# -- hooks -----------------------------------------------------------------------------------
class Named(Hook):
    def __init__(self, name: str, priority=None):
        self.name = name
        if priority is not None:
            self.priority = priority

    def before_train(self, runner):
        runner.order.append(self.name)


def test_custom_hooks_run_by_priority_names_and_ints_then_registration_order(tmp_path):
    hooks = [Named('low', 'VERY_LOW'), Named('int45', 45), Named('normal-a'),
             Named('high', 'very_high'), Named('normal-b', 'NORMAL'), Named('int10', 10),
             dict(type='IterTimerHook', priority='LOWEST')]
    runner = make(tmp_path, custom_hooks=hooks, default_hooks=dict(
        checkpoint=None, timer=None, logger=None, param_scheduler=None, sampler_seed=None))
    runner.order = []
    runner.call_hook('before_train')
    # VERY_HIGH is 10: an int 10 registered later runs after it, as in MMEngine.
    assert runner.order == ['high', 'int10', 'int45', 'normal-a', 'normal-b', 'low']
    assert type(runner.hooks[-1]).__name__ == 'IterTimerHook'
    assert runner.hooks[-1].priority == 'LOWEST'


def test_register_hooks_priority_argument_wins_over_the_configs(tmp_path):
    runner = make(tmp_path, default_hooks=dict(checkpoint=None))
    runner.register_hook(dict(type='IterTimerHook', priority='LOW'), priority='HIGHEST')
    assert runner.hooks[0].priority == 'HIGHEST'


def test_get_hooks_info_lists_each_point_with_priorities(tmp_path):
    runner = make(tmp_path, custom_hooks=[Named('x', 'VERY_HIGH')])
    info = runner.get_hooks_info()
    assert info.startswith('before_run:') or info.startswith('after_load_checkpoint:') or \
        info.split('\n')[0].endswith(':')
    section = info.split('before_train:\n')[1].split(' -------------------- ')[0]
    # RuntimeInfoHook (a default hook) first, then the custom hook of the same priority.
    assert section.splitlines()[:2] == ['(VERY_HIGH   ) RuntimeInfoHook                    ',
                                        '(VERY_HIGH   ) Named                              ']
    assert '(NORMAL      ) IterTimerHook' in info.split('after_train_iter:\n')[1]


def test_register_default_and_custom_hooks_are_public(tmp_path):
    runner = make(tmp_path, default_hooks=dict(checkpoint=None))
    count = len(runner.hooks)
    runner.register_custom_hooks([Named('a'), dict(type='IterTimerHook')])
    runner.register_default_hooks(dict(runtime_info=None, timer=None, logger=None,
                                       param_scheduler=None, sampler_seed=None,
                                       checkpoint=None))
    assert len(runner.hooks) == count + 2
    with pytest.raises(TypeError, match='custom_hooks must be a list'):
        runner.register_custom_hooks(Named('b'))


# -- auto_scale_lr ---------------------------------------------------------------------------
def test_auto_scale_lr_scales_the_lr_by_real_over_base_batch_size(tmp_path, fengine_log):
    runner = make(tmp_path, auto_scale_lr=dict(base_batch_size=32, enable=True),
                  log_level='INFO', param_scheduler=dict(type='StepLR', step_size=1, gamma=0.5))
    seen = []

    class Lr(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            seen.append(float(runner.optim_wrapper.optimizer.param_groups[0]['lr']))

    runner.register_hook(Lr())
    runner.train()
    # batch size 8 on 1 process, base 32: lr 0.1 * 8 / 32; the scheduler starts from it.
    assert seen == pytest.approx([0.025] * 4)
    assert any('Scaling the original LR by 0.25' in m for m in fengine_log.messages())


def test_auto_scale_lr_reads_the_batch_size_of_a_dataloader_config(tmp_path):
    runner = make(tmp_path, auto_scale_lr=dict(base_batch_size=4, enable=True),
                  train_dataloader=dict(dataset=data(), batch_size=8))
    wrapper = runner.build_optim_wrapper(dict(optimizer=dict(type='SGD', lr=0.1)))
    runner.scale_lr(wrapper, runner.auto_scale_lr)
    assert wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(0.2)


def test_auto_scale_lr_without_enable_changes_nothing(tmp_path):
    runner = make(tmp_path, auto_scale_lr=dict(base_batch_size=4))
    runner.train()
    assert runner.optim_wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(0.1)


@pytest.mark.parametrize('cfg,error,message', [
    (dict(enable=True), ValueError, "needs 'base_batch_size'"),
    (dict(base_batch_size=8, enabled=True), TypeError,
     r"auto_scale_lr has unknown key\(s\) \['enabled'\] Did you mean 'enable'\?"),
    (dict(base_batch_size=0, enable=True), ValueError,
     'auto_scale_lr base_batch_size must be a positive int, but got 0'),
    (dict(base_batch_size=8, enable='yes'), TypeError, 'auto_scale_lr enable must be a bool'),
])
def test_a_bad_auto_scale_lr_is_named(tmp_path, cfg, error, message):
    with pytest.raises(error, match=message):
        make(tmp_path, auto_scale_lr=cfg)


# -- data_preprocessor -----------------------------------------------------------------------
class Scale(BaseDataPreprocessor):
    def forward(self, data, training=False):
        x, y = super().forward(data, training)
        return x * 2, y


def test_data_preprocessor_goes_into_a_model_config(tmp_path):
    MODELS.register_module(name='RunnerArgsTinyNet', module=TinyNet)
    MODELS.register_module(name='RunnerArgsScale', module=Scale)
    try:
        runner = make(tmp_path, model=dict(type='RunnerArgsTinyNet'),
                      data_preprocessor=dict(type='RunnerArgsScale'))
        assert isinstance(runner.model.data_preprocessor, Scale)
    finally:
        MODELS._module_dict.pop('RunnerArgsTinyNet')
        MODELS._module_dict.pop('RunnerArgsScale')


def test_data_preprocessor_with_a_built_model_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r'data_preprocessor is given, but the model is built '
                                         r'already \(TinyNet\)'):
        make(tmp_path, data_preprocessor=dict(type='BaseDataPreprocessor'))


# -- cfg: the whole config -------------------------------------------------------------------
def test_cfg_compile_compiles_the_steps_like_the_compile_argument(tmp_path):
    runner = make(tmp_path, cfg=dict(compile=EAGER))
    assert runner.compile == EAGER
    assert runner.model._compiled_steps['options']['backend'] == 'aot_eager'
    runner.train()
    assert isinstance(runner.optim_wrapper.optimizer.param_groups[0]['lr'], torch.Tensor)
    assert make(tmp_path, cfg=dict(compile=True)).model._compiled_steps is not None
    assert getattr(make(tmp_path, cfg=dict(compile=False)).model, '_compiled_steps', None) is None


def test_compile_given_twice_with_different_values_is_an_error(tmp_path):
    assert make(tmp_path, compile=EAGER, cfg=dict(compile=EAGER)).compile == EAGER
    with pytest.raises(ValueError, match=r"^compile is given both as an argument \(True\) and "
                                         r"in cfg \(\{'backend': 'aot_eager'\}\): keep one$"):
        make(tmp_path, compile=True, cfg=dict(compile=EAGER))


@pytest.mark.parametrize('key,message', [
    ('efficient_conv_bn_eval', 'efficient conv-bn evaluation'),
    ('strategy', 'FlexibleRunner'),
])
def test_cfg_keys_of_unimplemented_features_are_refused(tmp_path, key, message):
    with pytest.raises(ValueError, match=rf"^the config sets '{key}': .*{message}"):
        make(tmp_path, cfg={key: ['backbone']})


def test_a_flexible_runner_and_mmcv_sync_bn_are_refused(tmp_path):
    with pytest.raises(ValueError, match="runner_type='FlexibleRunner' is not supported"):
        make(tmp_path, cfg=dict(runner_type='FlexibleRunner'))
    with pytest.raises(ValueError, match="sync_bn='mmcv' needs MMCV"):
        make(tmp_path, cfg=dict(sync_bn='mmcv'))
    make(tmp_path, cfg=dict(runner_type='Runner', sync_bn='torch'))


def test_a_deepspeed_wrapper_is_refused_even_in_one_process(tmp_path):
    with pytest.raises(KeyError, match=r"model_wrapper_cfg type 'MMDeepSpeedEngineWrapper' is "
                                       r"not a registered model wrapper.*registered: .*"
                                       r"'MMDistributedDataParallel'"):
        make(tmp_path, cfg=dict(model_wrapper_cfg=dict(type='MMDeepSpeedEngineWrapper')))


@pytest.mark.parametrize('wrapper', ['FSDP', 'MMFullyShardedDataParallel'])
def test_an_fsdp_wrapper_cfg_in_one_process_leaves_the_model_unwrapped(tmp_path, wrapper):
    runner = make(tmp_path, cfg=dict(model_wrapper_cfg=dict(type=wrapper, cpu_offload=True)))
    assert not is_model_wrapper(runner.model)


def test_find_unused_parameters_in_the_config_must_agree_with_the_wrapper_cfg(tmp_path):
    runner = make(tmp_path, cfg=dict(find_unused_parameters=True))
    assert runner._wrapper_extras == dict(find_unused_parameters=True)
    with pytest.raises(ValueError, match='find_unused_parameters=True in the config'):
        make(tmp_path, cfg=dict(find_unused_parameters=True),
             model_wrapper_cfg=dict(find_unused_parameters=False))


def test_config_variables_are_named_in_the_log_and_a_typo_is_an_error(tmp_path, fengine_log):
    make(tmp_path, log_level='INFO', cfg=dict(dataset_type='Toy', data_root='data/',
                                              train_cfg=dict(max_epochs=1)))
    assert any(m == 'Config keys the Runner does not read (config variables): data_root, '
               'dataset_type' for m in fengine_log.messages())
    with pytest.raises(ValueError, match=r"config key 'optim_wraper' .* Did you mean "
                                         r"'optim_wrapper'\?"):
        make(tmp_path, cfg=dict(optim_wraper={}))


class FakeConfig(Mapping):
    """What the config developer's Config offers the Runner: a Mapping with extras."""

    def __init__(self, cfg: dict, filename: str | None = None) -> None:
        self._cfg, self.filename = cfg, filename
        self.dumped: list[str] = []

    def __getitem__(self, key):
        return self._cfg[key]

    def __iter__(self):
        return iter(self._cfg)

    def __len__(self):
        return len(self._cfg)

    def to_dict(self) -> dict:
        return dict(self._cfg)

    @property
    def pretty_text(self) -> str:
        return '# pretty\n' + '\n'.join(f'{k} = {v!r}' for k, v in self._cfg.items())

    def dump(self, path: str) -> None:
        self.dumped.append(path)
        Path(path).write_text(self.pretty_text)


def test_from_cfg_takes_a_config_mapping_and_keeps_it(tmp_path, fengine_log):
    model = tiny()
    cfg = FakeConfig(dict(model=model, work_dir=str(tmp_path), dataset_type='Toy',
                          train_dataloader=dict(dataset=data(), batch_size=8),
                          optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                          train_cfg=dict(by_epoch=True, max_epochs=1),
                          randomness=dict(seed=0), compile=False),
                     filename='/configs/my_exp.py')
    runner = Runner.from_cfg(cfg)
    assert runner.cfg is cfg and runner.model is model
    assert runner.experiment_name == f'my_exp_{runner.timestamp}'
    assert cfg.dumped == [str(tmp_path / 'my_exp.py')]
    assert '# pretty' in fengine_log.text
    runner.train()
    assert runner.iter == 4
    path = runner.save_checkpoint(tmp_path, 'c.pth')
    assert torch.load(path, weights_only=True)['meta']['cfg'].startswith('# pretty')


def test_from_cfg_copies_a_dict_so_later_changes_do_not_reach_the_runner(tmp_path):
    cfg = dict(model=tiny(), work_dir=str(tmp_path), randomness=dict(seed=4),
               default_hooks=dict(checkpoint=None))
    runner = Runner.from_cfg(cfg)
    cfg['randomness']['seed'] = 5
    assert runner.cfg['randomness'] == dict(seed=4) and runner.seed == 4
    dumped = (tmp_path / f'{runner.timestamp}.py').read_text()
    assert "randomness = {'seed': 4}" in dumped


def test_from_cfg_without_a_model_or_a_mapping_is_named(tmp_path):
    with pytest.raises(KeyError, match='the config has no model'):
        Runner.from_cfg(dict(work_dir=str(tmp_path)))
    with pytest.raises(TypeError, match=r'takes a dict or a Config \(a Mapping\), but got list'):
        Runner.from_cfg([('model', tiny())])


# -- num_batch_per_epoch (MMEngine's debug trick) --------------------------------------------
def test_num_batch_per_epoch_keeps_that_many_batches_of_a_dataloader_config(tmp_path):
    runner = make(tmp_path, train_dataloader=dict(dataset=data(), batch_size=4,
                                                  num_batch_per_epoch=3),
                  train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
                  val_dataloader=dict(dataset=data(20, seed=1), batch_size=4,
                                      sampler=dict(type='DefaultSampler', shuffle=False),
                                      num_batch_per_epoch=2),
                  val_cfg=dict(), val_evaluator=Correct())
    runner.train()
    assert runner.iter == 6 and len(runner.train_dataloader) == 3
    assert len(runner.val_dataloader) == 2 and len(runner.val_dataloader.dataset) == 8
    assert isinstance(runner.train_dataloader.sampler, DefaultSampler)


def test_num_batch_per_epoch_in_a_loop_config_points_to_the_dataloader(tmp_path):
    with pytest.raises(ValueError, match=r'train_cfg sets num_batch_per_epoch, which is a key of '
                                         r'the dataloader .*train_dataloader=dict\(\.\.\., '
                                         r'num_batch_per_epoch=2\)'):
        make(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1,
                                      num_batch_per_epoch=2)).train()


def test_a_bad_num_batch_per_epoch_is_named():
    with pytest.raises(ValueError, match=r'^dataloader num_batch_per_epoch must be a positive '
                                         r'int, but got 0$'):
        Runner.build_dataloader(dict(dataset=data(), batch_size=4, num_batch_per_epoch=0))


# -- the public build methods ----------------------------------------------------------------
def test_the_build_methods_are_public_as_in_mmengine(tmp_path):
    runner = make(tmp_path, val_dataloader=DataLoader(data(8), batch_size=4), val_cfg=dict(),
                  val_evaluator=Correct())
    loader = Runner.build_dataloader(dict(dataset=data(), batch_size=4), seed=3)
    assert len(loader) == 8 and loader.sampler.seed == 3
    assert isinstance(runner.build_model(tiny()), TinyNet)
    with pytest.raises(TypeError, match='model must be an nn.Module or a MODELS config dict'):
        runner.build_model(3)
    wrapped = runner.wrap_model(None, tiny())
    assert isinstance(wrapped, TinyNet)
    assert isinstance(runner.build_evaluator([Correct()]), Evaluator)
    runner.optim_wrapper = runner.build_optim_wrapper(dict(optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(runner.optim_wrapper, OptimWrapper)
    schedulers = runner.build_param_scheduler(dict(type='StepLR', step_size=1))
    assert len(schedulers) == 1
    assert runner.build_train_loop(dict(by_epoch=False, max_iters=3)).max_iters == 3
    assert type(runner.build_val_loop(dict())).__name__ == 'ValLoop'
    assert runner.build_visualizer(None) is not None
    with pytest.raises(ValueError, match=r"train_cfg sets both type='IterBasedTrainLoop' and "
                                         r'by_epoch=True'):
        runner.build_train_loop(dict(type='IterBasedTrainLoop', by_epoch=True, max_iters=2))


def test_load_or_resume_is_public_and_loads_once(tmp_path):
    first = make(tmp_path / 'a')
    first.train()
    path = first.save_checkpoint(tmp_path / 'a', 'w.pth')
    second = make(tmp_path / 'b', model=tiny(width=8), load_from=str(path))
    second.load_or_resume()
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
