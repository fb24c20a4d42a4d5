//! Workload identity against the development agent over a real unix socket.

use std::time::Duration;

use crate::common::{SPIFFE_ID, eventually, identity_config, start_agent};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use precinct::{
    devagent::pb::{self, spiffe_workload_api_client::SpiffeWorkloadApiClient},
    identity::{Identity, IdentityError},
    readiness::{CheckStatus, Readiness},
};
use secrecy::ExposeSecret;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

fn aud(a: &str) -> Vec<String> {
    vec![a.to_string()]
}

#[tokio::test]
async fn the_x509_svid_is_fetched_and_matches_the_expected_id() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let info = identity.current();
    assert_eq!(info.spiffe_id, SPIFFE_ID);
    assert_eq!(info.serial, agent.current_serial());
    assert!(identity.svid_expiry_seconds() > 3000.0);
    // The trust bundle came along with the SVID.
    let bundles = identity.x509_source().bundle_set().unwrap();
    let td = spiffe::TrustDomain::new("demo.local").unwrap();
    assert!(bundles.get(&td).is_some());
    agent.shutdown().await;
}

#[tokio::test]
async fn a_misregistered_workload_refuses_to_start_naming_both_ids() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let mut config = identity_config(&agent.endpoint());
    config.expected_id = Some("spiffe://demo.local/ns/99-apps/sa/other".into());
    let err = Identity::connect(&config)
        .await
        .err()
        .expect("mismatch is an error");
    let message = err.to_string();
    assert!(matches!(err, IdentityError::Mismatch { .. }));
    assert!(
        message.contains("spiffe://demo.local/ns/99-apps/sa/other"),
        "{message}"
    );
    assert!(message.contains(SPIFFE_ID), "{message}");
    agent.shutdown().await;
}

#[tokio::test]
async fn a_missing_socket_fails_after_the_startup_timeout_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.sock");
    let mut config = identity_config(&format!("unix://{}", path.display()));
    config.startup_timeout = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let err = Identity::connect(&config)
        .await
        .err()
        .expect("no agent, no identity");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retried until the deadline"
    );
    let message = err.to_string();
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("SPIFFE_ENDPOINT_SOCKET"), "{message}");
}

#[tokio::test]
async fn an_agent_that_starts_late_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let connect = tokio::spawn({
        let config = identity_config(&format!("unix://{}", socket.display()));
        async move { Identity::connect(&config).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let agent = start_agent(dir.path(), |_| {}).await;
    let identity = connect
        .await
        .unwrap()
        .expect("connected once the agent came up");
    assert_eq!(identity.current().spiffe_id, SPIFFE_ID);
    agent.shutdown().await;
}

#[tokio::test]
async fn rotation_is_observed_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |c| c.x509_ttl = Duration::from_secs(4)).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
    let readiness = Readiness::new();
    {
        let supervisor = crate::common::test_supervisor(&tasks, &cancel, &readiness);
        supervisor.spawn(
            "identity-watch",
            precinct::supervise::Lifetime::UntilCancelled,
            identity.watch(
                readiness.register("identity", "starting"),
                Default::default(),
                supervisor.cancel().clone(),
            ),
        );
    }
    let mut rotations = identity.subscribe();
    let first = identity.current();

    // The agent pushes a new SVID at half its 4s lifetime.
    tokio::time::timeout(Duration::from_secs(10), rotations.changed())
        .await
        .expect("a rotation arrives")
        .unwrap();
    let second = rotations.borrow().clone();
    assert_ne!(second.serial, first.serial);
    assert!(second.not_after > first.not_after);
    assert_eq!(second.serial, agent.current_serial());
    assert_eq!(
        readiness.report().status,
        precinct::readiness::CheckStatus::Ready
    );
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_jwt_svid_carries_the_audience_and_verifies_against_the_oidc_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let svid = identity.jwt_svid(&aud("openbao")).await.unwrap();
    assert_eq!(svid.spiffe_id, SPIFFE_ID);

    // Verify like OpenBao does: discovery → jwks_uri → key by kid.
    let http = crate::common::http();
    let discovery: serde_json::Value = crate::common::get_json(
        &http,
        format!("{}/.well-known/openid-configuration", agent.issuer()),
    )
    .await;
    assert_eq!(discovery["issuer"], agent.issuer());
    let jwks: jsonwebtoken::jwk::JwkSet =
        crate::common::get_json(&http, discovery["jwks_uri"].as_str().unwrap()).await;
    let token = svid.token.expose_secret();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("kid in header");
    let jwk = jwks.find(&kid).expect("kid published in /keys");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["openbao"]);
    validation.set_issuer(&[agent.issuer()]);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("signature and claims verify");
    assert_eq!(data.claims["sub"], SPIFFE_ID);
    assert_eq!(data.claims["aud"], serde_json::json!(["openbao"]));

    // Another audience is refused by a verifier expecting "openbao".
    let other = identity.jwt_svid(&aud("someone-else")).await.unwrap();
    assert!(
        jsonwebtoken::decode::<serde_json::Value>(
            other.token.expose_secret(),
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation
        )
        .is_err()
    );
    agent.shutdown().await;
}

