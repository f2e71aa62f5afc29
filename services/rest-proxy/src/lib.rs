//! The REST proxy of Habitat Streams: producers that do not speak Kafka post domain
//! events over HTTP.
//!
//! - [`validate`]: a posted event (`{event_type, tenant_id, actor?, correlation_id?,
//!   payload}`) checked against its record type in the REST JSON conventions and against
//!   the domain rules the SPEC puts at the door, with the path of every problem.
//! - [`writer`]: accepted events written to Kafka in transactions, all or nothing, with
//!   group commit across concurrent requests.

//! - [`app`]: the HTTP routes and their JSON errors.
//! - [`keys`]: API keys bound to tenants and event types, stored hashed.
//! - [`idempotency`]: `Idempotency-Key` — a retried request gets the first answer.

pub mod app;
pub mod idempotency;
pub mod keys;
pub mod validate;
pub mod writer;
