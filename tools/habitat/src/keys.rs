//! `habitat keys`: the REST proxy's API keys — created (the secret shown once), listed,
//! revoked.

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::sources::runtime;

/// `habitat keys`: the REST proxy's API keys.
#[derive(Debug, Subcommand)]
pub enum Keys {
    /// Create a key; its secret is printed once.
    Create {
        /// A name people recognise (`rest:<name>` is the events' producer).
        #[arg(long)]
        name: String,
        /// A tenant it may write for (repeat; `*` for all).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
        /// An event type it may write (repeat; default all).
        #[arg(long = "event-type", default_value = rest_proxy::keys::ANY)]
        event_types: Vec<String>,
        #[arg(
            long,
            env = "HABITAT_DATABASE_URL",
            default_value = "postgres://habitat@127.0.0.1:15432/habitat"
        )]
        database_url: String,
    },
    /// Every key, newest first (secrets are not stored).
    List {
        #[arg(
            long,
            env = "HABITAT_DATABASE_URL",
            default_value = "postgres://habitat@127.0.0.1:15432/habitat"
        )]
        database_url: String,
    },
    /// Revoke a key by name.
    Revoke {
        name: String,
        #[arg(
            long,
            env = "HABITAT_DATABASE_URL",
            default_value = "postgres://habitat@127.0.0.1:15432/habitat"
        )]
        database_url: String,
    },
}

pub fn run_keys(command: &Keys) -> Result<()> {
    use rest_proxy::keys;
    let runtime = runtime()?;
    runtime.block_on(async {
        match command {
            Keys::Create {
                name,
                tenants,
                event_types,
                database_url,
            } => {
                let pool = keys::connect(database_url).await?;
                let (key, secret) = keys::create(&pool, name, tenants, event_types).await?;
                println!(
                    "Created key {} for tenants {:?}, event types {:?}.",
                    key.name, key.tenants, key.event_types
                );
                println!("Its secret is shown this once:\n{secret}");
            }
            Keys::List { database_url } => {
                let pool = keys::connect(database_url).await?;
                println!(
                    "{:<24} {:<24} {:<30} {:<20} revoked",
                    "name", "tenants", "event types", "created"
                );
                for key in keys::list(&pool).await? {
                    println!(
                        "{:<24} {:<24} {:<30} {:<20} {}",
                        key.name,
                        key.tenants.join(","),
                        key.event_types.join(","),
                        key.created_at.format("%Y-%m-%d %H:%M:%S"),
                        key.revoked_at
                            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_default()
                    );
                }
            }
            Keys::Revoke { name, database_url } => {
                let pool = keys::connect(database_url).await?;
                if !keys::revoke(&pool, name).await? {
                    bail!("no live key named {name}");
                }
                println!("Key {name} revoked.");
            }
        }
        Ok(())
    })
}
