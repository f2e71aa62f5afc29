//! The transaction coordinator's state — producer ids and epochs, which producer holds
//! each transactional id, who is fenced, and every transaction in progress with its
//! partitions and groups — and its journal.
//!
//! Guarantee: with a data directory, every change is appended to the journal before the
//! request that made it is answered, and the state is rebuilt from the journal on start.
//! A broker killed and restarted on its data directory therefore knows every producer it
//! answered and every transaction still open, and its clients carry on as they would
//! after a Kafka broker restart (a transaction open at the crash can still be committed
//! or aborted, or expires after its timeout). The journal is written, not synced: it
//! survives the broker process dying, not the machine losing power (as the log does).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tansu_sans_io::ErrorCode;
use tansu_storage::Topition;
use tracing::warn;

/// Transaction timeout used when a producer did not say (Kafka's default).
pub(super) const DEFAULT_TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// One change of the coordinator's state, as the journal keeps it (one JSON line each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub(super) enum Change {
    /// InitProducerId gave `producer_id` the epoch `epoch`, for `transaction_id` when
    /// it is transactional, with the transaction timeout it asked for.
    Producer {
        producer_id: i64,
        epoch: i16,
        transaction_id: Option<String>,
        timeout_ms: Option<u64>,
    },
    /// A producer id lost its transactional id to another: fenced entirely.
    Replaced { producer_id: i64 },
    /// A producer epoch whose transaction the broker aborted: fenced from now on.
    Fenced { producer_id: i64, epoch: i16 },
    /// A transaction began (its first partition or group was added).
    Begin {
        transaction_id: String,
        producer_id: i64,
        epoch: i16,
    },
    /// A partition was written in a transaction.
    Partition {
        transaction_id: String,
        topic: String,
        partition: i32,
    },
    /// A group's offsets were added to a transaction.
    Group {
        transaction_id: String,
        group: String,
    },
    /// A transaction was committed or aborted.
    End { transaction_id: String },
}

#[derive(Debug)]
pub(super) struct OngoingTxn {
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) started: Instant,
    pub(super) partitions: BTreeSet<Topition>,
    pub(super) groups: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(super) struct Coordinator {
    /// Transactions in progress by transactional id.
    pub(super) ongoing: HashMap<String, OngoingTxn>,
    /// The timeout each transactional id asked for in InitProducerId.
    timeouts: HashMap<String, Duration>,
    /// The current epoch of every producer id initialised on this broker.
    pub(super) epochs: HashMap<i64, i16>,
    /// Producer epochs whose transaction the broker aborted: fenced from now on.
    pub(super) fenced: HashSet<(i64, i16)>,
    /// The producer id and epoch that last initialised each transactional id.
    pub(super) holders: HashMap<String, (i64, i16)>,
    /// Producer ids replaced by another for their transactional id: fenced entirely.
    pub(super) replaced: HashSet<i64>,
    /// Where changes are appended; `None` for a broker in memory.
    journal: Option<File>,
}

