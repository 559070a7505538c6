"""The benchmark code runs on small models, so bench/ cannot rot unnoticed.

Initialization runs on the 'debug' preset; the training step on the seed's MLP for two
steps, with the compiled contenders' code run uncompiled (no inductor here).

Timings are not checked here, only that every contender runs and every row has its
fields; the figures come from ``python -m bench``.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch

# bench/ is a top-level package of the checkout, not of the installed distribution;
# plain `pytest` (unlike `python -m pytest`) does not put the checkout on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bandwidth_bench, init_bench, step_ab, step_bench  # noqa: E402
from bench.__main__ import format_table  # noqa: E402
from fengine.func import fold_in  # noqa: E402
from fengine.presets import get_preset  # noqa: E402

FIELDS = {'benchmark', 'model', 'contender', 'device', 'status', 'seconds', 'times',
          'ratio', 'baseline', 'params', 'note'}


def _contenders() -> list:
    params = []
    for name in init_bench.CONTENDERS:
        marks = ()
        if name == 'mmengine' and not init_bench.mmengine_available():
            marks = pytest.mark.skip(reason='needs the bench extra of pyproject.toml '
                                     '(FENGINE_EXTRAS=dev,vision,bench)')
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize('contender', _contenders())
def test_each_contender_times_the_debug_preset(contender):
    names = list(dict.fromkeys(['fengine', contender]))  # the baseline, then the contender
    rows = init_bench.bench_init(['debug'], 'cpu', repeats=1, warmup=0, contenders=names,
                                 log=lambda line: None)
    assert [r['contender'] for r in rows] == names
    for row in rows:
        assert FIELDS <= set(row)
        assert row['status'] == 'ok', row['status']
        assert row['benchmark'] == 'init' and row['model'] == 'debug'
        assert row['seconds'] > 0 and len(row['times']) == 1
        assert row['params'] == 31616
        assert row['baseline'] == 'fengine' and row['ratio'] > 0


def test_a_peer_that_is_not_installed_is_reported_as_skipped(monkeypatch):
    monkeypatch.setattr(init_bench, 'mmengine_available', lambda: False)
    rows = init_bench.bench_init(['debug'], 'cpu', repeats=1, warmup=0,
                                 contenders=['fengine', 'mmengine'], log=lambda line: None)
    skipped = rows[1]
    assert skipped['status'] == 'skipped (not installed)'
    assert skipped['seconds'] is None and skipped['ratio'] is None and skipped['times'] == []
    assert 'skipped (not installed)' in format_table(rows)


def test_a_failing_baseline_is_reported_and_ratios_fall_back(monkeypatch):
    def broken(preset, device):
        raise ValueError('cannot build this one')

    monkeypatch.setitem(init_bench.CONTENDERS, 'fengine', broken)
    rows = init_bench.bench_init(['debug'], 'cpu', repeats=1, warmup=0,
                                 contenders=['fengine', 'fengine (built on CPU)'],
                                 log=lambda line: None)
    assert rows[0]['status'] == 'failed: ValueError: cannot build this one'
    assert rows[1]['baseline'] == 'fengine (built on CPU)' and rows[1]['ratio'] == 1.0
    assert 'cannot build this one' in format_table(rows)


def test_torch_init_loop_applies_the_preset_init_cfg():
    from fengine.presets import get_preset

    preset = get_preset('debug')
    model = preset.build()
    init_bench.torch_init_loop(model, preset.init_cfg)
    assert (model.ln_f.weight == 1).all() and (model.blocks[0].attn.qkv.bias == 0).all()
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_import_time_is_read_from_top_level_importtime_lines():
    stderr = '\n'.join([
        'import time: self [us] | cumulative | imported package',
        'import time:       100 |     900000 | torch',
        'import time:        50 |        500 |   fengine._errors',
        'import time:       300 |      70000 | fengine',
        'import time:        10 |       2000 | fengine.presets',
    ])
    assert init_bench._own_import_seconds(stderr, 'fengine') == pytest.approx(0.072)
    with pytest.raises(ValueError, match='mmengine'):
        init_bench._own_import_seconds(stderr, 'mmengine')


def test_first_call_script_is_valid_python_for_every_contender():
    # Running it takes a fresh interpreter (seconds); compiling it catches a broken template.
    for name in init_bench.CONTENDERS:
        code = init_bench._FIRST_CALL.format(preset='debug', device='cpu', contender=name,
                                             imports='import mmengine.model\n')
        compile(code, f'<first call: {name}>', 'exec')


def test_first_call_rows_take_the_median_of_the_fresh_runs_with_ratios(monkeypatch):
    # The fresh interpreters are replaced by canned outputs: this checks the bookkeeping.
    outputs = iter(['0.5', '0.1', '0.4', '0.2', '0.6', '0.3'] * 4)

    class Done:
        returncode = 0
        stderr = ''

        def __init__(self):
            self.stdout = next(outputs)

    monkeypatch.setattr(init_bench.subprocess, 'run', lambda *a, **k: Done())
    names = ['fengine', 'torch.nn.init loop']
    rows = init_bench.bench_first_call('debug', 'cpu', repeats=3, contenders=names,
                                       log=lambda line: None)
    assert [r['contender'] for r in rows] == names
    assert [r['seconds'] for r in rows] == [0.5, 0.2]
    assert rows[1]['ratio'] == pytest.approx(0.4) and rows[0]['baseline'] == 'fengine'


def test_the_bandwidth_rows_hold_bytes_bandwidth_and_the_fraction_of_the_copy():
    rows = bandwidth_bench.bench_bandwidth(['debug'], 'cpu', repeats=1, log=lambda line: None)
    assert [r['contender'] for r in rows] == list(bandwidth_bench.CONTENDERS)
    written = rows[0]['params'] * 4  # float32
    for row in rows:
        if row['contender'] == 'mmengine' and not init_bench.mmengine_available():
            assert row['status'] == init_bench.SKIPPED
            continue
        assert row['status'] == 'ok' and row['bytes'] == written, row
        assert row['bandwidth'] == pytest.approx(written / row['seconds'])
        assert 'GB/s' in row['note'] and '% of copy' in row['note']
    assert rows[2]['ratio'] == 1.0 and rows[0]['of_copy'] == 1.0
    assert 'fengine fill' in format_table(rows)


def test_the_whole_model_fill_draws_what_init_weights_draws():
    with torch.device('meta'):
        meta = init_bench.FengineModel(get_preset('debug'))
    jobs = bandwidth_bench.model_fills(meta, torch.device('cpu'), seed=0)
    bandwidth_bench.sample_into(jobs)
    model = init_bench.FengineModel(get_preset('debug'))
    model.init_weights(seed=0)
    params = dict(model.named_parameters())
    by_key = {fold_in(0, path): path for path in params}
    assert len(jobs) == len(params)
    for _, key, tensor in jobs:
        assert torch.equal(tensor, params[by_key[key]].detach()), by_key[key]


# -- the training-step benchmark ---------------------------------------------------------

STEP_FIELDS = FIELDS | {'steps_per_s', 'samples_per_s', 'batch_size', 'steps', 'warmup_seconds',
                        'warmup_times', 'peak_mem_bytes', 'first_loss', 'last_loss', 'steal',
                        'warmup_steal'}


def _step_contenders() -> list[str]:
    return [name for name in step_bench.CONTENDERS
            if name != 'mmengine eager' or init_bench.mmengine_available()]


def test_every_step_contender_trains_the_mlp_to_the_same_loss():
    # compile=False runs the compiled contenders' code uncompiled: no inductor in tests.
    names = _step_contenders()
    rows = step_bench.bench_step(['fashion-mlp'], 'cpu', steps=2, repeats=1, warmup=1,
                                 contenders=names, compile=False, isolate=False,
                                 log=lambda line: None)
    assert [r['contender'] for r in rows] == names
    for row in rows:
        assert STEP_FIELDS <= set(row)
        assert row['status'] == 'ok', row['status']
        assert row['benchmark'] == 'step' and row['model'] == 'fashion-mlp'
        assert row['batch_size'] == 64 and row['steps'] == 2 and row['params'] == 669706
        assert row['seconds'] > 0 and len(row['times']) == 1 and len(row['warmup_times']) == 1
        assert row['steps_per_s'] == pytest.approx(1 / row['seconds'])
        assert row['samples_per_s'] == pytest.approx(64 / row['seconds'])
        assert row['baseline'] == 'fengine compiled' and row['ratio'] > 0
        assert row['peak_mem_bytes'] is None  # measured only in a process of its own
    # Same initial weights, batches and SGD: the same losses, up to float rounding.
    for row in rows[1:]:
        assert row['first_loss'] == pytest.approx(rows[0]['first_loss'], rel=1e-6)
        assert row['last_loss'] == pytest.approx(rows[0]['last_loss'], rel=1e-4)
    table = format_table(rows)
    assert 'steps/s' in table and 'samples/s' in table and 'peak mem' in table


def test_a_contender_run_reports_its_warm_up_and_peak_memory():
    result = step_bench.run_contender('fashion-mlp', 'fengine eager', 'cpu', steps=2, repeats=2,
                                      warmup=2, compile=False)
    assert len(result['times']) == 2 and len(result['warmup_times']) == 2
    assert isinstance(result['peak_mem_bytes'], int) and result['process_peak_bytes'] > 0


def test_a_contender_run_separates_what_warm_up_left_from_the_step_s_own_memory():
    result = step_bench.run_contender('fashion-mlp', 'fengine eager', 'cpu', steps=2, repeats=1,
                                      warmup=1, compile=False)
    assert isinstance(result['resident_bytes'], int) and result['step_rise_bytes'] >= 0
    # At its peak an SGD step with momentum holds the parameters, the momentum and the
    # gradients: three times the parameters' 669,706 float32 values at least.
    assert result['tensor_peak_bytes'] >= 3 * 669706 * 4


def test_the_tensor_peak_counts_what_a_step_holds_and_what_it_allocates():
    held = torch.zeros(250_000)  # 1 MB alive before and after the step
    baseline = step_bench.tensor_peak(lambda: held.sum(), torch.device('cpu'))
    peak = step_bench.tensor_peak(lambda: torch.ones(2_000_000).add(held.sum()).sum(),
                                  torch.device('cpu'))
    assert baseline >= held.nbytes
    # torch.ones and the result of add (8 MB each) are alive together; the sums are 4 bytes.
    assert abs(peak - baseline - 2 * 8_000_000) < 1000


def test_the_cpu_gpt_trains_on_short_sequences_of_token_ids_and_next_token_labels():
    spec = step_bench.STEP_MODELS['gpt-125m-cpu-f32-32tok']
    assert spec.preset == 'gpt-125m' and not spec.cuda_only and not spec.bf16
    inputs, labels = step_bench.make_batches(spec, torch.device('cpu'), count=1)[0]
    assert inputs.shape == labels.shape == (2, 32)
    assert inputs.dtype == labels.dtype == torch.int64
    assert 0 <= int(inputs.min()) and int(inputs.max()) < 50304


def test_the_one_process_comparison_times_each_variant_in_every_round():
    results = step_ab.compare('fashion-mlp', ['eager'], rounds=2, steps=1, log=lambda line: None)
    times = results['eager']['times']
    assert len(times) == 2 and min(times) <= results['eager']['median'] <= max(times)
    # The MLP's parameters, momentum and gradients: 669,706 float32 values, three times.
    assert results['eager']['tensor_peak_bytes'] >= 3 * 669706 * 4


def test_the_one_process_comparison_names_the_variants_it_knows():
    with pytest.raises(ValueError, match=r"a variant must be one of 'eager', 'fengine "
                       r"default', 'layout optimization on', but got 'channels last'"):
        step_ab.compare('fashion-mlp', ['channels last'])


def test_a_cuda_only_model_is_listed_as_skipped_on_the_cpu():
    rows = step_bench.bench_step(['gpt-125m'], 'cpu', contenders=['fengine compiled'],
                                 log=lambda line: None)
    assert rows[0]['status'] == 'skipped (needs CUDA)' and rows[0]['seconds'] is None
    assert 'skipped (needs CUDA)' in format_table(rows)


def test_mmengine_missing_is_reported_as_skipped_in_the_step_benchmark(monkeypatch):
    monkeypatch.setattr(step_bench, 'mmengine_available', lambda: False)
    rows = step_bench.bench_step(['fashion-mlp'], 'cpu', contenders=['mmengine eager'],
                                 log=lambda line: None)
    assert rows[0]['status'] == 'skipped (not installed)' and rows[0]['ratio'] is None


def test_a_failing_step_contender_is_reported_and_ratios_fall_back(monkeypatch):
    def broken(spec, device, compile):
        raise RuntimeError('cannot compile this one')

    monkeypatch.setitem(step_bench.CONTENDERS, 'fengine compiled', broken)
    rows = step_bench.bench_step(['fashion-mlp'], 'cpu', steps=1, repeats=1, warmup=1,
                                 contenders=['fengine compiled', 'fengine eager'],
                                 isolate=False, log=lambda line: None)
    assert rows[0]['status'] == 'failed: RuntimeError: cannot compile this one'
    assert rows[1]['baseline'] == 'fengine eager' and rows[1]['ratio'] == 1.0
    assert '1.00x*' in format_table(rows)


def test_the_worker_process_protocol_answers_blocks_then_the_result(monkeypatch, capsys):
    # What a contender's own interpreter runs, here in-process: stdin commands, stdout answers.
    monkeypatch.setattr(sys, 'stdin', io.StringIO('{"block": 2}\n{"finish": true}\n'))
    args = dict(model='fashion-mlp', contender='fengine eager', device='cpu', warmup=1,
                compile=False)
    step_bench._worker([json.dumps(args)])
    answers = [json.loads(line[len(step_bench._MARK):])
               for line in capsys.readouterr().out.splitlines()
               if line.startswith(step_bench._MARK)]
    assert answers[0] == {'ready': True} and answers[1]['seconds'] > 0
    assert answers[2]['times'] == [answers[1]['seconds']]
    assert isinstance(answers[2]['peak_mem_bytes'], int)
