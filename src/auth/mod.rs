//! User accounts and tokens: registration with a password policy, Argon2id
//! hashes (bcrypt upgraded on login), Transit-signed access tokens, rotating
//! refresh tokens with reuse detection, login rate limits, audit rows.

pub mod jwt;
pub mod keys;
pub mod metrics;
pub mod password;
pub mod policy;
pub mod ratelimit;
pub mod sessions;

use std::{sync::Arc, time::Duration};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

pub use jwt::{AccessClaims, TokenError, TokenService, TokenSettings};
use password::{Hasher, Verified};
use ratelimit::LoginLimits;

use crate::{
    audit::{
        self, RequestMeta,
        batch::{Batcher, Entry},
    },
    config::AuthConfig,
    db::{
        Db, DbError, PoolRef, Retryable, act_for,
        limits::{Limits, Take, Verdict},
        retry_once,
    },
    ratelimit::{Quota, ip_part},
};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("username or email already registered")]
    AccountExists,
    #[error("too many attempts")]
    RateLimited { retry_after: Duration },
    #[error("refresh token invalid")]
    RefreshInvalid,
    #[error("refresh token reused")]
    RefreshReused,
    /// The access token's session ended, or its account is gone.
    #[error("session ended")]
    SessionEnded,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Hash(#[from] password::HashError),
}

impl Retryable for AuthError {
    fn is_disconnected(&self) -> bool {
        matches!(self, AuthError::Db(e) if e.is_disconnected())
    }
}

/// A user as shown to its owner (no secrets).
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub created_at: OffsetDateTime,
    pub github_configured: bool,
}

pub struct Tokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: SecretString,
}

#[derive(Clone)]
pub struct AuthService {
    db: Db,
    hasher: Hasher,
    tokens: TokenService,
    limits: Limits,
    login_limits: Arc<LoginLimits>,
    /// Per client IP, checked before any hashing.
    register_quota: Quota,
    /// The internal API's audit rows, appended in batches.
    audit: Batcher,
    /// Per internal caller (SPIFFE ID), in this replica.
    internal_limiter: Arc<governor::DefaultKeyedRateLimiter<String>>,
    refresh_ttl: Duration,
}

