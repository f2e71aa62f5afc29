//! Entity rows written set-based: the batch's typed rows are sent with one `COPY` per table
//! into a session's staging table, then merged into the table with one statement.
//!
//! The rows are built here from each record's log payload (the JSON the log row carries),
//! field by column name, in Postgres' text `COPY` format: the server parses every value
//! with its column type's own input function, so decimals arrive as their exact text and
//! never pass through a float, and no row is built from JSONB on the server. In isolation
//! this takes a third off the server's time per entity row against building it from the
//! log row (docs/benchmarks.md). The staging tables are the session's: the sink needs a
//! direct connection or a pooler in session mode.
//!
//! The text format: one line per row, fields separated by tabs, `\N` for NULL, and a
//! backslash, newline, carriage return or tab within a value escaped with a backslash.

use std::{borrow::Cow, marker::PhantomData};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::{batch::LogRow, tables::ident};

/// A column of an entity table: its name and type (as `format_type` spells it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: String,
}

/// The staging table of `table`, quoted: a temporary table of the session, emptied by the
/// transaction that fills it ([`CLEAR_STAGING`]).
pub fn staging(table: &str) -> String {
    ident(&staging_name(table))
}

/// The staging table of `table`, as the catalog names it.
pub fn staging_name(table: &str) -> String {
    format!("stage_{table}")
}

/// Empties the staging tables named in `$1` (`text[]`): deletes their rows, or truncates
/// a table grown past 1 MiB (the sink's migration 0009). Run before the commit of every
/// transaction that staged rows, instead of `ON COMMIT DELETE ROWS`, which truncates all
/// twenty tables at every commit (~3 ms of the server's CPU each time).
pub const CLEAR_STAGING: &str = "SELECT clear_staging(VARIADIC $1::text[])";

/// Creates the session's staging table of each of `tables` (columns as the table's, no
/// constraints or indexes).
pub fn create_staging<'a>(tables: impl IntoIterator<Item = &'a str>) -> String {
    tables
        .into_iter()
        .map(|table| {
            format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {});",
                staging(table),
                ident(table)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A payload that is not a JSON object (never made by the sink's own log rows).
#[derive(Debug, thiserror::Error)]
#[error("log payload of {key} at {topic}/{partition}@{offset} is not a JSON object: {reason}")]
pub struct BadPayload {
    pub key: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

impl BadPayload {
    fn of(row: &LogRow, reason: impl ToString) -> Self {
        Self {
            key: row.key.clone(),
            topic: row.topic.clone(),
            partition: row.partition,
            offset: row.offset,
            reason: reason.to_string(),
        }
    }
}

/// A JSON object's fields, each as its JSON text, in their order (a record has a few dozen
/// at most, so a scan finds one faster than a hash would).
#[derive(Debug, Default)]
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(field) = map.next_entry::<&'de str, &'de RawValue>()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit(PhantomData))
    }
}

fn fields(row: &LogRow) -> Result<Fields<'_>, BadPayload> {
    let payload = row
        .payload
        .as_deref()
        .ok_or_else(|| BadPayload::of(row, "a tombstone has no row"))?;
    serde_json::from_str(payload).map_err(|e| BadPayload::of(row, e))
}

/// A text `COPY` stream being written.
#[derive(Debug, Default)]
pub struct TextCopy {
    buf: Vec<u8>,
    fields_in_row: usize,
}

