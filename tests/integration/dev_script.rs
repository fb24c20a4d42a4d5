//! scripts/dev.sh stops everything it started, however it is stopped: Ctrl-C
//! in a terminal (SIGINT to the whole foreground process group) or SIGTERM to
//! the script. It runs the real stack: PostgreSQL, OpenBao, the dev agent and
//! the backend.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::stack::{admin_url, cleanup_db, cleanup_db_blocking, free_port, role_template};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every process whose environment carries this run's DEV_DIR: dev.sh and
/// all it started (OpenBao and the agent run in sessions of their own, so
/// process groups cannot find them; the environment is inherited).
fn processes_of(dev_dir: &Path) -> Vec<(u32, String)> {
    let marker = format!("DEV_DIR={}", dev_dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // A zombie is already gone; only its exit status is left to reap.
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            if !stat.contains(") Z ") {
                found.push((pid, cmd.trim().to_string()));
            }
        }
    }
    found
}

struct DevRun {
    child: Child,
    dir: tempfile::TempDir,
    http: String,
    db_name: String,
}

impl DevRun {
    /// Runs dev.sh and waits until its backend is ready. Bootstraps of
    /// different databases collide on the shared role catalog ("tuple
    /// concurrently updated": advisory locks are per-database), so stacks
    /// start one at a time, as Stack::start does.
    async fn start_ready() -> DevRun {
        Self::start_ready_in(tempfile::tempdir().unwrap()).await
    }

    async fn start_ready_in(dir: tempfile::TempDir) -> DevRun {
        static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = STARTING.lock().await;
        let mut run = DevRun::spawn(dir);
        run.wait_ready().await;
        run
    }

    fn spawn(dir: tempfile::TempDir) -> DevRun {
        let http = format!("127.0.0.1:{}", free_port());
        let db_name = format!(
            "precinct_t_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
        let child = Command::new("bash")
            .arg(format!("{ROOT}/scripts/dev.sh"))
            .env("DEV_DIR", dir.path())
            .env("PRECINCT_BIN", env!("CARGO_BIN_EXE_precinct"))
            .env("BAO_PORT", free_port().to_string())
            .env("OIDC_PORT", free_port().to_string())
            .env("HTTP_ADDR", &http)
            .env("DB_NAME", &db_name)
            .env("DB_USERNAME_TEMPLATE", role_template(&db_name))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            // Its own process group, as a terminal's foreground job has.
            .process_group(0)
            .spawn()
            .unwrap();
        DevRun {
            child,
            dir,
            http,
            db_name,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let client = crate::common::http();
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = format!("http://{}/api/v1/health/ready", self.http);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("dev.sh exited early ({status}):\n{}", self.log());
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the backend never became ready:\n{}", self.log());
    }

    fn signal(&self, signal: &str, target: String) {
        let sent = Command::new("kill")
            .args([signal, "--", &target])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for dev.sh to exit, then for what it started to be gone.
    async fn assert_everything_stops(self) {
        self.assert_stops(true).await
    }

    async fn assert_stops(mut self, revoked: bool) {
        let started = processes_of(self.dir.path());
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "dev.sh did not exit:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = processes_of(self.dir.path());
        println!(
            "started {} processes, {} left after dev.sh exited",
            started.len(),
            left.len()
        );
        let roles = cleanup_db(&admin_url(), &self.db_name).await;
        for (pid, _) in &left {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        assert!(
            left.is_empty(),
            "still running after dev.sh exited: {left:#?}\n{}",
            self.log()
        );
        assert!(
            !revoked || roles.is_empty(),
            "the backend's credentials were not revoked on the way out: {roles:?}\n{}",
            self.log()
        );
    }
}

/// Whatever a failed assertion left: the processes, the database, the roles.
impl Drop for DevRun {
    fn drop(&mut self) {
        for (pid, _) in processes_of(self.dir.path()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        cleanup_db_blocking(admin_url(), self.db_name.clone());
    }
}

#[tokio::test]
async fn ctrl_c_stops_everything_dev_sh_started() {
    let run = DevRun::start_ready().await;
    let started = processes_of(run.dir.path());
    for name in ["bao", "dev-agent", "serve"] {
        assert!(
            started.iter().any(|(_, cmd)| cmd.contains(name)),
            "{name} among {started:#?}"
        );
    }
    // A terminal's Ctrl-C: SIGINT to every process of the foreground group.
    run.signal("-INT", format!("-{}", run.child.id()));
    run.assert_everything_stops().await;
}

#[tokio::test]
async fn sigterm_to_dev_sh_stops_everything_it_started() {
    let run = DevRun::start_ready().await;
    run.signal("-TERM", run.child.id().to_string());
    run.assert_everything_stops().await;
}

#[tokio::test]
async fn a_backend_that_is_already_gone_does_not_stop_the_cleanup() {
    // What Ctrl-C does when the backend exits first: the EXIT trap's
    // `kill $app` fails, and under `set -e` that used to end the trap early.
    let run = DevRun::start_ready().await;
    let backend = processes_of(run.dir.path())
        .into_iter()
        .find(|(_, cmd)| cmd.ends_with(" serve"))
        .expect("the backend process");
    run.signal("-KILL", backend.0.to_string());
    // Killed, it could not revoke its lease: the roles are not asserted here.
    run.assert_stops(false).await;
}

#[tokio::test]
async fn a_stale_openbao_pid_file_whose_pid_was_reused_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    // The pid in .dev/bao.pid now belongs to some other live process.
    let mut other = Command::new("sleep").arg("300").spawn().unwrap();
    std::fs::write(dir.path().join("bao.pid"), other.id().to_string()).unwrap();
    let run = DevRun::start_ready_in(dir).await;
    assert!(
        run.log().contains("ignoring stale"),
        "dev.sh says why it starts its own OpenBao:\n{}",
        run.log()
    );
    run.signal("-TERM", run.child.id().to_string());
    run.assert_everything_stops().await;
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other process is untouched"
    );
    other.kill().unwrap();
    let _ = other.wait();
}
