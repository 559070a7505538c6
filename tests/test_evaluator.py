"""Spec for :mod:`fengine.evaluator`: BaseMetric, Evaluator, build_evaluator and Accuracy.

Metrics built from configs use ``type=<class>`` (or the built-in ``'Accuracy'``), so no
test class lands in the global ``METRICS`` registry.
"""
from __future__ import annotations

import logging

import pytest
import torch

from fengine.evaluator import Accuracy, BaseMetric, Evaluator, build_evaluator
from fengine.registry import METRICS
from seed_models import FashionMnistMetric


class Recorder(BaseMetric):
    """Keeps what ``process`` received; reports how many calls it saw."""

    def __init__(self, key: str = 'calls', **kwargs) -> None:
        super().__init__(**kwargs)
        self.key = key
        self.seen: list = []

    def process(self, data_batch, data_samples):
        self.seen.append((data_batch, data_samples))
        self.results.append(1)

    def compute_metrics(self, results):
        return {self.key: len(results)}


class PerSample(BaseMetric):
    """One result per sample, returned in order."""

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        return dict(samples=list(results))


class FailsIn(BaseMetric):
    """Raises ``error`` from ``process`` or ``compute_metrics``."""

    def __init__(self, where: str, error: Exception) -> None:
        super().__init__()
        self.where, self.error = where, error

    def process(self, data_batch, data_samples):
        if self.where == 'process':
            raise self.error
        self.results.append(0)

    def compute_metrics(self, results):
        raise self.error


class CustomError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f'code {code}')


def seed_batch(labels, predicted, loss):
    """A seed-style batch ``(images, labels)`` and predict output ``(labels, loss)``."""
    data = (torch.zeros(len(labels), 1, 28, 28), torch.tensor(labels))
    return data, (torch.tensor(predicted), loss)


# ---------------------------------------------------------------------- BaseMetric
def test_the_seed_metric_runs_unchanged_and_averages_over_batches():
    metric = FashionMnistMetric()
    metric.process(*seed_batch([0, 1, 2, 3], [0, 1, 0, 0], 0.5))  # 2 of 4 right
    metric.process(*seed_batch([4, 5], [4, 5], 1.5))  # 2 of 2 right
    metrics = metric.evaluate(size=6)
    assert set(metrics) == {'Accuracy', 'Avg_loss'}
    assert float(metrics['Accuracy']) == pytest.approx(4 / 6)
    assert metrics['Avg_loss'] == pytest.approx((0.5 + 1.5) / 2)
    assert metric.results == []


def test_evaluate_without_results_warns_that_process_added_nothing(fengine_log):
    metric = Recorder(prefix='rec')
    assert metric.evaluate(size=10) == {}
    warnings = fengine_log.messages(logging.WARNING)
    assert len(warnings) == 1
    assert 'Recorder' in warnings[0] and 'process' in warnings[0]
    assert 'self.results' in warnings[0]


def test_evaluate_truncates_results_to_the_dataset_size():
    metric = PerSample()
    metric.process(None, ['a', 'b', 'c'])
    assert metric.evaluate(size=2) == dict(samples=['a', 'b'])


def test_compute_metrics_that_returns_no_dict_is_a_type_error_naming_the_metric():
    class ReturnsList(Recorder):
        def compute_metrics(self, results):
            return [1]

    metric = ReturnsList()
    metric.process(None, None)
    with pytest.raises(TypeError, match=r'ReturnsList\.compute_metrics must return a dict.*list'):
        metric.evaluate(size=1)


def test_the_prefix_argument_goes_in_front_of_every_key():
    metric = Recorder(prefix='val')
    metric.process(None, None)
    assert metric.evaluate(size=1) == {'val/calls': 1}


def test_default_prefix_applies_unless_a_prefix_is_given():
    class Prefixed(Recorder):
        default_prefix = 'cls'

    by_default, given = Prefixed(), Prefixed(prefix='mine')
    for metric in (by_default, given):
        metric.process(None, None)
    assert by_default.evaluate(size=1) == {'cls/calls': 1}
    assert given.evaluate(size=1) == {'mine/calls': 1}


def test_collect_device_must_be_cpu_or_gpu():
    with pytest.raises(ValueError, match=r"collect_device must be one of 'cpu', 'gpu', but got "
                                         r"'cuda'"):
        Recorder(collect_device='cuda')
    assert Recorder(collect_device='gpu').collect_device == 'gpu'


