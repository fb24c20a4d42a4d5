//! The internal API, for other workloads of the mesh: mutual TLS with this
//! workload's X.509-SVID (the identity task's `X509Source`, through
//! spiffe-rustls: a rotated SVID or bundle applies to the next handshake),
//! callers authorized by SPIFFE ID at the handshake
//! (`INTERNAL_ALLOWED_SPIFFE_IDS`: exact IDs and `/`-bounded prefixes, in
//! their trust domains only). What callers get here is what a JWKS cannot
//! tell them: whether an access token's session is still live.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, header, request::Parts},
};
use serde::{Deserialize, Serialize};
use spiffe_rustls::TrustDomainPolicy;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiError, AppState, ErrorBody, auth::Meta};
use crate::{
    config::{AllowedId, InternalConfig, authorize},
    identity::Identity,
};

/// The authenticated caller of an internal request, from its certificate.
#[derive(Debug, Clone)]
pub struct Caller {
    pub spiffe_id: String,
    /// The allowlist entry that admitted it (the bounded metric label).
    pub entry: Arc<str>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            // Only the mutual-TLS listener serves these routes, and it puts
            // the caller on every request: reaching this is a wiring error.
            ApiError::new(
                StatusCode::FORBIDDEN,
                "caller_unknown",
                "internal routes need a client certificate (mutual TLS)",
            )
        })
    }
}

/// RFC 7662 introspection request (form or JSON body).
#[derive(Debug, Deserialize, ToSchema)]
pub struct IntrospectRequest {
    /// The access token to check.
    token: String,
    /// Accepted and ignored: only access tokens are issued here.
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// RFC 7662's answer. Inactive tokens (expired, forged, malformed, of an
/// ended session or a deleted account) answer `{"active": false}` alone.
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(example = json!({"active": true, "sub": "0192f7a4-5b1e-7c3d-9a51-1f0e2d3c4b5a", "username": "rosa_diaz", "exp": 1764585900, "iat": 1764585000, "jti": "d4f5…", "sid": "0192f7a4-…", "iss": "precinct", "aud": "precinct-api", "token_type": "access_token"}))]
pub struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<Uuid>,
    /// The session: the refresh family of the login that issued the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
}

/// A user's public profile, for a workload that holds only the id.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicProfile {
    id: Uuid,
    #[schema(example = "rosa_diaz")]
    username: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: time::OffsetDateTime,
}

/// The token from a form (`application/x-www-form-urlencoded`, as RFC 7662
/// says) or a JSON body.
pub struct TokenBody(IntrospectRequest);

impl<S: Send + Sync> axum::extract::FromRequest<S> for TokenBody {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let axum::Form(body) = axum::Form::<IntrospectRequest>::from_request(req, state)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        "expected token=<access token>",
                    )
                })?;
            return Ok(Self(body));
        }
        let super::auth::Body(body) =
            super::auth::Body::<IntrospectRequest>::from_request(req, state).await?;
        Ok(Self(body))
    }
}

/// Is this access token active? RFC 7662, for precinct's access tokens.
#[utoipa::path(
    post, path = "/internal/v1/introspect", tag = "internal",
    security(("mutual_tls" = [])),
    request_body(content = IntrospectRequest, content_type = "application/x-www-form-urlencoded", description = "`token=<access token>` (JSON accepted too)"),
    responses(
        (status = 200, description = "Whether the token is active, and its claims when it is", body = Introspection),
        (status = 400, description = "No token in the body (`invalid_body`)", body = ErrorBody),
        (status = 429, description = "Too many calls from this caller (`rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    caller: Caller,
    Meta(meta): Meta,
    TokenBody(body): TokenBody,
) -> Result<Json<Introspection>, ApiError> {
    let auth = state.auth.as_ref().ok_or_else(unavailable)?;
    auth.limit_internal_caller(&caller.entry, &caller.spiffe_id)
        .await?;
    let active = auth
        .introspect(&body.token, &caller.spiffe_id, &meta)
        .await?;
    super::metrics::internal_call(&caller.entry, "introspect", active.is_some());
    Ok(Json(match active {
        Some(c) => Introspection {
            active: true,
            sub: Some(c.sub),
            username: Some(c.username.clone()),
            exp: Some(c.exp),
            iat: Some(c.iat),
            jti: Some(c.jti),
            sid: Some(c.sid),
            iss: Some(c.iss.clone()),
            aud: Some(c.aud.clone()),
            token_type: Some("access_token"),
        },
        None => Introspection::default(),
    }))
}

/// A user's public profile.
#[utoipa::path(
    get, path = "/internal/v1/users/{id}", tag = "internal",
    security(("mutual_tls" = [])),
    params(("id" = Uuid, Path, description = "The user id (an access token's `sub`)")),
    responses(
        (status = 200, description = "The profile", body = PublicProfile),
        (status = 400, description = "Not a UUID (`invalid_path`)", body = ErrorBody),
        (status = 404, description = "No such user (`user_not_found`)", body = ErrorBody),
        (status = 429, description = "Too many calls from this caller (`rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
    )
)]
pub async fn user(
    State(state): State<AppState>,
    caller: Caller,
    Meta(meta): Meta,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<PublicProfile>, ApiError> {
    let Path(id) = id.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the user id must be a UUID",
        )
    })?;
    let auth = state.auth.as_ref().ok_or_else(unavailable)?;
    auth.limit_internal_caller(&caller.entry, &caller.spiffe_id)
        .await?;
    let user = auth.public_profile(id, &caller.spiffe_id, &meta).await?;
    super::metrics::internal_call(&caller.entry, "user", user.is_some());
    let user =
        user.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "user_not_found", "no such user"))?;
    Ok(Json(PublicProfile {
        id: user.id,
        username: user.username,
        created_at: user.created_at,
    }))
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        "auth_unavailable",
        "the internal API needs the database and OpenBao, which this instance runs without",
    )
}

