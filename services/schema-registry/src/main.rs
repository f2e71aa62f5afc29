//! The schema registry service: Postgres-backed, Confluent-compatible REST API.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use schema_registry::{AppState, app, migrate};
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
    /// Log filter in `tracing` syntax.
    #[arg(long, env = "SCHEMA_REGISTRY_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
    axum::serve(listener, app(AppState::new(pool)))
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
