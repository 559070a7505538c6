"""CheckpointHook: MMEngine's arguments, file names and rules, on a small run."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from fengine.hooks import CheckpointHook

from hook_models import Scores, make_runner


def names(folder: Path, pattern: str = '*.pth') -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


def pointer(work_dir: Path) -> Path:
    return Path((work_dir / 'last_checkpoint').read_text().strip())


def train(work_dir: Path, epochs: int = None, iters: int = None, **hook) -> object:
    runner = make_runner(work_dir, epochs=epochs, iters=iters,
                         checkpoint=dict(type='CheckpointHook', **hook))
    runner.train()
    return runner


def validated(work_dir: Path, scores: list[dict], epochs: int, **hook):
    runner = make_runner(work_dir, epochs=epochs, validate=True, val_evaluator=Scores(scores),
                         checkpoint=dict(type='CheckpointHook', **hook))
    runner.train()
    return runner


# -- when and where ---------------------------------------------------------------------
def test_interval_counts_epochs_and_save_last_adds_the_last_one(tmp_path):
    train(tmp_path / 'a', epochs=4, interval=3)
    assert names(tmp_path / 'a') == ['epoch_3.pth', 'epoch_4.pth']
    train(tmp_path / 'b', epochs=4, interval=3, save_last=False)
    assert names(tmp_path / 'b') == ['epoch_3.pth']


def test_by_epoch_false_counts_iterations(tmp_path):
    train(tmp_path, iters=5, interval=2, by_epoch=False)
    assert names(tmp_path) == ['iter_2.pth', 'iter_4.pth', 'iter_5.pth']


def test_save_begin_starts_the_periodic_saves_at_that_epoch(tmp_path):
    train(tmp_path, epochs=6, interval=2, save_begin=3, save_last=False)
    assert names(tmp_path) == ['epoch_3.pth', 'epoch_5.pth']


def test_out_dir_holds_the_checkpoints_under_the_last_part_of_work_dir(tmp_path):
    work_dir = tmp_path / 'work' / 'exp1'
    train(work_dir, epochs=2, interval=1, out_dir=tmp_path / 'store')
    assert names(tmp_path / 'store' / 'exp1') == ['epoch_1.pth', 'epoch_2.pth']
    assert names(work_dir) == []
    assert pointer(work_dir) == (tmp_path / 'store' / 'exp1' / 'epoch_2.pth').resolve()


def test_filename_tmpl_names_the_files(tmp_path):
    train(tmp_path, epochs=2, interval=1, filename_tmpl='ckpt_e{}.pth')
    assert names(tmp_path) == ['ckpt_e1.pth', 'ckpt_e2.pth']


def test_save_optimizer_and_save_param_scheduler_false_leave_them_out(tmp_path):
    train(tmp_path / 'with', epochs=1, interval=1)
    train(tmp_path / 'without', epochs=1, interval=1, save_optimizer=False,
          save_param_scheduler=False)
    assert 'optimizer' in torch.load(tmp_path / 'with' / 'epoch_1.pth', weights_only=True)
    kept = torch.load(tmp_path / 'without' / 'epoch_1.pth', weights_only=True)
    assert 'optimizer' not in kept and 'param_schedulers' not in kept


def test_max_keep_ckpts_keeps_the_newest_across_a_resume(tmp_path):
    train(tmp_path, iters=6, interval=1, by_epoch=False, max_keep_ckpts=2)
    assert names(tmp_path) == ['iter_5.pth', 'iter_6.pth']
    saved = torch.load(tmp_path / 'iter_6.pth', weights_only=True)
    assert saved['message_hub']['runtime_info']['keep_ckpt_ids'] == [5, 6]
    # A file that a killed run could not remove any more is found by name.
    torch.save({}, tmp_path / 'iter_4.pth')
    runner = make_runner(tmp_path, iters=8, resume=True, checkpoint=dict(
        type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=2))
    runner.train()
    assert names(tmp_path) == ['iter_7.pth', 'iter_8.pth']


# -- best checkpoints --------------------------------------------------------------------
def test_save_best_keeps_one_best_file_without_optimizer_and_resume_uses_the_last(tmp_path):
    validated(tmp_path, [dict(accuracy=50.0), dict(accuracy=70.0), dict(accuracy=60.0)],
              epochs=3, interval=1, save_best='accuracy')
    assert names(tmp_path, 'best_*') == ['best_accuracy_epoch_2.pth']
    best = torch.load(tmp_path / 'best_accuracy_epoch_2.pth', weights_only=True)
    assert 'optimizer' not in best and best['meta']['epoch'] == 2
    assert pointer(tmp_path).name == 'epoch_3.pth'
    # epoch_2.pth was written again after its validation: it knows the new best.
    second = torch.load(tmp_path / 'epoch_2.pth', weights_only=True)
    assert second['message_hub']['runtime_info']['best_score'] == 70.0


def test_a_resumed_run_compares_with_the_best_of_the_run_it_resumes(tmp_path):
    validated(tmp_path, [dict(accuracy=50.0), dict(accuracy=70.0)], epochs=2, interval=1,
              save_best='accuracy')
    runner = make_runner(tmp_path, epochs=3, validate=True, resume=True,
                         val_evaluator=Scores([dict(accuracy=60.0)]), checkpoint=dict(
                             type='CheckpointHook', interval=1, save_best='accuracy'))
    runner.train()
    assert names(tmp_path, 'best_*') == ['best_accuracy_epoch_2.pth']


def test_save_best_takes_several_keys_with_a_rule_each(tmp_path):
    validated(tmp_path, [dict(acc=50.0, fid=3.0), dict(acc=40.0, fid=2.0)], epochs=2,
              interval=1, save_best=['acc', 'fid'], rule=['greater', 'less'])
    assert names(tmp_path, 'best_*') == ['best_acc_epoch_1.pth', 'best_fid_epoch_2.pth']


def test_save_best_auto_takes_the_first_metric(tmp_path):
    validated(tmp_path, [dict(accuracy=1.0, loss=9.0), dict(accuracy=2.0, loss=1.0)],
              epochs=2, save_best='auto')
    assert names(tmp_path, 'best_*') == ['best_accuracy_epoch_2.pth']


def test_a_metric_key_with_a_slash_gives_a_file_name_without_one(tmp_path):
    validated(tmp_path, [{'coco/bbox_mAP': 0.3}], epochs=1, save_best='coco/bbox_mAP')
    assert names(tmp_path, 'best_*') == ['best_coco_bbox_mAP_epoch_1.pth']


@pytest.mark.parametrize('key, rule', [('accuracy/top1', 'greater'), ('val/loss', 'less'),
                                       ('mIoU', 'greater'), ('top1_err', 'greater'),
                                       ('psnr', 'greater'), ('mse', 'less')])
def test_rules_are_inferred_as_mmengine_then_from_a_few_more_names(key, rule):
    assert CheckpointHook(save_best=key).rule == rule


def test_greater_keys_and_less_keys_replace_the_known_names():
    assert CheckpointHook(save_best='score', greater_keys=['score']).rule == 'greater'
    assert CheckpointHook(save_best='dist', less_keys='dist').rule == 'less'
    with pytest.raises(ValueError, match=r"cannot tell whether a larger or smaller 'acc'"):
        CheckpointHook(save_best='acc', greater_keys=['top'])


# -- published checkpoints -------------------------------------------------------------
def test_published_keys_write_stripped_copies_named_by_their_sha256(tmp_path):
    validated(tmp_path, [dict(accuracy=50.0), dict(accuracy=40.0)], epochs=2, interval=1,
              save_best='accuracy', published_keys=['meta', 'state_dict'])
    published = names(tmp_path, '*-*.pth')
    assert len(published) == 2
    assert {p.split('-')[0] for p in published} == {'epoch_2', 'best_accuracy_epoch_1'}
    for name in published:
        data_bytes = (tmp_path / name).read_bytes()
        assert name.endswith(f'-{hashlib.sha256(data_bytes).hexdigest()[:8]}.pth')
        assert set(torch.load(tmp_path / name, weights_only=True)) == {'meta', 'state_dict'}


def test_a_published_key_the_checkpoint_lacks_is_named(tmp_path):
    with pytest.raises(KeyError, match=r"published_keys names \['state_dct'\] Did you mean "
                                       r"'state_dict'\?, which epoch_1.pth does not hold"):
        train(tmp_path, epochs=1, interval=1, published_keys=['meta', 'state_dct'])


# -- refused arguments ------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, error, message', [
    (dict(out_dir='s3://bucket/ckpts'), NotImplementedError,
     r"out_dir='s3://bucket/ckpts' needs a remote storage backend"),
    (dict(backend_args=dict(backend='petrel')), NotImplementedError,
     r"backend_args=\{'backend': 'petrel'\}: fengine writes checkpoints to local folders only"),
    (dict(file_client_args=dict(backend='disk'), backend_args=dict(backend='local')),
     ValueError, r'file_client_args \(the older name\) or backend_args, not both'),
    (dict(filename_tmpl='epoch.pth'), ValueError, r"filename_tmpl must hold one '\{\}'"),
    (dict(filename_tmpl='e_{}_{}.pth'), ValueError, r"filename_tmpl must hold one '\{\}'"),
    (dict(save_begin=-1), ValueError, r'save_begin must be >= 0, but got -1'),
    (dict(save_best=['auto', 'acc']), ValueError, r"'auto' picks the first metric"),
    (dict(save_best=['acc', 'acc']), ValueError, r"save_best names \['acc'\] more than once"),
    (dict(save_best=['acc', 'loss', 'top'], rule=['greater', 'less']), ValueError,
     r'one rule or one per save_best key \(3\)'),
    (dict(save_best='acc', rule='bigger'), ValueError,
     r"rule must be one of 'greater', 'less', but got 'bigger'"),
    (dict(published_keys=3), TypeError, r'published_keys must be a str or a list of str'),
    (dict(sync_buffer=True), TypeError, r"CheckpointHook has no argument\(s\) \['sync_buffer'\]"),
])
def test_arguments_fengine_cannot_honour_are_refused_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        CheckpointHook(**kwargs)


def test_local_backends_are_accepted():
    CheckpointHook(backend_args=dict(backend='local'))
    CheckpointHook(file_client_args=dict(backend='disk'))
