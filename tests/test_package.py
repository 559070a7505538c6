"""Spec for ``fengine/__init__.py``: a light ``import fengine`` that still offers every name."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import fengine

FRESH = textwrap.dedent('''
    import json, sys
    import fengine
    from fengine import HOOKS, MODELS, OPTIMIZERS, LOOPS, METRICS, VISBACKENDS
    before = 'torch' in sys.modules
    found = [HOOKS.get('CheckpointHook').__module__, MODELS.get('BaseDataPreprocessor').__module__,
             OPTIMIZERS.get('SGD').__module__, LOOPS.get('EpochBasedTrainLoop').__module__,
             METRICS.get('Accuracy').__module__, VISBACKENDS.get('LocalVisBackend').__module__]
    print(json.dumps({'torch_before_lookup': before, 'found': found}))
''')


def test_a_fresh_import_loads_no_torch_and_a_registry_finds_fengines_own_entries():
    done = subprocess.run([sys.executable, '-c', FRESH], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.splitlines()[-1])
    assert probe['torch_before_lookup'] is False
    assert probe['found'] == ['fengine.hooks.checkpoint_hook', 'fengine.model.data_preprocessor',
                              'torch.optim.sgd', 'fengine.runner.loops',
                              'fengine.evaluator.accuracy', 'fengine.visualization.backends']


def test_the_runner_and_the_subpackages_are_attributes_of_the_package():
    from fengine import Runner
    from fengine.runner import Runner as runner_runner

    assert Runner is runner_runner and fengine.Runner is Runner
    assert fengine.hooks.Hook is not None and fengine.model.BaseModel is not None


def test_dir_lists_every_public_name_also_those_not_loaded_yet():
    listed = dir(fengine)
    assert set(fengine.__all__) <= set(listed)
    assert {'Runner', 'runner', 'model', 'datasets', 'dataset', 'structures'} <= set(listed)


def test_every_name_in_all_is_there():
    for name in fengine.__all__:
        assert getattr(fengine, name) is not None, name


def test_an_unknown_attribute_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="module 'fengine' has no attribute 'Runer'"):
        fengine.Runer  # noqa: B018
