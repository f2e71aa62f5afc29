//! A cooperative's year end to end: contributions and a period posted to the context
//! topics, patronage-aggregator and allocation-calculator running as processes, the seal,
//! the allocations and the approval read back and compared field by field, in cents.

use std::collections::BTreeMap;

use allocation_calculator::AllocationCalculator;
use chrono::{NaiveDate, TimeZone, Utc};
use contracts::records::{
    AllocationSetApproved, AllocationSetStatus, ContributionApproved, ContributionKind,
    ContributionStatus, ContributionUnit, Event, InstallmentInterval, KindWeight, Meta,
    PatronagePolicySet, PeriodClosed, PeriodOpened, PeriodStatus,
};
use end_to_end::{Running, TopicReader, post, runtime, stack};
use habitat_runtime::TestDriver;
use patronage_aggregator::PatronageAggregator;
use rust_decimal::Decimal;
use test_support::{
    records::{dec, rejected},
    unique,
};

fn cents(value: Decimal) -> i64 {
    let scaled = value * Decimal::ONE_HUNDRED;
    assert_eq!(scaled.fract(), Decimal::ZERO, "{value} is not whole cents");
    i64::try_from(scaled.trunc().mantissa() / 10_i128.pow(scaled.trunc().scale())).expect("fits")
}

struct Year {
    tenant: String,
    n: u32,
    events: Vec<Event>,
}

impl Year {
    fn meta(&mut self, event_type: &str) -> Meta {
        self.n += 1;
        Meta {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            tenant_id: self.tenant.clone(),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
                .single()
                .expect("valid")
                + chrono::TimeDelta::minutes(i64::from(self.n)),
            producer: "rest:e2e".to_owned(),
            actor: Some("steward:ana".to_owned()),
            correlation_id: "year-2026".to_owned(),
            causation_id: None,
        }
    }

    fn contribution(
        &mut self,
        id: &str,
        member: &str,
        kind: ContributionKind,
        value: &str,
        status: ContributionStatus,
    ) {
        let event_type = if status == ContributionStatus::Rejected {
            "people.ContributionRejected"
        } else {
            "people.ContributionApproved"
        };
        let meta = self.meta(event_type);
        let at = meta.occurred_at;
        let fields = (
            id.to_owned(),
            member.to_owned(),
            "2026".to_owned(),
            kind,
            dec("1"),
            ContributionUnit::Hours,
            dec(value),
            "work".to_owned(),
            status,
            member.to_owned(),
            at,
            Some("steward:ana".to_owned()),
            Some(at),
        );
        let approved = ContributionApproved {
            meta,
            contribution_id: fields.0,
            member_id: fields.1,
            period_id: fields.2,
            kind: fields.3,
            quantity: fields.4,
            unit: fields.5,
            value: fields.6,
            description: fields.7,
            status: fields.8,
            submitted_by: fields.9,
            submitted_at: fields.10,
            reviewed_by: fields.11,
            reviewed_at: fields.12,
            rejection_reason: None,
        };
        let event: Event = if status == ContributionStatus::Rejected {
            rejected(approved, "reversed").into()
        } else {
            approved.into()
        };
        self.events.push(event);
    }

    fn period(&mut self, closed_with: Option<&str>) {
        let (starts_on, ends_on) = (
            NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid"),
            NaiveDate::from_ymd_opt(2026, 12, 31).expect("valid"),
        );
        let event: Event = match closed_with {
            None => PeriodOpened {
                meta: self.meta("treasury.PeriodOpened"),
                period_id: "2026".to_owned(),
                starts_on,
                ends_on,
                status: PeriodStatus::Open,
                currency: "USD".to_owned(),
                net_surplus: None,
                closed_by: None,
            }
            .into(),
            Some(surplus) => PeriodClosed {
                meta: self.meta("treasury.PeriodClosed"),
                period_id: "2026".to_owned(),
                starts_on,
                ends_on,
                status: PeriodStatus::Closed,
                currency: "USD".to_owned(),
                net_surplus: dec(surplus),
                closed_by: "steward:ana".to_owned(),
            }
            .into(),
        };
        self.events.push(event);
    }

