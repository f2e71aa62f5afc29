//! Writes accepted events to Kafka, all or nothing, with group commit.
//!
//! Every request — one event or a batch — is a job. A writer thread takes the jobs that
//! arrive within `linger` of each other and writes them in one Kafka transaction
//! (idempotent, acks=all): either every record of every job becomes visible to
//! read_committed readers, or none does and every job is told the broker is unavailable.
//! A request therefore never leaves half a batch behind, and transactions cost a few
//! round trips per group rather than per request. A commit whose answer is lost is retried
//! until the broker answers it (for as long as the broker keeps an open transaction), so
//! an error means nothing became visible.
//!
//! `producers` writer threads, each with a transactional producer of its own, take turns
//! at the queue: one gathers the next group while the others wait on the broker for
//! theirs, so a transaction's round trips no longer hold up the requests behind it. A
//! request's records are always in one transaction; two requests in flight at once were
//! never ordered, and a request sent after another's answer is written after it.

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext, Message,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext},
};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// A record to write: topic, partition, key, value and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where a record was written, and its timestamp (milliseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub timestamp_ms: Option<i64>,
}

/// The records were not written; none of them is visible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("broker unavailable: {0}")]
pub struct Unavailable(pub String);

struct Job {
    records: Vec<Record>,
    reply: oneshot::Sender<Result<Vec<Written>, Unavailable>>,
}

/// How long the broker keeps an unfinished transaction before aborting it. A new producer
/// (after a failure) aborts its predecessor's at once, so this only bounds how long a
/// commit whose answer was lost is retried.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the writer.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    pub bootstrap_servers: String,
    /// The transactional id of the first producer; the others add `-1`, `-2`, … to it.
    /// One per proxy instance.
    pub transactional_id: String,
    /// Transactional producers taking turns (at least one).
    pub producers: usize,
    /// How long a group waits for more jobs after its first.
    pub linger: Duration,
    /// How long a transaction may take before the request is answered 503.
    pub timeout: Duration,
    /// librdkafka settings that win over the writer's own.
    pub kafka: Vec<(String, String)>,
}

/// A handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// One delivery report: (job, record) → (offset, timestamp) or error.
type Delivered = (usize, usize, Result<(i64, Option<i64>), String>);

/// Delivery reports of the transaction in flight.
#[derive(Default)]
struct Reports {
    delivered: Mutex<Vec<Delivered>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<(usize, usize)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (job, record) = *opaque;
        let outcome = match result {
            Ok(message) => Ok((message.offset(), message.timestamp().to_millis())),
            Err((error, _)) => Err(error.to_string()),
        };
        self.delivered
            .lock()
            .expect("reports lock")
            .push((job, record, outcome));
    }
}

impl Writer {
    /// Starts the writer thread.
    pub fn start(config: WriterConfig) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..config.producers.max(1) {
            let (config, queue) = (config.clone(), Arc::clone(&queue));
            _ = thread::Builder::new()
                .name(format!("kafka-writer-{n}"))
                .spawn(move || run(&config, n, &queue))
                .expect("spawn a writer thread");
        }
        Self { jobs }
    }

    /// Writes `records` in one transaction (shared with concurrent requests).
    pub async fn write(&self, records: Vec<Record>) -> Result<Vec<Written>, Unavailable> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { records, reply })
            .map_err(|_| Unavailable("the writer has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| Unavailable("the writer has stopped".to_owned()))?
    }
}

/// The transactional id of producer `n`.
fn transactional_id(config: &WriterConfig, n: usize) -> String {
    if n == 0 {
        config.transactional_id.clone()
    } else {
        format!("{}-{n}", config.transactional_id)
    }
}

fn producer(config: &WriterConfig, n: usize) -> Result<BaseProducer<Reports>, KafkaError> {
    let mut client = ClientConfig::new();
    _ = client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("transactional.id", transactional_id(config, n))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        // A transaction's partitions are added while the previous commit may still be
        // settling; retry that quickly rather than after librdkafka's default 100 ms.
        .set("retry.backoff.ms", "10")
        .set("retry.backoff.max.ms", "100")
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        )
        .set("message.timeout.ms", config.timeout.as_millis().to_string());
    for (key, value) in &config.kafka {
        _ = client.set(key, value);
    }
    let producer: BaseProducer<Reports> = client.create_with_context(Reports::default())?;
    producer.init_transactions(config.timeout)?;
    Ok(producer)
}

