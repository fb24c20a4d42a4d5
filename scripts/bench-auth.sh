#!/usr/bin/env bash
# Benchmark: login throughput and p99 (Argon2id on the capped blocking pool),
# /me throughput and p99 (Transit-signed token verified locally + a query),
# and /api/v1/health p99 alone and while a login flood runs.
#   BENCH_DURATION (s, default 15)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8010}"
D="${BENCH_DURATION:-15}"
APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json RUST_LOG=warn \
  AUTH_LOGIN_RATE_PER_IP=100000000 AUTH_LOGIN_RATE_PER_USERNAME=100000000 \
  "$BIN" serve >"$DEV_DIR/backend.log" 2>&1 &
STARTED_PIDS=("$!" "${STARTED_PIDS[@]}")
wait_ready "$ADDR"
login_body='{"username":"amy","password":"amy99"}'
TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' -d "$login_body" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
cat >"$DEV_DIR/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$login_body'
wrk.headers["Content-Type"] = "application/json"
LUA

log "login: ${D}s, 8 connections"
wrk -t2 -c8 -d"${D}s" --latency -s "$DEV_DIR/login.lua" "http://$ADDR/api/v1/auth/login" >"$DEV_DIR/login.txt"
log "/me: ${D}s, 16 connections"
wrk -t2 -c16 -d"${D}s" --latency -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/auth/me" >"$DEV_DIR/me.txt"
log "/api/v1/health alone: ${D}s, 4 connections"
wrk -t1 -c4 -d"${D}s" --latency "http://$ADDR/api/v1/health" >"$DEV_DIR/health.txt"
log "/api/v1/health during a login flood (64 connections): ${D}s"
wrk -t1 -c64 -d"$((D + 2))s" --latency -s "$DEV_DIR/login.lua" "http://$ADDR/api/v1/auth/login" >"$DEV_DIR/flood.txt" &
flood=$!
sleep 1
wrk -t1 -c4 -d"${D}s" --latency "http://$ADDR/api/v1/health" >"$DEV_DIR/health-flood.txt"
wait "$flood"

echo
echo "precinct auth benchmark: release build, $(nproc) cores, AUTH_HASH_CONCURRENCY default"
wrk_summary "POST /api/v1/auth/login" "$DEV_DIR/login.txt"
wrk_summary "GET /api/v1/auth/me" "$DEV_DIR/me.txt"
wrk_summary "GET /api/v1/health (idle)" "$DEV_DIR/health.txt"
wrk_summary "GET /api/v1/health (login flood)" "$DEV_DIR/health-flood.txt"
wrk_summary "  the flood itself (logins)" "$DEV_DIR/flood.txt"
