//! The REST proxy of Habitat Streams: producers that do not speak Kafka post domain
//! events over HTTP.
//!
//! - [`validate`]: a posted event (`{event_type, tenant_id, actor?, correlation_id?,
//!   payload}`) checked against its record type in the REST JSON conventions and against
//!   the domain rules the SPEC puts at the door, with the path of every problem.
//! - [`writer`]: accepted events written to Kafka in transactions, all or nothing, with
//!   group commit across concurrent requests.
//! - [`http`]: the routes — v1, the Confluent REST v3 records API (with [`avro_json`],
//!   Avro's JSON encoding, and [`registry`], schemas named by id or subject), operations —
//!   the pipeline every write goes through, and the one error type.
//! - [`state`]: what the handlers share; [`partitions`] (topic shapes asked of the broker),
//!   [`rate`] (requests per key) and [`metrics`] beside it.
//! - [`openapi`]: the OpenAPI document, served and held to the router.
//! - [`keys`]: API keys bound to tenants and event types, stored hashed.
//! - [`idempotency`]: `Idempotency-Key` — a retried request gets the first answer.

pub mod avro_json;
pub mod http;
pub mod idempotency;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod partitions;
pub mod rate;
pub mod registry;
pub mod state;
pub mod validate;
pub mod writer;

pub use http::{
    error::{ApiError, ErrorBody},
    router,
    v1::Accepted,
};
pub use metrics::HttpMetrics;
pub use partitions::Partitions;
pub use rate::RateLimit;
pub use state::{AppState, Limits};
