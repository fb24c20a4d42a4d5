#!/usr/bin/env bash
# Runs the whole precinct stack locally: PostgreSQL, OpenBao (dev mode) and the
# backend on 127.0.0.1:8000 in the foreground. Ctrl-C stops what it started.
# Any backend setting can be passed in the environment (see docs/configuration.md).
# PRECINCT_BIN runs an already built binary (with the dev-agent feature).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mkdir -p "$DEV_DIR"

# Ctrl-C in a terminal reaches the whole foreground group: the backend may
# already be gone when this runs, so nothing here may stop the cleanup short.
app=""
cleanup() {
  set +e
  if [ -n "$app" ]; then
    kill -TERM "$app" 2>/dev/null
    wait "$app" 2>/dev/null
  fi
  stop_started
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

BIN="${PRECINCT_BIN:-}"
if [ -z "$BIN" ]; then
  log "building precinct (with the development SPIFFE agent)"
  ensure_rust
  cargo build --quiet --features dev-agent
  BIN="$ROOT/target/debug/precinct"
fi
start_stack "$BIN" "${DB_NAME:-precinct}"
export APP_ENV="${APP_ENV:-development}"
export HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8000}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export RUST_LOG="${RUST_LOG:-info,precinct=debug,rustify=off,vaultrs=off}"
# The internal API (mutual TLS), for the client workload the agent serves.
export INTERNAL_ADDR="${INTERNAL_ADDR:-127.0.0.1:8443}"
export INTERNAL_ALLOWED_SPIFFE_IDS="${INTERNAL_ALLOWED_SPIFFE_IDS:-$CLIENT_SPIFFE_ID}"

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
export PATH=$VENV_DIR/bin:\$PATH
# The client workload's identity, and a call to the internal API with it:
#   $BIN internal-check   (logs in as jake, introspects over mutual TLS)
export INTERNAL_URL=https://localhost:${INTERNAL_ADDR##*:}
export PUBLIC_URL=http://$HTTP_ADDR
export SERVER_SPIFFE_ID=$EXPECTED_SPIFFE_ID
export CLIENT_SPIFFE_ENDPOINT_SOCKET=$CLIENT_SPIFFE_ENDPOINT_SOCKET
ENV

log "precinct on http://$HTTP_ADDR (ready once /api/v1/health/ready says so)  ·  Swagger UI: http://$HTTP_ADDR/docs  ·  inspect with: source .dev/env"
log "internal API (mutual TLS) on $INTERNAL_ADDR for $INTERNAL_ALLOWED_SPIFFE_IDS  ·  try: source .dev/env && SPIFFE_ENDPOINT_SOCKET=\$CLIENT_SPIFFE_ENDPOINT_SOCKET $BIN internal-check"
# Not exec: the EXIT trap must still stop what we started.
"$BIN" serve &
app=$!
wait "$app"
