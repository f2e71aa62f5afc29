//! The relay: committed outbox rows to their context topics, exactly once.
//!
//! Guarantee: every row of a committed producer transaction is published once, in the
//! order of its place (txid, seq), or dead-lettered with its reason; a rolled-back one
//! never. It rests on three things:
//! - **A skip-free order.** Only rows whose transaction is older than every transaction
//!   still running are read (`txid < pg_snapshot_xmin(pg_current_snapshot())`); no row can
//!   appear later with a smaller place, so "everything up to my position is done" holds.
//! - **The position in the Kafka transaction.** Each batch's records and the relay's new
//!   position (on [`POSITION_TOPIC`](crate::POSITION_TOPIC), keyed by the relay's name) commit
//!   together; on start the relay reads its last committed position and resumes after it.
//!   Rows are deleted only after the commit: a crash in between leaves rows the position
//!   already covers, which the next start deletes without publishing them again.
//! - **One relay at a time per outbox** (a session advisory lock; a second relay waits,
//!   not ready) and a fixed transactional id, so a relay that lost its lock is fenced.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use contracts::records::Event;
use habitat_runtime::{
    Codec, CodecError,
    avro::AvroCodec,
    config::{KafkaSettings, RegistryAuth},
    health::dependency,
    metrics::Metrics,
    partition_for,
    payload::{Payload, trace_headers},
    retry::{RetryPolicy, has_transient_database_cause},
};
use rdkafka::{
    ClientConfig,
    consumer::BaseConsumer,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
    types::RDKafkaErrorCode,
};
use rest_proxy::validate::{Refusal, Stamp, Submission, event_of};
use serde_json::{Value, json};
use sqlx::{PgPool, Row as _, postgres::PgListener};
use tracing::{info, warn};

pub use crate::position::Position;
use crate::{
    POSITION_TOPIC,
    metrics::RelayMetrics,
    position::{ensure_position_topic, read_position},
};

/// How the relay runs.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub database_url: String,
    pub schema: String,
    /// The relay's name: its transactional id (`outbox-relay-<name>`), its position's key
    /// and its producer (`outbox:<name>`).
    pub name: String,
    pub bootstrap_servers: String,
    pub schema_registry_url: String,
    pub schema_registry_auth: Option<RegistryAuth>,
    pub kafka: KafkaSettings,
    /// Rows per Kafka transaction, at most.
    pub batch: i64,
    /// How often the outbox is read when no notification comes.
    pub poll: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// How long the relay waits out an unreachable database before it gives up and exits.
    pub give_up: Duration,
}

/// One pending row.
#[derive(Clone, Debug)]
struct Pending {
    place: Position,
    event_id: String,
    event_type: String,
    tenant_id: String,
    payload: Value,
    correlation_id: Option<String>,
    actor: Option<String>,
    occurred_at: DateTime<Utc>,
}

/// Runs the relay until `shutdown` is set; an error is a reason to stop (the supervisor
/// restarts the relay, which resumes from its committed position). An unreachable
/// database is waited out, not ready meanwhile: the relay connects again, takes the lock
/// again (or waits behind a relay that took it) and resumes from its committed position,
/// as after a restart; it gives up once the outage outlasts `give_up`.
pub fn run(config: &RelayConfig, shutdown: &Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let metrics = Metrics::new("outbox-relay");
    let relay_metrics = RelayMetrics::new(&metrics);
    if let Some(listen) = config.metrics_listen {
        let addr = runtime.block_on(metrics.clone().serve(listen))?;
        info!(%addr, "Serving /metrics, /healthz and /readyz.");
    }
    let policy = RetryPolicy::giving_up_after(config.give_up);
    let mut delays = policy.delays();
    loop {
        let error = match relay_until_outage(config, shutdown, &runtime, &metrics, &relay_metrics) {
            Ok(()) => return Ok(()),
            Err(error) if has_transient_database_cause(&error) => error,
            Err(error) => return Err(error),
        };
        metrics.set_ready(false);
        if metrics.dependencies.longest().is_none() {
            delays = policy.delays();
        }
        metrics
            .dependencies
            .unreachable(dependency::DATABASE, &format!("{error:#}"));
        if let Some(outage) = metrics.dependencies.given_up(config.give_up) {
            return Err(error.context(format!(
                "{outage}: gave up after {} s (give_up_seconds)",
                config.give_up.as_secs()
            )));
        }
        if shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::sleep(delays.next().unwrap_or(policy.max));
    }
}

