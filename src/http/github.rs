//! `/api/v1/github/*`: a user's GitHub token, kept in OpenBao, used for
//! proxied reads.

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiError, AppState, ErrorBody, FieldError,
    auth::{Body, CurrentUser, Meta},
};
use crate::github::{
    GithubError, GithubService, Page, Profile, RateLimit, Repo, RepoQuery, UpstreamError,
};

fn service(state: &AppState) -> Result<&GithubService, ApiError> {
    state.github.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "github_unavailable",
            "the GitHub proxy needs the database and OpenBao, which this instance runs without",
        )
    })
}

impl From<GithubError> for ApiError {
    fn from(e: GithubError) -> Self {
        match e {
            GithubError::NotConfigured => ApiError::new(
                StatusCode::NOT_FOUND,
                "github_not_configured",
                "no GitHub token is configured; POST /api/v1/github/configure first",
            ),
            GithubError::TokenShape => ApiError::validation(vec![FieldError {
                field: "github_token".into(),
                message: "does not look like a GitHub token (ghp_…, github_pat_…, gho_…)".into(),
            }]),
            GithubError::RateLimited { retry_after } => {
                ApiError::rate_limited("too many attempts; retry later", retry_after)
            }
            GithubError::TokenRejected => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "github_token_rejected",
                "GitHub rejected this token (bad credentials); it was not stored",
            ),
            GithubError::StoredTokenInvalid => ApiError::new(
                StatusCode::FAILED_DEPENDENCY,
                "github_token_invalid",
                "GitHub no longer accepts the stored token; configure a new one at POST /api/v1/github/configure",
            ),
            GithubError::Upstream(UpstreamError::RateLimited {
                retry_after,
                rate_limit,
            }) => {
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "github_rate_limited",
                    "GitHub's rate limit for this token is exhausted; retry later",
                )
                .with_header(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
                for (name, value) in rate_limit_headers(&rate_limit) {
                    err = err.with_header(name, value);
                }
                err
            }
            GithubError::Upstream(UpstreamError::Timeout) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "github_timeout",
                "GitHub did not answer in time",
            ),
            GithubError::Upstream(UpstreamError::Unauthorized) => ApiError::new(
                StatusCode::FAILED_DEPENDENCY,
                "github_token_invalid",
                "GitHub no longer accepts the stored token; configure a new one",
            ),
            GithubError::Upstream(UpstreamError::Status { status, message }) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "github_upstream_error",
                format!("GitHub answered {status}: {message}"),
            ),
            GithubError::Upstream(UpstreamError::Network(detail)) => {
                tracing::warn!(%detail, "GitHub unreachable");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "github_unreachable",
                    "GitHub cannot be reached",
                )
            }
            GithubError::Bao(e) => {
                tracing::warn!(error = %e, "OpenBao KV failed");
                ApiError::unavailable(
                    "secrets_unavailable",
                    "the secret store is unavailable; retry shortly",
                )
            }
            GithubError::NoSession => ApiError::unavailable(
                "secrets_unavailable",
                "the secret store is not connected yet; retry shortly",
            ),
            GithubError::Db(db) => db.into(),
        }
    }
}

fn rate_limit_headers(r: &RateLimit) -> Vec<(HeaderName, HeaderValue)> {
    [
        ("x-ratelimit-limit", &r.limit),
        ("x-ratelimit-remaining", &r.remaining),
        ("x-ratelimit-reset", &r.reset),
    ]
    .into_iter()
    .filter_map(|(name, v)| {
        Some((
            HeaderName::from_static(name),
            HeaderValue::from_str(v.as_deref()?).ok()?,
        ))
    })
    .collect()
}

fn with_rate_limit(rate_limit: &RateLimit, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers: &mut HeaderMap = response.headers_mut();
    for (name, value) in rate_limit_headers(rate_limit) {
        headers.insert(name, value);
    }
    response
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureRequest {
    /// A GitHub personal access token. Checked against GitHub, then stored in
    /// OpenBao; never returned or logged.
    #[schema(
        value_type = String,
        format = Password,
        example = "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        pattern = "^(github_pat_[A-Za-z0-9_]{22,255}|gh[pousr]_[A-Za-z0-9_]{30,251}|[0-9a-fA-F]{40})$"
    )]
    github_token: SecretString,
}

