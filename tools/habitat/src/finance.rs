//! The sink's operations from the command line: finance reports, replay-to-verify, and
//! dead letters.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use habitat_runtime::{
    avro::AvroCodec,
    config::{KafkaSettings, RegistryAuth},
};
use postgres_sink::{
    dlq, report,
    store::options,
    verify::{self, Source},
};
use sqlx::PgPool;

/// The Postgres the sink writes to.
#[derive(Clone, Debug, Args)]
pub struct Database {
    /// Postgres URL (default: the local stack's).
    #[arg(
        long,
        env = "HABITAT_DATABASE_URL",
        default_value = "postgres://habitat@127.0.0.1:15432/habitat"
    )]
    pub database_url: String,
    /// Schema of the sink's tables.
    #[arg(long, env = "HABITAT_SINK_SCHEMA", default_value = postgres_sink::DEFAULT_SCHEMA)]
    pub schema: String,
}

/// The Kafka cluster and registry the topics are read from.
#[derive(Clone, Debug, Args)]
pub struct Topics {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "HABITAT_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:19092"
    )]
    pub bootstrap: String,
    /// Schema registry URL.
    #[arg(
        long,
        env = "HABITAT_SCHEMA_REGISTRY_URL",
        default_value = "http://127.0.0.1:18081"
    )]
    pub registry: String,
    /// The registry's HTTP Basic credentials, `user:password`.
    #[arg(long, env = "HABITAT_SCHEMA_REGISTRY_AUTH", hide_env_values = true)]
    pub registry_auth: Option<RegistryAuth>,
}

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
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub database: Database,
}

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

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn pool(database: &Database) -> Result<PgPool> {
    postgres_sink::store::check_schema_name(&database.schema).map_err(anyhow::Error::msg)?;
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options(&database.database_url, &database.schema)?)
        .await
        .with_context(|| {
            format!(
                "cannot connect to {}",
                postgres_sink::config::redact_url(&database.database_url)
            )
        })
}

pub fn run_report(args: &ReportArgs) -> Result<()> {
    let report = report::find(&args.name).map_err(anyhow::Error::msg)?;
    let filter = report::Filter {
        tenant: args.tenant.clone(),
        period: args.period.clone(),
        year: args.year,
        member: args.member.clone(),
    };
    let table = runtime()?.block_on(async {
        let pool = pool(&args.database).await?;
        report::run(&pool, report, &filter)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    let text = match args.format {
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
                        &KafkaSettings::default(),
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
