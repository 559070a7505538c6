#!/usr/bin/env bash
# Run a command inside fengine's pinned environment, creating it on first use.
#
#   bash tools/venv.sh python -m pytest -q
#
# The virtualenv lives outside the checkout (~/.cache/fengine/venv-<key>), keyed by the
# pinned requirements and the extras, so fresh clones and CI reuse it. FENGINE_EXTRAS picks
# the extras (default: dev,vision; bench/ wants dev,vision,bench).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${FENGINE_EXTRAS:-dev,vision}"
key=$( (cat "$root/constraints.txt"; sed -n '/^\[project\]/,/^\[tool/p' "$root/pyproject.toml"; echo "$extras") \
      | sha256sum | cut -c1-16)
venv="${FENGINE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fengine/venv-$key}"
if [ ! -f "$venv/.complete" ]; then
  echo "tools/venv.sh: creating $venv (torch + torchvision: about 2 minutes and 5.5 GB)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c "$root/constraints.txt" -e "$root[$extras]"
  touch "$venv/.complete"
fi
# The cached environment is shared by every checkout: point its editable install here.
origin=$("$venv/bin/python" -c "import importlib.util as u; s = u.find_spec('fengine'); print(s.origin if s else '')")
if [ "$origin" != "$root/fengine/__init__.py" ]; then
  "$venv/bin/python" -m pip install -q --no-deps -e "$root"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
exec "$@"
