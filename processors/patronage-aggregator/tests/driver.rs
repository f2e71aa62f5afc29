//! The aggregator's scenarios through the test driver.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use contracts::records::{
    ContributionApproved, ContributionKind, ContributionStatus, Event, InstallmentInterval,
    KindWeight, Meta, PatronagePolicySet, PeriodClosed, PeriodOpened, PeriodStatus,
};
use habitat_runtime::TestDriver;
use patronage_aggregator::PatronageAggregator;
use rust_decimal::Decimal;
use test_support::records::{self, rejected};

const TENANT: &str = "coop-a";

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

fn meta(event_type: &str, n: u32) -> Meta {
    Meta {
        event_id: format!("evt-{event_type}-{n}"),
        event_type: event_type.to_owned(),
        schema_version: 1,
        tenant_id: TENANT.to_owned(),
        occurred_at: at(n),
        producer: "rest:test".to_owned(),
        actor: Some("steward:ana".to_owned()),
        correlation_id: format!("corr-{n}"),
        causation_id: None,
    }
}

fn at(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid")
        + chrono::TimeDelta::minutes(i64::from(n))
}

/// A contribution record in a given state.
fn contribution(
    n: u32,
    id: &str,
    member: &str,
    period: &str,
    kind: ContributionKind,
    value: &str,
    status: ContributionStatus,
) -> Event {
    let approved = ContributionApproved {
        kind,
        status,
        reviewed_by: Some("steward:ana".to_owned()),
        ..records::approved(
            meta("people.ContributionApproved", n),
            id,
            member,
            period,
            value,
        )
    };
    if status == ContributionStatus::Rejected {
        rejected(approved, "reversed").into()
    } else {
        approved.into()
    }
}

fn opened(n: u32, period: &str) -> Event {
    PeriodOpened {
        meta: meta("treasury.PeriodOpened", n),
        period_id: period.to_owned(),
        starts_on: NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid"),
        ends_on: NaiveDate::from_ymd_opt(2026, 12, 31).expect("valid"),
        status: PeriodStatus::Open,
        currency: "USD".to_owned(),
        net_surplus: None,
        closed_by: None,
    }
    .into()
}

fn closed(n: u32, period: &str, surplus: &str) -> Event {
    PeriodClosed {
        meta: meta("treasury.PeriodClosed", n),
        period_id: period.to_owned(),
        starts_on: NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid"),
        ends_on: NaiveDate::from_ymd_opt(2026, 12, 31).expect("valid"),
        status: PeriodStatus::Closed,
        currency: "USD".to_owned(),
        net_surplus: dec(surplus),
        closed_by: "steward:ana".to_owned(),
    }
    .into()
}

fn policy(n: u32, labor: &str, cash_ratio: &str) -> Event {
    PatronagePolicySet {
        meta: meta("treasury.PatronagePolicySet", n),
        weights: vec![KindWeight {
            kind: ContributionKind::Labor,
            weight: dec(labor),
        }],
        cash_ratio: dec(cash_ratio),
        installments: 1,
        installment_interval: InstallmentInterval::Monthly,
        first_payment_offset_days: 30,
        effective_from: None,
        time_zone: None,
    }
    .into()
}

fn feed(driver: &mut TestDriver<PatronageAggregator>, events: Vec<Event>) {
    for event in events {
        let topic = event.topic();
        driver.pipe(topic, &event.key(), event).expect("processed");
    }
}

/// (member, total, contributions) of every PatronageTallied, in order.
fn tallied(outputs: &[Event]) -> Vec<(String, String, i32)> {
    outputs
        .iter()
        .filter_map(|e| match e {
            Event::PatronageTallied(t) => {
                Some((t.member_id.clone(), t.total.to_string(), t.contributions))
            }
            _ => None,
        })
        .collect()
}

use ContributionKind::{Expertise, Labor};
use ContributionStatus::{Approved, Rejected, Submitted};