    fn policy(&mut self) {
        let event = PatronagePolicySet {
            meta: self.meta("treasury.PatronagePolicySet"),
            weights: vec![
                KindWeight {
                    kind: ContributionKind::Labor,
                    weight: dec("1.0"),
                },
                KindWeight {
                    kind: ContributionKind::Expertise,
                    weight: dec("1.5"),
                },
            ],
            cash_ratio: dec("0.3"),
            installments: 2,
            installment_interval: InstallmentInterval::Monthly,
            first_payment_offset_days: 30,
            effective_from: None,
            time_zone: None,
        };
        self.events.push(event.into());
    }
}

/// The year both tests run: a policy, contributions (one corrected, one reversed), a close.
fn year_2026(tenant: &str) -> Year {
    use ContributionKind::{Expertise, Labor};
    use ContributionStatus::{Approved, Rejected};
    let mut year = Year {
        tenant: tenant.to_owned(),
        n: 0,
        events: Vec::new(),
    };
    year.period(None);
    year.policy();
    year.contribution("c1", "m-1", Labor, "100.00", Approved);
    year.contribution("c2", "m-2", Expertise, "40.00", Approved);
    year.contribution("c3", "m-3", Labor, "60.00", Approved);
    year.contribution("c1", "m-1", Labor, "120.00", Approved); // corrected
    year.contribution("c4", "m-3", Labor, "500.00", Approved);
    year.contribution("c4", "m-3", Labor, "500.00", Rejected); // reversed
    year.period(Some("1000.01"));
    year
}

/// Seals, proposals and approvals of a log, run through both processors in memory, with
/// the ids of their `meta` blanked (event ids are new on every run).
fn outcomes(log: &[Event]) -> Vec<Event> {
    let mut aggregator = TestDriver::new(PatronageAggregator);
    for event in log {
        aggregator
            .pipe(event.topic(), &event.key(), event.clone())
            .expect("processed");
    }
    let mut calculator = TestDriver::new(AllocationCalculator);
    let mut outcomes = Vec::new();
    for event in aggregator.take_values() {
        if let Event::PeriodPatronageSealed(_) = &event {
            calculator
                .pipe(event.topic(), &event.key(), event.clone())
                .expect("processed");
            outcomes.push(event);
        }
    }
    let proposed = calculator.take_values();
    let hash = proposed.iter().find_map(|e| match e {
        Event::AllocationSetProposed(s) => Some(s.set_hash.clone()),
        _ => None,
    });
    outcomes.extend(proposed);
    if let Some(hash) = hash {
        let mut year = Year {
            tenant: log[0].meta().tenant_id.clone(),
            n: 100,
            events: Vec::new(),
        };
        let approval: Event = AllocationSetApproved {
            meta: Meta {
                // The same decision in both runs.
                event_id: "decision-2026".to_owned(),
                ..year.meta("agreements.AllocationSetApproved")
            },
            period_id: "2026".to_owned(),
            set_hash: hash,
            approved_by: "board".to_owned(),
            approved_at: Utc
                .with_ymd_and_hms(2027, 1, 20, 0, 0, 0)
                .single()
                .expect("valid"),
        }
        .into();
        calculator
            .pipe(approval.topic(), &approval.key(), approval)
            .expect("processed");
        outcomes.extend(calculator.take_values());
    }
    outcomes.into_iter().map(blank_ids).collect()
}

fn blank_ids(event: Event) -> Event {
    use apache_avro::types::Value;
    let mut value = event.to_value().expect("encodes");
    if let Value::Record(fields) = &mut value
        && let Some((_, Value::Record(meta))) = fields.iter_mut().find(|(name, _)| name == "meta")
    {
        for (name, field) in meta.iter_mut() {
            if name == "event_id" || name == "correlation_id" {
                *field = Value::String(String::new());
            }
            if name == "causation_id" {
                *field = Value::Union(0, Box::new(Value::Null));
            }
        }
    }
    Event::from_value(event.full_name(), value).expect("decodes")
}

#[test]
fn the_compacted_log_gives_the_same_seals_allocations_and_approvals() {
    let full = year_2026("coop-compaction").events;
    // Compaction keeps the last record of every key, in log order.
    let last_of: BTreeMap<String, usize> =
        full.iter().enumerate().map(|(i, e)| (e.key(), i)).collect();
    let compacted: Vec<Event> = full
        .iter()
        .enumerate()
        .filter(|(i, e)| last_of[&e.key()] == *i)
        .map(|(_, e)| e.clone())
        .collect();
    assert!(
        compacted.len() < full.len(),
        "the year writes some keys more than once"
    );
    let from_full = outcomes(&full);
    assert!(
        from_full
            .iter()
            .any(|e| matches!(e, Event::AllocationApproved(_)))
    );
    assert_eq!(outcomes(&compacted), from_full);
}

