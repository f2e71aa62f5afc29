//! Replay-to-verify, the auditor's check that replaying the topics produces the same
//! state.
//!
//! 1. In one snapshot of the live schema: read the sink's offsets and copy every table
//!    into `<schema>_verify_live` — the state those offsets produced.
//! 2. Rebuild: read every partition from the beginning up to those offsets into a fresh,
//!    migrated `<schema>_verify`, through the same code the sink writes with.
//! 3. Diff the two table by table and print what differs. `recorded_at` (when the sink
//!    wrote a log row) is the only column left out. Dead letters are operators' work
//!    (status, resolutions), not a function of the topics, and are not compared.
//!
//! On compacted topics the entity tables and the ledger — the latest state per key — are
//! compared whole. `event_log` is the audit history that outlives compaction: a record
//! cleaned from its topic since the sink logged it cannot be replayed, so `event_log` is
//! compared in the direction that holds — every record still on the topics is logged,
//! identical, once — and the rows no longer on the topics are counted, not compared.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use tokio::runtime::Handle;

use crate::{
    store::{Partition, Store, options},
    tables::{ENTITIES, ident},
};

mod rebuild;
pub use rebuild::{Rebuilt, Source, rebuild, rebuild_reporting};

/// One row that differs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Difference {
    pub table: String,
    pub key: String,
    /// `missing in replay`, `missing in live`, or `differs`.
    pub kind: String,
    /// Column → (live, replay), for rows in both.
    pub columns: BTreeMap<String, (Value, Value)>,
}

/// The outcome of a replay-to-verify.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub records_replayed: u64,
    pub seconds: f64,
    /// Rows compared per table (live side).
    pub rows: BTreeMap<String, i64>,
    /// Differences per table (all counted, at most 100 per table listed).
    pub counts: BTreeMap<String, i64>,
    /// `event_log` rows whose record is no longer on its topic (compacted away).
    pub compacted: i64,
    pub differences: Vec<Difference>,
}

impl Verification {
    pub fn is_clean(&self) -> bool {
        self.counts.values().all(|c| *c == 0)
    }

    /// A human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        _ = writeln!(
            out,
            "Replayed {} records in {:.1} s.",
            self.records_replayed, self.seconds
        );
        for (table, rows) in &self.rows {
            let count = self.counts.get(table).copied().unwrap_or(0);
            let verdict = if count == 0 {
                "same".to_owned()
            } else {
                format!("{count} difference(s)")
            };
            _ = writeln!(out, "  {table:<24} {rows:>9} rows  {verdict}");
        }
        if self.compacted > 0 {
            _ = writeln!(
                out,
                "  event_log: {} rows log records compacted off the topics since (kept, not replayable).",
                self.compacted
            );
        }
        for d in &self.differences {
            _ = writeln!(out, "{} {}: {}", d.table, d.key, d.kind);
            for (column, (live, replay)) in &d.columns {
                _ = writeln!(out, "    {column}: live {live} / replay {replay}");
            }
        }
        if self.is_clean() {
            out.push_str("No differences: replaying the topics gives the live tables.\n");
        }
        out
    }
}

