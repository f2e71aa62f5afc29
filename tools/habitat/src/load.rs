//! A synthetic workload: T cooperatives × M members × C contributions, in the order a real
//! year arrives — policy, members and the period's opening; every contribution submitted
//! and then approved; the period closed with a surplus; later the stewards' approval of the
//! proposed set (its hash read back from Postgres) and the bank's results for the
//! distributions that fell due. Produced straight to the context topics, Avro-framed with the
//! registry's ids, keyed and partitioned as the REST proxy does.

use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use contracts::records::{
    AllocationSetApproved, ContributionApproved, ContributionKind, ContributionStatus,
    ContributionSubmitted, ContributionUnit, Event, InstallmentInterval, KindWeight,
    MemberRegistered, MemberStatus, Meta, PatronagePolicySet, PaymentSettled, PeriodClosed,
    PeriodOpened, PeriodStatus,
};
use habitat_runtime::{Codec, avro::AvroCodec, partition_for};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rust_decimal::Decimal;

use crate::kafka::{config, send};

/// The period every cooperative closes.
pub const PERIOD: &str = "2025";

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

/// Produces events as the REST proxy would, at most `rate` per second when given.
pub struct Poster {
    producer: BaseProducer,
    codec: AvroCodec,
    partitions: i32,
    rate: Option<f64>,
    started: Option<Instant>,
    /// When the next event may go, at `rate`.
    next: Option<Instant>,
    pub posted: usize,
}

impl Poster {
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
        Ok(Self {
            producer,
            codec,
            partitions,
            rate,
            started: None,
            next: None,
            posted: 0,
        })
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
        let key = event.key();
        let value = self.codec.encode(event.topic(), &event)?;
        send(
            &self.producer,
            BaseRecord::to(event.topic())
                .key(key.as_str())
                .payload(value.as_slice())
                .partition(partition_for(&key, self.partitions)),
        )?;
        self.posted += 1;
        Ok(())
    }

    /// Waits until every posted event is acknowledged.
    pub fn settle(&self) -> Result<()> {
        while self.producer.in_flight_count() > 0 {
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// The year up to the close: policies, members, openings, contributions (submitted, then
/// approved), closes. Tenants are interleaved, as many cooperatives post at once.
pub fn post_year(poster: &mut Poster, shape: Shape) -> Result<()> {
    let tenants: Vec<String> = (0..shape.tenants).map(|t| shape.tenant(t)).collect();
    let (starts_on, ends_on) = (date(2025, 1, 1), date(2025, 12, 31));
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
                period_id: PERIOD.to_owned(),
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
                let id = format!("c-{m:04}-{c:04}");
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
                    period_id: PERIOD.to_owned(),
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
                        period_id: PERIOD.to_owned(),
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
                period_id: PERIOD.to_owned(),
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

/// The stewards' approval of a proposed set.
pub fn approval(tenant: &str, set_hash: &str) -> Event {
    let approved_at: DateTime<Utc> = Utc::now() - TimeDelta::days(60);
    AllocationSetApproved {
        meta: meta(tenant, "agreements.AllocationSetApproved"),
        period_id: PERIOD.to_owned(),
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
