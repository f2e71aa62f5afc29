//! Rebuilding a schema from the topics, for replay-to-verify (and `habitat-bench sink`):
//! every partition read from its beginning up to a target offset, decoded and batched by
//! the sink's own code, and written by writers that each own some of the partitions.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use habitat_runtime::{
    avro::AvroCodec,
    config::{KafkaSettings, RegistryAuth},
};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList, consumer::BaseConsumer};
use serde::Serialize;
use tokio::runtime::Handle;

use crate::{
    batch::Batch,
    sink::Records,
    store::{Partition, Store},
};

/// Where to read and write.
#[derive(Clone, Debug)]
pub struct Source {
    pub bootstrap_servers: String,
    pub schema_registry_url: String,
    pub schema_registry_auth: Option<RegistryAuth>,
    pub kafka: KafkaSettings,
}

/// How many records a rebuild took and how long.
#[derive(Clone, Debug, Serialize)]
pub struct Rebuilt {
    pub records: u64,
    pub seconds: f64,
    /// Time spent waiting for Postgres after the records of a batch were read and decoded
    /// (writes overlap reading the next batch; this is what they did not hide).
    pub waiting_seconds: f64,
    pub transactions: u64,
}

/// Rebuilds `store` from the topics: every partition of `targets` from its beginning up to
/// (not including) its target offset, in batches of `batch_max` records.
pub fn rebuild(
    source: &Source,
    store: &Store,
    targets: &BTreeMap<Partition, i64>,
    batch_max: u64,
    handle: &Handle,
) -> anyhow::Result<Rebuilt> {
    rebuild_reporting(source, store, targets, batch_max, handle, &mut |_, _| {})
}

/// [`rebuild`], telling `progress` (offsets read, offsets to read) as it goes.
pub fn rebuild_reporting(
    source: &Source,
    store: &Store,
    targets: &BTreeMap<Partition, i64>,
    batch_max: u64,
    handle: &Handle,
    report: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Rebuilt> {
    let started = Instant::now();
    // Offsets, not records: compaction and transaction markers leave gaps.
    let to_read: u64 = targets.values().map(|t| (*t).max(0) as u64).sum();
    // Offsets read, per partition and in all (kept as a sum, not summed per record).
    let mut read: BTreeMap<Partition, u64> = BTreeMap::new();
    let mut read_total: u64 = 0;
    let codec = AvroCodec::with_auth(
        &source.schema_registry_url,
        source.schema_registry_auth.as_ref(),
        handle.clone(),
    )?;
    let records = Records::new(codec, Arc::new(AtomicBool::new(false)));
    let mut client = ClientConfig::new();
    _ = client
        .set("bootstrap.servers", &source.bootstrap_servers)
        .set("group.id", "habitat-verify")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .set("queued.max.messages.kbytes", "262144")
        // A fetch takes 256 KiB of each partition rather than 4 MiB: a batch then holds
        // records of every partition, to be dealt out evenly among the writers.
        .set("fetch.message.max.bytes", "262144")
        // The end of a partition closes it when compaction removed its target's record
        // and every record after it.
        .set("enable.partition.eof", "true");
    source.kafka.apply(&mut client);
    let consumer: BaseConsumer = client.create()?;
    // One topic at a time: an end-of-partition event names a partition, not its topic.
    let mut topics: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
    for ((topic, partition), target) in targets {
        if *target > 0 {
            _ = topics
                .entry(topic.as_str())
                .or_default()
                .insert(*partition, *target);
        }
    }
    let mut committed: BTreeMap<Partition, i64> = store_offsets(store, handle, targets)?;
    let mut batch = Batch::default();
    let mut total = 0;
    let mut waiting = Duration::ZERO;
    let mut lanes = Lanes::start(store, targets, handle);
    let mut flush = |batch: &mut Batch, committed: &mut BTreeMap<Partition, i64>| {
        // Encoded for Postgres while the writers still write the batches before.
        let mut parts = Vec::with_capacity(WRITERS);
        let split =
            std::mem::take(batch).split_by(WRITERS, |topic, partition| lanes.of(topic, partition));
        for (lane, part) in split.into_iter().enumerate() {
            if !part.is_empty() {
                total += part.len();
                let expected = committed.clone();
                committed.extend(part.offsets.clone());
                parts.push((lane, store.prepare(part)?, expected));
            }
        }
        let before = Instant::now();
        for (lane, part, expected) in parts {
            lanes.send(lane, part, expected, handle)?;
        }
        waiting += before.elapsed();
        Ok::<_, anyhow::Error>(())
    };
    // The sink's next offset is one past a record it was given, and the same records are
    // given again here: each partition ends at its target's previous record, at the first
    // record past it when compaction removed that one since, or at the partition's end
    // when compaction removed every record from there.
    for (topic, partitions) in topics {
        let mut list = TopicPartitionList::new();
        for partition in partitions.keys() {
            list.add_partition_offset(topic, *partition, Offset::Beginning)?;
        }
        // With the topic's leaders known: otherwise nothing is read for up to a second at
        // every topic.
        habitat_runtime::kafka::assign_known(&consumer, &list)?;
        let mut open = partitions;
        let mut progress = Instant::now();
        while !open.is_empty() {
            if progress.elapsed() > STALL {
                anyhow::bail!("replay stalled: no record for {STALL:?} from {topic} {open:?}");
            }
            let message = match consumer.poll(Duration::from_millis(500)) {
                None => continue,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                    progress = Instant::now();
                    if let Some(target) = open.remove(&partition) {
                        let key = (topic.to_owned(), partition);
                        let before = read.insert(key, target as u64).unwrap_or(0);
                        read_total += (target as u64).saturating_sub(before);
                        report(read_total, to_read);
                    }
                    continue;
                }
                Some(message) => message?,
            };
            progress = Instant::now();
            let Some(target) = open.get(&message.partition()).copied() else {
                continue;
            };
            let partition = (topic.to_owned(), message.partition());
            let now_read = (message.offset() + 1).min(target) as u64;
            let before = read.insert(partition, now_read).unwrap_or(0);
            read_total += now_read.saturating_sub(before);
            report(read_total, to_read);
            if message.offset() < target {
                records.add(&mut batch, &message)?;
            }
            if message.offset() + 1 >= target {
                _ = open.remove(&message.partition());
            }
            if batch.len() >= batch_max {
                flush(&mut batch, &mut committed)?;
            }
        }
    }
    flush(&mut batch, &mut committed)?;
    let before = Instant::now();
    let transactions = lanes.finish(handle)?;
    waiting += before.elapsed();
    Ok(Rebuilt {
        records: total,
        seconds: started.elapsed().as_secs_f64(),
        waiting_seconds: waiting.as_secs_f64(),
        transactions,
    })
}

