#!/usr/bin/env bash
# Set up and run the main job on embedded defaults: no services, no API keys needed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${SLUICE_VENV:-$ROOT/.venv}
bash ops/setup.sh
exec "$VENV/bin/sluice" demo "$@"
