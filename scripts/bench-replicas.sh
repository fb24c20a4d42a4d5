#!/usr/bin/env bash
# Three replicas behind a real HAProxy (scripts/replicas.sh), release build,
# its own stack (.dev/bench), under wrk load through the balancer. Prints:
#   1. a Transit key rotation under load: fresh tokens from one replica
#      verified by the other two while it happens (401 count, goal 0), and
#      what the load saw;
#   2. a retirement (min_decryption_version + NOTIFY precinct_keys, as
#      docs/runbooks.md says): how long until every replica refuses the
#      retired version's token, how many of its requests were still
#      accepted after 2 s (goal 0), and 401s for new tokens (goal 0);
#   3. a rolling restart of every replica, one by one, under load
#      (non-2xx through the balancer, goal 0);
#   4. each limit with 1 and with 3 replicas (accepted of a burst: equal);
#   5. /me through the balancer with 3 replicas against 1 (a second
#      frontend of the same HAProxy sends everything to replica 1),
#      interleaved rounds, median, CPU time per request of the replicas and
#      of HAProxy (goal: 3 replicas >= 0.9x of 1: the shared state costs
#      little).
#   BENCH_DURATION (s, default 8)  BENCH_ROUNDS (default 3)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ensure_haproxy
D="${BENCH_DURATION:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
export REPLICAS_DIR="$ROOT/.dev/bench/replicas" LB_PORT=18450 LB_ONE_PORT=18451 REPLICAS_BASE_PORT=18460
cleanup() { bash "$ROOT/scripts/replicas.sh" stop >/dev/null 2>&1 || true; stop_started; }
trap cleanup EXIT
bench_setup
export PRECINCT_BIN="$BIN" APP_ENV=development LOG_FORMAT=json RUST_LOG=warn ACCESS_LOG=errors \
  AUTH_SIGNING_KEY_REFRESH=5s AUTH_SIGNING_KEY_PREPUBLISH=10s \
  AUTH_LOGIN_RATE_PER_IP=1000000 AUTH_LOGIN_RATE_PER_USERNAME_IP=1000000 AUTH_LOGIN_RATE_PER_USERNAME=1000000
LB="http://127.0.0.1:$LB_PORT" LB1="http://127.0.0.1:$LB_ONE_PORT"
r() { echo "http://127.0.0.1:$((REPLICAS_BASE_PORT + $1))"; }
OUT="$DEV_DIR/replicas-bench"
rm -rf "$OUT" && mkdir -p "$OUT"

start_three() {
  bash "$ROOT/scripts/replicas.sh" stop >/dev/null 2>&1 || true
  bash "$ROOT/scripts/replicas.sh" start 3 >"$OUT/start.txt"
}
token() { # token <base url> [user]: a fresh access token
  curl -fsS -X POST "$1/api/v1/auth/login" -H 'content-type: application/json' -H 'x-forwarded-for: 198.51.100.1' \
    -d "{\"username\":\"${2:-amy}\",\"password\":\"${2:-amy}99\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
status() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1/api/v1/auth/me"; }
bao_root() { curl -fsS -H "X-Vault-Token: root" -X "$1" "$BAO_ADDR/v1/$2" ${3:+-d "$3"} >/dev/null; }
KEY=transit/keys/precinct-access-token
load() { wrk -t2 -c16 -d"$1s" --latency -H "Authorization: Bearer $2" "$LB/api/v1/auth/me" >"$3"; }

# Cross-replica verifications: a token from replica i%3, checked on the two
# others, until $1 seconds have passed; prints "<calls> <401s> <kids>".
cross() {
  python3 - "$1" "$(r 1)" "$(r 2)" "$(r 3)" <<'PY'
import base64, json, sys, time, urllib.request, urllib.error
until = time.time() + float(sys.argv[1]); urls = sys.argv[2:]
def call(req):
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
calls = refused = 0; kids = set(); i = 0
while time.time() < until:
    body = json.dumps({"username": "amy", "password": "amy99"}).encode()
    s, b = call(urllib.request.Request(urls[i % 3] + "/api/v1/auth/login", body, {"content-type": "application/json", "x-forwarded-for": "198.51.100.1"}))
    if s != 200: print("login", s, file=sys.stderr); i += 1; continue
    tok = json.loads(b)["access_token"]
    kids.add(json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))["kid"])
    for j, u in enumerate(urls):
        if j == i % 3: continue
        s, _ = call(urllib.request.Request(u + "/api/v1/auth/me", headers={"authorization": "Bearer " + tok}))
        calls += 1; refused += s == 401
    i += 1