impl Coordinator {
    /// The state kept in `path`, rebuilt from its journal (created when missing), which
    /// is rewritten to the changes that still matter. A line cut short by a crash at the
    /// end is ignored.
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        let mut coordinator = Self::default();
        if path.exists() {
            let reader = BufReader::new(File::open(path)?);
            for (number, line) in reader.lines().enumerate() {
                let line = line?;
                match serde_json::from_str::<Change>(&line) {
                    Ok(change) => coordinator.apply(&change),
                    Err(error) => warn!(
                        %error,
                        line = number + 1,
                        path = %path.display(),
                        "Unreadable coordinator journal line ignored."
                    ),
                }
            }
        }
        let rewritten = temporary(path);
        {
            let mut file = File::create(&rewritten)?;
            for change in coordinator.snapshot() {
                file.write_all(&line(&change))?;
            }
            file.sync_all()?;
        }
        fs::rename(&rewritten, path)?;
        coordinator.journal = Some(OpenOptions::new().append(true).open(path)?);
        Ok(coordinator)
    }

    /// Applies `change` and appends it to the journal; a journal that cannot be written
    /// is a storage error for the request that made the change.
    pub(super) fn record(&mut self, change: Change) -> Result<(), ErrorCode> {
        if let Some(journal) = self.journal.as_mut()
            && let Err(error) = journal.write_all(&line(&change))
        {
            warn!(%error, ?change, "Cannot append to the coordinator journal.");
            return Err(ErrorCode::KafkaStorageError);
        }
        self.apply(&change);
        Ok(())
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::Producer {
                producer_id,
                epoch,
                transaction_id,
                timeout_ms,
            } => {
                _ = self.epochs.insert(*producer_id, *epoch);
                if let Some(transaction_id) = transaction_id {
                    if let Some((previous, _)) = self
                        .holders
                        .insert(transaction_id.clone(), (*producer_id, *epoch))
                        .filter(|(previous, _)| previous != producer_id)
                    {
                        _ = self.replaced.insert(previous);
                    }
                    let timeout = timeout_ms
                        .filter(|ms| *ms > 0)
                        .map_or(DEFAULT_TXN_TIMEOUT, Duration::from_millis);
                    _ = self.timeouts.insert(transaction_id.clone(), timeout);
                }
            }
            Change::Replaced { producer_id } => _ = self.replaced.insert(*producer_id),
            Change::Fenced { producer_id, epoch } => {
                _ = self.fenced.insert((*producer_id, *epoch));
            }
            Change::Begin {
                transaction_id,
                producer_id,
                epoch,
            } => {
                _ = self
                    .ongoing
                    .entry(transaction_id.clone())
                    .or_insert_with(|| OngoingTxn {
                        producer_id: *producer_id,
                        producer_epoch: *epoch,
                        started: Instant::now(),
                        partitions: BTreeSet::new(),
                        groups: BTreeSet::new(),
                    });
            }
            Change::Partition {
                transaction_id,
                topic,
                partition,
            } => {
                if let Some(txn) = self.ongoing.get_mut(transaction_id) {
                    _ = txn
                        .partitions
                        .insert(Topition::new(topic.clone(), *partition));
                }
            }
            Change::Group {
                transaction_id,
                group,
            } => {
                if let Some(txn) = self.ongoing.get_mut(transaction_id) {
                    _ = txn.groups.insert(group.clone());
                }
            }
            Change::End { transaction_id } => _ = self.ongoing.remove(transaction_id),
        }
    }

    /// The fewest changes that rebuild the current state.
    fn snapshot(&self) -> Vec<Change> {
        let mut changes = Vec::new();
        let held: HashSet<i64> = self.holders.values().map(|(id, _)| *id).collect();
        let mut producers: Vec<_> = self.epochs.iter().collect();
        producers.sort();
        for (producer_id, epoch) in producers {
            if !held.contains(producer_id) {
                changes.push(Change::Producer {
                    producer_id: *producer_id,
                    epoch: *epoch,
                    transaction_id: None,
                    timeout_ms: None,
                });
            }
        }
        let mut holders: Vec<_> = self.holders.iter().collect();
        holders.sort();
        for (transaction_id, (producer_id, epoch)) in holders {
            changes.push(Change::Producer {
                producer_id: *producer_id,
                epoch: self.epochs.get(producer_id).copied().unwrap_or(*epoch),
                transaction_id: Some(transaction_id.clone()),
                timeout_ms: self
                    .timeouts
                    .get(transaction_id)
                    .map(|timeout| timeout.as_millis() as u64),
            });
        }
        let mut replaced: Vec<_> = self.replaced.iter().copied().collect();
        replaced.sort_unstable();
        changes.extend(
            replaced
                .into_iter()
                .map(|producer_id| Change::Replaced { producer_id }),
        );
        let mut fenced: Vec<_> = self.fenced.iter().copied().collect();
        fenced.sort_unstable();
        changes.extend(
            fenced
                .into_iter()
                .map(|(producer_id, epoch)| Change::Fenced { producer_id, epoch }),
        );
        let mut ongoing: Vec<_> = self.ongoing.iter().collect();
        ongoing.sort_by(|a, b| a.0.cmp(b.0));
        for (transaction_id, txn) in ongoing {
            changes.push(Change::Begin {
                transaction_id: transaction_id.clone(),
                producer_id: txn.producer_id,
                epoch: txn.producer_epoch,
            });
            changes.extend(txn.partitions.iter().map(|topition| Change::Partition {
                transaction_id: transaction_id.clone(),
                topic: topition.topic().to_owned(),
                partition: topition.partition(),
            }));
            changes.extend(txn.groups.iter().map(|group| Change::Group {
                transaction_id: transaction_id.clone(),
                group: group.clone(),
            }));
        }
        changes
    }

    /// Whether this producer id and epoch lost its transactional id to a newer producer.
    pub(super) fn is_fenced(&self, producer_id: i64, producer_epoch: i16) -> bool {
        self.fenced.contains(&(producer_id, producer_epoch))
            || self.replaced.contains(&producer_id)
            || self
                .epochs
                .get(&producer_id)
                .is_some_and(|current| *current > producer_epoch)
    }

    /// The transaction timeout of a transactional id.
    pub(super) fn timeout(&self, transaction_id: &str) -> Duration {
        self.timeouts
            .get(transaction_id)
            .copied()
            .unwrap_or(DEFAULT_TXN_TIMEOUT)
    }

    /// The producer ids with a transaction in progress.
    pub(super) fn open_producers(&self) -> HashSet<i64> {
        self.ongoing.values().map(|txn| txn.producer_id).collect()
    }
}

