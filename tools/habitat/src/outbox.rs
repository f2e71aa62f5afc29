//! `habitat outbox`: the transactional outbox in a producer's database (docs/outbox.md).

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::sources::runtime;

/// A producer's database and the outbox's schema in it.
#[derive(Clone, Debug, Args)]
pub struct OutboxDatabase {
    /// The producer's database (default: the local stack's).
    #[arg(
        long,
        env = "HABITAT_DATABASE_URL",
        default_value = "postgres://habitat@127.0.0.1:15432/habitat"
    )]
    pub database_url: String,
    /// The outbox's schema.
    #[arg(long, env = "HABITAT_OUTBOX_SCHEMA", default_value = outbox::DEFAULT_SCHEMA)]
    pub schema: String,
}

/// `habitat outbox`.
#[derive(Debug, Subcommand)]
pub enum Outbox {
    /// Create (or upgrade) the outbox in a producer's database: the pending events, the
    /// dead letters and `<schema>.enqueue(event_type, tenant_id, payload, correlation_id,
    /// actor)`, which the producer calls inside its own transactions.
    Install {
        #[command(flatten)]
        database: OutboxDatabase,
    },
    /// What waits in the outbox, how old the oldest is, and the dead letters.
    Status {
        #[command(flatten)]
        database: OutboxDatabase,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run_outbox(command: &Outbox) -> Result<()> {
    match command {
        Outbox::Install { database } => {
            runtime()?.block_on(outbox::install::install(
                &database.database_url,
                &database.schema,
            ))?;
            println!(
                "The outbox is installed in schema {}: call {}.enqueue(event_type, tenant_id, \
                 payload) in your transactions and run outbox-relay on this database.",
                database.schema, database.schema
            );
        }
        Outbox::Status { database, json } => {
            let status = runtime()?.block_on(outbox::status::status(
                &database.database_url,
                &database.schema,
            ))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!(
                    "pending: {} (oldest {:.1} s)\ndead letters: {}",
                    status.pending, status.lag_seconds, status.dead_letters
                );
                for (event_id, event_type, reason) in &status.recent_dead_letters {
                    println!("  {event_id} {event_type}: {reason}");
                }
            }
        }
    }
    Ok(())
}
