"""Checks that the parts of k8s/dev agree with each other, since no cluster
runs them here: one wrong socket path, issuer or cluster name and `tilt up`
comes up with a backend that never gets an identity.

usage: check-dev-wiring.py RENDERED_K8S_DEV.yaml

Checked: trust domain, SPIFFE ID and ClusterSPIFFEID selection; the JWT
issuer against the OIDC discovery provider's Service and domains; the SPIRE
server socket shared with its sidecars; the k8s_psat cluster name and agent
service account; the agent socket through the CSI driver to the backend's
SPIFFE_ENDPOINT_SOCKET; every service URL against a Service and a container
port; every Secret and ConfigMap reference; the backend's NetworkPolicy
against the services it calls; the internal API: its port through the
Service, the demo client's SPIFFE ID on the allowlist, its socket, its
labels through the NetworkPolicy, and the backend's DNS SANs.
"""

import posixpath
import re
import sys
import urllib.parse

import hcl
import yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


def find(kind, name, namespace=None):
    for d in docs:
        m = d["metadata"]
        if d["kind"] == kind and m["name"] == name and (namespace is None or m.get("namespace") == namespace):
            return d
    raise SystemExit(f"wiring check: no {kind} {namespace}/{name} in k8s/dev")


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def container(workload, name):
    spec = pod_spec(workload)
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


def env(c, name, default=None):
    for e in c.get("env", []):
        if e["name"] == name:
            return e.get("value")
    return default


def mount_of(workload, c, path):
    """The volume mounted at the directory holding `path`."""
    for m in c.get("volumeMounts", []):
        if posixpath.dirname(path) == m["mountPath"].rstrip("/"):
            return next(v for v in pod_spec(workload)["volumes"] if v["name"] == m["name"])
    return None


def pods_selected(selector, namespace):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet") and d["metadata"].get("namespace") == namespace:
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if all(labels.get(k) == v for k, v in selector.items()):
                yield d


def check_service_url(url, what):
    """http://name.ns.svc[:port] → a Service whose port reaches a container."""
    u = urllib.parse.urlparse(url)
    host = u.hostname or ""
    m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?", host)
    if not m:
        errors.append(f"{what}: {url} is not a cluster service URL")
        return None
    port = u.port or {"http": 80, "https": 443, "postgresql": 5432}[u.scheme]
    svc = find("Service", m.group(1), m.group(2))
    sp = next((p for p in svc["spec"]["ports"] if p["port"] == port), None)
    check(sp is not None, f"{what}: Service {m.group(2)}/{m.group(1)} has no port {port}")
    if sp is None:
        return svc
    target = sp.get("targetPort", port)
    reached = [
        c
        for w in pods_selected(svc["spec"]["selector"], m.group(2))
        for c in pod_spec(w)["containers"]
        for p in c.get("ports", [])
        if target in (p.get("name"), p["containerPort"])
    ]
    check(reached, f"{what}: Service {m.group(1)} port {port} → {target} reaches no container port")
    return svc


# --- SPIRE configuration ------------------------------------------------------
server_cm = find("ConfigMap", "spire-server", "spire")["data"]
server = hcl.loads(server_cm["server.conf"])
agent = hcl.loads(find("ConfigMap", "spire-agent", "spire")["data"]["agent.conf"])
ctrl = yaml.safe_load(server_cm["controller-manager.yaml"])
oidc = hcl.loads(server_cm["oidc-discovery-provider.conf"])
td = server["server"]["trust_domain"]

backend = find("Deployment", "backend", "99-apps")
be = container(backend, "backend")
be_config = find("ConfigMap", "precinct-config", "99-apps")["data"]
job = find("Job", "precinct-bootstrap", "precinct-system")
bao_step = container(job, "openbao")

check(agent["agent"]["trust_domain"] == td, "agent trust_domain differs from the server's")
check(ctrl["trustDomain"] == td, "controller manager trustDomain differs from the server's")
check(env(be, "TRUST_DOMAIN") == td, "backend TRUST_DOMAIN differs from SPIRE's trust domain")

