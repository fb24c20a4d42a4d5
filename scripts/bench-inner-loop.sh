#!/usr/bin/env bash
# The dev-cluster inner loop, measured where it can be here (no Docker
# engine): a one-line edit in src/ → the debug binary with the dev agent,
# which is what Dockerfile.dev's cached RUN step does for Tilt (registry and
# target dir in BuildKit cache mounts: dependencies are never rebuilt). Also
# the size of what each rebuild ships (the runtime stage holds the binary
# alone). Three runs; prints one line each and the median.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_rust
build() { cargo build --locked --quiet --features dev-agent; }

log "warming the debug build (dependencies compile once, as in the cache mount)"
build
target_file="src/http/meta.rs"
backup="$(mktemp)"
cp "$target_file" "$backup"
trap 'cp "$backup" "$target_file"; rm -f "$backup"' EXIT

times=()
for run in 1 2 3; do
  printf '\n// inner-loop edit %s\n' "$run" >>"$target_file"
  start=$(date +%s.%N)
  build
  end=$(date +%s.%N)
  t=$(python3 -c "print(f'{$end - $start:.1f}')")
  times+=("$t")
  echo "run $run: one-line edit in $target_file → binary in ${t}s"
done
cp "$backup" "$target_file"
build
size=$(du -m target/debug/precinct | cut -f1)
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
echo "inner loop: edit → new binary ${median}s (median of 3, $(nproc) cores); the image layer it adds: ${size} MB (binary only)"
