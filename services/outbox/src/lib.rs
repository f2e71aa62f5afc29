//! The transactional outbox for producers that own a Postgres database.
//!
//! A producer enqueues a domain event inside its own database transaction
//! (`habitat_outbox.enqueue(...)`): the event exists if and only if that transaction
//! commits. The relay (`outbox-relay`) reads committed rows in a skip-free order, checks
//! each with the REST proxy's own rules, and publishes them to their context topic in a
//! Kafka transaction that also records how far it got; only then are the rows deleted.
//! A crash anywhere publishes nothing twice and loses nothing (docs/outbox.md).

pub mod install;
mod metrics;
mod position;
pub mod relay;
pub mod status;

/// The schema the outbox lives in unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "habitat_outbox";

/// The topic every relay records its position on (compacted, one partition, keyed by the
/// relay's name).
pub const POSITION_TOPIC: &str = "habitat.outbox-positions";

/// The writer the outbox counts as: the producers' edge, like the REST proxy.
pub const PRODUCER: &str = "outbox";
