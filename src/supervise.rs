//! Every background task is owned here. A task that panics, or ends while
//! the application is not stopping, marks readiness `tasks` not ready with
//! its name and cause, records a `TaskFailed` Event and, after
//! `TASK_FAILURE_GRACE`, stops the process with a non-zero exit: a half-alive
//! instance (serving, but no longer rotating its credentials) is worse than
//! a restart, and Kubernetes restarts it.

use std::{future::Future, sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{events::PodEvents, readiness::Check};

/// `precinct_task_failures_total{task}`: tasks that panicked or ended.
pub const TASK_FAILURES: &str = "precinct_task_failures_total";

pub const FAMILY: crate::metrics::Family = crate::metrics::Family {
    metrics: &[crate::metrics::Metric {
        name: TASK_FAILURES,
        kind: crate::metrics::Kind::Counter,
        help: "Background tasks that panicked or ended",
    }],
    buckets: &[],
    // Each task's series starts at 0 when the task is spawned.
    zero: || {},
};

/// The first fatal error, reported by the application when it exits.
pub type Fatal = Arc<std::sync::Mutex<Option<String>>>;

/// Whether a task may end on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Runs until cancelled: ending earlier is a failure.
    UntilCancelled,
    /// Does its work and ends (startup steps); only a panic is a failure.
    Finite,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    tasks: TaskTracker,
    cancel: CancellationToken,
    check: Check,
    events: PodEvents,
    fatal: Fatal,
    shutdown: CancellationToken,
    grace: Duration,
}

impl Supervisor {
    /// `cancel` stops the tasks; `shutdown` stops the application (after a
    /// failure, once `grace` has passed).
    pub fn new(
        tasks: TaskTracker,
        cancel: CancellationToken,
        check: Check,
        events: PodEvents,
        fatal: Fatal,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Self {
        check.set_ready();
        Self {
            tasks,
            cancel,
            check,
            events,
            fatal,
            shutdown,
            grace,
        }
    }

    /// A supervisor with its own tracker and tokens.
    pub fn start(check: Check, events: PodEvents, grace: Duration) -> Self {
        Self::new(
            TaskTracker::new(),
            CancellationToken::new(),
            check,
            events,
            Fatal::default(),
            CancellationToken::new(),
            grace,
        )
    }

    /// The token background tasks stop on.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancelled when the application must stop (a failed task, a failed
    /// start-up step, or a test asking).
    pub fn shutdown_trigger(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Stops the application now with `reason` (a start-up step that gave up).
    pub fn fail_now(&self, reason: String) {
        self.fatal.lock().expect("fatal lock").get_or_insert(reason);
        self.shutdown.cancel();
    }

    /// The first fatal error, if any (once).
    pub fn take_fatal(&self) -> Option<String> {
        self.fatal.lock().expect("fatal lock").take()
    }

    /// Cancels every task and waits for them, up to `bound`; `false` when
    /// some were still running at the bound.
    pub async fn stop(&self, bound: Duration) -> bool {
        self.cancel.cancel();
        self.tasks.close();
        tokio::time::timeout(bound, self.tasks.wait()).await.is_ok()
    }

    /// Runs `task` under watch.
    pub fn spawn<F>(&self, name: &'static str, lifetime: Lifetime, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Exported at 0 from the start, so that a first failure shows as an
        // increase.
        metrics::counter!(TASK_FAILURES, "task" => name).increment(0);
        let this = self.clone();
        let handle = tokio::spawn(task);
        self.tasks.spawn(async move {
            let cause = match handle.await {
                Ok(()) if lifetime == Lifetime::Finite || this.cancel.is_cancelled() => return,
                Ok(()) => "ended unexpectedly".to_string(),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
                Err(_) => return, // aborted: the runtime is going away
            };
            this.failed(name, cause).await;
        });
    }

    async fn failed(&self, name: &'static str, cause: String) {
        let reason = format!("background task {name} {cause}");
        tracing::error!(event = "task_failed", task = name, %cause, grace = ?self.grace, "background task failed; exiting after the grace period");
        self.check.set_not_ready(reason.clone());
        metrics::counter!(TASK_FAILURES, "task" => name).increment(1);
        self.events
            .warning(
                "TaskFailed",
                "Supervise",
                format!("{reason}; exiting in {}s", self.grace.as_secs()),
            )
            .await;
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep(self.grace) => {}
        }
        self.fatal.lock().expect("fatal lock").get_or_insert(reason);
        self.shutdown.cancel();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::Readiness;

    fn supervisor(grace: Duration) -> (Supervisor, Readiness, Fatal, CancellationToken) {
        let readiness = Readiness::new();
        let fatal = Fatal::default();
        let shutdown = CancellationToken::new();
        let s = Supervisor::new(
            TaskTracker::new(),
            CancellationToken::new(),
            readiness.register("tasks", "starting"),
            PodEvents::disabled(),
            fatal.clone(),
            shutdown.clone(),
            grace,
        );
        (s, readiness, fatal, shutdown)
    }

    #[tokio::test]
    async fn a_panic_marks_not_ready_then_stops_the_application() {
        let (s, readiness, fatal, shutdown) = supervisor(Duration::from_millis(200));
        s.spawn("rotation", Lifetime::UntilCancelled, async {
            panic!("boom");
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = readiness.report();
        let reason = report.checks["tasks"].reason.clone().unwrap_or_default();
        assert_eq!(reason, "background task rotation panicked: boom");
        assert!(!shutdown.is_cancelled(), "stopped before the grace period");
        tokio::time::timeout(Duration::from_secs(2), shutdown.cancelled())
            .await
            .expect("the application is stopped after the grace period");
        assert_eq!(
            fatal.lock().unwrap().as_deref(),
            Some("background task rotation panicked: boom")
        );
    }

    #[tokio::test]
    async fn a_task_that_must_run_but_returns_is_a_failure() {
        let (s, readiness, _, _) = supervisor(Duration::from_secs(60));
        s.spawn("health", Lifetime::UntilCancelled, async {});
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            readiness.report().checks["tasks"].reason.as_deref(),
            Some("background task health ended unexpectedly")
        );
    }

    #[tokio::test]
    async fn finite_tasks_and_cancelled_tasks_end_quietly() {
        let (s, readiness, fatal, shutdown) = supervisor(Duration::from_millis(10));
        s.spawn("bring-up", Lifetime::Finite, async {});
        let cancel = s.cancel().clone();
        s.spawn("watch", Lifetime::UntilCancelled, async move {
            cancel.cancelled().await;
        });
        s.cancel().cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(readiness.report().checks["tasks"].reason.is_none());
        assert!(fatal.lock().unwrap().is_none());
        assert!(!shutdown.is_cancelled());
    }
}
