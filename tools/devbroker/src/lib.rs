//! devbroker: a single-node Kafka-API broker for development and tests.
//!
//! Tansu (the `tansu-*` crates) provides the protocol codec, the request routes, consumer
//! groups and the control-plane storage engines. devbroker completes it with what
//! exactly-once processing needs and Tansu 0.6 lacks: EndTxn, a last stable offset and
//! aborted-transaction filtering for read_committed readers, aborting of abandoned
//! transactions, a record log that answers fetches from inside a batch, and the
//! ApiVersions exchange older librdkafka clients (kcat) expect.

pub mod admin;
pub mod compat;
pub mod config;
pub mod fetch;
pub mod frame;
pub mod group;
pub mod log;
pub mod server;
pub mod storage;
