"""The Runner, its loops and default hooks, on the seed's model and small tensor data."""
from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import (BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler,
                              TensorDataset)

from fengine import Runner
from fengine.evaluator import BaseMetric
from fengine.hooks import Hook
from fengine.model import BaseModel, is_model_wrapper, unwrap_model
from fengine.model.wrappers import MMDistributedDataParallel
from fengine.optim import build_optim_wrapper
from fengine.registry import DATA_SAMPLERS, DATASETS
from fengine.runner import DefaultSampler, NonFiniteLossError, build_dataloader

from seed_models import FashionMnistMetric, NeuralNetwork

EAGER = dict(backend='aot_eager')


def images(n: int, seed: int = 0) -> TensorDataset:
    """Learnable FashionMNIST-shaped tensors: the label sets the mean of a patch."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=generator)
    x = torch.rand(n, 1, 28, 28, generator=generator) * 0.2
    for k in range(10):
        x[labels == k, :, 2 * k:2 * k + 4, 4:24] += 0.8
    return TensorDataset(x, labels)


def loaders(n_train: int = 96, n_val: int = 40, batch_size: int = 16):
    return (DataLoader(images(n_train), batch_size=batch_size),
            DataLoader(images(n_val, seed=1), batch_size=batch_size))


def fresh_model(cls=NeuralNetwork) -> nn.Module:
    """The same initial weights every time (the seed's model has no init_cfg)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return cls()


def seed_runner(tmp_path: Path, epochs: int = 2, **kwargs) -> Runner:
    train, val = loaders()
    args = dict(
        model=fresh_model(), work_dir=tmp_path, train_dataloader=train,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=1),
        val_cfg=dict(fp16=True), val_dataloader=val,
        val_evaluator=dict(metrics=FashionMnistMetric()), randomness=dict(seed=0),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=2)))
    args.update(kwargs)
    return Runner(**args)


class Recorder(Hook):
    """Records every hook point it sees, with the outputs of the iteration hooks."""

    def __init__(self, name: str = 'recorder') -> None:
        self.name = name
        self.calls: list[str] = []
        self.outputs: dict[str, list] = {'train': [], 'val': [], 'test': []}

    def __getattribute__(self, item):
        attr = object.__getattribute__(self, item)
        if item.startswith(('before_', 'after_')) and callable(attr):
            def record(runner, *args, **kwargs):
                self.calls.append(item)
                if item.endswith('_iter') and item.startswith('after_'):
                    self.outputs[item.split('_')[1]].append(kwargs.get('outputs'))
                return attr(runner, *args, **kwargs)
            return record
        return attr


# -- the seed's example --------------------------------------------------------------
def test_the_seeds_runner_trains_validates_and_returns_the_model(tmp_path):
    runner = seed_runner(tmp_path)
    model = runner.train()
    assert model is runner.model
    metrics = runner.val_loop.last_metrics
    assert set(metrics) == {'Accuracy', 'Avg_loss'}
    assert float(metrics['Accuracy']) > 0.5  # learnable data, 2 epochs
    assert runner.epoch == 2 and runner.iter == 2 * 6


def test_a_run_writes_its_log_scalars_and_checkpoints(tmp_path):
    runner = seed_runner(tmp_path)
    runner.train()
    log_dir = tmp_path / runner.timestamp
    log = (log_dir / f'{runner.timestamp}.log').read_text()
    assert 'PyTorch: ' in log and 'fengine: ' in log and 'seed: 0' in log
    assert 'Epoch(train) [1][2/6]' in log and 'lr: 1.0000e-01' in log and 'eta: ' in log
    assert 'Epoch(val) [2][3/3]' in log and 'Accuracy: ' in log
    lines = [json.loads(x) for x in (log_dir / 'vis_data' / 'scalars.json').read_text().splitlines()]
    train_lines = [x for x in lines if 'loss' in x]
    assert [x['step'] for x in train_lines] == [2, 4, 6, 8, 10, 12]
    assert all({'lr', 'loss', 'time', 'data_time', 'epoch', 'iter'} <= set(x) for x in train_lines)
    val_lines = [x for x in lines if 'Accuracy' in x]
    assert [x['step'] for x in val_lines] == [1, 2]
    assert (tmp_path / 'epoch_1.pth').is_file() and (tmp_path / 'epoch_2.pth').is_file()
    assert (tmp_path / 'last_checkpoint').read_text().strip() == str(tmp_path / 'epoch_2.pth')


