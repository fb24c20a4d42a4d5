//! Kubernetes Events, recorded against a local fake API server that keeps
//! the Event bodies it receives.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::{
    SPIFFE_ID, eventually, identity_config,
    stack::{Lifetimes, Stack, env_with},
    start_agent,
};
use axum::{Json, Router, extract::State, routing::post};
use precinct::{
    events::PodEvents,
    identity::Identity,
    readiness::Readiness,
    supervise::{Lifetime, Supervisor},
};
use serde_json::Value;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// The events.k8s.io/v1 create and patch endpoints, answering like the API
/// server (the object back) and recording (namespace, body).
async fn fake_api_server() -> (kube::Client, Seen) {
    let seen: Seen = Arc::default();
    async fn create(
        State(seen): State<Seen>,
        axum::extract::Path(ns): axum::extract::Path<String>,
        Json(body): Json<Value>,
    ) -> (axum::http::StatusCode, Json<Value>) {
        seen.lock().unwrap().push((ns, body.clone()));
        (axum::http::StatusCode::CREATED, Json(body))
    }
    async fn patch(
        State(seen): State<Seen>,
        axum::extract::Path((ns, _name)): axum::extract::Path<(String, String)>,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        seen.lock().unwrap().push((ns, body.clone()));
        Json(body)
    }
    let app = Router::new()
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events",
            post(create),
        )
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
            axum::routing::patch(patch),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    precinct::tls::install_crypto_provider();
    let config = kube::Config::new(url.parse().unwrap());
    (kube::Client::try_from(config).unwrap(), seen)
}

fn reasons(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, b)| b["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn an_event_names_the_pod_reason_type_and_reporter() {
    let (client, seen) = fake_api_server().await;
    let events = PodEvents::new(
        client,
        "backend-7d9f",
        "99-apps",
        Some("1f0e2d3c-uid".into()),
    );
    events
        .normal(
            "CredentialsRotated",
            "RotateCredentials",
            "generation 2: database role v-x, lease 5400s".into(),
        )
        .await;
    events
        .warning(
            "CredentialsRotationFailed",
            "RotateCredentials",
            "OpenBao unreachable".into(),
        )
        .await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (ns, body) = &seen[0];
    assert_eq!(ns, "99-apps");
    assert_eq!(body["apiVersion"], "events.k8s.io/v1");
    assert_eq!(body["kind"], "Event");
    assert_eq!(body["regarding"]["kind"], "Pod");
    assert_eq!(body["regarding"]["name"], "backend-7d9f");
    assert_eq!(body["regarding"]["namespace"], "99-apps");
    assert_eq!(body["regarding"]["uid"], "1f0e2d3c-uid");
    assert_eq!(body["type"], "Normal");
    assert_eq!(body["reason"], "CredentialsRotated");
    assert_eq!(body["action"], "RotateCredentials");
    assert_eq!(body["note"], "generation 2: database role v-x, lease 5400s");
    assert_eq!(body["reportingController"], "precinct");
    assert_eq!(body["reportingInstance"], "backend-7d9f");
    assert_eq!(seen[1].1["type"], "Warning");
}

#[tokio::test]
async fn outside_a_cluster_events_are_off_without_noise() {
    assert!(
        std::env::var_os("KUBERNETES_SERVICE_HOST").is_none(),
        "tests run outside a cluster"
    );
    let events = PodEvents::detect().await;
    assert!(!events.is_enabled());
    events
        .normal("Nothing", "Nothing", "goes nowhere".into())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_failures_and_svid_rotations_are_recorded() {
    let (client, seen) = fake_api_server().await;
    let events = PodEvents::new(client, "backend-7d9f", "99-apps", None);
    let mut stack = Stack::start(Lifetimes::default()).await;
    // Identity with a short-lived SVID: its rotation is recorded.
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |c| c.x509_ttl = Duration::from_secs(4)).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    assert_eq!(identity.current().spiffe_id, SPIFFE_ID);
    let (cancel, tasks, readiness) = (
        CancellationToken::new(),
        TaskTracker::new(),
        Readiness::new(),
    );
    let supervisor = Supervisor::new(
        tasks.clone(),
        cancel.clone(),
        readiness.register("tasks", "starting"),
        PodEvents::disabled(),
        Default::default(),
        CancellationToken::new(),
        Duration::from_secs(60),
    );
    supervisor.spawn(
        "identity-watch",
        Lifetime::UntilCancelled,
        identity.watch(
            readiness.register("identity", "starting"),
            events.clone(),
            supervisor.cancel().clone(),
        ),
    );

    // The database rotation loop, against the stack's OpenBao (its agent).
    let stack_identity = Identity::connect(&identity_config(&stack.agent().endpoint()))
        .await
        .unwrap();
    let env = env_with(
        &stack,
        &[
            ("DB_ROTATION_INTERVAL", "2s"),
            ("DB_ROTATION_MIN_SPACING", "1s"),
            ("DB_DRAIN_TIMEOUT", "1s"),
        ],
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let config = crate::common::test_config(&pairs);
    let (db, publisher) = precinct::db::channel(config.backends.clone().unwrap().db);
    let bao =
        precinct::bao::BaoClient::login(&config.backends.as_ref().unwrap().bao, &stack_identity)
            .await
            .unwrap();
    precinct::db::migrate(&bao, db.config()).await.unwrap();
    let engine = precinct::db::engine(
        publisher,
        db.clone(),
        stack_identity,
        config.backends.clone().unwrap().bao,
        events.clone(),
        readiness.register("database", "starting"),
        supervisor.cancel().clone(),
    );
    supervisor.spawn("db-rotation", Lifetime::UntilCancelled, engine.rotation);
    supervisor.spawn("db-health", Lifetime::UntilCancelled, engine.health);

    eventually(
        Duration::from_secs(15),
        "CredentialsRotated and SvidRotated",
        || {
            let r = reasons(&seen);
            async move {
                r.contains(&"CredentialsRotated".to_string())
                    && r.contains(&"SvidRotated".to_string())
            }
        },
    )
    .await;
    stack.stop_bao();
    eventually(Duration::from_secs(15), "CredentialsRotationFailed", || {
        let r = reasons(&seen);
        async move { r.contains(&"CredentialsRotationFailed".to_string()) }
    })
    .await;
    let warning = seen
        .lock()
        .unwrap()
        .iter()
        .find(|(_, b)| b["reason"] == "CredentialsRotationFailed")
        .map(|(_, b)| b.clone())
        .unwrap();
    assert_eq!(warning["type"], "Warning");
    assert!(
        warning["note"].as_str().unwrap().contains("OpenBao"),
        "{warning}"
    );
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    agent.shutdown().await;
}
