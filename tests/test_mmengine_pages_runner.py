"""MMEngine's pages about the Runner, run with ``fengine`` imports on small CPU data.

Pages: 'Get Started in 15 Minutes', tutorial 'Runner' (all but ``Config.fromfile``),
'Debug Tricks', 'How to Set Random Seed', 'Speed up Training', 'Save Memory on GPU'.
Each test does what a snippet does, with torchvision's ``FakeData`` or small tensors for
CIFAR-10, a small CNN for the ResNet-50 (two CPU cores), fewer epochs, and checks what
the page says.
"""
from __future__ import annotations

import multiprocessing

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as transforms
from torch.optim import SGD, Adam
from torch.utils.data import DataLoader, Dataset, default_collate

from fengine.evaluator import BaseMetric
from fengine.hooks import Hook
from fengine.model import BaseModel
from fengine.registry import DATASETS, METRICS, MODELS
from fengine.runner import Runner

# The pages register their classes: those tests take conftest's fresh_registries.
EAGER = dict(backend='aot_eager')


# -- 'Get Started in 15 Minutes' ---------------------------------------------------------------
class MMResNet(BaseModel):
    def __init__(self):
        super().__init__()
        # The page's torchvision.models.resnet50(), shrunk for the CPU.
        self.resnet = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, imgs, labels, mode):
        x = self.resnet(imgs)
        if mode == 'loss':
            return {'loss': F.cross_entropy(x, labels)}
        elif mode == 'predict':
            return x, labels


class Accuracy(BaseMetric):
    def process(self, data_batch, data_samples):
        score, gt = data_samples
        self.results.append({
            'batch_size': len(gt),
            'correct': (score.argmax(dim=1) == gt).sum().cpu(),
        })

    def compute_metrics(self, results):
        total_correct = sum(item['correct'] for item in results)
        total_size = sum(item['batch_size'] for item in results)
        return dict(accuracy=100 * total_correct / total_size)


norm_cfg = dict(mean=[0.491, 0.482, 0.447], std=[0.202, 0.199, 0.201])


def cifar_like(size: int, train: bool):
    """CIFAR-10's shape and transforms, on FakeData (no download)."""
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] \
        if train else []
    return torchvision.datasets.FakeData(
        size=size, image_size=(3, 32, 32), num_classes=10, random_offset=0 if train else 1,
        transform=transforms.Compose([*augment, transforms.ToTensor(),
                                      transforms.Normalize(**norm_cfg)]))