@pytest.mark.parametrize('window', [2, 10])
def test_the_logged_loss_is_the_mean_over_the_log_processors_window(tmp_path, window):
    seen = []

    class Losses(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            seen.append(float(outputs['loss']))

    runner = seed_runner(tmp_path, epochs=1, custom_hooks=[Losses()],
                         log_processor=dict(window_size=window))
    runner.train()
    lines = [json.loads(x) for x in
             (tmp_path / runner.timestamp / 'vis_data' / 'scalars.json').read_text().splitlines()]
    logged = [x['loss'] for x in lines if 'loss' in x]
    # A line every 2 iterations (LoggerHook interval=2), each the mean of the last
    # `window` losses (MMEngine's LogProcessor window_size).
    expected = [sum(seen[max(0, end - window):end]) / len(seen[max(0, end - window):end])
                for end in (2, 4, 6)]
    assert logged == pytest.approx(expected)


def test_compiled_steps_train_like_eager_steps(tmp_path):
    from torch._dynamo.utils import counters

    eager = seed_runner(tmp_path / 'eager', epochs=1)
    eager.train()
    counters.clear()
    compiled = seed_runner(tmp_path / 'compiled', epochs=1, model=fresh_model(),
                           compile=EAGER)
    compiled.train()
    # The compiled path ran: dynamo built graphs, and the fused step holds the lr as a
    # 0-d tensor where the eager optimizer keeps a float.
    assert counters['stats']['unique_graphs'] >= 1, dict(counters['stats'])
    assert isinstance(compiled.optim_wrapper.optimizer.param_groups[0]['lr'], torch.Tensor)
    assert type(eager.optim_wrapper.optimizer.param_groups[0]['lr']) is float
    for (name, a), b in zip(eager.model.named_parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert compiled.val_loop.last_metrics['Accuracy'] == pytest.approx(
        float(eager.val_loop.last_metrics['Accuracy']))


def test_validation_with_fp16_runs_under_bfloat16_autocast_on_the_cpu(tmp_path):
    seen = []

    class Spy(NeuralNetwork):
        def forward(self, img, label, mode='tensor'):
            seen.append((mode, torch.is_autocast_enabled('cpu'),
                         torch.get_autocast_dtype('cpu')))
            return super().forward(img, label, mode)

    seed_runner(tmp_path, epochs=1, model=fresh_model(Spy)).train()
    assert {s for s in seen if s[0] == 'loss'} == {('loss', False, torch.bfloat16)}
    assert {s for s in seen if s[0] == 'predict'} == {('predict', True, torch.bfloat16)}


def test_the_same_seed_gives_the_same_run(tmp_path):
    from test_resume import make_runner

    # Dropout, noisy samples and a shuffling DefaultSampler: the run draws random
    # numbers, so only the runner's seeding (not the global state before it) can make
    # two runs equal.
    def run(folder, seed, global_seed):
        torch.manual_seed(global_seed)
        runner = make_runner(tmp_path / folder, length=1, validate=False,
                             randomness=dict(seed=seed, deterministic=True))
        runner.train()
        return [p.detach().clone() for p in runner.model.parameters()]

    first, again, other = run('a', 7, global_seed=1), run('b', 7, global_seed=2), \
        run('c', 8, global_seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, c) for a, c in zip(first, other))


# -- loops -----------------------------------------------------------------------------
def test_an_iteration_based_run_validates_every_val_interval(tmp_path):
    recorder = Recorder()
    runner = seed_runner(tmp_path, train_cfg=dict(by_epoch=False, max_iters=14, val_interval=5),
                         custom_hooks=[recorder],
                         default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=5,
                                                            by_epoch=False)))
    runner.train()
    assert runner.iter == 14
    assert recorder.calls.count("after_val_epoch") == 3  # after iterations 5, 10 and 14
    assert recorder.calls.count('after_train_iter') == 14
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_10.pth', 'iter_14.pth',
                                                              'iter_5.pth']
    log = (tmp_path / runner.timestamp / f'{runner.timestamp}.log').read_text()
    assert 'Iter(train) [10/14]' in log


