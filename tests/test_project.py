"""The project's promises about itself: README commands, CI, public names."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / 'shared' / 'SPEC.md'

# Public names SPEC.md lists that later issues bring; each must move out of here (and this
# test then checks it) the day it lands.
PENDING: dict[str, set[str]] = {}


def readme_commands() -> list[str]:
    text = (ROOT / 'README.md').read_text()
    block = re.search(r'```bash\n(.*?)```', text, re.S)
    assert block and text.index(block.group(0)) < text.index('\n\n', text.index('# fengine'))\
        + 3, 'the README must open with its command block'
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_opens_with_exactly_two_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert 'examples/' in commands[0] and 'pytest' in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line.strip() for line in (ROOT / '.ci' / 'run').read_text().splitlines()]
    assert readme_commands()[1] in ci_lines


def test_the_constraints_pin_the_stack_ci_runs_on():
    pins = dict(line.split('==') for line in (ROOT / 'constraints.txt').read_text().splitlines()
                if '==' in line and not line.startswith('#'))
    assert pins['torch'] == '2.14.1' and pins['torchvision'] == '0.29.1'


def spec_names() -> dict[str, set[str]]:
    """Module -> names, from SPEC.md's 'Public API' list."""
    if not SPEC.exists():
        pytest.skip('needs the team specification, which a clone of the repository does not hold')
    section = SPEC.read_text().split('## Public API', 1)[1].split('\n## ', 1)[0]
    names: dict[str, set[str]] = {}
    for item in re.split(r'\n- ', section):
        module = re.match(r'`(fengine(?:\.\w+)*)`', item.strip('- \n'))
        if not module:
            continue
        found = set(re.findall(r'`(\w+)`', item[module.end():]))
        if 'eight `*Init` classes' in item:
            found |= {'ConstantInit', 'XavierInit', 'NormalInit', 'TruncNormalInit',
                      'UniformInit', 'KaimingInit', 'Caffe2XavierInit', 'PretrainedInit'}
        names.setdefault(module.group(1), set()).update(found)
    runner = re.search(r'`(fengine\.runner)\.Runner`', section)
    if runner:
        names.setdefault('fengine.runner', set()).add('Runner')
        names.setdefault('fengine', set()).add('Runner')
    hooks = re.search(r'`fengine\.hooks\.Hook`', section)
    if hooks:
        names.setdefault('fengine.hooks', set()).add('Hook')
    names.pop('fengine.func', None)  # its design is ours; checked by its own __all__
    return names


def test_every_public_name_in_spec_exists_or_is_listed_as_pending():
    for module_name, names in spec_names().items():
        pending = PENDING.get(module_name, set())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            assert names <= pending | {'Runner'}, f'{module_name} is missing'
            continue
        for name in sorted(names - pending):
            assert hasattr(module, name), f'{module_name}.{name} is missing'
            assert name in module.__all__, f'{module_name}.__all__ lacks {name}'
        for name in pending:
            assert not hasattr(module, name), (
                f'{module_name}.{name} exists now: remove it from PENDING')


@pytest.mark.parametrize('module_name', ['fengine', 'fengine.func', 'fengine.model', 'fengine.optim',
                                         'fengine.registry', 'fengine.logging'])
def test_every_name_in_all_resolves(module_name):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert hasattr(module, name), f'{module_name}.{name}'
