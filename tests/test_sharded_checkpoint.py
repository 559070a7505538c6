"""Sharded checkpoints in one process: a model sharded by ``fully_shard`` over one rank.

FSDP2 needs a process group; a group of one rank (gloo) lives for this module, so the
Runner, DCP and the checkpoint hook run their sharded paths here without torchrun.
Two ranks (resharding 2 -> 1 and 2 -> 2, a rank killed mid-save) are in
``test_sharded_checkpoint_dist.py``.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist

from fengine import Runner
from fengine.hooks import Hook
from fengine.runner import find_last_checkpoint
from fengine.runner.sharded_checkpoint import (STATE_FILE, check_sharded_checkpoint,
                                               export_consolidated, is_sharded_checkpoint,
                                               is_sharded_model, join_tensors,
                                               load_consolidated, read_sharded, split_tensors)

from sharded_helpers import (assert_equal_tensors, full_params, init_single_rank_group,
                             samples, shard, tiny_net)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module', autouse=True)
def one_rank_group():
    init_single_rank_group()
    yield
    torch_dist.destroy_process_group()


def runner(work_dir, *, model=None, length=10, interval=3, max_keep=-1, **kwargs) -> Runner:
    """AdamW with a warm-up, shuffled data, dropout: everything a resume must bring back."""
    args = dict(
        model=shard(tiny_net()) if model is None else model, work_dir=work_dir,
        train_dataloader=dict(dataset=samples(), batch_size=8,
                              sampler=dict(type='DefaultSampler', shuffle=True)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                              end=6)],
        train_cfg=dict(by_epoch=False, max_iters=length), randomness=dict(seed=0),
        log_level='WARNING',
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                           interval=interval, max_keep_ckpts=max_keep)))
    return Runner(**{**args, **kwargs})


def optimizer_state(run: Runner) -> dict[str, torch.Tensor]:
    """Every optimizer state tensor, whole, by position and name."""
    state = run.optim_wrapper.optimizer.state
    params = dict(run.model.named_parameters())
    return {f'{name}.{key}': (v.full_tensor() if hasattr(v, 'full_tensor') else v).clone()
            for name, p in params.items() for key, v in state[p].items()}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A sharded run of 10 iterations that saved at 3, 6 and 9, and its final state."""
    work = tmp_path_factory.mktemp('sharded')
    run = runner(work)
    run.train()
    return dict(work=work, params=full_params(run.model), optimizer=optimizer_state(run))


# -- format ----------------------------------------------------------------------------
def test_a_sharded_model_saves_a_directory_that_last_checkpoint_names(trained):
    work = trained['work']
    assert sorted(p.name for p in work.iterdir() if not p.name[0].isdigit()) == [
        'iter_10', 'iter_3', 'iter_6', 'iter_9', 'last_checkpoint']
    assert sorted(os.listdir(work / 'iter_9')) == ['.metadata', '__0_0.distcp', STATE_FILE,
                                                   'rank_0.pth']
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_10')
    assert find_last_checkpoint(work) == work / 'iter_10'
    # The rest of the state is plain data, readable with weights_only.
    state = torch.load(work / 'iter_9' / STATE_FILE, weights_only=True)
    assert state['meta']['iter'] == 9 and state['meta']['world_size'] == 1
    assert 'rng' not in state['meta']  # each rank's own file holds its random states
    # Iteration 9 is in the middle of a pass (6 per epoch): its starting states too.
    assert set(torch.load(work / 'iter_9' / 'rank_0.pth', weights_only=True)) == {'rng', 'pass_rng'}


def test_a_model_with_dtensor_parameters_is_recognised_as_sharded():
    assert is_sharded_model(shard(tiny_net()))
    assert not is_sharded_model(tiny_net())


def test_split_and_join_take_the_tensors_out_of_a_tree_and_put_them_back():
    tree = {'meta': {'iter': 3, 'names': ['a', 'b']}, 'optimizer': {
        'state': {'fc.weight': {'exp_avg': torch.ones(2), 'step': torch.tensor(3.0)}},
        'param_groups': [{'lr': 0.1, 'params': ['fc.weight']}]}, 'pair': (torch.zeros(1), 1)}
    tensors, skeleton = split_tensors(tree)
    assert sorted(tensors) == ['optimizer.state.fc.weight.exp_avg',
                               'optimizer.state.fc.weight.step', 'pair.0']
    assert skeleton['meta'] == tree['meta']
    assert not any(isinstance(v, torch.Tensor) for v in split_tensors(skeleton)[0].values())
    joined = join_tensors(skeleton, tensors)
    assert joined['optimizer']['state']['fc.weight']['exp_avg'] is tensors[
        'optimizer.state.fc.weight.exp_avg']
    assert joined['pair'][1] == 1 and joined['meta'] == tree['meta']