fn refresh_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_refresh_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl AuthService {
    /// `internal_per_minute`: the internal API's calls per caller and minute.
    pub fn new(
        db: Db,
        tokens: TokenService,
        limits: Limits,
        config: &AuthConfig,
        internal_per_minute: u32,
        audit: Batcher,
    ) -> Self {
        Self {
            db,
            audit,
            hasher: Hasher::new(config.hash_concurrency, config.login_min_duration),
            tokens,
            limits,
            login_limits: Arc::new(LoginLimits::new(
                config.login_per_ip_per_minute,
                config.login_per_username_ip_per_minute,
                config.login_per_username_per_minute,
            )),
            register_quota: Quota::new("register_ip", config.register_per_ip_per_minute),
            internal_limiter: Arc::new(governor::RateLimiter::keyed(governor::Quota::per_minute(
                std::num::NonZeroU32::new(internal_per_minute.max(1)).expect("non-zero"),
            ))),
            refresh_ttl: config.refresh_ttl,
        }
    }

    /// The internal API's limit per caller: in this replica's memory, not
    /// PostgreSQL (callers are authenticated workloads, and a shared
    /// counter would double the cost of every call; N replicas allow N
    /// times the rate).
    pub async fn limit_internal_caller(&self, entry: &str, caller: &str) -> Result<(), AuthError> {
        use governor::clock::Clock;
        match self.internal_limiter.check_key(&caller.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                ::metrics::counter!(crate::ratelimit::RATE_LIMITED, "limiter" => "internal_caller")
                    .increment(1);
                tracing::debug!(
                    event = "internal_rate_limited",
                    caller,
                    entry,
                    "internal caller over its rate"
                );
                Err(AuthError::RateLimited {
                    retry_after: not_until
                        .wait_time_from(governor::clock::DefaultClock::default().now()),
                })
            }
        }
    }

    /// RFC 7662 for precinct's access tokens: the claims when the token
    /// verifies and its session is live and belongs to its user (asked of
    /// PostgreSQL, not of the notifications), `None` for anything else.
    /// Audited with the caller's SPIFFE ID. `Err` only when it cannot be
    /// decided (no keys yet, the database down): 503, never a guess.
    pub async fn introspect(
        &self,
        token: &str,
        caller: &str,
        meta: &RequestMeta,
    ) -> Result<Option<Arc<AccessClaims>>, AuthError> {
        let claims = match self.tokens.verify(token).await {
            Ok(claims) => Some(claims),
            Err(TokenError::Keys(e)) => return Err(AuthError::Token(TokenError::Keys(e))),
            Err(_) => None,
        };
        retry_once(|| self.introspect_once(claims.clone(), caller, meta)).await
    }

    async fn introspect_once(
        &self,
        claims: Option<Arc<AccessClaims>>,
        caller: &str,
        meta: &RequestMeta,
    ) -> Result<Option<Arc<AccessClaims>>, AuthError> {
        let live = match &claims {
            Some(c) => {
                let pool = self.db.pool().await?;
                // One round trip: acts for the user and checks the session.
                sqlx::query_scalar::<_, bool>("select session_live($1, $2)")
                    .bind(c.sub)
                    .bind(c.sid)
                    .fetch_one(&*pool)
                    .await
                    .map_err(|e| pool.error(e))?
            }
            None => false,
        };
        let active = claims.filter(|_| live);
        let (outcome, user) = match &active {
            Some(c) => ("active", Some(c.sub)),
            None => ("inactive", None),
        };
        self.internal_call_row("internal_introspect", outcome, user, caller, meta)?;
        Ok(active)
    }

    /// A user's public profile (id, username, creation), for an internal
    /// caller; audited with its SPIFFE ID.
    pub async fn public_profile(
        &self,
        id: Uuid,
        caller: &str,
        meta: &RequestMeta,
    ) -> Result<Option<User>, AuthError> {
        let user = retry_once(|| async {
            let pool = self.db.pool().await?;
            let row = sqlx::query("select id, username, email, created_at from public_profile($1)")
                .bind(id)
                .fetch_optional(&*pool)
                .await
                .map_err(|e| pool.error(e))?;
            Ok::<_, AuthError>(row.map(|r| User {
                id: r.get("id"),
                username: r.get("username"),
                email: r.get("email"),
                created_at: r.get("created_at"),
                github_configured: false,
            }))
        })
        .await?;
        let (outcome, found) = match &user {
            Some(_) => ("found", Some(id)),
            None => ("not_found", None),
        };
        self.internal_call_row("internal_user", outcome, found, caller, meta)?;
        Ok(user)
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Audits a refusal by a rate limit (when the database is there to
    /// record it) and returns the error that answers 429.
    fn rate_limited(
        &self,
        event: &'static str,
        retry_after: Duration,
        meta: &RequestMeta,
    ) -> AuthError {
        self.refused(Entry::new(
            event,
            "failure",
            None,
            meta,
            json!({"reason": "rate_limited"}),
        ));
        AuthError::RateLimited { retry_after }
    }

    /// An internal call's row, queued with its caller: a call whose row
    /// cannot be queued is refused (503), never answered unaudited.
    fn internal_call_row(
        &self,
        event: &'static str,
        outcome: &'static str,
        user: Option<Uuid>,
        caller: &str,
        meta: &RequestMeta,
    ) -> Result<(), AuthError> {
        self.audit
            .record(Entry::new(
                event,
                outcome,
                user,
                meta,
                json!({"caller": caller}),
            ))
            .map_err(|e| AuthError::Db(DbError::Unavailable(e.to_string())))
    }

    /// A refusal's row: queued and appended in batches, as the internal
    /// API's are. Refusals come at an attacker's rate; a synchronous,
    /// chained row each made a refused login cost 6 times what it did
    /// without the chain (docs/audit.md). A full queue drops the row
    /// (counted) and the refusal stands.
    fn refused(&self, entry: Entry) {
        let _ = self.audit.record(entry);
    }

    /// Creates an account. Duplicate username (case-insensitive) or email
    /// answers the same `AccountExists`, whichever collided.
    pub async fn register(
        &self,
        username: &str,
        email: &str,
        password: &SecretString,
        meta: &RequestMeta,
    ) -> Result<User, AuthError> {
        // Before Argon2id: a flood of registrations must not buy CPU.
        let take = Take {
            quota: self.register_quota,
            key: self.register_quota.key(&[&ip_part(meta.client_ip)]),
            spare_known_good: false,
        };
        if let Verdict::Refused { retry_after, .. } = self.limits.check(&[take], None).await? {
            return Err(self.rate_limited("register", retry_after, meta));
        }
        let hash = self.hasher.hash(password).await?;
        retry_once(|| self.insert_user(username, email, &hash, meta)).await
    }

    async fn insert_user(
        &self,
        username: &str,
        email: &str,
        hash: &str,
        meta: &RequestMeta,
    ) -> Result<User, AuthError> {
        let pool = self.db.pool().await?;
        let id = Uuid::now_v7();
        let mut tx = pool.begin().await.map_err(|e| pool.error(e))?;
        let created: Option<OffsetDateTime> =
            sqlx::query_scalar("select register_user($1, $2, $3, $4)")
                .bind(id)
                .bind(username)
                .bind(email)
                .bind(hash)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| pool.error(e))?;
        let Some(created_at) = created else {
            drop(tx);
            self.refused(Entry::new("register", "conflict", None, meta, json!({})));
            return Err(AuthError::AccountExists);
        };
        // An account nobody could trace is not created (docs/audit.md).
        audit::record(&mut *tx, "register", "success", Some(id), meta, json!({}))
            .await
            .map_err(|e| pool.unaudited(e))?;
        // A commit lost midway leaves the outcome unknown (503, not retried).
        tx.commit().await.map_err(|e| pool.commit_error(e))?;
        Ok(User {
            id,
            username: username.to_string(),
            email: email.to_string(),
            created_at,
            github_configured: false,
        })
    }

    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        meta: &RequestMeta,
    ) -> Result<Tokens, AuthError> {
        let takes = self.login_limits.takes(meta.client_ip, username);
        let known_good = ratelimit::known_good(meta.client_ip, username);
        // Fails closed: without PostgreSQL to count, no login (503).
        let verdict = self
            .limits
            .check(&takes, Some(known_good))
            .await
            .inspect_err(|_| {
                ::metrics::counter!(metrics::LOGINS, "outcome" => "error").increment(1);
            })?;
        if let Verdict::Refused {
            retry_after,
            limiter,
        } = verdict
        {
            ::metrics::counter!(metrics::LOGINS, "outcome" => "rate_limited").increment(1);
            tracing::debug!(event = "login_rate_limited", limiter, client_ip = %meta.client_ip, "login refused by a rate limit");
            return Err(self.rate_limited("login", retry_after, meta));
        }
        // A lost connection before the commit runs the login again; a
        // commit lost midway leaves at most an unused refresh family.
        let result = retry_once(|| self.login_once(username, password, meta)).await;
        let outcome = match &result {
            Ok(_) => "success",
            Err(AuthError::InvalidCredentials) => "invalid_credentials",
            Err(_) => "error",
        };
        ::metrics::counter!(metrics::LOGINS, "outcome" => outcome).increment(1);
        let tokens = result?;
        // Best effort: a failure only means the backstop may apply to this
        // client until its next login.
        if let Err(e) = self.limits.remember_known_good(known_good).await {
            tracing::warn!(error = %e, "could not record a known-good login client");
        }
        Ok(tokens)
    }

    async fn login_once(
        &self,
        username: &str,
        password: &SecretString,
        meta: &RequestMeta,
    ) -> Result<Tokens, AuthError> {
        let pool = self.db.pool().await?;
        let user = sqlx::query("select id, username, password_hash from login_lookup($1)")
            .bind(username)
            .fetch_optional(&*pool)
            .await
            .map_err(|e| pool.error(e))?;
        let stored: Option<String> = user.as_ref().map(|r| r.get("password_hash"));
        let verified = self.hasher.verify(password, stored.as_deref()).await?;
        let Some(user) = user.filter(|_| verified != Verified::No) else {
            let reason = if stored.is_some() {
                "bad_password"
            } else {
                "unknown_user"
            };
            // No username: a typo'd password pasted as the username would
            // otherwise land in the logs. The audit row keeps the user id.
            tracing::info!(event = "login_failed", reason, client_ip = %meta.client_ip, "login failed");
            self.refused(Entry::new(
                "login",
                "failure",
                None,
                meta,
                json!({"reason": reason}),
            ));
            return Err(AuthError::InvalidCredentials);
        };
        let id: Uuid = user.get("id");
        let name: String = user.get("username");
        if verified == Verified::YesRehash {
            // Transparent upgrade to Argon2id (from bcrypt or weaker params).
            let fresh = self.hasher.hash(password).await?;
            sqlx::query("select upgrade_password_hash($1, $2, $3)")
                .bind(id)
                .bind(stored.as_deref())
                .bind(&fresh)
                .execute(&*pool)
                .await
                .map_err(|e| pool.error(e))?;
            tracing::info!(user_id = %id, "password hash upgraded to Argon2id");
        }
        self.issue_new_family(&pool, id, &name, meta).await
    }

    /// A login: a signed access token (Transit first: if OpenBao fails,
    /// nothing is written), the first refresh token of a new family and
    /// the audit row, in one transaction: a login that cannot be audited
    /// does not happen.
    async fn issue_new_family(
        &self,
        pool: &PoolRef,
        user_id: Uuid,
        username: &str,
        meta: &RequestMeta,
    ) -> Result<Tokens, AuthError> {
        let family = Uuid::now_v7();
        let access_token = self.tokens.issue(user_id, username, family).await?;
        let mut tx = pool.begin().await.map_err(|e| pool.error(e))?;
        act_for(&mut tx, user_id).await.map_err(|e| pool.error(e))?;
        sqlx::query("insert into refresh_families (id, user_id) values ($1, $2)")
            .bind(family)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| pool.error(e))?;
        let refresh = insert_refresh(&mut tx, user_id, family, self.refresh_ttl)
            .await
            .map_err(|e| pool.error(e))?;
        audit::record(&mut *tx, "login", "success", Some(user_id), meta, json!({}))
            .await
            .map_err(|e| pool.unaudited(e))?;
        tx.commit().await.map_err(|e| pool.commit_error(e))?;
        Ok(self.tokens_of(access_token, refresh))
    }

    fn tokens_of(&self, access_token: String, refresh: String) -> Tokens {
        Tokens {
            access_token,
            expires_in: self.tokens.ttl().as_secs(),
            refresh_token: SecretString::from(refresh),
        }
    }

    /// One use per refresh token; a second use revokes its whole family.
    ///
    /// One transaction with the family's row locked: concurrent refreshes of
    /// one family run one after the other, so exactly one spends a token and
    /// a reuse revokes every successor. The new access token is signed before
    /// anything is spent: if Transit or the database fails, the presented
    /// token is untouched and the client may retry (503).
    pub async fn refresh(
        &self,
        token: &SecretString,
        meta: &RequestMeta,
    ) -> Result<Tokens, AuthError> {
        retry_once(|| self.refresh_once(token, meta)).await
    }

    async fn refresh_once(
        &self,
        token: &SecretString,
        meta: &RequestMeta,
    ) -> Result<Tokens, AuthError> {
        let pool = self.db.pool().await?;
        let hash = refresh_hash(token.expose_secret());
        let mut tx = pool.begin().await.map_err(|e| pool.error(e))?;
        let Some(locked) = lock_family(&mut tx, &hash)
            .await
            .map_err(|e| pool.error(e))?
        else {
            drop(tx);
            self.refused(Entry::new(
                "refresh",
                "failure",
                None,
                meta,
                json!({"reason": "invalid"}),
            ));
            return Err(AuthError::RefreshInvalid);
        };
        let Locked {
            family,
            user_id,
            revoked: family_revoked,
        } = locked;
        // A new statement after the lock: it sees what an earlier holder of
        // the lock committed (READ COMMITTED takes a snapshot per statement).
        let row = sqlx::query(
            "select u.username, t.used_at is not null as used, \
                    t.revoked_at is not null as revoked, t.expires_at <= now() as expired \
             from refresh_tokens t join users u on u.id = t.user_id where t.token_hash = $1",
        )
        .bind(&hash)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| pool.error(e))?;
        if row.get::<bool, _>("used") {
            if !family_revoked {
                revoke_family(&mut tx, family)
                    .await
                    .map_err(|e| pool.error(e))?;
                ::metrics::counter!(metrics::REFRESH_REUSE).increment(1);
                tracing::warn!(event = "refresh_reuse_detected", user_id = %user_id, "refresh token reused: family revoked");
            }
            tx.commit().await.map_err(|e| pool.commit_error(e))?;
            self.tokens
                .ended_sessions()
                .end(family, OffsetDateTime::now_utc());
            // After the commit: a revocation never waits on the trail.
            audit::record_best_effort(
                &*pool,
                "refresh_reuse",
                "family_revoked",
                Some(user_id),
                meta,
                json!({}),
            )
            .await;
            return Err(AuthError::RefreshReused);
        }
        if family_revoked || row.get::<bool, _>("revoked") || row.get::<bool, _>("expired") {
            drop(tx);
            self.refused(Entry::new(
                "refresh",
                "failure",
                Some(user_id),
                meta,
                json!({"reason": "invalid"}),
            ));
            return Err(AuthError::RefreshInvalid);
        }
        let username: String = row.get("username");
        // Transit first: a failure here rolls back and spends nothing.
        let access_token = self.tokens.issue(user_id, &username, family).await?;
        let refresh = insert_refresh(&mut tx, user_id, family, self.refresh_ttl)
            .await
            .map_err(|e| pool.error(e))?;
        sqlx::query("update refresh_tokens set used_at = now() where token_hash = $1")
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(|e| pool.error(e))?;
        audit::record(
            &mut *tx,
            "refresh",
            "success",
            Some(user_id),
            meta,
            json!({}),
        )
        .await
        .map_err(|e| pool.unaudited(e))?;
        tx.commit().await.map_err(|e| pool.commit_error(e))?;
        Ok(self.tokens_of(access_token, refresh))
    }

    /// Revokes the family of `token` (every device session of that login).
    pub async fn logout(&self, token: &SecretString, meta: &RequestMeta) -> Result<(), AuthError> {
        retry_once(|| self.logout_once(token, meta)).await
    }

    async fn logout_once(&self, token: &SecretString, meta: &RequestMeta) -> Result<(), AuthError> {
        let pool = self.db.pool().await?;
        let hash = refresh_hash(token.expose_secret());
        let mut tx = pool.begin().await.map_err(|e| pool.error(e))?;
        let Some(Locked {
            family, user_id, ..
        }) = lock_family(&mut tx, &hash)
            .await
            .map_err(|e| pool.error(e))?
        else {
            return Err(AuthError::RefreshInvalid);
        };
        revoke_family(&mut tx, family)
            .await
            .map_err(|e| pool.error(e))?;
        tx.commit().await.map_err(|e| pool.commit_error(e))?;
        // This replica refuses the session's access tokens at once; the
        // trigger's notification tells every other one.
        self.tokens
            .ended_sessions()
            .end(family, OffsetDateTime::now_utc());
        // After the commit: a logout never waits on the trail.
        audit::record_best_effort(&*pool, "logout", "success", Some(user_id), meta, json!({}))
            .await;
        Ok(())
    }

    /// The user of a live session: `SessionEnded` when the session ended or
    /// the account is gone. Checked in the same query as the profile, so
    /// this route never trusts a notification it may not have received yet.
    pub async fn me(&self, user_id: Uuid, sid: Uuid) -> Result<User, AuthError> {
        retry_once(|| self.me_once(user_id, sid)).await
    }

    async fn me_once(&self, user_id: Uuid, sid: Uuid) -> Result<User, AuthError> {
        let pool = self.db.pool().await?;
        // One round trip: me() acts for the user (row-level security) and
        // reads the profile of the live session.
        let row = sqlx::query("select id, username, email, created_at, github from me($1, $2)")
            .bind(user_id)
            .bind(sid)
            .fetch_optional(&*pool)
            .await
            .map_err(|e| pool.error(e))?;
        row.map(|r| User {
            id: r.get("id"),
            username: r.get("username"),
            email: r.get("email"),
            created_at: r.get("created_at"),
            github_configured: r.get("github"),
        })
        .ok_or(AuthError::SessionEnded)
    }
}

