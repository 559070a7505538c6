"""The documentation runs: every ```python block of docs/**/*.md and README.md.

How a page is run (one test per page):

- its ```python blocks run in order in one fresh namespace (like a notebook), inside a
  temporary working directory, with ``random``, NumPy and torch seeded with 0 (conftest);
  ``__name__`` is ``'__docs__'``, so code under ``if __name__ == '__main__':`` (a script
  meant for ``torchrun``) is defined but not started;
- a block preceded by ``<!-- not-run: <reason> -->`` is skipped; the reason is required;
- a ```text block that follows a python block with nothing but blank lines between is
  that block's expected stdout (the ``fengine`` logger prints there). It is compared
  after normalizing log timestamps (``11/26 19:25:43``) and run names
  (``20261126_192559``) and trailing spaces, with doctest's ``...`` wildcard;
- ``torch.compile`` defaults to ``backend='aot_eager'`` (no C compiler, a second per
  graph instead of ~20 s for inductor on 2 cores); a page that names a backend keeps it.

``docs/api.md`` must equal what ``docs/gen_api.py`` writes from the live code, so a public
name added without a docstring (or a changed signature) fails here until it is regenerated.
"""
from __future__ import annotations

import contextlib
import doctest
import importlib.util
import io
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / 'docs'
PAGES = sorted(DOCS.rglob('*.md')) + [ROOT / 'README.md']
FENCE = re.compile(r'^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)\s*$')
NOT_RUN = re.compile(r'^\s*<!--\s*not-run:?(?P<reason>.*?)-->\s*$')

# Context a page leaves to the reader, run before the given block (0-based index among the
# page's python blocks): none today; every block is self-contained or follows its page.
PRELUDES: dict[tuple[str, int], str] = {}


class Block:
    def __init__(self, lang: str, code: str, line: int, skip: str | None) -> None:
        self.lang, self.code, self.line, self.skip = lang, code, line, skip
        self.expected: str | None = None  # the ```text block right after it


def parse(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with not-run markers and expected outputs."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i, previous = 0, None  # previous: the last block, while only blank lines follow it
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or not match['lang']:
            if lines[i].strip():
                previous = None
            i += 1
            continue
        indent, start = len(match['indent']), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != '```':
            line = lines[i]
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
            i += 1
        i += 1
        above = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), '')
        marker = NOT_RUN.match(above)
        block = Block(match['lang'], '\n'.join(body) + '\n', start + 1,
                      marker['reason'].strip() if marker else None)
        if block.lang == 'text' and previous is not None and previous.lang == 'python':
            previous.expected = block.code
        blocks.append(block)
        previous = block
    return blocks


def python_blocks(path: Path) -> list[Block]:
    return [b for b in parse(path) if b.lang == 'python']


def normalize(text: str) -> str:
    text = re.sub(r'\b\d\d/\d\d \d\d:\d\d:\d\d\b', 'MM/DD hh:mm:ss', text)
    text = re.sub(r'\b\d{8}_\d{6}\b', 'YYYYMMDD_hhmmss', text)
    return '\n'.join(line.rstrip() for line in text.strip().splitlines()) + '\n'


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture
def aot_eager_compile(monkeypatch):
    compile_ = torch.compile

    def compile_with_default_backend(*args, **kwargs):
        kwargs.setdefault('backend', 'aot_eager')
        return compile_(*args, **kwargs)

    monkeypatch.setattr(torch, 'compile', compile_with_default_backend)


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch, aot_eager_compile,
                                             fresh_registries):
    monkeypatch.chdir(tmp_path)
    namespace = {'__name__': '__docs__'}
    for index, block in enumerate(python_blocks(page)):
        if block.skip is not None:
            continue
        where = f'{page_id(page)}:{block.line}'
        prelude = PRELUDES.get((page_id(page), index))
        if prelude:
            exec(compile(prelude, f'{where} (prelude in tests/test_docs.py)', 'exec'), namespace)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(block.code, where, 'exec'), namespace)
            except Exception as exc:
                raise AssertionError(f'the python block at {where} raised {exc!r}; its '
                                     f'output was:\n{out.getvalue()}') from exc
        if block.expected is not None:
            want, got = normalize(block.expected), normalize(out.getvalue())
            checker = doctest.OutputChecker()
            assert checker.check_output(want, got, doctest.ELLIPSIS), (
                f'the output of the python block at {where} differs from the text block '
                f'after it.\n--- expected\n{want}--- got\n{got}')


def test_every_not_run_marker_gives_a_reason():
    missing = [f'{page_id(page)}:{block.line}' for page in PAGES
               for block in python_blocks(page) if block.skip == '']
    assert not missing, ('write why a block is not run, as <!-- not-run: reason -->, at '
                         + ', '.join(missing))


def test_expected_output_only_follows_blocks_that_run():
    stale = [f'{page_id(page)}:{block.line}' for page in PAGES for block in python_blocks(page)
             if block.skip is not None and block.expected is not None]
    assert not stale, f'blocks marked not-run cannot have their output checked: {stale}'


def test_relative_links_of_the_docs_point_to_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', page.read_text()):
            if not re.match(r'[a-z]+://', target) and not (page.parent / target).exists():
                broken.append(f'{page_id(page)} -> {target}')
    assert not broken, f'links to missing files: {broken}'


def test_api_reference_is_generated_from_the_code():
    spec = importlib.util.spec_from_file_location('gen_api', DOCS / 'gen_api.py')
    gen_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_api)
    assert (DOCS / 'api.md').read_text() == gen_api.render(), (
        'docs/api.md is stale: run `bash tools/venv.sh python docs/gen_api.py`')
