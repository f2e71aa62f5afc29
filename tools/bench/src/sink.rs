//! `habitat bench sink`: rebuild N records from the context topics into a fresh Postgres
//! schema, through the sink's own read → decode → batch → write path (the path replay and
//! recovery take), and report records/s, rows/s and the total time.
//!
//! Starts its own devbroker, Postgres cluster (durable: fsync on) and schema registry;
//! produces the records first (not measured): a mix of members, contributions with
//! corrections, ledger transactions of three lines and payments across many tenants.
//!
//! `--live` has the sink program itself (the `postgres-sink` binary) catch up with the
//! records instead, as a sink does after an outage: from its start to its offsets in
//! Postgres reaching the topics' ends.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use clap::Args;
use contracts::records::{
    ContributionApproved, ContributionKind, ContributionStatus, ContributionUnit, Event,
    LedgerLine, MemberRegistered, MemberStatus, Meta, PaymentPurpose, PaymentScheduled,
    PaymentStatus, TransactionPosted,
};
use habitat_runtime::{Codec, avro::AvroCodec, config::KafkaSettings, partition_for};
use postgres_sink::{
    store::Store,
    verify::{Source, rebuild},
};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
};
use rust_decimal::Decimal;

use habitat::kafka::{config, send};

use crate::{
    broker::{BenchStack, CONTEXT_TOPICS, cpu_time, machine, tree_cpu_time},
    topology::service::{self, Service},
};

#[derive(Clone, Debug, Args)]
pub struct SinkBench {
    /// Records to rebuild.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: usize,
    /// Tenants the records are spread over.
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
    /// Records per Postgres transaction.
    #[arg(long, default_value_t = 20_000)]
    pub batch: u64,
    /// Partitions of each context topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Catch up through the `postgres-sink` program (its own batches and writers) instead
    /// of the in-process rebuild.
    #[arg(long)]
    pub live: bool,
    /// The sink's YAML configuration for `--live` (`batch_max_records`, `writers`,
    /// `kafka:` settings…).
    #[arg(long)]
    pub sink_config: Option<std::path::PathBuf>,
}

/// The i-th record of the workload.
fn record(i: usize, tenants: usize, start: DateTime<Utc>) -> Event {
    let tenant = format!("coop-{}", i % tenants);
    let n = i / tenants;
    let at = start + TimeDelta::milliseconds(i as i64);
    let meta = |event_type: &str| Meta {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        tenant_id: tenant.clone(),
        occurred_at: at,
        producer: "rest:bench".to_owned(),
        actor: Some("steward:bench".to_owned()),
        correlation_id: format!("bench-{i}"),
        causation_id: None,
    };
    let member = format!("m-{}", n % 500);
    let cents = |v: usize| Decimal::new((v % 500_000) as i64 + 1, 2);
    match i % 10 {
        0 => MemberRegistered {
            meta: meta("people.MemberRegistered"),
            member_id: member.clone(),
            display_name: format!("Member {member}"),
            joined_on: NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"),
            status: MemberStatus::Active,
            email: Some(format!("{member}@example.coop")),
        }
        .into(),
        1..=6 => ContributionApproved {
            meta: meta("people.ContributionApproved"),
            // Every contribution comes about twice: a later record corrects it.
            contribution_id: format!("c-{}", n / 2),
            member_id: member.clone(),
            period_id: "2026".to_owned(),
            kind: ContributionKind::Labor,
            quantity: Decimal::new(80_000, 4),
            unit: ContributionUnit::Hours,
            value: cents(i * 7),
            description: "hours of work".to_owned(),
            status: ContributionStatus::Approved,
            submitted_by: format!("member:{member}"),
            submitted_at: at,
            reviewed_by: Some("steward:bench".to_owned()),
            reviewed_at: Some(at),
            rejection_reason: None,
        }
        .into(),
        7 | 8 => {
            let amount = cents(i * 13);
            let cash = (amount * Decimal::new(3, 1)).round_dp(2);
            let line = |account: &str, debit: Decimal, credit: Decimal| LedgerLine {
                account: account.to_owned(),
                member_id: (account != "3900").then(|| member.clone()),
                debit,
                credit,
                memo: "allocation".to_owned(),
            };
            TransactionPosted {
                meta: meta("treasury.TransactionPosted"),
                transaction_id: format!("alloc:{n}"),
                posted_on: at.date_naive(),
                currency: "USD".to_owned(),
                description: "patronage allocation".to_owned(),
                source_event_id: uuid::Uuid::now_v7().to_string(),
                lines: vec![
                    line("3900", amount, Decimal::ZERO),
                    line("2300", Decimal::ZERO, cash),
                    line("3100", Decimal::ZERO, amount - cash),
                ],
            }
            .into()
        }
        _ => PaymentScheduled {
            meta: meta("agreements.PaymentScheduled"),
            payment_id: format!("dist:2026:{member}:{n}"),
            schedule_id: format!("dist:2026:{member}"),
            purpose: PaymentPurpose::Distribution,
            member_id: member.clone(),
            seq: 0,
            due_on: NaiveDate::from_ymd_opt(2026, 6, 30).expect("date"),
            amount: cents(i * 3),
            principal: Decimal::ZERO,
            interest: Decimal::ZERO,
            currency: "USD".to_owned(),
            status: PaymentStatus::Scheduled,
        }
        .into(),
    }
}

