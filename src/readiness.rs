//! The readiness registry: each dependency registers a named check and its
//! background task keeps the state current. A probe only reads that state, so
//! answering it never touches the network.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::Serialize;
use utoipa::ToSchema;

pub const READY: &str = "precinct_dependency_ready";
pub const DEGRADED: &str = "precinct_dependency_degraded";

pub const FAMILY: crate::metrics::Family = crate::metrics::Family {
    metrics: &[
        crate::metrics::Metric {
            name: READY,
            kind: crate::metrics::Kind::Gauge,
            help: "1 when the dependency check counts as ready",
        },
        crate::metrics::Metric {
            name: DEGRADED,
            kind: crate::metrics::Kind::Gauge,
            help: "1 when the dependency check is degraded",
        },
    ],
    buckets: &[],
    zero: || {},
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ready,
    /// Serving, with something the operator should fix.
    Degraded(String),
    NotReady(String),
}

#[derive(Default)]
struct Inner {
    checks: RwLock<BTreeMap<&'static str, State>>,
    draining: AtomicBool,
}

/// Shared registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

/// The handle a dependency uses to report its state.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    inner: Arc<Inner>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name`, not ready until the owner says otherwise.
    pub fn register(&self, name: &'static str, initial_reason: impl Into<String>) -> Check {
        self.inner
            .checks
            .write()
            .expect("readiness lock")
            .insert(name, State::NotReady(initial_reason.into()));
        Check {
            name,
            inner: self.inner.clone(),
        }
    }

    /// From now on the service reports not ready, whatever its dependencies say.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Sets the readiness gauges (a scrape-time collector).
    pub fn export(&self) {
        for (name, check) in self.report().checks {
            metrics::gauge!(READY, "check" => name.clone())
                .set(f64::from(u8::from(check.status != CheckStatus::NotReady)));
            metrics::gauge!(DEGRADED, "check" => name)
                .set(f64::from(u8::from(check.status == CheckStatus::Degraded)));
        }
    }

    pub fn report(&self) -> ReadinessReport {
        let checks: BTreeMap<String, CheckReport> = self
            .inner
            .checks
            .read()
            .expect("readiness lock")
            .iter()
            .map(|(name, state)| {
                let report = match state {
                    State::Ready => CheckReport {
                        status: CheckStatus::Ready,
                        reason: None,
                    },
                    State::Degraded(reason) => CheckReport {
                        status: CheckStatus::Degraded,
                        reason: Some(reason.clone()),
                    },
                    State::NotReady(reason) => CheckReport {
                        status: CheckStatus::NotReady,
                        reason: Some(reason.clone()),
                    },
                };
                (name.to_string(), report)
            })
            .collect();
        let draining = self.is_draining();
        let all_ready = checks.values().all(|c| c.status != CheckStatus::NotReady);
        ReadinessReport {
            status: if all_ready && !draining {
                CheckStatus::Ready
            } else {
                CheckStatus::NotReady
            },
            reason: draining.then(|| "shutting down".to_string()),
            checks,
        }
    }
}

impl ReadinessReport {
    /// What an unauthenticated caller may see: each dependency's status,
    /// not the reasons (role names, OpenBao messages, socket paths). The
    /// reasons are logged on every transition.
    pub fn public(mut self) -> Self {
        for check in self.checks.values_mut() {
            check.reason = None;
        }
        self
    }
}

impl Check {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn set_ready(&self) {
        self.set(State::Ready);
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set(State::NotReady(reason.into()));
    }

    /// Ready (the instance takes traffic), with a reason to report.
    pub fn set_degraded(&self, reason: impl Into<String>) {
        self.set(State::Degraded(reason.into()));
    }

    /// Ready or degraded.
    pub fn is_ready(&self) -> bool {
        !matches!(
            self.inner
                .checks
                .read()
                .expect("readiness lock")
                .get(self.name),
            Some(State::NotReady(_)) | None
        )
    }

    fn set(&self, state: State) {
        let mut checks = self.inner.checks.write().expect("readiness lock");
        let previous = checks.insert(self.name, state.clone());
        drop(checks);
        // Log transitions only: the state is re-asserted on every health tick.
        if previous.as_ref() != Some(&state) {
            match &state {
                State::Ready => tracing::info!(check = self.name, "dependency ready"),
                State::Degraded(reason) => {
                    tracing::warn!(check = self.name, %reason, "dependency degraded")
                }
                State::NotReady(reason) => {
                    tracing::warn!(check = self.name, %reason, "dependency not ready")
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ready,
    /// Ready, with a reason (counts as ready).
    Degraded,
    NotReady,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckReport {
    pub status: CheckStatus,
    /// Why the dependency is not ready or degraded (kept out of the HTTP
    /// answer, logged on each transition).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "status": "not_ready",
    "checks": {
        "identity": {"status": "ready"},
        "openbao": {"status": "not_ready"},
        "database": {"status": "ready"}
    }
}))]
pub struct ReadinessReport {
    pub status: CheckStatus,
    /// Set while the service is shutting down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub checks: BTreeMap<String, CheckReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_is_ready() {
        let r = Readiness::new();
        assert_eq!(r.report().status, CheckStatus::Ready, "no checks: ready");
        let a = r.register("identity", "starting");
        let b = r.register("database", "starting");
        assert_eq!(r.report().status, CheckStatus::NotReady);
        a.set_ready();
        assert_eq!(r.report().status, CheckStatus::NotReady);
        b.set_ready();
        assert_eq!(r.report().status, CheckStatus::Ready);
        b.set_not_ready("lease expires in 10s");
        let report = r.report();
        assert_eq!(report.status, CheckStatus::NotReady);
        assert_eq!(
            report.checks["database"].reason.as_deref(),
            Some("lease expires in 10s")
        );
    }

    #[test]
    fn degraded_counts_as_ready_and_keeps_its_reason() {
        let r = Readiness::new();
        let db = r.register("database", "starting");
        db.set_degraded("lease shorter than the drain");
        assert!(db.is_ready());
        let report = r.report();
        assert_eq!(report.status, CheckStatus::Ready);
        assert_eq!(report.checks["database"].status, CheckStatus::Degraded);
        assert_eq!(
            report.checks["database"].reason.as_deref(),
            Some("lease shorter than the drain")
        );
    }

    #[test]
    fn draining_overrides_dependencies() {
        let r = Readiness::new();
        r.register("identity", "starting").set_ready();
        r.begin_drain();
        let report = r.report();
        assert_eq!(report.status, CheckStatus::NotReady);
        assert_eq!(report.reason.as_deref(), Some("shutting down"));
    }
}
