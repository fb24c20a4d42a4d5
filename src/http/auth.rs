//! `/api/v1/auth/*` and `/.well-known/jwks.json`.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, FromRequestParts, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiError, AppState, ErrorBody, FieldError, request_id};
use crate::{
    audit::RequestMeta,
    auth::{AccessClaims, AuthError, AuthService, TokenError, User, policy},
};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3–32 characters of `a-z A-Z 0-9 _ . -`; unique, case-insensitively.
    #[schema(example = "rosa_diaz", pattern = "^[a-zA-Z0-9_.-]{3,32}$")]
    username: String,
    /// One `@`, a dotted domain, no spaces, control or formatting characters.
    #[schema(example = "rosa@nine-nine.example", format = Email, max_length = 254)]
    email: String,
    /// At least 12 characters, at most 128 bytes, not a common password, not the username.
    #[schema(value_type = String, format = Password, example = "correct-horse-battery", min_length = 12, max_length = 128)]
    password: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "jake", max_length = 64)]
    username: String,
    #[schema(value_type = String, format = Password, example = "jake99", max_length = 128)]
    password: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The opaque refresh token from login or the previous refresh.
    #[schema(value_type = String, format = Password)]
    refresh_token: SecretString,
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    id: Uuid,
    #[schema(example = "rosa_diaz")]
    username: String,
    #[schema(example = "rosa@nine-nine.example")]
    email: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: OffsetDateTime,
    /// Whether a valid GitHub token is configured.
    github_configured: bool,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            username: u.username,
            email: u.email,
            created_at: u.created_at,
            github_configured: u.github_configured,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// ES256 JWT, signed by OpenBao Transit.
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    #[schema(example = 900)]
    expires_in: u64,
    /// Opaque, single use: exchange it at /api/v1/auth/refresh.
    refresh_token: String,
}

fn service(state: &AppState) -> Result<&AuthService, ApiError> {
    state.auth.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unavailable",
            "accounts need the database and OpenBao, which this instance runs without",
        )
    })
}

/// Request metadata for audit rows and rate limits: the client IP is the
/// TCP peer, or what `X-Forwarded-For` says when that peer is a trusted proxy
/// (`TRUSTED_PROXIES`, see `client_ip`).
pub struct Meta(pub RequestMeta);

impl FromRequestParts<AppState> for Meta {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let ip =
            super::client_ip::client_ip(peer, &parts.headers, &state.config.http.trusted_proxies);
        let ua = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Meta(RequestMeta {
            client_ip: ip,
            user_agent: ua,
            request_id: request_id::current(),
        }))
    }
}

/// The authenticated user, from `Authorization: Bearer <access token>`.
pub struct CurrentUser(pub std::sync::Arc<AccessClaims>);

fn unauthorized(code: &'static str, message: &str, error: &str) -> ApiError {
    let challenge = format!("Bearer error=\"{error}\", error_description=\"{message}\"");
    ApiError::new(StatusCode::UNAUTHORIZED, code, message).with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("ascii"),
    )
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "token_missing",
                "an access token is required",
            )
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "token_invalid",
                    "expected Authorization: Bearer <token>",
                    "invalid_request",
                )
            })?;
        let tokens = service(state)?.tokens();
        match tokens.verify(token).await {
            Ok(claims) => Ok(CurrentUser(claims)),
            Err(TokenError::Expired) => Err(unauthorized(
                "token_expired",
                "the access token has expired",
                "invalid_token",
            )),
            Err(TokenError::Invalid(_)) => Err(unauthorized(
                "token_invalid",
                "the access token is invalid",
                "invalid_token",
            )),
            Err(TokenError::SessionEnded) => Err(session_ended()),
            Err(e @ TokenError::Keys(_)) => {
                tracing::warn!(error = %e, "cannot verify access tokens");
                Err(ApiError::unavailable(
                    "auth_unavailable",
                    "token verification keys are unavailable; retry shortly",
                ))
            }
        }
    }
}

