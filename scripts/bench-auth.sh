#!/usr/bin/env bash
# Benchmark of the auth surface, release build, loopback:
#   1. GET /api/v1/auth/me and GET /api/v1/health against ../shared/bench/ceiling
#      (a bare axum + HS256 + primary-key select service) in the same run,
#      same load (wrk -t2 -c16, BENCH_DURATION s), BENCH_ROUNDS interleaved
#      rounds: the median req/s of each, their ratio, and each server's CPU
#      time per request (utime+stime from /proc: the steadier figure on a
#      busy 2-core machine). Goals: /me >= 0.9x, /health >= 0.85x.
#      precinct runs with its production log defaults (JSON, ACCESS_LOG=errors);
#      its RSS is read after the load.
#   2. login throughput and p99 (Argon2id on the capped blocking pool, the
#      limits lifted), and a login refused by a rate limit (a second
#      instance with the default limits): a refusal must cost less than a
#      login.
#   3. /api/v1/health p99 alone and during a login flood.
#   4. the audit chain's cost (docs/audit.md): pgbench, 8 clients, the row a
#      login writes, into the chained audit_log and into an unchained copy
#      of it (same columns and indexes, no trigger), BENCH_ROUNDS
#      interleaved rounds; the difference per row beside a login's latency.
#   BENCH_DURATION (s, default 8)  BENCH_ROUNDS (default 3)
#   CEILING_DIR (default ../shared/bench/ceiling)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8010}"
LIMITED="127.0.0.1:$((${BENCH_PORT:-8010} + 5))"
CEILING_ADDR="127.0.0.1:${CEILING_PORT:-18200}"
D="${BENCH_DURATION:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json ACCESS_LOG=errors \
  AUTH_LOGIN_RATE_PER_IP=100000000 AUTH_LOGIN_RATE_PER_USERNAME=100000000 AUTH_LOGIN_RATE_PER_USERNAME_IP=100000000 \
  "$BIN" serve >"$DEV_DIR/backend.log" 2>&1 &
app=$!
STARTED_PIDS=("$app" "${STARTED_PIDS[@]}")
APP_ENV=development HTTP_ADDR="$LIMITED" LOG_FORMAT=json ACCESS_LOG=errors \
  "$BIN" serve >"$DEV_DIR/backend-limited.log" 2>&1 &
STARTED_PIDS=("$!" "${STARTED_PIDS[@]}")
start_ceiling
wait_ready "$ADDR"
wait_ready "$LIMITED"
login_body='{"username":"amy","password":"amy99"}'
TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' -d "$login_body" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # run <server> <route> <round>
  local server="$1" route="$2" url pid auth=()
  if [ "$server" = ceiling ]; then url="http://$CEILING_ADDR" pid=$CEILING_PID; else url="http://$ADDR" pid=$app; fi
  if [ "$route" = me ]; then
    [ "$server" = ceiling ] && auth=(-H "Authorization: Bearer $CEILING_TOKEN") || auth=(-H "Authorization: Bearer $TOKEN")
    url="$url/api/v1/auth/me"
  else
    url="$url/api/v1/health"
  fi
  local before
  before=$(cpu_ticks "$pid")
  wrk -t2 -c16 -d"${D}s" --latency "${auth[@]}" "$url" >"$DEV_DIR/auth-$server-$route-$3.txt"
  echo "$(($(cpu_ticks "$pid") - before))" >"$DEV_DIR/auth-$server-$route-$3.cpu"
}
for round in $(seq 1 "$ROUNDS"); do
  # Alternate who goes first: neither always meets a warm or a tired machine.
  order=(ceiling precinct)
  [ $((round % 2)) = 0 ] && order=(precinct ceiling)
  log "round $round/$ROUNDS: /me and /api/v1/health, ${order[*]} (${D}s each, wrk -t2 -c16)"
  for route in me health; do
    for server in "${order[@]}"; do run "$server" "$route" "$round"; done
  done
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
log "login refused by a rate limit: ${D}s, 8 connections, default limits"
wrk -t2 -c8 -d"${D}s" --latency -s "$DEV_DIR/login.lua" "http://$LIMITED/api/v1/auth/login" >"$DEV_DIR/login-refused.txt"
log "/api/v1/health alone: ${D}s, 4 connections"
wrk -t1 -c4 -d"${D}s" --latency "http://$ADDR/api/v1/health" >"$DEV_DIR/health.txt"
log "/api/v1/health during a login flood (64 connections): ${D}s"
wrk -t1 -c64 -d"$((D + 2))s" --latency -s "$DEV_DIR/login.lua" "http://$ADDR/api/v1/auth/login" >"$DEV_DIR/flood.txt" &
flood=$!
sleep 1
wrk -t1 -c4 -d"${D}s" --latency "http://$ADDR/api/v1/health" >"$DEV_DIR/health-flood.txt"
wait "$flood"