def test_base_metric_is_abstract():
    with pytest.raises(TypeError, match='abstract'):
        BaseMetric()


def test_a_metric_keeps_its_own_copy_of_dataset_meta():
    meta = dict(classes=['cat', 'dog'])
    metric = Recorder()
    metric.dataset_meta = meta
    meta['classes'].append('bird')
    assert metric.dataset_meta == dict(classes=['cat', 'dog'])


# ----------------------------------------------------------------------- Evaluator
def test_an_evaluator_accepts_a_metric_a_config_or_a_list_of_both():
    metric = Recorder()
    assert Evaluator(metric).metrics == [metric]
    built = Evaluator([metric, dict(type=Recorder, key='other')]).metrics
    assert built[0] is metric and isinstance(built[1], Recorder) and built[1].key == 'other'
    assert isinstance(Evaluator(dict(type='Accuracy')).metrics[0], Accuracy)


def test_an_evaluator_rejects_other_types_naming_them():
    with pytest.raises(TypeError, match=r'but got str'):
        Evaluator('Accuracy')
    with pytest.raises(TypeError, match=r'but got int \(item 1\)'):
        Evaluator([Recorder(), 3])


def test_process_gives_every_metric_the_batch_and_the_outputs():
    first, second = Recorder(key='a'), Recorder(key='b')
    evaluator = Evaluator([first, second])
    batch, outputs = (torch.zeros(2), torch.ones(2)), (torch.tensor([1, 0]), 0.3)
    evaluator.process(outputs, batch)
    for metric in (first, second):
        assert metric.seen == [(batch, outputs)]
    assert evaluator.evaluate(size=2) == {'a': 1, 'b': 1}


def test_outputs_with_to_dict_are_turned_into_dicts_as_mmengine_does():
    class DataSample:
        metainfo_keys = ()

        def to_dict(self):
            return dict(pred_label=torch.tensor([1]))

    metric = Recorder()
    Evaluator(metric).process([DataSample(), 'kept'])
    (_, samples), = metric.seen
    assert samples[0]['pred_label'].tolist() == [1] and samples[1] == 'kept'


def test_a_key_produced_twice_names_both_metrics():
    class Other(Recorder):
        pass

    evaluator = Evaluator([Recorder(), PerSample(), Other()])
    evaluator.process([1], None)
    with pytest.raises(ValueError, match=r"'calls'.*Recorder and Other.*prefix"):
        evaluator.evaluate(size=1)


def test_an_error_in_process_names_the_metric_and_the_method_and_keeps_its_type():
    original = ZeroDivisionError('division by zero')
    evaluator = Evaluator([Recorder(), FailsIn('process', original)])
    with pytest.raises(ZeroDivisionError,
                       match=r'^FailsIn\.process raised ZeroDivisionError: division by zero$'
                       ) as excinfo:
        evaluator.process([1])
    assert type(excinfo.value) is ZeroDivisionError
    assert excinfo.value.__cause__ is original


def test_an_error_in_compute_metrics_names_the_metric_and_evaluate():
    original = ZeroDivisionError('division by zero')
    evaluator = Evaluator([Recorder(), FailsIn('compute_metrics', original)])
    evaluator.process([1])
    with pytest.raises(ZeroDivisionError,
                       match=r'^FailsIn\.evaluate raised ZeroDivisionError: division by zero$'
                       ) as excinfo:
        evaluator.evaluate(size=1)
    assert type(excinfo.value) is ZeroDivisionError
    assert excinfo.value.__cause__ is original


def test_a_subclass_of_a_builtin_error_keeps_its_own_type():
    # Code around the evaluation may catch OSError (a missing annotation file...).
    original = FileNotFoundError(2, 'No such file or directory', 'ann.json')
    with pytest.raises(FileNotFoundError,
                       match=r"^FailsIn\.process raised FileNotFoundError: \[Errno 2\] No such "
                             r"file or directory: 'ann\.json'$") as excinfo:
        Evaluator(FailsIn('process', original)).process([1])
    assert isinstance(excinfo.value, OSError)
    assert excinfo.value.errno == 2
    assert excinfo.value.__cause__ is original


def test_a_subclass_of_a_user_error_keeps_its_type():
    class MissingLabels(LookupError):
        pass

    original = MissingLabels('no labels in the batch')
    with pytest.raises(MissingLabels,
                       match=r'^FailsIn\.process raised MissingLabels: no labels in the batch$'
                       ) as excinfo:
        Evaluator(FailsIn('process', original)).process([1])
    assert excinfo.value.__cause__ is original