fn session_ended() -> ApiError {
    unauthorized(
        "token_revoked",
        "the session of this access token has ended (logged out or revoked); log in again",
        "invalid_token",
    )
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => unauthorized(
                "invalid_credentials",
                "invalid username or password",
                "invalid_request",
            ),
            AuthError::AccountExists => ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                "an account with this username or email already exists",
            ),
            AuthError::RateLimited { retry_after } => {
                ApiError::rate_limited("too many attempts; retry later", retry_after)
            }
            AuthError::RefreshInvalid => unauthorized(
                "refresh_invalid",
                "the refresh token is invalid or expired",
                "invalid_grant",
            ),
            AuthError::RefreshReused => unauthorized(
                "refresh_reused",
                "this refresh token was already used; the session has been revoked, log in again",
                "invalid_grant",
            ),
            AuthError::SessionEnded | AuthError::Token(TokenError::SessionEnded) => session_ended(),
            AuthError::Token(TokenError::Keys(detail)) => {
                tracing::warn!(%detail, "token signing unavailable");
                ApiError::unavailable(
                    "auth_unavailable",
                    "token signing is unavailable; retry shortly",
                )
            }
            AuthError::Token(other) => ApiError::internal(other),
            AuthError::Db(db) => db.into(),
            AuthError::Hash(h) => ApiError::internal(h),
        }
    }
}

/// Rejects bodies that are not JSON objects of the right shape, with our error shape.
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Body(value))
    }
}

/// Register a new account. A new user must then log in.
///
/// A duplicate username (case-insensitive) or email answers `409 account_exists`
/// without saying which of the two collided.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created", body = UserResponse),
        (status = 400, description = "Malformed JSON body", body = ErrorBody),
        (status = 409, description = "Username or email already registered", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
        (status = 429, description = "Too many registrations from this client IP, for the service as a whole (`rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
        (status = 503, description = "Database unavailable", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Meta(meta): Meta,
    Body(body): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), ApiError> {
    let errors: Vec<FieldError> = policy::registration(&body.username, &body.email, &body.password)
        .into_iter()
        .map(|v| FieldError {
            field: v.field.into(),
            message: v.message.into(),
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let user = service(&state)?
        .register(
            &body.username,
            &body.email.to_lowercase(),
            &body.password,
            &meta,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Log in with username and password.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Tokens", body = TokenResponse),
        (status = 400, description = "Malformed JSON body", body = ErrorBody),
        (status = 401, description = "Invalid username or password (one generic answer)", body = ErrorBody),
        (status = 429, description = "Too many attempts for this client IP, this (IP, username) pair or this username, for the service as a whole (`rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
        (status = 503, description = "Database or OpenBao unavailable (the limits cannot be counted: no login)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    Body(body): Body<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if body.username.is_empty()
        || body.username.len() > 64
        || body.username.chars().any(policy::hostile)
        || body.password.expose_secret().len() > policy::PASSWORD_MAX_BYTES
    {
        // Same answer as a wrong password: nothing to learn from the shape.
        return Err(AuthError::InvalidCredentials.into());
    }
    let tokens = service(&state)?
        .login(&body.username, &body.password, &meta)
        .await?;
    Ok(Json(token_response(tokens)))
}

fn token_response(t: crate::auth::Tokens) -> TokenResponse {
    TokenResponse {
        access_token: t.access_token,
        token_type: "Bearer",
        expires_in: t.expires_in,
        refresh_token: t.refresh_token.expose_secret().to_string(),
    }
}

/// Exchange a refresh token for new tokens. Each refresh token works once;
/// presenting a used one revokes every token of that login.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    Meta(meta): Meta,
    Body(body): Body<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let tokens = service(&state)?.refresh(&body.refresh_token, &meta).await?;
    Ok(Json(token_response(tokens)))
}

/// Log out: revokes the refresh token's whole family.
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Unknown refresh token", body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    Meta(meta): Meta,
    Body(body): Body<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    service(&state)?.logout(&body.refresh_token, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The current user.
#[utoipa::path(
    get, path = "/api/v1/auth/me", tag = "auth",
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "The current user", body = UserResponse),
        (status = 401, description = "Missing (`token_missing`), expired (`token_expired`) or invalid (`token_invalid`) token, or its session ended (`token_revoked`)", body = ErrorBody),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
) -> Result<Json<UserResponse>, ApiError> {
    let user = service(&state)?.me(claims.sub, claims.sid).await?;
    Ok(Json(user.into()))
}

/// Public keys that verify access tokens (JWKS).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth",
    responses(
        (status = 200, description = "JWKS", body = Object),
        (status = 503, description = "Keys not available yet", body = ErrorBody),
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys = service(&state)?.tokens().jwks().map_err(AuthError::from)?;
    Ok(Json(keys))
}
