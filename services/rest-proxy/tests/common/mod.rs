//! Shared pieces of the proxy's tests.

#![allow(dead_code)]

use rdkafka::ClientConfig;
use rest_proxy::keys::{self, ANY};

/// Client settings for a broker on the loopback.
pub fn client(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    _ = config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4");
    config
}

/// A key store on a fresh database with one key for `tenants` (every event type): the
/// pool and the key's token.
pub fn key_store(
    rt: &tokio::runtime::Runtime,
    name: &str,
    tenants: &[String],
) -> (sqlx::PgPool, String) {
    let pool = rt
        .block_on(sqlx::PgPool::connect(&test_support::database()))
        .expect("pool");
    rt.block_on(keys::migrate(&pool)).expect("migrate");
    let (_, token) = rt
        .block_on(keys::create(&pool, name, tenants, &[ANY.to_owned()]))
        .expect("key");
    (pool, token)
}
