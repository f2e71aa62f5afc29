//! `habitat dlq`: dead letters listed, shown, re-driven once and resolved once.

use anyhow::{Result, bail};
use clap::Subcommand;
use habitat_runtime::avro::AvroCodec;
use postgres_sink::dlq;

use crate::{
    progress::Progress,
    sources::{Database, Topics, pool, runtime},
};

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
    /// Republish the original records to their source topics (once the cause is fixed):
    /// the letters named, or with `--all-new` every NEW one (of `--processor`), oldest
    /// first. One that cannot be re-driven is named and the others go on.
    Redrive {
        #[arg(required_unless_present = "all_new", conflicts_with = "all_new")]
        ids: Vec<i64>,
        /// Every letter still NEW.
        #[arg(long)]
        all_new: bool,
        /// With --all-new: only this processor's letters.
        #[arg(long, requires = "all_new")]
        processor: Option<String>,
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
            ids,
            all_new,
            processor,
            by,
            again,
            database,
            topics,
        } => {
            let failed = runtime.block_on(async {
                let pool = pool(database).await?;
                let ids: Vec<i64> = if *all_new {
                    let mut letters = dlq::list(&pool, processor.as_deref(), Some("NEW")).await?;
                    letters.reverse();
                    letters.into_iter().map(|letter| letter.id).collect()
                } else {
                    ids.clone()
                };
                let settings = topics.settings();
                let mut progress = (*all_new || ids.len() > 1)
                    .then(|| Progress::counted("dlq redrive", ids.len() as u64, "letters"));
                let mut failed = 0;
                for id in &ids {
                    match dlq::redrive(&pool, *id, by, *again, &topics.bootstrap, &settings).await {
                        Ok(redriven) => println!(
                            "Dead letter {id} re-driven to {} partition {}.",
                            redriven.topic, redriven.partition
                        ),
                        Err(error) => {
                            failed += 1;
                            eprintln!("Dead letter {id} not re-driven: {error}");
                        }
                    }
                    if let Some(progress) = &mut progress {
                        progress.inc();
                    }
                }
                if let Some(progress) = progress {
                    progress.finish("done");
                }
                Ok::<_, anyhow::Error>(failed)
            })?;
            if failed > 0 {
                bail!("{failed} dead letters not re-driven");
            }
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
