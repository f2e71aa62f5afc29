//! The `habitat` command line's library: each command is a module, so tests call them
//! in-process.

pub mod chaos;
pub mod demo;
pub mod dlq;
pub mod finance;
pub mod kafka;
pub mod keys;
pub mod monitoring;
pub mod outbox;
pub mod progress;
pub mod report;
pub mod schemas;
pub mod sources;
pub mod stack;
pub mod supervise;
pub mod tail;
pub mod topics;
pub mod verify;
pub mod workbook;

use std::path::PathBuf;

use clap::Args;

/// Where the local stack keeps its state and which ports it uses. Give two stacks
/// different state directories and ports to run them side by side.
#[derive(Clone, Debug, Args)]
pub struct StackArgs {
    /// Directory for data, logs and pid files.
    #[arg(long, env = "HABITAT_STATE_DIR", default_value = ".habitat")]
    pub state_dir: PathBuf,
    /// Port devbroker listens on (loopback).
    #[arg(long, env = "HABITAT_BROKER_PORT", default_value_t = 19092)]
    pub broker_port: u16,
    /// Port of the local Postgres (loopback); ignored when DATABASE_URL is set.
    #[arg(long, env = "HABITAT_POSTGRES_PORT", default_value_t = 15432)]
    pub postgres_port: u16,
    /// Port of the schema registry (loopback).
    #[arg(long, env = "HABITAT_REGISTRY_PORT", default_value_t = 18081)]
    pub registry_port: u16,
    /// Port of the REST proxy (loopback).
    #[arg(long, env = "HABITAT_PROXY_PORT", default_value_t = 18080)]
    pub proxy_port: u16,
    /// First of six ports for the metrics of the four processors, the sink and the outbox's
    /// relay (loopback).
    #[arg(long, env = "HABITAT_METRICS_PORT", default_value_t = 19101)]
    pub metrics_port: u16,
    /// Use this Postgres instead of starting one.
    #[arg(long, env = "HABITAT_STACK_DATABASE_URL")]
    pub database_url: Option<String>,
}
