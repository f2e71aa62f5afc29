//! `habitat`: the Habitat Streams command line.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

mod bench;
mod demo;
mod kafka;
mod stack;

#[derive(Debug, Parser)]
#[command(
    name = "habitat",
    version,
    about = "Habitat Streams: patronage accounting on Kafka."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local stack (Postgres, devbroker); with --demo, also run the demo.
    Up {
        #[command(flatten)]
        stack: StackArgs,
        /// Run the demo once the stack is up.
        #[arg(long)]
        demo: bool,
    },
    /// Stop exactly what `habitat up` started in this state directory.
    Down {
        #[command(flatten)]
        stack: StackArgs,
        /// Also delete the state directory (all data).
        #[arg(long)]
        purge: bool,
    },
    /// Show what runs in this state directory and where.
    Status {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Write docs/event-catalog.md from schemas/ and topics.yaml.
    Catalog {
        /// Where to write it.
        #[arg(long, default_value = contracts::catalog::PATH)]
        output: PathBuf,
    },
    /// Measure performance (run with optimised builds: `./habitat bench ...`).
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// devbroker's raw produce and consume rates.
    Broker(bench::BrokerBench),
}

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
    /// Use this Postgres instead of starting one.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up { stack, demo } => {
            let running = stack::up(&stack)?;
            running.print();
            if demo {
                demo::run(&running)?;
            }
            Ok(())
        }
        Command::Down { stack, purge } => stack::down(&stack, purge),
        Command::Status { stack } => stack::status(&stack),
        Command::Bench(Bench::Broker(args)) => bench::run(&args),
        Command::Catalog { output } => {
            std::fs::write(
                &output,
                contracts::catalog::render(&contracts::topology::Topology::embedded()),
            )?;
            println!("Wrote {}.", output.display());
            Ok(())
        }
    }
}
