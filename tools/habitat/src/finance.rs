//! `habitat finance grant`: finance roles bound to tenants.

use anyhow::Result;
use clap::Subcommand;

use crate::sources::{Database, pool, runtime};

/// `habitat finance`: who reads the books.
#[derive(Debug, Subcommand)]
pub enum Finance {
    /// Create or update a login-less role that reads the report views for these tenants
    /// only (and no base table); then `GRANT <role> TO <user>` in Postgres.
    Grant {
        /// A tenant the role reads (repeat for several; replaces the role's tenants).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
        /// The role: 1-63 characters of a-z 0-9 _.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        database: Database,
    },
}

pub fn run_finance(command: &Finance) -> Result<()> {
    match command {
        Finance::Grant {
            tenants,
            role,
            database,
        } => {
            runtime()?.block_on(async {
                let pool = pool(database).await?;
                postgres_sink::access::grant(&pool, &database.schema, role, tenants).await?;
                Ok::<_, anyhow::Error>(())
            })?;
            println!(
                "Role {role} reads the report views of {} for {} only; let a user read as it \
                 with: GRANT {role} TO <user>;",
                database.schema,
                tenants.join(", ")
            );
            Ok(())
        }
    }
}
