#!/usr/bin/env bash
# setup-host.sh — prepare a Debian 12 host for BetterPG (run as root).
#
# Idempotent: safe to run any number of times, also after the daemons were
# killed (stale FUSE mounts and pidfiles are cleaned up).
#
#  1. installs what is missing (one `apt-get update`, only when needed):
#       zfs-fuse       when there is no `zfs` command at all
#       docker.io      when there is no `dockerd`
#       postgresql-15  when /usr/lib/postgresql/15/bin/postgres is missing
#     (a temporary policy-rc.d keeps the packages from starting services)
#  2. ZFS: uses a working ZFS (kernel OpenZFS or a running zfs-fuse) as is;
#     otherwise starts zfs-fuse (pidfile /run/zfs-fuse.pid) and runs `zfs mount -a`
#  3. Docker: uses a working engine (systemd-managed or not) as is; otherwise
#     starts dockerd in the background (log /var/log/betterpg-dockerd.log,
#     pidfile /var/run/docker.pid)
#  4. creates (or imports) the pool $BPG_POOL on a sparse file $BPG_POOL_FILE
#  5. builds $BPG_IMAGE with build-local-image.sh when it does not exist
#
# Daemons started here are recorded in /run/betterpg-started (one word a line:
# zfs-fuse, dockerd); scripts/teardown-host.sh stops only those.
#
# Environment (defaults):
#   BPG_POOL=tank
#   BPG_POOL_FILE=/var/lib/betterpg/pool/${BPG_POOL}.img
#   BPG_POOL_SIZE=20G            (sparse; only used when the pool is created)
#   BPG_IMAGE=betterpg/postgres:15-local
set -euo pipefail

export PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

BPG_POOL="${BPG_POOL:-tank}"
BPG_POOL_FILE="${BPG_POOL_FILE:-/var/lib/betterpg/pool/${BPG_POOL}.img}"
BPG_POOL_SIZE="${BPG_POOL_SIZE:-20G}"
BPG_IMAGE="${BPG_IMAGE:-betterpg/postgres:15-local}"

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
STARTED_FILE=/run/betterpg-started
LOCK_FILE=/run/betterpg-host.lock
ZFS_FUSE_PIDFILE=/run/zfs-fuse.pid
DOCKERD_PIDFILE=/var/run/docker.pid
DOCKERD_LOG=/var/log/betterpg-dockerd.log
PG_POSTGRES=/usr/lib/postgresql/15/bin/postgres