def test_15_minutes_trains_a_resnet_and_validates_every_epoch(tmp_path, fengine_log):
    train_dataloader = DataLoader(batch_size=8, shuffle=True, dataset=cifar_like(16, True))
    val_dataloader = DataLoader(batch_size=8, shuffle=False, dataset=cifar_like(8, False))
    runner = Runner(
        model=MMResNet(),
        work_dir=str(tmp_path / 'work_dir'),
        train_dataloader=train_dataloader,
        optim_wrapper=dict(optimizer=dict(type=SGD, lr=0.001, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
        val_dataloader=val_dataloader,
        val_cfg=dict(),
        val_evaluator=dict(type=Accuracy),
    )
    runner.train()
    log = fengine_log.text
    assert runner.iter == 4 and 'Epoch(val) [1][1/1]' in log and 'Epoch(val) [2][1/1]' in log
    assert 'accuracy: ' in log and 'Saved checkpoint epoch_2.pth' in log
    assert (tmp_path / 'work_dir' / 'epoch_2.pth').is_file()


# -- tutorial 'Runner' ---------------------------------------------------------------------------
def register_tutorial_classes():
    @MODELS.register_module()
    class MyAwesomeModel(BaseModel):
        def __init__(self, layers=4, activation='relu') -> None:
            super().__init__()
            if activation == 'relu':
                act_type = nn.ReLU
            elif activation == 'silu':
                act_type = nn.SiLU
            elif activation == 'none':
                act_type = nn.Identity
            else:
                raise NotImplementedError
            sequence = [nn.Linear(2, 64), act_type()]
            for _ in range(layers - 1):
                sequence.extend([nn.Linear(64, 64), act_type()])
            self.mlp = nn.Sequential(*sequence)
            self.classifier = nn.Linear(64, 2)

        def forward(self, data, labels, mode):
            x = self.mlp(data)
            x = self.classifier(x)
            if mode == 'tensor':
                return x
            elif mode == 'predict':
                return F.softmax(x, dim=1), labels
            elif mode == 'loss':
                return {'loss': F.cross_entropy(x, labels)}

    @DATASETS.register_module()
    class MyDataset(Dataset):
        def __init__(self, is_train, size):
            self.is_train = is_train
            if self.is_train:
                torch.manual_seed(0)
                self.labels = torch.randint(0, 2, (size,))
            else:
                torch.manual_seed(3407)
                self.labels = torch.randint(0, 2, (size,))
            r = 3 * (self.labels + 1) + torch.randn(self.labels.shape)
            theta = torch.rand(self.labels.shape) * 2 * torch.pi
            self.data = torch.vstack([r * torch.cos(theta), r * torch.sin(theta)]).T

        def __getitem__(self, index):
            return self.data[index], self.labels[index]

        def __len__(self):
            return len(self.data)

    @METRICS.register_module(name='Accuracy', force=True)
    class TutorialAccuracy(BaseMetric):
        def __init__(self):
            super().__init__()

        def process(self, data_batch, data_samples):
            score, gt = data_samples
            self.results.append({
                'batch_size': len(gt),
                'correct': (score.argmax(dim=1) == gt).sum().cpu(),
            })

        def compute_metrics(self, results):
            total_correct = sum(r['correct'] for r in results)
            total_size = sum(r['batch_size'] for r in results)
            return dict(accuracy=100 * total_correct / total_size)

    return MyAwesomeModel, MyDataset, TutorialAccuracy


@pytest.fixture
def restore_start_method():
    method = multiprocessing.get_start_method(allow_none=True)
    yield
    multiprocessing.set_start_method(method, force=True)


class ValRecorder(Hook):
    def __init__(self):
        self.epochs, self.lrs = [], []

    def before_train_epoch(self, runner):
        self.lrs.append(runner.optim_wrapper.optimizer.param_groups[0]['lr'])

    def after_val_epoch(self, runner, metrics=None):
        self.epochs.append((runner.epoch, float(metrics['accuracy'])))


def test_the_runner_tutorials_long_example_runs_as_written(tmp_path, fresh_registries,
                                                           restore_start_method):
    MyAwesomeModel, MyDataset, TutorialAccuracy = register_tutorial_classes()
    recorder = ValRecorder()
    runner = Runner(
        model=MyAwesomeModel(layers=2, activation='relu'),
        work_dir=str(tmp_path / 'exp/my_awesome_model'),
        train_dataloader=DataLoader(dataset=MyDataset(is_train=True, size=640), shuffle=True,
                                    collate_fn=default_collate, batch_size=64,
                                    pin_memory=False, num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=5, val_begin=2, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type=Adam, lr=0.001)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=True, milestones=[4, 8], gamma=0.1),
        val_dataloader=DataLoader(dataset=MyDataset(is_train=False, size=200), shuffle=False,
                                  collate_fn=default_collate, batch_size=200, pin_memory=False,
                                  num_workers=0),
        val_cfg=dict(),
        val_evaluator=dict(type=TutorialAccuracy),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=[recorder],
        launcher='none',
        # The tutorial writes backend at the top level of env_cfg; it is dist_cfg's backend.
        env_cfg=dict(cudnn_benchmark=False, backend='nccl',
                     mp_cfg=dict(mp_start_method='fork')),
        log_level='INFO',
        load_from=None,
        resume=False)
    runner.train()
    assert runner.env_cfg['dist_cfg'] == dict(backend='nccl')
    # Validation from the 2nd epoch on (val_begin=2), every epoch after.
    assert [epoch for epoch, _ in recorder.epochs] == [2, 3, 4, 5]
    accuracies = [accuracy for _, accuracy in recorder.epochs]
    assert accuracies[-1] > 50 and accuracies[-1] >= accuracies[0]  # it learns
    assert recorder.lrs == pytest.approx([1e-3] * 4 + [1e-4])  # milestones=[4, 8]
    assert sorted(p.name for p in (tmp_path / 'exp/my_awesome_model').glob('*.pth')) == \
        [f'epoch_{i}.pth' for i in range(1, 6)]


def test_the_tutorials_model_config_builds_the_same_model_as_the_instance(tmp_path,
                                                                         fresh_registries):
    MyAwesomeModel, _, _ = register_tutorial_classes()
    by_config = Runner(model=dict(type='MyAwesomeModel', layers=3, activation='silu'),
                       work_dir=tmp_path, log_level='WARNING')
    assert isinstance(by_config.model, MyAwesomeModel)
    assert len(by_config.model.mlp) == 6 and isinstance(by_config.model.mlp[1], nn.SiLU)


def test_the_tutorials_config_as_a_dict_goes_through_from_cfg(tmp_path, fresh_registries,
                                                             restore_start_method):
    register_tutorial_classes()
    # The tutorial's example_config.py, as the dict Config.fromfile would give.
    cfg = dict(
        model=dict(type='MyAwesomeModel', layers=2, activation='relu'),
        work_dir=str(tmp_path / 'exp/my_awesome_model'),
        train_dataloader=dict(dataset=dict(type='MyDataset', is_train=True, size=256),
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate'), batch_size=64,
                              pin_memory=False, num_workers=0),
        train_cfg=dict(by_epoch=True, max_epochs=3, val_begin=2, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=0.001)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=True, milestones=[4, 8], gamma=0.1),
        val_dataloader=dict(dataset=dict(type='MyDataset', is_train=False, size=100),
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            collate_fn=dict(type='default_collate'), batch_size=100,
                            pin_memory=False, num_workers=0),
        val_cfg=dict(),
        val_evaluator=dict(type='Accuracy'),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        launcher='none',
        env_cfg=dict(cudnn_benchmark=False, backend='nccl', mp_cfg=dict(mp_start_method='fork')),
        log_level='INFO',
        load_from=None,
        resume=False)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.epoch == 3 and runner.iter == 12
    assert (tmp_path / 'exp/my_awesome_model' / f'{runner.timestamp}.py').is_file()


