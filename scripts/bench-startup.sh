#!/usr/bin/env bash
# Exec → ready, measured: with the stack already running (loopback
# PostgreSQL, OpenBao, dev agent), starts the release backend three times
# and polls /api/v1/health/ready every 5 ms until it answers 200. Each run
# does the whole startup (Workload API, OpenBao login, migrations, the first
# generation proven, signing keys). Target: under 0.5 s (docs/rotation.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8012}"
times=()
for run in 1 2 3; do
  t0="$EPOCHREALTIME"
  APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json "$BIN" serve >"$DEV_DIR/startup-$run.log" 2>&1 &
  app=$!
  ready=""
  for _ in $(seq 1 2000); do
    if [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$ADDR/api/v1/health/ready")" = 200 ]; then
      ready="$EPOCHREALTIME"
      break
    fi
    kill -0 "$app" 2>/dev/null || die "backend exited; see $DEV_DIR/startup-$run.log"
    sleep 0.005
  done
  [ -n "$ready" ] || die "backend never became ready; see $DEV_DIR/startup-$run.log"
  t="$(awk "BEGIN { printf \"%.3f\", $ready - $t0 }")"
  times+=("$t")
  echo "run $run: exec → ready in ${t}s"
  kill -TERM "$app"
  wait "$app" || die "backend exited non-zero on SIGTERM"
done
median="$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)"
echo "STARTUP exec → ready: median ${median}s over 3 runs (${times[*]}); target < 0.5s"
awk "BEGIN { exit !($median < 0.5) }"
