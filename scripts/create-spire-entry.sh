#!/usr/bin/env bash
# Registers the backend with a SPIRE server in a cluster through kubectl, for
# clusters without spire-controller-manager (k8s/dev has it: there the
# ClusterSPIFFEID in k8s/base does this). Idempotent.
#
#   SPIRE_NAMESPACE     [spire]            SPIRE_SERVER_POD  [spire-server-0]
#   TRUST_DOMAIN        [demo.local]       SPIRE_CLUSTER     [precinct-dev] (k8s_psat cluster name)
#   APP_NAMESPACE       [99-apps]          APP_SERVICE_ACCOUNT [backend]
#
# Two entries: a node alias for every agent of the cluster, and the backend's
# workload entry under it (selected by namespace and service account).
set -euo pipefail
NS="${SPIRE_NAMESPACE:-spire}"
POD="${SPIRE_SERVER_POD:-spire-server-0}"
TD="${TRUST_DOMAIN:-demo.local}"
CLUSTER="${SPIRE_CLUSTER:-precinct-dev}"
APP_NS="${APP_NAMESPACE:-99-apps}"
APP_SA="${APP_SERVICE_ACCOUNT:-backend}"
NODE_ID="spiffe://$TD/ns/$NS/sa/spire-agent"
APP_ID="spiffe://$TD/ns/$APP_NS/sa/$APP_SA"

spire_server() {
  kubectl exec -n "$NS" "$POD" -c spire-server -- \
    /opt/spire/bin/spire-server "$@" -socketPath /tmp/spire-server/private/api.sock
}

# The whole output first, then the match: `… | grep -q` under pipefail fails
# when grep leaves early and the writer dies of SIGPIPE.
registered() {
  local out
  out="$(spire_server entry show -spiffeID "$1")" || { echo "cannot list SPIRE entries for $1" >&2; exit 1; }
  case "$out" in *"Entry ID"*) return 0 ;; *) return 1 ;; esac
}

if registered "$NODE_ID"; then
  echo "node alias $NODE_ID already registered"
else
  spire_server entry create -node -spiffeID "$NODE_ID" \
    -selector "k8s_psat:cluster:$CLUSTER" \
    -selector "k8s_psat:agent_ns:$NS" \
    -selector "k8s_psat:agent_sa:spire-agent"
fi

if registered "$APP_ID"; then
  echo "workload $APP_ID already registered"
else
  spire_server entry create -parentID "$NODE_ID" -spiffeID "$APP_ID" \
    -selector "k8s:ns:$APP_NS" \
    -selector "k8s:sa:$APP_SA"
fi