#[derive(Serialize, ToSchema)]
pub struct ConfigureResponse {
    #[schema(example = "configured")]
    status: &'static str,
    #[schema(example = "octocat")]
    github_login: String,
    /// Scopes GitHub reported for the token (`X-OAuth-Scopes`).
    #[schema(example = json!(["repo", "read:user"]))]
    scopes: Vec<String>,
}

/// GitHub's `Link` pagination, pointing at precinct's own route: only the
/// page number comes from GitHub; every other parameter is the validated
/// query (nothing GitHub-controlled is reflected).
fn link_header(page: &Page, query: &RepoQuery) -> Option<HeaderValue> {
    let parts: Vec<String> = page
        .links
        .iter()
        .map(|(rel, number)| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("page", &number.to_string());
            q.append_pair("per_page", &query.per_page.to_string());
            for (name, value) in [
                ("sort", &query.sort),
                ("direction", &query.direction),
                ("visibility", &query.visibility),
                ("affiliation", &query.affiliation),
            ] {
                if let Some(v) = value {
                    q.append_pair(name, v);
                }
            }
            format!("</api/v1/github/repos?{}>; rel=\"{rel}\"", q.finish())
        })
        .collect();
    (!parts.is_empty())
        .then(|| HeaderValue::from_str(&parts.join(", ")).ok())
        .flatten()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReposParams {
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 100000)]
    page: Option<u32>,
    /// Repositories per page (default 30).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
    #[param(inline)]
    sort: Option<RepoSort>,
    #[param(inline)]
    direction: Option<Direction>,
    #[param(inline)]
    visibility: Option<Visibility>,
    /// Comma list of `owner`, `collaborator`, `organization_member`.
    #[param(
        pattern = "^(owner|collaborator|organization_member)(,(owner|collaborator|organization_member))*$"
    )]
    affiliation: Option<String>,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum RepoSort {
    Created,
    Updated,
    Pushed,
    FullName,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    All,
    Public,
    Private,
}

impl ReposParams {
    fn validate(self) -> Result<RepoQuery, ApiError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| {
            errors.push(FieldError {
                field: field.into(),
                message: message.into(),
            })
        };
        let page = self.page.unwrap_or(1);
        if page == 0 || page > 100_000 {
            bad("page", "must be between 1 and 100000");
        }
        let per_page = self.per_page.unwrap_or(30);
        if !(1..=100).contains(&per_page) {
            bad("per_page", "must be between 1 and 100");
        }
        if let Some(a) = &self.affiliation
            && !a
                .split(',')
                .all(|p| ["owner", "collaborator", "organization_member"].contains(&p))
        {
            bad(
                "affiliation",
                "must be a comma list of owner, collaborator, organization_member",
            );
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(RepoQuery {
            page,
            per_page,
            sort: self.sort.map(|v| {
                match v {
                    RepoSort::Created => "created",
                    RepoSort::Updated => "updated",
                    RepoSort::Pushed => "pushed",
                    RepoSort::FullName => "full_name",
                }
                .to_string()
            }),
            direction: self.direction.map(|v| {
                match v {
                    Direction::Asc => "asc",
                    Direction::Desc => "desc",
                }
                .to_string()
            }),
            visibility: self.visibility.map(|v| {
                match v {
                    Visibility::All => "all",
                    Visibility::Public => "public",
                    Visibility::Private => "private",
                }
                .to_string()
            }),
            affiliation: self.affiliation,
        })
    }
}

