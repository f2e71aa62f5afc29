//! The uncommitted work since the last commit (records to produce, offsets, counts for the
//! metrics), and a partition's task: its state and the records buffered for the merge.

use super::*;

/// A record to produce, encoded.
#[derive(Debug)]
pub(super) struct Encoded {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

/// A consumed record waiting in its partition's merger. The decoded record and the dead
/// letter are boxed: a merger buffers thousands of these in a burst, most of them records
/// passed over, and an unboxed decoded event made every entry ~600 bytes to move on growth.
pub(super) enum Pending<V> {
    Decoded {
        record: Box<Record<V>>,
        raw: (Option<Vec<u8>>, Option<Vec<u8>>),
    },
    Undecodable(Box<DeadLetter>),
    /// A record of a type the processor does not read: its offset moves on, nothing else.
    Passed {
        input: usize,
        offset: i64,
    },
}

/// The uncommitted work since the last commit.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) produce: Vec<Encoded>,
    pub(super) offsets: BTreeMap<(String, i32), i64>,
    pub(super) records: usize,
    pub(super) records_in: BTreeMap<String, u64>,
    pub(super) passed: BTreeMap<String, u64>,
    pub(super) dead_letters: BTreeMap<String, u64>,
    pub(super) timers: u64,
    pub(super) occurred: Vec<DateTime<Utc>>,
    pub(super) started: Option<Instant>,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.produce.is_empty() && self.offsets.is_empty() && self.started.is_none()
    }

    pub(super) fn touch(&mut self) {
        _ = self.started.get_or_insert_with(Instant::now);
    }

    /// Whether the batch is to be committed before anything more goes in: it has been open
    /// `commit_interval` or holds `commit_max_records`. A long pass (a burst of records, or
    /// of timers) is cut here, so no record waits much beyond the interval for its commit.
    pub(super) fn is_full(&self, config: &RuntimeConfig) -> bool {
        self.records >= config.commit_max_records
            || self
                .started
                .is_some_and(|s| s.elapsed() >= config.commit_interval())
    }
}

/// One partition number of the inputs: its state and its buffered records.
pub(super) struct Task<V> {
    pub(super) state: TaskState,
    pub(super) merger: Merger<Pending<V>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_empty_until_touched_or_given_work() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        batch.touch();
        assert!(
            !batch.is_empty(),
            "a touched batch holds a timer's or a pass's work"
        );
        let mut batch = Batch::default();
        _ = batch.offsets.insert(("in".to_owned(), 0), 7);
        assert!(!batch.is_empty());
    }

    #[test]
    fn a_batch_is_full_at_the_record_limit_or_after_the_interval() {
        let config = RuntimeConfig {
            commit_max_records: 3,
            commit_interval_ms: 60_000,
            ..RuntimeConfig::default()
        };
        let mut batch = Batch::default();
        batch.touch();
        batch.records = 2;
        assert!(!batch.is_full(&config));
        batch.records = 3;
        assert!(batch.is_full(&config));

        let config = RuntimeConfig {
            commit_interval_ms: 0,
            ..config
        };
        let mut batch = Batch::default();
        assert!(!batch.is_full(&config), "not open: nothing is due");
        batch.touch();
        assert!(batch.is_full(&config), "open for the whole (zero) interval");
        // Touching again keeps the time it was opened.
        let opened = batch.started;
        batch.touch();
        assert_eq!(batch.started, opened);
    }
}