print(calls, refused, ",".join(sorted(kids)))
PY
}

log "starting 3 replicas behind HAProxy"
start_three
OLD="$(token "$LB")"

log "1. rotation under load (${D}s of wrk through HAProxy, cross-replica logins meanwhile)"
load "$((D + 14))" "$OLD" "$OUT/rotation-wrk.txt" &
wrkpid=$!
sleep 1
( sleep 1; bao_root POST "$KEY/rotate" ) &
read -r rot_calls rot_401 rot_kids < <(cross "$((D + 12))")
wait "$wrkpid"

log "2. retirement (min_decryption_version + NOTIFY precinct_keys) under load"
# The token from before the rotation: signed by v1, the version retired.
RETIRED="$OLD"
load "$D" "$RETIRED" "$OUT/retire-wrk.txt" &
wrkpid=$!
sleep 1
bao_root POST "$KEY/config" '{"min_decryption_version": 2}'
psql "postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME" -qc "NOTIFY precinct_keys"
read -r retire_ms retire_late < <(python3 - "$(r 1)" "$(r 2)" "$(r 3)" "$RETIRED" <<'PY'
import sys, time, urllib.request, urllib.error
urls, tok = sys.argv[1:4], sys.argv[4]; start = time.time(); late = 0; worst = 0.0
def ok(u):
    try:
        with urllib.request.urlopen(urllib.request.Request(u + "/api/v1/auth/me", headers={"authorization": "Bearer " + tok}), timeout=5): return True
    except urllib.error.HTTPError: return False
for u in urls:
    while ok(u):
        if time.time() - start > 2: late += 1
        if time.time() - start > 30: break
        time.sleep(0.01)
    worst = max(worst, time.time() - start)
print(int(worst * 1000), late)
PY
)
wait "$wrkpid"
read -r new_calls new_401 new_kids < <(cross 4)

log "3. rolling restart of every replica under load"
FRESH="$(token "$LB")"
load 60 "$FRESH" "$OUT/rolling-wrk.txt" &
wrkpid=$!
sleep 2
restart_started=$(date +%s.%N)
for i in 1 2 3; do bash "$ROOT/scripts/replicas.sh" restart "$i"; done
restart_took=$(python3 -c "import time; print(f'{time.time() - $restart_started:.1f}')")
sleep 2
kill -INT "$wrkpid" 2>/dev/null || true
wait "$wrkpid" || true

log "4. limits with 1 and 3 replicas"
limits_run() { # limits_run <n> <phase>
  AUTH_LOGIN_RATE_PER_USERNAME_IP=6 AUTH_LOGIN_RATE_PER_IP=8 AUTH_REGISTER_RATE_PER_IP=4 GITHUB_CONFIGURE_RATE_PER_USER=3 \
    AUTH_LOGIN_RATE_PER_USERNAME=1000000 GITHUB_API_URL=http://127.0.0.1:9 \
    bash "$ROOT/scripts/replicas.sh" start "$1" >/dev/null
  python3 - "$LB" "$2" <<'PY'
import json, sys, urllib.request, urllib.error
lb, phase = sys.argv[1], sys.argv[2]
def post(path, body, xff=None, token=None):
    h = {"content-type": "application/json"}
    if xff: h["x-forwarded-for"] = xff
    if token: h["authorization"] = "Bearer " + token
    try:
        with urllib.request.urlopen(urllib.request.Request(lb + path, json.dumps(body).encode(), h), timeout=10) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
n = "1" if phase == "a" else "2"
pair = sum(post("/api/v1/auth/login", {"username": "jake", "password": "wrong-password-1"}, f"203.0.113.1{n}")[0] != 429 for _ in range(12))
per_ip = sum(post("/api/v1/auth/login", {"username": f"nobody{i}", "password": "wrong-password-1"}, f"203.0.113.2{n}")[0] != 429 for i in range(16))
reg = sum(post("/api/v1/auth/register", {"username": f"bench{phase}{i}", "email": f"bench{phase}{i}@example.test", "password": "correct horse battery staple 42"}, f"203.0.113.3{n}")[0] != 429 for i in range(8))
s, b = post("/api/v1/auth/login", {"username": "terry" if phase == "a" else "charles", "password": ("terry" if phase == "a" else "charles") + "99"}, "198.51.100.5")
tok = json.loads(b)["access_token"]
conf = sum(post("/api/v1/github/configure", {"github_token": "ghp_" + "a" * 36}, token=tok)[0] != 429 for _ in range(6))
print(pair, per_ip, reg, conf)
PY
  bash "$ROOT/scripts/replicas.sh" stop >/dev/null
}
bash "$ROOT/scripts/replicas.sh" stop >/dev/null
# One after the other (a process substitution would not wait for its stop).
limits_run 1 a >"$OUT/limits-1.txt"
limits_run 3 b >"$OUT/limits-3.txt"
read -r l1_pair l1_ip l1_reg l1_conf <"$OUT/limits-1.txt"
read -r l3_pair l3_ip l3_reg l3_conf <"$OUT/limits-3.txt"

