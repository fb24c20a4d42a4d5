//! docs/configuration.md stays in sync with the code.

use precinct::Config;

#[test]
fn every_variable_the_code_reads_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md exists");
    // A minimal valid environment, so that parsing reaches every section
    // (with nothing set, production stops at the missing socket).
    let minimal = |name: &str| match name {
        "APP_ENV" => Some("development".to_string()),
        "SPIFFE_ENDPOINT_SOCKET" => Some("unix:///run/agent.sock".to_string()),
        _ => None,
    };
    assert!(
        Config::from_lookup(minimal).is_ok(),
        "the minimal environment parses"
    );
    let read = Config::variables_read(minimal);
    for last_sections in [
        "HTTP_ADDR",
        "AUTH_SIGNING_KEY_PREPUBLISH",
        "GITHUB_API_URL",
        "TASK_FAILURE_GRACE",
    ] {
        assert!(
            read.contains(last_sections),
            "the list comes from parsing every section: {read:?}"
        );
    }
    let missing: Vec<_> = read
        .iter()
        .filter(|name| !docs.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not documented in docs/configuration.md: {missing:?}"
    );
}