fn line(change: &Change) -> Vec<u8> {
    let mut line = serde_json::to_vec(change).expect("a journal change serialises");
    line.push(b'\n');
    line
}

fn temporary(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".rewrite");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "devbroker-coordinator-{name}-{}",
            std::process::id()
        ));
        _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("coordinator.journal")
    }

    #[test]
    fn the_state_is_rebuilt_from_the_journal_and_the_journal_shrinks() {
        let path = scratch("rebuild");
        {
            let mut coordinator = Coordinator::open(&path).expect("open");
            let changes = [
                Change::Producer {
                    producer_id: 1,
                    epoch: 0,
                    transaction_id: Some("a".into()),
                    timeout_ms: Some(5_000),
                },
                Change::Producer {
                    producer_id: 2,
                    epoch: 0,
                    transaction_id: None,
                    timeout_ms: None,
                },
                Change::Begin {
                    transaction_id: "a".into(),
                    producer_id: 1,
                    epoch: 0,
                },
                Change::Partition {
                    transaction_id: "a".into(),
                    topic: "t".into(),
                    partition: 3,
                },
                Change::End {
                    transaction_id: "a".into(),
                },
                Change::Producer {
                    producer_id: 1,
                    epoch: 1,
                    transaction_id: Some("a".into()),
                    timeout_ms: Some(5_000),
                },
                Change::Begin {
                    transaction_id: "a".into(),
                    producer_id: 1,
                    epoch: 1,
                },
                Change::Group {
                    transaction_id: "a".into(),
                    group: "g".into(),
                },
                Change::Producer {
                    producer_id: 9,
                    epoch: 0,
                    transaction_id: Some("b".into()),
                    timeout_ms: None,
                },
                Change::Producer {
                    producer_id: 10,
                    epoch: 0,
                    transaction_id: Some("b".into()),
                    timeout_ms: None,
                },
                Change::Fenced {
                    producer_id: 10,
                    epoch: 0,
                },
            ];
            for change in changes {
                coordinator.record(change).expect("record");
            }
        }
        let written = fs::read_to_string(&path).expect("journal").lines().count();
        assert_eq!(written, 11);
        // A line cut short by a crash is ignored.
        let mut file = OpenOptions::new().append(true).open(&path).expect("append");
        file.write_all(br#"{"change":"end","transac"#)
            .expect("write");
        drop(file);

        let reopened = Coordinator::open(&path).expect("reopen");
        assert_eq!(
            reopened.epochs,
            HashMap::from([(1, 1), (2, 0), (9, 0), (10, 0)])
        );
        assert_eq!(reopened.holders["a"], (1, 1));
        assert_eq!(reopened.timeout("a"), Duration::from_secs(5));
        assert_eq!(reopened.timeout("b"), DEFAULT_TXN_TIMEOUT);
        assert!(reopened.is_fenced(9, 0), "replaced by producer 10");
        assert!(reopened.is_fenced(10, 0), "fenced epoch");
        assert!(reopened.is_fenced(1, 0), "an older epoch");
        assert!(!reopened.is_fenced(1, 1));
        let open = &reopened.ongoing["a"];
        assert_eq!((open.producer_id, open.producer_epoch), (1, 1));
        assert!(open.partitions.is_empty());
        assert_eq!(open.groups, BTreeSet::from(["g".to_owned()]));
        assert_eq!(reopened.open_producers(), HashSet::from([1]));
        // Rewritten to what still matters: four producers, one replaced, one fenced,
        // one open transaction with its group.
        let rewritten = fs::read_to_string(&path).expect("journal").lines().count();
        assert_eq!(rewritten, 8);
        drop(reopened);
        let again = Coordinator::open(&path).expect("reopen twice");
        assert_eq!(again.snapshot().len(), 8);
        assert_eq!(
            again.holders,
            HashMap::from([("a".into(), (1, 1)), ("b".into(), (10, 0))])
        );
    }
}
