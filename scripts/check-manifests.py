"""Checks one rendered kustomization beyond schema validation.

usage: check-manifests.py RENDERED.yaml OUT_CORE.yaml

- writes the objects kubernetes-validate has schemas for to OUT_CORE.yaml;
- validates ClusterSPIFFEID objects against the CRD schema in k8s/dev;
- the backend Deployment's probes and port are routes the app serves, and its
  grace period covers the drain;
- every image is pinned (a tag, never `latest`), but the backend's own;
- no Secret in the backend's namespace (admin credentials stay elsewhere).
"""

import pathlib
import sys

import jsonschema
import yaml

CRD = pathlib.Path("k8s/dev/spire/crd-clusterspiffeid.yaml")
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
custom = [d for d in docs if d["kind"] == "ClusterSPIFFEID"]
# Prometheus Operator objects: scripts/check-crds.mjs validates them.
operator = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
core = [d for d in docs if d["kind"] != "ClusterSPIFFEID" and d not in operator]
pathlib.Path(sys.argv[2]).write_text(yaml.safe_dump_all(core))


def strip_k8s_extensions(schema):
    """OpenAPI v3 with x-kubernetes-* → plain JSON Schema."""
    if isinstance(schema, dict):
        return {k: strip_k8s_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [strip_k8s_extensions(v) for v in schema]
    return schema


crd = yaml.safe_load(CRD.read_text())
version = next(v for v in crd["spec"]["versions"] if v["storage"])
schema = strip_k8s_extensions(version["schema"]["openAPIV3Schema"])
for cr in custom:
    assert cr["apiVersion"] == f"{crd['spec']['group']}/{version['name']}", cr["apiVersion"]
    jsonschema.validate(cr, schema)

dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "backend")
pod = dep["spec"]["template"]["spec"]
c = next(c for c in pod["containers"] if c["name"] == "backend")
port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
assert port == 8000, f"container port {port} != 8000"
probes = {k: c[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe", "startupProbe")}
assert probes["readinessProbe"] == "/api/v1/health/ready", probes
assert probes["livenessProbe"] == probes["startupProbe"] == "/api/v1/health", probes
served = pathlib.Path("src/http/health.rs").read_text()
for path in set(probes.values()):
    assert f'path = "{path}"' in served, f"{path} is not a route of src/http/health.rs"
grace = pod["terminationGracePeriodSeconds"]
# SHUTDOWN_DELAY 5 + SHUTDOWN_DRAIN_TIMEOUT 20 + SHUTDOWN_TASKS_TIMEOUT 55
# (DB_DRAIN_TIMEOUT 30 + 2 x BAO_REQUEST_TIMEOUT 10 + 5): retiring the pool
# must finish before SIGKILL, or a role outlives the pod.
assert grace > 5 + 20 + 55, f"terminationGracePeriodSeconds {grace} shorter than the shutdown"
# Metrics on their own port, never behind the public Service.
assert any(p["name"] == "metrics" and p["containerPort"] == 9090 for p in c["ports"]), c["ports"]
for svc in (d for d in docs if d["kind"] == "Service" and d["metadata"]["namespace"] == "99-apps"):
    if svc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "metrics":
        # The monitoring component's metrics-only Service (check-monitoring.py).
        assert svc["spec"].get("clusterIP") == "None", "the metrics Service must be headless"
        continue
    exposed = {p.get("targetPort") for p in svc["spec"]["ports"]} | {p["port"] for p in svc["spec"]["ports"]}
    assert not exposed & {"metrics", 9090}, f"Service {svc['metadata']['name']} exposes metrics"

unpinned = []
for d in docs:
    spec = d.get("spec", {})
    tmpl = spec.get("template", {}).get("spec")
    for ctr in (tmpl or {}).get("initContainers", []) + (tmpl or {}).get("containers", []):
        name, _, tag = ctr["image"].partition(":")
        if name != "precinct" and (not tag or tag == "latest"):
            unpinned.append(f"{d['kind']}/{d['metadata']['name']}: {ctr['image']}")
assert not unpinned, f"unpinned images: {unpinned}"

secrets = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret" and d["metadata"].get("namespace") == "99-apps"]
assert not secrets, f"Secrets in the backend's namespace: {secrets}"

print(
    f"{len(core)} objects to validate, {len(custom)} ClusterSPIFFEID checked against {CRD}; "
    f"probes {sorted(set(probes.values()))} and port {port} match the app; grace {grace}s covers the drain; "
    f"images pinned"
)
