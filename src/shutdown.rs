//! What starts a shutdown: SIGTERM (Kubernetes), SIGINT (Ctrl-C), or a
//! programmatic trigger (tests, fatal background errors).

use tokio_util::sync::CancellationToken;

/// Resolves on the first SIGTERM or SIGINT, or when `trigger` is cancelled.
pub async fn requested(trigger: CancellationToken) -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = trigger.cancelled() => "shutdown requested",
    }
}

/// Resolves on the next SIGTERM or SIGINT only.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
