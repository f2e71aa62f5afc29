//! The demo on the running stack: a cooperative's year posted through the REST proxy, the
//! processors and the sink doing their work, and the finance reports it ends in.
//!
//! The year of `demo-coop` (period 2025): four members; contributions, one corrected and one
//! rejected; the patronage policy; the period opened and closed with a surplus of
//! 10,000.00; a contribution changed after the close; the stewards' approval of the
//! proposed allocation set by its hash; the cash distributions falling due and their
//! payment results, one a failure; a member loan and three of its repayments. Every post
//! carries an `Idempotency-Key`, so running the demo again writes nothing twice.

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use postgres_sink::report;
use rest_proxy::keys::{self, ANY};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::stack::Running;

/// The demo's tenant.
pub const TENANT: &str = "demo-coop";
/// The demo's period.
pub const PERIOD: &str = "2025";
const WAIT: Duration = Duration::from_secs(180);

/// The API key the demo posts with, made once and kept in the state directory (so a rerun
/// repeats its `Idempotency-Key`s under the same key).
async fn api_key(stack: &Running) -> Result<String> {
    let file = stack.state_dir.join("demo-api-key");
    let pool = keys::connect(&stack.database_url)
        .await
        .context("the REST proxy's key store")?;
    if let Ok(token) = std::fs::read_to_string(&file) {
        let token = token.trim().to_owned();
        let id = token.split('_').nth(1).unwrap_or_default();
        if keys::list(&pool)
            .await?
            .iter()
            .any(|k| k.id == id && k.revoked_at.is_none())
        {
            return Ok(token);
        }
    }
    let name = format!("demo-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let (_, token) = keys::create(&pool, &name, &[TENANT.to_owned()], &[ANY.to_owned()]).await?;
    write_private(&file, &token)?;
    println!(
        "Created API key {name} for tenant {TENANT} (kept in {}).",
        file.display()
    );
    Ok(token)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Posts one cooperative's events through the proxy.
pub struct Poster {
    client: reqwest::Client,
    url: String,
    token: String,
    tenant: String,
    posted: usize,
    /// Also retry a post the proxy could not be reached for, or answered 5xx (the same
    /// `Idempotency-Key`: nothing is written twice) — for runs that kill the proxy.
    patient: bool,
    /// The event ids of the posts answered 202.
    pub accepted: Vec<String>,
}

impl Poster {
    /// A poster for `tenant` through the stack's proxy with `token`.
    pub fn new(stack: &Running, tenant: &str, token: String, patient: bool) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: stack.proxy_url.clone(),
            token,
            tenant: tenant.to_owned(),
            posted: 0,
            patient,
            accepted: Vec::new(),
        }
    }

    /// Posts one event (`step` names it for its `Idempotency-Key`); a 503 is retried.
    async fn post(&mut self, step: &str, event_type: &str, payload: Value) -> Result<Value> {
        let tenant = self.tenant.clone();
        let body = json!({"event_type": event_type, "tenant_id": tenant,
                          "actor": "steward:demo", "correlation_id": format!("year-{PERIOD}"),
                          "payload": payload});
        let started = Instant::now();
        loop {
            let sent = self
                .client
                .post(format!("{}/v1/events", self.url))
                .bearer_auth(&self.token)
                .header("idempotency-key", format!("demo:{tenant}:{step}"))
                .timeout(Duration::from_secs(60))
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(_) if self.patient && started.elapsed() < WAIT => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("post {event_type} to {}", self.url));
                }
            };
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                202 => {
                    self.posted += 1;
                    if let Some(id) = answer["event_id"].as_str() {
                        self.accepted.push(id.to_owned());
                    }
                    return Ok(answer);
                }
                503 if started.elapsed() < WAIT => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                409 | 500..=599 if self.patient && started.elapsed() < WAIT => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ => bail!("{event_type} ({step}) was refused with {status}: {answer}"),
            }
        }
    }
}

/// Polls `check` until it gives a value, printing what is awaited.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let mut told = false;
    loop {
        // Postgres restarting (an outage, a chaos run) is waited out like the stage itself.
        let found = match check().await {
            Ok(found) => found,
            Err(error) if habitat_runtime::retry::has_transient_database_cause(&error) => None,
            Err(error) => return Err(error),
        };
        if let Some(found) = found {
            if told {
                println!("  … done in {:.1} s", started.elapsed().as_secs_f64());
            }
            return Ok(found);
        }
        if !told {
            println!("Waiting for {what}…");
            told = true;
        }
        if started.elapsed() > WAIT {
            bail!("{what}: not there after {WAIT:?}; see the logs in the state directory");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn contribution(id: &str, member: &str, kind: &str, value: &str, status: &str) -> Value {
    let mut payload = json!({"contribution_id": id, "member_id": member, "period_id": PERIOD,
        "kind": kind, "quantity": "1", "unit": "HOURS", "value": value,
        "description": "work for the cooperative", "status": status,
        "submitted_by": format!("member:{member}"), "submitted_at": "2025-06-02T09:00:00Z",
        "reviewed_by": "steward:demo", "reviewed_at": "2025-06-03T10:00:00Z"});
    if status == "REJECTED" {
        payload["rejection_reason"] = json!("not cooperative work");
    }
    payload
}

/// Payment ids, amounts and statuses of a purpose, by due date.
async fn payments(
    pool: &PgPool,
    tenant: &str,
    purpose: &str,
) -> Result<Vec<(String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT payment_id, member_id, status FROM payments
          WHERE tenant_id = $1 AND purpose = $2 ORDER BY member_id, due_on, payment_id",
    )
    .bind(tenant)
    .bind(purpose)
    .fetch_all(pool)
    .await?)
}