def test_hooks_see_every_point_in_order_with_the_step_outputs(tmp_path):
    recorder = Recorder()
    train, val = loaders()
    runner = seed_runner(tmp_path, epochs=1, custom_hooks=[recorder], test_dataloader=val,
                         test_evaluator=FashionMnistMetric())
    runner.train()
    calls = recorder.calls
    assert calls[:4] == ['before_run', 'before_train', 'before_train_epoch', 'before_train_iter']
    assert calls.index('after_train_epoch') < calls.index('before_val') < \
        calls.index('after_val_epoch') < calls.index('after_train') < calls.index('after_run')
    assert calls.count('before_save_checkpoint') == 1
    assert all(set(out) == {'loss'} for out in recorder.outputs['train'])
    pred, loss = recorder.outputs['val'][0]
    assert pred.shape == (16,) and isinstance(loss, float)
    metrics = runner.test()
    assert set(metrics) == {'Accuracy', 'Avg_loss'} and len(recorder.outputs['test']) == 3


def test_hooks_run_by_priority_then_registration_order(tmp_path):
    order = []

    class Named(Hook):
        def __init__(self, name):
            self.name = name

        def before_run(self, runner):
            order.append(self.name)

    runner = seed_runner(tmp_path, custom_hooks=[Named('normal'), dict(type=Named, name='x')])
    runner.register_hook(Named('first'), priority='HIGHEST')
    runner.register_hook(Named('low'), priority=80)
    runner.register_hook(Named('normal2'))
    runner.call_hook('before_run')
    assert order == ['first', 'normal', 'x', 'normal2', 'low']
    names = [type(h).__name__ for h in runner.hooks]
    assert names.index('IterTimerHook') < names.index('LoggerHook') < \
        names.index('ParamSchedulerHook') < names.index('CheckpointHook')


def test_a_default_hook_set_to_none_is_not_registered(tmp_path):
    runner = seed_runner(tmp_path, epochs=1, default_hooks=dict(checkpoint=None))
    assert 'CheckpointHook' not in [type(h).__name__ for h in runner.hooks]
    runner.train()
    assert not list(tmp_path.glob('*.pth'))


def test_a_bad_hook_priority_names_the_choices(tmp_path):
    runner = seed_runner(tmp_path)
    before = runner.hooks
    hook = Hook()
    message = ("unknown priority 'NORMALL' Did you mean 'NORMAL' or 'BELOW_NORMAL' or "
               "'ABOVE_NORMAL'?; choose one of 'ABOVE_NORMAL', 'BELOW_NORMAL', 'HIGH', "
               "'HIGHEST', 'LOW', 'LOWEST', 'NORMAL', 'VERY_HIGH', 'VERY_LOW' or an int in "
               "[0, 100]")
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        runner.register_hook(hook, priority='NORMALL')
    assert runner.hooks == before and hook.priority == 'NORMAL'  # nothing changed
    with pytest.raises(TypeError, match='Hook'):
        runner.register_hook(object())
    assert runner.hooks == before


