//! Typed OpenBao endpoints vaultrs lacks or gets wrong: database credentials
//! with their lease (vaultrs drops `lease_id`), `sys/leases/renew|revoke`, and
//! `auth/token/revoke-self` (vaultrs's path is malformed).

use rustify_derive::Endpoint;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `GET {mount}/creds/{role}`, read with its envelope so the lease survives.
#[derive(Debug, Endpoint)]
#[endpoint(path = "{self.mount}/creds/{self.role}", response = "DbCredsResponse")]
pub struct DbCredsRequest {
    #[endpoint(skip)]
    pub mount: String,
    #[endpoint(skip)]
    pub role: String,
}

#[derive(Debug, Deserialize)]
pub struct DbCredsResponse {
    pub lease_id: String,
    pub lease_duration: u64,
    pub renewable: bool,
    pub data: DbCredsData,
}

#[derive(Debug, Deserialize)]
pub struct DbCredsData {
    pub username: String,
    pub password: SecretString,
}

/// `PUT sys/leases/renew`.
#[derive(Debug, Endpoint, Serialize)]
#[endpoint(
    path = "sys/leases/renew",
    method = "PUT",
    response = "LeaseRenewResponse"
)]
pub struct LeaseRenewRequest {
    pub lease_id: String,
    /// Requested extension in seconds (OpenBao may cap it at the max TTL).
    pub increment: u64,
}

#[derive(Debug, Deserialize)]
pub struct LeaseRenewResponse {
    pub lease_duration: u64,
}

/// `PUT sys/leases/revoke`.
#[derive(Debug, Endpoint, Serialize)]
#[endpoint(path = "sys/leases/revoke", method = "PUT")]
pub struct LeaseRevokeRequest {
    pub lease_id: String,
}

/// `POST auth/token/revoke-self`: also revokes every lease the token created.
#[derive(Debug, Endpoint)]
#[endpoint(path = "auth/token/revoke-self", method = "POST")]
pub struct TokenRevokeSelfRequest {}
