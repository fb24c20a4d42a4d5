#!/usr/bin/env bash
# N precinct replicas behind a real load balancer (HAProxy, from Debian):
# several real processes of one build, one configuration, one OpenBao and one
# PostgreSQL, as a Kubernetes Service spreads them.
#
#   scripts/replicas.sh up N        the whole local stack (as scripts/dev.sh)
#                                   plus N replicas behind HAProxy, in the
#                                   foreground; Ctrl-C stops what it started
#   scripts/replicas.sh start N     N replicas and HAProxy on a running stack
#                                   (the backend settings in the environment,
#                                   as scripts/dev.sh and the tests export them)
#   scripts/replicas.sh restart I   SIGTERM replica I, wait for its exit, start
#                                   it again, wait until it is ready
#   scripts/replicas.sh stop [I]    stop replica I, or every replica and HAProxy
#   scripts/replicas.sh status      one line per replica and the balancer
#
# Settings: PRECINCT_BIN (the binary; built if unset), REPLICAS_DIR (pids,
# logs, haproxy.cfg; default .dev/replicas), REPLICAS_HOST (127.0.0.1),
# REPLICAS_BASE_PORT (replica I listens on BASE+I; 18400), LB_PORT (the
# balancer; BASE), REPLICAS_PORTS ("p1 p2 …": explicit ports instead of
# BASE+I), REPLICAS_METRICS_PORTS ("m1 m2 …": /metrics of each replica;
# unset: none), LB_ONE_PORT (a second frontend that sends everything to
# replica 1 alone: one replica against N behind the same balancer; unset:
# none). HAProxy checks /api/v1/health/ready every
# 500 ms and takes a replica out after 2 failures (within 1 s), back in
# after 2 successes; each replica gets SHUTDOWN_DELAY (default 3 s here), so
# the balancer sees a stopping replica's 503 before its listener closes.
# `start` prints the balancer's address and each replica's on stdout.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

REPLICAS_DIR="${REPLICAS_DIR:-$ROOT/.dev/replicas}"
HOST="${REPLICAS_HOST:-127.0.0.1}"
BASE_PORT="${REPLICAS_BASE_PORT:-18400}"
LB_PORT="${LB_PORT:-$BASE_PORT}"
mkdir -p "$REPLICAS_DIR"

binary() {
  if [ -z "${PRECINCT_BIN:-}" ]; then
    ensure_rust
    log "building precinct (with the development SPIFFE agent)"
    (cd "$ROOT" && cargo build --quiet --features dev-agent)
    PRECINCT_BIN="$ROOT/target/debug/precinct"
  fi
  echo "$PRECINCT_BIN"
}

# The port of replica $1 ($2: the list to pick from, else BASE+I).
port_of() {
  if [ -n "${REPLICAS_PORTS:-}" ]; then
    # shellcheck disable=SC2086
    set -- "$1" $REPLICAS_PORTS
    shift "$1"
    echo "$1"
  else
    echo $((BASE_PORT + $1))
  fi
}

metrics_port_of() {
  # shellcheck disable=SC2086
  set -- "$1" $REPLICAS_METRICS_PORTS
  shift "$1"
  echo "$1"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Starts replica $1 (in the background, its own process group) and waits
# until it is ready.
start_replica() {
  local i="$1" bin="$2" port
  port="$(port_of "$i")"
  if alive "$REPLICAS_DIR/r$i.pid"; then
    log "replica $i already running (pid $(cat "$REPLICAS_DIR/r$i.pid"))"
    return
  fi
  local metrics=()
  if [ -n "${REPLICAS_METRICS_PORTS:-}" ]; then
    metrics=(METRICS_ADDR="$HOST:$(metrics_port_of "$i")")
  fi
  env HTTP_ADDR="$HOST:$port" SHUTDOWN_DELAY="${SHUTDOWN_DELAY:-3s}" \
    TRUSTED_PROXIES="${TRUSTED_PROXIES:-127.0.0.1/32}" "${metrics[@]}" \
    setsid "$bin" serve >>"$REPLICAS_DIR/r$i.log" 2>&1 &
  echo $! >"$REPLICAS_DIR/r$i.pid"
  wait_ready "$HOST:$port"
}

# Sends SIGTERM to replica $1 and waits (up to 90 s) for it to exit.
stop_replica() {
  local pidfile="$REPLICAS_DIR/r$1.pid" pid
  alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 900); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "replica $1 (pid $pid) did not stop in 90 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

write_haproxy_cfg() {
  local n="$1" i
  {
    cat <<CFG
# Written by scripts/replicas.sh.
global
  log stderr format short local0 notice
defaults
  mode http
  log global
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 10s
  # A request that found a replica going away is sent to another one; only
  # when nothing reached the replica (or nothing came back from it).
  retries 2
  option redispatch
  retry-on conn-failure empty-response
  http-reuse safe
  option forwardfor
frontend precinct
  bind $HOST:$LB_PORT
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /api/v1/health/ready
  http-check expect status 200
  default-server check inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
CFG
    for i in $(seq 1 "$n"); do
      echo "  server r$i $HOST:$(port_of "$i")"
    done
    if [ -n "${LB_ONE_PORT:-}" ]; then
      cat <<CFG
frontend precinct-one
  bind $HOST:$LB_ONE_PORT
  default_backend one
backend one
  option httpchk GET /api/v1/health/ready
  http-check expect status 200
  default-server check inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
  server r1 $HOST:$(port_of 1)
CFG
    fi
  } >"$REPLICAS_DIR/haproxy.cfg"
}

start_haproxy() {
  ensure_haproxy
  haproxy -c -q -f "$REPLICAS_DIR/haproxy.cfg" || die "haproxy.cfg is invalid"
  stop_haproxy
  # In the foreground of a session of its own (its warnings go to the log).
  setsid haproxy -db -f "$REPLICAS_DIR/haproxy.cfg" >>"$REPLICAS_DIR/haproxy.log" 2>&1 &
  echo $! >"$REPLICAS_DIR/haproxy.pid"
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$LB_PORT/api/v1/health/ready")" = 200 ] && return
    sleep 0.1
  done
  die "HAProxy on $HOST:$LB_PORT does not reach a ready replica; see $REPLICAS_DIR/haproxy.log"
}