def test_two_entries_with_the_same_dotted_name_are_refused():
    with pytest.raises(ValueError, match=r"both named 'a.b'"):
        split_tensors({'a.b': torch.ones(1), 'a': {'b': torch.ones(1)}})


# -- exact resume ------------------------------------------------------------------------
def test_a_sharded_run_stopped_mid_run_resumes_bit_exactly(tmp_path, trained):
    class Stop(Exception):
        pass

    class Crash(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == 7:  # just after the checkpoint of iteration 6
                raise Stop

    part = runner(tmp_path)
    part.register_hook(Crash(), priority='LOWEST')
    with pytest.raises(Stop):
        part.train()
    resumed = runner(tmp_path, resume=True)
    resumed.train()
    assert resumed.iter == 10
    assert_equal_tensors(full_params(resumed.model), trained['params'])
    assert_equal_tensors(optimizer_state(resumed), trained['optimizer'])


def test_a_plain_model_resumes_from_a_sharded_checkpoint_and_trains_on_exactly(tmp_path,
                                                                                 trained):
    plain = runner(tmp_path, model=tiny_net(), resume=str(trained['work'] / 'iter_6'))
    plain.train()
    assert not is_sharded_model(plain.model)
    assert_equal_tensors(full_params(plain.model), trained['params'])
    assert_equal_tensors(optimizer_state(plain), trained['optimizer'])


def test_max_keep_ckpts_removes_old_checkpoint_directories_only(tmp_path):
    (tmp_path / 'iter_1').mkdir()  # a folder that is not a checkpoint stays
    runner(tmp_path, length=8, interval=2, max_keep=2).train()
    assert sorted(p.name for p in tmp_path.glob('iter_*')) == ['iter_1', 'iter_6', 'iter_8']


# -- atomicity ---------------------------------------------------------------------------
def test_a_killed_saves_leftover_directory_is_never_a_checkpoint_and_the_next_save_removes_it(
        tmp_path, trained):
    work = tmp_path / 'work'
    work.mkdir()
    # What a save killed mid-way leaves: a hidden temporary directory with some shards,
    # older than this process.
    leftover = work / '.iter_12.k3j_x9ab.tmp'
    leftover.mkdir()
    (leftover / '__0_0.distcp').write_bytes(b'half')
    (leftover / '.metadata').write_bytes(b'half')
    (leftover / STATE_FILE).write_bytes(b'half')
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    assert not is_sharded_checkpoint(leftover)
    assert find_last_checkpoint(work) is None
    run = runner(work, length=3, resume=str(trained['work'] / 'iter_3'), load_from=None)
    run.train()  # resumes at 3: nothing to train, but the last save runs
    run.save_checkpoint(work, 'iter_3.pth')
    assert not leftover.exists()
    assert find_last_checkpoint(work) == work / 'iter_3'


def test_saving_over_an_existing_checkpoint_directory_replaces_it(tmp_path, trained):
    run = runner(tmp_path, resume=str(trained['work'] / 'iter_9'))
    run.train()
    first = (tmp_path / 'iter_10' / STATE_FILE).read_bytes()
    run.save_checkpoint(tmp_path, 'iter_10.pth')
    assert (tmp_path / 'iter_10' / STATE_FILE).read_bytes() != first  # a new time in meta
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.')) == []


# -- failed loads ------------------------------------------------------------------------
def test_a_checkpoint_of_another_model_leaves_the_model_and_optimizer_unchanged(
        tmp_path, trained):
    other = runner(tmp_path / 'other', model=shard(tiny_net(width=6)), length=2, interval=2)
    other.train()
    run = runner(tmp_path / 'run', resume=str(tmp_path / 'other' / 'iter_2'))
    before = full_params(run.model)
    with pytest.raises(RuntimeError, match=r"iter_2.*does not fit FSDPTinyNet.*blocks.0.0.weight: "
                                           r"checkpoint \(6, 8\) vs model \(12, 8\)"):
        run.train()
    assert_equal_tensors(full_params(run.model), before)
    assert not run.optim_wrapper.optimizer.state


def test_a_directory_without_its_index_or_state_file_is_named_with_what_is_missing(
        tmp_path, trained):
    broken = tmp_path / 'iter_3'
    broken.mkdir()
    for name in os.listdir(trained['work'] / 'iter_3'):
        if name != '.metadata':
            (broken / name).write_bytes((trained['work'] / 'iter_3' / name).read_bytes())
    run = runner(tmp_path / 'run', load_from=str(broken))
    with pytest.raises(FileNotFoundError, match=r"iter_3' is not a complete sharded checkpoint: "
                                                r"it has no \.metadata"):
        run.load_checkpoint(broken)
    os.remove(broken / STATE_FILE)
    with pytest.raises(FileNotFoundError, match=rf"no \.metadata and no {STATE_FILE}"):
        check_sharded_checkpoint(broken)


def test_a_damaged_shard_file_fails_the_load_and_leaves_the_model_unchanged(tmp_path, trained):
    damaged = tmp_path / 'iter_3'
    damaged.mkdir()
    for name in os.listdir(trained['work'] / 'iter_3'):
        data = (trained['work'] / 'iter_3' / name).read_bytes()
        (damaged / name).write_bytes(data[:200] if name.endswith('.distcp') else data)
    run = runner(tmp_path / 'run')
    before = full_params(run.model)
    with pytest.raises(RuntimeError, match=r"cannot read sharded checkpoint .*iter_3.*a shard "
                                           r"file is damaged or missing.*Nothing was loaded"):
        run.load_checkpoint(damaged)
    assert_equal_tensors(full_params(run.model), before)


def test_resuming_with_other_param_groups_names_the_difference_and_loads_nothing(
        tmp_path, trained):
    run = runner(tmp_path, resume=str(trained['work'] / 'iter_3'),
                 optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01),
                                    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=0.1)})))
    before = full_params(run.model)
    with pytest.raises(RuntimeError, match=r"iter_3.*optimizer does not fit.*1 param groups, "
                                           r"this run has 6.*Nothing was loaded"):
        run.train()
    assert_equal_tensors(full_params(run.model), before)


