//! `habitat bench proxy`: the REST proxy under load — events/s and request latency (p50,
//! p99) for single posts and for 100-event batches.
//!
//! Starts its own devbroker (in memory), Postgres (the key store) and schema registry,
//! creates an API key, runs the release `rest-proxy` binary as a process of its own, and
//! drives it with a closed-loop load generator: `clients` concurrent connections, each
//! posting its next request as soon as the last is answered. Every answer must be 202
//! (else the run fails); latency is measured per request, from send to the whole answer.

use std::{
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use devstack::process::{Guardian, free_port, sibling_binary};
use serde_json::{Value, json};

use crate::broker::{BenchStack, cpu_time, machine};

#[derive(Clone, Debug, Args)]
pub struct ProxyBench {
    /// Single-event requests to measure.
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Batches to measure.
    #[arg(long, default_value_t = 400)]
    pub batches: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Concurrent clients posting single events.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Concurrent clients posting batches.
    #[arg(long, default_value_t = 8)]
    pub batch_clients: usize,
    /// Tenants the events are spread over.
    #[arg(long, default_value_t = 50)]
    pub tenants: usize,
}

/// The i-th event: a member registration of one of `tenants`.
fn event(i: usize, tenants: usize, round: &str) -> Value {
    json!({"event_type": "people.MemberRegistered", "tenant_id": format!("coop-{}", i % tenants),
           "actor": "steward:bench",
           "payload": {"member_id": format!("{round}-{i}"), "display_name": "Bench Member",
                       "joined_on": "2026-01-01", "status": "ACTIVE",
                       "email": "member@example.org"}})
}

/// The proxy process, killed when dropped.
struct ProxyProcess {
    child: Child,
    _guardian: Guardian,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        _ = self.child.kill();
        _ = self.child.wait();
    }
}

/// What one load phase measured.
struct Phase {
    name: String,
    requests: usize,
    events: usize,
    seconds: f64,
    /// Latencies in microseconds, sorted.
    latencies: Vec<u64>,
    proxy_cpu: f64,
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted sample"
        )]
        let at = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[at] as f64 / 1000.0
    }
}

/// Posts `bodies` to `url` from `clients` concurrent connections; every answer must be 202.
async fn load(url: &str, token: &str, bodies: Vec<Vec<u8>>, clients: usize) -> Result<Vec<u64>> {
    let queue = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let queue = queue.clone();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let url = url.to_owned();
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().expect("queue lock").next();
                let Some(body) = next else { break };
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await?;
                ensure!(status.as_u16() == 202, "{url} answered {status}: {text}");
                latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    all.sort_unstable();
    Ok(all)
}

pub fn run(args: &ProxyBench) -> Result<()> {
    let stack = BenchStack::start("proxy", 6)?;
    let (runtime, bootstrap, registry) = (&stack.runtime, &stack.bootstrap, &stack.registry);
    let (database, token) = stack.proxy_key()?;

    let port = free_port()?;
    let child = Command::new(sibling_binary("rest-proxy", "HABITAT_REST_PROXY_BIN")?)
        .env("HABITAT_LISTEN", format!("127.0.0.1:{port}"))
        .env("HABITAT_BOOTSTRAP_SERVERS", bootstrap)
        .env("HABITAT_SCHEMA_REGISTRY_URL", registry)
        .env("HABITAT_DATABASE_URL", &database)
        .env(
            "HABITAT_MAX_BATCH_EVENTS",
            args.batch_size.max(1).to_string(),
        )
        .env(
            "RUST_LOG",
            std::env::var("HABITAT_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::null())
        .spawn()
        .context("start rest-proxy (build it: cargo build --release -p rest-proxy)")?;
    let proxy_pid = i32::try_from(child.id())?;
    let proxy = ProxyProcess {
        _guardian: Guardian::new(&format!("kill -9 {proxy_pid} 2>/dev/null"))?,
        child,
    };
    let base = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    while runtime
        .block_on(async { reqwest::get(format!("{base}/readyz")).await.ok() })
        .is_none_or(|r| !r.status().is_success())
    {
        if ready.elapsed() > Duration::from_secs(60) {
            bail!("the proxy was not ready within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Warm: the key, the schemas and the producer's transactions.
    let warm = (0..200)
        .map(|i| serde_json::to_vec(&event(i, args.tenants, "warm")))
        .collect::<Result<Vec<_>, _>>()?;
    _ = runtime.block_on(load(&format!("{base}/v1/events"), &token, warm, 8))?;

    let mut phases = Vec::new();
    let singles = (0..args.requests)
        .map(|i| serde_json::to_vec(&event(i, args.tenants, "single")))
        .collect::<Result<Vec<_>, _>>()?;
    phases.push(measure(
        runtime,
        proxy_pid,
        format!("single events, {} clients", args.clients),
        (&format!("{base}/v1/events"), &token),
        singles,
        1,
        args.clients,
    )?);
    let batches = (0..args.batches)
        .map(|b| {
            let events: Vec<Value> = (0..args.batch_size)
                .map(|i| event(b * args.batch_size + i, args.tenants, "batch"))
                .collect();
            serde_json::to_vec(&json!({ "events": events }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    phases.push(measure(
        runtime,
        proxy_pid,
        format!(
            "batches of {}, {} clients",
            args.batch_size, args.batch_clients
        ),
        (&format!("{base}/v1/events:batch"), &token),
        batches,
        args.batch_size,
        args.batch_clients,
    )?);

    println!(
        "REST proxy: release rest-proxy process, devbroker in memory, {} tenants, keys in Postgres; closed-loop clients",
        args.tenants
    );
    println!("{}", machine());
    println!(
        "| load | requests | events | seconds | requests/s | events/s | p50 ms | p99 ms | proxy CPU µs/event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for phase in &phases {
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
            phase.name,
            phase.requests,
            phase.events,
            phase.seconds,
            phase.requests as f64 / phase.seconds,
            phase.events as f64 / phase.seconds,
            phase.percentile(0.50),
            phase.percentile(0.99),
            phase.proxy_cpu * 1e6 / phase.events as f64,
        );
    }
    println!(
        "devbroker CPU over both phases: {:.1} s",
        cpu_time(stack.broker_pid())
            .unwrap_or_default()
            .as_secs_f64()
    );
    drop(proxy);
    Ok(())
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    proxy_pid: i32,
    name: String,
    (url, token): (&str, &str),
    bodies: Vec<Vec<u8>>,
    events_per_request: usize,
    clients: usize,
) -> Result<Phase> {
    let requests = bodies.len();
    eprintln!("Measuring {name}: {requests} requests…");
    let cpu_before = cpu_time(proxy_pid)?;
    let started = Instant::now();
    let latencies = runtime.block_on(load(url, token, bodies, clients))?;
    let seconds = started.elapsed().as_secs_f64();
    let proxy_cpu = cpu_time(proxy_pid)?
        .saturating_sub(cpu_before)
        .as_secs_f64();
    Ok(Phase {
        name,
        requests,
        events: requests * events_per_request,
        seconds,
        latencies,
        proxy_cpu,
    })
}
