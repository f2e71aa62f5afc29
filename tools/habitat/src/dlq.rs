//! `habitat dlq`: dead letters listed, shown, re-driven once and resolved once.

use anyhow::{Result, bail};
use clap::Subcommand;
use habitat_runtime::avro::AvroCodec;
use postgres_sink::dlq;

use crate::sources::{Database, Topics, pool, runtime};

/// `habitat dlq`.
#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// Dead letters, newest first.
    List {
        #[arg(long)]
        processor: Option<String>,
        /// NEW, REDRIVEN or RESOLVED.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        database: Database,
    },
    /// One dead letter with its payload decoded where possible.
    Show {
        id: i64,
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        topics: Topics,
    },
    /// Republish the original record to its source topic (once the cause is fixed).
    Redrive {
        id: i64,
        /// Who re-drives it.
        #[arg(long)]
        by: String,
        /// Re-drive a letter that was re-driven before (or whose re-drive died).
        #[arg(long)]
        again: bool,
        #[command(flatten)]
        database: Database,
        #[command(flatten)]
        topics: Topics,
    },
    /// Mark it handled; a letter is resolved once.
    Resolve {
        id: i64,
        #[arg(long)]
        by: String,
        /// Why it needs nothing more.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        database: Database,
    },
}

pub fn run_dlq(command: &Dlq) -> Result<()> {
    let runtime = runtime()?;
    match command {
        Dlq::List {
            processor,
            status,
            database,
        } => {
            let letters = runtime.block_on(async {
                let pool = pool(database).await?;
                Ok::<_, anyhow::Error>(
                    dlq::list(&pool, processor.as_deref(), status.as_deref()).await?,
                )
            })?;
            print!("{}", dlq::render_list(&letters));
        }
        Dlq::Show {
            id,
            database,
            topics,
        } => {
            let letter = runtime.block_on(async {
                let pool = pool(database).await?;
                Ok::<_, anyhow::Error>(dlq::get(&pool, *id).await?)
            })?;
            // Decoding asks the registry from this thread, outside the runtime.
            let codec = AvroCodec::with_auth(
                &topics.registry,
                topics.registry_auth.as_ref(),
                runtime.handle().clone(),
            )
            .ok();
            let mut shown = serde_json::to_value(&letter)?;
            shown["payload"] = dlq::decoded_payload(&letter, codec.as_ref());
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Dlq::Redrive {
            id,
            by,
            again,
            database,
            topics,
        } => {
            let redriven = runtime.block_on(async {
                let pool = pool(database).await?;
                Ok::<_, anyhow::Error>(
                    dlq::redrive(
                        &pool,
                        *id,
                        by,
                        *again,
                        &topics.bootstrap,
                        &topics.settings(),
                    )
                    .await?,
                )
            })?;
            println!(
                "Dead letter {id} re-driven to {} partition {}.",
                redriven.topic, redriven.partition
            );
        }
        Dlq::Resolve {
            id,
            by,
            reason,
            database,
        } => {
            if reason.trim().is_empty() {
                bail!("say why with --reason");
            }
            let letter = runtime.block_on(async {
                let pool = pool(database).await?;
                Ok::<_, anyhow::Error>(dlq::resolve(&pool, *id, by, reason).await?)
            })?;
            println!(
                "Dead letter {} resolved by {}.",
                letter.id,
                letter.resolved_by.unwrap_or_default()
            );
        }
    }
    Ok(())
}