def test_a_key_error_message_is_not_quoted_again():
    original = KeyError('gt_label')
    with pytest.raises(KeyError) as excinfo:
        Evaluator(FailsIn('process', original)).process([1])
    # KeyError's str() would show repr(message): quotes around the whole message.
    assert str(excinfo.value) == "FailsIn.process raised KeyError: 'gt_label'"
    assert excinfo.value.__cause__ is original


def test_an_error_of_an_unusual_type_becomes_a_runtime_error_naming_the_metric():
    original = CustomError(7)
    expected = r'^FailsIn\.process raised CustomError: code 7'
    with pytest.raises(RuntimeError, match=expected) as excinfo:
        Evaluator(FailsIn('process', original)).process([1])
    assert excinfo.value.__cause__ is original


def test_setting_dataset_meta_reaches_every_metric():
    evaluator = Evaluator([Recorder(), Recorder()])
    evaluator.dataset_meta = dict(classes=('a', 'b'))
    assert evaluator.dataset_meta == dict(classes=('a', 'b'))
    assert [m.dataset_meta for m in evaluator.metrics] == [dict(classes=('a', 'b'))] * 2


def test_offline_evaluate_feeds_chunks_and_collates_the_data():
    metric = Recorder()
    evaluator = Evaluator(metric)
    samples = ['s0', 's1', 's2', 's3', 's4']
    data = [dict(label=i) for i in range(5)]
    assert evaluator.offline_evaluate(samples, data, chunk_size=2) == {'calls': 3}
    assert metric.seen == [(dict(label=[0, 1]), ['s0', 's1']),
                           (dict(label=[2, 3]), ['s2', 's3']),
                           (dict(label=[4]), ['s4'])]