#[test]
fn a_year_posted_to_the_context_topics_is_sealed_allocated_and_approved() {
    let rt = runtime();
    let (registry, codec) = stack(&rt);
    let _aggregator = Running::start("patronage-aggregator", &registry, &[]);
    let _calculator = Running::start("allocation-calculator", &registry, &[]);

    let mut year = year_2026(&unique("coop"));
    let tenant = year.tenant.clone();
    let mut agreements = TopicReader::new("habitat.agreements");
    // The year up to its close, then the close once every tally is out: the test does not
    // depend on how long the merge waits for an input that is slow to arrive.
    let (close, before) = year.events.split_last().expect("a year");
    post(&codec, before);
    agreements.until(&codec, &tenant, "six tally changes", |events| {
        let tallies = events
            .iter()
            .filter(|e| matches!(e, Event::PatronageTallied(_)));
        (tallies.count() == 6).then_some(())
    });
    post(&codec, std::slice::from_ref(close));
    let hash = agreements.until(&codec, &tenant, "the proposed set", |events| {
        events.iter().find_map(|e| match e {
            Event::AllocationSetProposed(s) => Some(s.set_hash.clone()),
            _ => None,
        })
    });

    // W: m-1 120.00, m-2 40.00 × 1.5 = 60.00, m-3 60.00; T = 240. Shares of 1000.01:
    // 500.005, 250.0025, 250.0025 → 500.00 + 250.00 + 250.00, the cent to m-1 (largest remainder).
    let seal = agreements.events.iter().find_map(|e| match e {
        Event::PeriodPatronageSealed(s) => Some(s.clone()),
        _ => None,
    });
    let seal = seal.expect("the seal precedes the set");
    let weighted: BTreeMap<String, Decimal> = seal
        .members
        .iter()
        .map(|m| (m.member_id.clone(), m.weighted))
        .collect();
    assert_eq!(
        weighted,
        BTreeMap::from([
            ("m-1".into(), dec("120")),
            ("m-2".into(), dec("60")),
            ("m-3".into(), dec("60"))
        ])
    );
    assert_eq!(cents(seal.net_surplus), 100_001);
    assert_eq!(seal.cash_ratio, dec("0.3"));

    let approval = AllocationSetApproved {
        meta: year.meta("agreements.AllocationSetApproved"),
        period_id: "2026".to_owned(),
        set_hash: hash.clone(),
        approved_by: "board:2027-01".to_owned(),
        approved_at: Utc::now(),
    };
    post(&codec, &[approval.into()]);
    let approved = agreements.until(&codec, &tenant, "the approval", |events| {
        events.iter().any(|e| matches!(e, Event::AllocationSetStatusChanged(s) if s.status == AllocationSetStatus::Approved)).then(|| {
            let mut rows: Vec<(String, i64, i64, i64)> = events
                .iter()
                .filter_map(|e| match e {
                    Event::AllocationApproved(a) => Some((a.member_id.clone(), cents(a.amount), cents(a.cash), cents(a.retained))),
                    _ => None,
                })
                .collect();
            rows.sort();
            rows
        })
    });
    // cash = ceil(amount × 0.3): 150.003 → 150.01; 75.00; 75.00.
    assert_eq!(
        approved,
        [
            ("m-1".to_owned(), 50_001, 15_001, 35_000),
            ("m-2".to_owned(), 25_000, 7_500, 17_500),
            ("m-3".to_owned(), 25_000, 7_500, 17_500),
        ]
    );
    let mut proposals: Vec<(String, i64, i64, i64)> = agreements
        .events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationProposed(a) => Some((
                a.member_id.clone(),
                cents(a.amount),
                cents(a.cash),
                cents(a.retained),
            )),
            _ => None,
        })
        .collect();
    proposals.sort();
    assert_eq!(
        proposals, approved,
        "proposed exactly once each, as approved"
    );
    let tallies = agreements
        .events
        .iter()
        .filter(|e| matches!(e, Event::PatronageTallied(_)))
        .count();
    // c1, c2, c3, c1 corrected, c4 approved, c4 reversed: six tally changes, once each.
    assert_eq!(tallies, 6);
}
