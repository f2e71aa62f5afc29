//! Every entity row is what Postgres itself builds from the record the sink logged: the
//! sink's own rows (staged as text and merged) against `jsonb_to_record` of the key's latest
//! log row, column by column, for every table.

use apache_avro::{
    Schema,
    schema::{NamesRef, ResolvedSchema},
    types::Value,
};
use contracts::records::CATALOG;
use postgres_sink::tables::{ENTITIES, ENVELOPE, LEDGER, Statements, ident};

use super::*;

/// Asserts that each entity table's rows of `tenant` (and the ledger's lines) are exactly
/// the rows `jsonb_to_record` builds from the latest logged record of each key; returns
/// how many rows each table has.
pub fn rows_are_their_records(stack: &Stack, tenant: &str) -> Vec<(&'static str, i64)> {
    let statements = stack.query(async {
        let mut conn = stack.pool.acquire().await?;
        Statements::load(&mut conn).await
    });
    let mut counts = Vec::new();
    for (entity, table) in ENTITIES {
        let columns = &statements.columns[table];
        let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        let built: Vec<String> = columns
            .iter()
            .map(|c| {
                let side = if ENVELOPE.contains(&c.name.as_str()) {
                    "e"
                } else {
                    "p"
                };
                format!("{side}.{}", ident(&c.name))
            })
            .collect();
        let record: Vec<String> = columns
            .iter()
            .filter(|c| !ENVELOPE.contains(&c.name.as_str()))
            .map(|c| format!("{} {}", ident(&c.name), c.ty))
            .collect();
        let latest = "SELECT DISTINCT ON (record_key) * FROM event_log
                       WHERE tenant_id = $1 AND split_part(record_key, '/', 2) = $2
                       ORDER BY record_key, source_offset DESC";
        let sql = format!(
            "WITH latest AS ({latest}),
                  live AS (SELECT {names} FROM {t} WHERE tenant_id = $1),
                  built AS (SELECT {built} FROM latest e
                            CROSS JOIN LATERAL jsonb_to_record(e.payload::jsonb) AS p({record})
                            WHERE e.payload IS NOT NULL)
             SELECT (SELECT count(*) FROM live),
                    (SELECT string_agg(row_to_json(d)::text, E'\\n') FROM
                      ((SELECT 'live' AS side, * FROM (TABLE live EXCEPT ALL TABLE built) x)
                       UNION ALL
                       (SELECT 'built', * FROM (TABLE built EXCEPT ALL TABLE live) y)) d)",
            t = ident(table),
            names = names.join(", "),
            built = built.join(", "),
            record = record.join(", "),
        );
        let (count, differences): (i64, Option<String>) = stack.query(
            sqlx::query_as(&sql)
                .bind(tenant)
                .bind(entity)
                .fetch_one(&stack.pool),
        );
        assert_eq!(differences, None, "{table}: rows unlike their records");
        counts.push((*table, count));
    }
    let lines = "WITH latest AS (SELECT DISTINCT ON (record_key) * FROM event_log
                   WHERE tenant_id = $1 AND split_part(record_key, '/', 2) = 'transaction'
                   ORDER BY record_key, source_offset DESC),
              live AS (SELECT record_key, line_no, tenant_id, transaction_id, posted_on, currency,
                              account, member_id, debit, credit, memo
                         FROM ledger_lines WHERE tenant_id = $1),
              built AS (SELECT e.record_key, l.line_no::int, e.tenant_id, t.transaction_id,
                               t.posted_on, t.currency, l.account, l.member_id, l.debit,
                               l.credit, l.memo
                          FROM latest e
                         CROSS JOIN LATERAL jsonb_to_record(e.payload::jsonb)
                               AS t(transaction_id text, posted_on date, currency text, lines jsonb)
                         CROSS JOIN LATERAL ROWS FROM (jsonb_to_recordset(t.lines)
                               AS (account text, member_id text, debit numeric, credit numeric,
                                   memo text))
                               WITH ORDINALITY AS l(account, member_id, debit, credit, memo, line_no)
                         WHERE e.payload IS NOT NULL)
         SELECT (SELECT count(*) FROM live),
                (SELECT string_agg(row_to_json(d)::text, E'\\n') FROM
                  ((SELECT 'live' AS side, * FROM (TABLE live EXCEPT ALL TABLE built) x)
                   UNION ALL
                   (SELECT 'built', * FROM (TABLE built EXCEPT ALL TABLE live) y)) d)";
    let (count, differences): (i64, Option<String>) =
        stack.query(sqlx::query_as(lines).bind(tenant).fetch_one(&stack.pool));
    assert_eq!(differences, None, "{LEDGER} lines unlike their records");
    counts.push(("ledger_lines", count));
    counts
}

