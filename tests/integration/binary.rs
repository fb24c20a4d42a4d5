//! The real binary, as Kubernetes runs it: configuration errors and SIGTERM.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_precinct");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_config_error_exits_non_zero_with_one_line_naming_the_variable() {
    let out = Command::new(BIN)
        .env_clear()
        .env("HTTP_ADDR", "nowhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HTTP_ADDR"), "{stderr}");
}

#[test]
fn sigterm_flips_readiness_then_exits_zero() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .env_clear()
        .env("APP_ENV", "development")
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SHUTDOWN_DELAY", "2s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<u16> {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get("/api/v1/health") != Some(200) {
        assert!(Instant::now() < deadline, "binary never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get("/api/v1/health/ready"), Some(200));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get("/api/v1/health/ready"),
        Some(503),
        "readiness flips at once"
    );
    assert_eq!(
        get("/api/v1/health"),
        Some(200),
        "still serving during the delay"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}
