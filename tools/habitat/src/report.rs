//! `habitat report`: a finance report view exported as CSV or JSON.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use postgres_sink::report;

use crate::sources::{Database, pool, runtime};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

/// `habitat report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// period-allocation, member-statement, trial-balance, payments-due, 1099-patr,
    /// exceptions.
    pub name: String,
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, conflicts_with = "year")]
    pub period: Option<String>,
    /// Tax year (1099-patr).
    #[arg(long)]
    pub year: Option<i32>,
    #[arg(long)]
    pub member: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
    /// Start the CSV with a UTF-8 byte order mark, so that Excel reads accented names right.
    #[arg(long)]
    pub bom: bool,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub database: Database,
}

pub fn run_report(args: &ReportArgs) -> Result<()> {
    let report = report::find(&args.name)?;
    let filter = report::Filter {
        tenant: args.tenant.clone(),
        period: args.period.clone(),
        year: args.year,
        member: args.member.clone(),
    };
    let table = runtime()?.block_on(async {
        let pool = pool(&args.database).await?;
        Ok::<_, anyhow::Error>(report::run(&pool, report, &filter).await?)
    })?;
    let text = match args.format {
        Format::Csv if args.bom => format!("\u{feff}{}", table.to_csv()),
        Format::Csv => table.to_csv(),
        Format::Json => serde_json::to_string_pretty(&table.to_json())? + "\n",
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text)?;
            eprintln!("Wrote {} rows to {}.", table.rows.len(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
