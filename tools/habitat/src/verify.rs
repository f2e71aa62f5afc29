//! `habitat verify replay`: the auditor's check — the tables rebuilt from the topics into a
//! fresh schema and compared with the live ones.

use anyhow::Result;
use clap::Subcommand;
use habitat_runtime::config::KafkaSettings;
use postgres_sink::verify::{self, Source};

use crate::sources::{Database, Topics, runtime};

/// `habitat verify`.
#[derive(Debug, Subcommand)]
pub enum Verify {
    /// Rebuild every table from the topics into a fresh schema and diff it against the
    /// live one; exits 1 when anything differs.
    Replay {
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        topics: Topics,
        /// The sink whose offsets say how far to replay.
        #[arg(long, default_value = postgres_sink::SINK)]
        sink: String,
        /// Keep the two verification schemas for inspection.
        #[arg(long)]
        keep: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a verification; `Ok(false)` when the tables differ.
pub fn run_verify(command: &Verify) -> Result<bool> {
    let Verify::Replay {
        database,
        topics,
        sink,
        keep,
        json,
    } = command;
    let runtime = runtime()?;
    let source = Source {
        bootstrap_servers: topics.bootstrap.clone(),
        schema_registry_url: topics.registry.clone(),
        schema_registry_auth: topics.registry_auth.clone(),
        kafka: KafkaSettings::default(),
    };
    let outcome = verify::replay(
        &database.database_url,
        &database.schema,
        sink,
        &source,
        *keep,
        runtime.handle(),
    )?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", outcome.render());
    }
    Ok(outcome.is_clean())
}