#[test]
fn approved_corrected_and_reversed_contributions_before_the_close() {
    let mut driver = TestDriver::new(PatronageAggregator);
    feed(
        &mut driver,
        vec![
            opened(1, "2026"),
            contribution(2, "c1", "m1", "2026", Labor, "100.00", Submitted),
            contribution(3, "c1", "m1", "2026", Labor, "100.00", Approved),
            contribution(4, "c1", "m1", "2026", Labor, "100.00", Approved), // re-delivery
            contribution(5, "c2", "m1", "2026", Expertise, "40.00", Approved),
            contribution(6, "c1", "m1", "2026", Labor, "120.00", Approved), // corrected
            contribution(7, "c3", "m2", "2026", Labor, "50.00", Approved),
            contribution(8, "c3", "m2", "2026", Labor, "50.00", Rejected), // reversed
        ],
    );
    let outputs = driver.take_values();
    assert_eq!(
        tallied(&outputs),
        [
            ("m1".into(), "100.00".into(), 1),
            ("m1".into(), "140.00".into(), 2),
            ("m1".into(), "160.00".into(), 2),
            ("m2".into(), "50.00".into(), 1),
            ("m2".into(), "0.00".into(), 0),
        ]
    );
    feed(&mut driver, vec![closed(9, "2026", "1000.00")]);
    let outputs = driver.take_values();
    let [Event::PeriodPatronageSealed(seal)] = outputs.as_slice() else {
        panic!("expected one seal, got {outputs:?}");
    };
    assert_eq!(seal.members.len(), 1, "m2 has nothing left");
    assert_eq!(seal.members[0].member_id, "m1");
    // 120.00 × 1.0 + 40.00 × 1.5
    assert_eq!(seal.members[0].weighted, dec("180.0000"));
    assert_eq!(seal.total_weighted, dec("180.0000"));
    assert_eq!(seal.net_surplus, dec("1000.00"));
    assert_eq!(seal.cash_ratio, dec("0.2000"));
    assert_eq!(seal.sealed_at, at(9));
    // Closing again changes nothing.
    feed(&mut driver, vec![closed(10, "2026", "1000.00")]);
    assert!(driver.take_values().is_empty());
}

#[test]
fn a_change_after_the_close_leaves_the_seal_and_is_reported() {
    let mut driver = TestDriver::new(PatronageAggregator);
    feed(
        &mut driver,
        vec![
            opened(1, "2026"),
            contribution(2, "c1", "m1", "2026", Labor, "100.00", Approved),
            closed(3, "2026", "500.00"),
        ],
    );
    _ = driver.take_values();
    feed(
        &mut driver,
        vec![contribution(
            4, "c1", "m1", "2026", Labor, "80.00", Approved,
        )],
    );
    let outputs = driver.take_values();
    let [Event::LateContributionChange(late)] = outputs.as_slice() else {
        panic!("expected one late change, got {outputs:?}");
    };
    assert_eq!(late.previous_value, Some(dec("100.00")));
    assert_eq!(late.new_value, dec("80.00"));
    assert_eq!(late.previous_status, Some(Approved));
    assert_eq!(late.source_event_id, "evt-people.ContributionApproved-4");
    // The seal's tally is untouched: closing again emits nothing.
    feed(&mut driver, vec![closed(5, "2026", "500.00")]);
    assert!(driver.take_values().is_empty());
}

#[test]
fn zero_patronage_seals_a_period_with_no_members() {
    let mut driver = TestDriver::new(PatronageAggregator);
    feed(
        &mut driver,
        vec![opened(1, "2026"), closed(2, "2026", "0.00")],
    );
    let outputs = driver.take_values();
    let [Event::PeriodPatronageSealed(seal)] = outputs.as_slice() else {
        panic!("expected one seal, got {outputs:?}");
    };
    assert!(seal.members.is_empty());
    assert_eq!(seal.total_weighted, Decimal::ZERO);
}

#[test]
fn a_policy_change_between_two_periods_applies_to_the_second() {
    let mut driver = TestDriver::new(PatronageAggregator);
    feed(
        &mut driver,
        vec![
            opened(1, "2025"),
            contribution(2, "c1", "m1", "2025", Labor, "100.00", Approved),
            closed(3, "2025", "10.00"),
            policy(4, "2.0", "0.5"),
            opened(5, "2026"),
            contribution(6, "c2", "m1", "2026", Labor, "100.00", Approved),
            closed(7, "2026", "10.00"),
        ],
    );
    let seals: Vec<_> = driver
        .take_values()
        .into_iter()
        .filter_map(|e| match e {
            Event::PeriodPatronageSealed(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(seals.len(), 2);
    assert_eq!(seals[0].members[0].weighted, dec("100.0000"));
    assert_eq!(seals[0].cash_ratio, dec("0.2000"));
    assert_eq!(seals[1].members[0].weighted, dec("200.0000"));
    assert_eq!(seals[1].cash_ratio, dec("0.5000"));
}

#[test]
fn a_negative_value_is_dead_lettered() {
    let mut driver = TestDriver::new(PatronageAggregator);
    feed(
        &mut driver,
        vec![contribution(
            1, "c1", "m1", "2026", Labor, "-1.00", Approved,
        )],
    );
    assert_eq!(driver.dead_letters().len(), 1);
    assert_eq!(driver.dead_letters()[0].class, "negative-value");
    assert!(driver.take_values().is_empty());
}
