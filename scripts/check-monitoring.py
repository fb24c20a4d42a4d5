"""Checks the monitoring component, rendered over k8s/base.

usage: check-monitoring.py RENDERED.yaml RULES_OUT.yaml

- the ServiceMonitor scrapes the metrics-only Service, whose port reaches the
  backend container's `metrics` port; the public Service does not carry it;
- the NetworkPolicy lets only the monitoring namespace reach :9090, and the
  public rule still opens :8000 alone;
- every alert names a runbook section of docs/runbooks.md that exists, and
  every runbook section with an alert is used;
- every metric an alert reads is one precinct exports (named in src/);
- writes the rules as a plain Prometheus rules file for promtool.
"""

import pathlib
import re
import sys

import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

dep = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "backend")
pod_labels = dep["spec"]["template"]["metadata"]["labels"]
container = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "backend")
container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}

(monitor,) = by_kind["ServiceMonitor"]
selected = [
    s for s in by_kind["Service"]
    if all(s["metadata"].get("labels", {}).get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
]
assert [s["metadata"]["name"] for s in selected] == ["backend-metrics"], f"ServiceMonitor selects {selected}"
svc = selected[0]
assert svc["spec"].get("clusterIP") == "None", "the metrics Service is headless (scraped pod by pod)"
assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "metrics Service selects the backend pods"
svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
for endpoint in monitor["spec"]["endpoints"]:
    port = svc_ports[endpoint["port"]]
    assert container_ports.get(port["targetPort"]) == 9090, f"{port} does not reach the container's metrics port"
public = next(s for s in by_kind["Service"] if s["metadata"]["name"] == "backend")
assert all(p["port"] != 9090 and p.get("targetPort") != "metrics" for p in public["spec"]["ports"]), "public Service exposes metrics"

policy = next(p for p in by_kind["NetworkPolicy"] if p["metadata"]["name"] == "backend")
rules = policy["spec"]["ingress"]
scrape = [r for r in rules if any(p["port"] == 9090 for p in r.get("ports", []))]
assert len(scrape) == 1, f"one ingress rule for :9090, got {scrape}"
sources = scrape[0].get("from", [])
assert sources and all("namespaceSelector" in s for s in sources), "the scrape rule is limited to a namespace"
assert [p["port"] for p in scrape[0]["ports"]] == [9090], "the scrape rule opens :9090 only"
# Only 8000 is open to all; the internal API's rule names its clients.
others = [r for r in rules if r is not scrape[0]]
open_to_all = [r for r in others if not r.get("from")]
assert [[p["port"] for p in r["ports"]] for r in open_to_all] == [[8000]], open_to_all
assert all([p["port"] for p in r["ports"]] == [8443] for r in others if r.get("from")), others

(rule,) = by_kind["PrometheusRule"]
runbooks = pathlib.Path("docs/runbooks.md").read_text()


def slug(heading):
    """GitHub's heading anchors."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


anchors = {slug(h) for h in re.findall(r"^#{2,3} (.+)$", runbooks, re.M)}
# Each module names its own metrics (src/**/metrics.rs and the leaves').
exported = set()
for source in pathlib.Path("src").rglob("*.rs"):
    exported |= set(re.findall(r'"(precinct_[a-z_]+)"', source.read_text()))
alerts, used = [], set()
for group in rule["spec"]["groups"]:
    for r in group["rules"]:
        name = r["alert"]
        alerts.append(name)
        url = r["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md" and anchor in anchors, f"{name}: no runbook section #{anchor}"
        used.add(anchor)
        assert name in runbooks, f"{name} is not named in docs/runbooks.md"
        for metric in re.findall(r"\bprecinct_[a-z_]+", r["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert metric in exported or base in exported, f"{name} reads {metric}, which precinct does not export"
        assert r["labels"]["severity"] in {"info", "warning", "critical"}, name
named_in_docs = set(re.findall(r"\b(Precinct[A-Z][A-Za-z]+)\b", runbooks))
assert named_in_docs <= set(alerts), f"docs/runbooks.md names alerts that do not exist: {named_in_docs - set(alerts)}"
pathlib.Path(sys.argv[2]).write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
print(
    f"monitoring: ServiceMonitor → Service backend-metrics → container port 9090; scrape rule from "
    f"{len(sources)} namespace selector(s); {len(alerts)} alerts, each with its runbook section, over "
    f"{len(exported)} exported metric names"
)
