//! devbroker's command line and environment.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;

/// A single-node Kafka-API broker with Kafka's transaction semantics, for development and
/// tests.
#[derive(Clone, Debug, Parser)]
#[command(name = "devbroker", version)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (printed on the startup line).
    #[arg(long, env = "DEVBROKER_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,

    /// Host name clients are told to connect to (defaults to the listen address's host).
    #[arg(long, env = "DEVBROKER_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,

    /// Keep records, topics, groups and offsets in this directory, so they survive a
    /// restart. Without it everything is held in memory.
    #[arg(long, env = "DEVBROKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// How often the log cleaner runs: rolls idle segments, removes expired ones and
    /// compacts compacted topics (Kafka's `log.cleaner.backoff.ms`, shorter for development).
    #[arg(long, env = "DEVBROKER_CLEAN_INTERVAL_MS", default_value_t = 1000)]
    pub clean_interval_ms: u64,

    /// Cluster id reported to clients.
    #[arg(long, env = "DEVBROKER_CLUSTER_ID", default_value = "devbroker")]
    pub cluster_id: String,

    /// Log filter in `tracing` syntax (e.g. `info`, `devbroker=debug`). Tansu's metadata
    /// store warns on every commit that finds a transaction already committed, which this
    /// broker's transaction handling makes the normal case: quiet unless asked.
    #[arg(
        long,
        env = "DEVBROKER_LOG",
        default_value = "warn,devbroker=info,tansu_storage::dynostore=error"
    )]
    pub log: String,
}
