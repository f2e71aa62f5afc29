//! An in-memory test driver, like Kafka Streams' `TopologyTestDriver`: feed records to a
//! processor, move its clock, read what it emitted, dead-lettered and stored — no
//! broker, the same [`TaskState`] and [`Context`](crate::Context) as the engine.
//!
//! Every step is committed as the engine would commit it: state-store writes go to an
//! in-memory changelog, so [`TestDriver::restart`] shows what survives a crash.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet, VecDeque},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use serde::de::DeserializeOwned;

use crate::{
    Clock, Codec, ManualClock, Payload, ProcessError, Processor, Record,
    dlq::DeadLetter,
    step::{self, Outcome},
    store::{Store, StoreKey},
    task::{Env, Output, TaskState, partition_for},
};

/// An output record as the engine would produce it.
#[derive(Clone, Debug, PartialEq)]
pub struct Produced<V> {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub value: Option<V>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Drives one processor in memory.
pub struct TestDriver<P: Processor> {
    processor: P,
    clock: ManualClock,
    partitions: i32,
    tasks: BTreeMap<i32, TaskState>,
    /// The committed state: (partition, store, key) → value.
    changelog: BTreeMap<(i32, String, String), Vec<u8>>,
    offsets: BTreeMap<(String, i32), i64>,
    outputs: VecDeque<Produced<P::Out>>,
    dead_letters: Vec<DeadLetter>,
    /// The record types `topics.yaml` names the processor a reader of (`None` when it
    /// names none): values of other types are passed over, as the engine does.
    reads: Option<HashSet<String>>,
    passed: u64,
}

impl<P: Processor> TestDriver<P> {
    /// A driver with six partitions and the clock at 2026-01-01T00:00:00Z.
    pub fn new(processor: P) -> Self {
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        let reads: HashSet<String> = contracts::topology::Topology::embedded()
            .records_read_by(processor.name())
            .into_iter()
            .collect();
        Self {
            reads: (!reads.is_empty()).then_some(reads),
            passed: 0,
            processor,
            clock: ManualClock::new(start),
            partitions: 6,
            tasks: BTreeMap::new(),
            changelog: BTreeMap::new(),
            offsets: BTreeMap::new(),
            outputs: VecDeque::new(),
            dead_letters: Vec::new(),
        }
    }

    /// Sets the partition count of every topic.
    pub fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    pub fn processor(&self) -> &P {
        &self.processor
    }

    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Feeds a record stamped with the clock's time.
    pub fn pipe(&mut self, topic: &str, key: &str, value: P::In) -> Result<(), ProcessError> {
        let now = self.now();
        self.pipe_at(topic, key, Some(value), now)
    }

    /// Feeds a tombstone.
    pub fn pipe_tombstone(&mut self, topic: &str, key: &str) -> Result<(), ProcessError> {
        let now = self.now();
        self.pipe_at(topic, key, None, now)
    }

    /// Feeds a record with its own timestamp. `Err` only for a fatal error: a rejected
    /// record is dead-lettered, as on a broker.
    pub fn pipe_at(
        &mut self,
        topic: &str,
        key: &str,
        value: Option<P::In>,
        timestamp: DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        let partition = partition_for(key, self.partitions);
        let offset = self.next_offset(topic, partition);
        if let (Some(reads), Some(kind)) =
            (&self.reads, value.as_ref().and_then(Payload::record_type))
            && !reads.contains(kind)
        {
            self.passed += 1;
            self.fire_timers()?;
            self.commit();
            return Ok(());
        }
        let record = Record {
            topic: topic.to_owned(),
            partition,
            offset,
            timestamp,
            key: Some(key.to_owned()),
            value,
            headers: Vec::new(),
        };
        // Timers due on the clock fire before the record, as the engine fires them.
        self.fire_timers()?;
        let env = self.env();
        let raw = (Some(key.as_bytes().to_vec()), None);
        self.ensure_task(partition)?;
        let task = self.tasks.get_mut(&partition).expect("task present");
        let outcome = step::record(&self.processor, task, &env, &record, raw)?;
        self.settle(outcome);
        self.fire_timers()?;
        self.commit();
        Ok(())
    }