log() { echo "[setup-host] $*" >&2; }
die() { echo "[setup-host] ERROR: $*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f s", b-a}'; }

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ "$BPG_POOL" =~ ^[A-Za-z][A-Za-z0-9_.-]*$ ]] || die "invalid BPG_POOL: $BPG_POOL"
[[ "$BPG_POOL_FILE" == /* ]] || die "BPG_POOL_FILE must be an absolute path: $BPG_POOL_FILE"

# One setup/teardown at a time. fd 9 is closed for every daemon started below.
exec 9>"$LOCK_FILE"
flock -w 600 9 || die "another setup/teardown holds $LOCK_FILE"

T_START=$EPOCHREALTIME

record_started() {
  grep -qsx -- "$1" "$STARTED_FILE" || echo "$1" >>"$STARTED_FILE"
}

# pid_alive PIDFILE NAME: true when PIDFILE names a live process called NAME.
pid_alive() {
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(tr -dc '0-9' <"$1")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

# Mount points of type fuse.zfs, deepest first (octal escapes decoded).
fuse_zfs_mounts() {
  local m
  awk '$3 == "fuse.zfs" {print $2}' /proc/self/mounts | while IFS= read -r m; do
    m="$(printf '%b' "$m")"
    printf '%d\t%s\n' "$(tr -cd '/' <<<"$m" | wc -c)" "$m"
  done | sort -t $'\t' -k1,1nr | cut -f2-
}

# Lazily unmount fuse.zfs mounts whose daemon is gone ("Transport endpoint is
# not connected"). Only called when no zfs-fuse process runs.
unmount_stale_zfs_fuse() {
  local m err n=0 left
  while IFS= read -r m; do
    [[ -n "$m" ]] || continue
    if err="$(stat -- "$m" 2>&1 >/dev/null)"; then
      log "fuse.zfs mount $m still answers; leaving it"
      continue
    fi
    case "$err" in
      *"not connected"*) ;;
      *) log "fuse.zfs mount $m: $err (unmounting anyway)" ;;
    esac
    if umount -l -- "$m" 2>/dev/null; then n=$((n + 1)); else log "warning: umount -l $m failed"; fi
  done < <(fuse_zfs_mounts)
  [[ $n -eq 0 ]] || log "lazily unmounted $n stale fuse.zfs mount(s)"
  left="$(fuse_zfs_mounts | wc -l)"
  [[ "$left" -eq 0 ]] || log "warning: $left fuse.zfs mount(s) remain"
}

# clear_leftover_dirs DIR: a dataset mount point that is not mounted must be
# empty to be mounted (and `zpool create` refuses a non-empty one). Empty
# directories left there (mount points of child datasets, made while the parent
# was not mounted) are removed, but only when DIR holds nothing else and nothing
# is mounted below it. Returns 1 when DIR is still not empty.
clear_leftover_dirs() {
  local dir="$1"
  [[ -d "$dir" ]] || return 0
  mountpoint -q -- "$dir" && return 0
  if awk -v d="${dir%/}/" 'index($2, d) == 1 {found = 1} END {exit !found}' /proc/self/mounts; then
    return 1
  fi
  if [[ -z "$(find "$dir" -xdev -mindepth 1 ! -type d -print -quit 2>/dev/null)" ]]; then
    find "$dir" -xdev -mindepth 1 -depth -type d -empty -delete 2>/dev/null || true
  fi
  [[ -z "$(ls -A -- "$dir")" ]]
}

pool_mountpoint() { zfs get -H -o value mountpoint "$BPG_POOL" 2>/dev/null || true; }

# ---------------------------------------------------------------------------
# 1. packages
# ---------------------------------------------------------------------------
step=$EPOCHREALTIME
pkgs=()
command -v zfs >/dev/null 2>&1 || pkgs+=(zfs-fuse)
command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
[[ -x "$PG_POSTGRES" ]] || pkgs+=(postgresql-15)
if [[ ${#pkgs[@]} -gt 0 ]]; then
  log "installing: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Keep package scripts from starting zfs-fuse/docker/postgresql themselves:
    # this script starts (and records) what it needs.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  rc=0
  { apt-get update && apt-get install -y "${pkgs[@]}"; } >&2 || rc=$?
  if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ $rc -eq 0 ]] || die "apt-get install ${pkgs[*]} failed (rc=$rc)"
  log "packages installed in $(since "$step")"
else
  log "packages: zfs, dockerd and postgresql-15 already present"
fi
command -v zfs >/dev/null 2>&1 || die "no zfs command after install"
command -v docker >/dev/null 2>&1 || die "no docker client command (dockerd exists but docker does not)"
[[ -x "$PG_POSTGRES" ]] || die "$PG_POSTGRES missing after install"

# ---------------------------------------------------------------------------
# 2. ZFS
# ---------------------------------------------------------------------------
zfs_ready() { zpool list -H -o name >/dev/null 2>&1; }
wait_zfs() { # wait_zfs SECONDS
  local deadline=$((SECONDS + $1))
  until zfs_ready; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

step=$EPOCHREALTIME
zfs_started=0
if zfs_ready; then
  log "ZFS answers already (kernel OpenZFS or a running zfs-fuse): starting nothing"
elif [[ -d /sys/module/zfs ]]; then
  die "the zfs kernel module is loaded but 'zpool list' fails: $(zpool list 2>&1 | head -3)"
elif ! command -v zfs-fuse >/dev/null 2>&1; then
  # Kernel OpenZFS userland without the module loaded.
  log "loading the zfs kernel module"
  modprobe zfs || die "modprobe zfs failed and zfs-fuse is not installed"
  wait_zfs 30 || die "kernel ZFS does not answer after modprobe"
elif pgrep -x zfs-fuse >/dev/null; then
  log "a zfs-fuse process runs but does not answer yet; waiting (up to 30 s)"
  wait_zfs 30 || die "zfs-fuse (pid $(pgrep -x zfs-fuse | tr '\n' ' ')) runs but 'zpool list' fails"
else
  if [[ -e "$ZFS_FUSE_PIDFILE" ]] && ! pid_alive "$ZFS_FUSE_PIDFILE" zfs-fuse; then
    log "removing stale $ZFS_FUSE_PIDFILE"
    rm -f -- "$ZFS_FUSE_PIDFILE"
  fi
  unmount_stale_zfs_fuse
  log "starting zfs-fuse"
  # zfs-fuse daemonizes itself; the timeout only guards against a hung start.
  rc=0
  timeout 60 setsid zfs-fuse --pidfile "$ZFS_FUSE_PIDFILE" </dev/null >/dev/null 2>&1 9>&- || rc=$?
  [[ $rc -eq 0 ]] || die "zfs-fuse failed to start (rc=$rc)"
  record_started zfs-fuse
  zfs_started=1
  wait_zfs 30 || die "zfs-fuse started but 'zpool list' does not answer after 30 s"
  log "zfs-fuse ready in $(since "$step")"
fi
if [[ $zfs_started -eq 1 ]]; then
  # A restarted zfs-fuse imports the pools of its cache file but mounts nothing.
  mp="$(pool_mountpoint)"
  if [[ "$mp" == /* ]] && ! clear_leftover_dirs "$mp"; then
    log "warning: $mp is not empty: pool $BPG_POOL cannot be mounted there"
  fi
  if out="$(zfs mount -a 2>&1)"; then
    log "zfs mount -a: ok"
  else
    log "warning: zfs mount -a reported: $out"
  fi
fi

# ---------------------------------------------------------------------------
# 3. Docker
# ---------------------------------------------------------------------------
docker_ready() { docker info >/dev/null 2>&1; }
wait_docker() { # wait_docker SECONDS [PID]
  local deadline=$((SECONDS + $1))
  until docker_ready; do
    ((SECONDS < deadline)) || return 1
    if [[ -n "${2:-}" ]] && ! kill -0 "$2" 2>/dev/null; then return 2; fi
    sleep 0.2
  done
}

step=$EPOCHREALTIME
if docker_ready; then
  log "Docker engine answers already: starting nothing"
elif [[ -d /run/systemd/system ]] && systemctl cat docker.service >/dev/null 2>&1; then
  log "starting the systemd-managed docker.service"
  systemctl start docker.service
  wait_docker 60 || die "docker.service started but 'docker info' fails"
elif pgrep -x dockerd >/dev/null; then
  log "a dockerd process runs but does not answer yet; waiting (up to 30 s)"
  wait_docker 30 || die "dockerd (pid $(pgrep -x dockerd | tr '\n' ' ')) runs but 'docker info' fails"
else
  if [[ -e "$DOCKERD_PIDFILE" ]] && ! pid_alive "$DOCKERD_PIDFILE" dockerd; then
    log "removing stale $DOCKERD_PIDFILE"
    rm -f -- "$DOCKERD_PIDFILE"
  fi
  if ! grep -qsE '^[^ ]+ [^ ]+ cgroup2? ' /proc/self/mounts && command -v cgroupfs-mount >/dev/null 2>&1; then
    log "no cgroup file systems mounted: running cgroupfs-mount"
    cgroupfs-mount || log "warning: cgroupfs-mount failed"
  fi
  dockerd_bin="$(command -v dockerd)"
  log "starting $dockerd_bin (log $DOCKERD_LOG)"
  setsid "$dockerd_bin" --pidfile "$DOCKERD_PIDFILE" </dev/null >>"$DOCKERD_LOG" 2>&1 9>&- &
  dockerd_pid=$!
  record_started dockerd
  rc=0
  wait_docker 30 "$dockerd_pid" || rc=$?
  if [[ $rc -ne 0 ]]; then
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    [[ $rc -eq 2 ]] && die "dockerd exited (see $DOCKERD_LOG)"
    die "dockerd started (pid $dockerd_pid) but 'docker info' fails after 30 s"
  fi
  log "dockerd ready in $(since "$step")"
fi

# ---------------------------------------------------------------------------
# 4. pool
# ---------------------------------------------------------------------------
step=$EPOCHREALTIME
if zpool list "$BPG_POOL" >/dev/null 2>&1; then
  log "pool $BPG_POOL exists"
else
  pool_dir="$(dirname -- "$BPG_POOL_FILE")"
  if [[ -e "$BPG_POOL_FILE" ]]; then
    log "importing pool $BPG_POOL from $pool_dir"
    zpool import -d "$pool_dir" "$BPG_POOL" ||
      die "pool file $BPG_POOL_FILE exists but 'zpool import -d $pool_dir $BPG_POOL' failed; remove the file to start over"
    log "pool imported in $(since "$step")"
  else
    log "creating pool $BPG_POOL on sparse file $BPG_POOL_FILE ($BPG_POOL_SIZE)"
    # `zpool create` refuses a non-empty default mountpoint. Empty directories
    # left there by earlier pools (mountpoints of their datasets) are removed;
    # anything else stops the script.
    clear_leftover_dirs "/$BPG_POOL" ||
      die "/$BPG_POOL is not empty (files or mounts, not only empty directories); clean it up or pick another BPG_POOL"
    mkdir -p -- "$pool_dir"
    truncate -s "$BPG_POOL_SIZE" -- "$BPG_POOL_FILE"
    if ! zpool create "$BPG_POOL" "$BPG_POOL_FILE"; then
      rm -f -- "$BPG_POOL_FILE"
      die "zpool create $BPG_POOL failed"
    fi
    log "pool created in $(since "$step")"
  fi
fi
health="$(zpool list -H -o health "$BPG_POOL")"
[[ "$health" == ONLINE ]] || die "pool $BPG_POOL is $health (not ONLINE): $(zpool status "$BPG_POOL" 2>&1 | head -20)"
if [[ "$(zfs get -H -o value mounted "$BPG_POOL")" != yes ]]; then
  mp="$(pool_mountpoint)"
  if [[ "$mp" == /* ]]; then
    if clear_leftover_dirs "$mp"; then
      log "mounting $BPG_POOL at $mp"
      zfs mount "$BPG_POOL" || log "warning: zfs mount $BPG_POOL failed"
      zfs mount -a >/dev/null 2>&1 || log "warning: zfs mount -a reported errors"
    else
      # Datasets of the pool are mounted below its (unmounted) root, e.g. after
      # someone unmounted the root. They keep working; fixing it would mean
      # unmounting datasets that may be in use, so only report it.
      log "warning: $BPG_POOL is not mounted: $mp is not empty; mounted below it:" \
        "$(awk -v d="${mp%/}/" 'index($2, d) == 1 {printf "%s ", $2}' /proc/self/mounts)"
      log "warning: to repair: stop their users, 'zfs umount' them, remove the empty directories in $mp, 'zfs mount -a'"
    fi
  fi
fi

# ---------------------------------------------------------------------------
# 5. image
# ---------------------------------------------------------------------------
step=$EPOCHREALTIME
if docker image inspect "$BPG_IMAGE" >/dev/null 2>&1; then
  log "image $BPG_IMAGE exists"
else
  log "image $BPG_IMAGE missing: building it"
  bash "$SCRIPT_DIR/build-local-image.sh" "$BPG_IMAGE" >/dev/null
  log "image built in $(since "$step")"
fi

# ---------------------------------------------------------------------------
# summary (stdout)
# ---------------------------------------------------------------------------
started="$(tr '\n' ' ' 2>/dev/null <"$STARTED_FILE" || true)"
cat <<EOF
BetterPG host ready ($(since "$T_START"))
  zfs:     $(if [[ -d /sys/module/zfs ]]; then echo "kernel OpenZFS"; else echo "zfs-fuse pid $(tr -dc '0-9' 2>/dev/null <"$ZFS_FUSE_PIDFILE" || echo '?')"; fi)
  pool:    $(zpool list -H -o name,size,alloc,free,health "$BPG_POOL" | tr '\t' ' ') mounted=$(zfs get -H -o value mounted "$BPG_POOL") at $(zfs get -H -o value mountpoint "$BPG_POOL")
  file:    $(if [[ -e "$BPG_POOL_FILE" ]]; then echo "$BPG_POOL_FILE"; else echo "(none: pool not on $BPG_POOL_FILE)"; fi)
  docker:  server $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?')
  image:   $BPG_IMAGE $(docker image inspect -f '{{.Id}}' "$BPG_IMAGE" | cut -c1-19)
  started by betterpg scripts: ${started:-nothing}
EOF
