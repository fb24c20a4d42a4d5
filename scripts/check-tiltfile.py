"""Evaluates the Tiltfile with stubbed Tilt builtins (starlark-pyo3) against
the rendered k8s/dev objects, and fails on anything `tilt up` would trip on:
a path that does not exist, an object selector that matches no object or
several or names an object Tilt has already grouped (Services join the
workload they select), an object left uncategorized, a dependency on an unknown resource
or a cycle, a built image no container uses, a backend that is not
port-forwarded on 8000, a Job whose image is built from the backend's source
(every backend edit would recreate and re-run it), and no manual action that
really re-runs the bootstrap Job.

usage: check-tiltfile.py TILTFILE RENDERED_K8S_DEV_YAML
"""

import pathlib
import sys

import starlark as sl
import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet", "Pod", "CronJob"}

tiltfile = pathlib.Path(sys.argv[1])
root = tiltfile.parent
objects = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
errors = []
builds, yamls, resources = [], [], {}
build_inputs = {}
local_resources = {}
TRIGGER_MODE_AUTO, TRIGGER_MODE_MANUAL = "auto", "manual"


def need_path(what, path):
    if not (root / path).exists():
        errors.append(f"{what}: {path} does not exist")


def docker_build(ref, context=".", dockerfile="Dockerfile", only=(), **_):
    need_path(f"docker_build({ref!r}) context", context)
    need_path(f"docker_build({ref!r}) dockerfile", dockerfile)
    for p in only:
        need_path(f"docker_build({ref!r}) only", pathlib.Path(context) / p)
    # `only` narrows the build context: everything the Dockerfile copies must
    # still be in it, or the build fails on the first `tilt up`.
    if only and (root / dockerfile).exists():
        for line in (root / dockerfile).read_text().splitlines():
            words = line.split()
            if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
                for src in words[1:-1]:
                    if not any(src == o or src.startswith(o.rstrip("/") + "/") for o in only):
                        errors.append(f"docker_build({ref!r}): {dockerfile} copies {src}, outside `only`")
    builds.append(ref)
    build_inputs[ref] = list(only) or ["."]


def kustomize(path, **_):
    need_path("kustomize", pathlib.Path(path) / "kustomization.yaml")
    return {"kustomize": path}


def k8s_yaml(blob, **_):
    yamls.append(blob)


def k8s_resource(workload="", new_name="", objects=(), resource_deps=(), port_forwards=(), links=(), labels=(), **_):
    name = new_name or workload
    if name in resources:
        errors.append(f"k8s_resource {name!r} configured twice")
    resources[name] = {
        "workload": workload,
        "objects": list(objects),
        "deps": list(resource_deps),
        "port_forwards": [str(p) for p in port_forwards],
    }


def local_resource(name, cmd="", trigger_mode=TRIGGER_MODE_AUTO, auto_init=True, resource_deps=(), **_):
    if name in resources or name in local_resources:
        errors.append(f"resource {name!r} configured twice")
    words = cmd.split()
    if words and "/" in words[0]:
        need_path(f"local_resource({name!r}) cmd", words[0])
    local_resources[name] = {"cmd": cmd, "trigger": trigger_mode, "auto_init": auto_init, "deps": list(resource_deps)}


def link(url, name=""):
    return {"url": url, "name": name}


def noop(*_, **__):
    return None


module = sl.Module()
for name, fn in {
    "docker_build": docker_build,
    "kustomize": kustomize,
    "k8s_yaml": k8s_yaml,
    "k8s_resource": k8s_resource,
    "local_resource": local_resource,
    "link": link,
    "version_settings": noop,
    "update_settings": noop,
}.items():
    module.add_callable(name, fn)
module["TRIGGER_MODE_AUTO"] = TRIGGER_MODE_AUTO
module["TRIGGER_MODE_MANUAL"] = TRIGGER_MODE_MANUAL
sl.eval(module, sl.parse(str(tiltfile), tiltfile.read_text()), sl.Globals.standard())

if yamls != [{"kustomize": "k8s/dev"}]:
    errors.append(f"the Tiltfile must apply exactly kustomize('k8s/dev'), applies {yamls}")


def ident(o):
    return (o["metadata"]["name"].lower(), o["kind"].lower(), o["metadata"].get("namespace", "").lower())


workloads = {o["metadata"]["name"]: o for o in objects if o["kind"] in WORKLOAD_KINDS}
assigned = {}
# As Tilt does: a Service whose selector matches a workload's pod labels (same
# namespace) joins that workload's resource before `objects` is applied, and
# naming it in `objects` again is an error ("not found in remaining YAML").
for wname, w in workloads.items():
    pod_labels = (w["spec"].get("template") or w["spec"].get("jobTemplate", {}).get("spec", {}).get("template", {})).get("metadata", {}).get("labels", {})
    for o in objects:
        sel = o.get("spec", {}).get("selector")
        if (
            o["kind"] == "Service"
            and ident(o) not in assigned
            and o["metadata"].get("namespace") == w["metadata"].get("namespace")
            and all(pod_labels.get(k) == v for k, v in (sel or {}).items())
        ):
            assigned[ident(o)] = wname