log "5. /me through HAProxy: 3 replicas against 1 (${D}s each, wrk -t2 -c16, $ROUNDS interleaved rounds)"
start_three
TOK="$(token "$LB")"
cpu_of() { # total utime+stime ticks of the replicas and HAProxy
  local t=0 f
  for f in "$REPLICAS_DIR"/r*.pid "$REPLICAS_DIR/haproxy.pid"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$(cat "$f")/stat")))
  done
  echo "$t"
}
for round in $(seq 1 "$ROUNDS"); do
  order=(one three); [ $((round % 2)) = 0 ] && order=(three one)
  for v in "${order[@]}"; do
    url="$LB"; [ "$v" = one ] && url="$LB1"
    before=$(cpu_of)
    wrk -t2 -c16 -d"${D}s" -H "Authorization: Bearer $TOK" "$url/api/v1/auth/me" >"$OUT/me-$v-$round.txt"
    echo "$(($(cpu_of) - before))" >"$OUT/me-$v-$round.cpu"
  done
done

echo
echo "precinct replicas benchmark: 3 replicas behind HAProxy $(haproxy -v | head -1 | awk '{print $3}'), release build, $(nproc) cores"
wrk_summary "load during the rotation" "$OUT/rotation-wrk.txt"
echo "ROTATION: $rot_calls cross-replica verifications of fresh tokens, $rot_401 x 401 (goal 0); kids signed: $rot_kids"
wrk_summary "load with the retired token" "$OUT/retire-wrk.txt"
echo "RETIREMENT: every replica refuses the retired version after ${retire_ms} ms (goal < 2000); accepted after 2 s: $retire_late (goal 0); new tokens afterwards: $new_calls cross-replica verifications, $new_401 x 401 (goal 0), kids $new_kids"
wrk_summary "load during the rolling restart" "$OUT/rolling-wrk.txt"
rolling_bad=$(python3 - "$OUT/rolling-wrk.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
n = re.search(r"Non-2xx or 3xx responses: (\d+)", t); s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print((int(n.group(1)) if n else 0) + (sum(map(int, s.groups())) if s else 0))
PY
)
echo "ROLLING RESTART: 3 replicas restarted one by one in ${restart_took}s under load: $rolling_bad non-2xx or socket errors (goal 0)"
echo "LIMITS accepted of a burst, 1 replica / 3 replicas: per (IP, username) $l1_pair/$l3_pair of 12 (limit 6), per IP $l1_ip/$l3_ip of 16 (8), registrations per IP $l1_reg/$l3_reg of 8 (4), GitHub configure per user $l1_conf/$l3_conf of 6 (3)"
python3 - "$OUT" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import re, statistics, sys
d, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def run(v, r):
    t = open(f"{d}/me-{v}-{r}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    n = int(re.search(r"(\d+) requests in", t).group(1))
    cpu = int(open(f"{d}/me-{v}-{r}.cpu").read()) / hz
    return rps, cpu / n * 1e6
rows = {}
for v in ("one", "three"):
    runs = [run(v, r) for r in range(1, rounds + 1)]
    rows[v] = (statistics.median(x for x, _ in runs), [x for x, _ in runs], statistics.median(c for _, c in runs))
    print(f"/me via HAProxy, {v:>5} replica(s): median {rows[v][0]:8.0f} req/s  rounds {' '.join(f'{x:.0f}' for x in rows[v][1])}  cpu {rows[v][2]:6.1f} us/req (replicas + HAProxy)")
ratio = rows["three"][0] / rows["one"][0]
print(f"RATIO /me 3 replicas / 1 replica: {ratio:.2f}x (goal >= 0.9x); CPU per request {rows['three'][2] / rows['one'][2]:.2f}x")
PY
