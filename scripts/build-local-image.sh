#!/usr/bin/env bash
# build-local-image.sh [TAG]
#
# Builds a PostgreSQL 15 Docker image WITHOUT any container registry: a root
# filesystem folder is assembled from the host's own PostgreSQL 15 (Debian
# package postgresql-15) and loaded with `docker import`.
#
# The image is laid out like the official `postgres:15` image so the agent has
# one code path for both:
#   user postgres uid 999 / gid 999 (home /var/lib/postgresql), binaries on PATH,
#   PGDATA=/var/lib/postgresql/data (999:999, 0700), /var/run/postgresql
#   (999:999, 2777), LANG=C.UTF-8, STOPSIGNAL SIGINT, USER postgres,
#   CMD ["postgres"], EXPOSE 5432, VOLUME /var/lib/postgresql/data.
# Unlike the official image there is NO docker-entrypoint.sh: the command runs
# as given (run `initdb` yourself).
#
# Default TAG: betterpg/postgres:15-local. Prints the image id on stdout;
# progress goes to stderr. Safe to run again (rebuilds and retags).
set -euo pipefail

TAG="${1:-betterpg/postgres:15-local}"
PG_MAJOR=15
PG_LIB="/usr/lib/postgresql/${PG_MAJOR}"
PG_SHARE="/usr/share/postgresql/${PG_MAJOR}"
PG_BIN="${PG_LIB}/bin"
PG_UID=999
PG_GID=999