pub fn run(args: &SinkBench) -> Result<()> {
    let stack = BenchStack::start("sink", args.partitions)?;
    let (runtime, bootstrap, registry) = (&stack.runtime, &stack.bootstrap, &stack.registry);
    let broker_pid = stack.broker_pid();
    let cluster = &stack.cluster;
    cluster.create_database("sink")?;

    eprintln!("Producing {} records…", args.records);
    let codec = AvroCodec::new(registry, runtime.handle().clone())?;
    let producer: BaseProducer = config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse()?;
    for i in 0..args.records {
        let event = record(i, args.tenants, start);
        let key = event.key();
        let value = codec.encode(event.topic(), &event)?;
        send(
            &producer,
            BaseRecord::to(event.topic())
                .key(key.as_str())
                .payload(value.as_slice())
                .partition(partition_for(&key, args.partitions)),
        )?;
    }
    producer.flush(Duration::from_secs(300))?;

    let consumer: BaseConsumer = config(bootstrap).create()?;
    let mut targets = BTreeMap::new();
    for topic in CONTEXT_TOPICS {
        for partition in 0..args.partitions {
            let (_, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
            _ = targets.insert((topic.to_owned(), partition), high);
        }
    }
    let url = cluster.url("sink");
    if args.live {
        return catch_up(&stack, args, &targets, &url);
    }
    let store = runtime.block_on(Store::connect(&url, "bench", "bench"))?;
    let source = Source {
        bootstrap_servers: bootstrap.clone(),
        schema_registry_url: registry.clone(),
        schema_registry_auth: None,
        kafka: KafkaSettings::default(),
    };
    eprintln!("Rebuilding into Postgres…");
    let postmaster = cluster.postmaster_pid()?;
    let me = i32::try_from(std::process::id())?;
    let cpu = || {
        Ok::<_, anyhow::Error>([
            cpu_time(me)?,
            tree_cpu_time(postmaster),
            cpu_time(broker_pid).unwrap_or_default(),
        ])
    };
    let before = cpu()?;
    let started = Instant::now();
    let rebuilt = rebuild(&source, &store, &targets, args.batch, runtime.handle())?;
    let seconds = started.elapsed().as_secs_f64();
    let after = cpu()?;
    let used: Vec<f64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(b).as_secs_f64())
        .collect();
    let rows: i64 = runtime.block_on(
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM event_log) + (SELECT count(*) FROM members)
                  + (SELECT count(*) FROM contributions) + (SELECT count(*) FROM ledger_transactions)
                  + (SELECT count(*) FROM ledger_lines) + (SELECT count(*) FROM payments)",
        )
        .fetch_one(store.pool()),
    )?;
    println!(
        "Sink rebuild: {} records from devbroker into Postgres (durable), {} per transaction, {} tenants",
        rebuilt.records, args.batch, args.tenants
    );
    println!("{}", machine());
    println!(
        "| records | seconds | records/s | rows in Postgres | rows/s | transactions | waiting for Postgres (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.1} | {:.0} | {} | {:.0} | {} | {:.1} |",
        rebuilt.records,
        seconds,
        rebuilt.records as f64 / seconds,
        rows,
        rows as f64 / seconds,
        rebuilt.transactions,
        rebuilt.waiting_seconds
    );
    println!(
        "CPU seconds during the rebuild: sink path (read, decode, batch) {:.1}, Postgres {:.1}, devbroker {:.1}; {:.1} of {:.1} available on {} cores",
        used[0],
        used[1],
        used[2],
        used.iter().sum::<f64>(),
        seconds * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    runtime.block_on(print_statements(
        store.pool(),
        "Postgres' statements during the rebuild:",
    ))?;
    Ok(())
}

