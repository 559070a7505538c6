"""Spec for :mod:`fengine.dist`: single-process answers, and a real 2-process gloo run."""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from fengine import dist
from fengine.evaluator import Accuracy, BaseMetric

WORLD_SIZE = 2
DATASET_SIZE = 5  # uneven: DistributedSampler pads rank 1 with sample 0


# ------------------------------------------------------------------- single process
def test_a_single_process_is_rank_0_of_a_world_of_one():
    assert not dist.is_distributed()
    assert dist.get_rank() == 0
    assert dist.get_world_size() == 1
    assert dist.is_main_process()


def test_all_reduce_without_a_process_group_returns_the_same_tensor_unchanged():
    tensor = torch.tensor([1.0, 2.0])
    for op in ('sum', 'mean', 'max', 'min', 'product'):
        assert dist.all_reduce(tensor, op=op) is tensor
    assert tensor.tolist() == [1.0, 2.0]


def test_all_reduce_names_a_bad_op_and_the_choices():
    with pytest.raises(ValueError) as excinfo:
        dist.all_reduce(torch.zeros(1), op='avg')
    message = str(excinfo.value)
    assert "'avg'" in message
    for choice in ('sum', 'mean', 'max', 'min', 'product'):
        assert repr(choice) in message


def test_broadcast_and_barrier_do_nothing_in_a_single_process():
    tensor = torch.tensor([3])
    assert dist.broadcast(tensor, src=0) is tensor and tensor.tolist() == [3]
    dist.barrier()


def test_all_gather_object_in_a_single_process_is_a_list_of_one():
    assert dist.all_gather_object({'a': 1}) == [{'a': 1}]


def test_collect_results_in_a_single_process_truncates_to_size():
    assert dist.collect_results([1, 2, 3, 4], size=3) == [1, 2, 3]
    assert dist.collect_results([1, 2], size=5) == [1, 2]


def test_collect_results_names_a_bad_device_and_the_choices():
    with pytest.raises(ValueError, match=r"'cpu', 'gpu', but got 'cuda'"):
        dist.collect_results([1], size=1, device='cuda')


def test_collect_results_rejects_a_size_that_is_not_an_int():
    with pytest.raises(TypeError, match='collect_results expects size as an int, but got '
                                        'float: 1.5'):
        dist.collect_results([1], size=1.5)


def test_local_rank_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    assert dist.get_local_rank() == 0
    monkeypatch.setenv('LOCAL_RANK', '3')
    assert dist.get_local_rank() == 3
    monkeypatch.setenv('LOCAL_RANK', 'three')
    with pytest.raises(ValueError, match="LOCAL_RANK.*'three'"):
        dist.get_local_rank()


def test_init_dist_outside_torchrun_names_the_missing_variables(monkeypatch):
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(RuntimeError, match='WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not set.*'
                                           'torchrun'):
        dist.init_dist()
    assert not dist.is_distributed()


def test_init_dist_waits_600_seconds_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv('FENGINE_DIST_TIMEOUT', raising=False)
    assert dist.default_timeout().total_seconds() == 600
    monkeypatch.setenv('FENGINE_DIST_TIMEOUT', '42.5')
    assert dist.default_timeout().total_seconds() == 42.5


@pytest.mark.parametrize('bad', ['0', '-1', 'soon', 'inf', 'nan'])
def test_a_bad_timeout_in_the_environment_is_named(monkeypatch, bad):
    monkeypatch.setenv('FENGINE_DIST_TIMEOUT', bad)
    with pytest.raises(ValueError, match=f"FENGINE_DIST_TIMEOUT must be a positive number of "
                                         f"seconds.*'{bad}'"):
        dist.default_timeout()


def test_init_dist_rejects_a_timeout_that_is_not_positive(monkeypatch):
    for name, value in dict(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT='1').items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match='timeout must be positive, but got 0:00:00'):
        dist.init_dist(backend='gloo', timeout=0)
    with pytest.raises(TypeError, match=r"timeout must be seconds \(a number\) or a "
                                        r"datetime.timedelta, but got str: '10'"):
        dist.init_dist(backend='gloo', timeout='10')
    assert not dist.is_distributed()


def test_all_reduce_mean_of_an_integer_tensor_fails_in_one_process_too():
    tensor = torch.tensor([1, 2])
    with pytest.raises(TypeError, match=r"op='mean'.*floating-point tensor, but got dtype "
                                        r"torch.int64"):
        dist.all_reduce(tensor, op='mean')
    assert tensor.tolist() == [1, 2]