def test_offline_evaluate_checks_lengths_and_chunk_size():
    evaluator = Evaluator(Recorder())
    with pytest.raises(ValueError, match='2 data items and 3 samples'):
        evaluator.offline_evaluate([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match='chunk_size must be a positive int, but got 0'):
        evaluator.offline_evaluate([1], chunk_size=0)


# ----------------------------------------------------------------- build_evaluator
def test_build_evaluator_accepts_the_runner_config_forms():
    metric = Recorder()
    evaluator = Evaluator(metric)
    assert build_evaluator(evaluator) is evaluator
    assert build_evaluator(metric).metrics == [metric]
    assert build_evaluator([metric]).metrics == [metric]
    assert build_evaluator(dict(metrics=metric)).metrics == [metric]
    assert build_evaluator(dict(type='Evaluator', metrics=[metric])).metrics == [metric]
    built = build_evaluator(dict(type='Accuracy', topk=(1, 5)))
    assert isinstance(built.metrics[0], Accuracy) and built.metrics[0].topk == (1, 5)


def test_the_seed_config_trains_its_metric_through_build_evaluator():
    evaluator = build_evaluator(dict(metrics=FashionMnistMetric()))
    data, preds = seed_batch([1, 2, 3], [1, 2, 0], 0.25)
    evaluator.process(preds, data)
    result = evaluator.evaluate(size=3)
    assert float(result['Accuracy']) == pytest.approx(2 / 3)
    assert result['Avg_loss'] == pytest.approx(0.25)


def test_build_evaluator_rejects_what_it_cannot_build():
    with pytest.raises(KeyError, match=r"'Evaluater' is not in the evaluator registry. Did you "
                                       r"mean 'Evaluator'\?"):
        build_evaluator(dict(type='Evaluater', metrics=Recorder()))
    with pytest.raises(TypeError, match=r"also got 'extra'"):
        build_evaluator(dict(metrics=Recorder(), extra=1))
    with pytest.raises(KeyError, match='needs "metrics"'):
        build_evaluator(dict(topk=1))
    with pytest.raises(TypeError, match='but got int: 3'):
        build_evaluator(3)


# ------------------------------------------------------------------------ Accuracy
def test_accuracy_is_registered_in_metrics():
    assert METRICS.get('Accuracy') is Accuracy


def test_accuracy_of_class_scores_counts_top_k_hits_in_percent():
    scores = torch.tensor([[0.7, 0.2, 0.1],   # label 0: top1 hit
                           [0.5, 0.3, 0.2],   # label 1: top2 hit
                           [0.1, 0.3, 0.6],   # label 0: miss
                           [0.2, 0.2, 0.6]])  # label 2: top1 hit
    metric = Accuracy(topk=(1, 2))
    metric.process((None, torch.tensor([0, 1, 0, 2])), scores)
    # hits per sample and k, not the scores
    assert metric.results == [(True, True), (False, True), (False, False), (True, True)]
    assert metric.evaluate(size=4) == {'accuracy/top1': 50.0, 'accuracy/top2': 75.0}


def test_accuracy_reads_the_seed_predict_output_and_sums_over_batches():
    metric = Accuracy()
    metric.process(*seed_batch([0, 1, 2, 3], [0, 1, 0, 0], 0.5))
    metric.process(*seed_batch([4, 5, 6, 7], [4, 5, 6, 0], 0.7))
    assert metric.evaluate(size=8) == {'accuracy/top1': 62.5}


def test_accuracy_reads_a_prediction_dict_with_its_own_labels():
    metric = Accuracy(prefix='val')
    metric.process(None, dict(pred_score=torch.tensor([[0.1, 0.9], [0.8, 0.2]]),
                              gt_label=torch.tensor([1, 1])))
    metric.process(None, dict(pred=torch.tensor([0, 1, 1]), labels=[0, 1, 0]))
    assert metric.evaluate(size=5) == {'val/top1': 60.0}


def test_accuracy_takes_labels_from_a_dict_batch():
    for key in ('label', 'labels', 'gt_label', 'target', 'targets'):
        metric = Accuracy()
        metric.process({'inputs': torch.zeros(2), key: torch.tensor([1, 0])},
                       torch.tensor([1, 1]))
        assert metric.evaluate(size=2) == {'accuracy/top1': 50.0}, key


def test_accuracy_reads_per_sample_dicts_as_mmpretrain_data_samples():
    samples = [dict(pred_score=torch.tensor([0.2, 0.5, 0.3]), gt_label=torch.tensor([2])),
               dict(pred_score=torch.tensor([0.6, 0.3, 0.1]), gt_label=torch.tensor([0])),
               dict(pred_score=torch.tensor([0.1, 0.2, 0.7]), gt_label=torch.tensor([0]))]
    metric = Accuracy(topk=(1, 2))
    metric.process(None, samples)
    assert metric.evaluate(size=3) == pytest.approx(
        {'accuracy/top1': 100 / 3, 'accuracy/top2': 200 / 3})
    labels_only = Accuracy()
    labels_only.process(None, [dict(pred_label=torch.tensor(2), gt_label=2),
                               dict(pred_label=torch.tensor([0]), gt_label=1)])
    assert labels_only.evaluate(size=2) == {'accuracy/top1': 50.0}


def test_accuracy_offline_with_collated_tuple_data():
    evaluator = Evaluator(Accuracy())
    outputs = [dict(pred_label=1), dict(pred_label=0), dict(pred_label=2)]
    data = [(torch.zeros(1), torch.tensor(1)), (torch.zeros(1), torch.tensor(1)),
            (torch.zeros(1), torch.tensor(2))]
    assert evaluator.offline_evaluate(outputs, data, chunk_size=2) == pytest.approx(
        {'accuracy/top1': 200 / 3})


def test_accuracy_of_labels_with_topk_above_one_asks_for_scores():
    metric = Accuracy(topk=(1, 5))
    with pytest.raises(ValueError, match=r'top-5.*labels of shape \[3\].*topk=\(1,\)'):
        metric.process((None, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 1]))


def test_accuracy_with_more_k_than_classes_says_so():
    with pytest.raises(ValueError, match='at least 5 classes, but the scores have 3'):
        Accuracy(topk=5).process((None, torch.tensor([0])), torch.ones(1, 3))


@pytest.mark.parametrize('predictions, named', [
    ('cat', 'a str'),
    (torch.zeros(2, 3, 4), 'shape [2, 3, 4]'),
    (dict(logits=torch.zeros(2, 3)), "keys ['logits']"),
    ([], 'a list of 0 items'),
])
def test_accuracy_names_predictions_it_cannot_read_and_lists_the_accepted_shapes(
        predictions, named):
    with pytest.raises(TypeError) as excinfo:
        Accuracy().process((None, torch.tensor([0, 1])), predictions)
    message = str(excinfo.value)
    assert named in message
    assert 'Accuracy accepts as predictions: (a)' in message and '(d)' in message


def test_accuracy_refuses_to_guess_what_a_1d_float_tensor_holds():
    with pytest.raises(TypeError, match='labels or scores.*argmax'):
        Accuracy().process((None, torch.tensor([0, 1])), torch.tensor([0.0, 1.0]))


