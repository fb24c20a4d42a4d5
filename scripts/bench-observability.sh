#!/usr/bin/env bash
# What observability costs the request path, measured in one run, release
# build, loopback. Four servers under the same load (wrk -t2 -c16 on /me,
# BENCH_DURATION s), interleaved, BENCH_ROUNDS rounds:
#   ceiling   ../shared/bench/ceiling (bare axum + HS256 + primary-key select)
#   plain     precinct without METRICS_ADDR or OTLP (no recorder: the request
#             path skips even building label sets)
#   metrics   precinct with METRICS_ADDR (as the manifests run it), scraped
#             every second during its load
#   otlp      precinct with metrics and OTEL_EXPORTER_OTLP_ENDPOINT set, to a
#             local sink that accepts every export (every request a span)
#   baseline  optional: BASELINE_BIN, another build (say, the commit before
#             the observability work) run as `plain` is
# For each: req/s (median of the rounds), the ratio to the ceiling, and the
# server's CPU time per request (utime+stime from /proc, the stabler figure
# on a busy 2-core machine). The issue's budget: metrics may cost the /me
# ratio at most 3 %; the script checks it and exits non-zero on a miss.
#   BENCH_DURATION (s, default 8)  BENCH_ROUNDS (default 3)
#   CEILING_DIR (default ../shared/bench/ceiling)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started EXIT
bench_setup

D="${BENCH_DURATION:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
CEILING_ADDR="127.0.0.1:${CEILING_PORT:-18200}"
SINK_PORT="${OTLP_SINK_PORT:-18300}"
declare -A ADDR=([plain]=127.0.0.1:8011 [metrics]=127.0.0.1:8012 [otlp]=127.0.0.1:8013 [baseline]=127.0.0.1:8014)
declare -A PID
VARIANTS=(plain metrics otlp)
[ -z "${BASELINE_BIN:-}" ] || VARIANTS+=(baseline)

# An OTLP/HTTP sink: accepts every export, counts the bytes.
python3 - "$SINK_PORT" >"$DEV_DIR/otlp-sink.log" 2>&1 <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
STARTED_PIDS=("$!" "${STARTED_PIDS[@]}")