def test_param_schedulers_change_the_logged_lr(tmp_path):
    runner = seed_runner(tmp_path, epochs=3, param_scheduler=dict(
        type='MultiStepLR', by_epoch=True, milestones=[1, 2], gamma=0.1))
    runner.train()
    lines = [json.loads(x) for x in
             (tmp_path / runner.timestamp / 'vis_data' / 'scalars.json').read_text().splitlines()]
    lrs = sorted({(x['epoch'], round(x['lr'], 8)) for x in lines if 'lr' in x})
    assert lrs == [(1, 0.1), (2, 0.01), (3, 0.001)]


def test_a_warm_up_by_iteration_under_compiled_steps_does_not_recompile(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    runner = seed_runner(tmp_path, epochs=2, compile=EAGER, param_scheduler=dict(
        type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8))
    runner.train()
    assert runner.optim_wrapper.get_lr()['lr'][0] == pytest.approx(0.1)
    # The compiled step ran (it holds the lr as a tensor)...
    assert isinstance(runner.optim_wrapper.optimizer.param_groups[0]['lr'], torch.Tensor)
    # ...with a training graph, a last-batch shape at most, and the eval step: not one
    # per lr.
    assert 1 <= counters['stats']['unique_graphs'] <= 6, dict(counters['stats'])


# -- data from configs ------------------------------------------------------------------
@DATASETS.register_module(force=True)
class TinyImages(Dataset):
    def __init__(self, n: int = 64, seed: int = 0):
        self.data = images(n, seed)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i]


def test_dataloaders_may_be_configs_with_a_seeded_sampler(tmp_path):
    def first_batch_labels(folder):
        runner = seed_runner(
            tmp_path / folder, epochs=1,
            train_dataloader=dict(dataset=dict(type='TinyImages', n=64), batch_size=8,
                                  sampler=dict(type='DefaultSampler', shuffle=True)),
            val_dataloader=dict(dataset=TinyImages(24, seed=1), batch_size=8,
                                sampler=dict(type='DefaultSampler', shuffle=False)))
        return next(iter(runner.train_dataloader))[1]

    a, b = first_batch_labels('a'), first_batch_labels('b')
    assert torch.equal(a, b)
    assert not torch.equal(a, images(64)[:8][1])  # shuffled


class SeededSubSampler(DefaultSampler):
    """A DefaultSampler subclass whose seed goes through ``**kwargs``."""

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)


DATA_SAMPLERS.register_module(force=True, module=SeededSubSampler)


