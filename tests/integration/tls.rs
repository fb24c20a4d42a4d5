//! TLS to PostgreSQL, fail-closed, against a real server: a PostgreSQL started here with a certificate from a private CA the
//!   test creates: `verify-full` + `DB_SSLROOTCERT` connects; without the CA,
//!   with another CA, or with a name the certificate does not carry, it
//!   does not.
//! (OpenBao over TLS: tests/tls_openbao.rs, its own process because it sets
//! an environment variable.)

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use sqlx::{ConnectOptions, Connection};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` (DNS names or IP addresses).
fn server_cert(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().unwrap()),
        })
        .collect();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries in /usr/lib/postgresql (scripts/test.sh installs them)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(Path::parent)
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, run it as `postgres`.
fn as_postgres(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// A throwaway PostgreSQL with `ssl = on` and the given certificate.
struct TlsPostgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl TlsPostgres {
    fn start(cert_pem: &str, key_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let out = as_postgres(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (name, body) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, body).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&path)
                    .status()
                    .unwrap();
            }
        }
        let port = crate::common::stack::free_port();
        let child = as_postgres(&pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                "fsync=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Self { dir, port, child };
        // Accepting connections, not merely listening: a connection while
        // it is still starting is refused ("the database system is
        // starting up").
        for _ in 0..100 {
            let ready = Command::new(pg_bin("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return pg;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the TLS PostgreSQL did not start on {port}");
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // The postmaster (not runuser, which does not forward signals):
        // SIGINT is PostgreSQL's fast shutdown.
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string));
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
        }
        let _ = self.child.wait();
    }
}

/// Connects as precinct does (its own connect options) to `host`.
async fn connect(
    pg: &TlsPostgres,
    host: &str,
    sslmode: &str,
    ca: Option<&Path>,
) -> Result<bool, String> {
    let port = pg.port.to_string();
    let mut vars = vec![
        ("DB_HOST", host.to_string()),
        ("DB_PORT", port),
        ("DB_NAME", "postgres".to_string()),
        ("DB_SSLMODE", sslmode.to_string()),
        ("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent".to_string()),
    ];
    if let Some(ca) = ca {
        vars.push(("DB_SSLROOTCERT", ca.display().to_string()));
    }
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = crate::common::test_config(&pairs);
    let options =
        precinct::db::connect_options(&config.backends.as_ref().unwrap().db, "postgres", "unused")
            .options([("search_path", "public")]);
    let mut conn = options.connect().await.map_err(|e| e.to_string())?;
    let ssl: bool = sqlx::query_scalar("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    conn.close().await.ok();
    Ok(ssl)
}

#[tokio::test]
async fn postgres_with_a_private_ca_is_verified_by_db_sslrootcert() {
    let ours = ca("precinct test database CA");
    let theirs = ca("someone else's CA");
    let (cert, key) = server_cert(&ours, &["localhost", "127.0.0.1"]);
    let pg = TlsPostgres::start(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let (our_ca, other_ca) = (dir.path().join("ca.crt"), dir.path().join("other.crt"));
    std::fs::write(&our_ca, &ours.pem).unwrap();
    std::fs::write(&other_ca, &theirs.pem).unwrap();

    assert_eq!(
        connect(&pg, "127.0.0.1", "verify-full", Some(&our_ca)).await,
        Ok(true),
        "verify-full with DB_SSLROOTCERT connects over TLS"
    );
    assert_eq!(
        connect(&pg, "localhost", "verify-full", Some(&our_ca)).await,
        Ok(true)
    );
    let unknown = connect(&pg, "127.0.0.1", "verify-full", None).await;
    assert!(
        unknown.is_err(),
        "the web PKI does not know a private CA: {unknown:?}"
    );
    let other = connect(&pg, "127.0.0.1", "verify-full", Some(&other_ca)).await;
    assert!(other.is_err(), "another CA is refused: {other:?}");
    drop(pg);

    // A certificate for another name: verify-full refuses it, verify-ca
    // (chain only) accepts it.
    let (cert, key) = server_cert(&ours, &["db.example.internal"]);
    let pg = TlsPostgres::start(&cert, &key);
    let wrong_name = connect(&pg, "127.0.0.1", "verify-full", Some(&our_ca)).await;
    assert!(wrong_name.is_err(), "name mismatch refused: {wrong_name:?}");
    assert_eq!(
        connect(&pg, "127.0.0.1", "verify-ca", Some(&our_ca)).await,
        Ok(true)
    );
}