/// The next group: the first job to come, those that follow within `linger` and those
/// waiting then; `None`
/// once the writer is dropped. The queue is held meanwhile, so groups do not interleave.
fn gather(queue: &Mutex<mpsc::Receiver<Job>>, linger: Duration) -> Option<Vec<Job>> {
    let queue = queue.lock().expect("writer queue lock");
    let mut group = vec![queue.recv().ok()?];
    let deadline = Instant::now() + linger;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match queue.recv_timeout(left) {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    // Whatever else is already waiting goes along.
    group.extend(queue.try_iter());
    Some(group)
}

fn run(config: &WriterConfig, n: usize, queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut current: Option<BaseProducer<Reports>> = None;
    while let Some(group) = gather(queue, config.linger) {
        if current.is_none() {
            match producer(config, n) {
                Ok(p) => current = Some(p),
                Err(error) => {
                    answer_all(group, &Unavailable(error.to_string()));
                    continue;
                }
            }
        }
        let Some(producer) = current.as_ref() else {
            continue;
        };
        let started = Instant::now();
        match transaction(producer, &group, config.timeout) {
            Ok(written) => {
                debug!(
                    producer = n,
                    jobs = group.len(),
                    micros = started.elapsed().as_micros(),
                    "Transaction committed."
                );
                for (job, result) in group.into_iter().zip(written) {
                    _ = job.reply.send(Ok(result));
                }
            }
            Err(error) => {
                warn!(%error, "Transaction failed; nothing of it is visible.");
                let aborted = producer.abort_transaction(config.timeout).is_ok();
                answer_all(group, &Unavailable(error));
                if !aborted {
                    // A fatal or fenced producer is made anew (its transaction is aborted
                    // when the next one initialises). Closing it may wait on the broker,
                    // so it closes on a thread of its own.
                    if let Some(old) = current.take() {
                        _ = thread::spawn(move || drop(old));
                    }
                }
            }
        }
    }
}

fn answer_all(group: Vec<Job>, error: &Unavailable) {
    for job in group {
        _ = job.reply.send(Err(error.clone()));
    }
}

/// Waits until every record sent is acknowledged and its report served. (rdkafka's
/// `flush` polls in 100 ms steps, and short `poll`s spin: see `habitat_runtime::waits`.)
fn settle(producer: &BaseProducer<Reports>, timeout: Duration) -> Result<(), String> {
    habitat_runtime::waits::settle(producer, timeout)
        .map_err(|left| format!("{left} records not acknowledged within {timeout:?}"))
}

fn transaction(
    producer: &BaseProducer<Reports>,
    group: &[Job],
    timeout: Duration,
) -> Result<Vec<Vec<Written>>, String> {
    producer
        .context()
        .delivered
        .lock()
        .expect("reports lock")
        .clear();
    producer.begin_transaction().map_err(|e| e.to_string())?;
    for (j, job) in group.iter().enumerate() {
        for (r, record) in job.records.iter().enumerate() {
            let mut out = BaseRecord::with_opaque_to(&record.topic, Box::new((j, r)))
                .partition(record.partition)
                .key(record.key.as_str())
                .payload(record.value.as_slice());
            if !record.headers.is_empty() {
                let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
                for (name, value) in &record.headers {
                    headers = headers.insert(Header {
                        key: name,
                        value: value.as_deref(),
                    });
                }
                out = out.headers(headers);
            }
            loop {
                match producer.send(out) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        back,
                    )) => {
                        producer.poll(Duration::from_millis(5));
                        out = back;
                    }
                    Err((error, _)) => return Err(error.to_string()),
                }
            }
        }
    }
    settle(producer, timeout)?;
    let delivered =
        std::mem::take(&mut *producer.context().delivered.lock().expect("reports lock"));
    let mut written: Vec<Vec<Option<Written>>> = group
        .iter()
        .map(|job| vec![None; job.records.len()])
        .collect();
    for (j, r, outcome) in delivered {
        let (offset, timestamp_ms) = outcome?;
        let record = &group[j].records[r];
        written[j][r] = Some(Written {
            topic: record.topic.clone(),
            partition: record.partition,
            offset,
            key: record.key.clone(),
            timestamp_ms,
        });
    }
    let written = written
        .into_iter()
        .map(|job| job.into_iter().collect::<Option<Vec<_>>>())
        .collect::<Option<Vec<_>>>()
        .ok_or("a record was not acknowledged")?;
    // A commit that timed out may still have reached the broker: its outcome is only known
    // once a retry answers. The commit is retried until it is definite, so that a 503 always
    // means nothing became visible.
    let started = Instant::now();
    loop {
        match producer.commit_transaction(timeout) {
            Ok(()) => return Ok(written),
            Err(KafkaError::Transaction(error))
                if error.is_retriable() && started.elapsed() < TRANSACTION_TIMEOUT + timeout =>
            {
                warn!(%error, "Commit outcome not known yet; retrying the commit.");
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// The writer shared by the handlers.
pub type SharedWriter = Arc<Writer>;

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            records: Vec::new(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_group_takes_every_job_already_waiting_even_without_linger() {
        let (jobs, queue) = mpsc::channel();
        for _ in 0..5 {
            jobs.send(job()).expect("queued");
        }
        let queue = Mutex::new(queue);
        let group = gather(&queue, Duration::ZERO).expect("a group");
        assert_eq!(group.len(), 5);
        jobs.send(job()).expect("queued");
        assert_eq!(gather(&queue, Duration::ZERO).expect("a group").len(), 1);
        drop(jobs);
        assert!(
            gather(&queue, Duration::ZERO).is_none(),
            "the writer was dropped"
        );
    }
}
