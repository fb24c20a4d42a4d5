#!/usr/bin/env bash
# Instructions per `GET /api/v1/auth/me`, server side, counted by valgrind's
# callgrind: the same figure for the same binary and inputs whatever the
# neighbours on a shared 2-core machine are doing (req/s and CPU time move by
# ±20 % between runs there). For the release build, for BASELINE_BIN (another
# build, optional: say, the commit before a change) and for
# ../shared/bench/ceiling, each on one worker thread, against the same stack
# (.dev/bench): BENCH_REQUESTS (default 2000) requests on one keep-alive
# connection, after a warm-up, instrumentation on only for those. Prints
# Ir/request, the ratio to the ceiling, and the change against the baseline.
# What it does not see: the kernel and PostgreSQL. What it skews: valgrind's
# CPU has no SHA extensions, so the sha2 crate runs its portable code for the
# SHA-256 of the token (the verified-token cache's key): about 28k Ir per
# request here that cost well under a microsecond natively (the ceiling's
# HMAC runs aws-lc's vector code either way). A measurement, not a gate: it
# exits 0 whatever the figures.
#   BENCH_REQUESTS (default 2000)  BASELINE_BIN  CEILING_DIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
need_cmd valgrind valgrind
bench_setup
N="${BENCH_REQUESTS:-2000}"
OUT="$DEV_DIR/instructions"
rm -rf "$OUT" && mkdir -p "$OUT"

# requests <port> <token> <n>: n sequential /me calls on one connection.
requests() {
  python3 - "$@" <<'PY'
import http.client, sys
port, token, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", "/api/v1/auth/me", headers={"Authorization": "Bearer " + token})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"/me answered {r.status}")
PY
}

# measure <name> <port> <token> <pid>: prints the Ir per request.
measure() {
  local name="$1" port="$2" token="$3" pid="$4" dump
  requests "$port" "$token" 300
  callgrind_control -i on "$pid" >/dev/null
  requests "$port" "$token" 100
  callgrind_control -z "$pid" >/dev/null
  requests "$port" "$token" "$N"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  dump="$(ls -t "$OUT/$name".out.*.* | head -1)"
  awk -v n="$N" '/^(summary|totals):/ {print int($2 / n); exit}' "$dump"
}

declare -A IR
port=18240
for variant in precinct ${BASELINE_BIN:+baseline}; do
  port=$((port + 1))
  bin="$BIN"
  [ "$variant" = baseline ] && bin="$BASELINE_BIN"
  log "$variant: $N requests under callgrind"
  APP_ENV=development HTTP_ADDR="127.0.0.1:$port" LOG_FORMAT=json ACCESS_LOG=errors TOKIO_WORKER_THREADS=1 \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$variant.out.%p" \
    "$bin" serve >"$OUT/$variant.log" 2>&1 &
  pid=$!
  STARTED_PIDS=("$pid" "${STARTED_PIDS[@]}")
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/api/v1/health/ready" >/dev/null 2>&1 && break
    sleep 0.5
  done
  token="$(curl -fsS -X POST "http://127.0.0.1:$port/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"username":"amy","password":"amy99"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
  IR[$variant]="$(measure "$variant" "$port" "$token" "$pid")"
  kill "$pid" 2>/dev/null || true
done

log "ceiling: $N requests under callgrind"
CEILING_DIR="${CEILING_DIR:-$ROOT/../shared/bench/ceiling}"
CARGO_TARGET_DIR="$ROOT/target/ceiling" cargo build --release --locked --quiet --manifest-path "$CEILING_DIR/Cargo.toml"
port=$((port + 1))
DATABASE_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME" CEILING_ADDR="127.0.0.1:$port" \
  TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/ceiling.out.%p" \
  "$ROOT/target/ceiling/release/ceiling" >"$OUT/ceiling.stdout" 2>"$OUT/ceiling.log" &
pid=$!
STARTED_PIDS=("$pid" "${STARTED_PIDS[@]}")
for _ in $(seq 1 200); do
  [ -s "$OUT/ceiling.stdout" ] && curl -fsS "http://127.0.0.1:$port/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.5
done
IR[ceiling]="$(measure ceiling "$port" "$(head -1 "$OUT/ceiling.stdout")" "$pid")"
kill "$pid" 2>/dev/null || true

echo
echo "instructions per GET /api/v1/auth/me (callgrind, server side, user space, $N requests, one worker thread)"
for variant in ceiling precinct ${BASELINE_BIN:+baseline}; do
  printf '%-9s %9s Ir/request  %.2fx the ceiling\n' "$variant" "${IR[$variant]}" \
    "$(python3 -c "print(${IR[$variant]} / ${IR[ceiling]})")"
done
if [ -n "${BASELINE_BIN:-}" ]; then
  python3 -c "b, p = ${IR[baseline]}, ${IR[precinct]}; print(f'against the baseline build: {100 * (p - b) / b:+.1f} % instructions per request')"
fi
