//! What every handler shares.

use std::sync::Arc;

use crate::{
    auth::AuthService, config::Config, db::Db, github::GithubService, readiness::Readiness,
};

/// What handlers share: one `Arc`, so the clone axum makes for every
/// request is a reference count, not a copy of every service.
#[derive(Clone)]
pub struct AppState(Arc<AppStateParts>);

impl AppState {
    pub fn new(parts: AppStateParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;
    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

pub struct AppStateParts {
    pub config: Arc<Config>,
    pub readiness: Readiness,
    /// The rotating pool; `None` only when running without identity (dev).
    pub db: Option<Db>,
    /// Accounts and tokens; `None` when running without the database.
    pub auth: Option<AuthService>,
    /// The GitHub proxy; `None` when running without the database.
    pub github: Option<GithubService>,
}
