//! The process's TLS crypto provider. rustls picks one by itself only when exactly one of
//! its providers is compiled in; a build that links both (the workspace does) must install
//! one before the first TLS connection, or some connections (sqlx's `sslmode=verify-ca`)
//! panic. Every program that talks to Postgres calls [`install_crypto_provider`] first.

/// Installs AWS-LC as the process's rustls provider; a second call changes nothing.
pub fn install_crypto_provider() {
    // Err only when one is installed already: nothing to do.
    _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