echo
echo "precinct auth benchmark: release build, $(nproc) cores, wrk -t2 -c16 ${D}s, $ROUNDS interleaved rounds"
if python3 - "$DEV_DIR" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
d, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def run(server, route, r):
    t = open(f"{d}/auth-{server}-{route}-{r}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    n = int(re.search(r"(\d+) requests in", t).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    p99 = re.search(r"^\s+99%\s+(\S+)", t, re.M)
    cpu = int(open(f"{d}/auth-{server}-{route}-{r}.cpu").read()) / hz
    return rps, cpu / n * 1e6, int(bad.group(1)) if bad else 0, p99.group(1) if p99 else "?"
goals = {"me": 0.9, "health": 0.85}
ok = True
for route, label in (("me", "/api/v1/auth/me"), ("health", "/api/v1/health")):
    rows = {}
    for server in ("ceiling", "precinct"):
        runs = [run(server, route, r) for r in range(1, rounds + 1)]
        rows[server] = (statistics.median(x[0] for x in runs), [x[0] for x in runs],
                        statistics.median(x[1] for x in runs), sum(x[2] for x in runs), runs[-1][3])
        med, all_, us, bad, p99 = rows[server]
        print(f"{server:<8} GET {label:<16} median {med:8.0f} req/s  rounds {' '.join(f'{x:.0f}' for x in all_)}  "
              f"cpu {us:5.1f} us/req  p99 {p99}  non-2xx {bad}")
    ratio = rows["precinct"][0] / rows["ceiling"][0]
    cpu = rows["precinct"][2] / rows["ceiling"][2]
    met = ratio >= goals[route] and rows["precinct"][3] == 0
    ok &= met
    print(f"RATIO {label}: {ratio:.2f}x the ceiling's rate (goal >= {goals[route]}x), {cpu:.2f}x its CPU per request: "
          + ("PASS" if met else "MISS"))
sys.exit(0 if ok else 1)
PY
then ratios=0; else ratios=1; fi
echo "precinct memory after the load: RSS $((rss_kb / 1024)) MB, peak $((hwm_kb / 1024)) MB; log written during it: $log_bytes bytes (ACCESS_LOG=errors)"
wrk_summary "POST /api/v1/auth/login" "$DEV_DIR/login.txt"
wrk_summary "POST /api/v1/auth/login (429)" "$DEV_DIR/login-refused.txt"
python3 - "$DEV_DIR" <<'PY'
import re, sys
d = sys.argv[1]
def stats(f):
    t = open(f"{d}/{f}").read()
    p50 = re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, p50, int(bad.group(1)) if bad else 0
acc, refused = stats("login.txt"), stats("login-refused.txt")
print(f"REFUSAL vs LOGIN: a refused login {refused[1]} (p50), {refused[0]:.0f} req/s ({refused[2]} non-2xx); "
      f"an accepted one {acc[1]} (p50), {acc[0]:.0f} req/s: a refusal costs "
      + ("less" if refused[0] > acc[0] else "MORE"))
PY
wrk_summary "GET /api/v1/health (idle, 4 conns)" "$DEV_DIR/health.txt"
wrk_summary "GET /api/v1/health (login flood)" "$DEV_DIR/health-flood.txt"
wrk_summary "  the flood itself (logins)" "$DEV_DIR/flood.txt"

PGBENCH="$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n1 || true)"
if [ -z "$PGBENCH" ]; then
  echo "AUDIT CHAIN: pgbench not found (Debian's postgresql package ships it): not measured"
  exit "$ratios"
fi
DB_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME"
psql -q "$DB_URL" -c "drop table if exists public.bench_audit_unchained" \
  -c "create table public.bench_audit_unchained (like precinct.audit_log including all)" \
  -c "alter table public.bench_audit_unchained alter seq drop not null, alter prev_hash drop not null, alter row_hash drop not null"
row="(event, outcome, user_id, client_ip, user_agent, request_id, detail) values \
('login', 'success', gen_random_uuid(), '127.0.0.1', 'wrk/4.2', gen_random_uuid()::text, '{}')"
echo "insert into precinct.audit_log $row;" >"$DEV_DIR/audit-chained.sql"
echo "insert into public.bench_audit_unchained $row;" >"$DEV_DIR/audit-plain.sql"
for round in $(seq 1 "$ROUNDS"); do
  order=(chained plain)
  [ $((round % 2)) = 0 ] && order=(plain chained)
  log "round $round/$ROUNDS: audit rows, ${order[*]} (pgbench -c8, ${D}s each)"
  for table in "${order[@]}"; do
    "$PGBENCH" -n -c8 -j2 -T"$D" -f "$DEV_DIR/audit-$table.sql" "$DB_URL" >"$DEV_DIR/audit-$table-$round.txt" 2>&1
  done
done
psql -q "$DB_URL" -c "drop table public.bench_audit_unchained"
python3 - "$DEV_DIR" "$ROUNDS" <<'PY'
import re, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def tps(t, r):
    return float(re.search(r"tps = ([\d.]+)", open(f"{d}/audit-{t}-{r}.txt").read()).group(1))
chained = [tps("chained", r) for r in range(1, rounds + 1)]
plain = [tps("plain", r) for r in range(1, rounds + 1)]
c, p = statistics.median(chained), statistics.median(plain)
login = open(f"{d}/login.txt").read()
p50 = re.search(r"^\s+50%\s+([\d.]+)(\w+)", login, re.M)
ms = float(p50.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[p50.group(2)]
extra_us = (1 / c - 1 / p) * 8 * 1e6
print(f"AUDIT CHAIN: 8 writers: chained {c:.0f} rows/s (rounds {' '.join(f'{x:.0f}' for x in chained)}), "
      f"unchained {p:.0f} rows/s (rounds {' '.join(f'{x:.0f}' for x in plain)}): {c / p:.2f}x; "
      f"the chain adds {extra_us:.0f} us to a row's latency; a login (p50 {ms:.0f} ms) writes one: "
      f"{extra_us / 1e3 / ms * 100:.2f}% of it, and the chain caps audited writes at {c:.0f}/s per database")
PY
exit "$ratios"