    /// Feeds raw bytes through `codec`, as the engine does: bytes that do not decode are
    /// dead-lettered.
    pub fn pipe_bytes<C>(
        &mut self,
        codec: &C,
        topic: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<(), ProcessError>
    where
        C: Codec<In = P::In>,
    {
        match codec.decode(topic, bytes) {
            Ok(value) => self.pipe(topic, key, value),
            Err(error) => {
                let partition = partition_for(key, self.partitions);
                let offset = self.next_offset(topic, partition);
                self.dead_letters.push(DeadLetter::undecodable(
                    (topic, partition, offset),
                    self.processor.name(),
                    &error,
                    self.now(),
                    Some(key.as_bytes().to_vec()),
                    Some(bytes.to_vec()),
                ));
                Ok(())
            }
        }
    }

    /// Records passed over: of types the processor is not a reader of in `topics.yaml`.
    pub fn passed(&self) -> u64 {
        self.passed
    }

    /// Moves the clock forward and fires the timers now due.
    pub fn advance(&mut self, by: Duration) -> Result<(), ProcessError> {
        self.clock.advance(by);
        self.fire_timers()?;
        self.commit();
        Ok(())
    }

    /// Sets the clock and fires the timers now due.
    pub fn set_time(&mut self, now: DateTime<Utc>) -> Result<(), ProcessError> {
        self.clock.set(now);
        self.fire_timers()?;
        self.commit();
        Ok(())
    }

    /// Drops every partition's in-memory state, as a crash would; the next record
    /// restores it from the changelog.
    pub fn restart(&mut self) {
        self.tasks.clear();
    }

    /// Drops the in-memory state of some partitions, as a rebalance that moves them to
    /// another instance does; their next record restores them from the changelog.
    pub fn revoke(&mut self, partitions: &[i32]) {
        self.tasks.retain(|p, _| !partitions.contains(p));
    }

    /// The partition a key's records go to.
    pub fn partition_of(&self, key: &str) -> i32 {
        partition_for(key, self.partitions)
    }

    /// Takes every output emitted so far, in order.
    pub fn take_outputs(&mut self) -> Vec<Produced<P::Out>> {
        self.outputs.drain(..).collect()
    }

    /// Takes every output value emitted so far, in order (tombstones left out).
    pub fn take_values(&mut self) -> Vec<P::Out> {
        self.outputs.drain(..).filter_map(|o| o.value).collect()
    }

    /// Takes the outputs of one topic, leaving the others.
    pub fn take_outputs_of(&mut self, topic: &str) -> Vec<Produced<P::Out>> {
        let (taken, kept): (Vec<_>, Vec<_>) =
            self.outputs.drain(..).partition(|o| o.topic == topic);
        self.outputs = kept.into();
        taken
    }

    /// Every dead letter so far.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// A value of a store, looked up in every partition.
    pub fn get<T: DeserializeOwned>(&self, store: &str, key: &str) -> Option<T> {
        self.changelog
            .iter()
            .find(|((_, s, k), _)| s == store && k == key)
            .and_then(|(_, raw)| serde_json::from_slice(raw).ok())
    }

    /// The value of a typed store at `key`, as the changelog holds it now.
    pub fn read<K: StoreKey, V: DeserializeOwned>(
        &self,
        store: &Store<K, V>,
        key: &K,
    ) -> Option<V> {
        self.get(store.name(), &key.render())
    }

    /// Every entry of a store in every partition, in (partition, key) order.
    pub fn entries<T: DeserializeOwned>(&self, store: &str) -> Vec<(String, T)> {
        self.changelog
            .iter()
            .filter(|((_, s, _), _)| s == store)
            .filter_map(|((_, _, k), raw)| Some((k.clone(), serde_json::from_slice(raw).ok()?)))
            .collect()
    }

    fn env(&self) -> Env {
        Env {
            processor: self.processor.name().to_owned(),
            stores: self.processor.stores(),
            timers: self.processor.timers(),
            now: self.clock.now(),
        }
    }

    fn next_offset(&mut self, topic: &str, partition: i32) -> i64 {
        let next = self
            .offsets
            .entry((topic.to_owned(), partition))
            .or_insert(0);
        let offset = *next;
        *next += 1;
        offset
    }

    /// The partition's state, restored from the changelog (and announced to the
    /// processor) when it is not in memory.
    fn ensure_task(&mut self, partition: i32) -> Result<(), ProcessError> {
        if !self.tasks.contains_key(&partition) {
            let mut task = TaskState::new(partition, &self.processor.stores());
            for ((p, store, key), value) in &self.changelog {
                if *p == partition {
                    task.restore(store, key.clone(), Some(value.clone()));
                }
            }
            let outputs = step::assigned(&self.processor, &mut task, &self.env())?;
            _ = self.tasks.insert(partition, task);
            self.collect(outputs);
        }
        Ok(())
    }

    fn fire_timers(&mut self) -> Result<(), ProcessError> {
        // As the engine restores every assigned partition before its first record, a
        // partition with committed state is back before its timers are due (after a
        // restart or a revoke, with no new record for it).
        let stateful: BTreeSet<i32> = self.changelog.keys().map(|(p, _, _)| *p).collect();
        for partition in stateful {
            self.ensure_task(partition)?;
        }
        let env = self.env();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let due = self.tasks[&partition].due_timers(env.now);
            for timer in due {
                let task = self.tasks.get_mut(&partition).expect("task present");
                let outcome = step::timer(&self.processor, task, &env, &timer)?;
                self.settle(outcome);
            }
        }
        Ok(())
    }

    fn settle(&mut self, outcome: Outcome<P::Out>) {
        match outcome {
            Outcome::Emitted(outputs) => self.collect(outputs),
            Outcome::DeadLettered(letter) => self.dead_letters.push(letter),
        }
    }

    fn collect(&mut self, outputs: Vec<Output<P::Out>>) {
        for output in outputs {
            self.outputs.push_back(Produced {
                partition: partition_for(&output.key, self.partitions),
                topic: output.topic,
                key: output.key,
                value: output.value,
                headers: output.headers,
            });
        }
    }

    fn commit(&mut self) {
        for (partition, task) in &mut self.tasks {
            for (store, key, value) in task.take_dirty() {
                let slot = (*partition, store, key);
                match value {
                    Some(value) => _ = self.changelog.insert(slot, value),
                    None => _ = self.changelog.remove(&slot),
                }
            }
        }
    }
}
