#!/usr/bin/env bash
# Create or reuse the virtual environment at .venv/ and install what is missing.
# Sourced by run_all.sh and run_tests.sh; safe to run again (a stamp of pyproject.toml
# skips the install when nothing changed). Needs only Python 3.10+ with pip and venv.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python_bin="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[bootstrap] creating $venv"
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.sfc-kit-installed"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing sfc-kit and its pinned dependencies into .venv (a few minutes the first time)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install --quiet -e "$repo[test]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$venv/bin/python" -c "import torch, torchvision, sfc_core" \
    || { echo "[bootstrap] install failed: see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
