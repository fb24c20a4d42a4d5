//! Kubernetes Events on the backend's own Pod (`kubectl describe pod` shows
//! them): credential rotations and their failures, SVID rotations, identity
//! loss. Outside a cluster (no service-account token) this is off, silently.

use std::{path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

const TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// An Event is best effort: never hold up a rotation for the API server.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);

struct Inner {
    recorder: Recorder,
    pod: ObjectReference,
}

/// Cheap to clone; a no-op when disabled.
#[derive(Clone, Default)]
pub struct PodEvents {
    inner: Option<Arc<Inner>>,
}

impl PodEvents {
    pub fn disabled() -> Self {
        Self::default()
    }

    /// On when running in a cluster: the service-account token is mounted
    /// and `POD_NAME` (downward API) names the pod.
    pub async fn detect() -> Self {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() || !Path::new(TOKEN).exists() {
            return Self::disabled();
        }
        let Some(name) = std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()) else {
            tracing::warn!(
                "in a cluster but POD_NAME is not set (downward API): Kubernetes Events are off"
            );
            return Self::disabled();
        };
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .or_else(|| std::fs::read_to_string(NAMESPACE).ok())
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|| "default".into());
        match Client::try_default().await {
            Ok(client) => Self::new(client, &name, &namespace, std::env::var("POD_UID").ok()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a Kubernetes client: Events are off");
                Self::disabled()
            }
        }
    }

    /// Records on Pod `name` in `namespace` through `client`.
    pub fn new(client: Client, name: &str, namespace: &str, uid: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "precinct".into(),
            instance: Some(name.to_string()),
        };
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid,
            ..Default::default()
        };
        Self {
            inner: Some(Arc::new(Inner {
                recorder: Recorder::new(client, reporter),
                pod,
            })),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub async fn normal(&self, reason: &str, action: &str, note: String) {
        self.publish(EventType::Normal, reason, action, note).await;
    }

    pub async fn warning(&self, reason: &str, action: &str, note: String) {
        self.publish(EventType::Warning, reason, action, note).await;
    }

    async fn publish(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let Some(inner) = &self.inner else { return };
        let event = Event {
            type_,
            reason: reason.into(),
            // The API server caps notes at 1 KiB.
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, inner.recorder.publish(&event, &inner.pod))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, reason, "could not record a Kubernetes Event"),
            Err(_) => tracing::warn!(reason, "recording a Kubernetes Event timed out"),
        }
    }
}
