#!/usr/bin/env bash
# Benchmark of the auth surface, release build, loopback:
#   1. /me and /api/v1/health against ../shared/bench/ceiling (a bare axum +
#      HS256 + primary-key select service) in the same run, same load
#      (wrk -t2 -c16, BENCH_DURATION s), interleaved, best of two: the ratio.
#      precinct runs with its production log defaults (JSON, ACCESS_LOG=errors);
#      its RSS is read after the load.
#   2. login throughput and p99 (Argon2id on the capped blocking pool), and
#      /api/v1/health p99 alone and during a login flood.
#   BENCH_DURATION (s, default 10)   CEILING_DIR (default ../shared/bench/ceiling)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8010}"
CEILING_ADDR="127.0.0.1:${CEILING_PORT:-18200}"
D="${BENCH_DURATION:-10}"
APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json ACCESS_LOG=errors \
  AUTH_LOGIN_RATE_PER_IP=100000000 AUTH_LOGIN_RATE_PER_USERNAME=100000000 AUTH_LOGIN_RATE_PER_USERNAME_IP=100000000 \
  "$BIN" serve >"$DEV_DIR/backend.log" 2>&1 &
app=$!
STARTED_PIDS=("$app" "${STARTED_PIDS[@]}")
start_ceiling
wait_ready "$ADDR"
login_body='{"username":"amy","password":"amy99"}'
TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' -d "$login_body" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

me() { # me <label> <url> <token> <out>
  wrk -t2 -c16 -d"${D}s" --latency -H "Authorization: Bearer $3" "$2" >"$4"
}
health() { # health <url> <out>
  wrk -t2 -c16 -d"${D}s" --latency "$1" >"$2"
}
for round in 1 2; do
  log "round $round: /me, ceiling then precinct (${D}s each, wrk -t2 -c16)"
  me ceiling "http://$CEILING_ADDR/api/v1/auth/me" "$CEILING_TOKEN" "$DEV_DIR/ceiling-me-$round.txt"
  me precinct "http://$ADDR/api/v1/auth/me" "$TOKEN" "$DEV_DIR/me-$round.txt"
  log "round $round: /api/v1/health, ceiling then precinct"
  health "http://$CEILING_ADDR/api/v1/health" "$DEV_DIR/ceiling-health-$round.txt"
  health "http://$ADDR/api/v1/health" "$DEV_DIR/health16-$round.txt"
done
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$app/status")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$app/status")
log_bytes=$(wc -c <"$DEV_DIR/backend.log")

cat >"$DEV_DIR/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$login_body'
wrk.headers["Content-Type"] = "application/json"
LUA
log "login: ${D}s, 8 connections"
wrk -t2 -c8 -d"${D}s" --latency -s "$DEV_DIR/login.lua" "http://$ADDR/api/v1/auth/login" >"$DEV_DIR/login.txt"
log "/api/v1/health alone: ${D}s, 4 connections"
wrk -t1 -c4 -d"${D}s" --latency "http://$ADDR/api/v1/health" >"$DEV_DIR/health.txt"
log "/api/v1/health during a login flood (64 connections): ${D}s"
wrk -t1 -c64 -d"$((D + 2))s" --latency -s "$DEV_DIR/login.lua" "http://$ADDR/api/v1/auth/login" >"$DEV_DIR/flood.txt" &
flood=$!
sleep 1
wrk -t1 -c4 -d"${D}s" --latency "http://$ADDR/api/v1/health" >"$DEV_DIR/health-flood.txt"
wait "$flood"

echo
echo "precinct auth benchmark: release build, $(nproc) cores, wrk -t2 -c16 ${D}s, interleaved, best of two"
for i in 1 2; do
  wrk_summary "ceiling GET /api/v1/auth/me #$i" "$DEV_DIR/ceiling-me-$i.txt"
  wrk_summary "precinct GET /api/v1/auth/me #$i" "$DEV_DIR/me-$i.txt"
done
for i in 1 2; do
  wrk_summary "ceiling GET /api/v1/health #$i" "$DEV_DIR/ceiling-health-$i.txt"
  wrk_summary "precinct GET /api/v1/health #$i" "$DEV_DIR/health16-$i.txt"
done
python3 - "$DEV_DIR" <<'PY'
import re, sys
d = sys.argv[1]
def rps(f):
    m = re.search(r"Requests/sec:\s+([\d.]+)", open(f"{d}/{f}").read())
    return float(m.group(1)) if m else 0.0
for what, ours, theirs in (("/me", "me", "ceiling-me"), ("/api/v1/health", "health16", "ceiling-health")):
    best_ours = max(rps(f"{ours}-{i}.txt") for i in (1, 2))
    best_theirs = max(rps(f"{theirs}-{i}.txt") for i in (1, 2))
    print(f"RATIO {what}: precinct {best_ours:.0f} req/s / ceiling {best_theirs:.0f} req/s = {best_ours / best_theirs:.2f}x")
PY
echo "precinct memory after the load: RSS $((rss_kb / 1024)) MB, peak $((hwm_kb / 1024)) MB; log written during it: $log_bytes bytes (ACCESS_LOG=errors)"
wrk_summary "POST /api/v1/auth/login" "$DEV_DIR/login.txt"
wrk_summary "GET /api/v1/health (idle, 4 conns)" "$DEV_DIR/health.txt"
wrk_summary "GET /api/v1/health (login flood)" "$DEV_DIR/health-flood.txt"
wrk_summary "  the flood itself (logins)" "$DEV_DIR/flood.txt"
