//! `habitat bench outbox`: the transactional outbox's relay — events/s relayed from a full
//! outbox, then commit → visible-on-topic latency (p50/p99) of producer transactions at
//! half that rate.
//!
//! Starts its own devbroker, Postgres cluster and schema registry, a producer database
//! with the outbox installed, and one `outbox-relay` (built beside this program).

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use devstack::process::{Guardian, sibling_binary};
use rdkafka::{Message, Offset, TopicPartitionList, consumer::BaseConsumer};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use habitat::kafka::config;

use crate::broker::{BenchStack, cpu_time, machine};

#[derive(Clone, Debug, Args)]
pub struct OutboxBench {
    /// Events in the outbox before the relay starts (the throughput phase).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Events per producer transaction.
    #[arg(long, default_value_t = 100)]
    pub per_transaction: usize,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Tenants the events are spread over.
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
}

const PEOPLE: &str = "habitat.people";

fn payload(i: usize) -> serde_json::Value {
    json!({"member_id": format!("m-{i}"), "display_name": format!("Member {i}"),
           "joined_on": "2026-01-15", "status": "ACTIVE"})
}

/// Enqueues `count` events from `first` in transactions of `per_transaction`; returns each
/// transaction's event ids and the moment its commit returned.
async fn produce(
    pool: sqlx::PgPool,
    first: usize,
    count: usize,
    per_transaction: usize,
    tenants: usize,
) -> Result<Vec<(Vec<String>, Instant)>> {
    let mut done = Vec::new();
    let mut i = first;
    while i < first + count {
        let mut tx = pool.begin().await?;
        let mut ids = Vec::with_capacity(per_transaction);
        for _ in 0..per_transaction.min(first + count - i) {
            let id: String = sqlx::query_scalar(
                "SELECT habitat_outbox.enqueue('people.MemberRegistered', $1, $2)::text",
            )
            .bind(format!("bench-{}", i % tenants))
            .bind(payload(i))
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
            i += 1;
        }
        tx.commit().await?;
        done.push((ids, Instant::now()));
    }
    Ok(done)
}

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        _ = self.0.kill();
        _ = self.0.wait();
    }
}

pub fn run(args: &OutboxBench) -> Result<()> {
    let stack = BenchStack::start("outbox", 6)?;
    stack.cluster.create_database("producer")?;
    let database_url = stack.cluster.url("producer");
    stack.runtime.block_on(outbox::install::install(
        &database_url,
        outbox::DEFAULT_SCHEMA,
    ))?;
    let pool = stack.runtime.block_on(
        PgPoolOptions::new()
            .max_connections(8)
            .connect(&database_url),
    )?;
    let per = args.per_transaction.max(1);
    let writers = 8;
    let share = args.events.div_ceil(writers);

    // Throughput: a full outbox, drained.
    eprintln!("Filling the outbox with {} events.", args.events);
    let fills: Vec<_> = (0..writers)
        .map(|w| {
            let count = share.min(args.events.saturating_sub(w * share));
            stack
                .runtime
                .spawn(produce(pool.clone(), w * share, count, per, args.tenants))
        })
        .collect();
    for fill in fills {
        _ = stack.runtime.block_on(fill)??;
    }
    let relay_bin = sibling_binary("outbox-relay", "HABITAT_OUTBOX_RELAY_BIN")?;
    let log = std::env::temp_dir().join("habitat-bench-outbox-relay.log");
    let started = Instant::now();
    let relay =
        Relay(
            Command::new(relay_bin)
                .env("HABITAT_DATABASE_URL", &database_url)
                .env("HABITAT_BOOTSTRAP_SERVERS", &stack.bootstrap)
                .env("HABITAT_SCHEMA_REGISTRY_URL", &stack.registry)
                .env("HABITAT_OUTBOX_NAME", "bench")
                .envs(std::env::vars().filter(|(k, _)| {
                    k.starts_with("HABITAT_KAFKA_") || k == "HABITAT_OUTBOX_BATCH"
                }))
                .env("HABITAT_OUTBOX_POLL_MS", "50")
                .env(
                    "HABITAT_LOG",
                    std::env::var("HABITAT_BENCH_RELAY_LOG").unwrap_or_else(|_| "warn".to_owned()),
                )
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("start the relay")?,
        );
    let relay_pid = i32::try_from(relay.0.id())?;
    let _guardian = Guardian::new(&format!("kill -9 {relay_pid} 2>/dev/null"))?;
    let cpu_before = cpu_time(relay_pid)?;
    let pending = |pool: &sqlx::PgPool| -> Result<i64> {
        Ok(stack.runtime.block_on(
            sqlx::query_scalar("SELECT count(*) FROM habitat_outbox.events").fetch_one(pool),
        )?)
    };
    while pending(&pool)? > 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the relay did not drain the outbox in 10 minutes (log: {})",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = args.events as f64 / drain;
    let relay_cpu = (cpu_time(relay_pid)? - cpu_before).as_secs_f64();

    // Latency at half that rate: transactions of 10 events, paced.
    let half = rate / 2.0;
    let per_latency = 10;
    let transactions = (half * args.seconds as f64 / per_latency as f64).ceil() as usize;
    let interval = Duration::from_secs_f64(per_latency as f64 / half);
    eprintln!(
        "Latency: {transactions} transactions of {per_latency} at {half:.0} events/s for {} s.",
        args.seconds
    );
    let consumer: BaseConsumer = config(&stack.bootstrap)
        .set("group.id", "bench-outbox-latency")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for p in 0..6 {
        list.add_partition_offset(PEOPLE, p, Offset::End)?;
    }
    habitat_runtime::kafka::assign_known(&consumer, &list)?;
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let seen = seen.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(5)) {
                    let id = message
                        .headers()
                        .and_then(|h| {
                            use rdkafka::message::Headers as _;
                            h.iter()
                                .find(|h| h.key == habitat_runtime::payload::headers::EVENT_ID)
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                        .unwrap_or_default();
                    _ = seen.lock().expect("seen").insert(id, Instant::now());
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let mut committed = Vec::new();
    let begin = Instant::now();
    for t in 0..transactions {
        let due = begin + interval.mul_f64(t as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        committed.extend(stack.runtime.block_on(produce(
            pool.clone(),
            args.events + t * per_latency,
            per_latency,
            per_latency,
            args.tenants,
        ))?);
    }
    let expected: usize = committed.iter().map(|(ids, _)| ids.len()).sum();
    let waited = Instant::now();
    while seen.lock().expect("seen").len() < expected {
        ensure!(
            waited.elapsed() < Duration::from_secs(120),
            "only {} of {expected} events became visible",
            seen.lock().expect("seen").len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    _ = reader.join();
    let seen = seen.lock().expect("seen");
    let mut latencies: Vec<f64> = committed
        .iter()
        .flat_map(|(ids, at)| {
            ids.iter().filter_map(|id| {
                seen.get(id)
                    .map(|visible| visible.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let at = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[at]
    };
    println!("{}", machine());
    println!(
        "outbox: {} events drained in {drain:.2} s = {rate:.0} events/s relayed \
         ({per} per producer transaction; relay CPU {relay_cpu:.2} s)",
        args.events
    );
    println!(
        "outbox latency at {half:.0} events/s ({per_latency} per transaction): commit → visible \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events",
        percentile(0.5),
        percentile(0.99),
        latencies.last().copied().unwrap_or_default(),
        latencies.len()
    );
    drop(relay);
    Ok(())
}
