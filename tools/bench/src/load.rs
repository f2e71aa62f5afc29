//! A synthetic workload: T cooperatives × M members × C contributions, in the order a real
//! year arrives — policy, members and the period's opening; every contribution submitted
//! and then approved; the period closed with a surplus; later the stewards' approval of the
//! proposed set (its hash read back from Postgres) and the bank's results for the
//! distributions that fell due. Produced straight to the context topics, Avro-framed with the
//! registry's ids, keyed and partitioned as the REST proxy does — or posted to the REST
//! proxy itself, in batches.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use contracts::records::{
    AllocationSetApproved, ContributionApproved, ContributionKind, ContributionStatus,
    ContributionSubmitted, ContributionUnit, Event, InstallmentInterval, KindWeight,
    MemberRegistered, MemberStatus, Meta, PatronagePolicySet, PaymentSettled, PeriodClosed,
    PeriodOpened, PeriodStatus,
};
use habitat_runtime::{Codec, avro::AvroCodec, partition_for};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rust_decimal::Decimal;

use habitat::{
    kafka::{config, send},
    progress::Progress,
};

/// The size of the workload.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The cooperatives' ids start with it.
    pub prefix: &'static str,
    pub tenants: usize,
    pub members: usize,
    pub contributions: usize,
}

impl Shape {
    pub fn tenant(&self, t: usize) -> String {
        format!("{}-{t:04}", self.prefix)
    }

    /// Records of the first phase (everything up to the close).
    pub fn year_events(&self) -> usize {
        self.tenants * (3 + self.members + 2 * self.members * self.contributions)
    }
}

