//! The state of one partition of a processor — its stores and timers — and the
//! [`Context`] a processor works through. Shared by the engine and the test driver, so a
//! processor behaves the same in both.
//!
//! Writes made while handling a record are held apart and applied only when the handler
//! returns `Ok`; a rejected record leaves no trace in the state.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use contracts::{
    EventRecord,
    records::{Event, Meta},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    ProcessError, Timer,
    payload::{Payload, Routed, Trace, trace_headers},
};

/// The store that keeps a processor's timers (changelog `<processor>-timers-changelog`).
pub const TIMERS_STORE: &str = "timers";

/// A record a processor emitted; its partition is the tenant partition of its key.
#[derive(Clone, Debug, PartialEq)]
pub struct Output<V> {
    pub topic: String,
    pub key: String,
    /// `None` for a tombstone.
    pub value: Option<V>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The partition of a key: the tenant hash of SPEC §3 over the key's tenant (the whole key
/// when it has no `<tenant>/` prefix).
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let tenant = contracts::partition::tenant_of_key(key).unwrap_or(key);
    contracts::partition::tenant_partition(tenant, partitions)
}

/// What a processor declared, and the time of the current step.
#[derive(Clone, Debug)]
pub struct Env {
    pub processor: String,
    pub stores: Vec<&'static str>,
    pub timers: Vec<&'static str>,
    pub now: DateTime<Utc>,
}

/// A step's pending writes: store → key → value (`None`: delete).
type Writes = BTreeMap<String, BTreeMap<String, Option<Vec<u8>>>>;

#[derive(Debug, Default)]
struct Store {
    data: BTreeMap<String, Vec<u8>>,
    /// Keys changed since the last commit: their changelog records (the current value, or a
    /// tombstone when gone) are still to write.
    dirty: BTreeSet<String>,
}

/// The entries of `data` whose keys start with `prefix`, in key order.
fn with_prefix<'d, V>(
    data: &'d BTreeMap<String, V>,
    prefix: &'d str,
) -> impl Iterator<Item = (&'d String, &'d V)> {
    data.range::<str, _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    ))
    .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The stores and timers of one partition.
#[derive(Debug)]
pub struct TaskState {
    partition: i32,
    stores: BTreeMap<String, Store>,
    /// Timers by due time: (due in micros, key in the timers store).
    due: BTreeSet<(i64, String)>,
}

