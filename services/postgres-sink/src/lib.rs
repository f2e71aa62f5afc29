//! The Postgres sink of Habitat Streams.
//!
//! - [`sink`]: reads the context topics (read_committed) and every dead-letter topic, and
//!   writes rows and offsets in one Postgres transaction per batch — exactly once.
//! - [`cadence`]: when a batch is written.
//! - [`store`]: the schema (sqlx migrations in `migrations/`), offsets, and the batch write.
//! - [`tables`]: which table each record type and key goes to; merges built from the
//!   tables' columns.
//! - [`stage`]: a batch's entity rows staged with one `COPY` per table, then merged.
//! - [`report`]: the finance report views, exported as CSV or JSON.
//! - [`verify`]: replay-to-verify — rebuild every table from the topics into a fresh schema
//!   and diff it against the live one.
//! - [`dlq`]: dead letters for operators: list, show, re-drive, resolve.
//! - [`access`]: finance roles bound to tenants.

pub mod access;
mod assign;
pub mod batch;
pub mod books;
pub mod cadence;
pub mod config;
pub mod copy;
pub mod dlq;
pub mod report;
pub mod sink;
pub mod stage;
pub mod store;
pub mod tables;
pub mod verify;

/// The sink's name: its consumer group, its name in `topics.yaml` and in `sink_offsets`.
pub const SINK: &str = "postgres-sink";

/// The schema the sink writes to unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "habitat";