for rname, r in resources.items():
    if r["workload"] and r["workload"] not in workloads:
        errors.append(f"k8s_resource {rname!r}: no workload of that name in k8s/dev")
    for sel in r["objects"]:
        parts = sel.lower().split(":")
        matches = [o for o in objects if all(p == v for p, v in zip(parts, ident(o)))]
        if len(matches) != 1:
            errors.append(f"k8s_resource {rname!r}: object {sel!r} matches {len(matches)} objects")
            continue
        key = ident(matches[0])
        if key in assigned:
            errors.append(f"{sel!r} is already in resource {assigned[key]!r}; Tilt refuses it in {rname!r}")
        assigned[key] = rname

all_resources = set(resources) | set(workloads) | set(local_resources)
for o in objects:
    if o["kind"] not in WORKLOAD_KINDS and ident(o) not in assigned:
        errors.append(f"{o['kind']} {o['metadata']['name']} would be uncategorized (no ordering): assign it")

for rname, r in list(resources.items()) + list(local_resources.items()):
    for dep in r["deps"]:
        if dep not in all_resources:
            errors.append(f"k8s_resource {rname!r} depends on unknown resource {dep!r}")


def visit(name, path):
    if name in path:
        errors.append("resource_deps cycle: " + " -> ".join(path + [name]))
        return
    for dep in {**resources, **local_resources}.get(name, {}).get("deps", []):
        visit(dep, path + [name])


for rname in list(resources) + list(local_resources):
    visit(rname, [])

# What Tilt builds must be some container's image, or Tilt builds it for
# nothing and the manifests pull a tag that exists nowhere. (Pinning of the
# other images is check-manifests.py's, on the same rendered objects.)
used_repos = set()
for o in objects:
    spec = o.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {}))
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        used_repos.add(c["image"].rsplit(":", 1)[0] if ":" in c["image"].rsplit("/", 1)[-1] else c["image"])
for ref in builds:
    if ref not in used_repos:
        errors.append(f"docker_build({ref!r}) is not the image of any container in k8s/dev")

# A Job's pod template is immutable: when an image it uses is rebuilt, Tilt
# deletes and re-creates the Job, which runs again. A Job must therefore not
# use an image built from the backend's source, unless running again after
# each backend edit is its purpose (a smoke check, annotated so).
def image_repo(image):
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


for o in objects:
    if o["kind"] != "Job":
        continue
    if o["metadata"].get("annotations", {}).get("precinct.dev/rerun-on-backend-edit") == "true":
        continue
    pod = o["spec"]["template"]["spec"]
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        inputs = build_inputs.get(image_repo(c["image"]))
        if inputs is not None and any(i in (".", "src") or i.startswith("src/") for i in inputs):
            errors.append(
                f"Job {o['metadata']['name']} uses image {image_repo(c['image'])!r}, built from src/: every backend edit would re-run it"
            )

# After an OpenBao dev-mode restart the bootstrap must run again, and
# re-applying a completed, unchanged Job does nothing: a manual action must
# delete and re-create it.
rerun = [
    (n, r) for n, r in local_resources.items()
    if r["trigger"] == TRIGGER_MODE_MANUAL and not r["auto_init"] and "cluster-deploy.sh bootstrap" in r["cmd"]
]
if not rerun:
    errors.append("no manual local_resource runs `scripts/cluster-deploy.sh bootstrap` (re-running the bootstrap Job)")
else:
    deploy = (root / "scripts/cluster-deploy.sh").read_text()
    body = deploy[deploy.find("rerun_bootstrap() {"):]
    body = body[: body.find("\n}\n")]
    if "kubectl delete job" not in body or "kubectl apply" not in body:
        errors.append("cluster-deploy.sh's rerun_bootstrap must delete the Job, then apply it")

backend = resources.get("backend")
if not backend:
    errors.append("no k8s_resource for the backend")
elif "8000:8000" not in backend["port_forwards"] and "8000" not in backend["port_forwards"]:
    errors.append(f"backend port_forwards {backend['port_forwards']}: /docs must be at localhost:8000")
elif not any("cycle" in e for e in errors):
    def upstream(name):
        deps = set(resources.get(name, {}).get("deps", []))
        return deps.union(*(upstream(d) for d in deps))

    # infra → bootstrap → backend: the backend starts only once its
    # identity, its OpenBao configuration and its database exist.
    for must_precede in ("precinct-bootstrap", "spire-agent", "spiffe-csi-driver", "postgres", "openbao"):
        if must_precede not in upstream("backend"):
            errors.append(f"backend does not wait for {must_precede}")

if errors:
    print("Tiltfile check failed:", *errors, sep="\n  ")
    sys.exit(1)
print(
    f"Tiltfile: {len(resources)} resources (+{len(local_resources)} local), {len(assigned)} objects assigned, "
    f"{len(workloads)} workloads, builds {builds}, backend on localhost:8000, "
    f"no Job built from src/ but annotated smoke checks, bootstrap re-run by {rerun[0][0]!r}"
)