impl TaskState {
    /// Empty stores for `partition`: the declared ones and the timers store.
    pub fn new(partition: i32, stores: &[&str]) -> Self {
        let stores = stores
            .iter()
            .copied()
            .chain([TIMERS_STORE])
            .map(|name| (name.to_owned(), Store::default()))
            .collect();
        Self {
            partition,
            stores,
            due: BTreeSet::new(),
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Names of every store, the timers store included.
    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// Sets a value read back from a changelog (not written again).
    pub fn restore(&mut self, store: &str, key: String, value: Option<Vec<u8>>) {
        self.set(store, key, value, false);
    }

    /// Number of entries of a store.
    pub fn len(&self, store: &str) -> usize {
        self.stores.get(store).map_or(0, |s| s.data.len())
    }

    /// Whether no store holds anything.
    pub fn is_empty(&self) -> bool {
        self.stores.values().all(|s| s.data.is_empty())
    }

    /// The raw (JSON) value of a key.
    pub fn raw(&self, store: &str, key: &str) -> Option<&[u8]> {
        self.stores.get(store)?.data.get(key).map(Vec::as_slice)
    }

    /// Every entry of a store, in key order.
    pub fn entries(&self, store: &str) -> impl Iterator<Item = (&str, &[u8])> {
        self.stores
            .get(store)
            .into_iter()
            .flat_map(|s| s.data.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// The changelog records to write with the next commit: (store, key, value).
    pub fn take_dirty(&mut self) -> Vec<(String, String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for (name, store) in &mut self.stores {
            for key in std::mem::take(&mut store.dirty) {
                let value = store.data.get(&key).cloned();
                out.push((name.clone(), key, value));
            }
        }
        out
    }

    /// Timers due at `now`, earliest first.
    pub fn due_timers(&self, now: DateTime<Utc>) -> Vec<Timer> {
        let now = now.timestamp_micros();
        self.due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .filter_map(|(_, key)| self.raw(TIMERS_STORE, key))
            .filter_map(|raw| serde_json::from_slice(raw).ok())
            .collect()
    }

    /// The earliest timer's due time.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.due
            .first()
            .and_then(|(due, _)| DateTime::from_timestamp_micros(*due))
    }

    /// Runs a handler against this partition; applies its writes and returns its outputs
    /// when it succeeds, discards them when it fails.
    pub fn invoke<V: Payload, F>(
        &mut self,
        env: &Env,
        cause: Option<Trace>,
        handler: F,
    ) -> Result<Vec<Output<V>>, ProcessError>
    where
        F: FnOnce(&mut Context<'_, V>) -> Result<(), ProcessError>,
    {
        let mut ctx = Context {
            env,
            task: self,
            writes: Writes::new(),
            outputs: Vec::new(),
            cause,
        };
        handler(&mut ctx)?;
        let Context {
            writes, outputs, ..
        } = ctx;
        for (store, keys) in writes {
            for (key, value) in keys {
                self.set(&store, key, value, true);
            }
        }
        Ok(outputs)
    }

    fn set(&mut self, store: &str, key: String, value: Option<Vec<u8>>, dirty: bool) {
        if store == TIMERS_STORE {
            self.index_timer(&key, value.as_deref());
        }
        let Some(s) = self.stores.get_mut(store) else {
            return;
        };
        if dirty && !s.dirty.contains(&key) {
            _ = s.dirty.insert(key.clone());
        }
        match value {
            Some(value) => _ = s.data.insert(key, value),
            None => _ = s.data.remove(&key),
        }
    }

    fn index_timer(&mut self, key: &str, value: Option<&[u8]>) {
        if let Some(old) = self
            .raw(TIMERS_STORE, key)
            .and_then(|raw| serde_json::from_slice::<Timer>(raw).ok())
        {
            _ = self
                .due
                .remove(&(old.due.timestamp_micros(), key.to_owned()));
        }
        if let Some(timer) = value.and_then(|raw| serde_json::from_slice::<Timer>(raw).ok()) {
            _ = self
                .due
                .insert((timer.due.timestamp_micros(), key.to_owned()));
        }
    }
}

fn timer_key(name: &str, key: &str) -> String {
    format!("{name}/{key}")
}

/// What a processor handles a record or timer with: emit records, read and write its
/// stores, schedule timers.
pub struct Context<'a, V> {
    env: &'a Env,
    task: &'a TaskState,
    writes: Writes,
    outputs: Vec<Output<V>>,
    cause: Option<Trace>,
}

impl<V: Payload> Context<'_, V> {
    /// The processor's name.
    pub fn processor(&self) -> &str {
        &self.env.processor
    }

    /// The partition number being processed.
    pub fn partition(&self) -> i32 {
        self.task.partition
    }

    /// The runtime clock's time of this step.
    pub fn now(&self) -> DateTime<Utc> {
        self.env.now
    }

    /// The envelope of the record being handled, when it has one.
    pub fn cause(&self) -> Option<&Trace> {
        self.cause.as_ref()
    }

    /// Emits a record to `topic`, partitioned by the tenant of `key`; `None` is a
    /// tombstone. Values with an envelope also get it as headers.
    pub fn send(&mut self, topic: &str, key: impl Into<String>, value: Option<V>) {
        let headers = value
            .as_ref()
            .and_then(Payload::trace)
            .map(|t| trace_headers(&t))
            .unwrap_or_default();
        self.outputs.push(Output {
            topic: topic.to_owned(),
            key: key.into(),
            value,
            headers,
        });
    }

    /// Reads a value from a store.
    pub fn get<T: DeserializeOwned>(
        &self,
        store: &str,
        key: &str,
    ) -> Result<Option<T>, ProcessError> {
        self.check_store(store)?;
        let raw = match self.writes.get(store).and_then(|keys| keys.get(key)) {
            Some(pending) => pending.as_deref(),
            None => self.task.raw(store, key),
        };
        raw.map(|raw| {
            serde_json::from_slice(raw).map_err(|e| {
                ProcessError::Fatal(format!("store {store} key {key} does not decode: {e}"))
            })
        })
        .transpose()
    }

    /// Writes a value to a store (and its changelog, with the next commit).
    pub fn put<T: Serialize>(
        &mut self,
        store: &str,
        key: &str,
        value: &T,
    ) -> Result<(), ProcessError> {
        self.check_store(store)?;
        let raw = serde_json::to_vec(value)
            .map_err(|e| ProcessError::Fatal(format!("store {store} key {key}: {e}")))?;
        self.write(store, key, Some(raw));
        Ok(())
    }

    fn write(&mut self, store: &str, key: &str, value: Option<Vec<u8>>) {
        let keys = match self.writes.get_mut(store) {
            Some(keys) => keys,
            None => self.writes.entry(store.to_owned()).or_default(),
        };
        _ = keys.insert(key.to_owned(), value);
    }

    /// Removes a key from a store.
    pub fn delete(&mut self, store: &str, key: &str) -> Result<(), ProcessError> {
        self.check_store(store)?;
        self.write(store, key, None);
        Ok(())
    }

    /// Every entry of a store whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        store: &str,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, ProcessError> {
        self.check_store(store)?;
        let mut merged: BTreeMap<&str, Option<&[u8]>> = self
            .task
            .stores
            .get(store)
            .into_iter()
            .flat_map(|s| with_prefix(&s.data, prefix))
            .map(|(k, v)| (k.as_str(), Some(v.as_slice())))
            .collect();
        for (k, v) in self
            .writes
            .get(store)
            .into_iter()
            .flat_map(|keys| with_prefix(keys, prefix))
        {
            _ = merged.insert(k.as_str(), v.as_deref());
        }
        merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .map(|(k, v)| {
                serde_json::from_slice(v)
                    .map(|v| (k.to_owned(), v))
                    .map_err(|e| ProcessError::Fatal(format!("store {store} key {k}: {e}")))
            })
            .collect()
    }

    /// Schedules timer `name` for `key` at `due` (replacing one already set).
    pub fn schedule(
        &mut self,
        name: &str,
        key: &str,
        due: DateTime<Utc>,
        data: Option<String>,
    ) -> Result<(), ProcessError> {
        self.check_timer(name)?;
        let timer = Timer {
            name: name.to_owned(),
            key: key.to_owned(),
            due,
            data,
        };
        self.put(TIMERS_STORE, &timer_key(name, key), &timer)
    }

    /// Cancels timer `name` for `key`, if set.
    pub fn cancel(&mut self, name: &str, key: &str) -> Result<(), ProcessError> {
        self.check_timer(name)?;
        self.delete(TIMERS_STORE, &timer_key(name, key))
    }

    /// The timer `name` for `key`, if set.
    pub fn timer(&self, name: &str, key: &str) -> Result<Option<Timer>, ProcessError> {
        self.check_timer(name)?;
        self.get(TIMERS_STORE, &timer_key(name, key))
    }

    fn check_store(&self, store: &str) -> Result<(), ProcessError> {
        if store == TIMERS_STORE || self.env.stores.contains(&store) {
            Ok(())
        } else {
            Err(ProcessError::Fatal(format!(
                "store {store} is not declared by {}",
                self.env.processor
            )))
        }
    }

    fn check_timer(&self, name: &str) -> Result<(), ProcessError> {
        if self.env.timers.contains(&name) {
            Ok(())
        } else {
            Err(ProcessError::Fatal(format!(
                "timer {name} is not declared by {}",
                self.env.processor
            )))
        }
    }
}

impl<V: Routed> Context<'_, V> {
    /// Emits a record to its topic under its key (an event: the context topic and key
    /// `topics.yaml` gives its type).
    pub fn emit(&mut self, value: impl Into<V>) {
        let value = value.into();
        let (topic, key) = (value.topic().to_owned(), value.key());
        self.send(&topic, key, Some(value));
    }
}

