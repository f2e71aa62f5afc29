//! `habitat bench log`: whether appending to `event_log` gets dearer as the log grows.
//!
//! A durable Postgres with the sink's schema; one million log rows at a time are appended
//! by one connection — rows shaped as the bench's approved contributions, their payload
//! checked as JSON from text per row, as the sink's `COPY` has Postgres do — and each
//! million's wall time and backend CPU are printed with the log's size. Nothing else runs
//! against the database, so what changes from one million to the next is the log's size.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use postgres_sink::store::Store;

use crate::broker::{bench_postgres, cpu_time, machine, system_time};

#[derive(Clone, Debug, Args)]
pub struct LogBench {
    /// Millions of rows appended, a million at a time.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    pub millions: u32,
}

/// A million rows of the log from offset `$1`, each with its own offset, ids and payload.
const APPEND: &str = r#"
INSERT INTO bench.event_log (source_topic, source_partition, source_offset, record_key,
       event_id, event_type, tenant_id, occurred_at, schema_version, producer, actor,
       correlation_id, payload)
SELECT 'habitat.people', i % 6, $1 + i, 'bench-coop-' || (i % 50) || '/contribution/c-' || i,
       gen_random_uuid()::text, 'people.ContributionApproved', 'bench-coop-' || (i % 50), now(),
       1, 'rest:bench', 'steward:bench', gen_random_uuid()::text,
       ('{"contribution_id":"c-' || i || '","member_id":"m-' || (i % 50)
        || '","period_id":"2025","kind":"LABOR","quantity":"4.0000","unit":"HOURS",'
        || '"value":"' || (i % 5000) || '.25","description":"hours of work",'
        || '"status":"APPROVED","submitted_by":"member:m-1",'
        || '"submitted_at":"2026-12-06T20:00:00Z","reviewed_by":"steward:bench"}')::json
  FROM generate_series(0, 999999) i"#;

pub fn run(args: &LogBench) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cluster, _postgres) = bench_postgres("log")?;
    cluster.create_database("sink")?;
    let url = cluster.url("sink");
    // The sink's schema, migrated as the sink does.
    drop(runtime.block_on(Store::connect(&url, "bench", "bench"))?);
    let pool = runtime.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&url),
    )?;
    let backend: i32 =
        runtime.block_on(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&pool))?;
    println!("Appending to event_log a million rows at a time, one connection, durable Postgres.");
    println!("{}", machine());
    // CPU seconds per million rows are µs per row.
    println!(
        "| rows before | seconds | backend CPU s (µs per row) | of which system | log MiB after |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for million in 0..i64::from(args.millions) {
        let (cpu, system, clock) = (cpu_time(backend)?, system_time(backend)?, Instant::now());
        _ = runtime.block_on(sqlx::query(APPEND).bind(million * 1_000_000).execute(&pool))?;
        let seconds = clock.elapsed().as_secs_f64();
        let spent = (cpu_time(backend)? - cpu).as_secs_f64();
        let kernel = (system_time(backend)? - system).as_secs_f64();
        let mib: f64 = runtime.block_on(
            sqlx::query_scalar(
                "SELECT pg_total_relation_size('bench.event_log')::float8 / 1048576",
            )
            .fetch_one(&pool),
        )?;
        println!(
            "| {} | {seconds:.1} | {spent:.1} | {kernel:.1} | {mib:.0} |",
            million * 1_000_000
        );
    }
    Ok(())
}
