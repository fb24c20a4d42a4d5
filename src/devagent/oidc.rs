//! OIDC discovery, as SPIRE's oidc-discovery-provider serves it, so OpenBao's
//! JWT auth is configured with `oidc_discovery_url` exactly as in production.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use super::state::AgentState;

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(keys))
        .with_state(state)
}

async fn discovery(State(state): State<Arc<AgentState>>) -> Json<Value> {
    Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/keys", state.issuer),
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
    }))
}

async fn keys(State(state): State<Arc<AgentState>>) -> Json<Value> {
    Json(state.jwt.read().await.oidc_jwks())
}
