//! `habitat outbox install`: the outbox's schema in a producer's database — its tables,
//! `enqueue`, and the event types producers may write (from this release's catalog).

use contracts::records::CATALOG;
use postgres_sink::store::prepare_schema;
use sqlx::Connection;

/// Serialises installs into one database (a concurrent `CREATE SCHEMA` fails otherwise).
const INSTALL_LOCK: i64 = 0x6f75_7462_6f78_0001;

/// Creates `schema` when missing, applies the outbox's migrations in it, and records the
/// event types producers may write. Run again after an upgrade: it is idempotent.
pub async fn install(database_url: &str, schema: &str) -> anyhow::Result<()> {
    let mut conn = prepare_schema(
        database_url,
        schema,
        INSTALL_LOCK,
        &sqlx::migrate!("./migrations"),
    )
    .await?;
    let writable: Vec<&str> = CATALOG
        .iter()
        .filter(|info| info.producer_writable)
        .map(|info| info.event_type)
        .collect();
    let mut tx = conn.begin().await?;
    _ = sqlx::query("DELETE FROM writable_types")
        .execute(&mut *tx)
        .await?;
    _ = sqlx::query("INSERT INTO writable_types SELECT unnest($1::text[])")
        .bind(&writable)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}
