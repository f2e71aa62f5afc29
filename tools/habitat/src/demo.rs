//! The demo on the running stack: a transactional round trip through devbroker.
//!
//! Guarantee shown: records written in a committed transaction are read back by a
//! read_committed consumer exactly once; records of an aborted transaction never are.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
};

use crate::{
    kafka::{config, ensure_topic},
    stack::Running,
};

const TOPIC: &str = "habitat.demo";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Writes a committed and an aborted transaction, then reads the topic back with
/// read_committed and prints what arrived.
pub fn run(stack: &Running) -> Result<()> {
    ensure_topic(&stack.bootstrap, TOPIC, 1)?;
    let run_id = uuid::Uuid::now_v7().to_string();

    let producer: BaseProducer = config(&stack.bootstrap)
        .set("transactional.id", "habitat-demo")
        .create()?;
    producer.init_transactions(TIMEOUT)?;

    producer.begin_transaction()?;
    for n in 1..=3 {
        let value = format!("{run_id} committed #{n}");
        producer
            .send(BaseRecord::to(TOPIC).key(&run_id).payload(&value))
            .map_err(|(error, _)| error)?;
    }
    producer.commit_transaction(TIMEOUT)?;
    println!("Wrote 3 records to {TOPIC} in a transaction and committed it.");

    producer.begin_transaction()?;
    let aborted = format!("{run_id} aborted");
    producer
        .send(BaseRecord::to(TOPIC).key(&run_id).payload(&aborted))
        .map_err(|(error, _)| error)?;
    producer.flush(TIMEOUT)?;
    producer.abort_transaction(TIMEOUT)?;
    println!("Wrote 1 record in a second transaction and aborted it.");

    let consumer: BaseConsumer = config(&stack.bootstrap)
        .set("group.id", format!("habitat-demo-{run_id}"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;

    let (_, end) = consumer.fetch_watermarks(TOPIC, 0, TIMEOUT)?;
    let mut mine = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while consumer
        .position()?
        .find_partition(TOPIC, 0)
        .and_then(|p| match p.offset() {
            Offset::Offset(at) => Some(at),
            _ => None,
        })
        .is_none_or(|at| at < end)
    {
        if Instant::now() > deadline {
            bail!("did not read up to offset {end} within {TIMEOUT:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("consume")?;
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        if value.starts_with(&run_id) {
            println!("  read offset {:>4}: {value}", message.offset());
            mine.push(value);
        }
    }
    if mine.len() != 3 || mine.iter().any(|v| v == &aborted) {
        bail!("expected exactly the 3 committed records, read {mine:?}");
    }
    println!("A read_committed consumer read the 3 committed records and none of the aborted one.");
    Ok(())
}
