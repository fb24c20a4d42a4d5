//! GitHub proxy: a user's token lives in OpenBao KV v2 (never in Postgres,
//! never logged or returned); reads go through one shared `reqwest::Client`
//! with GitHub's headers, conditional requests and rate-limit handling.

mod client;
pub mod metrics;

use std::{collections::HashMap, sync::Arc};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub use client::{GithubClient, Page, RateLimit, Upstream, UpstreamError};

use crate::{
    audit::{self, RequestMeta},
    bao::{BaoError, SessionClient, SessionWatch},
    config::GithubConfig,
    db::{
        Db, DbError, act_for,
        limits::{Limits, Take, Verdict},
    },
    ratelimit::Quota,
};

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("GitHub is not configured for this user")]
    NotConfigured,
    #[error("the token does not look like a GitHub token")]
    TokenShape,
    #[error("GitHub rejected the token")]
    TokenRejected,
    #[error("GitHub rejected the stored token; configure a new one")]
    StoredTokenInvalid,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Bao(#[from] BaoError),
    #[error("OpenBao session not established yet")]
    NoSession,
    #[error("too many attempts")]
    RateLimited { retry_after: std::time::Duration },
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    token: String,
}

/// Query of `GET /repos`, already validated.
#[derive(Debug, Clone, Default)]
pub struct RepoQuery {
    pub page: u32,
    pub per_page: u32,
    pub sort: Option<String>,
    pub direction: Option<String>,
    pub visibility: Option<String>,
    pub affiliation: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Repo {
    pub id: i64,
    #[schema(example = "octocat/Hello-World")]
    pub full_name: String,
    pub name: String,
    pub owner: RepoOwner,
    pub private: bool,
    pub description: Option<String>,
    pub html_url: String,
    pub default_branch: Option<String>,
    pub language: Option<String>,
    pub stargazers_count: i64,
    pub forks_count: i64,
    pub fork: bool,
    pub archived: bool,
    pub updated_at: Option<String>,
    pub pushed_at: Option<String>,
}

/// The repository's owner, in GitHub's shape (a subset of its fields).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RepoOwner {
    #[schema(example = "octocat")]
    pub login: String,
    pub id: i64,
    pub avatar_url: Option<String>,
    pub html_url: Option<String>,
    /// `User` or `Organization`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Profile {
    pub id: i64,
    #[schema(example = "octocat")]
    pub login: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub avatar_url: Option<String>,
    pub html_url: String,
    pub company: Option<String>,
    pub location: Option<String>,
    pub bio: Option<String>,
    pub public_repos: i64,
    pub followers: i64,
    pub following: i64,
    pub created_at: Option<String>,
}

pub struct Configured {
    pub login: String,
    pub scopes: Vec<String>,
}

pub struct Repos {
    pub repos: Vec<Repo>,
    pub page: Page,
    pub rate_limit: RateLimit,
}

pub struct ProfileResult {
    pub profile: Profile,
    pub rate_limit: RateLimit,
}

