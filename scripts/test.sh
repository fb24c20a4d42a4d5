#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs
# formatting, lints and the whole test suite. Exits non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_base_tools
ensure_postgres
ensure_bao
# Tests start their own OpenBao dev servers on free ports with this binary.
export PRECINCT_TEST_BAO_BIN="$BAO_BIN"
export PRECINCT_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "static checks: Kubernetes manifests, Tiltfile, Dockerfiles, scripts"
bash "$ROOT/scripts/check-manifests.sh"
log "cargo test"
cargo test --locked --no-fail-fast
# The command the Dockerfile runs: the release build must compile too.
log "cargo build --release --locked (as the Dockerfile)"
cargo build --release --locked
log "all checks passed"
