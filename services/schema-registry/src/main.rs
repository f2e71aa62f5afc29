//! The schema registry service: Postgres-backed, Confluent-compatible REST API.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use schema_registry::{
    AppState,
    access::{Access, Credentials},
    app, migrate,
};
use sqlx::postgres::PgPoolOptions;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// Habitat's schema registry.
#[derive(Debug, Parser)]
#[command(name = "schema-registry", version)]
struct Config {
    /// Address to listen on; port 0 picks a free port (printed on the startup line).
    #[arg(long, env = "SCHEMA_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Postgres holding the registry's tables (migrated on start).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// The credentials writes need (register, delete, set a compatibility level), HTTP
    /// Basic `user:password`.
    #[arg(long, env = "SCHEMA_REGISTRY_CREDENTIALS", hide_env_values = true)]
    credentials: Option<Credentials>,
    /// Require the credentials for reads too.
    #[arg(long, env = "SCHEMA_REGISTRY_READS_NEED_CREDENTIALS")]
    reads_need_credentials: bool,
    /// Serve without credentials: anyone who reaches the registry may change it. Only for a
    /// throwaway registry.
    #[arg(long, conflicts_with = "credentials")]
    open: bool,
    /// Log filter in `tracing` syntax.
    #[arg(long, env = "SCHEMA_REGISTRY_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Its Postgres may be reached over TLS; the build links two rustls providers, so one is
    // chosen before the first connection.
    _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if config.credentials.is_none() && !config.open {
        anyhow::bail!(
            "writes need credentials: set SCHEMA_REGISTRY_CREDENTIALS=user:password (or \
             --credentials), or pass --open for a throwaway registry anyone may change"
        );
    }
    let access = Access {
        credentials: config.credentials.clone(),
        reads_need_credentials: config.reads_need_credentials,
    };
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&config.database_url)
        .await
        .context("cannot connect to the registry's Postgres")?;
    migrate(&pool)
        .await
        .context("cannot migrate the registry's tables")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    println!("schema-registry listening on {}", listener.local_addr()?);
    let mut terminate = signal(SignalKind::terminate())?;
    axum::serve(listener, app(AppState::with_access(pool, access)))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    info!("schema-registry stopped.");
    Ok(())
}