def test_single_process_helpers_for_seeds_and_errors():
    assert dist.sync_random_seed(7) == 7
    assert isinstance(dist.sync_random_seed(), int)
    tensors = [torch.ones(2)]
    assert dist.broadcast_coalesced(tensors) is tensors
    # Not distributed: no error is a collective's.
    assert dist.explain_collective_error(RuntimeError('gloo/ Timed out')) is None


def test_init_dist_names_a_bad_launcher():
    with pytest.raises(ValueError, match="launcher must be one of 'pytorch', but got 'slurm'"):
        dist.init_dist('slurm')


def test_master_only_runs_the_function_on_the_main_process_and_keeps_its_name():
    @dist.master_only
    def save(x):
        """Save x."""
        return x * 2

    assert save(21) == 42
    assert save.__name__ == 'save' and save.__doc__ == 'Save x.'


def test_the_info_helpers_answer_for_a_world_of_one(monkeypatch):
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')  # read only when distributed
    assert dist.get_dist_info() == (0, 1)
    assert dist.get_local_size() == 1
    assert dist.get_backend() is None
    assert dist.get_default_group() is None
    assert dist.get_comm_device() == torch.device('cpu')


@pytest.mark.parametrize('env, launcher', [
    (dict(WORLD_SIZE='2', SLURM_NTASKS='2'), 'pytorch'),
    (dict(SLURM_NTASKS='4'), 'slurm'),
    (dict(OMPI_COMM_WORLD_LOCAL_RANK='0'), 'mpi'),
    ({}, 'none'),
])
def test_infer_launcher_reads_what_each_launcher_sets(monkeypatch, env, launcher):
    for name in ('WORLD_SIZE', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert dist.infer_launcher() == launcher


def test_gather_helpers_in_a_single_process_return_a_list_of_this_rank_only():
    data = torch.arange(2)
    assert dist.all_gather(data)[0] is data and len(dist.all_gather(data)) == 1
    assert dist.gather(data)[0] is data and len(dist.gather(data)) == 1
    assert dist.gather_object(['foo', 12]) == [['foo', 12]]


def test_all_reduce_dict_in_a_single_process_leaves_the_dict_as_it_was():
    data = {'b': torch.arange(3), 'a': torch.tensor([1.5])}
    before = dict(data)
    assert dist.all_reduce_dict(data) is None
    assert all(data[k] is before[k] for k in data)


def test_all_reduce_dict_names_a_value_that_is_not_a_tensor_and_checks_the_op():
    with pytest.raises(TypeError, match=r"all_reduce_dict expects a dict of tensors, but 'n' "
                                        r"is int: 3"):
        dist.all_reduce_dict({'x': torch.ones(1), 'n': 3})
    with pytest.raises(TypeError, match='expects a dict of tensors, but got list'):
        dist.all_reduce_dict([torch.ones(1)])
    with pytest.raises(TypeError, match=r"op='mean'.*torch.int64"):
        dist.all_reduce_dict({'x': torch.ones(1), 'n': torch.tensor([3])}, op='mean')


def test_all_reduce_accepts_the_bitwise_ops():
    tensor = torch.tensor([5, 3])
    for op in ('band', 'bor', 'bxor'):
        assert dist.all_reduce(tensor, op=op) is tensor


def test_collect_results_refuses_a_tmpdir_with_gpu_and_ignores_it_in_one_process(tmp_path):
    with pytest.raises(ValueError, match=r"tmpdir='d' is used only with device='cpu', but got "
                                         r"device='gpu'"):
        dist.collect_results([1], size=1, device='gpu', tmpdir='d')
    assert dist.collect_results_cpu([1, 2, 3], 2, tmpdir=str(tmp_path / 'x')) == [1, 2]
    assert dist.collect_results_gpu([1, 2, 3], 5) == [1, 2, 3]
    assert not (tmp_path / 'x').exists()


# ------------------------------------------------------------------ two processes
class _SampleCorrect(BaseMetric):
    """Appends one result per sample, counts its compute_metrics calls."""

    calls = 0

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        type(self).calls += 1
        return dict(order=list(results), n=len(results))


class _Broken(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.append(1)

    def compute_metrics(self, results):
        raise ZeroDivisionError('no samples')


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: run every collective once and write what it saw to ``rank{rank}.json``."""
    # What torchrun would set.
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE),
                      LOCAL_WORLD_SIZE=str(WORLD_SIZE), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    dist.init_dist(backend='gloo', timeout=60)
    dist.init_dist(backend='gloo', timeout=60)  # a second call finds the group and returns
    try:
        seen: dict = dict(rank=dist.get_rank(), world_size=dist.get_world_size(),
                          local_rank=dist.get_local_rank(), is_main=dist.is_main_process(),
                          is_distributed=dist.is_distributed())
        for op in ('sum', 'mean', 'max', 'min', 'product'):
            tensor = torch.tensor([rank + 1.0, 10.0 * (rank + 1)])
            returned = dist.all_reduce(tensor, op=op)
            seen[f'all_reduce_{op}'] = tensor.tolist()
            seen[f'all_reduce_{op}_in_place'] = returned is tensor
        try:
            dist.all_reduce(torch.tensor([1, 2]), op='mean')
        except TypeError as exc:
            seen['int_mean_error'] = str(exc)
        seen['broadcast'] = dist.broadcast(torch.tensor([rank * 7]), src=1).tolist()
        seen['gathered'] = dist.all_gather_object(dict(rank=rank, text='x' * rank))

        # What DistributedSampler gives each rank, as the val loop would see it.
        indices = list(DistributedSampler(range(DATASET_SIZE), num_replicas=WORLD_SIZE,
                                          rank=rank, shuffle=False))
        seen['indices'] = indices
        seen['collected'] = dist.collect_results([f's{i}' for i in indices], DATASET_SIZE)
        tensors = dist.collect_results([torch.tensor(i) for i in indices], DATASET_SIZE,
                                       device='gpu')
        seen['collected_tensors'] = None if tensors is None else [t.item() for t in tensors]
        # MMEngine's 'cpu' mode: the ranks exchange files in a shared folder.
        shared = os.path.join(out_dir, 'shared')
        os.makedirs(shared, exist_ok=True)
        with open(os.path.join(shared, 'keep.txt'), 'w') as file:
            file.write('not ours')
        seen['collected_files'] = dist.collect_results_cpu(
            [dict(i=i, t=torch.tensor([i])) for i in indices], DATASET_SIZE, tmpdir=shared)
        if seen['collected_files'] is not None:
            seen['collected_files'] = [(r['i'], r['t'].tolist()) for r in seen['collected_files']]
        dist.barrier()
        seen['shared_after'] = sorted(os.listdir(shared))
        seen['info'] = [dist.get_dist_info(), dist.get_backend(), str(dist.get_comm_device()),
                        dist.get_local_size(), dist.infer_launcher()]
        mine = torch.tensor([rank, 10 * rank])
        seen['all_gather'] = [t.tolist() for t in dist.all_gather(mine)]
        seen['gather'] = [t.tolist() for t in dist.gather(mine, dst=1)]
        seen['gather_object'] = dist.gather_object(dict(rank=rank), dst=0)
        reduced = {'b': torch.full((2, 2), float(rank + 1)), 'a': torch.tensor([rank + 1]),
                   'c': torch.tensor(rank * 3.0, dtype=torch.float64)}
        dist.all_reduce_dict(reduced)
        seen['all_reduce_dict'] = {k: (v.tolist(), str(v.dtype)) for k, v in reduced.items()}
        halves = {'x': torch.tensor([float(rank)])}
        dist.all_reduce_dict(halves, op='mean')
        seen['all_reduce_dict_mean'] = halves['x'].tolist()
        bits = torch.tensor([0b0110 if rank == 0 else 0b0011])
        seen['band'] = dist.all_reduce(bits.clone(), op='band').tolist()
        seen['bxor'] = dist.all_reduce(bits.clone(), op='bxor').tolist()
        dir_metric = _SampleCorrect(prefix='dir', collect_dir=shared)
        dir_metric.process(None, [f's{i}' for i in indices])
        seen['dir_metric'] = dir_metric.evaluate(DATASET_SIZE)
        _SampleCorrect.calls = 0

        seen['master_only'] = dist.master_only(lambda: 'ran')()
        seen['seed'] = dist.sync_random_seed()
        seen['given_seed'] = dist.sync_random_seed(rank + 5)
        coalesced = [torch.full((2,), float(rank)), torch.tensor([rank], dtype=torch.int64)]
        dist.broadcast_coalesced(coalesced, src=1)
        seen['broadcast_coalesced'] = [t.tolist() for t in coalesced]
        mean = dist._mean_coalesced([torch.full((2, 2), rank + 1.0),
                                     torch.tensor(10.0 * rank, dtype=torch.float64),
                                     torch.tensor([rank * 4.0])], None, WORLD_SIZE)
        seen['mean_coalesced'] = [(t.tolist(), str(t.dtype)) for t in mean]
        explained = dist.explain_collective_error(RuntimeError(
            '[gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 60000ms'))
        seen['explained'] = str(explained)
        seen['not_explained'] = dist.explain_collective_error(ValueError('a user bug')) is None

        metric = _SampleCorrect(prefix='val')
        metric.process(None, [f's{i}' for i in indices])
        seen['metric'] = metric.evaluate(DATASET_SIZE)
        seen['metric_compute_calls'] = _SampleCorrect.calls
        _SampleCorrect.calls = 0
        seen['metric_results_after'] = len(metric.results)

        only_rank_0 = _SampleCorrect(prefix='r0')
        if rank == 0:
            only_rank_0.process(None, ['a', 'b'])
        seen['only_rank_0'] = only_rank_0.evaluate(DATASET_SIZE)
        seen['nothing'] = _SampleCorrect().evaluate(DATASET_SIZE)

        accuracy = Accuracy(topk=(1, 2))
        # Rank 0: 2 samples, top1 right once, top2 right twice; rank 1: 1 sample, wrong.
        scores = [torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.3, 0.1]]),
                  torch.tensor([[0.1, 0.2, 0.7]])][rank]
        labels = [torch.tensor([0, 1]), torch.tensor([0])][rank]
        accuracy.process((None, labels), scores)
        seen['accuracy'] = accuracy.evaluate(3)

        broken = _Broken()
        broken.process(None, None)
        try:
            broken.evaluate(2)
        except Exception as exc:  # noqa: BLE001 - recorded for the parent to check
            seen['broken'] = f'{type(exc).__name__}: {exc}'
        dist.barrier()
    finally:
        torch_dist.destroy_process_group()
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as file:
        json.dump(seen, file)


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """What each of two gloo processes saw, by rank (one spawn for every check below)."""
    if not torch_dist.is_available():
        pytest.skip('torch.distributed is not available in this build')
    out_dir = tmp_path_factory.mktemp('dist')
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [json.loads((out_dir / f'rank{r}.json').read_text()) for r in range(WORLD_SIZE)]


def test_two_processes_see_their_rank_world_size_and_local_rank(ranks):
    for rank, seen in enumerate(ranks):
        assert seen['rank'] == rank and seen['local_rank'] == rank
        assert seen['world_size'] == 2 and seen['is_distributed']
        assert seen['is_main'] == (rank == 0)


def test_all_reduce_combines_both_ranks_in_place(ranks):
    # Rank 0 holds [1, 10], rank 1 holds [2, 20].
    expected = dict(sum=[3.0, 30.0], mean=[1.5, 15.0], max=[2.0, 20.0], min=[1.0, 10.0],
                    product=[2.0, 200.0])
    for seen in ranks:
        for op, values in expected.items():
            assert seen[f'all_reduce_{op}'] == values, op
            assert seen[f'all_reduce_{op}_in_place'], op


def test_all_reduce_mean_of_an_integer_tensor_says_to_convert_it(ranks):
    for seen in ranks:
        assert 'torch.int64' in seen['int_mean_error'] and 'float' in seen['int_mean_error']


def test_broadcast_copies_the_source_rank_tensor(ranks):
    assert [seen['broadcast'] for seen in ranks] == [[7], [7]]


def test_all_gather_object_returns_every_rank_object_in_rank_order(ranks):
    expected = [dict(rank=0, text=''), dict(rank=1, text='x')]
    assert [seen['gathered'] for seen in ranks] == [expected, expected]


def test_collect_results_restores_dataset_order_and_drops_the_sampler_padding(ranks):
    # DistributedSampler over 5 samples: rank 0 gets 0, 2, 4; rank 1 gets 1, 3 and pads with 0.
    assert [seen['indices'] for seen in ranks] == [[0, 2, 4], [1, 3, 0]]
    assert ranks[0]['collected'] == ['s0', 's1', 's2', 's3', 's4']
    assert ranks[0]['collected_tensors'] == [0, 1, 2, 3, 4]


def test_collect_results_returns_none_on_other_ranks(ranks):
    assert ranks[1]['collected'] is None and ranks[1]['collected_tensors'] is None


def test_every_rank_gets_rank_0s_seed(ranks):
    assert ranks[0]['seed'] == ranks[1]['seed']
    assert [seen['given_seed'] for seen in ranks] == [5, 5]


def test_broadcast_coalesced_copies_every_tensor_of_the_source_rank(ranks):
    assert [seen['broadcast_coalesced'] for seen in ranks] == [[[1.0, 1.0], [1]]] * 2


def test_mean_coalesced_averages_tensors_of_several_dtypes_and_keeps_their_shapes(ranks):
    expected = [([[1.5, 1.5], [1.5, 1.5]], 'torch.float32'), (5.0, 'torch.float64'),
                ([2.0], 'torch.float32')]
    for seen in ranks:
        assert [tuple(pair) for pair in seen['mean_coalesced']] == expected


def test_a_failed_collective_is_explained_with_the_rank_and_the_timeout(ranks):
    for rank, seen in enumerate(ranks):
        assert seen['explained'].startswith(f'rank {rank} of 2: a collective with the other '
                                            'ranks failed (timeout 0:01:00')
        assert 'Another rank most likely died' in seen['explained']
        assert 'Timed out waiting 60000ms' in seen['explained']
        assert seen['not_explained']


def test_master_only_runs_on_rank_0_only(ranks):
    assert [seen['master_only'] for seen in ranks] == ['ran', None]


def test_a_metric_computes_once_on_rank_0_and_every_rank_gets_the_result(ranks):
    expected = {'val/order': ['s0', 's1', 's2', 's3', 's4'], 'val/n': 5}
    assert [seen['metric'] for seen in ranks] == [expected, expected]
    assert [seen['metric_compute_calls'] for seen in ranks] == [1, 0]
    assert [seen['metric_results_after'] for seen in ranks] == [0, 0]


def test_a_rank_without_results_still_joins_the_gather_and_gets_the_result(ranks):
    assert [seen['only_rank_0'] for seen in ranks] == [{'r0/order': ['a', 'b'], 'r0/n': 2}] * 2


def test_a_metric_no_rank_fed_returns_an_empty_dict_everywhere(ranks):
    assert [seen['nothing'] for seen in ranks] == [{}, {}]


def test_accuracy_counts_the_samples_of_every_rank(ranks):
    # 3 samples: top1 right 1 of 3, top2 right 2 of 3.
    expected = {'accuracy/top1': 100 / 3, 'accuracy/top2': 200 / 3}
    for seen in ranks:
        assert seen['accuracy'] == pytest.approx(expected)


def test_a_metric_that_fails_on_rank_0_fails_on_every_rank_instead_of_hanging(ranks):
    assert ranks[0]['broken'] == 'ZeroDivisionError: no samples'
    assert ranks[1]['broken'].startswith('RuntimeError: _Broken.compute_metrics failed')
    assert 'ZeroDivisionError: no samples' in ranks[1]['broken']


def test_collect_results_through_a_shared_folder_orders_results_and_cleans_up_after_itself(
        ranks):
    assert ranks[0]['collected_files'] == [[i, [i]] for i in range(DATASET_SIZE)]
    assert ranks[1]['collected_files'] is None
    # Only the subfolder it made is removed; what the folder held stays.
    assert [seen['shared_after'] for seen in ranks] == [['keep.txt']] * 2


def test_a_metric_with_collect_dir_gathers_through_files(ranks):
    expected = {'dir/order': ['s0', 's1', 's2', 's3', 's4'], 'dir/n': 5}
    assert [seen['dir_metric'] for seen in ranks] == [expected, expected]


def test_the_info_helpers_describe_the_gloo_group(ranks):
    for rank, seen in enumerate(ranks):
        assert seen['info'] == [[rank, 2], 'gloo', 'cpu', 2, 'pytorch']


def test_all_gather_and_gather_return_every_rank_tensor_in_rank_order(ranks):
    expected = [[0, 0], [1, 10]]
    assert [seen['all_gather'] for seen in ranks] == [expected, expected]
    assert [seen['gather'] for seen in ranks] == [[], expected]
    assert [seen['gather_object'] for seen in ranks] == [[dict(rank=0), dict(rank=1)], None]


def test_all_reduce_dict_reduces_every_value_and_keeps_shapes_and_dtypes(ranks):
    expected = {'a': ([3], 'torch.int64'), 'b': ([[3.0, 3.0], [3.0, 3.0]], 'torch.float32'),
                'c': (3.0, 'torch.float64')}
    for seen in ranks:
        assert {k: tuple(v) for k, v in seen['all_reduce_dict'].items()} == expected
        assert seen['all_reduce_dict_mean'] == [0.5]


def test_the_bitwise_reductions_combine_both_ranks(ranks):
    for seen in ranks:
        assert seen['band'] == [0b0010] and seen['bxor'] == [0b0101]