impl TextCopy {
    /// A stream with room for about `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            fields_in_row: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn separate(&mut self) {
        if self.fields_in_row > 0 {
            self.buf.push(b'\t');
        }
        self.fields_in_row += 1;
    }

    /// A field (`None`: NULL).
    pub fn field(&mut self, value: Option<&str>) -> &mut Self {
        self.separate();
        match value {
            None => self.buf.extend_from_slice(b"\\N"),
            Some(text)
                if !text
                    .bytes()
                    .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t')) =>
            {
                self.buf.extend_from_slice(text.as_bytes());
            }
            Some(text) => {
                for &b in text.as_bytes() {
                    match b {
                        b'\\' => self.buf.extend_from_slice(b"\\\\"),
                        b'\n' => self.buf.extend_from_slice(b"\\n"),
                        b'\r' => self.buf.extend_from_slice(b"\\r"),
                        b'\t' => self.buf.extend_from_slice(b"\\t"),
                        _ => self.buf.push(b),
                    }
                }
            }
        }
        self
    }

    /// A field whose text needs no escaping (a number).
    fn plain(&mut self, value: impl std::fmt::Display) -> &mut Self {
        use std::io::Write;
        self.separate();
        _ = write!(self.buf, "{value}");
        self
    }

    fn time(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(at) => self.plain(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => self.field(None),
        }
    }

    /// A JSON value in a column of type `ty`: a `jsonb` column takes the JSON itself;
    /// any other takes a string's text, or a number's, boolean's or structure's JSON (as
    /// `jsonb_to_record` reads them).
    fn json(&mut self, value: Option<&RawValue>, ty: &str) -> &mut Self {
        let json = value.map(RawValue::get).filter(|json| *json != "null");
        match json {
            None => self.field(None),
            Some(json) if ty == "jsonb" || ty == "json" => self.field(Some(json)),
            Some(json) if json.starts_with('"') => {
                let text: Cow<'_, str> = match serde_json::from_str::<&str>(json) {
                    Ok(text) => Cow::Borrowed(text),
                    // A string with escapes.
                    Err(_) => Cow::Owned(serde_json::from_str::<String>(json).unwrap_or_default()),
                };
                self.field(Some(&text))
            }
            Some(json) => self.field(Some(json)),
        }
    }

    fn end_row(&mut self) {
        self.buf.push(b'\n');
        self.fields_in_row = 0;
    }
}

/// Appends the row of a table (its `columns` in order) for the record logged as `row`:
/// the envelope columns from the log row, the others from its payload's fields; and, for a
/// ledger transaction, its lines to `lines`.
pub fn entity_row(
    out: &mut TextCopy,
    lines: Option<&mut TextCopy>,
    columns: &[Column],
    row: &LogRow,
) -> Result<(), BadPayload> {
    let fields = fields(row)?;
    if let Some(lines) = lines {
        ledger_lines(lines, row, &fields)?;
    }
    for column in columns {
        _ = match column.name.as_str() {
            "record_key" => out.field(Some(&row.key)),
            "tenant_id" => out.field(row.tenant.as_deref()),
            "event_id" => out.field(row.event_id.as_deref()),
            "event_type" => out.field(row.event_type.as_deref()),
            "occurred_at" => out.time(row.occurred),
            "source_topic" => out.field(Some(&row.topic)),
            "source_partition" => out.plain(row.partition),
            "source_offset" => out.plain(row.offset),
            name => out.json(fields.get(name), &column.ty),
        };
    }
    out.end_row();
    Ok(())
}

/// The columns [`ledger_lines`] writes, in its order.
pub const LINE_COLUMNS: &str = "record_key, line_no, tenant_id, transaction_id, posted_on, \
     currency, account, member_id, debit, credit, memo";

