#!/usr/bin/env bash
# The main job: set up (idempotent) and start the local swarm. Flags go to `rl-swarm up`
# (see ./run_rl_swarm.sh --help); every flag also reads an RLSWARM_* environment variable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
case "${1:-}" in -h|--help) [ -x .venv/bin/rl-swarm ] && exec .venv/bin/rl-swarm up --help ;; esac
bash scripts/bootstrap.sh run
exec .venv/bin/rl-swarm up "$@"
