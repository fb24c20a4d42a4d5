//! TLS to OpenBao, fail-closed, against a real OpenBao dev server with TLS
//! (its own CA): `VAULT_SKIP_VERIFY=true` in the environment changes
//! nothing; only `BAO_CACERT` is trusted. It sets an environment variable,
//! which no other test may race: it runs in a process of its own (nextest).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

/// The OpenBao server, stopped even when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TLS OpenBao whose CA precinct was not given. vaultrs's own settings
/// builder would read `VAULT_SKIP_VERIFY` and accept any certificate;
/// precinct sets every setting itself, so the login is refused at the TLS
/// handshake. With `BAO_CACERT` it reaches OpenBao.
#[tokio::test]
async fn vault_skip_verify_in_the_environment_does_not_turn_off_tls_verification() {
    crate::common::own_process();
    // SAFETY: this process runs this one test, which reads the variable;
    // it is set before any thread of ours could read the environment.
    unsafe { std::env::set_var("VAULT_SKIP_VERIFY", "true") };
    precinct::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::stack::free_port();
    let _bao = KillOnDrop(
        Command::new(crate::common::stack::bao_bin())
            .args(["server", "-dev", "-dev-tls", "-dev-root-token-id=root"])
            .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = dir.path().join("vault-ca.pem");
    for _ in 0..100 {
        if ca.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let agent_dir = tempfile::tempdir().unwrap();
    let agent = crate::common::start_agent(agent_dir.path(), |_| {}).await;
    let identity =
        precinct::identity::Identity::connect(&crate::common::identity_config(&agent.endpoint()))
            .await
            .unwrap();
    let login = |cacert: Option<&Path>| {
        let mut vars = vec![
            ("BAO_ADDR", format!("https://127.0.0.1:{port}")),
            ("SPIFFE_ENDPOINT_SOCKET", agent.endpoint()),
        ];
        if let Some(c) = cacert {
            vars.push(("BAO_CACERT", c.display().to_string()));
        }
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        crate::common::test_config(&pairs).backends.unwrap().bao
    };
    let refused = precinct::bao::BaoClient::login(&login(None), &identity).await;
    let err = refused.err().expect("an unknown CA is refused").to_string();
    assert!(
        err.to_lowercase().contains("certificate"),
        "refused at the TLS layer, not by OpenBao: {err}"
    );
    // With its CA, the request reaches OpenBao (which refuses the login:
    // no JWT auth is configured on this bare server).
    let reached = precinct::bao::BaoClient::login(&login(Some(&ca)), &identity).await;
    let err = reached.err().expect("no JWT auth configured").to_string();
    assert!(
        !err.to_lowercase().contains("certificate"),
        "with BAO_CACERT the TLS handshake succeeds: {err}"
    );
    agent.shutdown().await;
}
