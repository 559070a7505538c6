"""MMEngine's pages on evaluation, models, distributed helpers, ManagerMixin, test-time
augmentation and model analysis, run with ``fengine`` imports.

Pages: ``docs/en/tutorials/{evaluation,model}.md``,
``docs/en/advanced_tutorials/{distributed,manager_mixin,test_time_augmentation}.md``,
``docs/en/common_usage/model_analysis.md``. Each test does what a snippet does (small
tensors for datasets, CPU for CUDA) and checks what the page says it does. Left to other
areas: ``mmengine.fileio.load`` (offline evaluation reads its pickles with ``pickle``
here), ``ConfigDict`` (plain dicts here), ``env_cfg=dict(dist_cfg=...)`` (the Runner).
The distributed behaviour of the collectives runs in two processes in ``test_dist.py``.
"""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from fengine import dist
from fengine.analysis import get_model_complexity_info, parameter_count
from fengine.evaluator import BaseMetric, DumpResults, Evaluator, build_evaluator
from fengine.hooks import Hook
from fengine.model import BaseDataPreprocessor, BaseModel, BaseTTAModel
from fengine.optim import OptimWrapper
from fengine.registry import METRICS, MODELS
from fengine.runner import Runner
from fengine.runner.data import pseudo_collate
from fengine.utils import ManagerMixin
from fengine.visualization import Visualizer


@pytest.fixture
def registered():
    """Register classes for one test: ``registered(METRICS, Cls)``; removed afterwards."""
    added = []

    def register(registry, cls):
        registry.register_module(module=cls, force=True)
        added.append((registry, cls.__name__))
        return cls

    yield register
    for registry, name in added:
        registry._module_dict.pop(name, None)


# == tutorials/evaluation.md ===============================================================

class SimpleAccuracy(BaseMetric):
    """The page's custom metric: one dict of predictions and labels per batch."""

    default_prefix = 'ACC'

    def process(self, data_batch, data_samples):
        self.results.append({'pred': data_samples['pred_label'],
                             'gt': data_samples['data_sample']['gt_label']})

    def compute_metrics(self, results):
        preds = np.concatenate([res['pred'] for res in results])
        gts = np.concatenate([res['gt'] for res in results])
        return {'accuracy': (preds == gts).sum() / preds.size}


def test_a_custom_metric_registered_in_metrics_reports_under_its_default_prefix(registered):
    registered(METRICS, SimpleAccuracy)
    evaluator = build_evaluator(dict(type='SimpleAccuracy'))
    evaluator.process(dict(pred_label=np.array([1, 2, 3]),
                           data_sample=dict(gt_label=np.array([1, 2, 0]))))
    evaluator.process(dict(pred_label=np.array([4]), data_sample=dict(gt_label=np.array([4]))))
    assert evaluator.evaluate(size=4) == {'ACC/accuracy': 0.75}
    # The prefix argument replaces default_prefix.
    renamed = build_evaluator(dict(type='SimpleAccuracy', prefix='mine'))
    renamed.process(dict(pred_label=np.array([1]), data_sample=dict(gt_label=np.array([1]))))
    assert renamed.evaluate(size=1) == {'mine/accuracy': 1.0}


def test_an_evaluator_config_with_top_k_names_the_argument_accuracy_takes():
    # The page's dict(type='Accuracy', top_k=(1, 5)) is mmcls's old spelling; fengine's
    # (and mmpretrain's) Accuracy takes topk, and the error says so.
    with pytest.raises(TypeError, match=r"top_k.*Accepted arguments: topk, collect_device, "
                                        r"prefix"):
        build_evaluator(dict(type='Accuracy', top_k=(1, 5)))
    evaluator = build_evaluator(dict(type='Accuracy', topk=(1, 5)))
    scores = torch.eye(6)[[0, 1, 2, 3]] + torch.linspace(0, 0.5, 6)
    evaluator.process([dict(pred_score=s, gt_label=torch.tensor(g))
                       for s, g in zip(scores, [0, 1, 5, 3])])
    assert evaluator.evaluate(size=4) == {'accuracy/top1': 75.0, 'accuracy/top5': 100.0}


def test_a_list_of_metric_configs_evaluates_every_metric(registered):
    registered(METRICS, SimpleAccuracy)
    evaluator = build_evaluator([dict(type='SimpleAccuracy'),
                                 dict(type='SimpleAccuracy', prefix='second')])
    assert len(evaluator.metrics) == 2
    evaluator.process(dict(pred_label=np.array([1, 0]),
                           data_sample=dict(gt_label=np.array([1, 1]))))
    assert evaluator.evaluate(size=2) == {'ACC/accuracy': 0.5, 'second/accuracy': 0.5}


