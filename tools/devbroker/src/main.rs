//! devbroker's entry point: parse the configuration, open storage, serve until SIGTERM.

use std::{net::TcpListener as StdListener, time::Instant};

use anyhow::Context as _;
use clap::Parser;
use devbroker::{
    config::Config,
    server::{NODE_ID, Server},
    storage::DevStorage,
};
use tansu_storage::StorageContainer;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::info;
use url::Url;

/// Every request is decoded into and encoded from many small allocations.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    no_transparent_huge_pages();
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .with_context(|| format!("invalid log filter {:?}", config.log))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let listener = StdListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let host = config
        .advertised_host
        .clone()
        .unwrap_or_else(|| bound.ip().to_string());
    let advertised = Url::parse(&format!("tcp://{host}:{}", bound.port()))?;

    let data_dir = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            Some(std::fs::canonicalize(dir)?)
        }
        None => None,
    };
    let (control, mode) = match &data_dir {
        // Tansu's sqlite URL is relative to the working directory unless the path keeps a
        // leading slash after the first one is stripped.
        Some(dir) => (
            Url::parse(&format!("sqlite:///{}", dir.join("control.db").display()))?,
            format!("durable in {}", dir.display()),
        ),
        None => (
            Url::parse("memory://devbroker/")?,
            "in memory (segments in a scratch directory removed on exit)".to_owned(),
        ),
    };
    let inner = StorageContainer::builder()
        .cluster_id(config.cluster_id.clone())
        .node_id(NODE_ID)
        .advertised_listener(advertised.clone())
        .storage(control)
        .silent(true)
        .build()
        .await
        .context("cannot open Tansu's storage engine")?;
    let storage = match &data_dir {
        Some(dir) => DevStorage::durable(inner, dir)
            .with_context(|| format!("cannot restore the log in {}", dir.display()))?,
        None => DevStorage::in_memory(inner),
    };
    storage
        .load_topic_settings()
        .await
        .context("cannot read the topics' settings")?;
    let server = Server::new(
        tokio::net::TcpListener::from_std(listener)?,
        storage,
        &config.cluster_id,
    )
    .await?
    .cleaning_every(std::time::Duration::from_millis(
        config.clean_interval_ms.max(10),
    ));

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    _ = tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        on_signal.cancel();
    });

    println!(
        "devbroker listening on {bound} (advertised {host}:{}), storage {mode}, ready in {} ms",
        bound.port(),
        started.elapsed().as_millis()
    );
    server.serve(shutdown).await?;
    info!("devbroker stopped.");
    Ok(())
}

/// mimalloc asks for transparent huge pages on its arenas; the broker's fetch and produce
/// buffers come and go with every request, and the kernel zeroed a fresh 2 MiB page for
/// each (14 % of the broker's samples at half load). Off for the process, as the
/// programs built on the runtime do (`habitat_runtime::memory`);
/// `HABITAT_TRANSPARENT_HUGE_PAGES=on` keeps them.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var("HABITAT_TRANSPARENT_HUGE_PAGES").as_deref() != Ok("on") {
        // SAFETY: PR_SET_THP_DISABLE sets a flag of the process's memory map and reads no
        // memory of ours.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}