/// Posts a cooperative's year with `proxy` and waits for each stage's outcome in Postgres.
pub async fn year(proxy: &mut Poster, pool: &PgPool) -> Result<usize> {
    let tenant = proxy.tenant.clone();
    let tenant = tenant.as_str();
    println!(
        "Posting {tenant}'s year {PERIOD} through the REST proxy at {}.",
        proxy.url
    );
    for (id, name) in [
        ("m-ana", "Ana"),
        ("m-ben", "Ben"),
        ("m-cleo", "Cleo"),
        ("m-dev", "Dev"),
    ] {
        _ = proxy
            .post(
                &format!("member-{id}"),
                "people.MemberRegistered",
                json!({"member_id": id, "display_name": name, "joined_on": "2024-03-01",
                       "status": "ACTIVE"}),
            )
            .await?;
    }
    _ = proxy
        .post(
            "policy",
            "treasury.PatronagePolicySet",
            json!({"weights": [{"kind": "LABOR", "weight": "1.0"},
                               {"kind": "EXPERTISE", "weight": "1.5"},
                               {"kind": "CAPITAL", "weight": "1.0"},
                               {"kind": "RELATIONSHIP", "weight": "0.5"}],
                   "cash_ratio": "0.30", "installments": 2,
                   "installment_interval": "MONTHLY", "first_payment_offset_days": 30}),
        )
        .await?;
    let period = |status: &str, surplus: Option<&str>| {
        json!({"period_id": PERIOD, "starts_on": "2025-01-01", "ends_on": "2025-12-31",
               "status": status, "currency": "USD", "net_surplus": surplus,
               "closed_by": surplus.map(|_| "steward:demo")})
    };
    _ = proxy
        .post("period-open", "treasury.PeriodOpened", period("OPEN", None))
        .await?;
    let contributions = [
        ("c-1", "m-ana", "LABOR", "1200.00", "APPROVED"),
        ("c-2", "m-ben", "EXPERTISE", "800.00", "APPROVED"),
        ("c-3", "m-cleo", "LABOR", "600.00", "APPROVED"),
        ("c-4", "m-dev", "RELATIONSHIP", "400.00", "APPROVED"),
        ("c-1", "m-ana", "LABOR", "1250.00", "APPROVED"), // corrected
        ("c-5", "m-dev", "LABOR", "300.00", "REJECTED"),
    ];
    for (n, (id, member, kind, value, status)) in contributions.into_iter().enumerate() {
        let event_type = if status == "REJECTED" {
            "people.ContributionRejected"
        } else {
            "people.ContributionApproved"
        };
        _ = proxy
            .post(
                &format!("contribution-{n}"),
                event_type,
                contribution(id, member, kind, value, status),
            )
            .await?;
    }
    wait_for("the patronage tallies", || async {
        let weighted: Option<(i64,)> = sqlx::query_as(
            "SELECT count(*) FROM patronage_tallies WHERE tenant_id = $1 AND period_id = $2",
        )
        .bind(tenant)
        .bind(PERIOD)
        .fetch_optional(pool)
        .await?;
        Ok(weighted.filter(|(n,)| *n == 4).map(|_| ()))
    })
    .await?;
    _ = proxy
        .post(
            "period-close",
            "treasury.PeriodClosed",
            period("CLOSED", Some("10000.00")),
        )
        .await?;
    let hash = wait_for("the proposed allocation set", || async {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT set_hash FROM allocation_sets WHERE tenant_id = $1 AND period_id = $2",
        )
        .bind(tenant)
        .bind(PERIOD)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(hash,)| hash))
    })
    .await?;
    println!("Proposed allocation set {PERIOD}: hash {hash}.");
    // After the close: reported as a late change, the seal stays as it is.
    _ = proxy
        .post(
            "late-contribution",
            "people.ContributionApproved",
            contribution("c-6", "m-cleo", "LABOR", "50.00", "APPROVED"),
        )
        .await?;
    _ = proxy
        .post(
            "approval",
            "agreements.AllocationSetApproved",
            json!({"period_id": PERIOD, "set_hash": hash, "approved_by": "board:2026-01",
                   "approved_at": "2026-01-20T17:00:00Z"}),
        )
        .await?;
    _ = proxy
        .post(
            "loan",
            "agreements.LoanFunded",
            json!({"loan_id": "loan-1", "member_id": "m-ben", "principal": "5000.00",
                   "annual_rate": "0.06", "term_months": 12, "frequency": "MONTHLY",
                   "method": "AMORTIZED", "funded_on": "2026-01-15", "currency": "USD"}),
        )
        .await?;

    // The distributions fall due 30 days after the approval and a month later, the loan's
    // repayments monthly from February 2026: all before today, so every timer fires.
    let distribution = wait_for("the distribution payments to fall due", || async {
        let found = payments(pool, tenant, "DISTRIBUTION").await?;
        Ok((found.len() == 8 && found.iter().all(|(_, _, s)| s != "SCHEDULED")).then_some(found))
    })
    .await?;
    for (n, (payment, member, _)) in distribution.iter().enumerate() {
        if member == "m-dev" && n % 2 == 0 {
            _ = proxy
                .post(
                    &format!("result-{payment}"),
                    "treasury.PaymentFailed",
                    json!({"payment_id": payment, "failed_at": "2026-02-20T08:00:00Z",
                           "reason": "account closed"}),
                )
                .await?;
        } else {
            _ = proxy
                .post(
                    &format!("result-{payment}"),
                    "treasury.PaymentSettled",
                    json!({"payment_id": payment, "settled_at": "2026-02-20T08:00:00Z",
                           "method": "ACH", "external_ref": format!("ach-{payment}")}),
                )
                .await?;
        }
    }
    let loan = wait_for("the loan's first repayments to fall due", || async {
        let found = payments(pool, tenant, "LOAN_REPAYMENT").await?;
        let due: Vec<String> = found
            .iter()
            .filter(|(_, _, s)| s != "SCHEDULED")
            .map(|(p, _, _)| p.clone())
            .collect();
        Ok((found.len() == 12 && due.len() >= 3).then_some(due))
    })
    .await?;
    for payment in loan.iter().take(3) {
        _ = proxy
            .post(
                &format!("result-{payment}"),
                "treasury.PaymentSettled",
                json!({"payment_id": payment, "settled_at": "2026-03-01T08:00:00Z",
                       "method": "ACH", "external_ref": format!("ach-{payment}")}),
            )
            .await?;
    }
    Ok(proxy.posted)
}

