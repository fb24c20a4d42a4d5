//! docs/configuration.md stays in sync with the code.

use precinct::Config;

#[test]
fn every_variable_the_code_reads_is_documented() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md exists");
    let read = Config::variables_read(|_| None);
    assert!(
        read.contains("HTTP_ADDR"),
        "the list comes from parsing: {read:?}"
    );
    let missing: Vec<_> = read
        .iter()
        .filter(|name| !docs.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "not documented in docs/configuration.md: {missing:?}"
    );
}
