//! The record contract of Habitat Streams.
//!
//! - [`records`]: a Rust type for every type of `schemas/` (generated at build time: the
//!   `.avsc` files are the one source of truth), with serde in the REST API's JSON
//!   conventions and exact Avro conversion; [`records::Event`] over every event record.
//! - [`topology`]: the model of `topics.yaml`.
//! - [`partition`]: the tenant partitioner every producer uses.
//! - [`payload`]: a record's JSON without `meta`, as producers post it and the sink logs it.
//! - [`wire`]: the Confluent wire format and TopicRecordNameStrategy subjects.

pub mod avro;
pub mod catalog;
pub mod partition;
pub mod payload;
pub mod topology;
pub mod wire;

/// Generated from `schemas/` and `topics.yaml` by `build.rs`.
#[allow(clippy::all, missing_docs)]
pub mod records {
    use apache_avro::types::Value;

    use crate::avro::{AvroType, DecodeError, EncodeError, EventRecord, binary, codec};

    include!(concat!(env!("OUT_DIR"), "/records.rs"));
}

pub use avro::{AvroType, DecodeError, EncodeError, EventRecord};
