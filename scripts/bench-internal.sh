#!/usr/bin/env bash
# Benchmark of the internal API (mutual TLS), release build, loopback, oha
# as the one load generator for every figure (it presents client
# certificates; wrk cannot):
#   1. POST /internal/v1/introspect over mutual TLS on keep-alive
#      connections, with the client workload's SVID, against GET
#      /api/v1/auth/me over plain HTTP, same token, same load (oha -c16,
#      BENCH_DURATION s), BENCH_ROUNDS interleaved rounds: the median req/s of
#      each, their ratio (goal >= 0.8x) and precinct's CPU time per request
#      (utime+stime from /proc).
#   2. Full handshakes per second (a new connection per request, no
#      resumption) to precinct's introspect, beside the same for
#      examples/tls_ceiling.rs: a bare rustls server with the same
#      certificate and key (ECDSA P-256, the agent's) doing the same mutual
#      TLS and answering a constant. Interleaved rounds too; the ratio is
#      reported (no goal: precinct also authorizes and answers a real call).
#   BENCH_DURATION (s, default 8)  BENCH_ROUNDS (default 3)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
ensure_oha
ensure_py_spiffe
bench_setup

ADDR="127.0.0.1:${BENCH_PORT:-8020}"
INTERNAL="127.0.0.1:$((${BENCH_PORT:-8020} + 1))"
CEILING="127.0.0.1:$((${BENCH_PORT:-8020} + 2))"
D="${BENCH_DURATION:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"

log "building examples/tls_ceiling.rs (the bare mutual-TLS reference)"
cargo build --release --locked --quiet --features dev-agent --example tls_ceiling

APP_ENV=development HTTP_ADDR="$ADDR" LOG_FORMAT=json ACCESS_LOG=errors \
  INTERNAL_ADDR="$INTERNAL" INTERNAL_ALLOWED_SPIFFE_IDS="$CLIENT_SPIFFE_ID" INTERNAL_RATE_PER_CALLER=100000000 \
  "$BIN" serve >"$DEV_DIR/backend-internal.log" 2>&1 &
app=$!
STARTED_PIDS=("$app" "${STARTED_PIDS[@]}")
wait_ready "$ADDR"

# The client's SVID from its own socket (py-spiffe), and precinct's own
# (the agent's main socket) for the bare server: the same key type and chain.
mkdir -p "$DEV_DIR/client" "$DEV_DIR/server"
"$VENV_DIR/bin/python" tests/clients/mtls_client.py svid "$CLIENT_SPIFFE_ENDPOINT_SOCKET" "$DEV_DIR/client" >/dev/null
"$VENV_DIR/bin/python" tests/clients/mtls_client.py svid "$SPIFFE_ENDPOINT_SOCKET" "$DEV_DIR/server" >/dev/null
"$ROOT/target/release/examples/tls_ceiling" "$CEILING" "$DEV_DIR/server/svid.pem" "$DEV_DIR/server/key.pem" \
  "$DEV_DIR/server/bundle.pem" >"$DEV_DIR/tls-ceiling.log" 2>&1 &
ceiling=$!
STARTED_PIDS=("$ceiling" "${STARTED_PIDS[@]}")
for _ in $(seq 1 50); do grep -q listening "$DEV_DIR/tls-ceiling.log" && break; sleep 0.1; done

