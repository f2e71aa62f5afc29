//! The REST proxy of Habitat Streams: producers that do not speak Kafka post domain
//! events over HTTP.
//!
//! - [`validate`]: a posted event (`{event_type, tenant_id, actor?, correlation_id?,
//!   payload}`) checked against its record type in the REST JSON conventions and against
//!   the domain rules the SPEC puts at the door, with the path of every problem.
//! - [`writer`]: accepted events written to Kafka in transactions, all or nothing, with
//!   group commit across concurrent requests.

//! - [`app`]: the HTTP routes and their JSON errors.
//! - [`v3`]: the Confluent REST v3 records API, with [`avro_json`] (Avro's JSON encoding)
//!   and [`registry`] (schemas named by id or subject).
//! - [`openapi`]: the OpenAPI document, served and held to the router.
//! - [`keys`]: API keys bound to tenants and event types, stored hashed.
//! - [`idempotency`]: `Idempotency-Key` — a retried request gets the first answer.

pub mod app;
pub mod avro_json;
pub mod idempotency;
pub mod keys;
pub mod openapi;
pub mod registry;
pub mod v3;
pub mod validate;
pub mod writer;
