#!/usr/bin/env bash
# teardown-host.sh — undo setup-host.sh, for tests and CI (run as root).
#
#  1. removes Docker containers labelled io.betterpg.managed=true (with their
#     anonymous volumes); with BPG_TEARDOWN_ONLY_ROOT set, only those that are
#     also labelled io.betterpg.root=$BPG_TEARDOWN_ONLY_ROOT
#     Without BPG_TEARDOWN_ONLY_ROOT, also the branch networks (labelled
#     io.betterpg.managed=true, shared by every agent) that no container uses,
#     with their iptables rules ("betterpg: no egress")
#  2. with BPG_DESTROY_POOL=1: destroys the pool $BPG_POOL (zpool destroy -f)
#     and deletes its file $BPG_POOL_FILE
#  3. stops the daemons that setup-host.sh started itself, as recorded in
#     /run/betterpg-started (zfs-fuse, dockerd): SIGTERM, then SIGKILL; then
#     removes the record. Daemons it did not start are left alone.
#
# Packages and the image are kept. Idempotent: safe to run twice.
#
# Environment (defaults):
#   BPG_POOL=tank
#   BPG_POOL_FILE=/var/lib/betterpg/pool/${BPG_POOL}.img
#   BPG_DESTROY_POOL=0
#   BPG_TEARDOWN_ONLY_ROOT=      (e.g. tank/test-123: limit step 1 to that agent root)
set -euo pipefail

export PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

BPG_POOL="${BPG_POOL:-tank}"
BPG_POOL_FILE="${BPG_POOL_FILE:-/var/lib/betterpg/pool/${BPG_POOL}.img}"
BPG_DESTROY_POOL="${BPG_DESTROY_POOL:-0}"
BPG_TEARDOWN_ONLY_ROOT="${BPG_TEARDOWN_ONLY_ROOT:-}"

STARTED_FILE=/run/betterpg-started
LOCK_FILE=/run/betterpg-host.lock
ZFS_FUSE_PIDFILE=/run/zfs-fuse.pid
DOCKERD_PIDFILE=/var/run/docker.pid
MANAGED_LABEL=io.betterpg.managed=true

log() { echo "[teardown-host] $*" >&2; }
die() { echo "[teardown-host] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root"

exec 9>"$LOCK_FILE"
flock -w 600 9 || die "another setup/teardown holds $LOCK_FILE"

have() { command -v "$1" >/dev/null 2>&1; }
docker_ready() { have docker && docker info >/dev/null 2>&1; }
zfs_ready() { have zpool && zpool list -H -o name >/dev/null 2>&1; }
was_started() { grep -qsx -- "$1" "$STARTED_FILE"; }
forget_started() {
  [[ -f "$STARTED_FILE" ]] || return 0
  local rest
  rest="$(grep -vx -- "$1" "$STARTED_FILE" || true)"
  if [[ -n "$rest" ]]; then printf '%s\n' "$rest" >"$STARTED_FILE"; else rm -f -- "$STARTED_FILE"; fi
}

# pidfile_pid PIDFILE NAME: print the pid when PIDFILE names a live NAME process.
pidfile_pid() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] && echo "$pid"
}

# stop_pid PID NAME GRACE_SECONDS: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid="$1" name="$2" grace="$3" deadline t0=$EPOCHREALTIME
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name did not stop within ${grace} s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  fi
  ! kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) is still alive"
  log "$name stopped in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f s", b-a}')"
}

# Mount points of type fuse.zfs, deepest first.
fuse_zfs_mounts() {
  local m
  awk '$3 == "fuse.zfs" {print $2}' /proc/self/mounts | while IFS= read -r m; do
    m="$(printf '%b' "$m")"
    printf '%d\t%s\n' "$(tr -cd '/' <<<"$m" | wc -c)" "$m"
  done | sort -t $'\t' -k1,1nr | cut -f2-
}

