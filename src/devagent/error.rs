#[derive(Debug, thiserror::Error)]
pub enum DevAgentError {
    #[error("invalid dev-agent setting: {0}")]
    Config(String),
    #[error("dev-agent I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("dev-agent key material: {0}")]
    Crypto(String),
    #[error("dev-agent state file: {0}")]
    State(#[from] serde_json::Error),
}
