# Sourced by scripts/demo and scripts/test: make .venv from the lock file if it is missing or stale.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JADD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
STAMP="$VENV/.jadd-lock-$(sha1sum "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "installing into $VENV (first run or changed lock file) ..." >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.lock"
  "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
  rm -f "$VENV"/.jadd-lock-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND=Agg
