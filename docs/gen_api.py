"""Write ``docs/api.md``: one line per public name, read from the live code.

    bash tools/venv.sh python docs/gen_api.py          # rewrite docs/api.md
    bash tools/venv.sh python docs/gen_api.py --check  # exit 1 when docs/api.md is stale

Every name in the ``__all__`` of the modules below gets its signature (``inspect``)
and the first paragraph of its docstring. A function, class or module without a
docstring is an error, and so is a public constant (a registry, a table) missing from
``CONSTANTS`` below: ``tests/test_docs.py`` runs this, so a new public name cannot be
added without saying what it is.
"""
from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
from pathlib import Path

MODULES = ['fengine', 'fengine.model', 'fengine.optim', 'fengine.func', 'fengine.registry',
           'fengine.logging', 'fengine.evaluator', 'fengine.hooks', 'fengine.runner',
           'fengine.visualization', 'fengine.datasets', 'fengine.dataset', 'fengine.structures',
           'fengine.dist', 'fengine.analysis', 'fengine.config', 'fengine.fileio', 'fengine.train']

# Public names that are data, not code: they cannot carry a docstring.
CONSTANTS = {
    'fengine.__version__': "fengine's version string.",
    'fengine.version_info': 'The version as a tuple of ints, e.g. `(0, 1, 0)`.',
    'fengine.hooks.PRIORITIES': 'Named hook priorities: `HIGHEST` 0 ... `NORMAL` 50 ... '
                                '`LOWEST` 100 (a smaller number runs first).',
    'fengine.runner.DEFAULT_HOOKS': 'The hooks every Runner registers, by name; '
                                    '`default_hooks=dict(name=None)` removes one.',
    'fengine.logging.LOGGER_NAME': "The name of fengine's `logging` logger.",
    'fengine.func.GENERATORS': "The random generators initializers draw with: `'philox'` "
                               "(default; counter-based, the same integers on every device) "
                               "and `'torch'` (a `torch.Generator` per parameter).",
    'fengine.datasets.FASHION_MNIST_CLASSES': 'The ten FashionMNIST class names, in label '
                                              'order.',
    'fengine.dist.TIMEOUT_ENV': 'The environment variable that sets the collective timeout '
                                'in seconds.',
    'fengine.func.ParamTree': 'A parameter tree: a dict from dotted parameter path to tensor.',
    'fengine.fileio.FILE_FORMATS': 'The file formats `load`/`dump` know, by name and suffix: '
                                   "`json`, `yaml`/`yml`, `pickle`/`pkl`.",
}

OUT = Path(__file__).with_name('api.md')


def _first_paragraph(obj) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc:
        return None
    paragraph = doc.strip().split('\n\n')[0]
    text = ' '.join(line.strip() for line in paragraph.splitlines())
    # Sphinx roles read as plain code in Markdown: :class:`~a.B` -> `a.B`.
    return re.sub(r':(?:class|func|meth|mod|attr|data|exc):`~?', '`', text)


def _signature(obj) -> str:
    init = getattr(obj, '__init__', None) if inspect.isclass(obj) else None
    if init is not None and init is not object.__init__ \
            and not (getattr(init, '__module__', None) or 'fengine').startswith('fengine'):
        return '(...)'  # a constructor inherited from torch: its arguments are torch's
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ''
    # Reprs of default values may carry memory addresses; keep the output stable.
    text = re.sub(r' at 0x[0-9a-f]+', '', text)
    return re.sub(r"ForwardRef\(('[^']*')\)", r'\1', text)


def _entries(registry) -> str:
    """fengine's own entries by name, torch's (which vary with its version) by package.

    Classes registered by user code (or by a test) are not part of the API: left out.
    """
    own, others = [], set()
    for key, value in sorted(registry.module_dict.items()):
        module = getattr(value, '__module__', '') or ''
        if module.startswith('fengine.'):
            own.append(f'`{key}`')
        elif module.startswith('torch.'):
            others.add('.'.join(module.split('.')[:2]))
    own += [f'every class of `{package}`' for package in sorted(others)]
    return ', '.join(own) or 'nothing yet'


def _line(module: str, name: str, obj) -> str:
    key = f'{module}.{name}'
    if key in CONSTANTS:
        return f'- `{name}`: {CONSTANTS[key]}'
    if isinstance(obj, types.ModuleType):
        summary, kind, sig = _first_paragraph(obj), 'module', ''
    elif inspect.isclass(obj) or callable(obj) and hasattr(obj, '__name__'):
        summary, sig = _first_paragraph(obj), _signature(obj)
        kind = 'class' if inspect.isclass(obj) else 'function'
    elif type(obj).__name__ == 'Registry':
        return f"- `{name}`: the `Registry('{obj.name}')`; registered: {_entries(obj)}."
    else:
        raise SystemExit(f'gen_api: {key} is a {type(obj).__name__}, not code: describe it in '
                         'CONSTANTS in docs/gen_api.py')
    if summary is None:
        raise SystemExit(f'gen_api: the public {kind} {key} has no docstring; write one '
                         '(its first paragraph becomes its line in docs/api.md)')
    return f'- `{name}{sig}`: {summary}'


def render() -> str:
    lines = ['# API reference', '',
             '<!-- Generated by docs/gen_api.py from the live docstrings and signatures; '
             'do not edit by hand. -->', '',
             "Every name in the `__all__` of fengine's public modules, with its signature "
             'and the first paragraph of its docstring. See the [user guide](index.md) for '
             'how the parts fit together.', '']
    # Import everything first: importing a module registers its classes, and the
    # registries' lines must not depend on which modules happened to be imported before.
    modules = {name: importlib.import_module(name) for name in MODULES}
    for module_name, module in modules.items():
        names = getattr(module, '__all__', None)
        if names is None:
            raise SystemExit(f'gen_api: {module_name} has no __all__')
        lines += [f'## `{module_name}`', '', _first_paragraph(module) or '', '']
        lines += [_line(module_name, name, getattr(module, name)) for name in names]
        lines.append('')
    return '\n'.join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if '--check' in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f'{OUT} is stale: run python docs/gen_api.py', file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f'wrote {OUT}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
