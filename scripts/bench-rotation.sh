#!/usr/bin/env bash
# Benchmark: load on a DB-backed route (GET /api/v1/auth/me: token check plus
# a query on the current pool) in steady state, then while the credentials
# rotate every second (SIGHUP). Prints requests, errors and p50/p99 per phase.
# Release build, its own OpenBao/agent ports and database (precinct_bench).
#   BENCH_DURATION (s, default 20), BENCH_CONNECTIONS (default 16)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8010}"
DURATION="${BENCH_DURATION:-20}"
CONNS="${BENCH_CONNECTIONS:-16}"
APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json RUST_LOG="warn,precinct::db=info" \
  DB_ROTATION_INTERVAL=50m DB_DRAIN_TIMEOUT=10s AUTH_LOGIN_RATE_PER_IP=100000 AUTH_LOGIN_RATE_PER_USERNAME=100000 \
  "$BIN" serve >"$DEV_DIR/backend.log" 2>&1 &
app=$!
STARTED_PIDS=("$app" "${STARTED_PIDS[@]}")
wait_ready "$ADDR"
TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"jake","password":"jake99"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

run() { wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/auth/me" >"$1"; }
rotations() { grep -c '"database credentials rotated"' "$DEV_DIR/backend.log" || true; }

log "phase 1: steady state, ${DURATION}s, $CONNS connections"
run "$DEV_DIR/steady.txt"
before=$(rotations)
log "phase 2: rotating every second (SIGHUP), ${DURATION}s, $CONNS connections"
( for _ in $(seq 1 "$DURATION"); do kill -HUP "$app"; sleep 1; done ) &
hups=$!
run "$DEV_DIR/rotating.txt"
wait "$hups"
sleep 2
after=$(rotations)

echo
echo "precinct rotation benchmark: GET /api/v1/auth/me, $CONNS connections, ${DURATION}s per phase, $(nproc) cores"
wrk_summary "steady state" "$DEV_DIR/steady.txt"
wrk_summary "during rotations ($((after - before)) rotations)" "$DEV_DIR/rotating.txt"