/// The columns of the period allocation report the demo prints.
pub const ALLOCATION_COLUMNS: [&str; 7] = [
    "member_id",
    "weighted_patronage",
    "amount",
    "cash",
    "retained",
    "allocation_status",
    "set_status",
];

/// Ledger transactions the year ends with: 4 allocations, 7 settled distribution payments,
/// the loan and 3 repayments.
pub const LEDGER_TRANSACTIONS: i64 = 15;

/// Waits until the sink has written every ledger transaction of `tenant`'s year.
pub async fn settled(pool: &PgPool, tenant: &str) -> Result<()> {
    let last = std::sync::atomic::AtomicI64::new(-1);
    wait_for("the sink to write the ledger", || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM ledger_transactions WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(pool)
                .await?;
        if last.swap(n, std::sync::atomic::Ordering::Relaxed) != n {
            println!("  ledger transactions written: {n} of {LEDGER_TRANSACTIONS}");
        }
        Ok((n >= LEDGER_TRANSACTIONS).then_some(()))
    })
    .await
}

async fn print_report(pool: &PgPool, name: &str, columns: &[&str]) -> Result<()> {
    let found = report::find(name)?;
    let filter = report::Filter {
        tenant: Some(TENANT.to_owned()),
        period: found.period.map(|_| PERIOD.to_owned()),
        ..report::Filter::default()
    };
    let table = report::run(pool, found, &filter).await?;
    println!("\n{} — {}\n", found.name, found.about);
    print!("{}", table.to_text(columns));
    Ok(())
}

/// Runs the year on the stack and prints the period allocation report and the trial
/// balance.
pub fn run(stack: &Running) -> Result<()> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(postgres_sink::store::options(
                &stack.database_url,
                postgres_sink::DEFAULT_SCHEMA,
            )?)
            .await
            .context("the sink's database")?;
        wait_for("the sink's tables", || async {
            let (ready,): (bool,) =
                sqlx::query_as("SELECT to_regclass('ledger_transactions') IS NOT NULL")
                    .fetch_one(&pool)
                    .await?;
            Ok(ready.then_some(()))
        })
        .await?;
        let mut proxy = Poster::new(stack, TENANT, api_key(stack).await?, false);
        let posted = year(&mut proxy, &pool).await?;
        println!("Posted {posted} events (a rerun posts them again under the same Idempotency-Keys: nothing is written twice).");
        settled(&pool, TENANT).await?;
        print_report(&pool, "period-allocation", &ALLOCATION_COLUMNS)
        .await?;
        print_report(
            &pool,
            "trial-balance",
            &["account", "account_name", "debit", "credit", "balance"],
        )
        .await?;
        Ok::<_, anyhow::Error>(())
    })?;
    println!(
        "\nThe year took {:.1} s. More: `habitat report <name> --tenant {TENANT}` (period-allocation, member-statement, trial-balance, payments-due, 1099-patr, exceptions), `habitat verify replay`.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