# The backend's SPIFFE ID, as the controller manager renders it.
sa = pod_spec(backend)["serviceAccountName"]
spiffe_id = f"spiffe://{td}/ns/99-apps/sa/{sa}"
check(env(bao_step, "SPIFFE_ID") == spiffe_id, f"bootstrap SPIFFE_ID is not {spiffe_id}")
cr = find("ClusterSPIFFEID", "precinct-backend")
rendered = (
    cr["spec"]["spiffeIDTemplate"]
    .replace("{{ .TrustDomain }}", td)
    .replace("{{ .PodMeta.Namespace }}", "99-apps")
    .replace("{{ .PodSpec.ServiceAccountName }}", sa)
)
check(rendered == spiffe_id, f"ClusterSPIFFEID renders {rendered}, not {spiffe_id}")
pod_labels = backend["spec"]["template"]["metadata"]["labels"]
check(
    all(pod_labels.get(k) == v for k, v in cr["spec"]["podSelector"]["matchLabels"].items()),
    "ClusterSPIFFEID podSelector does not select the backend pods",
)
check(
    cr["spec"]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "99-apps"},
    "ClusterSPIFFEID namespaceSelector does not select 99-apps",
)
check("99-apps" not in ctrl.get("ignoreNamespaces", []), "the controller manager ignores 99-apps")

# JWT-SVID issuer == what OpenBao trusts == what the discovery provider serves.
issuer = server["server"]["jwt_issuer"]
check(env(bao_step, "OIDC_DISCOVERY_URL") == issuer, "bootstrap OIDC_DISCOVERY_URL differs from the server's jwt_issuer")
check(urllib.parse.urlparse(issuer).hostname in oidc["domains"], f"{issuer} is not among the discovery provider's domains")
check(oidc.get("allow_insecure_scheme") == (issuer.startswith("http:")), "issuer scheme and allow_insecure_scheme disagree")
check(urllib.parse.urlparse(issuer).port is None, "the issuer must not carry a port: the provider derives it from Host")
check_service_url(issuer, "jwt_issuer")
sts = find("StatefulSet", "spire-server", "spire")
oidc_port = int(oidc["insecure_addr"].rsplit(":", 1)[1])
check(
    any(p["containerPort"] == oidc_port for p in container(sts, "oidc-discovery-provider")["ports"]),
    "the discovery provider's insecure_addr is not its container port",
)

# The server's private API socket, shared with both sidecars.
sock = server["server"]["socket_path"]
check(ctrl["spireServerSocketPath"] == sock, "controller manager dials another socket")
check(oidc["server_api"]["address"] == f"unix://{sock}", "discovery provider dials another socket")
volumes = {
    name: (mount_of(sts, container(sts, name), sock) or {}).get("name")
    for name in ("spire-server", "controller-manager", "oidc-discovery-provider")
}
check(len(set(volumes.values())) == 1 and None not in volumes.values(), f"socket directory not shared: {volumes}")

