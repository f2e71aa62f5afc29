//! The API a data engineer writes against: [`Processor`], the [`Record`] it receives and
//! the [`Timer`]s it schedules.
//!
//! A processor keeps no state of its own: everything it must remember goes in its named
//! stores through the [`Context`](crate::Context), so the runtime can write it to the
//! changelog in the same transaction as the outputs and restore it after a crash.

use chrono::{DateTime, Utc};

use crate::{Context, Payload};

/// A stream processor: one required method, [`Processor::process`].
pub trait Processor: Send + Sync + 'static {
    /// The decoded value of an input record.
    type In: Payload + Send + 'static;
    /// The value of an output record.
    type Out: Payload + Send + 'static;

    /// The processor's name: its consumer group, the prefix of its internal topics and
    /// the `producer` of its records (`processor:<name>`).
    fn name(&self) -> &str;

    /// The state stores it reads and writes, by name. Each is restored from
    /// `<name>-<store>-changelog` before the first record of a partition.
    fn stores(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Topics of its own it writes (a derived view, not a context topic of the catalog):
    /// created at start like its internal topics — compacted, one partition per input
    /// partition — and written only by it.
    fn output_topics(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// `HABITAT_*` variables its `main` reads besides the runtime's (so that
    /// `--print-config` counts them as read, not ignored).
    fn variables(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// The timers it schedules, by name.
    fn timers(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Handles one input record. Outputs, state writes and timers made through `ctx`
    /// take effect only when this returns `Ok`; a [`ProcessError::Rejected`] sends the
    /// record to the dead-letter topic instead, and processing goes on.
    fn process(
        &self,
        ctx: &mut Context<'_, Self::Out>,
        record: &Record<Self::In>,
    ) -> Result<(), ProcessError>;

    /// Called once a partition's stores are restored, before its first record.
    fn on_assigned(&self, _ctx: &mut Context<'_, Self::Out>) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Called when a scheduled timer is due, inside a transaction; the timer is removed
    /// in the same transaction, so it fires once.
    fn on_timer(
        &self,
        _ctx: &mut Context<'_, Self::Out>,
        _timer: &Timer,
    ) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// An input record, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<V> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record timestamp.
    pub timestamp: DateTime<Utc>,
    pub key: Option<String>,
    /// `None` for a tombstone.
    pub value: Option<V>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A durable timer: fires once at or after `due`, by the runtime's clock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timer {
    /// One of [`Processor::timers`].
    pub name: String,
    /// What the timer is about (a payment id…); one timer per name and key.
    pub key: String,
    pub due: DateTime<Utc>,
    /// A small payload the processor gets back.
    pub data: Option<String>,
}

/// Why a record or timer could not be handled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The record breaks a domain rule: it is dead-lettered with `class` and `message`,
    /// and processing goes on.
    #[error("{class}: {message}")]
    Rejected { class: String, message: String },
    /// A defect or misconfiguration: the open transaction is aborted and the process
    /// stops with a non-zero exit code.
    #[error("{0}")]
    Fatal(String),
    /// An invariant the processor owns does not hold for what it was about to write (a
    /// set whose allocations do not add up to the surplus, a posting that does not
    /// balance): nothing is written, the evidence is logged and counted
    /// (`habitat_invariant_breaks_total`), and the processor halts — a defect to look
    /// at, never a record to pass over.
    #[error("invariant {invariant} broken: {evidence}")]
    Broken { invariant: String, evidence: String },
}

impl ProcessError {
    /// `Ok` when `holds`; otherwise the invariant broken, with the evidence.
    pub fn ensure(
        holds: bool,
        invariant: &str,
        evidence: impl FnOnce() -> String,
    ) -> Result<(), Self> {
        if holds {
            Ok(())
        } else {
            Err(Self::Broken {
                invariant: invariant.to_owned(),
                evidence: evidence(),
            })
        }
    }

    /// A domain rejection.
    pub fn rejected(class: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Rejected {
            class: class.into(),
            message: message.into(),
        }
    }

    /// A record's field converted into a domain value (a decimal into money, a ratio…),
    /// or the record rejected with `class`, naming the field.
    pub fn convert<S, T>(value: S, class: &str, field: &str) -> Result<T, Self>
    where
        T: TryFrom<S>,
        T::Error: std::fmt::Display,
    {
        T::try_from(value).map_err(|e| Self::rejected(class, format!("{field}: {e}")))
    }
}

/// A decimal field as an amount of money (`Money`), or the record rejected as
/// [`INVALID_AMOUNT`](crate::dlq::class::INVALID_AMOUNT).
pub fn amount<T, S>(value: S, field: &str) -> Result<T, ProcessError>
where
    T: TryFrom<S>,
    T::Error: std::fmt::Display,
{
    ProcessError::convert(value, crate::dlq::class::INVALID_AMOUNT, field)
}

/// A decimal field as a ratio or weight (`Ratio`), or the record rejected as
/// [`INVALID_RATIO`](crate::dlq::class::INVALID_RATIO).
pub fn ratio<T, S>(value: S, field: &str) -> Result<T, ProcessError>
where
    T: TryFrom<S>,
    T::Error: std::fmt::Display,
{
    ProcessError::convert(value, crate::dlq::class::INVALID_RATIO, field)
}
