//! `habitat chaos`: the local stack under fire. Several cooperatives' years are posted
//! through the REST proxy while, at random moments, a program of the stack is killed —
//! each processor, the sink, the proxy and devbroker by SIGKILL, Postgres by an immediate
//! shutdown — and its supervisor starts it again. Afterwards every post answered 202 must be
//! in `event_log` exactly once, every period's allocations must add up to its surplus,
//! every tenant's ledger must balance, a replay must give the live tables, and every
//! program must be running. It prints the kills, how long each kind took to be ready
//! again (p50 and max), and each check.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use rest_proxy::keys::{self, ANY};
use sqlx::PgPool;

use crate::{
    StackArgs, demo,
    sources::{Database, Topics},
    stack::{self, PROCESSORS, Running},
    supervise::State,
    verify::{self, Verify},
};

#[derive(Debug, Args)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// How many programs to kill.
    #[arg(long, default_value_t = 50)]
    pub kills: usize,
    /// Seed of the random choices (a run can be repeated); random when not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How many cooperatives' years to post.
    #[arg(long, default_value_t = 3)]
    pub cooperatives: usize,
}

/// How long a killed program may take to be ready again.
const RECOVERY: Duration = Duration::from_secs(180);

/// What can be killed.
const TARGETS: [&str; 8] = [
    PROCESSORS[0],
    PROCESSORS[1],
    PROCESSORS[2],
    PROCESSORS[3],
    "postgres-sink",
    "rest-proxy",
    "devbroker",
    "postgres",
];

/// One kill: what, and how long until it was ready again.
#[derive(Debug)]
struct Kill {
    target: &'static str,
    recovered: Duration,
}

/// A small deterministic generator (xorshift64*): the run repeats with its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs the chaos; `Ok(false)` when a check failed.
pub fn run(args: &ChaosArgs) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }) | 1;
    println!(
        "Chaos: {} kills, {} cooperatives, seed {seed}.",
        args.kills, args.cooperatives
    );
    let running = stack::up(&args.stack)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tenants: Vec<String> = (0..args.cooperatives)
        .map(|i| format!("chaos-{seed:x}-{i}"))
        .collect();
    let token = runtime.block_on(async {
        let pool = keys::connect(&running.database_url).await?;
        let (_, token) = keys::create(
            &pool,
            &format!("chaos-{seed:x}"),
            &tenants,
            &[ANY.to_owned()],
        )
        .await?;
        Ok::<_, anyhow::Error>(token)
    })?;

    // The killer runs on its own thread while the years are posted.
    let posting = Arc::new(AtomicBool::new(true));
    let killer = {
        let (posting, state_dir) = (posting.clone(), running.state_dir.clone());
        let checks = Readiness::of(&running);
        let kills = args.kills;
        std::thread::spawn(move || kill_repeatedly(kills, seed, &posting, &state_dir, &checks))
    };
    let posted = runtime.block_on(async {
        let pool = sink_pool(&running).await?;
        let mut years = tokio::task::JoinSet::new();
        for tenant in &tenants {
            let mut poster = demo::Poster::new(&running, tenant, token.clone(), true);
            let pool = pool.clone();
            _ = years.spawn(async move {
                demo::year(&mut poster, &pool).await?;
                Ok::<_, anyhow::Error>(poster.accepted)
            });
        }
        let mut accepted = Vec::new();
        while let Some(year) = years.join_next().await {
            match year? {
                Ok(ids) => accepted.extend(ids),
                Err(error) => {
                    posting.store(false, Ordering::SeqCst);
                    return Err(error);
                }
            }
        }
        posting.store(false, Ordering::SeqCst);
        Ok::<_, anyhow::Error>(accepted)
    });
    let kills = killer
        .join()
        .map_err(|_| anyhow::anyhow!("the killer panicked"))??;
    let accepted = posted?;
    print_kills(&kills);
    checks(&running, &runtime, &tenants, &accepted)
}

async fn sink_pool(running: &Running) -> Result<PgPool> {
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(postgres_sink::store::options(
            &running.database_url,
            postgres_sink::DEFAULT_SCHEMA,
        )?)
        .await?)
}

