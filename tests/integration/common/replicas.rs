//! Several real precinct processes behind a real HAProxy, on a test's
//! stack, through the project's own harness (`scripts/replicas.sh`).

use std::{process::Command, time::Duration};

use super::stack::{Stack, free_port};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Replicas {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// The balancer.
    pub lb: String,
    /// Each replica, directly.
    pub urls: Vec<String>,
}

impl Replicas {
    /// `n` replicas of the test build on `stack`, with `extra` settings,
    /// started at the same instant, and HAProxy in front; all ready.
    pub async fn start(stack: &Stack, n: usize, extra: &[(&str, &str)]) -> Replicas {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut env = stack.app_env();
        env.extend(
            [
                ("APP_ENV", "development"),
                ("LOG_FORMAT", "json"),
                ("RUST_LOG", "warn,precinct=info"),
                ("PRECINCT_BIN", env!("CARGO_BIN_EXE_precinct")),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env.push(("REPLICAS_DIR".into(), dir.path().display().to_string()));
        env.push(("LB_PORT".into(), free_port().to_string()));
        env.push((
            "REPLICAS_PORTS".into(),
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ));
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        // Built before the start, so that a failed start still stops what
        // it started (on drop).
        let mut replicas = Replicas {
            dir,
            env,
            lb: String::new(),
            urls: Vec::new(),
        };
        let out = run(&replicas.env, &["start", &n.to_string()]).await;
        for line in out.lines() {
            match line.split_once(' ') {
                Some(("lb", url)) => replicas.lb = url.to_string(),
                Some((name, url)) if name.starts_with('r') => replicas.urls.push(url.to_string()),
                _ => {}
            }
        }
        assert_eq!(replicas.urls.len(), n, "replicas.sh start printed: {out}");
        replicas
    }

    /// SIGTERM to replica `i` (1-based), wait for its exit, start it again,
    /// wait until it is ready (`scripts/replicas.sh restart`).
    pub async fn restart(&self, i: usize) {
        run(&self.env, &["restart", &i.to_string()]).await;
    }

    /// Every replica's log, for a failing assertion's message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.urls.len() {
            let log = std::fs::read_to_string(self.dir.path().join(format!("r{i}.log")))
                .unwrap_or_default();
            all.push_str(&format!("--- r{i}\n{log}"));
        }
        all
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(format!("{ROOT}/scripts/replicas.sh"))
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
    }
}

async fn run(env: &[(String, String)], args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("bash")
            .arg(format!("{ROOT}/scripts/replicas.sh"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output(),
    )
    .await
    .expect("replicas.sh answers within 2 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replicas.sh {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