def test_predictions_saved_to_a_file_evaluate_offline_in_chunks(tmp_path):
    predictions = [dict(pred_score=torch.tensor([0.2, 0.8]), gt_label=torch.tensor(i % 2))
                   for i in range(300)]
    dumper = Evaluator(DumpResults(out_file_path=str(tmp_path / 'prediction.pkl')))
    for start in range(0, 300, 64):
        dumper.process(predictions[start:start + 64])
    assert dumper.evaluate(size=300) == {}
    data = [dict(index=i) for i in range(300)]
    with open(tmp_path / 'test_data.pkl', 'wb') as f:
        pickle.dump(data, f)

    with open(tmp_path / 'prediction.pkl', 'rb') as f:  # files this test wrote
        data_samples = pickle.load(f)
    with open(tmp_path / 'test_data.pkl', 'rb') as f:
        data = pickle.load(f)
    evaluator = Evaluator(metrics=dict(type='Accuracy', topk=(1,)))
    # By keyword: offline_evaluate(data_samples, data=None, chunk_size=1) (the page passes
    # them positionally in the other order).
    results = evaluator.offline_evaluate(data_samples=data_samples, data=data, chunk_size=128)
    assert results == {'accuracy/top1': 50.0}


# == tutorials/model.md ====================================================================

