//! The transactional producer, touched here only: begin → produce → send the offsets with
//! the group's metadata → commit, with its metrics; an abort and the rewind to the
//! committed offsets.

use super::*;

impl<P, C> Running<'_, P, C>
where
    P: Processor,
    C: Codec<In = P::In, Out = P::Out>,
{
    /// Commits the batch: one transaction with its outputs, changelog records, dead
    /// letters and input offsets.
    pub(super) fn commit(&mut self) -> Result<(), Failure> {
        let mut changelog = Vec::new();
        for task in self.tasks.values_mut() {
            for (store, key, value) in task.state.take_dirty() {
                changelog.push(Encoded {
                    topic: self.engine.changelog(&store),
                    partition: task.state.partition(),
                    key: Some(key.into_bytes()),
                    value,
                    headers: Vec::new(),
                });
            }
        }
        if self.batch.is_empty() && changelog.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let timeout = Duration::from_millis(self.engine.config.transaction_timeout_ms);
        let exactly_once = self.engine.config.exactly_once;
        if exactly_once {
            self.producer
                .begin_transaction()
                .map_err(|e| classify(&e))?;
        }
        let batch = std::mem::take(&mut self.batch);
        let mut out_by_topic: BTreeMap<&str, u64> = BTreeMap::new();
        for record in batch.produce.iter().chain(&changelog) {
            self.send(record).map_err(|e| classify(&e))?;
            *out_by_topic.entry(record.topic.as_str()).or_default() += 1;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &batch.offsets {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| classify(&e))?;
        }
        if exactly_once {
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| Failure::Abort("no consumer group metadata".to_owned()))?;
            if offsets.count() > 0 {
                retry(|| {
                    self.producer
                        .send_offsets_to_transaction(&offsets, &group, timeout)
                })
                .map_err(|e| classify(&e))?;
            }
            // rdkafka's commit_transaction first calls its own flush, which waits in steps
            // of 100 ms while anything is in flight: settled here first, it returns at once.
            self.settle_in_flight(timeout)?;
            retry(|| self.producer.commit_transaction(timeout)).map_err(|e| classify(&e))?;
        } else {
            self.settle_in_flight(timeout)?;
            if offsets.count() > 0 {
                self.consumer
                    .commit(&offsets, CommitMode::Sync)
                    .map_err(|e| classify(&e))?;
            }
        }
        let metrics = &self.engine.metrics;
        debug!(
            records = batch.records,
            produced = batch.produce.len(),
            "Transaction committed."
        );
        metrics
            .commit_latency
            .observe(started.elapsed().as_secs_f64());
        metrics.transactions.with_label_values(&["committed"]).inc();
        for (topic, n) in &batch.records_in {
            metrics
                .records_in
                .with_label_values(&[topic.as_str()])
                .inc_by(*n);
        }
        for (topic, n) in &batch.passed {
            metrics
                .records_passed
                .with_label_values(&[topic.as_str()])
                .inc_by(*n);
        }
        for (topic, n) in out_by_topic {
            metrics.records_out.with_label_values(&[topic]).inc_by(n);
        }
        for (class, n) in &batch.dead_letters {
            metrics
                .dead_letters
                .with_label_values(&[class.as_str()])
                .inc_by(*n);
        }
        metrics.timers_fired.inc_by(batch.timers);
        let now = Utc::now();
        for occurred in &batch.occurred {
            let seconds = (now - *occurred).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics.end_to_end_latency.observe(seconds.max(0.0));
        }
        for store in self
            .engine
            .processor
            .stores()
            .into_iter()
            .chain([TIMERS_STORE])
        {
            let entries: usize = self.tasks.values().map(|t| t.state.len(store)).sum();
            metrics
                .store_entries
                .with_label_values(&[store])
                .set(i64::try_from(entries).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Waits until every produced record is acknowledged (not rdkafka's `flush`, which
    /// polls in 100 ms steps and would put up to 100 ms into every batch; the producer's
    /// own thread serves the callbacks).
    pub(super) fn settle_in_flight(&self, timeout: Duration) -> Result<(), Failure> {
        crate::waits::settled(&*self.producer, timeout)
            .map_err(|_| classify(&KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)))
    }

    pub(super) fn send(&self, record: &Encoded) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut base = BaseRecord::<[u8], [u8]>::to(&record.topic)
            .partition(record.partition)
            .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    // The producer's thread serves the reports that make room.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// After an abort: drop every uncommitted effect, seek back to the committed offsets
    /// and restore the stores from their changelogs.
    pub(super) fn rewind(&mut self) -> Result<(), EngineError> {
        if self.engine.config.exactly_once
            && let Err(error) = self.producer.abort_transaction(Duration::from_millis(
                self.engine.config.transaction_timeout_ms,
            ))
        {
            // Nothing was open, or it is already aborted; a fatal state shows on the next begin.
            debug!(%error, "Abort answered an error.");
        }
        self.batch = Batch::default();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        self.tasks.clear();
        let committed = self
            .engine
            .config
            .retry_policy()
            .blocking(
                "reading the committed offsets",
                || self.consumer.committed(Duration::from_secs(10)),
                crate::kafka::is_transient,
            )
            .map_err(|source| EngineError::Kafka {
                during: "reading the committed offsets to rewind".to_owned(),
                source,
            })?;
        seek_back(&committed, |topic, partition, offset| {
            self.consumer
                .seek(topic, partition, offset, Duration::from_secs(10))
        })?;
        self.open_tasks(&partitions).map_err(|f| match f {
            Failure::Stop(e) => e,
            Failure::Abort(m) => EngineError::Stopped(format!("reopening the tasks: {m}")),
        })
    }
}

/// Retries a transactional call while Kafka calls its error retriable.
fn retry(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
    let mut attempts = 0;
    loop {
        match call() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 5 => {
                attempts += 1;
                warn!(error = %e, attempts, "Retrying a transactional call.");
            }
            other => return other,
        }
    }
}

/// Seeks every partition of `committed` back to its committed offset (the beginning when
/// none). A seek that fails stops the instance: going on from the fetch position would pass
/// over records whose effects the abort just discarded.
fn seek_back(
    committed: &TopicPartitionList,
    mut seek: impl FnMut(&str, i32, Offset) -> Result<(), KafkaError>,
) -> Result<(), EngineError> {
    for element in committed.elements() {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        seek(element.topic(), element.partition(), offset).map_err(|source| {
            EngineError::Kafka {
                during: format!(
                    "rewinding {}[{}] to {offset:?} after an abort",
                    element.topic(),
                    element.partition()
                ),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    fn committed() -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset("in", 0, Offset::Offset(42))
            .expect("offset");
        list.add_partition_offset("in", 1, Offset::Invalid)
            .expect("offset");
        list.add_partition_offset("in", 2, Offset::Offset(7))
            .expect("offset");
        list
    }

    #[test]
    fn a_rewind_seeks_every_partition_to_its_committed_offset() {
        let mut seeks = Vec::new();
        seek_back(&committed(), |topic, partition, offset| {
            seeks.push((topic.to_owned(), partition, offset));
            Ok(())
        })
        .expect("rewound");
        assert_eq!(
            seeks,
            [
                ("in".to_owned(), 0, Offset::Offset(42)),
                ("in".to_owned(), 1, Offset::Beginning),
                ("in".to_owned(), 2, Offset::Offset(7)),
            ]
        );
    }

    #[test]
    fn a_seek_that_fails_after_an_abort_stops_the_instance() {
        let mut seeks = 0;
        let error = seek_back(&committed(), |_, partition, _| {
            seeks += 1;
            if partition == 1 {
                Err(KafkaError::Seek(RDKafkaErrorCode::State.to_string()))
            } else {
                Ok(())
            }
        })
        .expect_err("the failed seek stops it");
        assert_eq!(seeks, 2, "nothing after the failed seek");
        assert!(
            matches!(&error, EngineError::Kafka { during, source: KafkaError::Seek(_) }
                if during.contains("in[1]") && during.contains("after an abort")),
            "{error}"
        );
    }
}