class UnseededSampler(Sampler):
    """A sampler without a seed parameter: it must still build."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        return iter(range(len(self.dataset)))

    def __len__(self):
        return len(self.dataset)


@pytest.mark.parametrize('sampler_type', [DefaultSampler, 'SeededSubSampler',
                                          SeededSubSampler])
def test_every_sampler_that_takes_a_seed_gets_the_runs_seed(tmp_path, sampler_type):
    runner = seed_runner(tmp_path, randomness=dict(seed=123), train_dataloader=dict(
        dataset=TinyImages(16), batch_size=8, sampler=dict(type=sampler_type)))
    assert runner.train_dataloader.sampler.seed == 123


def test_a_sampler_config_that_sets_its_seed_keeps_it_and_others_get_none():
    loader = build_dataloader(dict(dataset=TinyImages(16), batch_size=8,
                                   sampler=dict(type=DefaultSampler, seed=5)), seed=123)
    assert loader.sampler.seed == 5
    loader = build_dataloader(dict(dataset=TinyImages(16), batch_size=8,
                                   sampler=dict(type=UnseededSampler)), seed=123)
    assert isinstance(loader.sampler, UnseededSampler)


def test_every_dataloader_argument_of_torch_is_accepted():
    generator = torch.Generator()
    loader = build_dataloader(dict(dataset=TinyImages(16), batch_size=8, generator=generator,
                                   multiprocessing_context=None, pin_memory_device='',
                                   in_order=False))
    assert loader.generator is generator and loader.in_order is False
    assert len(list(loader)) == 2


def test_a_batch_sampler_config_is_built_around_the_sampler():
    loader = build_dataloader(dict(
        dataset=TinyImages(20), batch_size=8, drop_last=True,
        sampler=dict(type='DefaultSampler', shuffle=False),
        batch_sampler=dict(type=BatchSampler)), seed=3)
    assert isinstance(loader.batch_sampler, BatchSampler)
    assert isinstance(loader.batch_sampler.sampler, DefaultSampler)
    assert list(loader.batch_sampler) == [list(range(8)), list(range(8, 16))]
    # Without a sampler, the default one, shuffled as `shuffle` says and seeded.
    loader = build_dataloader(dict(dataset=TinyImages(20), batch_size=8, shuffle=False,
                                   batch_sampler=dict(type=BatchSampler, drop_last=False)),
                              seed=3)
    inner = loader.batch_sampler.sampler
    assert isinstance(inner, DefaultSampler) and not inner.shuffle and inner.seed == 3
    assert [len(b) for b in loader.batch_sampler] == [8, 8, 4]


def test_an_unregistered_batch_sampler_config_is_named():
    with pytest.raises(KeyError, match="train_dataloader: batch_sampler type "
                                       "'AspectRatioBatchSampler' is not in the data "
                                       "sampler registry"):
        build_dataloader(dict(dataset=TinyImages(16), batch_size=8,
                              batch_sampler=dict(type='AspectRatioBatchSampler')),
                         what='train_dataloader')


@pytest.mark.parametrize('extra,keys', [
    (dict(shuffle=True, sampler=dict(type='DefaultSampler')), "'shuffle' and 'sampler'"),
    (dict(shuffle=False, sampler=dict(type='DefaultSampler')), "'shuffle' and 'sampler'"),
    (dict(sampler=dict(type='DefaultSampler'), batch_sampler='built'),
     "'sampler' and 'batch_sampler'"),
    (dict(shuffle=True, batch_sampler='built'), "'shuffle' and 'batch_sampler'"),
])
def test_keys_that_exclude_each_other_are_named_instead_of_one_being_dropped(extra, keys):
    dataset = TinyImages(16)
    if extra.get('batch_sampler') == 'built':
        extra['batch_sampler'] = BatchSampler(SequentialSampler(dataset), 4, False)
    with pytest.raises(ValueError, match=f'^val_dataloader: {keys} are both given'):
        build_dataloader(dict(dataset=dataset, **extra), what='val_dataloader')


def test_a_dataloader_config_with_an_unknown_key_names_it(tmp_path):
    runner = seed_runner(tmp_path, train_dataloader=dict(dataset=TinyImages(), batchsize=8))
    with pytest.raises(TypeError, match="batchsize.*batch_size"):
        runner.train()


# -- bad input ------------------------------------------------------------------------
def test_train_without_its_parts_says_what_is_missing(tmp_path):
    runner = Runner(model=fresh_model(), work_dir=tmp_path)
    with pytest.raises(ValueError, match='train_dataloader, optim_wrapper, train_cfg'):
        runner.train()
    train, _ = loaders()
    with pytest.raises(ValueError, match='optim_wrapper'):
        Runner(model=fresh_model(), work_dir=tmp_path, train_dataloader=train,
               train_cfg=dict(max_epochs=1))


def test_a_val_interval_without_a_val_dataloader_is_an_error(tmp_path):
    train, _ = loaders()
    with pytest.raises(ValueError, match='val_interval.*no val_dataloader'):
        Runner(model=fresh_model(), work_dir=tmp_path, train_dataloader=train,
               optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
               train_cfg=dict(max_epochs=1, val_interval=1))


def test_an_evaluator_returning_a_non_dict_is_an_error(tmp_path):
    runner = seed_runner(tmp_path, epochs=1)
    runner.val_loop.evaluator.evaluate = lambda size: [1, 2]
    with pytest.raises(TypeError, match='evaluator must return a dict'):
        runner.val()


def test_a_metric_that_raises_is_named(tmp_path):
    class Broken(FashionMnistMetric):
        def compute_metrics(self, results):
            raise ZeroDivisionError('oops')

    runner = seed_runner(tmp_path, val_evaluator=Broken())
    with pytest.raises(ZeroDivisionError,
                       match=r'^Broken\.evaluate raised ZeroDivisionError: oops'):
        runner.val()


def test_a_loss_that_becomes_nan_stops_with_the_iteration_and_saves_nothing(tmp_path):
    class Diverging(NeuralNetwork):
        calls = 0

        def forward(self, img, label, mode='tensor'):
            out = super().forward(img, label, mode)
            if mode == 'loss':
                Diverging.calls += 1
                if Diverging.calls >= 9:
                    out['loss'] = out['loss'] * float('nan')
            return out

    runner = seed_runner(tmp_path, epochs=3, model=fresh_model(Diverging),
                         default_hooks=dict(logger=dict(type='LoggerHook', interval=4)))
    with pytest.raises(NonFiniteLossError, match=r'iteration 9.*loss=nan'):
        runner.train()
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_1.pth']


def test_a_batch_of_an_unexpected_type_is_a_clear_error(tmp_path):
    runner = seed_runner(tmp_path, epochs=1, train_dataloader=DataLoader(
        ['a', 'b', 'c'], batch_size=None))
    with pytest.raises(TypeError, match='batch must be a dict.*tuple.*returned str'):
        runner.train()


def test_from_cfg_names_a_misspelt_argument(tmp_path):
    with pytest.raises(ValueError, match="config key 'trian_cfg' .* Did you mean 'train_cfg'"):
        Runner.from_cfg(dict(model=fresh_model(), work_dir=str(tmp_path), trian_cfg={}))


def test_from_cfg_builds_a_runner_that_trains(tmp_path):
    train, val = loaders()
    runner = Runner.from_cfg(dict(
        model=fresh_model(), work_dir=str(tmp_path), train_dataloader=train,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=1), randomness=dict(seed=3)))
    runner.train()
    assert runner.seed == 3 and runner.iter == 6


def test_an_unknown_randomness_key_names_it_a_close_match_and_the_choices(tmp_path):
    with pytest.raises(TypeError, match=r"^randomness has unknown key\(s\) \['sed'\] Did you "
                                        r"mean 'seed'\?; accepted: 'deterministic', 'diff_rank_seed', "
                                        r"'seed'$"):
        Runner(model=fresh_model(), work_dir=tmp_path, randomness=dict(sed=1))


@pytest.mark.parametrize('seed', ['3', 2.0, True])
def test_a_seed_that_is_not_an_int_is_refused(tmp_path, seed):
    with pytest.raises(TypeError, match=f'^randomness seed must be an int or None, but got '
                                        f'{re.escape(repr(seed))}$'):
        Runner(model=fresh_model(), work_dir=tmp_path, randomness=dict(seed=seed))


def test_without_a_seed_one_is_drawn_and_logged(tmp_path):
    runner = Runner(model=fresh_model(), work_dir=tmp_path)
    assert isinstance(runner.seed, int) and 0 <= runner.seed < 2**31
    assert f'seed: {runner.seed}' in (tmp_path / runner.timestamp /
                                      f'{runner.timestamp}.log').read_text()


def test_the_log_file_has_the_seed_format_whatever_the_console_handlers(tmp_path, monkeypatch):
    logger = logging.getLogger('fengine')
    # A handler of the user's in front, without a formatter: the file keeps the format.
    monkeypatch.setattr(logger, 'handlers', [logging.NullHandler(), *logger.handlers])
    runner = Runner(model=fresh_model(), work_dir=tmp_path, randomness=dict(seed=0))
    try:
        text = (tmp_path / runner.timestamp / f'{runner.timestamp}.log').read_text()
        assert re.match(r'^\d\d/\d\d \d\d:\d\d:\d\d - fengine - INFO - ', text), text[:200]
    finally:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
                handler.close()


def test_an_unknown_launcher_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"^launcher must be one of 'none', 'pytorch', but "
                                         r"got 'pytroch'\. Did you mean 'pytorch'\?$"):
        Runner(model=fresh_model(), work_dir=tmp_path, launcher='pytroch')


@pytest.mark.parametrize('launcher', ['slurm', 'mpi'])
def test_mmengines_slurm_and_mpi_launchers_are_refused_naming_the_supported(tmp_path, launcher):
    with pytest.raises(ValueError, match=rf"^launcher='{launcher}' \(MMEngine's\) is not "
                                         r"supported: .*torchrun.*launcher='pytorch' "
                                         r"\(supported: 'none', 'pytorch'\)$"):
        Runner(model=fresh_model(), work_dir=tmp_path, launcher=launcher)


# -- model wrappers ---------------------------------------------------------------------------
class WithModuleChild(NeuralNetwork):
    """The seed's model with a child layer named ``module``: not a wrapper."""

    def __init__(self):
        super().__init__()
        self.module = nn.Linear(4, 4)


