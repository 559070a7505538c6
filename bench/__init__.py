"""fengine's benchmarks against its peers, in one run: ``python -m bench``.

Figures and how they were taken: docs/benchmarks.md.

Not part of the installed package and not collected by the default test run; the
pytest-benchmark variants run with ``python -m pytest bench/ --benchmark-only``.
"""