/// Text with every character the sink's text stream escapes, JSON escapes, and characters
/// beyond ASCII.
const AWKWARD: &str = "Tab\there\\back \"quoted\"\nnew line\r\u{7f} \u{1} Sé 🌱 \\N";

/// A value of `schema` with awkward contents: every string [`AWKWARD`], negative decimals
/// of eight digits, instants to the microsecond, the last symbol of every enum, every
/// optional field present and every array of two.
fn awkward(schema: &Schema, names: &NamesRef<'_>) -> Value {
    match schema {
        Schema::String => Value::String(AWKWARD.to_owned()),
        Schema::Int => Value::Int(7),
        Schema::Long => Value::Long(1_234_567_890_123),
        Schema::Boolean => Value::Boolean(true),
        Schema::Date => Value::Date(20_000),
        Schema::TimestampMicros => Value::TimestampMicros(1_780_000_000_123_457),
        Schema::Decimal(decimal) => {
            let largest = 10i128.pow(u32::try_from(decimal.precision).expect("precision")) - 1;
            let unscaled = -largest.min(12_345_678);
            Value::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes().to_vec()))
        }
        Schema::Enum(e) => {
            let last = e.symbols.len() - 1;
            Value::Enum(
                u32::try_from(last).expect("symbols"),
                e.symbols[last].clone(),
            )
        }
        Schema::Union(union) => Value::Union(1, Box::new(awkward(&union.variants()[1], names))),
        Schema::Array(array) => Value::Array(vec![awkward(&array.items, names); 2]),
        Schema::Record(record) => Value::Record(
            record
                .fields
                .iter()
                .map(|f| (f.name.clone(), awkward(&f.schema, names)))
                .collect(),
        ),
        Schema::Ref { name } => awkward(names[name], names),
        other => panic!("no awkward value of {other:?}"),
    }
}

#[test]
fn every_row_is_its_record_whatever_its_text_holds() {
    let stack = Stack::new();
    let tenant = unique("coop");
    let mut coop = Coop::new(&tenant);
    let posts: Vec<Post> = CATALOG
        .iter()
        .map(|info| {
            let schema = Schema::parse_str(info.schema).expect("schema");
            let resolved = ResolvedSchema::try_from(&schema).expect("names");
            let value = awkward(&schema, resolved.get_names());
            let mut event = Event::from_value(info.full_name, value).expect("a record");
            *event.meta_mut() = coop.meta(info.event_type);
            event.into()
        })
        .collect();
    post(&stack.codec, &posts);
    let sink = stack.sink();
    stack.caught_up();
    drop(sink);

    let counts = rows_are_their_records(&stack, &tenant);
    let empty: Vec<&str> = counts
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(t, _)| *t)
        .collect();
    assert!(empty.is_empty(), "tables no record reached: {empty:?}");
    let name: String = stack.query(
        sqlx::query_scalar("SELECT display_name FROM members WHERE tenant_id = $1")
            .bind(&tenant)
            .fetch_one(&stack.pool),
    );
    assert_eq!(name, AWKWARD);
}