/// Why a handshake failed: one of [`super::metrics::REFUSALS`], from the
/// error's type (rustls' own, or spiffe-rustls' wrapped in it), never its
/// text.
fn refusal_kind(e: &spiffe_rustls_tokio::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as R};
    use spiffe_rustls_tokio::Error as T;
    let rustls_error = match e {
        T::Rustls(r) => Some(r),
        T::Io(io) => io.get_ref().and_then(|inner| inner.downcast_ref::<R>()),
        T::MissingSpiffeId | T::CertParse(_) => return "not_one_spiffe_id",
        _ => None,
    };
    let Some(r) = rustls_error else {
        return match e {
            T::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                ) =>
            {
                "closed_during_handshake"
            }
            _ => "handshake_failed",
        };
    };
    match r {
        R::NoCertificatesPresented => "no_client_certificate",
        R::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "certificate_expired_or_not_yet_valid",
        R::InvalidCertificate(
            C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension,
        ) => "untrusted_issuer",
        R::InvalidMessage(_)
        | R::InappropriateMessage { .. }
        | R::InappropriateHandshakeMessage { .. }
        | R::PeerIncompatible(_)
        | R::PeerMisbehaved(_) => "not_tls",
        R::Other(other) => match other.0.downcast_ref::<spiffe_rustls::Error>() {
            Some(spiffe_rustls::Error::UnauthorizedSpiffeId(_)) => "id_not_allowed",
            Some(
                spiffe_rustls::Error::TrustDomainNotAllowed(_) | spiffe_rustls::Error::NoBundle(_),
            ) => "trust_domain_not_allowed",
            Some(
                spiffe_rustls::Error::MissingSpiffeId
                | spiffe_rustls::Error::MultipleSpiffeIds
                | spiffe_rustls::Error::CertParse(_),
            ) => "not_one_spiffe_id",
            Some(spiffe_rustls::Error::InvalidLeaf(_)) => "not_a_leaf",
            _ => "handshake_failed",
        },
        _ => "handshake_failed",
    }
}

/// One log line per refusal kind per second, with the count suppressed.
#[derive(Default)]
struct RefusalLog {
    last: std::sync::Mutex<std::collections::HashMap<&'static str, (Option<Instant>, u64)>>,
}

impl RefusalLog {
    fn refused(&self, peer: SocketAddr, kind: &'static str, error: &dyn std::fmt::Display) {
        metrics::counter!(super::metrics::INTERNAL_HANDSHAKES_REFUSED, "reason" => kind)
            .increment(1);
        tracing::debug!(%peer, reason = kind, %error, "internal API: handshake refused");
        let mut last = self.last.lock().expect("refusal log lock");
        let (logged, suppressed) = last.entry(kind).or_insert((None, 0));
        if logged.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
            let count = std::mem::take(suppressed);
            *logged = Some(Instant::now());
            drop(last);
            tracing::warn!(event = "internal_handshake_refused", %peer, reason = kind, %error, suppressed = count, "internal API: handshake refused");
        } else {
            *suppressed += 1;
        }
    }
}