/// Personal access tokens (classic `ghp_`, fine-grained `github_pat_`),
/// OAuth/app tokens (`gho_`, `ghu_`, `ghs_`), or a legacy 40-hex token.
pub fn token_shape_ok(token: &str) -> bool {
    let body_ok = |rest: &str, min: usize, max: usize| {
        (min..=max).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if let Some(rest) = token.strip_prefix("github_pat_") {
        return body_ok(rest, 22, 255);
    }
    for prefix in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        if let Some(rest) = token.strip_prefix(prefix) {
            return body_ok(rest, 30, 251);
        }
    }
    token.len() == 40 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// (user, URL) → (ETag, body).
type EtagCache = HashMap<(Uuid, String), (String, Value, Page)>;

#[derive(Clone)]
pub struct GithubService {
    client: GithubClient,
    db: Db,
    session: SessionWatch,
    kv_prefix: String,
    /// ETag cache: (user, url) → (etag, body). Bounded; purged per user on
    /// reconfigure and delete.
    etags: Arc<std::sync::Mutex<EtagCache>>,
    etag_capacity: usize,
    limits: Limits,
    /// Configure attempts per user, for the service as a whole.
    configure_quota: Quota,
}

impl GithubService {
    pub fn new(config: &GithubConfig, db: Db, session: SessionWatch, limits: Limits) -> Self {
        Self {
            client: GithubClient::new(config),
            db,
            session,
            kv_prefix: config.kv_prefix.clone(),
            etags: Default::default(),
            etag_capacity: config.etag_cache_entries,
            limits,
            configure_quota: Quota::new(
                "github_configure_user",
                config.configure_per_user_per_minute,
            ),
        }
    }

    fn kv_path(&self, user: Uuid) -> String {
        format!("{}/user-{user}/token", self.kv_prefix)
    }

    fn session(&self) -> Result<SessionClient, GithubError> {
        self.session.client().ok_or(GithubError::NoSession)
    }

    fn purge(&self, user: Uuid) {
        self.etags
            .lock()
            .expect("etag lock")
            .retain(|(u, _), _| *u != user);
    }

    /// Checks the token against GitHub, then stores it in OpenBao and the
    /// metadata in Postgres.
    pub async fn configure(
        &self,
        user: Uuid,
        token: &SecretString,
        meta: &RequestMeta,
    ) -> Result<Configured, GithubError> {
        // Each attempt costs a call to GitHub and a write to OpenBao.
        let take = Take {
            quota: self.configure_quota,
            key: self.configure_quota.key(&[user.as_bytes()]),
            spare_known_good: false,
        };
        if let Verdict::Refused { retry_after, .. } = self.limits.check(&[take], None).await? {
            return Err(GithubError::RateLimited { retry_after });
        }
        if !token_shape_ok(token.expose_secret()) {
            return Err(GithubError::TokenShape);
        }
        let upstream = match self.client.get(token, "/user", &[], None).await {
            Ok(u) => u,
            Err(UpstreamError::Unauthorized) => {
                let pool = self.db.pool().await?;
                audit::record_best_effort(
                    &*pool,
                    "github_configure",
                    "failure",
                    Some(user),
                    meta,
                    json!({"reason": "token_rejected"}),
                )
                .await;
                return Err(GithubError::TokenRejected);
            }
            Err(e) => return Err(e.into()),
        };
        let body = upstream.body.unwrap_or(Value::Null);
        let login = body["login"].as_str().unwrap_or_default().to_string();
        let scopes = upstream.scopes.clone();
        self.session()?
            .kv_write(
                &self.kv_path(user),
                &StoredToken {
                    token: token.expose_secret().to_string(),
                },
            )
            .await?;
        self.purge(user);
        let pool = self.db.pool().await?;
        // The row and its audit row commit together: a token nobody could
        // trace is not configured (docs/audit.md).
        let mut tx = pool.begin().await.map_err(|e| pool.error(e))?;
        act_for(&mut tx, user).await.map_err(|e| pool.error(e))?;
        sqlx::query(
            "insert into github_integrations (user_id, github_login, scopes, token_status, configured_at) \
             values ($1, $2, $3, 'valid', now()) \
             on conflict (user_id) do update set github_login = excluded.github_login, scopes = excluded.scopes, \
             token_status = 'valid', configured_at = now()",
        )
        .bind(user)
        .bind(&login)
        .bind(&scopes)
        .execute(&mut *tx)
        .await
        .map_err(|e| pool.error(e))?;
        audit::record(
            &mut *tx,
            "github_configure",
            "success",
            Some(user),
            meta,
            json!({"github_login": login}),
        )
        .await
        .map_err(|e| pool.unaudited(e))?;
        tx.commit().await.map_err(|e| pool.commit_error(e))?;
        Ok(Configured { login, scopes })
    }

    /// Forgets the token (every KV version and its metadata) and the row.
    pub async fn delete(&self, user: Uuid, meta: &RequestMeta) -> Result<(), GithubError> {
        let pool = self.db.pool().await?;
        let mut tx = pool.begin().await.map_err(|e| pool.error(e))?;
        act_for(&mut tx, user).await.map_err(|e| pool.error(e))?;
        let existed = sqlx::query("delete from github_integrations where user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(|e| pool.error(e))?
            .rows_affected()
            > 0;
        tx.commit().await.map_err(|e| pool.commit_error(e))?;
        self.session()?.kv_delete(&self.kv_path(user)).await?;
        self.purge(user);
        if !existed {
            return Err(GithubError::NotConfigured);
        }
        // Removing access never waits on the trail.
        audit::record_best_effort(
            &*pool,
            "github_delete",
            "success",
            Some(user),
            meta,
            json!({}),
        )
        .await;
        Ok(())
    }

    /// Read per request from OpenBao, so a delete or reconfigure takes effect
    /// at once on every replica.
    async fn token(&self, user: Uuid) -> Result<SecretString, GithubError> {
        let stored: Option<StoredToken> = self.session()?.kv_read(&self.kv_path(user)).await?;
        stored
            .map(|s| SecretString::from(s.token))
            .ok_or(GithubError::NotConfigured)
    }

    async fn fetch(
        &self,
        user: Uuid,
        path: &str,
        query: &[(&str, String)],
        meta: &RequestMeta,
    ) -> Result<Upstream, GithubError> {
        let token = self.token(user).await?;
        let key = (user, format!("{path}?{}", serde_urlencoded_pairs(query)));
        let cached = self.etags.lock().expect("etag lock").get(&key).cloned();
        let result = self
            .client
            .get(
                &token,
                path,
                query,
                cached.as_ref().map(|(etag, _, _)| etag.as_str()),
            )
            .await;
        let mut upstream = match result {
            Ok(u) => u,
            Err(UpstreamError::Unauthorized) => {
                self.mark_invalid(user, meta).await;
                return Err(GithubError::StoredTokenInvalid);
            }
            Err(e) => return Err(e.into()),
        };
        if upstream.not_modified {
            // 304: GitHub charged no rate limit; serve what we have.
            // A 304 may not repeat the Link header: the cached one stands.
            if let Some((_, body, page)) = cached {
                ::metrics::counter!(metrics::ETAG_HITS).increment(1);
                upstream.body = Some(body);
                upstream.page = page;
            }
        } else if let (Some(etag), Some(body)) = (&upstream.etag, &upstream.body) {
            let mut etags = self.etags.lock().expect("etag lock");
            if etags.len() >= self.etag_capacity {
                etags.clear(); // crude but bounded; entries are cheap to refetch
            }
            etags.insert(key, (etag.clone(), body.clone(), upstream.page.clone()));
        }
        self.touch(user).await;
        Ok(upstream)
    }

    async fn mark_invalid(&self, user: Uuid, meta: &RequestMeta) {
        if let Ok(pool) = self.db.pool().await {
            let marked = async {
                let mut tx = pool.begin().await?;
                act_for(&mut tx, user).await?;
                sqlx::query(
                    "update github_integrations set token_status = 'invalid' where user_id = $1",
                )
                .bind(user)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            };
            if let Err(e) = marked.await {
                tracing::warn!(error = %e, "could not mark a GitHub token invalid");
            }
            audit::record_best_effort(
                &*pool,
                "github_token_invalid",
                "detected",
                Some(user),
                meta,
                json!({}),
            )
            .await;
        }
        self.purge(user);
    }

    async fn touch(&self, user: Uuid) {
        if let Ok(pool) = self.db.pool().await {
            // One round trip: github_touch acts for the user and updates.
            let _ = sqlx::query("select github_touch($1)")
                .bind(user)
                .execute(&*pool)
                .await;
        }
    }

    pub async fn repos(
        &self,
        user: Uuid,
        q: &RepoQuery,
        meta: &RequestMeta,
    ) -> Result<Repos, GithubError> {
        let mut query = vec![
            ("page", q.page.to_string()),
            ("per_page", q.per_page.to_string()),
        ];
        for (k, v) in [
            ("sort", &q.sort),
            ("direction", &q.direction),
            ("visibility", &q.visibility),
            ("affiliation", &q.affiliation),
        ] {
            if let Some(v) = v {
                query.push((k, v.clone()));
            }
        }
        let upstream = self.fetch(user, "/user/repos", &query, meta).await?;
        let repos = upstream
            .body
            .as_ref()
            .and_then(Value::as_array)
            .map(|items| items.iter().map(repo_from).collect())
            .unwrap_or_default();
        Ok(Repos {
            repos,
            page: upstream.page,
            rate_limit: upstream.rate_limit,
        })
    }

    pub async fn profile(
        &self,
        user: Uuid,
        meta: &RequestMeta,
    ) -> Result<ProfileResult, GithubError> {
        let upstream = self.fetch(user, "/user", &[], meta).await?;
        let b = upstream.body.unwrap_or(Value::Null);
        Ok(ProfileResult {
            profile: Profile {
                id: b["id"].as_i64().unwrap_or_default(),
                login: s(&b["login"]).unwrap_or_default(),
                name: s(&b["name"]),
                email: s(&b["email"]),
                avatar_url: s(&b["avatar_url"]),
                html_url: s(&b["html_url"]).unwrap_or_default(),
                company: s(&b["company"]),
                location: s(&b["location"]),
                bio: s(&b["bio"]),
                public_repos: b["public_repos"].as_i64().unwrap_or_default(),
                followers: b["followers"].as_i64().unwrap_or_default(),
                following: b["following"].as_i64().unwrap_or_default(),
                created_at: s(&b["created_at"]),
            },
            rate_limit: upstream.rate_limit,
        })
    }
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn repo_from(r: &Value) -> Repo {
    Repo {
        id: r["id"].as_i64().unwrap_or_default(),
        full_name: s(&r["full_name"]).unwrap_or_default(),
        name: s(&r["name"]).unwrap_or_default(),
        owner: RepoOwner {
            login: s(&r["owner"]["login"]).unwrap_or_default(),
            id: r["owner"]["id"].as_i64().unwrap_or_default(),
            avatar_url: s(&r["owner"]["avatar_url"]),
            html_url: s(&r["owner"]["html_url"]),
            kind: s(&r["owner"]["type"]),
        },
        private: r["private"].as_bool().unwrap_or_default(),
        description: s(&r["description"]),
        html_url: s(&r["html_url"]).unwrap_or_default(),
        default_branch: s(&r["default_branch"]),
        language: s(&r["language"]),
        stargazers_count: r["stargazers_count"].as_i64().unwrap_or_default(),
        forks_count: r["forks_count"].as_i64().unwrap_or_default(),
        fork: r["fork"].as_bool().unwrap_or_default(),
        archived: r["archived"].as_bool().unwrap_or_default(),
        updated_at: s(&r["updated_at"]),
        pushed_at: s(&r["pushed_at"]),
    }
}

fn serde_urlencoded_pairs(q: &[(&str, String)]) -> String {
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::token_shape_ok;

    #[test]
    fn token_shapes() {
        assert!(token_shape_ok(&format!("ghp_{}", "a".repeat(36))));
        assert!(token_shape_ok(&format!("github_pat_{}", "A1_".repeat(27))));
        assert!(token_shape_ok(&"0123456789abcdef".repeat(3)[..40]));
        for bad in [
            "",
            "ghp_",
            "ghp_short",
            "bearer xyz",
            &format!("ghp_{}!", "a".repeat(36)),
        ] {
            assert!(!token_shape_ok(bad), "{bad}");
        }
    }
}