/// Appends the lines of the ledger transaction logged as `row` (its payload's `fields`),
/// numbered from 1.
fn ledger_lines(out: &mut TextCopy, row: &LogRow, fields: &Fields<'_>) -> Result<(), BadPayload> {
    let lines: Vec<Fields<'_>> = match fields.get("lines") {
        Some(lines) => serde_json::from_str(lines.get()).map_err(|e| BadPayload::of(row, e))?,
        None => Vec::new(),
    };
    for (n, line) in lines.iter().enumerate() {
        _ = out
            .field(Some(&row.key))
            .plain(n + 1)
            .field(row.tenant.as_deref())
            .json(fields.get("transaction_id"), "text")
            .json(fields.get("posted_on"), "date")
            .json(fields.get("currency"), "text");
        for name in ["account", "member_id", "debit", "credit", "memo"] {
            _ = out.json(line.get(name), "text");
        }
        out.end_row();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, ty: &str) -> Column {
        Column {
            name: name.to_owned(),
            ty: ty.to_owned(),
        }
    }

    fn logged(payload: &str) -> LogRow {
        LogRow {
            topic: "habitat.people".to_owned(),
            partition: 3,
            offset: 41,
            key: "coop-a/member/m-1".to_owned(),
            tenant: Some("coop-a".to_owned()),
            occurred: Some("2026-03-01T10:00:00.25Z".parse().expect("a time")),
            payload: Some(payload.to_owned()),
            ..LogRow::default()
        }
    }

    #[test]
    fn values_are_escaped_and_nulls_marked() {
        let mut copy = TextCopy::default();
        _ = copy
            .field(Some("a\tb\\c\nd\re"))
            .field(None)
            .field(Some(""));
        copy.end_row();
        assert_eq!(copy.into_bytes(), b"a\\tb\\\\c\\nd\\re\t\\N\t\n");
    }

    #[test]
    fn a_row_takes_the_envelope_from_the_log_and_fields_by_name() {
        let columns = [
            column("record_key", "text"),
            column("tenant_id", "text"),
            column("display_name", "text"),
            column("value", "numeric(18,2)"),
            column("seq", "integer"),
            column("weights", "jsonb"),
            column("email", "text"),
            column("missing", "text"),
            column("occurred_at", "timestamp with time zone"),
            column("source_partition", "integer"),
            column("source_offset", "bigint"),
        ];
        let row = logged(
            r#"{"display_name":"Ana \"Tab\"\tS\u00e9","value":"12.50","seq":2,"weights":{"a":"0.5"},"email":null}"#,
        );
        let mut copy = TextCopy::default();
        entity_row(&mut copy, None, &columns, &row).expect("a row");
        assert_eq!(
            String::from_utf8(copy.into_bytes()).expect("text"),
            "coop-a/member/m-1\tcoop-a\tAna \"Tab\"\\tSé\t12.50\t2\t{\"a\":\"0.5\"}\t\\N\t\\N\t\
             2026-03-01T10:00:00.250Z\t3\t41\n"
        );
    }

    #[test]
    fn ledger_lines_are_numbered_and_carry_their_transaction() {
        let row = logged(
            r#"{"transaction_id":"alloc:1","posted_on":"2026-06-30","currency":"USD","lines":[
                {"account":"3900","member_id":null,"debit":"10.00","credit":"0","memo":"a"},
                {"account":"2300","member_id":"m-1","debit":"0","credit":"10.00","memo":"b"}]}"#,
        );
        let mut copy = TextCopy::default();
        let mut transaction = TextCopy::default();
        entity_row(&mut transaction, Some(&mut copy), &[], &row).expect("lines");
        assert_eq!(transaction.into_bytes(), b"\n");
        assert_eq!(
            String::from_utf8(copy.into_bytes()).expect("text"),
            "coop-a/member/m-1\t1\tcoop-a\talloc:1\t2026-06-30\tUSD\t3900\t\\N\t10.00\t0\ta\n\
             coop-a/member/m-1\t2\tcoop-a\talloc:1\t2026-06-30\tUSD\t2300\tm-1\t0\t10.00\tb\n"
        );
    }

    #[test]
    fn a_payload_that_is_no_object_is_refused() {
        let mut copy = TextCopy::default();
        let error = entity_row(&mut copy, None, &[column("a", "text")], &logged("[1]"))
            .expect_err("not an object");
        assert!(error.to_string().contains("habitat.people/3@41"), "{error}");
    }

    #[test]
    fn staging_tables_are_the_sessions_own() {
        assert_eq!(
            create_staging(["members"]),
            "CREATE TEMPORARY TABLE IF NOT EXISTS \"stage_members\" (LIKE \"members\");"
        );
    }
}