log() { echo "[build-local-image] $*" >&2; }
die() { echo "[build-local-image] ERROR: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (needs chown to uid ${PG_UID})"

# --- PostgreSQL 15 on the host -------------------------------------------------
if [[ ! -x "${PG_BIN}/postgres" ]]; then
  log "${PG_BIN}/postgres missing: installing postgresql-${PG_MAJOR} with apt-get"
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  created_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    # Keep the package's postinst from starting a "main" cluster on port 5432.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    created_policy=1
  fi
  rc=0
  { apt-get update && apt-get install -y "postgresql-${PG_MAJOR}"; } >&2 || rc=$?
  if [[ $created_policy -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  [[ $rc -eq 0 ]] || die "apt-get install postgresql-${PG_MAJOR} failed (rc=$rc)"
fi
[[ -x "${PG_BIN}/postgres" ]] || die "${PG_BIN}/postgres still missing"

command -v docker >/dev/null 2>&1 || die "no docker command (run scripts/setup-host.sh)"
docker info >/dev/null 2>&1 || die "docker daemon not reachable (run scripts/setup-host.sh)"

PG_VERSION="$("${PG_BIN}/postgres" --version | awk '{print $3}')"   # e.g. 15.18
log "building ${TAG} from host PostgreSQL ${PG_VERSION}"
t0=$EPOCHREALTIME

# --- temp build dir -------------------------------------------------------------
mkdir -p /var/tmp
work="$(mktemp -d /var/tmp/betterpg-image.XXXXXX)"
cleanup() { rm -rf -- "$work"; }
trap cleanup EXIT
root="${work}/rootfs"
mkdir -p "$root"

# Refuse any destination that resolves outside the rootfs (defence against a
# symlink in the rootfs pointing at a host path).
inside_root() {
  local real
  real="$(realpath -m -- "$1")"
  [[ "$real" == "$root" || "$real" == "$root"/* ]] || die "refusing to write outside rootfs: $1 -> $real"
}

# Top-level layout mirrors the host (Debian 12 is merged-/usr: /bin -> usr/bin).
mkdir -p "$root"/usr/{bin,sbin,lib,lib64,share} "$root"/usr/local/{bin,sbin}
for d in bin sbin lib lib64; do
  if [[ -L "/$d" ]]; then
    target="$(readlink "/$d")"
    ln -s "${target#/}" "$root/$d"     # always relative: never points at the host
  else
    mkdir -p "$root/$d"
  fi
done

# copy_file SRC: copy SRC (dereferenced, cp -L) to the same path in the rootfs.
copy_file() {
  local src="$1" dst="${root}$1"
  [[ -e "$src" ]] || die "missing on host: $src"
  inside_root "$dst"
  mkdir -p -- "$(dirname -- "$dst")"
  inside_root "$(dirname -- "$dst")"
  cp -L --preserve=mode,timestamps -- "$src" "$dst"
}

# copy_tree DIR: copy a directory tree to the same path (symlinks inside kept).
copy_tree() {
  local src="$1" dst="${root}$1"
  [[ -d "$src" ]] || die "missing on host: $src"
  mkdir -p -- "$(dirname -- "$dst")"
  inside_root "$(dirname -- "$dst")"
  cp -a -- "$src" "$(dirname -- "$dst")/"
}

# ldd_deps FILE...: print the absolute paths of every library the loader needs.
# Fails when a library is "not found".
ldd_deps() {
  local f out
  for f in "$@"; do
    out="$(ldd "$f" 2>&1)" || { log "ldd failed for $f: $out"; return 1; }
    if grep -q 'not found' <<<"$out"; then
      log "unresolved libraries for $f:"; grep 'not found' <<<"$out" >&2; return 1
    fi
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out"
  done
}

# --- PostgreSQL trees -------------------------------------------------------------
log "copying ${PG_LIB} and ${PG_SHARE}"
copy_tree "$PG_LIB"
copy_tree "$PG_SHARE"
for f in "${PG_SHARE}/extension/amcheck.control" "${PG_LIB}/lib/amcheck.so"; do
  [[ -e "${root}${f}" ]] || die "amcheck extension file missing: $f"
done

# --- binaries the image needs at their host paths -------------------------------
# The official images ship coreutils and diffutils: a branch's superuser can run them from SQL
# (COPY ... TO PROGRAM). The local image has the same ones, so tests see what an attacker would have,
# and the archive command for servers before PostgreSQL 15 (cp, cmp, sync, mv) works here too.
tools=(/bin/sh /bin/cp /bin/mkdir /bin/rm /bin/cat /bin/ls /usr/bin/test /usr/bin/env
       /bin/ln /bin/mv /usr/bin/mkfifo /bin/sync /usr/bin/cmp /bin/dd /bin/sleep /usr/bin/id
       /bin/chmod /bin/touch /usr/bin/head)
for t in "${tools[@]}"; do copy_file "$t"; done

# --- shared libraries ---------------------------------------------------------------
required=("${PG_BIN}/postgres" "${PG_BIN}/initdb" "${PG_BIN}/pg_ctl" "${PG_BIN}/psql"
          "${PG_BIN}/pg_isready" "${PG_BIN}/pg_amcheck" "${PG_BIN}/pg_dump" "${PG_BIN}/pg_restore"
          "${tools[@]}")
req_libs="$(ldd_deps "${required[@]}")" || die "ldd of required binaries failed"
[[ -n "$req_libs" ]] || die "ldd found no libraries"
mapfile -t libs <<<"$req_libs"
# Everything else PostgreSQL ships (other client tools, contrib modules such as
# uuid-ossp/pgcrypto/xml2, llvmjit.so for JIT): best effort, warn on gaps.
extra=()
is_elf() { [[ "$(head -c 4 -- "$1" | od -An -tx1 | tr -d ' \n')" == 7f454c46 ]]; }
while IFS= read -r -d '' f; do
  is_elf "$f" || continue
  if file_libs="$(ldd_deps "$f" 2>/dev/null)"; then
    [[ -n "$file_libs" ]] && mapfile -t -O "${#extra[@]}" extra <<<"$file_libs"
  else
    log "warning: $f has unresolved libraries; it will not work in the image"
  fi
done < <(find "${PG_BIN}" "${PG_LIB}/lib" -type f \( -perm -u+x -o -name '*.so' \) -print0)
extra+=(/lib64/ld-linux-x86-64.so.2)
libpq="$(ldconfig -p | awk '/libpq\.so\.5 .*x86-64/ && !found {print $NF; found = 1}')"   # no early exit: SIGPIPE + pipefail
[[ -n "$libpq" ]] || libpq=/lib/x86_64-linux-gnu/libpq.so.5
extra+=("$libpq")

mapfile -t all_libs < <(printf '%s\n' "${libs[@]}" "${extra[@]}" | sort -u)
log "copying ${#all_libs[@]} shared libraries (cp -L)"
for l in "${all_libs[@]}"; do copy_file "$l"; done

# --- time zones, locale ------------------------------------------------------------
log "copying /usr/share/zoneinfo and /usr/lib/locale/C.utf8"
copy_tree /usr/share/zoneinfo
copy_tree /usr/lib/locale/C.utf8

# --- /etc, users, directories ----------------------------------------------------------
mkdir -p "$root"/{etc,tmp,root,dev,proc,sys,run,var/lib,var/tmp}
cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
postgres:x:${PG_UID}:${PG_GID}::/var/lib/postgresql:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
postgres:x:${PG_GID}:
nogroup:x:65534:
EOF
cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
shadow: files
hosts:  files dns
EOF
ln -s /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
echo "Etc/UTC" >"$root/etc/timezone"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"

mkdir -p "$root/var/lib/postgresql/data" "$root/run/postgresql"
chown "${PG_UID}:${PG_GID}" "$root/var/lib/postgresql" "$root/var/lib/postgresql/data" "$root/run/postgresql"
chmod 0755 "$root/var/lib/postgresql"
chmod 0700 "$root/var/lib/postgresql/data"
chmod 2777 "$root/run/postgresql"
ln -s ../run "$root/var/run"   # created last: never written through

# --- import ---------------------------------------------------------------------------
# `docker import` makes the single filesystem layer and sets the configuration.
# Its --change accepts no STOPSIGNAL (engine 20.10: "stopsignal is not a valid
# change command"), so a one-line Dockerfile on top adds it (legacy builder, no
# build context, nothing pulled, no new layer).
old_id="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
changes=(
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/${PG_MAJOR}/bin"
  --change "ENV PG_MAJOR=${PG_MAJOR}"
  --change "ENV PG_VERSION=${PG_VERSION}"
  --change 'ENV PGDATA=/var/lib/postgresql/data'
  --change 'ENV LANG=C.UTF-8'
  --change "LABEL io.betterpg.image.source=host-postgresql-${PG_VERSION}"
  --change 'VOLUME /var/lib/postgresql/data'
  --change 'EXPOSE 5432'
  --change 'USER postgres'
  --change 'CMD ["postgres"]'
)
size="$(du -sh "$root" | cut -f1)"
log "importing rootfs (${size})"
base_id="$(tar --numeric-owner -C "$root" -cf - . | docker import "${changes[@]}" -)" || die "docker import failed"
[[ "$base_id" == sha256:* ]] || die "docker import printed no image id: $base_id"
rm -rf -- "$root"

printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$base_id" >"${work}/Dockerfile"
log "adding STOPSIGNAL SIGINT, tagging ${TAG}"
if ! out="$(DOCKER_BUILDKIT=0 docker build -q -t "$TAG" - <"${work}/Dockerfile" 2>&1)"; then
  echo "$out" >&2
  die "docker build (STOPSIGNAL layer) failed"
fi
new_id="$(docker image inspect -f '{{.Id}}' "$TAG")"

# Drop the previous build of this tag when nothing uses it any more.
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
  if docker image rm "$old_id" >/dev/null 2>&1; then
    log "removed previous build ${old_id}"
  else
    log "previous build ${old_id} kept (still used by containers)"
  fi
fi

# Quick check that the image really runs.
ver="$(docker run --rm "$TAG" initdb --version)" || die "image ${TAG} does not run initdb"
log "image works: ${ver}"
log "built ${TAG} in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s"
echo "$new_id"
