#!/usr/bin/env bash
# scripts/test-unit.sh — the fast unit tier: tests of pure logic (names, durations, config, PITR
# planning, deletion order, doctor's findings on recorded inventories, comment rendering, inputs),
# files named *.unit.test.ts (agent/test, action/test, webhook/test, shared/test). No root, ZFS,
# Docker or PostgreSQL; seconds. Builds first.
# `npm run test:unit` runs it; `npm test` (scripts/test.sh) runs these and everything else.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error >&2
npm run --silent build >&2
files=$(ls build/agent/test/*.unit.test.js build/action/test/*.unit.test.js build/webhook/test/*.unit.test.js build/shared/test/*.unit.test.js 2>/dev/null || true)
[ -n "$files" ] || { echo "test-unit: no *.unit.test.js files under build/" >&2; exit 1; }
# shellcheck disable=SC2086
exec node --test --test-reporter=spec $files