async fn insert_refresh(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    family: Uuid,
    ttl: Duration,
) -> Result<String, sqlx::Error> {
    let refresh = new_refresh_token();
    sqlx::query(
        "insert into refresh_tokens (id, family_id, user_id, token_hash, expires_at) values ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(family)
    .bind(user_id)
    .bind(refresh_hash(&refresh))
    .bind(OffsetDateTime::now_utc() + ttl)
    .execute(conn)
    .await?;
    Ok(refresh)
}

/// A presented refresh token's family, locked.
struct Locked {
    family: Uuid,
    user_id: Uuid,
    revoked: bool,
}

/// Locks the family of the token with `hash` for the rest of `tx`, which
/// then acts for its user (refresh_lookup), or None for a token nobody
/// issued.
async fn lock_family(
    tx: &mut sqlx::PgConnection,
    hash: &[u8],
) -> Result<Option<Locked>, sqlx::Error> {
    let (family, user_id): (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("select family_id, user_id from refresh_lookup($1)")
            .bind(hash)
            .fetch_one(&mut *tx)
            .await?;
    let (Some(family), Some(user_id)) = (family, user_id) else {
        return Ok(None);
    };
    let revoked: Option<bool> = sqlx::query_scalar(
        "select revoked_at is not null from refresh_families where id = $1 for update",
    )
    .bind(family)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(revoked.map(|revoked| Locked {
        family,
        user_id,
        revoked,
    }))
}

/// Under the family's lock: the family and every token of it.
async fn revoke_family(tx: &mut sqlx::PgConnection, family: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update refresh_families set revoked_at = now() where id = $1 and revoked_at is null",
    )
    .bind(family)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update refresh_tokens set revoked_at = now() where family_id = $1 and revoked_at is null",
    )
    .bind(family)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