stop_haproxy() {
  alive "$REPLICAS_DIR/haproxy.pid" || { rm -f "$REPLICAS_DIR/haproxy.pid"; return 0; }
  local pid
  pid="$(cat "$REPLICAS_DIR/haproxy.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$REPLICAS_DIR/haproxy.pid"
}

replica_count() { cat "$REPLICAS_DIR/count" 2>/dev/null || echo 0; }

cmd_start() {
  local n="${1:?usage: replicas.sh start N}" bin i
  [ -n "${SPIFFE_ENDPOINT_SOCKET:-}" ] || die "no backend settings in the environment: run 'replicas.sh up N', or export them as scripts/dev.sh does"
  bin="$(binary)"
  echo "$n" >"$REPLICAS_DIR/count"
  # Started at the same instant, as a Deployment's pods are: the
  # migrations run once (sqlx takes an advisory lock).
  for i in $(seq 1 "$n"); do start_replica "$i" "$bin" & done
  wait
  for i in $(seq 1 "$n"); do alive "$REPLICAS_DIR/r$i.pid" || die "replica $i did not start; see $REPLICAS_DIR/r$i.log"; done
  write_haproxy_cfg "$n"
  start_haproxy
  echo "lb http://$HOST:$LB_PORT"
  [ -z "${LB_ONE_PORT:-}" ] || echo "lb1 http://$HOST:$LB_ONE_PORT"
  for i in $(seq 1 "$n"); do echo "r$i http://$HOST:$(port_of "$i")"; done
}

cmd_restart() {
  local i="${1:?usage: replicas.sh restart I}" bin
  bin="$(binary)"
  stop_replica "$i"
  start_replica "$i" "$bin"
}

cmd_stop() {
  if [ -n "${1:-}" ]; then
    stop_replica "$1"
    return
  fi
  stop_haproxy
  local i
  for i in $(seq 1 "$(replica_count)"); do stop_replica "$i" & done
  wait
  rm -f "$REPLICAS_DIR/count"
}

cmd_status() {
  local i port code
  for i in $(seq 1 "$(replica_count)"); do
    port="$(port_of "$i")"
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$port/api/v1/health/ready" || true)"
    echo "r$i http://$HOST:$port pid=$(cat "$REPLICAS_DIR/r$i.pid" 2>/dev/null || echo -) ready=$code"
  done
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://$HOST:$LB_PORT/api/v1/health/ready" || true)"
  echo "lb http://$HOST:$LB_PORT pid=$(cat "$REPLICAS_DIR/haproxy.pid" 2>/dev/null || echo -) ready=$code"
}

cmd_up() {
  local n="${1:?usage: replicas.sh up N}"
  trap 'cmd_stop; stop_started' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local bin
  bin="$(binary)"
  DEV_DIR="$REPLICAS_DIR/stack"
  mkdir -p "$DEV_DIR"
  export BAO_PORT="${BAO_PORT:-8220}" OIDC_PORT="${OIDC_PORT:-8092}"
  start_stack "$bin" "${DB_NAME:-precinct_replicas}"
  export APP_ENV="${APP_ENV:-development}" LOG_FORMAT="${LOG_FORMAT:-json}" RUST_LOG="${RUST_LOG:-info}"
  PRECINCT_BIN="$bin" cmd_start "$n"
  log "$n replicas behind HAProxy on http://$HOST:$LB_PORT (Swagger UI: /docs); logs in $REPLICAS_DIR; Ctrl-C stops everything"
  while :; do sleep 3600 & wait $!; done
}

case "${1:-}" in
  up) cmd_up "${2:-}" ;;
  start) cmd_start "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
