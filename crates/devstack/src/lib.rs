//! The local stack's processes: a Postgres cluster from the machine's binaries, devbroker,
//! and the small process utilities both the `habitat` CLI and the test fixtures use.

pub mod broker;
pub mod postgres;
pub mod process;