def test_only_ddp_and_data_parallel_are_model_wrappers():
    model = fresh_model(WithModuleChild)
    assert not is_model_wrapper(model) and unwrap_model(model) is model
    wrapped = nn.DataParallel(model)
    assert is_model_wrapper(wrapped) and unwrap_model(wrapped) is model
    assert issubclass(MMDistributedDataParallel, nn.parallel.DistributedDataParallel)
    assert not is_model_wrapper(nn.Linear(2, 2))
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    optimized = {id(p) for g in wrapper.optimizer.param_groups for p in g['params']}
    assert optimized == {id(p) for p in model.parameters()}


def test_a_child_named_module_is_saved_with_the_rest_of_the_model(tmp_path):
    runner = seed_runner(tmp_path, epochs=1, model=fresh_model(WithModuleChild))
    runner.train()
    saved = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)['state_dict']
    assert saved.keys() == runner.model.state_dict().keys()
    assert {'module.weight', 'linear_relu_stack.0.weight'} <= saved.keys()


# -- checkpoints ----------------------------------------------------------------------------
def test_load_from_loads_weights_instead_of_initializing(tmp_path):
    first = seed_runner(tmp_path / 'a', epochs=1)
    first.train()
    second = seed_runner(tmp_path / 'b', epochs=1, model=fresh_model(),
                         load_from=str(tmp_path / 'a' / 'epoch_1.pth'))
    metrics = second.val()
    assert metrics['Accuracy'] == pytest.approx(float(first.val_loop.last_metrics['Accuracy']))