def test_a_sharded_model_refuses_to_resume_from_a_single_file(tmp_path, trained):
    plain = runner(tmp_path / 'plain', model=tiny_net(), length=3)
    plain.train()
    run = runner(tmp_path / 'run', resume=str(tmp_path / 'plain' / 'iter_3.pth'))
    with pytest.raises(RuntimeError, match=r"iter_3.pth' is a single file, but this run's model "
                                           r"is sharded.*load_from="):
        run.train()


# -- safe loading ------------------------------------------------------------------------
_RAN = []


def _mark(*args):
    _RAN.append(args)


class _Evil:
    def __reduce__(self):
        return (_mark, ('the index ran code',))


def _copy_checkpoint(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in os.listdir(source):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_an_index_that_would_run_code_is_refused_without_running_it(tmp_path, trained):
    crafted = _copy_checkpoint(trained['work'] / 'iter_3', tmp_path / 'iter_3')
    (crafted / '.metadata').write_bytes(pickle.dumps(_Evil()))
    run = runner(tmp_path / 'run')
    with pytest.raises(RuntimeError, match=r"refers to test_sharded_checkpoint._mark, which is "
                                           r"not part of a torch.distributed.checkpoint index"):
        run.load_checkpoint(crafted)
    assert _RAN == []


def test_an_index_naming_a_shard_file_outside_the_directory_is_refused(tmp_path, trained):
    from fengine.runner._dcp_safe import read_metadata

    crafted = _copy_checkpoint(trained['work'] / 'iter_3', tmp_path / 'iter_3')
    metadata = read_metadata(crafted)
    for info in metadata.storage_data.values():
        info.relative_path = '../../secret'
    (crafted / '.metadata').write_bytes(pickle.dumps(metadata))
    with pytest.raises(RuntimeError, match=r"names the shard file '../../secret', which is not "
                                           r"a file inside the checkpoint directory"):
        read_sharded(crafted)


def test_pickled_objects_stored_in_the_shards_are_not_unpickled(tmp_path, trained):
    import torch.distributed.checkpoint as dcp

    from fengine.runner._dcp_safe import TensorsOnlyLoadPlanner

    crafted = _copy_checkpoint(trained['work'] / 'iter_3', tmp_path / 'iter_3')
    # The state file asks for a tensor that the index stores as a pickled object.
    for name in os.listdir(crafted):
        if name.endswith('.distcp') or name == '.metadata':
            os.remove(crafted / name)
    dcp.save({'state_dict.head.weight': _Evil()}, checkpoint_id=crafted)
    with pytest.raises(RuntimeError, match=r"entry 'state_dict.head.weight' is not a tensor in "
                                           r"its index"):
        read_sharded(crafted, keys=lambda key: key == 'state_dict.head.weight')
    assert _RAN == []
    with pytest.raises(RuntimeError, match=r"stores 'x' as a pickled object"):
        item = type('Item', (), {'dest_index': type('Index', (), {'fqn': 'x'})()})()
        TensorsOnlyLoadPlanner().load_bytes(item, io.BytesIO(pickle.dumps(_Evil())))


# -- consolidated export -----------------------------------------------------------------
@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_an_exported_consolidated_file_loads_into_a_plain_model_with_load_from(
        tmp_path, trained, suffix):
    out = export_consolidated(trained['work'] / 'iter_10', tmp_path / f'model{suffix}')
    if suffix == '.pth':
        saved = torch.load(out, weights_only=True)
        assert set(saved) == {'state_dict', 'meta'} and saved['meta']['iter'] == 10
    plain = Runner(model=tiny_net(), work_dir=tmp_path / 'plain', load_from=str(out),
                   log_level='WARNING')
    plain.load_or_resume()
    assert_equal_tensors(full_params(plain.model), trained['params'])


def test_a_sharded_model_loads_a_consolidated_file_keeping_its_shards(tmp_path, trained):
    out = export_consolidated(trained['work'] / 'iter_10', tmp_path / 'model.pth')
    run = runner(tmp_path / 'run', load_from=str(out))
    run.load_or_resume()
    assert is_sharded_model(run.model)
    assert_equal_tensors(full_params(run.model), trained['params'])


def test_load_consolidated_reads_the_whole_checkpoint_in_one_process(trained):
    checkpoint = load_consolidated(trained['work'] / 'iter_10')
    assert_equal_tensors(checkpoint['state_dict'], trained['params'])
    state = checkpoint['optimizer']['state']
    assert torch.equal(state['head.weight']['exp_avg'], trained['optimizer']['head.weight.exp_avg'])
    assert checkpoint['optimizer']['param_groups'][0]['params'][0] == 'blocks.0.0.weight'


def test_the_command_line_exports_a_consolidated_file(tmp_path, trained):
    out = tmp_path / 'model.safetensors'
    command = [sys.executable, '-m', 'fengine.checkpoint', 'export-consolidated',
               str(trained['work'] / 'iter_10'), str(out)]
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert f'wrote {out}' in done.stdout
    from safetensors.torch import load_file
    assert_equal_tensors(load_file(out), trained['params'])
    missing = subprocess.run(command[:-2] + [str(tmp_path / 'nothing'), str(out)],
                             capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode == 1
    assert f"error: sharded checkpoint '{tmp_path / 'nothing'}' does not exist" in missing.stderr


def test_export_refuses_a_directory_as_its_output(tmp_path, trained):
    with pytest.raises(ValueError, match=r"writes one file, but .* is a directory"):
        export_consolidated(trained['work'] / 'iter_10', tmp_path)


def test_a_published_sharded_checkpoint_is_one_consolidated_file(tmp_path):
    run = runner(tmp_path, length=2, interval=2)
    run.register_hook(dict(type='CheckpointHook', by_epoch=False, interval=2,
                           published_keys=['meta', 'state_dict']))
    run._hooks = [h for h in run._hooks if not (type(h).__name__ == 'CheckpointHook'
                                                 and h.published_keys is None)]
    run.train()
    published = list(tmp_path.glob('iter_2-*.pth'))
    assert len(published) == 1
    checkpoint = torch.load(published[0], weights_only=True)
    assert set(checkpoint) == {'meta', 'state_dict'}
    assert_equal_tensors(checkpoint['state_dict'], full_params(run.model))


def test_load_checkpoint_of_a_directory_reads_the_weights_but_not_the_optimizer(
        tmp_path, trained):
    run = runner(tmp_path)
    checkpoint = run.load_checkpoint(trained['work'] / 'iter_10')
    assert sorted(checkpoint) == ['message_hub', 'meta', 'param_schedulers', 'state_dict']
    assert_equal_tensors(full_params(run.model), trained['params'])


def test_a_dangling_pointer_falls_back_to_the_newest_complete_checkpoint_directory(
        tmp_path, trained):
    for name in ('iter_3', 'iter_6'):
        _copy_checkpoint(trained['work'] / name, tmp_path / name)
    old = time.time() - 60
    os.utime(tmp_path / 'iter_3', (old, old))
    (tmp_path / 'iter_7').mkdir()  # incomplete: no index, no state file
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_9'))  # removed since
    assert find_last_checkpoint(tmp_path) == tmp_path / 'iter_6'


def test_save_best_keeps_one_best_directory_and_last_checkpoint_names_the_periodic_one(
        tmp_path):
    run = runner(tmp_path, length=6, interval=2,
                 train_cfg=dict(by_epoch=False, max_iters=6, val_interval=2),
                 val_dataloader=dict(dataset=samples(24, seed=1), batch_size=8),
                 val_evaluator=dict(type='Accuracy'),
                 default_hooks=dict(checkpoint=dict(type='CheckpointHook', by_epoch=False,
                                                    interval=2, save_best='accuracy/top1',
                                                    rule='greater')))
    run.train()
    best = [p for p in tmp_path.iterdir() if p.name.startswith('best_')]
    assert len(best) == 1 and is_sharded_checkpoint(best[0]), best
    assert 'optimizer' not in load_consolidated(best[0])  # a best checkpoint: weights only
    assert find_last_checkpoint(tmp_path) == tmp_path / 'iter_6'
