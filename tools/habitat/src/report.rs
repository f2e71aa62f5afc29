//! `habitat report`: a finance report view exported as CSV, JSON or an Excel workbook; every
//! report of a tenant (and period) in one workbook with `--all`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use postgres_sink::report;

use crate::sources::{Database, pool, runtime};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Csv,
    Json,
    /// An Excel workbook (needs --output).
    Xlsx,
}

/// `habitat report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// period-allocation, member-statement, trial-balance, payments-due, 1099-patr,
    /// exceptions, invariant-breaks.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every report, one sheet each (with --format xlsx); each takes the filters it has.
    #[arg(long, requires = "output")]
    pub all: bool,
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
    let filter = report::Filter {
        tenant: args.tenant.clone(),
        period: args.period.clone(),
        year: args.year,
        member: args.member.clone(),
    };
    let reports: Vec<&'static report::Report> = match &args.name {
        Some(name) => vec![report::find(name)?],
        None => {
            if !matches!(args.format, Format::Xlsx) {
                bail!("--all writes one workbook: add --format xlsx");
            }
            report::REPORTS.iter().collect()
        }
    };
    let runtime = runtime()?;
    let tables = runtime.block_on(async {
        let pool = pool(&args.database).await?;
        let mut tables = Vec::new();
        for report in &reports {
            // With --all, each report takes the filters it has.
            let filter = if args.all {
                report::Filter {
                    tenant: filter.tenant.clone(),
                    period: filter.period.clone().filter(|_| report.period.is_some()),
                    year: filter.year.filter(|_| report.year.is_some()),
                    member: filter.member.clone().filter(|_| report.member.is_some()),
                }
            } else {
                filter.clone()
            };
            tables.push((report.name, report::run(&pool, report, &filter).await?));
        }
        Ok::<_, anyhow::Error>(tables)
    })?;
    let rows: usize = tables.iter().map(|(_, t)| t.rows.len()).sum();
    let bytes = match args.format {
        Format::Xlsx => {
            if args.output.is_none() {
                bail!("a workbook is written to a file: add --output FILE.xlsx");
            }
            let sheets: Vec<(&str, &report::Table)> =
                tables.iter().map(|(name, table)| (*name, table)).collect();
            crate::workbook::workbook(&sheets)?
        }
        Format::Csv if args.bom => format!("\u{feff}{}", tables[0].1.to_csv()).into_bytes(),
        Format::Csv => tables[0].1.to_csv().into_bytes(),
        Format::Json => (serde_json::to_string_pretty(&tables[0].1.to_json())? + "\n").into_bytes(),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, bytes)?;
            eprintln!("Wrote {rows} rows to {}.", path.display());
        }
        None => std::io::Write::write_all(&mut std::io::stdout(), &bytes)?,
    }
    Ok(())
}
