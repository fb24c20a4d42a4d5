#!/usr/bin/env bash
# Faults produced for real under load, with figures. Starts its own stack
# (release build, loopback: PostgreSQL, OpenBao dev server, dev agent,
# backend) and runs each fault while wrk loads GET /api/v1/auth/me
# (-t2 -c16), printing one row per fault: requests, non-2xx, socket errors,
# p99, the 500s and 503s the backend logged, readiness transitions, and the
# recovery time (from the fault's end to the first /me answer after which
# every probe answers 200; probes every 100 ms).
#
#   scripts/fault-suite.sh                 every fault
#   scripts/fault-suite.sh openbao-freeze  only the named ones
#   FREEZE_SECONDS (120)  SIGHUP_SECONDS (30)  AGENT_DOWN_SECONDS (60)
#   SHORT_LEASE (60)      lease TTL (s) for the past-margin/past-expiry faults
#
# Faults: steady (no fault, the reference); openbao-freeze (SIGSTOP for
# FREEZE_SECONDS, then SIGCONT); openbao-past-margin and openbao-past-expiry
# (a fresh SHORT_LEASE lease, then OpenBao frozen until past the readiness
# margin, or past the lease's expiry); sighup-storm (SIGHUP every 2 s);
# sessions-terminated (pg_terminate_backend on the pool's role, twice);
# leases-revoked (bao lease revoke -prefix database/creds/); agent-down (the
# dev agent killed for AGENT_DOWN_SECONDS, then restarted); sigterm (SIGTERM
# under load: exit status, time to exit, the role gone before exit; always
# run last). Targets are checked at the end (see docs/rotation.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8010}"
FREEZE_SECONDS="${FREEZE_SECONDS:-120}"
SHORT_LEASE="${SHORT_LEASE:-60}"
SIGHUP_SECONDS="${SIGHUP_SECONDS:-30}"
AGENT_DOWN_SECONDS="${AGENT_DOWN_SECONDS:-60}"
ADMIN_DB_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME"
OUT="$DEV_DIR/faults"
rm -rf "$OUT"
mkdir -p "$OUT"

# Settings that let the short-lease faults cross the readiness margin and
# the lease's expiry within a minute or two; the default lease is long.
APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json ACCESS_LOG=errors \
  DB_LEASE_SAFETY_MARGIN=15s DB_DRAIN_TIMEOUT=5s SHUTDOWN_DELAY=2s \
  "$BIN" serve >"$DEV_DIR/backend.log" 2>&1 &
app=$!
STARTED_PIDS=("$app" "${STARTED_PIDS[@]}")
wait_ready "$ADDR"
TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"amy","password":"amy99"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# Samples `curl <args>` every 100 ms into $1 as "<epoch seconds> <code>".
sample() {
  local file="$1"
  shift
  while :; do
    printf '%s %s\n' "$EPOCHREALTIME" "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@")" >>"$file"
    sleep 0.1
  done
}

# Injectors call this when their fault ends (thaw, restart, the signal).
fault_over() { echo "$EPOCHREALTIME" >"$OUT/$CURRENT.end"; }

# run_fault <name> <load seconds> <function that injects the fault>
run_fault() {
  local name="$1" seconds="$2" inject="$3" ready me
  CURRENT="$name"
  log "fault $name: ${seconds}s of load"
  : >"$OUT/$name.ready"
  : >"$OUT/$name.me"
  rm -f "$OUT/$name.end"
  wc -l <"$DEV_DIR/backend.log" >"$OUT/$name.logstart"
  echo "$EPOCHREALTIME" >"$OUT/$name.start"
  sample "$OUT/$name.ready" "http://$ADDR/api/v1/health/ready" &
  ready=$!
  sample "$OUT/$name.me" -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/auth/me" &
  me=$!
  wrk -t2 -c16 -d"${seconds}s" --timeout 10s --latency -H "Authorization: Bearer $TOKEN" \
    "http://$ADDR/api/v1/auth/me" >"$OUT/$name.wrk" &
  local load=$!
  "$inject"
  [ -f "$OUT/$name.end" ] || fault_over
  wait "$load"
  kill "$ready" "$me" 2>/dev/null || true
  wait "$ready" "$me" 2>/dev/null || true
  tail -n +"$(( $(cat "$OUT/$name.logstart") + 1 ))" "$DEV_DIR/backend.log" >"$OUT/$name.log"
}

