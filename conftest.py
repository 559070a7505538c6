"""Collection rules for the whole checkout (tests/conftest.py holds the test fixtures)."""
import importlib.util

# kernels/ (installed as fengine.kernels) imports Triton in its kernel module only; on a
# machine without Triton its doctests cannot be collected, and nothing else needs it.
collect_ignore_glob = [] if importlib.util.find_spec('triton') else [
    'fengine/kernels/triton_init.py', 'kernels/triton_init.py']