#[tokio::test]
async fn jwt_svids_are_cached_per_audience_and_refreshed_at_half_life() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |c| c.jwt_ttl = Duration::from_secs(6)).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let first = identity.jwt_svid(&aud("openbao")).await.unwrap();
    let again = identity.jwt_svid(&aud("openbao")).await.unwrap();
    assert_eq!(
        first.token.expose_secret(),
        again.token.expose_secret(),
        "cached"
    );
    let other = identity.jwt_svid(&aud("other")).await.unwrap();
    assert_ne!(
        first.token.expose_secret(),
        other.token.expose_secret(),
        "per audience"
    );

    // Past half of the 6s lifetime the next call fetches a new token.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let refreshed = identity.jwt_svid(&aud("openbao")).await.unwrap();
    assert_ne!(first.token.expose_secret(), refreshed.token.expose_secret());
    assert!(refreshed.expires_at > first.expires_at);
    agent.shutdown().await;
}

#[tokio::test]
async fn an_expired_jwt_svid_is_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |c| c.jwt_ttl = Duration::from_secs(14)).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let first = identity.jwt_svid(&aud("openbao")).await.unwrap();
    agent.shutdown().await;

    // Agent gone, token past half-life but still valid: served from cache.
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let cached = identity.jwt_svid(&aud("openbao")).await.unwrap();
    assert_eq!(cached.token.expose_secret(), first.token.expose_secret());
    // Too close to expiry: an error, not a stale token.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(identity.jwt_svid(&aud("openbao")).await.is_err());
}

/// A raw Workload API client, to send requests the `spiffe` crate never would.
async fn raw_client(
    socket: std::path::PathBuf,
) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

#[tokio::test]
async fn requests_without_the_security_header_are_rejected_like_spire() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let mut client = raw_client(agent.socket().to_path_buf()).await;
    let request = pb::JwtsvidRequest {
        audience: aud("openbao"),
        spiffe_id: String::new(),
    };
    let status = client
        .fetch_jwtsvid(tonic::Request::new(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "security header missing from request");
    let status = client
        .fetch_x509svid(tonic::Request::new(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    assert!(client.fetch_jwtsvid(with_header(request)).await.is_ok());
    agent.shutdown().await;
}

#[tokio::test]
async fn jwt_svids_need_an_audience_and_validate_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let mut client = raw_client(agent.socket().to_path_buf()).await;
    let status = client
        .fetch_jwtsvid(with_header(pb::JwtsvidRequest {
            audience: vec![],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);

    let svid = client
        .fetch_jwtsvid(with_header(pb::JwtsvidRequest {
            audience: aud("openbao"),
            spiffe_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .svids
        .remove(0)
        .svid;
    let valid = client
        .validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
            audience: "openbao".into(),
            svid: svid.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.spiffe_id, SPIFFE_ID);
    assert!(valid.claims.unwrap().fields.contains_key("exp"));
    let wrong = client
        .validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
            audience: "vault".into(),
            svid,
        }))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
    agent.shutdown().await;
}

#[tokio::test]
async fn after_a_signing_key_rotation_old_tokens_still_validate() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let old = identity.jwt_svid(&aud("openbao")).await.unwrap();
    let old_kid = agent.current_jwt_kid().await;
    let new_kid = agent.rotate_jwt_key().await.unwrap();
    assert_ne!(old_kid, new_kid);

    let jwks: serde_json::Value =
        crate::common::get_json(&crate::common::http(), format!("{}/keys", agent.issuer())).await;
    assert_eq!(
        crate::common::jwks_kids(&jwks),
        vec![new_kid.as_str(), old_kid.as_str()]
    );

    let mut client = raw_client(agent.socket().to_path_buf()).await;
    let valid = client
        .validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
            audience: "openbao".into(),
            svid: old.token.expose_secret().to_string(),
        }))
        .await;
    assert!(valid.is_ok(), "token signed by the previous key: {valid:?}");
    agent.shutdown().await;
}