bao_pid() { cat "$DEV_DIR/bao.pid"; }
pool_role() { psql "$ADMIN_DB_URL" -Atqc "SELECT usename FROM pg_stat_activity WHERE datname = '$DB_NAME' AND usename LIKE 'v-%' LIMIT 1"; }

inject_steady() { :; }
inject_openbao_freeze() {
  sleep 5
  kill -STOP "$(bao_pid)"
  sleep "$FREEZE_SECONDS"
  kill -CONT "$(bao_pid)"
  fault_over
}
# A fresh generation on a SHORT_LEASE lease: OpenBao grants the new TTL to
# the next lease, and SIGHUP makes the backend take one.
fresh_short_lease() {
  local before after
  before="$(pool_role)"
  "$BAO_BIN" write "database/roles/${BAO_DB_ROLE:-precinct-runtime}" default_ttl="${SHORT_LEASE}s" >/dev/null
  kill -HUP "$app"
  for _ in $(seq 1 100); do
    after="$(pool_role)"
    [ -n "$after" ] && [ "$after" != "$before" ] && break
    sleep 0.1
  done
  "$BAO_BIN" write "database/roles/${BAO_DB_ROLE:-precinct-runtime}" default_ttl="${DB_LEASE_TTL:-90m}" >/dev/null
}
# Frozen from 2 s into the short lease until $1 seconds into it.
freeze_short_lease_until() {
  fresh_short_lease
  sleep 2
  kill -STOP "$(bao_pid)"
  sleep "$(($1 - 2))"
  kill -CONT "$(bao_pid)"
  fault_over
}
# Past the readiness margin (15 s before expiry), thawed 5 s before expiry.
inject_openbao_past_margin() { sleep 3; freeze_short_lease_until $((SHORT_LEASE - 5)); }
# Past the lease's expiry by 15 s.
inject_openbao_past_expiry() { sleep 3; freeze_short_lease_until $((SHORT_LEASE + 15)); }
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
  fault_over
}
inject_leases_revoked() {
  sleep 5
  "$BAO_BIN" lease revoke -prefix database/creds/ >/dev/null
  fault_over
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
  fault_over
}
# SIGTERM under load: readiness turns 503, requests are served through
# SHUTDOWN_DELAY, then the pool is retired. Records the exit status, the
# time to exit, and whether the role was gone before the process was.
inject_sigterm() {
  sleep 5
  local role t0 status
  role="$(pool_role)"
  t0="$EPOCHREALTIME"
  kill -TERM "$app"
  fault_over
  status=0
  wait "$app" || status=$?
  printf 'exit=%s took=%ss role_left=%s\n' "$status" "$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $t0 }")" \
    "$(psql "$ADMIN_DB_URL" -Atqc "SELECT count(*) FROM pg_roles WHERE rolname = '$role'")" >"$OUT/sigterm.exit"
}

declare -A LOAD=(
  [steady]=15
  [openbao-freeze]=$((FREEZE_SECONDS + 15))
  [openbao-past-margin]=$((SHORT_LEASE + 10))
  [openbao-past-expiry]=$((SHORT_LEASE + 30))
  [sighup-storm]=$((SIGHUP_SECONDS + 5))
  [sessions-terminated]=15
  [leases-revoked]=15
  [agent-down]=$((AGENT_DOWN_SECONDS + 15))
  [sigterm]=10
)
ALL=(steady openbao-freeze openbao-past-margin openbao-past-expiry sighup-storm sessions-terminated leases-revoked agent-down sigterm)
WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
[[ " ${WANT[*]} " == *" steady "* ]] || WANT=(steady "${WANT[@]}")
# The backend does not come back after SIGTERM: that fault goes last.
if [[ " ${WANT[*]} " == *" sigterm "* ]]; then
  mapfile -t WANT < <(printf '%s\n' "${WANT[@]}" | grep -vx sigterm)
  WANT+=(sigterm)
fi
for fault in "${WANT[@]}"; do
  [ -n "${LOAD[$fault]:-}" ] || die "unknown fault $fault (known: ${ALL[*]})"
  run_fault "$fault" "${LOAD[$fault]}" "inject_${fault//-/_}"
done

echo
echo "precinct fault suite: release build, $(nproc) cores, wrk -t2 -c16 on GET /api/v1/auth/me"
python3 - "$OUT" "${WANT[@]}" <<'PY'
import json, re, sys
out, faults = sys.argv[1], sys.argv[2:]

