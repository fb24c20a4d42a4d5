#!/usr/bin/env bash
# Runs the whole precinct stack locally: PostgreSQL, OpenBao (dev mode) and the
# backend on 127.0.0.1:8000 in the foreground. Ctrl-C stops what it started.
# Any backend setting can be passed in the environment (see docs/configuration.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mkdir -p "$DEV_DIR"
trap stop_started EXIT

ensure_rust
ensure_base_tools
ensure_postgres
ensure_bao
start_bao_dev "${BAO_PORT:-8200}"

log "building precinct"
cargo build --quiet
BIN="$ROOT/target/debug/precinct"

# The development SPIFFE Workload API (stands in for the SPIRE agent).
export TRUST_DOMAIN="${TRUST_DOMAIN:-demo.local}"
export EXPECTED_SPIFFE_ID="${EXPECTED_SPIFFE_ID:-spiffe://$TRUST_DOMAIN/ns/99-apps/sa/backend}"
export SPIFFE_ENDPOINT_SOCKET="unix://$DEV_DIR/agent.sock"
OIDC_ADDR="127.0.0.1:${OIDC_PORT:-8090}"
export SPIFFE_OIDC_ISSUER="http://$OIDC_ADDR"
log "starting the development SPIFFE agent on $DEV_DIR/agent.sock (OIDC discovery $SPIFFE_OIDC_ISSUER)"
setsid "$BIN" dev-agent --socket "$DEV_DIR/agent.sock" --trust-domain "$TRUST_DOMAIN" \
  --spiffe-id "$EXPECTED_SPIFFE_ID" --oidc-addr "$OIDC_ADDR" --state-dir "$DEV_DIR/agent-state" \
  >"$DEV_DIR/agent.log" 2>&1 &
STARTED_PIDS+=("$!")
for _ in $(seq 1 50); do [ -S "$DEV_DIR/agent.sock" ] && break; sleep 0.1; done
[ -S "$DEV_DIR/agent.sock" ] || die "dev agent did not start; see .dev/agent.log"

# PostgreSQL: the application database, stable roles and grants.
export DB_NAME="${DB_NAME:-precinct}"
export DB_VAULT_PASSWORD="${DB_VAULT_PASSWORD:-precinct-vault-dev}"
DATABASE_ADMIN_URL="$DATABASE_ADMIN_URL" bash "$ROOT/scripts/bootstrap-db.sh"

# OpenBao dev mode keeps nothing across restarts: configure it every time.
BAO_BIN="$BAO_BIN" OIDC_DISCOVERY_URL="$SPIFFE_OIDC_ISSUER" SPIFFE_ID="$EXPECTED_SPIFFE_ID" \
  DB_CONNECTION_URL="postgresql://{{username}}:{{password}}@$PG_HOST:$PG_PORT/$DB_NAME?sslmode=disable" \
  bash "$ROOT/scripts/configure-openbao.sh"

export DB_HOST="$PG_HOST" DB_PORT="$PG_PORT" DB_SSLMODE="${DB_SSLMODE:-disable}"

# Migrations first (as the backend would at startup), then the demo users.
log "migrating and seeding demo users (jake, amy, rosa, terry, charles, gina; password <name>99)"
APP_ENV=development RUST_LOG=warn "$BIN" migrate
psql "postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME" -v ON_ERROR_STOP=1 -q \
  -f "$ROOT/sql/dev-seed.sql" >/dev/null
export APP_ENV="${APP_ENV:-development}"
export HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8000}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export RUST_LOG="${RUST_LOG:-info,precinct=debug}"

cat >"$DEV_DIR/env" <<ENV
# Written by scripts/dev.sh: \`source .dev/env\` to reach what it started.
export BAO_ADDR=$BAO_ADDR
export VAULT_ADDR=$BAO_ADDR
export BAO_TOKEN=$BAO_TOKEN
export VAULT_TOKEN=$BAO_TOKEN
export DATABASE_ADMIN_URL=$DATABASE_ADMIN_URL
export SPIFFE_ENDPOINT_SOCKET=$SPIFFE_ENDPOINT_SOCKET
export SPIFFE_OIDC_ISSUER=$SPIFFE_OIDC_ISSUER
export DATABASE_URL=postgres://$PG_ADMIN_USER:$PG_ADMIN_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME
export PATH=$DEV_DIR/venv/bin:\$PATH
ENV

log "precinct on http://$HTTP_ADDR (ready once /api/v1/health/ready says so)  ·  Swagger UI: http://$HTTP_ADDR/docs  ·  inspect with: source .dev/env"
# Not exec: the EXIT trap must still stop what we started.
"$BIN" serve &
app=$!
trap 'kill -TERM $app 2>/dev/null; wait $app 2>/dev/null; stop_started' EXIT
trap 'exit 130' INT TERM
wait $app