/// Nothing serves with the X.509-SVID: its expiry with the agent gone
/// degrades the identity check (with the reason) but does not make the
/// instance unready; the OpenBao token and database lease carry it.
#[tokio::test]
async fn when_the_agent_goes_away_identity_degrades_at_expiry_and_recovers_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    // Keep the CA across the restart, as a real agent would.
    let state = dir.path().join("state");
    let ttl = Duration::from_secs(6);
    let agent = start_agent(dir.path(), |c| {
        c.x509_ttl = ttl;
        c.state_dir = Some(state.clone());
    })
    .await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
    let readiness = Readiness::new();
    let check = readiness.register("identity", "starting");
    {
        let supervisor = crate::common::test_supervisor(&tasks, &cancel, &readiness);
        supervisor.spawn(
            "identity-watch",
            precinct::supervise::Lifetime::UntilCancelled,
            identity.watch(
                check.clone(),
                Default::default(),
                supervisor.cancel().clone(),
            ),
        );
    }
    eventually(Duration::from_secs(3), "identity ready", || {
        let c = check.clone();
        async move { c.is_ready() }
    })
    .await;

    agent.shutdown().await;
    let held = identity.current();
    // Still ready while the held SVID is valid...
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(check.is_ready(), "the current SVID keeps serving");
    // ...then degraded, with the reason, once it expires: still ready.
    eventually(
        ttl + Duration::from_secs(3),
        "identity degraded after expiry",
        || {
            let r = readiness.clone();
            async move { r.report().checks["identity"].status == CheckStatus::Degraded }
        },
    )
    .await;
    let report = readiness.report();
    let reason = report.checks["identity"].reason.clone().unwrap();
    assert!(reason.contains("expired"), "{reason}");
    assert_eq!(
        report.status,
        CheckStatus::Ready,
        "nothing serves with the X.509-SVID"
    );

    // The agent returns: reconnect, new SVID, ready again, no restart.
    let agent = start_agent(dir.path(), |c| {
        c.x509_ttl = ttl;
        c.state_dir = Some(state.clone());
    })
    .await;
    eventually(Duration::from_secs(15), "identity ready again", || {
        let r = readiness.clone();
        async move { r.report().checks["identity"].status == CheckStatus::Ready }
    })
    .await;
    assert_ne!(identity.current().serial, held.serial);
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    agent.shutdown().await;
}

/// EXPECTED_SPIFFE_ID is checked on every SVID the stream delivers, not
/// only at connect: an agent that starts issuing another identity (a
/// registration changed under the workload) makes the instance unready
/// and the foreign SVID is never published.
#[tokio::test]
async fn a_rotated_svid_for_another_spiffe_id_is_refused_and_makes_identity_unready() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let agent = start_agent(dir.path(), |c| c.state_dir = Some(state.clone())).await;
    let identity = Identity::connect(&identity_config(&agent.endpoint()))
        .await
        .unwrap();
    let (cancel, tasks) = (CancellationToken::new(), TaskTracker::new());
    let readiness = Readiness::new();
    let check = readiness.register("identity", "starting");
    {
        let supervisor = crate::common::test_supervisor(&tasks, &cancel, &readiness);
        supervisor.spawn(
            "identity-watch",
            precinct::supervise::Lifetime::UntilCancelled,
            identity.watch(
                check.clone(),
                Default::default(),
                supervisor.cancel().clone(),
            ),
        );
    }
    // Ready first: the check starts not ready ("starting").
    eventually(Duration::from_secs(3), "identity ready", || {
        let c = check.clone();
        async move { c.is_ready() }
    })
    .await;
    let held = identity.current();
    agent.shutdown().await;
    let agent = start_agent(dir.path(), |c| {
        c.state_dir = Some(state.clone());
        c.spiffe_id = format!(
            "spiffe://{}/ns/99-apps/sa/intruder",
            crate::common::TRUST_DOMAIN
        );
    })
    .await;
    eventually(Duration::from_secs(15), "identity not ready", || {
        let c = check.clone();
        async move { !c.is_ready() }
    })
    .await;
    let reason = readiness.report().checks["identity"]
        .reason
        .clone()
        .unwrap();
    assert!(
        reason.contains("intruder") && reason.contains(SPIFFE_ID),
        "{reason}"
    );
    assert_eq!(
        identity.current(),
        held,
        "the foreign SVID is not published"
    );
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn the_application_reports_identity_in_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let endpoint = agent.endpoint();
    let app = crate::common::spawn_app(&[
        ("SPIFFE_ENDPOINT_SOCKET", &endpoint),
        ("EXPECTED_SPIFFE_ID", SPIFFE_ID),
    ])
    .await;
    // No OpenBao here: identity turns ready, the dependencies after it say
    // what they wait for.
    let url = app.url("/api/v1/health/ready");
    eventually(Duration::from_secs(10), "identity ready", || {
        let (client, url) = (app.client.clone(), url.clone());
        async move {
            let body: serde_json::Value = crate::common::get_json(&client, url).await;
            body["checks"]["identity"]["status"] == "ready"
        }
    })
    .await;
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["openbao"]["status"], "not_ready");
    let reason = app.readiness.report().checks["openbao"]
        .reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("login"), "{reason}");
    app.stop().await;
    agent.shutdown().await;
}

#[tokio::test]
async fn the_application_stops_with_an_error_when_the_identity_is_not_the_expected_one() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path(), |_| {}).await;
    let endpoint = agent.endpoint();
    let app = crate::common::spawn_app(&[
        ("SPIFFE_ENDPOINT_SOCKET", &endpoint),
        (
            "EXPECTED_SPIFFE_ID",
            "spiffe://demo.local/ns/99-apps/sa/intruder",
        ),
    ])
    .await;
    let result = tokio::time::timeout(Duration::from_secs(10), app.handle)
        .await
        .expect("the app stops by itself")
        .unwrap();
    let message = result.expect_err("a mismatch is fatal").to_string();
    assert!(
        message.contains("sa/intruder") && message.contains(SPIFFE_ID),
        "{message}"
    );
    agent.shutdown().await;
}
