//! Habitat Streams' benchmarks: workloads and measurements, kept beside the code they
//! measure and out of the `habitat` command line (which runs them: `habitat bench`).
//!
//! - [`topology`]: the whole topology under a synthetic year of many cooperatives
//!   ([`load`] is the workload).
//! - [`broker`]: devbroker's raw produce and consume rates, and what every bench shares
//!   (its own devbroker, Postgres and registry; CPU time and peak memory of processes).
//! - [`runtime`]: the stream runtime alone, with `bench-processor` as its processor.
//! - [`history`]: the recorded history of the whole topology's figures and its chart.
//! - [`restore`]: a store restored from its changelog, before and after cleaning.
//! - [`sink`]: the Postgres sink rebuilding N records.
//! - [`proxy`]: the REST proxy's single posts and batches.
//! - [`state`]: the processors' store entries after one year of cooperatives and after
//!   several, in memory.
//!
//! Figures go to `docs/benchmarks.md` with the machine and the command; never timing
//! assertions in tests.

pub mod broker;
pub mod history;
pub mod load;
pub mod log;
pub mod outbox;
pub mod proxy;
pub mod restore;
pub mod runtime;
pub mod sink;
pub mod state;
pub mod topology;