def test_accuracy_without_any_ground_truth_says_where_it_looked():
    with pytest.raises(TypeError, match=r'no ground truth.*dict with keys \[\'inputs\'\]'):
        Accuracy().process(dict(inputs=torch.zeros(2)), torch.tensor([0, 1]))


def test_accuracy_with_more_predictions_than_labels_is_a_value_error():
    with pytest.raises(ValueError, match='3 predictions but 2 ground-truth labels'):
        Accuracy().process((None, torch.tensor([0, 1])), torch.tensor([0, 1, 1]))


@pytest.mark.parametrize('topk', [0, (1, -5), (), 'top1', (1.0,)])
def test_accuracy_topk_must_be_positive_ints(topk):
    with pytest.raises(ValueError, match='topk must be a positive int'):
        Accuracy(topk=topk)


def test_an_accuracy_error_through_the_evaluator_keeps_its_type_and_names_accuracy():
    with pytest.raises(TypeError, match=r'^Accuracy\.process raised TypeError: Accuracy cannot'):
        Evaluator(Accuracy()).process('cat', (None, torch.tensor([0])))


# -- MMEngine's arguments and names around BaseMetric and Evaluator ----------------------

def test_a_metric_without_prefix_or_default_prefix_warns_naming_its_class(fengine_log):
    Recorder()
    Recorder(prefix='rec')
    Accuracy()  # default_prefix 'accuracy'
    warnings = fengine_log.messages(logging.WARNING)
    assert len(warnings) == 1
    assert warnings[0].startswith('Recorder has no prefix') and "prefix='...'" in warnings[0]


def test_collect_dir_goes_with_collect_device_cpu_only(tmp_path):
    assert Recorder(prefix='r', collect_dir=str(tmp_path)).collect_dir == str(tmp_path)
    with pytest.raises(ValueError, match=r"Recorder collect_dir='d' is where the ranks exchange "
                                         r"results as files, which only collect_device='cpu' "
                                         r"does, but collect_device='gpu'"):
        Recorder(prefix='r', collect_device='gpu', collect_dir='d')
    with pytest.raises(TypeError, match='Recorder collect_dir must be a folder path or None, '
                                        'but got int: 3'):
        Recorder(prefix='r', collect_dir=3)
    with pytest.raises(ValueError, match="Recorder collect_device must be one of 'cpu', 'gpu', "
                                         "but got 'cuda'"):
        Recorder(prefix='r', collect_device='cuda')


def test_evaluate_in_one_process_ignores_collect_dir_and_writes_nothing(tmp_path):
    metric = Recorder(prefix='r', collect_dir=str(tmp_path / 'exchange'))
    metric.process(None, [1])
    assert metric.evaluate(size=1) == {'r/calls': 1}
    assert not (tmp_path / 'exchange').exists()


def test_the_evaluator_is_registered_and_build_evaluator_builds_a_registered_subclass():
    from fengine.registry import EVALUATOR

    assert EVALUATOR.get('Evaluator') is Evaluator

    class CountingEvaluator(Evaluator):
        pass

    EVALUATOR.register_module(module=CountingEvaluator)
    try:
        built = build_evaluator(dict(type='CountingEvaluator', metrics=Recorder(prefix='r')))
    finally:
        EVALUATOR._module_dict.pop('CountingEvaluator')
    assert type(built) is CountingEvaluator


def test_dump_results_output_evaluates_offline_to_the_same_metrics(tmp_path):
    import pickle

    from fengine.evaluator import DumpResults

    path = tmp_path / 'preds.pkl'
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1])
    online = Evaluator([Accuracy(), DumpResults(out_file_path=str(path))])
    samples = [dict(pred_score=s, gt_label=g) for s, g in zip(scores, labels)]
    online.process(samples[:2])
    online.process(samples[2:])
    expected = online.evaluate(size=3)
    with open(path, 'rb') as f:
        saved = pickle.load(f)  # written by this test
    assert Evaluator(Accuracy()).offline_evaluate(saved, chunk_size=2) == expected
    assert expected == {'accuracy/top1': pytest.approx(200 / 3)}


def test_dump_results_is_a_registered_metric_and_refuses_other_extensions():
    from fengine.evaluator import DumpResults

    assert METRICS.get('DumpResults') is DumpResults
    with pytest.raises(ValueError, match=r"must end in '.pkl' or '.pickle', but got 'out.pt'"):
        METRICS.build(dict(type='DumpResults', out_file_path='out.pt'))
