"""MMEngine 0.10.7's unit tests of ``Evaluator``, ``BaseMetric``, ``DumpResults`` and
``get_metric_value`` (``tests/test_evaluator/test_evaluator.py``, ``test_metric.py``),
rewritten for fengine.

Deliberate differences (checked here with fengine's own wording):
- ``offline_evaluate`` with ``data`` and ``data_samples`` of different lengths raises
  ``ValueError`` (MMEngine: ``AssertionError``).
- Messages are fengine's: a duplicate key names both metrics; a missing prefix names the
  metric class.
Skipped: ``test_evaluate_cast_cpu`` needs CUDA (marked ``cuda``, run where one exists).
"""
from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from fengine.evaluator import BaseMetric, DumpResults, Evaluator, get_metric_value
from fengine.registry import METRICS
from fengine.structures import BaseDataElement as Element

class ToyMetric(BaseMetric):
    """Accuracy of ``pred`` against ``label`` per sample, or fixed ``dummy_metrics``."""

    default_prefix = 'Toy'

    def __init__(self, collect_device='cpu', prefix=None, dummy_metrics=None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.dummy_metrics = dummy_metrics

    def process(self, data_batch, data_samples):
        self.results.extend(dict(pred=s['pred'], label=s['label']) for s in data_samples)

    def compute_metrics(self, results):
        if self.dummy_metrics is not None:
            return dict(self.dummy_metrics)
        pred = np.array([r['pred'] for r in results])
        label = np.array([r['label'] for r in results])
        return dict(accuracy=(pred == label).sum() / pred.size, size=pred.size)


class NonPrefixedMetric(BaseMetric):

    def process(self, data_batch, data_samples):
        pass

    def compute_metrics(self, results):
        return dict(dummy=0.0)


@pytest.fixture(autouse=True)
def toy_metrics():
    """ToyMetric and NonPrefixedMetric in METRICS for the test only."""
    for cls in (ToyMetric, NonPrefixedMetric):
        METRICS.register_module(module=cls, force=True)
    yield
    for name in ('ToyMetric', 'NonPrefixedMetric'):
        METRICS._module_dict.pop(name, None)


def batches(size, batch_size, pred, label):
    """(data_batch, outputs) pairs covering ``size`` samples."""
    for start in range(0, size, batch_size):
        n = min(batch_size, size - start)
        data_batch = dict(inputs=[np.zeros((3, 10, 10)) for _ in range(n)],
                          data_sample=[Element(label=label) for _ in range(n)])
        yield data_batch, [Element(pred=pred, label=label) for _ in range(n)]


def feed(evaluator, size=10, batch_size=4):
    for data_batch, outputs in batches(size, batch_size, pred=1, label=1):
        evaluator.process(data_samples=outputs, data_batch=data_batch)


def test_one_metric_from_a_config_sees_every_sample(fengine_log):
    evaluator = Evaluator(dict(type='ToyMetric'))
    feed(evaluator)
    metrics = evaluator.evaluate(size=10)
    assert metrics['Toy/accuracy'] == pytest.approx(1.0)
    assert metrics['Toy/size'] == 10

    empty = Evaluator(dict(type='ToyMetric', dummy_metrics=dict(accuracy=1.0)))
    empty.evaluate(0)
    assert any('ToyMetric got no results' in m for m in fengine_log.messages(logging.WARNING))


def test_composed_metrics_merge_their_results():
    evaluator = Evaluator([dict(type='ToyMetric'),
                           dict(type='ToyMetric', dummy_metrics=dict(mAP=0.0))])
    feed(evaluator)
    metrics = evaluator.evaluate(size=10)
    assert metrics['Toy/accuracy'] == pytest.approx(1.0)
    assert metrics['Toy/mAP'] == pytest.approx(0.0)
    assert metrics['Toy/size'] == 10


def test_two_metrics_with_the_same_key_are_refused_naming_the_key():
    evaluator = Evaluator([dict(type='ToyMetric', dummy_metrics=dict(mAP=0.0)),
                           dict(type='ToyMetric', dummy_metrics=dict(mAP=0.0))])
    feed(evaluator)
    with pytest.raises(ValueError, match=r"two metrics produced the key 'Toy/mAP': ToyMetric "
                                         r"and ToyMetric. Give one of them a prefix"):
        evaluator.evaluate(size=10)


def test_dataset_meta_reaches_every_metric():
    meta = dict(classes=('cat', 'dog'))
    evaluator = Evaluator([dict(type='ToyMetric'),
                           dict(type='ToyMetric', dummy_metrics=dict(mAP=0.0))])
    evaluator.dataset_meta = meta
    assert evaluator.dataset_meta == meta
    assert all(metric.dataset_meta == meta for metric in evaluator.metrics)


def test_collect_device_is_kept_per_metric():
    evaluator = Evaluator([dict(type='ToyMetric', collect_device='cpu'),
                           dict(type='ToyMetric', collect_device='gpu',
                                dummy_metrics=dict(mAP=0.0))])
    assert [m.collect_device for m in evaluator.metrics] == ['cpu', 'gpu']


def test_a_metric_without_prefix_warns(fengine_log):
    Evaluator(dict(type='NonPrefixedMetric'))
    warnings = fengine_log.messages(logging.WARNING)
    assert len(warnings) == 1 and warnings[0].startswith('NonPrefixedMetric has no prefix')


def test_get_metric_value_finds_full_names_and_unique_bare_names():
    metrics = {'prefix_0/metric_0': 0, 'prefix_1/metric_0': 1, 'prefix_1/metric_1': 2,
               'nonprefixed': 3}
    assert get_metric_value('prefix_0/metric_0', metrics) == 0
    assert get_metric_value('prefix_1/metric_0', metrics) == 1
    assert get_metric_value('metric_1', metrics) == 2
    assert get_metric_value('nonprefixed', metrics) == 3
    for missing in ('prefix_0/metric_1', 'prefix_2/metric', 'metric_2'):
        with pytest.raises(ValueError, match=f"the metric '{missing}' can not match any metric"):
            get_metric_value(missing, metrics)
    with pytest.raises(ValueError, match=r"'metric_0' matches multiple metrics "
                                         r"\['prefix_0/metric_0', 'prefix_1/metric_0'\]"):
        get_metric_value('metric_0', metrics)


def test_offline_evaluate_runs_saved_outputs_with_or_without_data():
    evaluator = Evaluator(dict(type='ToyMetric'))
    outputs = [Element(pred=0, label=1) for _ in range(10)]
    assert evaluator.offline_evaluate(outputs, [dict() for _ in range(10)]) == {
        'Toy/accuracy': 0.0, 'Toy/size': 10}
    assert evaluator.offline_evaluate(outputs, None)['Toy/size'] == 10
    # fengine raises ValueError where MMEngine asserts.
    with pytest.raises(ValueError, match='one data item per data sample, but got 9 data items '
                                         'and 10 samples'):
        evaluator.offline_evaluate(outputs, [dict() for _ in range(9)])


@pytest.mark.cuda
def test_results_reach_compute_metrics_on_the_cpu():
    evaluator = Evaluator(dict(type='ToyMetric'))
    for _ in range(10):
        evaluator.process([Element(pred=torch.zeros(1, device='cuda'),
                                   label=torch.ones(1, device='cuda'))],
                          [dict(inputs=torch.zeros(3, 10, 10, device='cuda'))])
    devices = []
    evaluator.metrics[0].compute_metrics = lambda results: devices.extend(
        r[k].device.type for r in results for k in ('pred', 'label')) or {}
    evaluator.evaluate(10)
    assert set(devices) == {'cpu'}


# -- DumpResults (MMEngine: tests/test_evaluator/test_metric.py) ------------------------

def test_dump_results_needs_a_pickle_file_name():
    with pytest.raises(ValueError, match=r"must end in '.pkl' or '.pickle', but got "
                                         r"'./results.json'"):
        DumpResults(out_file_path='./results.json')
    with pytest.raises(ValueError, match="collect_dir='./tmp'.*collect_device='gpu'"):
        DumpResults(out_file_path='./results.pkl', collect_device='gpu', collect_dir='./tmp')


def test_dump_results_keeps_predictions_on_the_cpu():
    metric = DumpResults(out_file_path='./results.pkl')
    metric.process(None, [dict(data=(torch.tensor([1., 2, 3]), torch.tensor([4., 5, 6])))])
    assert len(metric.results) == 1
    assert metric.results[0]['data'][0].device == torch.device('cpu')


def test_dump_results_writes_the_pickle_file(tmp_path):
    path = tmp_path / 'results.pkl'
    metric = DumpResults(out_file_path=str(path))
    metric.process(None, [dict(data=(torch.tensor([1., 2, 3]), torch.tensor([4., 5, 6])))])
    assert metric.compute_metrics(metric.results) == {}
    with open(path, 'rb') as f:
        results = pickle.load(f)  # a file this test wrote
    assert len(results) == 1
    assert torch.equal(results[0]['data'][1], torch.tensor([4., 5, 6]))
    assert results[0]['data'][0].device == torch.device('cpu')

