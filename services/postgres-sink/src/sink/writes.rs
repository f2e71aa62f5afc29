//! The sink's writes: the open batch handed to writer tasks, each part settled (retried
//! while Postgres is away, dropped when another instance moved its offsets), and the
//! metrics of each write taken when it ended.

use super::*;

/// A part of the batch being written, by its own task.
pub(super) struct Writing {
    started: Instant,
    /// The part written (encoded in the task) and how its write ended.
    task: tokio::task::JoinHandle<Result<Written, crate::stage::BadPayload>>,
}

/// A part, how its write ended, and when.
type Written = (Prepared, Result<(), WriteError>, Ended);

/// When a write ended, taken in its task: the loop may notice it a little later.
#[derive(Clone, Copy)]
struct Ended {
    at: Instant,
    wall: chrono::DateTime<Utc>,
}

impl Ended {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }
}

impl Loop<'_> {
    /// Whether every part of the batch being written has ended (false: none is written).
    pub(super) fn written(&self) -> bool {
        !self.writing.is_empty() && self.writing.iter().all(|w| w.task.is_finished())
    }

    /// Hands the open batch to writer tasks (after the batch before it is written): the
    /// next batch is read and decoded while Postgres writes this one. The batch is split
    /// by partition into `writers` transactions written at once, each on its own
    /// connection, each with its partitions' rows and offsets. Each task encodes its part
    /// itself, so that the parts are encoded at once (the rebuild, which waits for Postgres
    /// anyway, encodes ahead instead; docs/benchmarks.md measures both).
    pub(super) fn flush(&mut self) -> Result<(), SinkError> {
        self.settle(true)?;
        self.opened = None;
        let writers = self.sink.config.writers();
        for batch in std::mem::take(&mut self.batch).split(writers) {
            if batch.is_empty() {
                continue;
            }
            let store = self.sink.store.clone();
            let expected = self.committed.clone();
            self.writing.push(Writing {
                started: Instant::now(),
                task: self.sink.handle.spawn(async move {
                    let prepared = store.prepare(batch)?;
                    let outcome = store.write(&prepared, &expected).await;
                    Ok((prepared, outcome, Ended::now()))
                }),
            });
        }
        Ok(())
    }

    /// Waits for every part of the batch being written. A failed part is retried; a
    /// conflict (another instance moved the offsets) drops the open batch and — when
    /// `reposition` — moves every assigned partition back to the offsets Postgres holds
    /// (the parts that were written are among them).
    pub(super) fn settle(&mut self, reposition: bool) -> Result<(), SinkError> {
        let mut conflict = false;
        for writing in std::mem::take(&mut self.writing) {
            conflict |= !self.settle_part(writing)?;
        }
        if !conflict {
            return Ok(());
        }
        self.drop_open();
        if reposition {
            self.reposition()
        } else {
            Ok(())
        }
    }

    /// Waits for one part; false when its offsets had moved and it was dropped.
    fn settle_part(&mut self, writing: Writing) -> Result<bool, SinkError> {
        let (prepared, mut outcome, mut ended) = self.sink.handle.block_on(writing.task)??;
        let batch = prepared.batch();
        let metrics = &self.sink.metrics;
        let mut delays = None;
        loop {
            match outcome {
                Ok(()) => break,
                Err(WriteError::Conflict(lost)) => {
                    metrics.transactions.with_label_values(&["aborted"]).inc();
                    warn!(partitions = ?lost, "Offsets moved since the batch was read (another instance, or a rebalance): batch dropped, re-reading the stored offsets.");
                    return Ok(false);
                }
                Err(error) if error.is_transient() => {
                    // Postgres is away or restarting: the same batch, once it is back.
                    metrics.transactions.with_label_values(&["aborted"]).inc();
                    metrics
                        .dependencies
                        .unreachable(dependency::DATABASE, &error);
                    let delay = delays
                        .get_or_insert_with(|| self.sink.config.retry_policy().delays())
                        .next();
                    let Some(delay) = delay else {
                        return Err(self.gave_up());
                    };
                    std::thread::sleep(delay);
                    outcome = self
                        .sink
                        .handle
                        .block_on(self.sink.store.write(&prepared, &self.committed));
                    ended = Ended::now();
                }
                Err(WriteError::Database(error)) => return Err(error.into()),
            }
        }
        metrics.dependencies.reachable(dependency::DATABASE);
        metrics.transactions.with_label_values(&["committed"]).inc();
        metrics
            .commit_latency
            .observe((ended.at - writing.started).as_secs_f64());
        for occurred in &batch.occurred {
            let latency = (ended.wall - *occurred).num_microseconds().unwrap_or(0);
            metrics
                .end_to_end_latency
                .observe(latency.max(0) as f64 / 1e6);
        }
        for (topic, count) in &batch.records {
            metrics
                .records_in
                .with_label_values(&[topic])
                .inc_by(*count);
        }
        for (class, count) in &batch.dead_letter_classes {
            metrics
                .dead_letters
                .with_label_values(&[class])
                .inc_by(*count);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &batch.offsets {
            _ = self.committed.insert((topic.clone(), *partition), *next);
            _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        debug!(
            rows = batch.log.len(),
            write_ms = (ended.at - writing.started).as_millis() as u64,
            "Batch written."
        );
        // For lag tools only; Postgres holds the truth.
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            debug!(%error, "Offsets not committed to Kafka.");
        }
        Ok(true)
    }

    /// After a conflict: every assigned partition back to the offsets Postgres holds.
    fn reposition(&mut self) -> Result<(), SinkError> {
        let partitions: Vec<Partition> = self.position.keys().cloned().collect();
        let stored = self
            .sink
            .handle
            .block_on(self.sink.store.claim(&partitions))?;
        for ((topic, partition), next) in stored {
            let offset = if next < 0 {
                Offset::Beginning
            } else {
                Offset::Offset(next)
            };
            self.consumer
                .seek(&topic, partition, offset, Duration::from_secs(10))?;
            _ = self.committed.insert((topic.clone(), partition), next);
            _ = self.position.insert((topic, partition), next.max(0));
        }
        Ok(())
    }
}