def wrk(name):
    t = open(f"{out}/{name}.wrk").read()
    reqs = re.search(r"(\d+) requests in", t)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    p99 = re.search(r"^\s+99%\s+(\S+)", t, re.M)
    return (int(reqs.group(1)) if reqs else 0, int(non2xx.group(1)) if non2xx else 0,
            sum(map(int, sock.groups())) if sock else 0, p99.group(1) if p99 else "?")

def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v or "")
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else None

def samples(path):
    rows = []
    for line in open(path):
        parts = line.split()
        if len(parts) == 2:
            rows.append((float(parts[0]), parts[1]))
    return rows

def transitions(name, start):
    last, changes = None, []
    for t, code in samples(f"{out}/{name}.ready"):
        if code != last:
            changes.append(f"{code}@{t - start:.1f}s")
            last = code
    return " ".join(changes) or "-"

def recovery(name):
    """Seconds from the fault's end to the first /me 200 after which every
    probe answered 200 ("-" if no probe ever failed)."""
    end = float(open(f"{out}/{name}.end").read())
    rows = samples(f"{out}/{name}.me")
    if all(code == "200" for _, code in rows):
        return 0.0, False
    last_bad = max(t for t, code in rows if code != "200")
    after = [t for t, code in rows if t > last_bad and code == "200"]
    if not after:
        return None, True
    return max(0.0, after[0] - end), True

def statuses(name):
    n500 = n503 = 0
    for line in open(f"{out}/{name}.log"):
        try:
            status = json.loads(line).get("status")
        except ValueError:
            continue
        n500 += status == 500
        n503 += status == 503
    return n500, n503

rows = {}
print(f"{'fault':<22}{'requests':>10}{'non-2xx':>9}{'sock err':>9}{'p99':>10}{'500s':>6}{'503s':>6}{'recovery':>10}  readiness (code@s since the fault's start)")
for f in faults:
    r, n, s, p = wrk(f)
    n500, n503 = statuses(f)
    rec, failed = recovery(f)
    start = float(open(f"{out}/{f}.start").read())
    rec_s = "-" if not failed else ("never" if rec is None else f"{rec:.1f}s")
    if f == "sigterm":
        rec_s = "n/a"  # the process is gone: exit status and role below
    rows[f] = dict(requests=r, non2xx=n, sock=s, p99=ms(p), n500=n500, n503=n503, recovery=rec, failed=failed)
    print(f"{f:<22}{r:>10}{n:>9}{s:>9}{p:>10}{n500:>6}{n503:>6}{rec_s:>10}  {transitions(f, start)}")

try:
    print("sigterm: " + open(f"{out}/sigterm.exit").read().strip())
except FileNotFoundError:
    pass

# The targets of docs/rotation.md, checked on this run's figures.
checks = []
def target(ok, text):
    checks.append(ok)
    print(f"  {'PASS' if ok else 'FAIL'}  {text}")
print("targets:")
for f in ("openbao-freeze", "sighup-storm", "agent-down", "openbao-past-margin"):
    if f in rows:
        target(rows[f]["non2xx"] == 0, f"{f}: 0 non-2xx (got {rows[f]['non2xx']})")
for f in ("sessions-terminated", "leases-revoked", "openbao-past-expiry"):
    if f in rows:
        x = rows[f]
        target(x["n500"] == 0, f"{f}: no 500 (got {x['n500']})")
        target(not x["failed"] or (x["recovery"] is not None and x["recovery"] <= 5.0),
               f"{f}: recovered within 5 s of the fault's end (got {x['recovery']})")
if "sighup-storm" in rows and rows["steady"]["p99"] and rows["sighup-storm"]["p99"]:
    ratio = rows["sighup-storm"]["p99"] / rows["steady"]["p99"]
    target(ratio <= 1.5, f"rotation p99 (sighup-storm) {ratio:.2f}x steady p99 (at most 1.5x)")
if "sigterm" in rows:
    exit_line = open(f"{out}/sigterm.exit").read()
    target("exit=0" in exit_line and "role_left=0" in exit_line,
           f"sigterm: exit 0 and the role gone before exit ({exit_line.strip()})")
    target(rows["sigterm"]["n500"] == 0, f"sigterm: no 500 (got {rows['sigterm']['n500']})")
sys.exit(0 if all(checks) else 1)
PY
