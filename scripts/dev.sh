#!/usr/bin/env bash
# Runs the whole precinct stack locally: PostgreSQL, OpenBao (dev mode) and the
# backend on 127.0.0.1:8000 in the foreground. Ctrl-C stops what it started.
# Any backend setting can be passed in the environment (see docs/configuration.md).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mkdir -p "$DEV_DIR"
trap stop_started EXIT

log "building precinct"
ensure_rust
cargo build --quiet
start_stack "$ROOT/target/debug/precinct" "${DB_NAME:-precinct}"
export APP_ENV="${APP_ENV:-development}"
export HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:8000}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
export RUST_LOG="${RUST_LOG:-info,precinct=debug,rustify=off,vaultrs=off}"

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
"$ROOT/target/debug/precinct" serve &
app=$!
trap 'kill -TERM $app 2>/dev/null; wait $app 2>/dev/null; stop_started' EXIT
trap 'exit 130' INT TERM
wait $app