# Node attestation.
cluster = agent["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]["cluster"]
psat = server["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]["clusters"]
check(list(psat) == [cluster], f"server k8s_psat clusters {list(psat)} vs agent cluster {cluster}")
check(ctrl["clusterName"] == cluster, "controller manager clusterName differs from the k8s_psat cluster")
agent_ds = find("DaemonSet", "spire-agent", "spire")
check(
    f"spire:{pod_spec(agent_ds)['serviceAccountName']}" in psat.get(cluster, {}).get("service_account_allow_list", []),
    "the agent's service account is not allowed by k8s_psat",
)
ac = container(agent_ds, "spire-agent")
token_vol = mount_of(agent_ds, ac, agent["plugins"]["NodeAttestor"]["k8s_psat"]["plugin_data"]["token_path"])
sources = (token_vol or {}).get("projected", {}).get("sources", [])
check(
    any(s.get("serviceAccountToken", {}).get("audience") == "spire-server" for s in sources),
    "the agent's token is not a projected token for audience spire-server",
)
check(
    f"{agent['agent']['server_address']}" == "spire-server.spire.svc"
    and any(p["port"] == int(agent["agent"]["server_port"]) for p in find("Service", "spire-server", "spire")["spec"]["ports"]),
    "agent server_address/server_port do not reach the spire-server Service",
)
bundle_vol = mount_of(agent_ds, ac, agent["agent"]["trust_bundle_path"])
notifier = server["plugins"]["Notifier"]["k8sbundle"]["plugin_data"]
check(
    (bundle_vol or {}).get("configMap", {}).get("name") == notifier["config_map"] and notifier["namespace"] == "spire",
    "the agent's trust bundle is not the ConfigMap the server publishes",
)

# Agent socket → CSI driver → backend.
agent_sock = agent["agent"]["socket_path"]
host_dir = (mount_of(agent_ds, ac, agent_sock) or {}).get("hostPath", {}).get("path")
csi = find("DaemonSet", "spiffe-csi-driver", "spire")
cd = container(csi, "spiffe-csi-driver")
arg = dict(zip(cd["args"][::2], cd["args"][1:][::2]))
csi_vol = next(
    v for v in pod_spec(csi)["volumes"]
    if v["name"] == next(m["name"] for m in cd["volumeMounts"] if m["mountPath"] == arg["-workload-api-socket-dir"])
)
check(csi_vol.get("hostPath", {}).get("path") == host_dir, "the CSI driver serves another directory than the agent's socket")
driver = find("CSIDriver", "csi.spiffe.io")["metadata"]["name"]
check(arg["-plugin-name"] == driver, "CSI plugin name differs from the CSIDriver")
endpoint = be_config["SPIFFE_ENDPOINT_SOCKET"].removeprefix("unix://")
be_vol = mount_of(backend, be, endpoint) or {}
check(be_vol.get("csi", {}).get("driver") == driver, "SPIFFE_ENDPOINT_SOCKET is not on the CSI volume")
check(posixpath.basename(endpoint) == posixpath.basename(agent_sock), "the backend expects another socket name")

# --- OpenBao and PostgreSQL ---------------------------------------------------
bao_addr = env(bao_step, "BAO_ADDR")
check(be_config["BAO_ADDR"] == bao_addr, "backend and bootstrap use different OpenBao addresses")
bao_svc = check_service_url(bao_addr, "BAO_ADDR")
db_url = env(bao_step, "DB_CONNECTION_URL").replace("{{username}}", "u").replace("{{password}}", "p")
pg_svc = check_service_url(db_url, "DB_CONNECTION_URL")
check(be_config["DB_HOST"] == urllib.parse.urlparse(db_url).hostname, "backend DB_HOST differs from OpenBao's")
db_name = urllib.parse.urlparse(db_url).path.lstrip("/")
pg = find("StatefulSet", "postgres", "postgres")
check(env(container(pg, "postgres"), "POSTGRES_DB") == db_name == be_config.get("DB_NAME", "precinct"), "database names differ")
check(env(bao_step, "JWT_AUDIENCE") == be_config.get("JWT_SVID_AUDIENCE", "openbao"), "JWT audience differs")
db_step = container(job, "database")
check(urllib.parse.urlparse(env(db_step, "DATABASE_ADMIN_URL")).hostname == urllib.parse.urlparse(db_url).hostname, "bootstrap-db targets another server")

# The backend's NetworkPolicy lets it reach both.
policy = find("NetworkPolicy", "backend", "99-apps")
for svc, port in ((bao_svc, 8200), (pg_svc, 5432)):
    ns = svc["metadata"]["namespace"]
    check(
        any(
            any(t.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == ns for t in rule.get("to", []))
            and any(p["port"] == port for p in rule.get("ports", []))
            for rule in policy["spec"]["egress"]
        ),
        f"the backend's NetworkPolicy does not allow {ns}:{port}",
    )

# --- The internal API and its demo client ------------------------------------


def allowed(allowlist, spiffe_id):
    """INTERNAL_ALLOWED_SPIFFE_IDS semantics (src/config/internal.rs)."""
    for entry in (e.strip() for e in allowlist.split(",")):
        if entry.endswith("/") and spiffe_id.startswith(entry) and len(spiffe_id) > len(entry):
            return True
        if entry == spiffe_id:
            return True
    return False


internal_port = int(be_config["INTERNAL_ADDR"].rsplit(":", 1)[1])
check(
    any(p.get("name") == "internal" and p["containerPort"] == internal_port for p in be.get("ports", [])),
    f"INTERNAL_ADDR port {internal_port} is not the backend's container port `internal`",
)
client_job = find("Job", "precinct-internal-check", "99-apps")
cc = container(client_job, "internal-check")
internal_url = env(cc, "INTERNAL_URL")
check(internal_url.startswith("https://"), "INTERNAL_URL must be https (mutual TLS)")
check_service_url(internal_url, "INTERNAL_URL")
check_service_url(env(cc, "PUBLIC_URL"), "PUBLIC_URL")
check(env(cc, "SERVER_SPIFFE_ID") == spiffe_id, f"the client expects the server to be {env(cc, 'SERVER_SPIFFE_ID')}, not {spiffe_id}")
client_sa = pod_spec(client_job)["serviceAccountName"]
client_cr = find("ClusterSPIFFEID", "precinct-internal-client")
client_id = (
    client_cr["spec"]["spiffeIDTemplate"]
    .replace("{{ .TrustDomain }}", td)
    .replace("{{ .PodMeta.Namespace }}", "99-apps")
    .replace("{{ .PodSpec.ServiceAccountName }}", client_sa)
)
client_labels = client_job["spec"]["template"]["metadata"]["labels"]
check(
    all(client_labels.get(k) == v for k, v in client_cr["spec"]["podSelector"]["matchLabels"].items()),
    "the client's ClusterSPIFFEID does not select the Job's pods",
)
check(
    not all(client_labels.get(k) == v for k, v in cr["spec"]["podSelector"]["matchLabels"].items()),
    "the backend's ClusterSPIFFEID also selects the client's pods",
)
check(allowed(be_config["INTERNAL_ALLOWED_SPIFFE_IDS"], client_id), f"{client_id} is not on INTERNAL_ALLOWED_SPIFFE_IDS")
check(not allowed(be_config["INTERNAL_ALLOWED_SPIFFE_IDS"], spiffe_id), "the backend allows itself on the internal API")
client_endpoint = env(cc, "SPIFFE_ENDPOINT_SOCKET").removeprefix("unix://")
check(
    (mount_of(client_job, cc, client_endpoint) or {}).get("csi", {}).get("driver") == driver,
    "the client's SPIFFE_ENDPOINT_SOCKET is not on the CSI volume",
)
check(
    any(
        any(p["port"] == internal_port for p in rule.get("ports", []))
        and any(
            all(client_labels.get(k) == v for k, v in f.get("podSelector", {}).get("matchLabels", {}).items())
            and "namespaceSelector" in f
            for f in rule.get("from", [])
        )
        for rule in policy["spec"]["ingress"]
    ),
    f"the backend's NetworkPolicy does not admit the client's pods to {internal_port}",
)
check(
    not any(
        any(p["port"] == internal_port for p in rule.get("ports", [])) and not rule.get("from")
        for rule in policy["spec"]["ingress"]
    ),
    f"the backend's NetworkPolicy admits anyone to {internal_port}",
)
dns = [t.replace("{{ .PodMeta.Namespace }}", "99-apps") for t in cr["spec"].get("dnsNameTemplates", [])]
check(urllib.parse.urlparse(internal_url).hostname in dns, f"{internal_url}'s host is not a DNS SAN of the backend's SVID ({dns})")

# --- References -----------------------------------------------------------------
secrets = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Secret"}
configmaps = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "ConfigMap"}
refs = 0
for w in docs:
    if w["kind"] not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        continue
    ns = w["metadata"]["namespace"]
    spec = pod_spec(w)
    for c in spec.get("initContainers", []) + spec["containers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs += 1
                s = secrets.get((ns, ref["name"]))
                check(s is not None and ref["key"] in s.get("data", {}), f"{w['metadata']['name']}: secret {ns}/{ref['name']} key {ref['key']} missing")
        for f in c.get("envFrom", []):
            if "configMapRef" in f:
                refs += 1
                check((ns, f["configMapRef"]["name"]) in configmaps, f"{w['metadata']['name']}: ConfigMap {f['configMapRef']['name']} missing")
    for v in spec.get("volumes", []):
        if "configMap" in v and not v["configMap"].get("optional"):
            refs += 1
            check((ns, v["configMap"]["name"]) in configmaps, f"{w['metadata']['name']}: ConfigMap {v['configMap']['name']} missing")

if errors:
    print("k8s/dev wiring check failed:", *errors, sep="\n  ")
    sys.exit(1)
print(
    f"k8s/dev wiring: trust domain {td}, {spiffe_id}, issuer {issuer}, cluster {cluster}, "
    f"agent socket {agent_sock} → {driver} → {endpoint}; internal API :{internal_port} for {client_id}; "
    f"{refs} Secret/ConfigMap references resolve"
)