/// How each target's readiness is seen from outside.
struct Readiness {
    /// The port serving `/readyz`, by program.
    http: BTreeMap<String, u16>,
    broker: std::net::SocketAddr,
    postgres: u16,
}

impl Readiness {
    fn of(running: &Running) -> Self {
        let port = |url: &str| url::Url::parse(url).ok().and_then(|url| url.port());
        let mut http: BTreeMap<String, u16> = running
            .metrics
            .iter()
            .filter_map(|(name, url)| Some((name.clone(), port(url)?)))
            .collect();
        if let Some(proxy) = port(&running.proxy_url) {
            _ = http.insert("rest-proxy".to_owned(), proxy);
        }
        let postgres = port(&running.database_url).unwrap_or(5432);
        Self {
            http,
            broker: running.bootstrap.parse().expect("the broker's address"),
            postgres,
        }
    }

    fn ready(&self, target: &str) -> bool {
        match target {
            "devbroker" => {
                std::net::TcpStream::connect_timeout(&self.broker, Duration::from_secs(1)).is_ok()
            }
            "postgres" => std::process::Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &self.postgres.to_string()])
                .status()
                .is_ok_and(|status| status.success()),
            name => self.http.get(name).is_some_and(|port| {
                devstack::process::http_get(*port, "/readyz")
                    .is_some_and(|body| body.starts_with("ready"))
            }),
        }
    }
}

