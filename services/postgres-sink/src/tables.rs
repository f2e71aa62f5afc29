//! Which table each record goes to, and the SQL that writes a batch of them.
//!
//! The migrations are the one description of the tables: at start the sink reads each
//! entity table's columns from the catalog and builds its merge from them. A column named
//! like a field of the record takes that field; the envelope columns take the log row's
//! key, meta and Kafka coordinates (see [`crate::stage`]).

use std::collections::{BTreeMap, HashMap};

use contracts::records::CATALOG;
use sqlx::PgConnection;

pub use crate::stage::{Column, staging};

/// Entity (the second segment of a record key) → table.
pub const ENTITIES: &[(&str, &str)] = &[
    ("member", "members"),
    ("contribution", "contributions"),
    ("period", "periods"),
    ("policy", "patronage_policies"),
    ("payment-result", "payment_results"),
    ("transaction", "ledger_transactions"),
    ("capital", "capital_accounts"),
    ("loan", "loans"),
    ("allocation-approval", "allocation_approvals"),
    ("patronage", "patronage_tallies"),
    ("patronage-seal", "patronage_seals"),
    ("late-change", "late_changes"),
    ("allocation", "allocations"),
    ("allocation-set", "allocation_sets"),
    (
        "allocation-approval-rejection",
        "allocation_approval_rejections",
    ),
    ("schedule", "schedules"),
    ("payment", "payments"),
    ("payment-exception", "payment_exceptions"),
    ("distribution", "distributions"),
    ("period-distribution", "period_distributions"),
];

/// The ledger's transactions carry their lines, kept in `ledger_lines`.
pub const LEDGER: &str = "ledger_transactions";

/// Columns every entity table takes from its log row rather than the record's fields.
pub const ENVELOPE: &[&str] = &[
    "record_key",
    "tenant_id",
    "event_id",
    "event_type",
    "occurred_at",
    "source_topic",
    "source_partition",
    "source_offset",
];

/// The entity segment of a key `<tenant>/<entity>/<id…>`.
pub fn entity_of_key(key: &str) -> Option<&str> {
    key.split('/').nth(1)
}

/// The table of an entity.
pub fn table_of_entity(entity: &str) -> Option<&'static str> {
    ENTITIES
        .iter()
        .find(|(e, _)| *e == entity)
        .map(|(_, table)| *table)
}

/// The table of a record type (by full name).
pub fn table_of_record(full_name: &str) -> Option<&'static str> {
    static TABLES: std::sync::OnceLock<HashMap<&'static str, &'static str>> =
        std::sync::OnceLock::new();
    TABLES.get_or_init(record_tables).get(full_name).copied()
}

/// Record full name → its table, from the key patterns of the catalog.
pub fn record_tables() -> HashMap<&'static str, &'static str> {
    CATALOG
        .iter()
        .filter_map(|info| {
            entity_of_key(info.key_pattern)
                .and_then(table_of_entity)
                .map(|table| (info.full_name, table))
        })
        .collect()
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How every entity table is written, built from the catalog of the connection's schema.
#[derive(Clone, Debug)]
pub struct Statements {
    /// Table → its columns in order.
    pub columns: BTreeMap<&'static str, Vec<Column>>,
    /// Table → `INSERT … SELECT` of its staging table's rows `ON CONFLICT (record_key) DO
    /// UPDATE`.
    pub merges: BTreeMap<&'static str, String>,
}

impl Statements {
    pub async fn load(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let tables: Vec<String> = ENTITIES.iter().map(|(_, t)| (*t).to_owned()).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = current_schema() AND c.relname = ANY($1)
                AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY c.relname, a.attnum",
        )
        .bind(&tables)
        .fetch_all(conn)
        .await?;
        let mut columns: BTreeMap<&'static str, Vec<Column>> = BTreeMap::new();
        for (table, name, ty) in rows {
            if let Some((_, table)) = ENTITIES.iter().find(|(_, t)| *t == table) {
                columns.entry(table).or_default().push(Column { name, ty });
            }
        }
        if let Some((_, missing)) = ENTITIES.iter().find(|(_, t)| !columns.contains_key(t)) {
            return Err(sqlx::Error::Protocol(format!(
                "table {missing} is missing from the sink's schema: are the migrations applied?"
            )));
        }
        let merges = columns
            .iter()
            .map(|(table, columns)| (*table, merge(table, columns)))
            .collect();
        Ok(Self { columns, merges })
    }
}

fn merge(table: &str, columns: &[Column]) -> String {
    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| c.name != "record_key")
        .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
        .collect();
    let merge = format!(
        "INSERT INTO {table} ({names}) SELECT {names} FROM {staging} \
         ON CONFLICT (record_key) DO UPDATE SET {updates}",
        table = ident(table),
        staging = staging(table),
        names = names.join(", "),
        updates = updates.join(", "),
    );
    if table != LEDGER {
        return merge;
    }
    // A transaction posted again replaces its lines: the lines of the rows the merge
    // updated (a row it inserted has a zero `xmax`; one it updated was locked first) are
    // deleted in the same statement, before the batch's lines are copied in. A new
    // transaction, the usual case, costs no lookup in the lines' index.
    format!(
        "WITH merged AS ({merge} RETURNING record_key, xmax::text <> '0' AS replaced) \
         DELETE FROM ledger_lines l USING merged m \
         WHERE m.replaced AND l.record_key = m.record_key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str) -> Column {
        Column {
            name: name.to_owned(),
            ty: "text".to_owned(),
        }
    }

    #[test]
    fn every_event_record_has_a_table() {
        let tables = record_tables();
        for info in CATALOG {
            assert!(
                tables.contains_key(info.full_name),
                "{} (key {}) has no table",
                info.full_name,
                info.key_pattern
            );
        }
    }

    #[test]
    fn keys_route_by_their_entity() {
        assert_eq!(
            entity_of_key("coop-a/payment-result/0192").and_then(table_of_entity),
            Some("payment_results")
        );
        assert_eq!(
            entity_of_key("coop-a/allocation/2026/m-1").and_then(table_of_entity),
            Some("allocations")
        );
        assert_eq!(entity_of_key("no-slashes"), None);
    }

    #[test]
    fn a_merge_moves_the_staged_rows_and_replaces_by_key() {
        let sql = merge(
            "members",
            &[
                column("record_key"),
                column("tenant_id"),
                column("joined_on"),
            ],
        );
        assert_eq!(
            sql,
            "INSERT INTO \"members\" (\"record_key\", \"tenant_id\", \"joined_on\") \
             SELECT \"record_key\", \"tenant_id\", \"joined_on\" FROM \"stage_members\" \
             ON CONFLICT (record_key) DO UPDATE SET \"tenant_id\" = EXCLUDED.\"tenant_id\", \
             \"joined_on\" = EXCLUDED.\"joined_on\""
        );
    }

    #[test]
    fn the_ledgers_merge_deletes_the_lines_of_the_transactions_it_replaced() {
        let sql = merge(LEDGER, &[column("record_key"), column("tenant_id")]);
        assert_eq!(
            sql,
            "WITH merged AS (INSERT INTO \"ledger_transactions\" (\"record_key\", \"tenant_id\") \
             SELECT \"record_key\", \"tenant_id\" FROM \"stage_ledger_transactions\" \
             ON CONFLICT (record_key) DO UPDATE SET \"tenant_id\" = EXCLUDED.\"tenant_id\" \
             RETURNING record_key, xmax::text <> '0' AS replaced) \
             DELETE FROM ledger_lines l USING merged m \
             WHERE m.replaced AND l.record_key = m.record_key"
        );
    }
}
