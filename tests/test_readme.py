"""Every ```python block of README.md runs on its own, as a reader pastes it.

Each block runs in a fresh interpreter, in a temporary working directory, with nothing
from the blocks before it: a block that leans on an earlier one's imports fails here.
Only ``torch.compile`` is changed, to default to the ``aot_eager`` backend as in
``tests/test_docs.py`` (inductor's code generation takes minutes on a small CPU; a block
that names a backend keeps it). A ``print(...)`` whose comment is a Python literal
(``print(x)  # True``) must print that value.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
BLOCK = re.compile(r'^```python\n(?P<code>.*?)^```', re.S | re.M)

RUN = textwrap.dedent('''
    import runpy, sys
    import torch
    compile_ = torch.compile
    def compile_with_default_backend(*args, **kwargs):
        kwargs.setdefault('backend', 'aot_eager')
        return compile_(*args, **kwargs)
    torch.compile = compile_with_default_backend
    runpy.run_path(sys.argv[1], run_name='__main__')
''')


def readme_blocks() -> list[tuple[int, str]]:
    """``(line, code)`` of each python block of README.md, the line of its fence."""
    text = README.read_text()
    return [(text.count('\n', 0, match.start()) + 1, match['code'])
            for match in BLOCK.finditer(text)]


def promised_prints(code: str) -> list[str]:
    """What the block's ``print(...)  # <literal>`` lines promise to print, in order."""
    promised = []
    for line in code.splitlines():
        match = re.match(r'\s*print\(.*\)\s*#\s*(?P<value>.+?)\s*$', line)
        if not match:
            continue
        try:
            promised.append(str(ast.literal_eval(match['value'])))
        except (ValueError, SyntaxError):  # a comment that is prose
            continue
    return promised


def test_the_readme_has_python_blocks():
    assert len(readme_blocks()) >= 3


@pytest.mark.parametrize('line, code', readme_blocks(),
                         ids=[f'README.md:{line}' for line, _ in readme_blocks()])
def test_the_block_runs_alone_in_a_fresh_interpreter(line, code, tmp_path):
    script = tmp_path / f'readme_block_line{line}.py'
    script.write_text(code)
    env = {**os.environ,
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    done = subprocess.run([sys.executable, '-c', RUN, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (f'the python block at README.md:{line} failed on its own:\n'
                                  f'{done.stderr[-4000:]}')
    promised = promised_prints(code)
    if promised:
        printed = [out for out in done.stdout.splitlines()
                   if out.strip() and not re.match(r'\d\d/\d\d \d\d:\d\d:\d\d - ', out)]
        assert printed[-len(promised):] == promised, done.stdout
