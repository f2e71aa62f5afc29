//! `habitat verify replay`: the auditor's check — the tables rebuilt from the topics into a
//! fresh schema and compared with the live ones. `habitat verify books`: the books'
//! invariants checked across the sink's tables (the `invariant_breaks` view).

use anyhow::Result;
use clap::Subcommand;
use postgres_sink::{
    report,
    verify::{self, Source},
};

use crate::{
    progress::Progress,
    sources::{Database, Topics, pool, runtime},
};

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
    /// Check the books: the trial balance is zero per tenant and currency, every posting
    /// balances, a period's allocations add up to its surplus with cash at least the ratio,
    /// each capital account equals its ledger account, no payable is below zero, payments
    /// stay within their allocation's cash, every approved allocation is posted once.
    /// Exits 1 naming each break.
    Books {
        #[command(flatten)]
        database: Database,
        /// Only this tenant's books.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the breaks as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a verification; `Ok(false)` when the tables differ or the books break.
pub fn run_verify(command: &Verify) -> Result<bool> {
    match command {
        Verify::Replay {
            database,
            topics,
            sink,
            keep,
            json,
        } => replay(database, topics, sink, *keep, *json),
        Verify::Books {
            database,
            tenant,
            json,
        } => books(database, tenant.clone(), *json),
    }
}

fn replay(
    database: &Database,
    topics: &Topics,
    sink: &str,
    keep: bool,
    json: bool,
) -> Result<bool> {
    let runtime = runtime()?;
    let source = Source {
        bootstrap_servers: topics.bootstrap.clone(),
        schema_registry_url: topics.registry.clone(),
        schema_registry_auth: topics.registry_auth.clone(),
        kafka: topics.settings(),
    };
    let mut progress: Option<Progress> = None;
    let outcome = verify::replay(
        &database.database_url,
        &database.schema,
        sink,
        &source,
        keep,
        runtime.handle(),
        &mut |read, total| {
            progress
                .get_or_insert_with(|| Progress::counted("verify replay", total, "offsets"))
                .set(read)
        },
    )?;
    if let Some(progress) = progress {
        progress.finish("replayed");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", outcome.render());
    }
    Ok(outcome.is_clean())
}

fn books(database: &Database, tenant: Option<String>, json: bool) -> Result<bool> {
    let report = report::find("invariant-breaks")?;
    let filter = report::Filter {
        tenant,
        ..report::Filter::default()
    };
    let breaks = runtime()?.block_on(async {
        let pool = pool(database).await?;
        Ok::<_, anyhow::Error>(report::run(&pool, report, &filter).await?)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&breaks.to_json())?);
    } else if breaks.rows.is_empty() {
        println!("books: every invariant holds");
    } else {
        println!("books: {} breaks", breaks.rows.len());
        print!(
            "{}",
            breaks.to_text(&["tenant_id", "invariant", "subject", "detail"])
        );
    }
    Ok(breaks.rows.is_empty())
}