# ---------------------------------------------------------------------------
# 1. managed containers
# ---------------------------------------------------------------------------
if docker_ready; then
  filters=(--filter "label=${MANAGED_LABEL}")
  what="${MANAGED_LABEL}"
  if [[ -n "$BPG_TEARDOWN_ONLY_ROOT" ]]; then
    filters+=(--filter "label=io.betterpg.root=${BPG_TEARDOWN_ONLY_ROOT}")
    what+=" and io.betterpg.root=${BPG_TEARDOWN_ONLY_ROOT}"
  fi
  mapfile -t ids < <(docker ps -aq "${filters[@]}")
  if [[ ${#ids[@]} -gt 0 ]]; then
    log "removing ${#ids[@]} container(s) labelled ${what}"
    docker rm -f -v "${ids[@]}" >/dev/null
  else
    log "no containers labelled ${what}"
  fi
  if [[ -z "$BPG_TEARDOWN_ONLY_ROOT" ]]; then
    mapfile -t nets < <(docker network ls --filter "label=${MANAGED_LABEL}" --format '{{.Name}}')
    for net in "${nets[@]}"; do
      [[ -n "$net" ]] || continue
      if docker network rm "$net" >/dev/null 2>&1; then
        log "removed Docker network $net"
        for chain in DOCKER-USER INPUT; do
          while iptables -w 10 -D "$chain" -i "$net" -m conntrack ! --ctstate RELATED,ESTABLISHED \
            -m comment --comment "betterpg: no egress" -j DROP 2>/dev/null; do :; done
        done
      else
        log "Docker network $net is in use: kept"
      fi
    done
  fi
else
  log "Docker engine not reachable: no containers to remove"
fi

# ---------------------------------------------------------------------------
# 2. pool (only with BPG_DESTROY_POOL=1)
# ---------------------------------------------------------------------------
if [[ "$BPG_DESTROY_POOL" == 1 ]]; then
  if ! zfs_ready; then
    if [[ -e "$BPG_POOL_FILE" ]]; then
      log "warning: ZFS does not answer: pool $BPG_POOL and $BPG_POOL_FILE left in place"
    else
      log "ZFS does not answer and $BPG_POOL_FILE does not exist: nothing to destroy"
    fi
  else
    if zpool list "$BPG_POOL" >/dev/null 2>&1; then
      log "destroying pool $BPG_POOL"
      # zfs-fuse: destroying mounted datasets is often "busy"; unmount this
      # pool's datasets first, deepest first.
      zfs list -H -o name -r "$BPG_POOL" 2>/dev/null | sort -r | while IFS= read -r ds; do
        zfs umount "$ds" >/dev/null 2>&1 || true
      done
      for attempt in 1 2 3 4 5 6 7 8 9 10; do
        if out="$(zpool destroy -f "$BPG_POOL" 2>&1)"; then break; fi
        log "zpool destroy attempt $attempt: $out"
        sleep 1
      done
      ! zpool list "$BPG_POOL" >/dev/null 2>&1 || die "could not destroy pool $BPG_POOL"
      log "pool $BPG_POOL destroyed"
    else
      log "pool $BPG_POOL not imported"
    fi
    if [[ -f "$BPG_POOL_FILE" ]]; then
      rm -f -- "$BPG_POOL_FILE"
      rmdir --ignore-fail-on-non-empty -- "$(dirname -- "$BPG_POOL_FILE")" 2>/dev/null || true
      log "deleted $BPG_POOL_FILE"
    fi
  fi
else
  log "pool $BPG_POOL kept (set BPG_DESTROY_POOL=1 to destroy it)"
fi

# ---------------------------------------------------------------------------
# 3. daemons started by setup-host.sh
# ---------------------------------------------------------------------------
if was_started dockerd; then
  if pid="$(pidfile_pid "$DOCKERD_PIDFILE" dockerd)"; then
    stop_pid "$pid" dockerd 40
  else
    log "dockerd (started by setup-host.sh) is not running any more"
  fi
  forget_started dockerd
else
  log "dockerd was not started by setup-host.sh: left alone"
fi

if was_started zfs-fuse; then
  if pid="$(pidfile_pid "$ZFS_FUSE_PIDFILE" zfs-fuse)"; then
    zfs umount -a >/dev/null 2>&1 || true
    stop_pid "$pid" zfs-fuse 30
  else
    log "zfs-fuse (started by setup-host.sh) is not running any more"
  fi
  if pgrep -x zfs-fuse >/dev/null; then
    log "another zfs-fuse process runs (not ours): its mounts are left alone"
  else
    rm -f -- "$ZFS_FUSE_PIDFILE"
    # Whatever zfs-fuse left mounted is dead now: unmount lazily, deepest first.
    n=0
    while IFS= read -r m; do
      [[ -n "$m" ]] || continue
      if umount -l -- "$m" 2>/dev/null; then n=$((n + 1)); else log "warning: umount -l $m failed"; fi
    done < <(fuse_zfs_mounts)
    [[ $n -eq 0 ]] || log "lazily unmounted $n leftover fuse.zfs mount(s)"
  fi
  forget_started zfs-fuse
else
  log "zfs-fuse was not started by setup-host.sh: left alone"
fi

[[ -s "$STARTED_FILE" ]] || rm -f -- "$STARTED_FILE"
log "done"