class Classifier(BaseModel):
    """The page's MMResNet50 pattern, with a small network."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))

    def forward(self, imgs, labels=None, mode='tensor'):
        x = self.net(imgs)
        if mode == 'loss':
            return {'loss': F.cross_entropy(x, labels)}
        if mode == 'predict':
            return x, labels
        return x


def batch():
    return torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 1])


def test_train_step_is_the_page_preprocess_forward_parse_update_sequence():
    torch.manual_seed(0)
    stepped, by_hand = Classifier(), Classifier()
    by_hand.load_state_dict(stepped.state_dict())
    data = batch()

    log_vars = stepped.train_step(data, OptimWrapper(torch.optim.SGD(stepped.parameters(),
                                                                     lr=0.1)))
    wrapper = OptimWrapper(torch.optim.SGD(by_hand.parameters(), lr=0.1))
    processed = by_hand.data_preprocessor(data, training=True)
    losses = by_hand(*processed, mode='loss')
    parsed, expected_vars = by_hand.parse_losses(losses)
    wrapper.update_params(parsed)

    assert torch.allclose(log_vars['loss'], expected_vars['loss'])
    for a, b in zip(stepped.parameters(), by_hand.parameters()):
        assert torch.equal(a, b)


def test_val_and_test_steps_return_the_predict_outputs_the_evaluator_gets():
    model = Classifier()
    data = batch()
    logits, labels = model.val_step(data)
    assert torch.equal(logits, model(*data)) and torch.equal(labels, data[1])
    test_logits, _ = model.test_step(data)
    assert torch.equal(test_logits, logits)


def test_the_page_validation_loop_feeds_the_evaluator_by_hand():
    class Correct(BaseMetric):
        default_prefix = 'val'

        def process(self, data_batch, data_samples):
            logits, labels = data_samples
            self.results.extend((logits.argmax(1) == labels).tolist())

        def compute_metrics(self, results):
            return dict(acc=sum(results) / len(results))

    model, evaluator = Classifier(), Evaluator(Correct())
    dataset = [(torch.randn(3, 2, 2), torch.tensor(i % 3)) for i in range(10)]
    loader = DataLoader(dataset, batch_size=4)
    expected = []
    for data_batch in loader:
        data_batch = model.data_preprocessor(data_batch, training=False)
        outputs = model(*data_batch, mode='predict')
        evaluator.process(data_samples=outputs, data_batch=data_batch)
        expected.extend((outputs[0].argmax(1) == outputs[1]).tolist())
    assert evaluator.evaluate(len(loader.dataset)) == {'val/acc': sum(expected) / 10}


def test_the_default_data_preprocessor_moves_batches_to_the_model_device():
    model = Classifier()
    assert type(model.data_preprocessor) is BaseDataPreprocessor
    imgs, labels = model.data_preprocessor(batch(), training=True)
    assert imgs.device == next(model.parameters()).device


def test_a_custom_data_preprocessor_sees_training_true_only_in_train_step():
    class MixUp(BaseDataPreprocessor):
        """Mixes each image with the reversed batch, in training only."""
        def forward(self, data, training=False):
            imgs, labels = super().forward(data, training)
            if training:
                imgs = 0.5 * imgs + 0.5 * imgs.flip(0)
            self.seen = getattr(self, 'seen', []) + [training]
            return imgs, labels

    model = Classifier(data_preprocessor=MixUp())
    model.train_step(batch(), OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    model.val_step(batch())
    assert model.data_preprocessor.seen == [True, False]
    imgs = torch.arange(4.).reshape(4, 1, 1, 1)
    mixed, _ = model.data_preprocessor((imgs, torch.zeros(4)), training=True)
    assert mixed.flatten().tolist() == [1.5] * 4


# == advanced_tutorials/distributed.md =====================================================

def test_query_functions_answer_for_a_single_process():
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
    assert dist.get_backend() is None
    assert dist.get_local_rank() == 0 and dist.get_local_size() == 1
    assert dist.get_dist_info() == (0, 1)  # (rank, world_size)
    assert dist.is_main_process()
    assert dist.master_only(lambda: 'ran')() == 'ran'
    dist.barrier()


def test_collectives_work_unchanged_in_a_single_process():
    tensor = torch.arange(2)
    assert dist.all_reduce(tensor) is tensor and tensor.tolist() == [0, 1]
    assert [t.tolist() for t in dist.all_gather(tensor)] == [[0, 1]]
    assert [t.tolist() for t in dist.gather(tensor)] == [[0, 1]]
    assert dist.broadcast(tensor) is tensor
    assert isinstance(dist.sync_random_seed(), int)
    objects = ['foo', 12, {1: 2}]
    assert dist.broadcast_object_list(objects) == ['foo', 12, {1: 2}]
    data = {'key1': torch.arange(2), 'key2': torch.arange(3)}
    dist.all_reduce_dict(data)
    assert data['key1'].tolist() == [0, 1] and data['key2'].tolist() == [0, 1, 2]
    assert dist.all_gather_object('foo') == ['foo']
    assert dist.gather_object('foo') == ['foo']
    assert dist.collect_results(['foo', 24, {1: 2}], size=2, device='cpu') == ['foo', 24]
    assert dist.collect_results(['foo', 24], size=2, device='gpu') == ['foo', 24]


# == advanced_tutorials/manager_mixin.md ===================================================

class GlobalClass(ManagerMixin):

    def __init__(self, name, value):
        super().__init__(name)
        self.value = value


class CustomHook(Hook):

    def before_run(self, runner):
        GlobalClass.get_instance('mmengine', value=50)
        GlobalClass.get_instance(runner.experiment_name, value=100)


class CustomModule(nn.Module):
    """Reads the current and a named instance from its forward, as the page does."""

    def forward(self, x):
        return GlobalClass.get_current_instance().value, GlobalClass.get_instance('mmengine').value


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x, mode='tensor'):
        out = self.fc(x)
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


@pytest.fixture
def forget_global_instances():
    yield
    GlobalClass._instance_dict.clear()


def test_instances_built_in_a_hook_are_reached_from_anywhere(tmp_path, forget_global_instances):
    loader = DataLoader([(torch.randn(2),) for _ in range(4)], batch_size=2)
    runner = Runner(model=TinyModel(), work_dir=str(tmp_path), train_dataloader=loader,
                    train_cfg=dict(by_epoch=True, max_epochs=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                    custom_hooks=[CustomHook()], experiment_name='exp')
    runner.train()
    assert CustomModule()(torch.zeros(1)) == (100, 50)  # the newest is the run's instance
    # The run's name is MMEngine's '<experiment_name>_<timestamp>'.
    assert runner.experiment_name.startswith('exp_')
    assert GlobalClass.get_instance(runner.experiment_name).value == 100
    with pytest.warns(UserWarning, match="'mmengine' exists already; the arguments \\['value'\\]"):
        assert GlobalClass.get_instance('mmengine', value=1000).value == 50


def test_the_runner_visualizer_is_the_current_visualizer(tmp_path):
    runner = Runner(model=TinyModel(), work_dir=str(tmp_path), experiment_name='vis-run')
    assert Visualizer.get_current_instance() is runner.visualizer
    assert Visualizer.get_instance(runner.experiment_name) is runner.visualizer


# == advanced_tutorials/test_time_augmentation.md ==========================================

class AverageClsScoreTTA(BaseTTAModel):
    """The page's merge: average each sample's scores over its augmentations."""

    def merge_preds(self, data_samples_list):
        return [dict(pred_score=sum(s['pred_score'] for s in samples) / len(samples))
                for samples in data_samples_list]


class FlipScorer(BaseModel):
    """Scores an image by its first column, so a flipped view scores differently."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, inputs, data_samples, mode='tensor'):
        self.calls.append(len(inputs))
        return [dict(pred_score=img[..., 0].mean()) for img in inputs]