def test_a_checkpoint_of_another_model_leaves_the_model_unchanged(tmp_path):
    class Wider(NeuralNetwork):
        def __init__(self):
            super().__init__()
            self.linear_relu_stack[0] = nn.Linear(28 * 28, 256)
            self.linear_relu_stack[2] = nn.Linear(256, 512)

    other = seed_runner(tmp_path / 'a', epochs=1, model=fresh_model(Wider))
    other.train()
    runner = seed_runner(tmp_path / 'b', epochs=1, model=NeuralNetwork())
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    with pytest.raises(RuntimeError, match=r'linear_relu_stack.0.weight: checkpoint \(256, 784\)'):
        runner.load_checkpoint(tmp_path / 'a' / 'epoch_1.pth')
    for k, v in runner.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_resume_continues_where_the_last_checkpoint_left_off(tmp_path):
    full = seed_runner(tmp_path / 'full', epochs=3,
                       optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    full.train()
    part = seed_runner(tmp_path / 'part', epochs=2, model=fresh_model(),
                       optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    part.train()
    resumed = seed_runner(tmp_path / 'part', epochs=3, model=fresh_model(), resume=True,
                          optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    resumed.train()
    assert resumed.epoch == 3 and resumed.iter == 18
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_resume_without_a_checkpoint_starts_from_scratch_with_a_warning(tmp_path, fengine_log):
    runner = seed_runner(tmp_path, epochs=1, resume=True)
    runner.train()
    assert 'no checkpoint' in fengine_log.text and runner.iter == 6


def test_max_keep_ckpts_keeps_the_newest_and_save_best_the_best(tmp_path):
    runner = seed_runner(tmp_path, epochs=4, default_hooks=dict(checkpoint=dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=2, save_best='auto')))
    runner.train()
    names = sorted(p.name for p in tmp_path.glob('*.pth'))
    assert [n for n in names if n.startswith('epoch')] == ['epoch_3.pth', 'epoch_4.pth']
    best = [n for n in names if n.startswith('best')]
    assert len(best) == 1 and best[0].startswith('best_Accuracy_epoch_')


def test_tensorboard_events_are_written_when_asked_for(tmp_path):
    pytest.importorskip('tensorboard')
    runner = seed_runner(tmp_path, epochs=1, visualizer=dict(
        vis_backends=[dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]))
    runner.train()
    assert list((tmp_path / runner.timestamp / 'vis_data').rglob('events.out.tfevents.*'))


def test_log_values_are_read_once_per_log_line_not_every_iteration(tmp_path, monkeypatch):
    from fengine.runner.message_hub import MessageHub

    reads = []
    original = MessageHub.sync

    def counting_sync(self):
        records = original(self)
        if records:
            reads.append(len(records))
        return records

    monkeypatch.setattr(MessageHub, 'sync', counting_sync)
    runner = seed_runner(tmp_path, epochs=1, compile=EAGER, default_hooks=dict(
        logger=dict(type='LoggerHook', interval=3), checkpoint=None))
    runner.train()
    # 6 iterations: two log lines, each reading 3 queued iterations; then the
    # validation line reads the metrics (tensors) in one more.
    assert reads == [3, 3, 1]


def test_the_message_hub_state_keeps_its_facts_and_every_kept_scalar():
    from fengine.runner.message_hub import MessageHub

    hub = MessageHub('state')
    hub.update_info('best', 0.5)
    for i in range(1005):
        hub.update_scalar('train/loss', i)
    hub.update_scalar('train/acc', torch.tensor(0.25))  # read by state_dict
    state = hub.state_dict()
    assert state['runtime_info'] == {'best': 0.5}
    assert set(state['log_scalars']) == {'train/loss', 'train/acc'}
    loss = state['log_scalars']['train/loss']['data']
    assert loss.dtype == torch.float64 and loss.tolist() == list(range(1005))
    other = MessageHub('state_other')
    other.load_state_dict(state)
    assert other.get_info('best') == 0.5
    assert other.history('train/loss') == hub.history('train/loss')
    assert other.history('train/acc') == [0.25]
    facts_only = MessageHub('facts_only')
    facts_only.load_state_dict({'runtime_info': {'x': 1}})
    assert facts_only.get_info('x') == 1 and list(facts_only.log_scalars) == []


def test_validation_shows_a_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    runner = seed_runner(tmp_path, epochs=1)
    monkeypatch.setattr('sys.stdout.isatty', lambda: True, raising=False)
    import tqdm

    bars = []
    original = tqdm.tqdm.__init__

    def spy(self, *args, **kwargs):
        bars.append(kwargs.get('desc'))
        original(self, *args, **kwargs)

    monkeypatch.setattr(tqdm.tqdm, '__init__', spy)
    runner.val()
    assert bars == ['val']


def test_an_epoch_schedule_converted_to_iterations_changes_the_lr_every_iteration(tmp_path):
    lrs = []

    class Lr(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            lrs.append(runner.optim_wrapper.get_lr()['lr'][0])

    runner = seed_runner(tmp_path, epochs=2, custom_hooks=[Lr()], param_scheduler=dict(
        type='CosineAnnealingLR', T_max=2, by_epoch=True, convert_to_iter_based=True))
    runner.train()
    # 6 iterations an epoch: a cosine over 12 iterations, from 0.1 down.
    expected = [0.05 * (1 + math.cos(math.pi * i / 12)) for i in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-6)
