#!/usr/bin/env bash
# Faults produced for real under load, with figures. Starts its own stack
# (release build, loopback: PostgreSQL, OpenBao dev server, dev agent,
# backend) and runs each fault while wrk loads GET /api/v1/auth/me
# (-t2 -c16), printing one row per fault: requests, non-2xx, socket errors,
# p99 (and the steady p99 before it), readiness transitions.
#
#   scripts/fault-suite.sh                 every fault
#   scripts/fault-suite.sh openbao-freeze  only the named ones
#   FREEZE_SECONDS (120)  SIGHUP_SECONDS (30)  AGENT_DOWN_SECONDS (60)
#
# Faults: steady (no fault, the reference), openbao-freeze (SIGSTOP for
# FREEZE_SECONDS, then SIGCONT), sighup-storm (SIGHUP every 2 s),
# sessions-terminated (pg_terminate_backend on the pool's role, twice),
# leases-revoked (bao lease revoke -prefix database/creds/), agent-down (the
# dev agent killed for AGENT_DOWN_SECONDS, then restarted).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8010}"
FREEZE_SECONDS="${FREEZE_SECONDS:-120}"
SIGHUP_SECONDS="${SIGHUP_SECONDS:-30}"
AGENT_DOWN_SECONDS="${AGENT_DOWN_SECONDS:-60}"
ADMIN_DB_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME"
OUT="$DEV_DIR/faults"
mkdir -p "$OUT"

APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json ACCESS_LOG=errors \
  "$BIN" serve >"$DEV_DIR/backend.log" 2>&1 &
app=$!
STARTED_PIDS=("$app" "${STARTED_PIDS[@]}")
wait_ready "$ADDR"
TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"amy","password":"amy99"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# Readiness, sampled every 100 ms into $1 as "<epoch seconds> <code>".
watch_readiness() {
  while :; do
    printf '%s %s\n' "$EPOCHREALTIME" \
      "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$ADDR/api/v1/health/ready")" >>"$1"
    sleep 0.1
  done
}

# run_fault <name> <load seconds> <function that injects the fault>
run_fault() {
  local name="$1" seconds="$2" inject="$3" watcher
  log "fault $name: ${seconds}s of load"
  : >"$OUT/$name.ready"
  watch_readiness "$OUT/$name.ready" &
  watcher=$!
  wrk -t2 -c16 -d"${seconds}s" --timeout 10s --latency -H "Authorization: Bearer $TOKEN" \
    "http://$ADDR/api/v1/auth/me" >"$OUT/$name.wrk" &
  local load=$!
  "$inject"
  wait "$load"
  kill "$watcher" 2>/dev/null || true
  wait "$watcher" 2>/dev/null || true
}

bao_pid() { cat "$DEV_DIR/bao.pid"; }
pool_role() { psql "$ADMIN_DB_URL" -Atqc "SELECT usename FROM pg_stat_activity WHERE datname = '$DB_NAME' AND usename LIKE 'v-%' LIMIT 1"; }

inject_steady() { :; }
inject_openbao_freeze() {
  sleep 5
  kill -STOP "$(bao_pid)"
  sleep "$FREEZE_SECONDS"
  kill -CONT "$(bao_pid)"
}
inject_sighup_storm() {
  local end=$((SECONDS + SIGHUP_SECONDS))
  sleep 2
  while [ "$SECONDS" -lt "$end" ]; do kill -HUP "$app"; sleep 2; done
}
inject_sessions_terminated() {
  local role
  for _ in 1 2; do
    sleep 5
    role="$(pool_role)"
    psql "$ADMIN_DB_URL" -Atqc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '$role'" >/dev/null
  done
}
inject_leases_revoked() {
  sleep 5
  "$BAO_BIN" lease revoke -prefix database/creds/ >/dev/null
}
inject_agent_down() {
  sleep 5
  local agent
  agent="$(pgrep -f "dev-agent --socket $DEV_DIR/agent.sock")"
  kill -TERM "$agent"
  sleep "$AGENT_DOWN_SECONDS"
  setsid "$BIN" dev-agent --socket "$DEV_DIR/agent.sock" --trust-domain "$TRUST_DOMAIN" \
    --spiffe-id "$EXPECTED_SPIFFE_ID" --oidc-addr "${SPIFFE_OIDC_ISSUER#http://}" --state-dir "$DEV_DIR/agent-state" \
    >>"$DEV_DIR/agent.log" 2>&1 &
  STARTED_PIDS+=("$!")
}

declare -A LOAD=(
  [steady]=15
  [openbao-freeze]=$((FREEZE_SECONDS + 15))
  [sighup-storm]=$((SIGHUP_SECONDS + 5))
  [sessions-terminated]=15
  [leases-revoked]=15
  [agent-down]=$((AGENT_DOWN_SECONDS + 15))
)
ALL=(steady openbao-freeze sighup-storm sessions-terminated leases-revoked agent-down)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
[[ " ${WANT[*]} " == *" steady "* ]] || WANT=(steady "${WANT[@]}")
for fault in "${WANT[@]}"; do
  [ -n "${LOAD[$fault]:-}" ] || die "unknown fault $fault (known: ${ALL[*]})"
  run_fault "$fault" "${LOAD[$fault]}" "inject_${fault//-/_}"
done

echo
echo "precinct fault suite: release build, $(nproc) cores, wrk -t2 -c16 on GET /api/v1/auth/me"
python3 - "$OUT" "${WANT[@]}" <<'PY'
import re, sys
out, faults = sys.argv[1], sys.argv[2:]
def wrk(name):
    t = open(f"{out}/{name}.wrk").read()
    reqs = re.search(r"(\d+) requests in", t)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    p99 = re.search(r"^\s+99%\s+(\S+)", t, re.M)
    return (int(reqs.group(1)) if reqs else 0, int(non2xx.group(1)) if non2xx else 0,
            sum(map(int, sock.groups())) if sock else 0, p99.group(1) if p99 else "?")
def transitions(name):
    last, changes, start = None, [], None
    for line in open(f"{out}/{name}.ready"):
        t, code = line.split()
        start = start or float(t)
        if code != last:
            changes.append(f"{code}@{float(t) - start:.1f}s")
            last = code
    return " ".join(changes) or "-"
print(f"{'fault':<22}{'requests':>10}{'non-2xx':>9}{'sock err':>9}{'p99':>10}  readiness (code@time)")
for f in faults:
    r, n, s, p = wrk(f)
    print(f"{f:<22}{r:>10}{n:>9}{s:>9}{p:>10}  {transitions(f)}")
PY