fn kill_repeatedly(
    kills: usize,
    seed: u64,
    posting: &AtomicBool,
    state_dir: &std::path::Path,
    readiness: &Readiness,
) -> Result<Vec<Kill>> {
    let mut dice = Dice(seed);
    let mut done = Vec::new();
    while done.len() < kills {
        // A random moment: 0.2 to 3 s after the last program was ready again (shorter
        // once the years are posted, so the run ends).
        let pause = if posting.load(Ordering::SeqCst) {
            200 + dice.below(2_800)
        } else {
            200 + dice.below(500)
        };
        std::thread::sleep(Duration::from_millis(pause));
        let target = TARGETS[dice.below(TARGETS.len() as u64) as usize];
        let state_file = state_dir.join(format!("{target}.state"));
        let Some(pid) = State::read(&state_file).and_then(|s| s.pid) else {
            continue; // between a death and its restart
        };
        let killed_at = Instant::now();
        if target == "postgres" {
            devstack::postgres::Cluster::new(
                devstack::postgres::PgBin::locate()?,
                &state_dir.join("postgres"),
                readiness.postgres,
                devstack::postgres::ClusterOptions::default(),
            )
            .stop_immediately()?;
        } else {
            _ = devstack::process::signal(i32::try_from(pid)?, libc::SIGKILL);
        }
        // Ready again: a new program under the supervisor, and it answers.
        loop {
            let restarted = State::read(&state_file)
                .and_then(|s| s.pid)
                .is_some_and(|now| now != pid);
            if restarted && readiness.ready(target) {
                break;
            }
            if killed_at.elapsed() > RECOVERY {
                bail!("{target} was not ready {RECOVERY:?} after it was killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let recovered = killed_at.elapsed();
        println!(
            "  kill {:>3}: {target:<26} ready again in {:.1} s",
            done.len() + 1,
            recovered.as_secs_f64()
        );
        done.push(Kill { target, recovered });
    }
    Ok(done)
}

fn print_kills(kills: &[Kill]) {
    let mut by_target: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for kill in kills {
        by_target
            .entry(kill.target)
            .or_default()
            .push(kill.recovered);
    }
    println!(
        "\n{} kills; time to ready again by program (p50 / max):",
        kills.len()
    );
    for (target, mut times) in by_target {
        times.sort();
        println!(
            "  {target:<26} {:>3} kills  p50 {:>5.1} s  max {:>5.1} s",
            times.len(),
            times[times.len() / 2].as_secs_f64(),
            times[times.len() - 1].as_secs_f64()
        );
    }
}

/// The checks after the run; each printed with its outcome.
fn checks(
    running: &Running,
    runtime: &tokio::runtime::Runtime,
    tenants: &[String],
    accepted: &[String],
) -> Result<bool> {
    let mut all = true;
    let mut report = |name: &str, ok: bool, detail: String| {
        println!("  {} {name}: {detail}", if ok { "ok  " } else { "FAIL" });
        all &= ok;
    };
    println!("\nChecks:");
    runtime.block_on(async {
        let pool = sink_pool(running).await?;
        for tenant in tenants {
            demo::settled(&pool, tenant).await?;
        }
        // Every post answered 202 is in the log once; the sink may still be catching up.
        let deadline = Instant::now() + RECOVERY;
        let counts: BTreeMap<String, i64> = loop {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT event_id, count(*) FROM event_log WHERE event_id = ANY($1) GROUP BY event_id",
            )
            .bind(accepted)
            .fetch_all(&pool)
            .await?;
            if rows.len() == accepted.len() || Instant::now() > deadline {
                break rows.into_iter().collect();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let missing = accepted.iter().filter(|id| !counts.contains_key(*id)).count();
        let twice = counts.values().filter(|n| **n != 1).count();
        report(
            "every accepted post in event_log exactly once",
            missing == 0 && twice == 0,
            format!("{} accepted, {missing} missing, {twice} more than once", accepted.len()),
        );
        let periods: Vec<(String, String, Option<rust_decimal::Decimal>, Option<rust_decimal::Decimal>)> =
            sqlx::query_as(
                "SELECT p.tenant_id, p.period_id, p.net_surplus, \
                        (SELECT sum(a.amount) FROM allocations a \
                          WHERE a.tenant_id = p.tenant_id AND a.period_id = p.period_id) \
                   FROM periods p WHERE p.tenant_id = ANY($1) ORDER BY 1, 2",
            )
            .bind(tenants)
            .fetch_all(&pool)
            .await?;
        let unequal: Vec<String> = periods
            .iter()
            .filter(|(_, _, surplus, allocated)| surplus != allocated)
            .map(|(t, p, s, a)| format!("{t}/{p}: surplus {s:?}, allocated {a:?}"))
            .collect();
        report(
            "allocations add up to each period's surplus",
            periods.len() == tenants.len() && unequal.is_empty(),
            format!("{} periods; {unequal:?}", periods.len()),
        );
        let ledgers: Vec<(String, Option<rust_decimal::Decimal>, Option<rust_decimal::Decimal>)> =
            sqlx::query_as(
                "SELECT tenant_id, sum(debit), sum(credit) FROM ledger_lines \
                  WHERE tenant_id = ANY($1) GROUP BY tenant_id ORDER BY 1",
            )
            .bind(tenants)
            .fetch_all(&pool)
            .await?;
        let unbalanced: Vec<String> = ledgers
            .iter()
            .filter(|(_, debit, credit)| debit != credit)
            .map(|(t, d, c)| format!("{t}: debit {d:?}, credit {c:?}"))
            .collect();
        report(
            "every tenant's ledger balances",
            ledgers.len() == tenants.len() && unbalanced.is_empty(),
            format!("{} ledgers; {unbalanced:?}", ledgers.len()),
        );
        Ok::<_, anyhow::Error>(())
    })?;
    let replay = verify::run_verify(&Verify::Replay {
        database: Database {
            database_url: running.database_url.clone(),
            schema: postgres_sink::DEFAULT_SCHEMA.to_owned(),
        },
        topics: Topics {
            bootstrap: running.bootstrap.clone(),
            registry: running.registry_url.clone(),
            registry_auth: Some(running.registry_auth.clone()),
            kafka: Vec::new(),
        },
        sink: postgres_sink::SINK.to_owned(),
        keep: false,
        json: false,
    })
    .context("habitat verify replay")?;
    report(
        "habitat verify replay",
        replay,
        if replay { "clean" } else { "differs" }.to_owned(),
    );
    // A program killed last may still be rejoining its group.
    let readiness = Readiness::of(running);
    let deadline = Instant::now() + RECOVERY;
    let down = loop {
        let down: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|target| !readiness.ready(target))
            .collect();
        if down.is_empty() || Instant::now() > deadline {
            break down;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    report(
        "every program running and ready",
        down.is_empty(),
        if down.is_empty() {
            "all".to_owned()
        } else {
            format!("not ready: {down:?}")
        },
    );
    Ok(all)
}
