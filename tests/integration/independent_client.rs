//! The development Workload API against a client that shares no code with
//! precinct: py-spiffe (the SPIFFE project's Python library, gRPC C-core
//! underneath). C-core sends the socket path as the HTTP/2 `:authority`
//! over unix sockets, which an unpatched h2 server resets (PROTOCOL_ERROR).
//!
//! scripts/test.sh installs py-spiffe into .dev/venv and points
//! `PRECINCT_TEST_PYTHON` at that interpreter.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::common::{SPIFFE_ID, start_agent};

fn python() -> PathBuf {
    std::env::var("PRECINCT_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".dev/venv/bin/python"))
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/py_spiffe_check.py")
}

#[tokio::test]
async fn py_spiffe_fetches_validates_and_watches_a_rotation_over_the_unix_socket() {
    let python = python();
    assert!(
        python.exists(),
        "{} not found: run scripts/test.sh (it installs py-spiffe) or set PRECINCT_TEST_PYTHON",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    // A short X.509 lifetime: the agent pushes a fresh SVID every 2 s.
    let agent = start_agent(dir.path(), |c| c.x509_ttl = Duration::from_secs(4)).await;
    let endpoint = agent.endpoint();

    // The client blocks in C-core threads: keep it off the runtime's workers.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script())
            .arg(SPIFFE_ID)
            .arg("openbao")
            .env("SPIFFE_ENDPOINT_SOCKET", endpoint)
            // Nothing may hide the server's behaviour: no authority override.
            .env_remove("GRPC_DEFAULT_AUTHORITY")
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "py-spiffe checks failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let summary: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("SUMMARY "))
            .expect("a summary line"),
    )
    .unwrap();
    assert_eq!(summary["issuer"], agent.issuer());
    assert_eq!(summary["kid"], agent.current_jwt_kid().await);
    agent.shutdown().await;
}

/// Sends one HTTP/2 request with the given `:authority` over the agent's
/// socket, hand-encoded (an HTTP client would refuse to build it), and
/// returns the type of the first frame the server sends on stream 1.
async fn first_frame_on_stream_1(socket: &std::path::Path, authority: &str) -> u8 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    // HPACK: :method POST (static 3), :scheme http (6), :path literal,
    // :authority literal with indexed name (1); no Huffman, no indexing.
    let path = b"/SpiffeWorkloadAPI/FetchX509SVID";
    let mut block = vec![0x83, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]); // empty SETTINGS
    let len = block.len();
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    out.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        0x01,
        0x05,
        0,
        0,
        0,
        1,
    ]);
    out.extend_from_slice(&block);
    s.write_all(&out).await.unwrap();
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
            .await
            .expect("the server answers")
            .unwrap();
        let len = ((head[0] as usize) << 16) | ((head[1] as usize) << 8) | head[2] as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
        if stream == 1 {
            return head[3];
        }
    }
}

const HEADERS: u8 = 0x01;
const RST_STREAM: u8 = 0x03;

#[tokio::test]
async fn a_socket_path_authority_is_served_and_a_malformed_host_is_still_reset() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let socket = agent.socket().to_path_buf();
    // What C-core 1.85 sends for unix:///…/agent.sock, and what grpc-java sends.
    let encoded = socket
        .display()
        .to_string()
        .trim_start_matches('/')
        .replace('/', "%2F");
    assert_eq!(first_frame_on_stream_1(&socket, &encoded).await, HEADERS);
    assert_eq!(
        first_frame_on_stream_1(&socket, &socket.display().to_string()).await,
        HEADERS
    );
    assert_eq!(first_frame_on_stream_1(&socket, "localhost").await, HEADERS);
    // Anything else that is not a valid authority keeps h2's strictness.
    assert_eq!(
        first_frame_on_stream_1(&socket, "bad host").await,
        RST_STREAM
    );
    assert_eq!(
        first_frame_on_stream_1(&socket, "host%zz").await,
        RST_STREAM
    );
    agent.shutdown().await;
}
