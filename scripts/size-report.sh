#!/usr/bin/env bash
# What the release profile ships: the binary as the Dockerfile builds it
# (cargo build --release --locked, no dev-agent), its size without symbols,
# and the runtime image: distroless/cc plus that one binary (the only layer
# precinct adds). No Docker engine runs here, so the base image's size is
# read from the local registry cache when present, else printed as unknown.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_rust
log "cargo build --release --locked (as the Dockerfile)"
cargo build --release --locked --quiet
bin="target/release/precinct"
size() { stat -c %s "$1"; }
mb() { awk "BEGIN { printf \"%.1f MB\", $1 / 1000000 }"; }
stripped="$(mktemp)"
trap 'rm -f "$stripped"' EXIT
cp "$bin" "$stripped"
strip --strip-all "$stripped" 2>/dev/null || true
echo "profile.release: $(sed -n '/^\[profile.release\]/,/^\[/p' Cargo.toml | grep -v '^\[' | grep -v '^$' | tr '\n' ' ')"
echo "SIZE release binary: $(mb "$(size "$bin")") ($bin, symbols kept for perf)"
echo "SIZE without symbols: $(mb "$(size "$stripped")") (strip --strip-all; what strip = \"symbols\" would ship)"
echo "SIZE image layer added by precinct: $(mb "$(size "$bin")") (COPY of the binary onto gcr.io/distroless/cc-debian12:nonroot)"
if command -v docker >/dev/null 2>&1 && docker image inspect gcr.io/distroless/cc-debian12:nonroot >/dev/null 2>&1; then
  base="$(docker image inspect -f '{{.Size}}' gcr.io/distroless/cc-debian12:nonroot)"
  echo "SIZE image total: $(mb $((base + $(size "$bin"))))"
else
  echo "SIZE image total: base image not available here (no Docker engine); distroless/cc-debian12 adds its own size to the layer above"
fi