start() { # start <variant> <extra env...>
  local variant="$1" bin="$BIN"
  shift
  [ "$variant" != baseline ] || bin="$BASELINE_BIN"
  env APP_ENV=development HTTP_ADDR="${ADDR[$variant]}" LOG_FORMAT=json ACCESS_LOG=errors "$@" \
    "$bin" serve >"$DEV_DIR/backend-$variant.log" 2>&1 &
  PID[$variant]=$!
  STARTED_PIDS=("$!" "${STARTED_PIDS[@]}")
}
start plain
start metrics METRICS_ADDR=127.0.0.1:19112
start otlp METRICS_ADDR=127.0.0.1:19113 OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$SINK_PORT"
[ -z "${BASELINE_BIN:-}" ] || start baseline
start_ceiling
PID[ceiling]=$CEILING_PID
for v in "${VARIANTS[@]}"; do wait_ready "${ADDR[$v]}"; done
# One access token serves all three: same Transit key, same issuer.
TOKEN="$(curl -fsS -X POST "http://${ADDR[plain]}/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"username":"amy","password":"amy99"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
for v in "${VARIANTS[@]}"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://${ADDR[$v]}/api/v1/auth/me")" = 200 ] \
    || die "$v: /me does not answer 200"
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # run <variant> <round>
  local v="$1" url token scraper=""
  if [ "$v" = ceiling ]; then url="http://$CEILING_ADDR/api/v1/auth/me" token="$CEILING_TOKEN"; else url="http://${ADDR[$v]}/api/v1/auth/me" token="$TOKEN"; fi
  case "$v" in
    metrics) (while sleep 1; do curl -s -o /dev/null http://127.0.0.1:19112/metrics; done) & scraper=$! ;;
    otlp) (while sleep 1; do curl -s -o /dev/null http://127.0.0.1:19113/metrics; done) & scraper=$! ;;
  esac
  local before after
  before=$(cpu_ticks "${PID[$v]}")
  wrk -t2 -c16 -d"${D}s" -H "Authorization: Bearer $token" "$url" >"$DEV_DIR/obs-$v-$2.txt"
  after=$(cpu_ticks "${PID[$v]}")
  [ -z "$scraper" ] || kill "$scraper" 2>/dev/null || true
  echo "$((after - before))" >"$DEV_DIR/obs-$v-$2.cpu"
}
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order each round: no variant always runs first or last.
  order=(ceiling "${VARIANTS[@]}")
  shift_by=$(((round - 1) % ${#order[@]}))
  order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
  log "round $round/$ROUNDS: ${order[*]} (${D}s each, wrk -t2 -c16 on /me)"
  for v in "${order[@]}"; do run "$v" "$round"; done
done
curl -s http://127.0.0.1:19112/metrics >"$DEV_DIR/obs-metrics.txt"
for v in "${VARIANTS[@]}"; do
  echo "$v $(awk '/^VmRSS/ {print $2}' "/proc/${PID[$v]}/status") $(awk '/^VmHWM/ {print $2}' "/proc/${PID[$v]}/status")"
done >"$DEV_DIR/obs-rss.txt"

echo
echo "precinct observability cost: release build, $(nproc) cores, wrk -t2 -c16 ${D}s on /me, $ROUNDS interleaved rounds"
python3 - "$DEV_DIR" "$ROUNDS" "$(getconf CLK_TCK)" "${VARIANTS[@]}" <<'PY'
import re, statistics, sys
d, rounds, hz, variants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def rps_and_count(v, r):
    t = open(f"{d}/obs-{v}-{r}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    n = int(re.search(r"(\d+) requests in", t).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return rps, n, int(bad.group(1)) if bad else 0
rows = {}
for v in ["ceiling", *variants]:
    runs = [rps_and_count(v, r) for r in range(1, rounds + 1)]
    cpu = [int(open(f"{d}/obs-{v}-{r}.cpu").read()) / hz for r in range(1, rounds + 1)]
    us_per_req = statistics.median(c / n * 1e6 for c, (_, n, _) in zip(cpu, runs))
    rows[v] = (statistics.median(r for r, _, _ in runs), [r for r, _, _ in runs], us_per_req, sum(b for _, _, b in runs))
ceiling = rows["ceiling"][0]
rss = {l.split()[0]: (int(l.split()[1]) // 1024, int(l.split()[2]) // 1024) for l in open(f"{d}/obs-rss.txt")}
for v, (med, all_, us, bad) in rows.items():
    mem = f"  RSS {rss[v][0]} MB (peak {rss[v][1]})" if v in rss else ""
    print(f"{v:<8} median {med:8.0f} req/s  rounds {' '.join(f'{x:.0f}' for x in all_)}  "
          f"ratio {med / ceiling:.2f}x  cpu {us:6.1f} us/req  non-2xx {bad}{mem}")
plain, metrics, otlp = (rows[v][0] / ceiling for v in ("plain", "metrics", "otlp"))
cost = 1 - metrics / plain
cpu_cost = rows["metrics"][2] / rows["plain"][2] - 1
print(f"RATIO /me: plain {plain:.3f}x, metrics {metrics:.3f}x, otlp {otlp:.3f}x of the ceiling")
print(f"metrics cost: {cost * 100:+.1f} % of the /me ratio, {cpu_cost * 100:+.1f} % CPU per request (budget 3 %)")
print(f"otlp cost: {(1 - otlp / plain) * 100:+.1f} % of the /me ratio, "
      f"{(rows['otlp'][2] / rows['plain'][2] - 1) * 100:+.1f} % CPU per request (every request a span)")
if "baseline" in rows:
    base = rows["baseline"][0] / ceiling
    print(f"against the baseline build: plain {(plain / base - 1) * 100:+.1f} %, metrics {(metrics / base - 1) * 100:+.1f} % "
          f"of its /me ratio ({base:.3f}x); CPU per request plain {(rows['plain'][2] / rows['baseline'][2] - 1) * 100:+.1f} %")
ok = cost <= 0.03 and all(rows[v][3] == 0 for v in rows)
print("TARGET metrics within 3 % of plain: " + ("PASS" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