# -- 'Debug Tricks' --------------------------------------------------------------------------
def test_num_batch_per_epoch_runs_each_epoch_for_that_many_batches(tmp_path, fengine_log):
    train_dataloader = dict(
        batch_size=4,
        dataset=cifar_like(64, True),
        sampler=dict(type='DefaultSampler', shuffle=True),
        collate_fn=dict(type='default_collate'),
        num_batch_per_epoch=5)
    val_dataloader = dict(
        batch_size=4,
        dataset=cifar_like(64, False),
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='default_collate'),
        num_batch_per_epoch=5)
    runner = Runner(
        model=MMResNet(),
        work_dir=str(tmp_path / 'work_dir'),
        train_dataloader=train_dataloader,
        optim_wrapper=dict(optimizer=dict(type=SGD, lr=0.001, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
        val_dataloader=val_dataloader,
        val_cfg=dict(),
        val_evaluator=dict(type=Accuracy),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=5)),
        launcher='none',
    )
    runner.train()
    log = fengine_log.text
    assert 'Epoch(train) [1][5/5]' in log and 'Epoch(train) [2][5/5]' in log
    assert 'Epoch(val) [2][5/5]' in log
    assert runner.iter == 10


# -- 'How to Set Random Seed' -------------------------------------------------------------------
_TORCH_DEFAULT_SEED = 67280421310721


