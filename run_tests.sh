#!/usr/bin/env bash
# The test suite: set up (idempotent), then pytest. Extra arguments go to pytest,
# e.g. ./run_tests.sh tests/unit  or  ./run_tests.sh -m "not slow".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh test
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -f web/ui/package.json ]; then
  (cd web/ui && npm test --silent)
fi
exec .venv/bin/python -m pytest -p no:cacheprovider "${@:-tests}"
