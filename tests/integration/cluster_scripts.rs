//! The kubectl-driven scripts for clusters without Tilt, run against a fake
//! `kubectl` that behaves like `spire-server entry show/create` behind
//! `kubectl exec`: the arguments they send are the specification.

use std::{path::Path, process::Command};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A `kubectl` that records every call and keeps registered SPIFFE IDs in a
/// file, answering `entry show -spiffeID X` as spire-server does.
const FAKE_KUBECTL: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_DIR/calls"
touch "$FAKE_DIR/entries"
id=""; prev=""
for a in "$@"; do [ "$prev" = "-spiffeID" ] && id="$a"; prev="$a"; done
case "$*" in
  *" entry show "*)
    if grep -qx "$id" "$FAKE_DIR/entries"; then
      echo "Found 1 entry"; echo "Entry ID         : 1234"
      # spire-server prints the entry's fields after its ID; with many
      # selectors or a slow pipe, a reader that stops early gets SIGPIPE.
      if [ -n "${FAKE_LONG_ENTRIES:-}" ]; then seq 1 200000 | sed 's/^/Selector         : k8s:label:n/'; fi
    else echo "Found 0 entries"; fi ;;
  *" entry create "*)
    echo "$id" >> "$FAKE_DIR/entries"; echo "Entry ID         : 1234" ;;
esac
"#;

fn run_create_spire_entry(fake: &Path) -> Vec<String> {
    run_create_spire_entry_with(fake, &[])
}

fn run_create_spire_entry_with(fake: &Path, env: &[(&str, &str)]) -> Vec<String> {
    let before = std::fs::read_to_string(fake.join("calls")).unwrap_or_default();
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/create-spire-entry.sh"))
        .envs(env.iter().copied())
        .env(
            "PATH",
            format!("{}:{}", fake.display(), std::env::var("PATH").unwrap()),
        )
        .env("FAKE_DIR", fake)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(fake.join("calls")).unwrap();
    after[before.len()..].lines().map(String::from).collect()
}

fn fake_kubectl() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kubectl = dir.path().join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn create_spire_entry_registers_a_node_alias_and_the_backend_under_it() {
    let fake = fake_kubectl();
    let calls = run_create_spire_entry(fake.path());
    let creates: Vec<&String> = calls
        .iter()
        .filter(|c| c.contains(" entry create "))
        .collect();
    assert_eq!(creates.len(), 2, "{calls:#?}");

    let node = creates[0];
    assert!(node.starts_with("exec -n spire spire-server-0 -c spire-server -- /opt/spire/bin/spire-server entry create -node"), "{node}");
    assert!(
        node.contains("-spiffeID spiffe://demo.local/ns/spire/sa/spire-agent"),
        "{node}"
    );
    for selector in [
        "k8s_psat:cluster:precinct-dev",
        "k8s_psat:agent_ns:spire",
        "k8s_psat:agent_sa:spire-agent",
    ] {
        assert!(node.contains(&format!("-selector {selector}")), "{node}");
    }

    let backend = creates[1];
    assert!(
        backend.contains("-parentID spiffe://demo.local/ns/spire/sa/spire-agent"),
        "{backend}"
    );
    assert!(
        backend.contains("-spiffeID spiffe://demo.local/ns/99-apps/sa/backend"),
        "{backend}"
    );
    assert!(
        backend.contains("-selector k8s:ns:99-apps -selector k8s:sa:backend"),
        "{backend}"
    );
    for call in &calls {
        assert!(
            call.ends_with("-socketPath /tmp/spire-server/private/api.sock"),
            "{call}"
        );
    }
}

#[test]
fn create_spire_entry_run_twice_creates_nothing_the_second_time() {
    let fake = fake_kubectl();
    run_create_spire_entry(fake.path());
    let second = run_create_spire_entry(fake.path());
    assert!(
        second.iter().all(|c| !c.contains(" entry create ")),
        "{second:#?}"
    );
    assert_eq!(second.len(), 2, "only the two lookups: {second:#?}");
}

#[test]
fn create_spire_entry_is_idempotent_when_spire_prints_long_entries() {
    // `kubectl exec … | grep -q` under pipefail: grep leaves at the first
    // match, the writer dies of SIGPIPE and the pipeline "fails".
    let fake = fake_kubectl();
    run_create_spire_entry(fake.path());
    let second = run_create_spire_entry_with(fake.path(), &[("FAKE_LONG_ENTRIES", "1")]);
    assert!(
        second.iter().all(|c| !c.contains(" entry create ")),
        "{second:#?}"
    );
}

/// A `kubectl` for `cluster-deploy.sh bootstrap`: renders with the real
/// kubectl, records every call, keeps what is applied, and answers for a
/// live Job that Tilt created with its own image tag.
const FAKE_KUBECTL_JOBS: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_DIR/calls"
case "$1" in
  kustomize) exec "$REAL_KUBECTL" "$@" ;;
  get) echo "precinct-bootstrap:tilt-0123456789abcdef" ;;
  apply) cat > "$FAKE_DIR/applied.yaml" ;;
esac
"#;

#[test]
fn cluster_deploy_bootstrap_really_re_runs_the_job_with_the_image_it_ran() {
    use std::os::unix::fs::PermissionsExt;
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v kubectl"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let real = real.trim();
    assert!(!real.is_empty(), "kubectl (kustomize) is needed");
    let fake = tempfile::tempdir().unwrap();
    let kubectl = fake.path().join("kubectl");
    std::fs::write(&kubectl, FAKE_KUBECTL_JOBS).unwrap();
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("bash")
        .arg(format!("{ROOT}/scripts/cluster-deploy.sh"))
        .arg("bootstrap")
        .env(
            "PATH",
            format!(
                "{}:{}",
                fake.path().display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("FAKE_DIR", fake.path())
        .env("REAL_KUBECTL", real)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(fake.path().join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    let at = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `kubectl {prefix}…` in {calls:#?}"))
    };
    // A completed Job is only re-run by deleting it first.
    assert!(at("delete job -n precinct-system precinct-bootstrap") < at("apply -f -"));
    assert!(
        at("apply -f -")
            < at("wait -n precinct-system --for=condition=Complete job/precinct-bootstrap")
    );
    assert!(
        calls[at("apply -f -")].contains("--selector app.kubernetes.io/name=precinct-bootstrap"),
        "only the bootstrap Job is re-applied: {calls:#?}"
    );
    let applied = std::fs::read_to_string(fake.path().join("applied.yaml")).unwrap();
    let job = applied
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Job") && doc.contains("  name: precinct-bootstrap\n"))
        .expect("the bootstrap Job is in what was applied");
    assert!(
        job.contains("image: precinct-bootstrap:tilt-0123456789abcdef"),
        "the live Job's image is kept: {job}"
    );
    assert!(!job.contains("image: precinct-bootstrap:dev"), "{job}");
    // The backend image is nowhere in the bootstrap: its edits cannot touch it.
    assert!(!job.contains("image: precinct:"), "{job}");
}
