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
export PATH=$DEV_DIR/venv/bin:\$PATH
ENV

log "building precinct"
cargo build --quiet
log "precinct on http://$HTTP_ADDR  ·  Swagger UI: http://$HTTP_ADDR/docs  ·  inspect with: source .dev/env"
# Not exec: the EXIT trap must still stop what we started.
"$ROOT/target/debug/precinct" serve &
app=$!
trap 'kill -TERM $app 2>/dev/null; wait $app 2>/dev/null; stop_started' EXIT
trap 'exit 130' INT TERM
wait $app