/// `--live`: the sink program reads the records from the beginning into a fresh schema
/// until its offsets in Postgres reach `targets`, the topics' ends. Its books' check is
/// off, so that the figures are the catching up alone.
fn catch_up(
    stack: &BenchStack,
    args: &SinkBench,
    targets: &BTreeMap<(String, i32), i64>,
    url: &str,
) -> Result<()> {
    let runtime = &stack.runtime;
    let logs = service::logs_dir()?;
    let env = [
        ("HABITAT_BOOTSTRAP_SERVERS", stack.bootstrap.clone()),
        ("HABITAT_SCHEMA_REGISTRY_URL", stack.registry.clone()),
        ("HABITAT_DATABASE_URL", url.to_owned()),
        ("HABITAT_SINK_SCHEMA", "bench".to_owned()),
        ("HABITAT_INPUTS", CONTEXT_TOPICS.join(",")),
        ("HABITAT_BOOKS_CHECK_SECONDS", "0".to_owned()),
    ];
    let config = service::config_args(args.sink_config.as_deref());
    // One connection polls the offsets; its backend's CPU is in Postgres' figure.
    let pool = runtime.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url),
    )?;
    let end: i64 = targets.values().sum();
    eprintln!("Catching up through postgres-sink…");
    let postmaster = stack.cluster.postmaster_pid()?;
    let postgres_before = tree_cpu_time(postmaster);
    let started = Instant::now();
    let sink = Service::start("postgres-sink", 0, &env, &config, &logs)?;
    let mut ready = None;
    loop {
        if ready.is_none() && sink.ready(runtime) {
            ready = Some(started.elapsed());
        }
        // Nothing to read before the sink has made its tables; a partition without
        // records keeps -1.
        let reached: Option<i64> = runtime
            .block_on(
                sqlx::query_scalar(
                    "SELECT sum(greatest(next_offset, 0))::bigint FROM bench.sink_offsets",
                )
                .fetch_one(&pool),
            )
            .ok()
            .flatten();
        if reached.is_some_and(|reached| reached >= end) {
            break;
        }
        if started.elapsed() > STALL_LIMIT {
            anyhow::bail!(
                "the sink did not catch up within {STALL_LIMIT:?} (its log: {})",
                logs.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let sink_cpu = cpu_time(sink.pid)?.as_secs_f64();
    let postgres = tree_cpu_time(postmaster)
        .saturating_sub(postgres_before)
        .as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Sink catch-up: {} records from devbroker into Postgres (durable) by the postgres-sink \
         program, {} tenants, {}",
        args.records,
        args.tenants,
        args.sink_config.as_ref().map_or_else(
            || "default configuration".to_owned(),
            |file| format!("configuration {}", file.display())
        )
    );
    println!("{}", machine());
    println!(
        "| records | seconds (start → caught up) | records/s | ready after s | CPU s: sink / Postgres |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {seconds:.1} | {:.0} | {:.1} | {sink_cpu:.1} / {postgres:.1} |",
        args.records,
        args.records as f64 / seconds,
        ready.unwrap_or_default().as_secs_f64(),
    );
    println!(
        "{:.1} of {:.1} CPU-seconds available on {cores} cores.",
        sink_cpu + postgres,
        seconds * cores as f64
    );
    Ok(())
}

/// How long a catch-up may take before the bench gives up.
const STALL_LIMIT: Duration = Duration::from_secs(600);

/// Starts `pg_stat_statements`' counts over, when it is loaded.
pub(crate) async fn reset_statements(pool: &sqlx::PgPool) -> Result<()> {
    if statements_loaded(pool).await? {
        _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await?;
        _ = sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(pool)
            .await?;
    }
    Ok(())
}

async fn statements_loaded(pool: &sqlx::PgPool) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT 'pg_stat_statements' = ANY(string_to_array(current_setting('shared_preload_libraries'), ','))",
    )
    .fetch_one(pool)
    .await?)
}

/// Where Postgres spent its time, statement by statement, when the cluster was started with
/// `pg_stat_statements` (`HABITAT_POSTGRES_OPTIONS="-c shared_preload_libraries=pg_stat_statements"`);
/// nothing otherwise. Times are the server's execution time, which on a CPU-bound run is
/// close to its CPU time.
pub(crate) async fn print_statements(pool: &sqlx::PgPool, title: &str) -> Result<()> {
    if !statements_loaded(pool).await? {
        return Ok(());
    }
    println!("\n{title}");
    _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await?;
    let rows: Vec<(String, i64, i64, f64, f64, i64)> = sqlx::query_as(
        "SELECT regexp_replace(left(query, 90), '\\s+', ' ', 'g'), calls, rows, total_exec_time,
                wal_bytes::float8, wal_fpi
           FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25",
    )
    .fetch_all(pool)
    .await?;
    println!(
        "\n| statement | calls | rows | ms | µs per row | WAL MB | WAL bytes per row | full-page images |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (query, calls, rows, ms, wal, images) in rows {
        let per_row = |total: f64| if rows > 0 { total / rows as f64 } else { 0.0 };
        println!(
            "| `{query}` | {calls} | {rows} | {ms:.0} | {:.1} | {:.0} | {:.0} | {images} |",
            per_row(ms * 1000.0),
            wal / 1_048_576.0,
            per_row(wal)
        );
    }
    Ok(())
}