/// Store a GitHub token for the current user (checked against GitHub first).
#[utoipa::path(
    post, path = "/api/v1/github/configure", tag = "github",
    security(("bearer_auth" = [])),
    request_body = ConfigureRequest,
    responses(
        (status = 200, description = "Token verified and stored in OpenBao", body = ConfigureResponse),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 422, description = "Not a GitHub token (`validation_failed`) or refused by GitHub (`github_token_rejected`)", body = ErrorBody),
        (status = 429, description = "Too many configuration attempts for this user (`rate_limited`), or GitHub's rate limit (`github_rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
        (status = 502, description = "GitHub error", body = ErrorBody),
        (status = 504, description = "GitHub timeout", body = ErrorBody),
    )
)]
pub async fn configure(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Meta(meta): Meta,
    Body(body): Body<ConfigureRequest>,
) -> Result<Json<ConfigureResponse>, ApiError> {
    let configured = service(&state)?
        .configure(claims.sub, &body.github_token, &meta)
        .await?;
    Ok(Json(ConfigureResponse {
        status: "configured",
        github_login: configured.login,
        scopes: configured.scopes,
    }))
}

/// Forget the current user's GitHub token (OpenBao and metadata).
#[utoipa::path(
    delete, path = "/api/v1/github/configure", tag = "github",
    security(("bearer_auth" = [])),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 404, description = "Nothing configured (`github_not_configured`)", body = ErrorBody),
    )
)]
pub async fn forget(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Meta(meta): Meta,
) -> Result<StatusCode, ApiError> {
    service(&state)?.delete(claims.sub, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The current user's repositories (`GET /user/repos` on GitHub): a JSON
/// array, as GitHub answers, with GitHub's `Link` pagination rewritten to
/// this route and its rate-limit headers.
#[utoipa::path(
    get, path = "/api/v1/github/repos", tag = "github",
    security(("bearer_auth" = [])),
    params(ReposParams),
    responses(
        (status = 200, description = "Repositories", body = Vec<Repo>,
         headers(
            ("link" = String, description = "Pagination (rel first, prev, next, last) as GitHub gives it, pointing at this route; absent on a single page"),
            ("x-ratelimit-remaining" = String, description = "From GitHub"),
            ("x-ratelimit-reset" = String, description = "From GitHub"))),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 404, description = "`github_not_configured`", body = ErrorBody),
        (status = 422, description = "Invalid query parameter", body = ErrorBody),
        (status = 424, description = "GitHub rejected the stored token: reconfigure (`github_token_invalid`)", body = ErrorBody),
        (status = 429, description = "GitHub rate limit (`github_rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
        (status = 502, description = "GitHub error", body = ErrorBody),
        (status = 504, description = "GitHub timeout", body = ErrorBody),
    )
)]
pub async fn repos(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Meta(meta): Meta,
    params: Result<Query<ReposParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            e.body_text(),
        )
    })?;
    let query = params.validate()?;
    let result = service(&state)?.repos(claims.sub, &query, &meta).await?;
    let mut response = with_rate_limit(&result.rate_limit, Json(result.repos));
    if let Some(link) = link_header(&result.page, &query) {
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

/// The current user's GitHub profile.
#[utoipa::path(
    get, path = "/api/v1/github/user", tag = "github",
    security(("bearer_auth" = [])),
    responses(
        (status = 200, description = "Profile", body = Profile),
        (status = 401, description = "Missing or invalid access token", body = ErrorBody),
        (status = 404, description = "`github_not_configured`", body = ErrorBody),
        (status = 424, description = "GitHub rejected the stored token: reconfigure", body = ErrorBody),
        (status = 429, description = "GitHub rate limit (`github_rate_limited`)", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds until a retry can succeed"))),
        (status = 502, description = "GitHub error", body = ErrorBody),
        (status = 504, description = "GitHub timeout", body = ErrorBody),
    )
)]
pub async fn user(
    State(state): State<AppState>,
    CurrentUser(claims): CurrentUser,
    Meta(meta): Meta,
) -> Result<Response, ApiError> {
    let result = service(&state)?.profile(claims.sub, &meta).await?;
    Ok(with_rate_limit(&result.rate_limit, Json(result.profile)))
}