/// Transactions a rebuild writes at once (on disjoint partitions).
const WRITERS: usize = 2;

/// Parts a writer holds besides the one it writes.
const QUEUED: usize = 2;

/// A prepared part and the offsets its partitions move from.
type Part = (crate::store::Prepared, BTreeMap<Partition, i64>);

/// The rebuild's writers. Each owns some partitions for the whole rebuild and writes their
/// parts in order, one transaction per part, as they come: a writer never waits for the
/// other's part of the same batch, as it would if each batch were written at once (whole
/// partitions seldom split a batch evenly, and the lighter part's backend would then
/// idle). The partitions are dealt out by their records, per topic (a rebuild reads one
/// topic at a time).
struct Lanes {
    of: crate::batch::PartsByTopic,
    senders: Vec<tokio::sync::mpsc::Sender<Part>>,
    tasks: Vec<tokio::task::JoinHandle<Result<u64, crate::store::WriteError>>>,
}

impl Lanes {
    fn start(store: &Store, targets: &BTreeMap<Partition, i64>, handle: &Handle) -> Self {
        let (senders, tasks) = (0..WRITERS)
            .map(|_| {
                let (sender, mut parts) = tokio::sync::mpsc::channel::<Part>(QUEUED);
                let store = store.clone();
                let task = handle.spawn(async move {
                    let mut written = 0;
                    while let Some((part, expected)) = parts.recv().await {
                        store.write(&part, &expected).await?;
                        written += 1;
                    }
                    Ok(written)
                });
                (sender, task)
            })
            .unzip();
        Self {
            of: lanes_of(targets, WRITERS),
            senders,
            tasks,
        }
    }

    /// The writer of a partition.
    fn of(&self, topic: &str, partition: i32) -> usize {
        crate::batch::part_of(&self.of, topic, partition)
    }

    /// Queues a part for its writer, waiting while the writer's queue is full; a writer
    /// that stopped on an error gives its error.
    fn send(
        &mut self,
        lane: usize,
        part: crate::store::Prepared,
        expected: BTreeMap<Partition, i64>,
        handle: &Handle,
    ) -> anyhow::Result<()> {
        if handle
            .block_on(self.senders[lane].send((part, expected)))
            .is_err()
        {
            handle.block_on(&mut self.tasks[lane])??;
            anyhow::bail!("a rebuild's writer stopped");
        }
        Ok(())
    }

    /// Waits for every queued part to be written; the transactions written.
    fn finish(self, handle: &Handle) -> anyhow::Result<u64> {
        drop(self.senders);
        let mut transactions = 0;
        for task in self.tasks {
            transactions += handle.block_on(task)??;
        }
        Ok(transactions)
    }
}

/// How long a rebuild waits for the next record before it gives up.
const STALL: Duration = Duration::from_secs(60);

/// The writer of each partition: per topic, its partitions dealt out to `n` writers by
/// their records (the targets' offsets).
fn lanes_of(targets: &BTreeMap<Partition, i64>, n: usize) -> crate::batch::PartsByTopic {
    let mut topics: BTreeMap<&str, Vec<(i32, usize)>> = BTreeMap::new();
    for ((topic, partition), target) in targets {
        topics
            .entry(topic.as_str())
            .or_default()
            .push((*partition, usize::try_from(*target).unwrap_or(0)));
    }
    crate::batch::by_topic(topics.into_iter().flat_map(|(topic, partitions)| {
        crate::batch::deal(partitions, n)
            .into_iter()
            .map(move |(partition, lane)| ((topic, partition), lane))
    }))
}

fn store_offsets(
    store: &Store,
    handle: &Handle,
    targets: &BTreeMap<Partition, i64>,
) -> anyhow::Result<BTreeMap<Partition, i64>> {
    let partitions: Vec<Partition> = targets.keys().cloned().collect();
    Ok(handle.block_on(store.claim(&partitions))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_topic_is_dealt_out_to_the_writers_by_its_records() {
        let targets: BTreeMap<Partition, i64> = [
            (("a", 0), 100),
            (("a", 1), 60),
            (("a", 2), 50),
            (("b", 0), 5),
            (("b", 1), 7),
            (("b", 2), 0),
        ]
        .into_iter()
        .map(|((t, p), n)| ((t.to_owned(), p), n))
        .collect();
        let of = lanes_of(&targets, 2);
        let lane = |t: &str, p: i32| of[t][&p];
        // a: 100 | 60 + 50; b: 7 | 5 + 0 (the empty partition to the lighter writer).
        assert_eq!((lane("a", 0), lane("a", 1), lane("a", 2)), (0, 1, 1));
        assert_eq!((lane("b", 1), lane("b", 0), lane("b", 2)), (0, 1, 1));
    }
}