/// Tables compared and the columns that identify their rows.
fn compared() -> Vec<(&'static str, &'static [&'static str])> {
    let mut tables: Vec<(&'static str, &'static [&'static str])> = ENTITIES
        .iter()
        .map(|(_, t)| (*t, &["record_key"][..]))
        .collect();
    tables.push(("ledger_lines", &["record_key", "line_no"]));
    tables.push((
        "event_log",
        &["source_topic", "source_partition", "source_offset"],
    ));
    tables
}

/// Replays the topics into a fresh schema next to `live` and diffs (see the module
/// docs). Keeps the two verification schemas when `keep`. Call from outside the async
/// runtime `handle` belongs to.
pub fn replay(
    database_url: &str,
    live: &str,
    sink: &str,
    source: &Source,
    keep: bool,
    handle: &Handle,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Verification> {
    let snapshot = format!("{live}_verify_live");
    let fresh = format!("{live}_verify");
    crate::store::check_schema_name(&fresh)?;
    let pool = handle.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options(database_url, live)?),
    )?;
    let targets = handle.block_on(async {
        for schema in [&snapshot, &fresh] {
            _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await?;
        }
        let mut tx = pool.begin().await?;
        _ = sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let targets: BTreeMap<Partition, i64> =
            sqlx::query("SELECT topic, partition, next_offset FROM sink_offsets WHERE sink = $1")
                .bind(sink)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| {
                    (
                        (r.get::<String, _>(0), r.get::<i32, _>(1)),
                        r.get::<i64, _>(2),
                    )
                })
                .collect();
        _ = sqlx::query(&format!("CREATE SCHEMA {snapshot}"))
            .execute(&mut *tx)
            .await?;
        for (table, _) in compared() {
            _ = sqlx::query(&format!(
                "CREATE TABLE {snapshot}.{t} AS SELECT * FROM {live}.{t}",
                t = ident(table)
            ))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok::<_, sqlx::Error>(targets)
    })?;
    let context: BTreeMap<Partition, i64> = targets
        .into_iter()
        .filter(|((topic, _), _)| !topic.starts_with("habitat.dlq."))
        .collect();
    let store = handle.block_on(Store::connect(database_url, &fresh, "verify"))?;
    let rebuilt = rebuild_reporting(source, &store, &context, 10_000, handle, progress)?;
    let mut verification = Verification {
        records_replayed: rebuilt.records,
        seconds: rebuilt.seconds,
        rows: BTreeMap::new(),
        counts: BTreeMap::new(),
        compacted: 0,
        differences: Vec::new(),
    };
    handle.block_on(async {
        for (table, key) in compared() {
            let history = table == "event_log";
            if history {
                verification.compacted = only_in_live(&pool, &snapshot, &fresh, table, key).await?;
            }
            let (rows, count, found) = diff(&pool, &snapshot, &fresh, table, key, history).await?;
            _ = verification.rows.insert(table.to_owned(), rows);
            _ = verification.counts.insert(table.to_owned(), count);
            verification.differences.extend(found);
        }
        if !keep {
            for schema in [&snapshot, &fresh] {
                _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&pool)
                    .await?;
            }
        }
        Ok::<_, sqlx::Error>(())
    })?;
    Ok(verification)
}

/// `a.k = b.k AND …` over a table's key columns.
fn key_join(key: &[&str]) -> String {
    key.iter()
        .map(|k| format!("a.{0} = b.{0}", ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Rows of `table` in `live` with no row of the same key in `replay`.
async fn only_in_live(
    pool: &sqlx::PgPool,
    live: &str,
    replay: &str,
    table: &str,
    key: &[&str],
) -> Result<i64, sqlx::Error> {
    let t = ident(table);
    let join = key_join(key);
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {live}.{t} a WHERE NOT EXISTS (SELECT 1 FROM {replay}.{t} b WHERE {join})"
    ))
    .fetch_one(pool)
    .await
}

/// The rows of `table` that differ between `live` and `replay`; with `history`, a row only
/// in `live` is not a difference (its record was compacted off the topic).
async fn diff(
    pool: &sqlx::PgPool,
    live: &str,
    replay: &str,
    table: &str,
    key: &[&str],
    history: bool,
) -> Result<(i64, i64, Vec<Difference>), sqlx::Error> {
    let t = ident(table);
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {live}.{t}"))
        .fetch_one(pool)
        .await?;
    let columns = key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
    let join = key_join(key);
    let key_text = key
        .iter()
        .map(|k| format!("coalesce(a.{0}, b.{0})::text", ident(k)))
        .collect::<Vec<_>>()
        .join(" || '/' || ");
    let sql = format!(
        "WITH a AS (SELECT {columns}, to_jsonb(x) - 'recorded_at' AS row FROM {live}.{t} x),
              b AS (SELECT {columns}, to_jsonb(x) - 'recorded_at' AS row FROM {replay}.{t} x)
         SELECT {key_text} AS key, a.row AS live, b.row AS replay, count(*) OVER () AS total
           FROM a FULL JOIN b ON {join}
          WHERE a.row IS DISTINCT FROM b.row {only_replayable}
          ORDER BY 1 LIMIT 100",
        only_replayable = if history { "AND b.row IS NOT NULL" } else { "" }
    );
    let found = sqlx::query(&sql).fetch_all(pool).await?;
    let total = found.first().map_or(0, |r| r.get::<i64, _>("total"));
    let differences = found
        .into_iter()
        .map(|r| {
            let live: Option<Value> = r.get("live");
            let replay: Option<Value> = r.get("replay");
            let (kind, columns) = match (&live, &replay) {
                (Some(_), None) => ("missing in replay", BTreeMap::new()),
                (None, Some(_)) => ("missing in live", BTreeMap::new()),
                (Some(a), Some(b)) => ("differs", changed(a, b)),
                (None, None) => ("differs", BTreeMap::new()),
            };
            Difference {
                table: table.to_owned(),
                key: r.get("key"),
                kind: kind.to_owned(),
                columns,
            }
        })
        .collect();
    Ok((rows, total, differences))
}

fn changed(live: &Value, replay: &Value) -> BTreeMap<String, (Value, Value)> {
    let (Some(a), Some(b)) = (live.as_object(), replay.as_object()) else {
        return BTreeMap::new();
    };
    a.keys()
        .chain(b.keys())
        .filter_map(|k| {
            let (x, y) = (
                a.get(k).cloned().unwrap_or(Value::Null),
                b.get(k).cloned().unwrap_or(Value::Null),
            );
            (x != y).then(|| (k.clone(), (x, y)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_columns_only() {
        let live = serde_json::json!({"a": 1, "b": "x", "c": null});
        let replay = serde_json::json!({"a": 1, "b": "y", "d": 2});
        let found = changed(&live, &replay);
        assert_eq!(found.len(), 2);
        assert_eq!(found["b"], (Value::from("x"), Value::from("y")));
        assert_eq!(found["d"], (Value::Null, Value::from(2)));
    }
}