/// Installs the outbox, takes its lock and relays until `shutdown` (`Ok`) or an error.
fn relay_until_outage(
    config: &RelayConfig,
    shutdown: &Arc<AtomicBool>,
    runtime: &tokio::runtime::Runtime,
    metrics: &Metrics,
    relay_metrics: &RelayMetrics,
) -> anyhow::Result<()> {
    // The outbox is installed (or upgraded to this release) before anything is read.
    runtime
        .block_on(crate::install::install(
            &config.database_url,
            &config.schema,
        ))
        .context("installing the outbox")?;
    let options = postgres_sink::store::options(&config.database_url, &config.schema)?;
    let pool = runtime.block_on(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .connect_with(options.clone()),
    )?;
    // The lock is held by one connection for the relay's life.
    let mut lock = runtime.block_on(<sqlx::PgConnection as sqlx::Connection>::connect_with(
        &options,
    ))?;
    metrics.dependencies.reachable(dependency::DATABASE);
    loop {
        let held: bool = runtime.block_on(
            sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(format!("habitat_outbox:{}", config.schema))
                .fetch_one(&mut lock),
        )?;
        if held {
            relay_metrics.standby.set(0);
            break;
        }
        relay_metrics.standby.set(1);
        if shutdown.load(Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    info!(schema = %config.schema, name = %config.name, "Outbox lock held: relaying.");
    let codec = AvroCodec::with_auth(
        &config.schema_registry_url,
        config.schema_registry_auth.as_ref(),
        runtime.handle().clone(),
    )?;
    let mut relay = Relay::start(config, pool, codec, relay_metrics.clone(), runtime)?;
    metrics.set_ready(true);
    let result = relay.run(shutdown, runtime);
    metrics.set_ready(false);
    drop(lock);
    result
}

struct Relay<'a> {
    config: &'a RelayConfig,
    pool: PgPool,
    codec: AvroCodec,
    metrics: RelayMetrics,
    producer: BaseProducer,
    partitions: HashMap<String, i32>,
    position: Position,
    producer_name: String,
}

impl<'a> Relay<'a> {
    fn start(
        config: &'a RelayConfig,
        pool: PgPool,
        codec: AvroCodec,
        metrics: RelayMetrics,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Self> {
        let client = |extra: &[(&str, &str)]| {
            let mut client = ClientConfig::new();
            _ = client.set("bootstrap.servers", &config.bootstrap_servers);
            for (k, v) in extra {
                _ = client.set(*k, *v);
            }
            config.kafka.apply(&mut client);
            client
        };
        ensure_position_topic(&client(&[]), runtime)?;
        let producer: BaseProducer = client(&[
            ("transactional.id", &format!("outbox-relay-{}", config.name)),
            ("enable.idempotence", "true"),
            ("transaction.timeout.ms", "30000"),
            ("linger.ms", "5"),
        ])
        .create()
        .context("the relay's producer")?;
        producer
            .init_transactions(Duration::from_secs(30))
            .context("initialising the relay's transactions")?;
        let consumer: BaseConsumer = client(&[
            (
                "group.id",
                &format!("outbox-relay-{}-position", config.name),
            ),
            ("isolation.level", "read_committed"),
            ("enable.auto.commit", "false"),
        ])
        .create()
        .context("the position reader")?;
        let position = read_position(&consumer, &config.name)?;
        info!(
            txid = position.txid,
            seq = position.seq,
            "Resuming after the committed position."
        );
        let relay = Self {
            config,
            pool,
            codec,
            metrics,
            producer,
            partitions: HashMap::new(),
            position,
            producer_name: format!("{}:{}", crate::PRODUCER, config.name),
        };
        runtime.block_on(relay.clean_up())?;
        Ok(relay)
    }

    fn run(
        &mut self,
        shutdown: &Arc<AtomicBool>,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<()> {
        // Inside the runtime until the listener is dropped (declared first, dropped last):
        // dropping a listener spawns its connection's return to the pool, which panics on a
        // thread outside a runtime — as when a query fails during a database outage.
        let _runtime = runtime.enter();
        let mut listener = runtime.block_on(async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(&self.config.schema).await?;
            Ok::<_, sqlx::Error>(listener)
        })?;
        let mut measured = Instant::now() - Duration::from_secs(1);
        while !shutdown.load(Ordering::SeqCst) {
            let rows = runtime.block_on(self.pending())?;
            // Counting the outbox scans it: once a second is enough for the gauges.
            if measured.elapsed() >= Duration::from_secs(1) {
                runtime.block_on(self.measure())?;
                measured = Instant::now();
            }
            if rows.is_empty() {
                // A notification, or the poll interval as the fallback.
                let poll = self.config.poll;
                _ = runtime.block_on(async { tokio::time::timeout(poll, listener.recv()).await });
                continue;
            }
            let publishing = Instant::now();
            match self.publish(&rows, runtime) {
                Ok(()) => {
                    let published = publishing.elapsed();
                    runtime.block_on(self.clean_up())?;
                    tracing::debug!(
                        rows = rows.len(),
                        publish_ms = published.as_millis(),
                        clean_up_ms = (publishing.elapsed() - published).as_millis(),
                        "Batch published."
                    );
                }
                Err(Failure::Retry(reason)) => {
                    warn!(%reason, "Batch not published; trying again from the committed position.");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(Failure::Stop(error)) => return Err(error),
            }
        }
        Ok(())
    }

    /// Rows after the position whose transactions are older than every running one.
    async fn pending(&self) -> anyhow::Result<Vec<Pending>> {
        let rows = sqlx::query(
            "SELECT txid::text AS txid, seq, event_id::text AS event_id, event_type, tenant_id,
                    payload, correlation_id, actor, occurred_at
               FROM events
              WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
                AND (txid, seq) > ($1::text::xid8, $2)
              ORDER BY txid, seq
              LIMIT $3",
        )
        .bind(self.position.txid.to_string())
        .bind(self.position.seq)
        .bind(self.config.batch)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Pending {
                    place: Position {
                        txid: row.get::<String, _>("txid").parse()?,
                        seq: row.get("seq"),
                    },
                    event_id: row.get("event_id"),
                    event_type: row.get("event_type"),
                    tenant_id: row.get("tenant_id"),
                    payload: row.get("payload"),
                    correlation_id: row.get("correlation_id"),
                    actor: row.get("actor"),
                    occurred_at: row.get("occurred_at"),
                })
            })
            .collect()
    }

    /// One Kafka transaction: the batch's events and the position after it.
    fn publish(
        &mut self,
        rows: &[Pending],
        runtime: &tokio::runtime::Runtime,
    ) -> Result<(), Failure> {
        let last = rows.last().map_or(self.position, |r| r.place);
        self.producer.begin_transaction().map_err(Failure::kafka)?;
        let mut dead = Vec::new();
        let mut published = 0;
        for row in rows {
            match self.event(row) {
                Ok(event) => {
                    self.send(&event)?;
                    published += 1;
                }
                Err(refusal) => dead.push((row, reason(&refusal))),
            }
        }
        if !dead.is_empty() {
            // Kept before the commit: a retry finds them recorded (once, by event id).
            if let Err(error) = runtime.block_on(self.bury(&dead)) {
                return Err(self.abort(Failure::Retry(format!("dead letters: {error}"))));
            }
        }
        let position = last.to_json();
        let record = BaseRecord::to(POSITION_TOPIC)
            .key(self.config.name.as_str())
            .payload(position.as_str())
            .partition(0);
        if let Err((error, _)) = self.producer.send(record) {
            return Err(self.abort(Failure::kafka(error)));
        }
        // Delivery reports served as they come: the client's own flush, which the commit
        // starts with, waits in steps of 100 ms — it was a 100 ms floor under every batch.
        if let Err(left) = habitat_runtime::waits::settle(&self.producer, Duration::from_secs(30)) {
            return Err(self.abort(Failure::Retry(format!("{left} records unacknowledged"))));
        }
        if let Err(error) = self.producer.commit_transaction(Duration::from_secs(30)) {
            return Err(self.abort(Failure::kafka(error)));
        }
        self.position = last;
        self.metrics.published.inc_by(published);
        self.metrics.dead_letters.inc_by(dead.len() as u64);
        Ok(())
    }

    fn abort(&self, failure: Failure) -> Failure {
        if let Err(error) = self.producer.abort_transaction(Duration::from_secs(30)) {
            return Failure::kafka(error);
        }
        failure
    }

    /// The row as the REST proxy would accept it, or why not.
    fn event(&self, row: &Pending) -> Result<Event, Refusal> {
        let submission = Submission {
            event_type: row.event_type.clone(),
            tenant_id: row.tenant_id.clone(),
            actor: row.actor.clone(),
            correlation_id: row.correlation_id.clone(),
            payload: row.payload.clone(),
        };
        let stamp = Stamp {
            event_id: &row.event_id,
            producer: &self.producer_name,
            occurred_at: row.occurred_at,
        };
        event_of(&submission, &stamp)
    }

    fn send(&mut self, event: &Event) -> Result<(), Failure> {
        let topic = event.topic();
        let key = event.key();
        let partitions = self.partitions_of(topic)?;
        let value = self.codec.encode(topic, event).map_err(|e| match e {
            CodecError::Unavailable(reason) => Failure::Retry(reason),
            other => Failure::Stop(anyhow::anyhow!("encoding {}: {other}", event.event_type())),
        })?;
        let mut headers = OwnedHeaders::new();
        for (name, value) in event.trace().map(|t| trace_headers(&t)).unwrap_or_default() {
            headers = headers.insert(Header {
                key: &name,
                value: Some(&value),
            });
        }
        let record = BaseRecord::to(topic)
            .key(key.as_str())
            .payload(value.as_slice())
            .partition(partition_for(&key, partitions))
            .headers(headers);
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((error, _)) => return Err(self.abort(Failure::kafka(error))),
            }
        }
    }

    fn partitions_of(&mut self, topic: &str) -> Result<i32, Failure> {
        if let Some(count) = self.partitions.get(topic) {
            return Ok(*count);
        }
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(Failure::kafka)?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Failure::Stop(anyhow::anyhow!(
                    "topic {topic} does not exist; create it (habitat topics apply)"
                ))
            })?;
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        _ = self.partitions.insert(topic.to_owned(), count);
        Ok(count)
    }

    async fn bury(&self, dead: &[(&Pending, Value)]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        for (row, reason) in dead {
            _ = sqlx::query(
                "INSERT INTO dead_letters (event_id, event_type, tenant_id, payload, correlation_id,
                                           actor, occurred_at, reason)
                 VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(&row.event_id)
            .bind(&row.event_type)
            .bind(&row.tenant_id)
            .bind(&row.payload)
            .bind(&row.correlation_id)
            .bind(&row.actor)
            .bind(row.occurred_at)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            warn!(event_id = %row.event_id, %reason, "Outbox row dead-lettered.");
        }
        tx.commit().await
    }

    /// Deletes the rows the committed position covers.
    async fn clean_up(&self) -> anyhow::Result<()> {
        _ = sqlx::query("DELETE FROM events WHERE (txid, seq) <= ($1::text::xid8, $2)")
            .bind(self.position.txid.to_string())
            .bind(self.position.seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn measure(&self) -> anyhow::Result<()> {
        let (pending, lag): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(occurred_at))::float8 FROM events",
        )
        .fetch_one(&self.pool)
        .await?;
        self.metrics.pending.set(pending);
        #[allow(clippy::cast_possible_truncation)]
        self.metrics
            .lag_seconds
            .set(lag.unwrap_or_default().max(0.0) as i64);
        Ok(())
    }
}

/// Why a batch was not published.
enum Failure {
    /// Nothing of it is visible; try again from the committed position.
    Retry(String),
    /// Fenced, misconfigured or broken: stop.
    Stop(anyhow::Error),
}

impl Failure {
    fn kafka(error: KafkaError) -> Self {
        let fenced = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
            )
        );
        let fatal = matches!(&error, KafkaError::Transaction(e) if e.is_fatal());
        if fenced || fatal {
            Self::Stop(anyhow::anyhow!("Kafka: {error}"))
        } else {
            Self::Retry(error.to_string())
        }
    }
}

/// A refusal as the dead letter's reason: the REST proxy's words for it.
fn reason(refusal: &Refusal) -> Value {
    match refusal {
        Refusal::UnknownEventType(event_type) => {
            json!({ "error": "unknown_event_type", "event_type": event_type })
        }
        Refusal::Invalid(problems) => json!({ "error": "invalid", "problems": problems }),
        Refusal::NotWritable { event_type, writer } => {
            json!({ "error": "not_writable", "event_type": event_type, "writer": writer })
        }
    }
}