impl Context<'_, Event> {
    /// The `meta` of a new record of type `R` caused by the record being handled: a
    /// UUIDv7 event id, this processor as producer, the cause's correlation id (a new one
    /// when there is no cause) and the cause's event id as causation.
    pub fn meta<R: EventRecord>(&self, tenant_id: &str) -> Meta {
        let event_id = uuid::Uuid::now_v7().to_string();
        Meta {
            event_type: R::EVENT_TYPE.to_owned(),
            schema_version: R::VERSION,
            tenant_id: tenant_id.to_owned(),
            occurred_at: self.env.now,
            producer: format!("processor:{}", self.env.processor),
            actor: Some(format!("system:{}", self.env.processor)),
            correlation_id: self
                .cause
                .as_ref()
                .map_or_else(|| event_id.clone(), |c| c.correlation_id.clone()),
            causation_id: self.cause.as_ref().map(|c| c.event_id.clone()),
            event_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            processor: "p".to_owned(),
            stores: vec!["s"],
            timers: Vec::new(),
            now: Utc::now(),
        }
    }

    fn put_all(state: &mut TaskState, keys: &[&str]) {
        state
            .invoke::<String, _>(&env(), None, |ctx| {
                for key in keys {
                    ctx.put("s", key, &(*key).to_owned())?;
                }
                Ok(())
            })
            .expect("written");
    }

    #[test]
    fn a_scan_sees_its_prefix_and_the_step_s_own_writes() {
        let mut state = TaskState::new(0, &["s"]);
        put_all(
            &mut state,
            &["t/p1", "t/p1/a", "t/p1/b", "t/p10/a", "t/p2/a"],
        );
        assert_eq!(state.take_dirty().len(), 5);
        state
            .invoke::<String, _>(&env(), None, |ctx| {
                ctx.delete("s", "t/p1/b")?;
                ctx.put("s", "t/p1/c", &"c".to_owned())?;
                let seen: Vec<(String, String)> = ctx.scan("s", "t/p1/")?;
                assert_eq!(
                    seen,
                    [
                        ("t/p1/a".to_owned(), "t/p1/a".to_owned()),
                        ("t/p1/c".to_owned(), "c".to_owned())
                    ]
                );
                Ok(())
            })
            .expect("scanned");
        // The changelog gets each changed key once, a tombstone for the deleted one.
        assert_eq!(
            state.take_dirty(),
            [
                ("s".to_owned(), "t/p1/b".to_owned(), None),
                (
                    "s".to_owned(),
                    "t/p1/c".to_owned(),
                    Some(br#""c""#.to_vec())
                ),
            ]
        );
        assert!(state.take_dirty().is_empty());
    }

    #[test]
    fn a_rejected_step_leaves_no_trace() {
        let mut state = TaskState::new(0, &["s"]);
        let failed = state.invoke::<String, _>(&env(), None, |ctx| {
            ctx.put("s", "k", &"v".to_owned())?;
            Err(ProcessError::rejected("bad", "no"))
        });
        assert!(failed.is_err());
        assert!(state.is_empty());
        assert!(state.take_dirty().is_empty());
    }
}
