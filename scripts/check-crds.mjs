// Validates the Prometheus Operator objects of a rendered kustomization
// against the operator's CRD schemas (npm @kubernetes-models/prometheus-operator).
// usage: node check-crds.mjs RENDERED.yaml   (run from .dev/npm, where the
// packages are installed: scripts/check-manifests.sh copies it there)
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = { ServiceMonitor, PodMonitor, PrometheusRule };
const docs = parseAllDocuments(readFileSync(process.argv[2], "utf8")).map((d) => d.toJS()).filter(Boolean);
let checked = 0;
for (const doc of docs) {
  if (!doc.apiVersion?.startsWith("monitoring.coreos.com/")) continue;
  const Kind = kinds[doc.kind];
  if (!Kind) throw new Error(`no schema for ${doc.kind}`);
  if (doc.apiVersion !== "monitoring.coreos.com/v1") throw new Error(`${doc.kind}: apiVersion ${doc.apiVersion}`);
  new Kind(doc).validate(); // throws with the path of the first violation
  checked += 1;
}
if (checked === 0) throw new Error("no monitoring.coreos.com object found");
console.log(`${checked} Prometheus Operator objects valid against their CRD schemas`);
