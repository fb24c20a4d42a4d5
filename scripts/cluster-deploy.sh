#!/usr/bin/env bash
# `tilt up` without Tilt: applies k8s/dev to the current kubectl context and
# waits until the backend is ready. Build and load the image first
# (docs/deploy.md):
#   docker build -t precinct:dev -f Dockerfile.dev . && kind load docker-image precinct:dev --name precinct
#
#   scripts/cluster-deploy.sh              apply everything, wait for the backend
#   scripts/cluster-deploy.sh bootstrap    re-run the bootstrap Job only (after an
#                                          OpenBao dev-mode restart, say)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
log() { printf '\033[1;34m[precinct]\033[0m %s\n' "$*" >&2; }

rerun_bootstrap() {
  log "running the bootstrap Job (PostgreSQL roles, OpenBao configuration)"
  kubectl delete job -n precinct-system precinct-bootstrap --ignore-not-found
  kubectl kustomize k8s/dev | kubectl apply -f - --selector app.kubernetes.io/name=precinct-bootstrap
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
log "ready: kubectl -n 99-apps port-forward svc/backend 8000:8000, then http://localhost:8000/docs"
