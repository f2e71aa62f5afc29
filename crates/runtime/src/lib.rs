//! The exactly-once stream runtime every Habitat Streams processor is written with.
//!
//! A data engineer implements [`Processor`] (one required method, `process`), declares its
//! stores and timers by name, tests it with the in-memory [`TestDriver`], and hands it
//! to [`run`] in a thin `main`. The runtime does the hard parts once:
//!
//! - [`engine`]: a consumer group per processor reading `read_committed`, one
//!   transactional producer per instance, outputs + changelog records + dead letters +
//!   input offsets committed in one Kafka transaction (KIP-447).
//! - [`task`]: per-partition key-value stores backed by compacted changelog topics, and
//!   durable timers kept in a store.
//! - [`avro`]: Avro values through the schema registry (TopicRecordNameStrategy).
//! - [`dlq`]: dead letters with headers saying where from and why.
//! - [`metrics`]: Prometheus metrics, `/healthz` and `/readyz`.

/// Every program built on the runtime allocates with mimalloc. Handling a record makes many
/// small allocations that live for one batch (decoded records, store keys and values,
/// encoded outputs); glibc's allocator spent a quarter of the patronage aggregator's CPU
/// on them (`perf record`, docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod avro;
pub mod clock;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod dlq;
pub mod driver;
pub mod engine;
pub mod health;
pub mod kafka;
pub mod memory;
pub mod merge;
pub mod metrics;
pub mod payload;
pub mod processor;
pub mod retry;
pub mod runner;
pub mod served;
pub mod step;
pub mod store;
pub mod task;
pub mod waits;
pub mod watermark;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Codec, CodecError, Json, Paired, Utf8};
pub use config::{ConfigError, RuntimeConfig};
pub use driver::{Produced, TestDriver};
pub use payload::{Payload, Routed, Trace};
pub use processor::{ProcessError, Processor, Record, Timer, amount, ratio};
pub use runner::{run, run_avro, run_avro_to, run_with};
pub use store::{Store, StoreKey, TenantKey};
pub use task::{Context, Output, partition_for};