TOKEN="$(curl -fsS -X POST "http://$ADDR/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"amy","password":"amy99"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
tls=(--cacert "$DEV_DIR/client/bundle.pem" --cert "$DEV_DIR/client/svid.pem" --key "$DEV_DIR/client/key.pem")
introspect=(-m POST -T application/x-www-form-urlencoded -d "token=$TOKEN")
# Checked once by hand before measuring: the figures are of real answers.
curl -fsS --cacert "$DEV_DIR/client/bundle.pem" --cert "$DEV_DIR/client/svid.pem" --key "$DEV_DIR/client/key.pem" \
  --resolve "localhost:${INTERNAL##*:}:127.0.0.1" --data-urlencode "token=$TOKEN" \
  "https://localhost:${INTERNAL##*:}/internal/v1/introspect" | grep -q '"active":true' \
  || die "introspect over mutual TLS does not answer active:true"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # run <name> <pid> <oha args...>: writes <name>.json and <name>.cpu
  local name="$1" pid="$2" before
  shift 2
  before=$(cpu_ticks "$pid")
  oha --no-tui --output-format json -w -z "${D}s" "$@" >"$DEV_DIR/internal-$name.json"
  echo "$(($(cpu_ticks "$pid") - before))" >"$DEV_DIR/internal-$name.cpu"
}
me() { run "me-$1" "$app" -c 16 -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/v1/auth/me"; }
keepalive() { run "introspect-$1" "$app" -c 16 "${tls[@]}" "${introspect[@]}" "https://localhost:${INTERNAL##*:}/internal/v1/introspect"; }
handshake() { run "handshake-$1" "$app" -c 16 --disable-keepalive "${tls[@]}" "${introspect[@]}" "https://localhost:${INTERNAL##*:}/internal/v1/introspect"; }
bare() { run "bare-$1" "$ceiling" -c 16 --disable-keepalive "${tls[@]}" "${introspect[@]}" "https://localhost:${CEILING##*:}/internal/v1/introspect"; }

for round in $(seq 1 "$ROUNDS"); do
  # Alternate who goes first: neither always meets a warm or a tired machine.
  if [ $((round % 2)) = 1 ]; then
    log "round $round/$ROUNDS: /me, introspect (keep-alive), bare handshakes, precinct handshakes (${D}s each, oha -c16)"
    me "$round"; keepalive "$round"; bare "$round"; handshake "$round"
  else
    log "round $round/$ROUNDS: introspect (keep-alive), /me, precinct handshakes, bare handshakes (${D}s each, oha -c16)"
    keepalive "$round"; me "$round"; handshake "$round"; bare "$round"
  fi
done

echo
echo "precinct internal API benchmark: release build, $(nproc) cores, oha -c16 ${D}s, $ROUNDS interleaved rounds"
python3 - "$DEV_DIR" "$ROUNDS" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
d, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def run(name, r):
    j = json.load(open(f"{d}/internal-{name}-{r}.json"))
    codes = j.get("statusCodeDistribution", {})
    n = sum(codes.values())
    ok = codes.get("200", 0)
    errors = sum(j.get("errorDistribution", {}).values())
    cpu = int(open(f"{d}/internal-{name}-{r}.cpu").read()) / hz
    p99 = j.get("latencyPercentiles", {}).get("p99") or 0
    return ok / j["summary"]["total"], cpu / max(n, 1) * 1e6, n - ok, errors, p99 * 1000
rows = {}
for name, label in (
    ("me", "GET /api/v1/auth/me (plain HTTP, keep-alive)"),
    ("introspect", "POST introspect (mTLS, keep-alive)"),
    ("bare", "bare rustls (mTLS, new connection each)"),
    ("handshake", "POST introspect (mTLS, new connection each)"),
):
    runs = [run(name, r) for r in range(1, rounds + 1)]
    med = statistics.median(x[0] for x in runs)
    us = statistics.median(x[1] for x in runs)
    bad = sum(x[2] for x in runs)
    errs = sum(x[3] for x in runs)
    rows[name] = (med, us, bad, errs)
    print(f"{label:<46} median {med:8.0f} req/s  rounds {' '.join(f'{x[0]:.0f}' for x in runs)}  "
          f"server cpu {us:6.1f} us/req  p99 {runs[-1][4]:.2f} ms  non-200 {bad}  errors {errs}")
ratio = rows["introspect"][0] / rows["me"][0]
cpu = rows["introspect"][1] / rows["me"][1]
met = ratio >= 0.8 and rows["introspect"][2] == 0 and rows["introspect"][3] == 0
print(f"RATIO introspect over mTLS / /me over plain HTTP: {ratio:.2f}x the rate (goal >= 0.8x), "
      f"{cpu:.2f}x the CPU per request: " + ("PASS" if met else "MISS"))
hs = rows["handshake"][0] / rows["bare"][0]
print(f"HANDSHAKES precinct {rows['handshake'][0]:.0f}/s vs bare rustls {rows['bare'][0]:.0f}/s: {hs:.2f}x "
      f"({rows['handshake'][1]:.0f} vs {rows['bare'][1]:.0f} us of server CPU per handshake)")
sys.exit(0 if met else 1)
PY