/// The TLS configuration: this workload's SVID and bundles (hot), client
/// certificates required and authorized by the allowlist, in the allowlist's
/// trust domains only; no session resumption (a resumed session would skip
/// verification).
pub fn tls_config(
    identity: &Identity,
    allowed: Arc<[AllowedId]>,
) -> Result<Arc<rustls::ServerConfig>, spiffe_rustls::Error> {
    let domains = allowed
        .iter()
        .filter_map(|a| spiffe::TrustDomain::new(&a.trust_domain).ok())
        .collect();
    let authorizer = move |id: &spiffe::SpiffeId| authorize(&allowed, &id.to_string()).is_some();
    let config = spiffe_rustls::mtls_server(identity.x509_source().clone())
        .authorize(authorizer)
        .trust_domain_policy(TrustDomainPolicy::AllowList(domains))
        .with_alpn_protocols([b"h2".as_slice(), b"http/1.1".as_slice()])
        .build()?;
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` over mutual TLS until `cancel` (the caller
/// spawns it). Handshakes are bounded in time and in number at once: a
/// stalled client, plain HTTP or a flood of handshakes never hangs the
/// listener; each accepted connection carries its [`Caller`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    config: InternalConfig,
    router: axum::Router,
    cancel: CancellationToken,
) {
    let acceptor = spiffe_rustls_tokio::TlsAcceptor::new(tls);
    let allowed: Arc<[AllowedId]> = config.allowed.clone().into();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(config.max_handshakes));
    let refusals = Arc::new(RefusalLog::default());
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "internal API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            break;
        };
        let (acceptor, allowed, refusals, router, cancel) = (
            acceptor.clone(),
            allowed.clone(),
            refusals.clone(),
            router.clone(),
            cancel.clone(),
        );
        let timeout = config.handshake_timeout;
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            let accepted = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
            drop(permit);
            let (tls, identity) = match accepted {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    refusals.refused(peer, refusal_kind(&e), &e);
                    return;
                }
                Err(_) => {
                    refusals.refused(peer, "handshake_timeout", &"no handshake in time");
                    return;
                }
            };
            // The verifier admitted exactly one SPIFFE ID on the allowlist.
            let Some(id) = identity.spiffe_id().map(|id| id.to_string()) else {
                refusals.refused(
                    peer,
                    "not_one_spiffe_id",
                    &"no SPIFFE ID after the handshake",
                );
                return;
            };
            let Some(entry) = authorize(&allowed, &id) else {
                refusals.refused(peer, "id_not_allowed", &id);
                return;
            };
            let service = WithCaller {
                inner: router,
                caller: Caller {
                    spiffe_id: id,
                    entry: entry.entry.as_str().into(),
                },
                peer,
            };
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let connection = builder.serve_connection(
                hyper_util::rt::TokioIo::new(tls),
                hyper_util::service::TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = cancel.cancelled() => {
                    // Finish what is in flight, take nothing new.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
                }
            }
        });
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), connections.wait()).await;
}

/// The router, with the connection's caller and peer on every request.
#[derive(Clone)]
struct WithCaller {
    inner: axum::Router,
    caller: Caller,
    peer: SocketAddr,
}

impl<B> tower::Service<axum::http::Request<B>> for WithCaller
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = <axum::Router as tower::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.caller.clone());
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{CertificateError as C, Error as R};
    use spiffe_rustls_tokio::Error as T;

    use super::refusal_kind;

    /// How tokio-rustls hands a handshake error back: inside an io::Error.
    fn io(r: R) -> T {
        T::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, r))
    }

    fn spiffe(e: spiffe_rustls::Error) -> T {
        io(R::Other(rustls::OtherError(Arc::new(e))))
    }

    #[test]
    fn each_refusal_is_named_from_the_error_type() {
        let id = spiffe::SpiffeId::new("spiffe://demo.local/ns/x/sa/y").unwrap();
        let td = spiffe::TrustDomain::new("evil.local").unwrap();
        let cases: Vec<(&str, T, &str)> = vec![
            (
                "no certificate",
                io(R::NoCertificatesPresented),
                "no_client_certificate",
            ),
            (
                "expired",
                io(R::InvalidCertificate(C::Expired)),
                "certificate_expired_or_not_yet_valid",
            ),
            (
                "not yet valid",
                io(R::InvalidCertificate(C::NotValidYet)),
                "certificate_expired_or_not_yet_valid",
            ),
            (
                "another CA",
                io(R::InvalidCertificate(C::UnknownIssuer)),
                "untrusted_issuer",
            ),
            (
                "forged signature",
                io(R::InvalidCertificate(C::BadSignature)),
                "untrusted_issuer",
            ),
            (
                "plain HTTP",
                io(R::InvalidMessage(
                    rustls::InvalidMessage::InvalidContentType,
                )),
                "not_tls",
            ),
            (
                "ID not allowed",
                spiffe(spiffe_rustls::Error::UnauthorizedSpiffeId(id)),
                "id_not_allowed",
            ),
            (
                "foreign trust domain",
                spiffe(spiffe_rustls::Error::TrustDomainNotAllowed(td.clone())),
                "trust_domain_not_allowed",
            ),
            (
                "no bundle",
                spiffe(spiffe_rustls::Error::NoBundle(td)),
                "trust_domain_not_allowed",
            ),
            (
                "two URI SANs",
                spiffe(spiffe_rustls::Error::MultipleSpiffeIds),
                "not_one_spiffe_id",
            ),
            (
                "no URI SAN",
                spiffe(spiffe_rustls::Error::MissingSpiffeId),
                "not_one_spiffe_id",
            ),
            (
                "a CA as leaf",
                spiffe(spiffe_rustls::Error::InvalidLeaf("cA=true".into())),
                "not_a_leaf",
            ),
            (
                "client gave up",
                T::Io(std::io::ErrorKind::UnexpectedEof.into()),
                "closed_during_handshake",
            ),
            (
                "reset",
                T::Io(std::io::ErrorKind::ConnectionReset.into()),
                "closed_during_handshake",
            ),
            (
                "anything else",
                T::Io(std::io::Error::other("x")),
                "handshake_failed",
            ),
        ];
        for (case, error, expected) in &cases {
            assert_eq!(refusal_kind(error), *expected, "{case}: {error}");
            assert!(
                crate::http::metrics::REFUSALS.contains(expected),
                "{expected} is a label"
            );
        }
    }
}
