#!/usr/bin/env bash
# The test command: bootstraps .venv, makes Chromium available for the browser test of the
# CAM explorer (Debian's package, when this machine can install it), then runs pytest.
# Extra arguments go to pytest, e.g. `bash run_tests.sh -k cam -x`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[tests] installing Debian's chromium for the explorer's browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[tests] could not install chromium: the browser test will skip"
fi
export MPLBACKEND=Agg PYTHONHASHSEED=0
exec python -m pytest "$@"
