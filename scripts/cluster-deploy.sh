#!/usr/bin/env bash
# `tilt up` without Tilt: applies k8s/dev to the current kubectl context and
# waits until the backend is ready. Build and load the images first
# (docs/deploy.md):
#   docker build -t precinct:dev -f Dockerfile.dev . && kind load docker-image precinct:dev --name precinct
#   docker build -t precinct-bootstrap:dev -f Dockerfile.bootstrap . && kind load docker-image precinct-bootstrap:dev --name precinct
#
#   scripts/cluster-deploy.sh              apply everything, wait for the backend
#   scripts/cluster-deploy.sh bootstrap    re-run the bootstrap Job only (after an
#                                          OpenBao dev-mode restart, say)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
log() { printf '\033[1;34m[precinct]\033[0m %s\n' "$*" >&2; }

# Deletes and re-creates the Job: re-applying a completed Job that has not
# changed does nothing. It keeps the bootstrap image the live Job runs (Tilt
# tags its own builds), else the one k8s/dev names.
rerun_bootstrap() {
  log "re-running the bootstrap Job (PostgreSQL roles, OpenBao configuration)"
  local image rendered
  image="$(kubectl get job -n precinct-system precinct-bootstrap \
    -o jsonpath='{.spec.template.spec.initContainers[0].image}' 2>/dev/null || true)"
  rendered="$(kubectl kustomize k8s/dev)"
  if [ -n "$image" ]; then
    rendered="$(printf '%s\n' "$rendered" | sed "s|image: precinct-bootstrap:dev\$|image: $image|")"
  fi
  kubectl delete job -n precinct-system precinct-bootstrap --ignore-not-found --wait=true
  printf '%s\n' "$rendered" | kubectl apply -f - --selector app.kubernetes.io/name=precinct-bootstrap
  kubectl wait -n precinct-system --for=condition=Complete job/precinct-bootstrap --timeout=600s
}

if [ "${1:-}" = bootstrap ]; then
  rerun_bootstrap
  exit 0
fi

# The CRD must be established before a ClusterSPIFFEID can be applied.
log "applying the ClusterSPIFFEID CRD"
kubectl apply -f k8s/dev/spire/crd-clusterspiffeid.yaml
kubectl wait --for=condition=Established crd/clusterspiffeids.spire.spiffe.io --timeout=60s
log "applying k8s/dev"
kubectl apply -k k8s/dev
log "waiting for SPIRE, PostgreSQL and OpenBao"
kubectl rollout status -n spire statefulset/spire-server --timeout=600s
kubectl rollout status -n spire daemonset/spire-agent --timeout=300s
kubectl rollout status -n spire daemonset/spiffe-csi-driver --timeout=300s
kubectl rollout status -n postgres statefulset/postgres --timeout=300s
kubectl rollout status -n openbao deployment/openbao --timeout=300s
log "waiting for the bootstrap Job"
kubectl wait -n precinct-system --for=condition=Complete job/precinct-bootstrap --timeout=600s
log "waiting for the backend to be ready"
kubectl rollout status -n 99-apps deployment/backend --timeout=600s
log "waiting for the demo users (precinct-dev-seed)"
kubectl wait -n precinct-system --for=condition=Complete job/precinct-dev-seed --timeout=600s
log "waiting for a client workload to introspect over mutual TLS (precinct-internal-check)"
kubectl wait -n 99-apps --for=condition=Complete job/precinct-internal-check --timeout=300s
kubectl logs -n 99-apps job/precinct-internal-check --tail=1
log "ready: kubectl -n 99-apps port-forward svc/backend 8000:8000, then http://localhost:8000/docs"
