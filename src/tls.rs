//! One rustls crypto provider (ring) for the whole process: several crates
//! link rustls, and rustls refuses to guess when more than one could apply.

/// Idempotent; call before building any TLS client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