def test_each_augmentation_runs_as_one_batch_and_predictions_merge_per_sample():
    images = [torch.arange(4.).reshape(1, 2, 2) + i for i in range(3)]
    # What TestTimeAug and pseudo_collate give: per field, one list per augmentation.
    data_batch = dict(inputs=[images, [img.flip(-1) for img in images]],
                      data_samples=[[None] * 3, [None] * 3])
    model = FlipScorer()
    merged = AverageClsScoreTTA(model).test_step(data_batch)
    assert model.calls == [3, 3]  # one module.test_step per augmentation, whole batch
    assert [m['pred_score'].item() for m in merged] == [1.5 + i for i in range(3)]


def test_a_tta_model_config_wraps_the_model_config(registered):
    registered(MODELS, AverageClsScoreTTA)
    registered(MODELS, FlipScorer)
    tta_model = dict(type='AverageClsScoreTTA')
    model_cfg = dict(type='FlipScorer')
    tta = MODELS.build(dict(**tta_model, module=model_cfg))
    assert isinstance(tta, AverageClsScoreTTA) and isinstance(tta.module, FlipScorer)


def test_runner_test_goes_through_the_tta_model_test_step(tmp_path):
    class Mean(BaseMetric):
        default_prefix = 'tta'

        def process(self, data_batch, data_samples):
            self.results.extend(float(s['pred_score']) for s in data_samples)

        def compute_metrics(self, results):
            return dict(mean=sum(results) / len(results))

    def tta_pipeline(index):
        img = torch.tensor([[float(index), 0.], [float(index), 0.]]).reshape(1, 2, 2)
        return dict(inputs=[img, img.flip(-1)], data_samples=[None, None])

    loader = DataLoader([tta_pipeline(i) for i in range(4)], batch_size=2,
                        collate_fn=pseudo_collate)
    runner = Runner(model=AverageClsScoreTTA(FlipScorer()), work_dir=str(tmp_path),
                    test_dataloader=loader, test_cfg=dict(), test_evaluator=Mean())
    # Each image scores i unflipped and 0 flipped: merged i / 2, mean over 0..3 = 0.75.
    assert runner.test() == {'tta/mean': 0.75}


# == common_usage/model_analysis.md ========================================================

class MMResNet(BaseModel):

    def __init__(self, resnet):
        super().__init__()
        self.resnet = resnet

    def forward(self, imgs, labels=None, mode='tensor'):
        x = self.resnet(imgs)
        if mode == 'loss':
            return {'loss': F.cross_entropy(x, labels)}
        if mode == 'predict':
            return x, labels
        return x


def test_complexity_info_of_a_base_model_with_the_page_keys_table_and_arch():
    torchvision = pytest.importorskip('torchvision')
    model = MMResNet(torchvision.models.resnet18(num_classes=10))
    results = get_model_complexity_info(model, (3, 64, 64))
    assert set(results) == {'flops', 'flops_str', 'activations', 'activations_str', 'params',
                            'params_str', 'out_table', 'out_arch'}
    assert results['params'] == sum(p.numel() for p in model.parameters())
    table = results['out_table'].splitlines()
    assert table[2].split('|')[1].strip() == 'module'
    assert table[4].split('|')[1].strip() == 'model'
    # conv1: 64 output channels of 32x32, 3*7*7 multiply-adds each, as the page's table.
    conv1 = next(line for line in table[4:-1] if line.split('|')[1].strip() == 'resnet.conv1')
    assert conv1.split('|')[3].strip() == f'{64 * 32 * 32 * 147 / 1e6:.3f}M'.rstrip('0')
    arch = results['out_arch']
    assert arch.startswith('\nMMResNet(\n  #params: 11.18M')
    # The preprocessor never runs inside forward: N/A, as on the page.
    preprocessor = arch.split('(data_preprocessor): ')[1].split('\n  )')[0]
    assert preprocessor.endswith('#params: 0, #flops: N/A, #acts: N/A')
    assert '(relu): ReLU(inplace=True)' in arch


def test_resnet50_parameters_and_first_convolution_match_the_page_numbers():
    torchvision = pytest.importorskip('torchvision')
    resnet = torchvision.models.resnet50()
    assert parameter_count(resnet)[''] == 25_557_032  # the page's 25.557M
    conv1 = get_model_complexity_info(resnet.conv1, (3, 224, 224), show_table=False,
                                      show_arch=False)
    assert (conv1['flops_str'], conv1['activations_str'], conv1['params_str']) == (
        '0.118G', '0.803M', '9.408K')