fn meta(tenant: &str, event_type: &str) -> Meta {
    let event_id = uuid::Uuid::now_v7().to_string();
    Meta {
        event_id: event_id.clone(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        tenant_id: tenant.to_owned(),
        occurred_at: Utc::now(),
        producer: "rest:bench".to_owned(),
        actor: Some("steward:bench".to_owned()),
        // Every record derived from this one carries its id: the end-to-end latency of
        // a derived row is measured from here.
        correlation_id: event_id,
        causation_id: None,
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

/// Posts events — produced as the REST proxy would, or through the proxy — at most `rate`
/// per second when given.
pub struct Poster {
    route: Route,
    rate: Option<f64>,
    started: Option<Instant>,
    /// When the next event may go, at `rate`.
    next: Option<Instant>,
    pub posted: usize,
    /// Shown while a phase posts (`track`).
    progress: Option<(Progress, usize)>,
}

/// Where the events go.
enum Route {
    /// Straight to the context topics.
    Topics {
        producer: BaseProducer,
        codec: Box<AvroCodec>,
        partitions: i32,
    },
    /// To the REST proxy's `/v1/events:batch`.
    Proxy(ProxyClients),
    /// Kept in memory, for a run without a broker (`collected`).
    Memory(Vec<Event>),
}

impl Poster {
    /// Produces straight to the context topics.
    pub fn new(
        bootstrap: &str,
        codec: AvroCodec,
        partitions: i32,
        rate: Option<f64>,
    ) -> Result<Self> {
        let producer = config(bootstrap)
            .set("enable.idempotence", "true")
            // librdkafka's default: producers that post a few events per millisecond send a
            // request per partition every 5 ms, not one per event.
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        Ok(Self::with_route(
            Route::Topics {
                producer,
                codec: Box::new(codec),
                partitions,
            },
            rate,
        ))
    }

    /// Posts to the REST proxy at `base_url` with `token`: `clients` connections, each
    /// posting batches of up to [`PROXY_BATCH`] events of its own cooperatives in order.
    pub fn via_proxy(
        base_url: &str,
        token: &str,
        clients: usize,
        handle: &tokio::runtime::Handle,
        rate: Option<f64>,
    ) -> Result<Self> {
        Ok(Self::with_route(
            Route::Proxy(ProxyClients::start(base_url, token, clients, handle)?),
            rate,
        ))
    }

    /// Keeps the events in memory; `collected` takes them.
    pub fn in_memory() -> Self {
        Self::with_route(Route::Memory(Vec::new()), None)
    }

    /// The events kept so far by an in-memory poster, in order.
    pub fn collected(&mut self) -> Vec<Event> {
        match &mut self.route {
            Route::Memory(events) => std::mem::take(events),
            _ => Vec::new(),
        }
    }

    fn with_route(route: Route, rate: Option<f64>) -> Self {
        Self {
            route,
            rate,
            started: None,
            next: None,
            posted: 0,
            progress: None,
        }
    }

    /// Shows the next `events` posts as `what`'s progress; `finish` ends it.
    pub fn track(&mut self, what: &str, events: usize) {
        self.progress = Some((
            Progress::counted(what, events as u64, "events posted"),
            self.posted,
        ));
    }

    /// Ends the progress `track` started.
    pub fn finish(&mut self) {
        if let Some((progress, _)) = self.progress.take() {
            progress.finish("done");
        }
    }

    pub fn post(&mut self, event: Event) -> Result<()> {
        let now = Instant::now();
        _ = self.started.get_or_insert(now);
        if let Some(rate) = self.rate {
            // Paced from the last event, catching up at most 10 ms: after a pause (waiting
            // for Postgres between phases) the next events go at the rate, not in a burst.
            let floor = now.checked_sub(Duration::from_millis(10)).unwrap_or(now);
            let next = self.next.map_or(now, |next| next.max(floor));
            // Sleep in steps of a millisecond or more: a producer posting a few events per
            // millisecond, not one syscall per event.
            if next > now + Duration::from_millis(1) {
                std::thread::sleep(next - now);
            }
            self.next = Some(next + Duration::from_secs_f64(1.0 / rate));
        }
        match &mut self.route {
            Route::Topics {
                producer,
                codec,
                partitions,
            } => {
                let key = event.key();
                let value = codec.encode(event.topic(), &event)?;
                send(
                    producer,
                    BaseRecord::to(event.topic())
                        .key(key.as_str())
                        .payload(value.as_slice())
                        .partition(partition_for(&key, *partitions)),
                )?;
            }
            Route::Proxy(clients) => clients.post(&event)?,
            Route::Memory(events) => events.push(event),
        }
        self.posted += 1;
        if let Some((progress, from)) = &mut self.progress {
            progress.set((self.posted - *from) as u64);
        }
        Ok(())
    }

    /// Waits until every posted event is acknowledged (or, through the proxy, answered).
    pub fn settle(&mut self) -> Result<()> {
        match &mut self.route {
            Route::Topics { producer, .. } => {
                habitat_runtime::waits::settle(producer, Duration::from_secs(60))
                    .map_err(|left| anyhow::anyhow!("{left} events not acknowledged within 60 s"))
            }
            Route::Proxy(clients) => clients.settle(),
            Route::Memory(_) => Ok(()),
        }
    }
}

/// Events per request to the proxy.
pub const PROXY_BATCH: usize = 100;

/// A batch is sent once its first event has waited this long, full or not.
const PROXY_LINGER: Duration = Duration::from_millis(5);

enum ToClient {
    Batch(Vec<serde_json::Value>),
    /// Answered once every batch sent before it is answered.
    Settle(tokio::sync::oneshot::Sender<()>),
}

/// Connections to the proxy, each with the events of its cooperatives waiting to go: a
/// cooperative's events always go through the same connection, one request at a time, so
/// they reach their partition in the order they were posted.
struct ProxyClients {
    senders: Vec<tokio::sync::mpsc::Sender<ToClient>>,
    open: Vec<(Vec<serde_json::Value>, Option<Instant>)>,
    failure: Arc<Mutex<Option<String>>>,
}

impl ProxyClients {
    fn start(
        base_url: &str,
        token: &str,
        clients: usize,
        handle: &tokio::runtime::Handle,
    ) -> Result<Self> {
        let failure = Arc::new(Mutex::new(None));
        let mut senders = Vec::new();
        for _ in 0..clients.max(1) {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<ToClient>(4);
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let url = format!("{base_url}/v1/events:batch");
            let token = token.to_owned();
            let failure = failure.clone();
            drop(handle.spawn(async move {
                while let Some(message) = rx.recv().await {
                    match message {
                        ToClient::Batch(events) => {
                            if let Err(error) = post_batch(&client, &url, &token, events).await {
                                *failure.lock().expect("failure lock") = Some(error.to_string());
                            }
                        }
                        ToClient::Settle(done) => _ = done.send(()),
                    }
                }
            }));
            senders.push(tx);
        }
        let open = senders.iter().map(|_| (Vec::new(), None)).collect();
        Ok(Self {
            senders,
            open,
            failure,
        })
    }

    fn check(&self) -> Result<()> {
        match self.failure.lock().expect("failure lock").take() {
            Some(failure) => bail!("the REST proxy refused a batch: {failure}"),
            None => Ok(()),
        }
    }

    fn post(&mut self, event: &Event) -> Result<()> {
        self.check()?;
        let meta = event.meta();
        // The tenant's connection, chosen as its partition is.
        let client = usize::try_from(partition_for(
            &meta.tenant_id,
            i32::try_from(self.senders.len())?,
        ))?;
        let payload = contracts::payload::payload_value(event)?;
        let (events, opened) = &mut self.open[client];
        events.push(serde_json::json!({
            "event_type": meta.event_type,
            "tenant_id": meta.tenant_id,
            "actor": meta.actor,
            "payload": payload,
        }));
        _ = opened.get_or_insert_with(Instant::now);
        if events.len() >= PROXY_BATCH {
            self.send(client)?;
        }
        for lingering in 0..self.open.len() {
            if self.open[lingering]
                .1
                .is_some_and(|opened| opened.elapsed() >= PROXY_LINGER)
            {
                self.send(lingering)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, client: usize) -> Result<()> {
        let (events, opened) = &mut self.open[client];
        *opened = None;
        if events.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(events);
        if self.senders[client]
            .blocking_send(ToClient::Batch(batch))
            .is_err()
        {
            bail!("a connection to the REST proxy stopped");
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        for client in 0..self.senders.len() {
            self.send(client)?;
        }
        for sender in &self.senders {
            let (done, answered) = tokio::sync::oneshot::channel();
            if sender.blocking_send(ToClient::Settle(done)).is_err()
                || answered.blocking_recv().is_err()
            {
                bail!("a connection to the REST proxy stopped");
            }
        }
        self.check()
    }
}

async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    events: Vec<serde_json::Value>,
) -> Result<()> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await?;
    let status = response.status();
    if status.as_u16() != 202 {
        bail!("{url} answered {status}: {}", response.text().await?);
    }
    Ok(())
}

/// The fiscal year `year` (period id: the year) up to the close: policies, members,
/// openings, contributions (submitted, then approved), closes. Tenants are interleaved, as
/// many cooperatives post at once.
pub fn post_period(poster: &mut Poster, shape: Shape, year: i32) -> Result<()> {
    let period = year.to_string();
    let tenants: Vec<String> = (0..shape.tenants).map(|t| shape.tenant(t)).collect();
    let (starts_on, ends_on) = (date(year, 1, 1), date(year, 12, 31));
    for tenant in &tenants {
        poster.post(
            PatronagePolicySet {
                meta: meta(tenant, "treasury.PatronagePolicySet"),
                weights: vec![
                    KindWeight {
                        kind: ContributionKind::Labor,
                        weight: Decimal::ONE,
                    },
                    KindWeight {
                        kind: ContributionKind::Expertise,
                        weight: Decimal::new(15, 1),
                    },
                ],
                cash_ratio: Decimal::new(3, 1),
                installments: 1,
                installment_interval: InstallmentInterval::Monthly,
                // Due on the approval's date: the bench's approvals are dated in the
                // past, so every installment falls due at once.
                first_payment_offset_days: 0,
                effective_from: None,
                time_zone: None,
            }
            .into(),
        )?;
        for m in 0..shape.members {
            poster.post(
                MemberRegistered {
                    meta: meta(tenant, "people.MemberRegistered"),
                    member_id: format!("m-{m:04}"),
                    display_name: format!("Member {m}"),
                    joined_on: date(2024, 1, 1),
                    status: MemberStatus::Active,
                    email: Some(format!("m-{m}@example.coop")),
                }
                .into(),
            )?;
        }
        poster.post(
            PeriodOpened {
                meta: meta(tenant, "treasury.PeriodOpened"),
                period_id: period.clone(),
                starts_on,
                ends_on,
                status: PeriodStatus::Open,
                currency: "USD".to_owned(),
                net_surplus: None,
                closed_by: None,
            }
            .into(),
        )?;
    }
    for c in 0..shape.contributions {
        for m in 0..shape.members {
            for tenant in &tenants {
                let member = format!("m-{m:04}");
                let id = format!("c-{year}-{m:04}-{c:04}");
                let kind = if c % 3 == 0 {
                    ContributionKind::Expertise
                } else {
                    ContributionKind::Labor
                };
                let value = Decimal::new(2_500 + ((m * 37 + c * 11) % 5_000) as i64, 2);
                let at = Utc::now();
                let submitted = ContributionSubmitted {
                    meta: meta(tenant, "people.ContributionSubmitted"),
                    contribution_id: id.clone(),
                    member_id: member.clone(),
                    period_id: period.clone(),
                    kind,
                    quantity: Decimal::new(40_000, 4),
                    unit: ContributionUnit::Hours,
                    value,
                    description: "hours of work".to_owned(),
                    status: ContributionStatus::Submitted,
                    submitted_by: format!("member:{member}"),
                    submitted_at: at,
                    reviewed_by: None,
                    reviewed_at: None,
                    rejection_reason: None,
                };
                poster.post(submitted.into())?;
                poster.post(
                    ContributionApproved {
                        meta: meta(tenant, "people.ContributionApproved"),
                        contribution_id: id,
                        member_id: member.clone(),
                        period_id: period.clone(),
                        kind,
                        quantity: Decimal::new(40_000, 4),
                        unit: ContributionUnit::Hours,
                        value,
                        description: "hours of work".to_owned(),
                        status: ContributionStatus::Approved,
                        submitted_by: format!("member:{member}"),
                        submitted_at: at,
                        reviewed_by: Some("steward:bench".to_owned()),
                        reviewed_at: Some(at),
                        rejection_reason: None,
                    }
                    .into(),
                )?;
            }
        }
    }
    for tenant in &tenants {
        poster.post(
            PeriodClosed {
                meta: meta(tenant, "treasury.PeriodClosed"),
                period_id: period.clone(),
                starts_on,
                ends_on,
                status: PeriodStatus::Closed,
                currency: "USD".to_owned(),
                net_surplus: Decimal::new(10_000_000, 2),
                closed_by: "steward:bench".to_owned(),
            }
            .into(),
        )?;
    }
    Ok(())
}

/// The stewards' approval of a period's proposed set.
pub fn approval_of(tenant: &str, period_id: &str, set_hash: &str) -> Event {
    let approved_at: DateTime<Utc> = Utc::now() - TimeDelta::days(60);
    AllocationSetApproved {
        meta: meta(tenant, "agreements.AllocationSetApproved"),
        period_id: period_id.to_owned(),
        set_hash: set_hash.to_owned(),
        approved_by: "steward:bench".to_owned(),
        approved_at,
    }
    .into()
}

/// The bank's settlement of a payment.
pub fn settlement(tenant: &str, payment_id: &str) -> Event {
    PaymentSettled {
        meta: meta(tenant, "treasury.PaymentSettled"),
        payment_id: payment_id.to_owned(),
        settled_at: Utc::now() - TimeDelta::days(30),
        method: "ACH".to_owned(),
        external_ref: format!("ach-{payment_id}"),
    }
    .into()
}
