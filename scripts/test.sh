#!/usr/bin/env bash
# scripts/test.sh — set up the real stack and run every test (run as root).
#
# Installs and starts what the tests need (scripts/setup-host.sh: zfs-fuse, dockerd, a file-backed
# pool, the local PostgreSQL image), installs and builds the project, runs all test files against
# a throw-away agent configuration, and cleans up after itself: every test database, container and
# dataset; the pool when this run created it; the daemons when this run started them.
#
# Environment:
#   BPG_TEST_POOL     pool to use (default bpgtest; created on a sparse file when missing)
#   BPG_TEST_JOBS     test files run at once (default 3)
#   BPG_KEEP_STACK=1  leave the daemons and the pool running afterwards (faster next run)
#   BPG_TEST_FILES    test files to run (default: all build/agent/test/*.test.js)
#   BPG_TEST_PORT_BASE first port of this run's 2000 (default 25432): the shared test state uses the
#                     first 1000, tests with a state of their own slices of the rest. Give runs
#                     that share a machine different bases. The ports must lie outside the host's
#                     ephemeral range (net.ipv4.ip_local_port_range), where any outgoing
#                     connection may take one as its local port while a test means to listen on it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { echo "[test] $*" >&2; }

export BPG_POOL="${BPG_TEST_POOL:-bpgtest}"
export BPG_POOL_FILE="${BPG_POOL_FILE:-/var/lib/betterpg-test/${BPG_POOL}.img}"
export BPG_POOL_SIZE="${BPG_POOL_SIZE:-20G}"
export BPG_IMAGE="${BPG_IMAGE:-betterpg/postgres:15-local}"
STARTED=/run/betterpg-started
export BPG_TEST_PORT_BASE="${BPG_TEST_PORT_BASE:-25432}"
read -r eph_lo eph_hi < /proc/sys/net/ipv4/ip_local_port_range
if (( BPG_TEST_PORT_BASE <= eph_hi && BPG_TEST_PORT_BASE + 1999 >= eph_lo )); then
  log "ports $BPG_TEST_PORT_BASE-$((BPG_TEST_PORT_BASE + 1999)) overlap the ephemeral range $eph_lo-$eph_hi (net.ipv4.ip_local_port_range): set BPG_TEST_PORT_BASE below $((eph_lo - 2000)) or above $eph_hi"
  exit 2
fi

started_before=$(cat "$STARTED" 2>/dev/null || true)
pool_before=0
if command -v zpool >/dev/null 2>&1 && zpool list -H -o name "$BPG_POOL" >/dev/null 2>&1; then pool_before=1; fi

bash scripts/setup-host.sh
# What only the tests use: zsh, to run the completion script `bpg completion zsh` prints.
if ! command -v zsh >/dev/null 2>&1; then
  log "installing zsh (the completion test runs it)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y zsh >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y zsh >&2; }
fi

log "installing and building (npm ci)"
npm ci --no-audit --no-fund --loglevel=error >&2

work=$(mktemp -d /var/tmp/bpg-test.XXXXXX)
base="test-$(date +%s)-$$"
export BPG_CONFIG="$work/config.yaml"
node bin/bpg.js init --pool "$BPG_POOL" --dataset-base "$base" --image "$BPG_IMAGE" \
  --state-dir "$work/state" --port-range "$BPG_TEST_PORT_BASE-$((BPG_TEST_PORT_BASE + 999))" >&2

cleanup() {
  local rc=$?
  set +e
  log "cleaning up"
  for db in $(node bin/bpg.js db list --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{for(const d of JSON.parse(s))console.log(d.name)}catch{}})'); do
    node bin/bpg.js -q db delete "$db" --force >/dev/null 2>&1 || log "could not delete test database $db"
  done
  # this run's containers, including those of tests with a state of their own (<base>-<name>), on
  # any pool name (a test of a missing pool has its own)
  ids=$(docker ps -a --filter label=io.betterpg.managed --format '{{.ID}} {{.Label "io.betterpg.root"}}' 2>/dev/null |
    awk -v b="$base" 'split($2, p, "/") == 2 && (p[2] == b || index(p[2], b "-") == 1) { print $1 }')
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  # this run's dataset base, and the ones tests derive from it (e.g. <base>-kill)
  for ds in $(zfs list -H -o name -d 1 "$BPG_POOL" 2>/dev/null | grep -E "^$BPG_POOL/$base(-|\$)"); do
    zfs destroy -r "$ds" >/dev/null 2>&1 || { zfs umount -f "$ds" >/dev/null 2>&1; zfs destroy -r "$ds" >/dev/null 2>&1; }
  done
  # what agent/test/containers.test.ts makes besides containers and datasets, if it was killed
  ip netns del "bpgt-out-$BPG_TEST_PORT_BASE" >/dev/null 2>&1
  ip link del "bpo${BPG_TEST_PORT_BASE}h" >/dev/null 2>&1
  net="t${BPG_TEST_PORT_BASE:0:5}-isolated"
  if docker network rm "$net" >/dev/null 2>&1; then
    for chain in DOCKER-USER INPUT; do
      while iptables -w 10 -D "$chain" -i "$net" -m conntrack ! --ctstate RELATED,ESTABLISHED -m comment --comment "betterpg: no egress" -j DROP 2>/dev/null; do :; done
    done
  fi
  rm -rf "$work"
  if [ "${BPG_KEEP_STACK:-0}" != 1 ]; then
    local destroy=0 stop=0
    [ "$pool_before" = 0 ] && destroy=1
    [ "$(cat "$STARTED" 2>/dev/null || true)" != "$started_before" ] && stop=1
    if [ "$destroy" = 1 ] || [ "$stop" = 1 ]; then
      BPG_DESTROY_POOL=$destroy BPG_TEARDOWN_ONLY_ROOT="$BPG_POOL/$base" bash scripts/teardown-host.sh || log "teardown failed"
    fi
  fi
  exit $rc
}
trap cleanup EXIT

# The committed action bundle must be what its sources build to.
if [ -f action.yml ] && [ -z "${BPG_TEST_FILES:-}" ]; then
  log "checking that the committed action bundle matches a fresh build"
  npm run --silent build:action >&2
  git diff --exit-code --stat -- action/dist || { log "action/dist differs from a fresh build: run 'npm run build:action' and commit"; exit 1; }
fi

files=${BPG_TEST_FILES:-$(ls build/agent/test/*.test.js build/action/test/*.test.js build/webhook/test/*.test.js build/shared/test/*.test.js 2>/dev/null)}
log "running tests: $(echo $files | wc -w) files, ${BPG_TEST_JOBS:-3} at a time"
zfs_pid_before=$(pgrep -x zfs-fuse | head -1 || true)
# shellcheck disable=SC2086
rc=0
node --test --test-concurrency="${BPG_TEST_JOBS:-3}" --test-timeout=900000 --test-reporter=spec $files || rc=$?
# zfs-fuse is a userspace daemon: if it died mid-run, every later failure is a symptom of that.
if [ -n "$zfs_pid_before" ] && ! kill -0 "$zfs_pid_before" 2>/dev/null; then
  log "zfs-fuse (pid $zfs_pid_before) is gone: it died during the run; failures after that are its symptoms"
  rc=1
fi
exit $rc