def seeded_run(tmp_path, name: str, randomness: dict) -> list[float]:
    losses = []

    class Losses(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.append(float(outputs['loss']))

    with torch.random.fork_rng():
        # Each run of the page is a new process, where torch's generator starts from its
        # default seed when the model is built (before the Runner seeds anything).
        torch.manual_seed(_TORCH_DEFAULT_SEED)
        model = MMResNet()
    runner = Runner(
        model=model,
        work_dir=str(tmp_path / name),
        train_dataloader=dict(batch_size=4, dataset=cifar_like(8, True),
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type=SGD, lr=0.001, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=None),
        custom_hooks=[Losses()],
        log_level='WARNING',
        randomness=randomness,
    )
    runner.train()
    return losses


def test_the_same_randomness_seed_repeats_the_run(tmp_path):
    first = seeded_run(tmp_path, 'a', dict(seed=0))
    assert seeded_run(tmp_path, 'b', dict(seed=0)) == first
    assert seeded_run(tmp_path, 'c', dict(seed=0, diff_rank_seed=True, deterministic=True)) \
        == first  # one process: rank 0 adds nothing
    assert seeded_run(tmp_path, 'd', dict(seed=1)) != first


def test_the_pages_differ_rand_seed_spelling_is_named_with_the_right_one(tmp_path):
    with pytest.raises(TypeError, match=r"randomness has unknown key\(s\) \['differ_rand_seed'\] "
                                        r"Did you mean 'diff_rank_seed'\?"):
        seeded_run(tmp_path, 'e', dict(seed=0, differ_rand_seed=True))


# -- 'Speed up Training' -----------------------------------------------------------------------
def test_amp_optim_wrapper_trains_with_bfloat16_on_the_cpu(tmp_path):
    runner = Runner(
        model=MMResNet(),
        work_dir=str(tmp_path / 'work_dir'),
        train_dataloader=DataLoader(cifar_like(8, True), batch_size=4),
        optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16',
                           optimizer=dict(type='SGD', lr=0.001, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=None), log_level='WARNING')
    runner.train()
    assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper' and runner.iter == 2


@pytest.mark.parametrize('compile', [True, EAGER], ids=['True', 'options'])
def test_cfg_compile_turns_on_compiled_steps(tmp_path, compile):
    runner = Runner(
        model=MMResNet(),
        work_dir=str(tmp_path / 'work_dir'),
        train_dataloader=DataLoader(cifar_like(4, True), batch_size=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.001)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=None), log_level='WARNING',
        cfg=dict(compile=compile))
    options = dict(runner.model._compiled_steps['options'])
    options.pop('background')  # fengine's own key (compiling in a background thread)
    assert options == dict(fullgraph=True, **({} if compile is True else EAGER))
    if compile is not True:  # inductor is too slow for the tests: train with aot_eager
        runner.train()
        assert isinstance(runner.optim_wrapper.optimizer.param_groups[0]['lr'], torch.Tensor)


def test_the_pages_slurm_launch_is_refused_pointing_to_torchrun(tmp_path):
    with pytest.raises(ValueError, match="launcher='slurm'.*torchrun"):
        Runner(model=MMResNet(), work_dir=str(tmp_path), launcher='slurm')


# -- 'Save Memory on GPU' ----------------------------------------------------------------------
# The page's ToyModel is the logging page's, word for word.
from test_mmengine_pages_logging import ToyModel  # noqa: E402


def test_gradient_accumulation_updates_every_fourth_iteration(tmp_path):
    train_dataset = [(torch.ones(1, 1), torch.ones(1, 1))] * 50
    train_dataloader = DataLoader(train_dataset, batch_size=2)
    updates = []

    class CountUpdates(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.before = runner.model.linear.weight.detach().clone()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            updates.append(not torch.equal(self.before, runner.model.linear.weight))

    runner = Runner(
        model=ToyModel(),
        work_dir=str(tmp_path / 'tmp_dir'),
        train_dataloader=train_dataloader,
        train_cfg=dict(by_epoch=True, max_epochs=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01), accumulative_counts=4),
        custom_hooks=[CountUpdates()], log_level='WARNING')
    runner.train()
    # 25 iterations: updates after the 4th, 8th, ..., 24th, and the last (a short window).
    assert [i + 1 for i, changed in enumerate(updates) if changed] == [4, 8, 12, 16, 20, 24, 25]


def test_the_pages_fsdp_wrapper_cfg_trains_unwrapped_in_one_process(tmp_path):
    # Sharding needs torchrun (tests/test_fsdp.py); one process wraps nothing, as MMEngine.
    train_dataloader = DataLoader([(torch.ones(1, 1), torch.ones(1, 1))] * 4, batch_size=2)
    runner = Runner(
            model=ToyModel(),
            work_dir=str(tmp_path / 'tmp_dir'),
            train_dataloader=train_dataloader,
            train_cfg=dict(by_epoch=True, max_epochs=1),
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
            cfg=dict(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel',
                                            cpu_offload=True)))
    runner.train()
    assert type(runner.model) is ToyModel and runner.iter == 2
