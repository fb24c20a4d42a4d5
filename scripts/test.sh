#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs
# formatting, lints and the whole test suite. Exits non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_rust
ensure_nextest
ensure_base_tools
ensure_postgres
ensure_bao
# Tests start their own OpenBao dev servers on free ports with this binary.
export PRECINCT_TEST_BAO_BIN="$BAO_BIN"
export PRECINCT_TEST_DATABASE_URL="$DATABASE_ADMIN_URL"
# An independent Workload API client for the dev agent (tests/independent_client.rs).
ensure_py_spiffe
export PRECINCT_TEST_PYTHON="$VENV_DIR/bin/python"
# The contract check over /openapi.json (tests/schemathesis.rs).
ensure_schemathesis
ensure_cargo_deny
# scripts/replicas.sh puts the multi-replica tests behind a real HAProxy.
ensure_haproxy

log "dependencies run one way (scripts/check-layers.py)"
python3 "$ROOT/scripts/check-layers.py"
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (tests, with the dev agent; and the release feature set)"
cargo clippy --all-targets --locked -- -D warnings
cargo clippy --locked -- -D warnings
# Advisories need the RustSec database from the network (see deny.toml).
log "cargo deny check licenses bans sources"
cargo deny --log-level error check licenses bans sources
log "static checks: Kubernetes manifests, Tiltfile, Dockerfiles, scripts"
bash "$ROOT/scripts/check-manifests.sh"
# Roles are cluster-wide: the suite must drop every dynamic role it causes.
roles_before="$(mktemp)"
trap 'rm -f "$roles_before"' EXIT
dynamic_roles >"$roles_before"
# One integration binary, every test in a process of its own; the
# disruptive and timing-sensitive ones run alone (.config/nextest.toml).
log "cargo nextest run"
cargo nextest run --locked --no-fail-fast
log "dynamic PostgreSQL roles left by the suite"
left="$(dynamic_roles | comm -13 "$roles_before" -)"
if [ -n "$left" ]; then
  die "the tests left $(echo "$left" | wc -l) dynamic role(s) behind: $(echo "$left" | tr '\n' ' ')"
fi
echo "roles: $(wc -l <"$roles_before") v-… role(s) before the suite, none added by it"
# The release feature set (the Dockerfile's: no dev-agent, no
# fault-injection) must build, and must not carry the development agent (it
# mints SVIDs for anyone). Built in the dev profile: the same code and
# features as `cargo build --release`, without the 4-9 minutes of fat LTO
# (the Dockerfile, the benchmarks and scripts/size-report.sh build that).
log "cargo build --locked --bin precinct (the release feature set)"
cargo build --locked --bin precinct
if target/debug/precinct --help | grep -qi 'dev-agent'; then
  die "the release feature set offers dev-agent: it must stay behind the dev-agent feature"
fi
target/debug/precinct dev-agent --help >/dev/null 2>&1 && die "the release feature set runs dev-agent"
log "all checks passed"
