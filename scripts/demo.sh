#!/usr/bin/env bash
# scripts/demo.sh — the main job on the built-in default, on a fresh machine (run as root).
#
# Sets up the host (zfs-fuse or kernel ZFS, Docker, a file-backed pool `tank`, the local
# PostgreSQL 15 image), writes /etc/betterpg/config.yaml when there is none, then:
#   1. creates database `demo` with ~200 MB of sample data,
#   2. branches it (application-consistent) and times it,
#   3. proves isolation: writes on the branch are invisible on main and the reverse,
#   4. branches again with --fast, shows what each branch costs on disk,
#   5. deletes the demo database (BPG_DEMO_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '\n== %s\n' "$*" >&2; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

export BPG_POOL="${BPG_POOL:-tank}"
export BPG_IMAGE="${BPG_IMAGE:-betterpg/postgres:15-local}"
bash scripts/setup-host.sh
[ -f build/cli/bpg.js ] && [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error >&2
bpg() { node bin/bpg.js "$@"; }
field() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{let v=JSON.parse(s);for(const k of process.argv[1].split("."))v=v[k];console.log(v)})' "$1"; }

cfg="${BPG_CONFIG:-/etc/betterpg/config.yaml}"
if [ ! -f "$cfg" ]; then
  say "writing $cfg"
  bpg init --pool "$BPG_POOL" --image "$BPG_IMAGE"
fi

if bpg db get demo --json >/dev/null 2>&1; then
  say "removing the previous demo database"
  bpg -q db delete demo --force >/dev/null
fi

say "1. database demo (main) with sample data"
t=$(date +%s%N)
main_uri=$(bpg -q db create demo --json | field connection.uri)
echo "db create: $(ms "$t") ms" >&2
psql -q "$main_uri" <<'SQL'
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, total numeric(10,2), at timestamptz NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 200000) g;
INSERT INTO orders SELECT g, 1 + g % 200000, (g % 1000) / 10.0, now() - (g || ' seconds')::interval FROM generate_series(1, 2000000) g;
CREATE INDEX ON orders (customer_id);
SQL
psql -qAt "$main_uri" -c "SELECT 'main holds ' || pg_size_pretty(pg_database_size(current_database()))" >&2

say "2. branch demo/feature (application-consistent: backup mode + snapshot + clone)"
t=$(date +%s%N)
feature=$(bpg -q branch create demo/feature --json)
echo "branch create: $(ms "$t") ms (command start to a branch answering queries)" >&2
feature_uri=$(echo "$feature" | field connection.uri)

say "3. isolation"
psql -q "$feature_uri" -c "DELETE FROM orders WHERE id <= 1000000; ALTER TABLE customers ADD COLUMN tier text DEFAULT 'gold';"
psql -q "$main_uri" -c "INSERT INTO customers VALUES (300000, 'only on main', 'main@example.com');"
echo "orders on main:    $(psql -qAt "$main_uri" -c 'SELECT count(*) FROM orders')" >&2
echo "orders on feature: $(psql -qAt "$feature_uri" -c 'SELECT count(*) FROM orders')" >&2
echo "customer 300000 on feature: $(psql -qAt "$feature_uri" -c 'SELECT count(*) FROM customers WHERE id = 300000') row(s)" >&2
echo "column tier on main: $(psql -qAt "$main_uri" -c "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'tier'") column(s)" >&2

say "4. a --fast (crash-consistent) branch, and what branches cost"
t=$(date +%s%N)
bpg -q branch create demo/quick --fast --json >/dev/null 2>&1
echo "branch create --fast: $(ms "$t") ms" >&2
sleep "${BPG_DEMO_SETTLE:-0}"
bpg branch list demo

if [ "${BPG_DEMO_KEEP:-0}" = 1 ]; then
  say "kept: bpg branch get demo/feature shows the connection string"
else
  say "5. cleaning up"
  bpg db delete demo --force
fi
